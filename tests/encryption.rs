//! Encryption rules (seed 003) through Postfix, judged from the {tls_version} macro: with a
//! Postfix that offers no STARTTLS, and with one that does.

mod support;

use std::process::Command;

use support::{MailEnv, Socket};

const RULES: &str = "[[encryption_rule]]\nsender_domain = \"*\"\nrecipient_domain = \"secure.example\"\nsender_encryption = \"required\"\n";

fn swaks(env: &MailEnv, to: &str, tls: bool) -> (bool, String) {
    let mut args = vec!["-f", "a@sender.example", "-t", to];
    if tls {
        args.push("--tls");
    }
    env.swaks_result(&args)
}

#[test]
fn plaintext_session_is_refused_where_a_rule_requires_encryption() {
    let env = MailEnv::start(Socket::Unix, RULES);
    let (ok, text) = swaks(&env, "b@secure.example", false);
    assert!(!ok);
    assert!(
        text.contains("530 5.7.0 Must issue a STARTTLS command first"),
        "{text}"
    );
    let (ok, text) = swaks(&env, "b@rcpt.example", false);
    assert!(ok, "no rule for this recipient: {text}");
    env.wait_delivered(1);
}

#[test]
fn starttls_session_satisfies_the_rule() {
    let certs = tempfile::tempdir().unwrap();
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=postfix.postern.test"])
        .arg("-keyout")
        .arg(certs.path().join("key.pem"))
        .arg("-out")
        .arg(certs.path().join("cert.pem"))
        .output()
        .expect("openssl runs");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = std::fs::read_to_string(certs.path().join("key.pem")).unwrap();
    let cert = std::fs::read_to_string(certs.path().join("cert.pem")).unwrap();
    let env = MailEnv::start_with_postfix(
        Socket::Unix,
        RULES,
        &[
            "smtpd_tls_chain_files = {dir}/key.pem, {dir}/cert.pem",
            "smtpd_tls_security_level = may",
        ],
        &[("key.pem", &key), ("cert.pem", &cert)],
    );
    let (ok, text) = swaks(&env, "b@secure.example", true);
    assert!(ok, "{text}");
    assert!(text.contains("TLS started"), "{text}");
    env.wait_delivered(1);
    assert!(
        env.postern_log().contains("tls=\"TLSv1"),
        "{}",
        env.postern_log()
    );
    // The same Postfix, plaintext: refused.
    let (ok, text) = swaks(&env, "b@secure.example", false);
    assert!(!ok && text.contains("530 5.7.0"), "{text}");
}
