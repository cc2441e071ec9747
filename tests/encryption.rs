//! Encryption rules through the proxy door, end to end: a recipient whose rule requires
//! encryption is never relayed in plaintext (4xx, nothing at the plain target) and goes over
//! TLS, with the certificate validated, as soon as a TLS target is there; `allowed` follows
//! the client's session; `require_tls_for_whole_transaction` refuses MAIL before STARTTLS.
//! The TLS target is a second Postern proxy with its own certificate (rcgen CA).

mod support;

use support::proxy::{ProxyEnv, as_stored};

const MESSAGE: &[u8] = b"From: a@sender.example\r\nSubject: secret\r\n\r\nbody\r\n";

/// A proxy with STARTTLS (the test certificates) relaying to `targets`, with `policy`.
fn front(policy: &str, targets: &str) -> String {
    format!(
        "hostname = \"gw.postern.test\"\n{policy}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         certificate_file = \"{{dir}}/server.pem\"\nkey_file = \"{{dir}}/server.key\"\n{targets}"
    )
}

const PLAIN: &str =
    "[[relay_target]]\nname = \"plain\"\nhost = \"127.0.0.1\"\nport = {sink0}\npriority = 1\n";

/// A Postern proxy offering STARTTLS with a certificate for localhost, relaying to its sink.
fn tls_target() -> ProxyEnv {
    ProxyEnv::start(
        "hostname = \"target.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{port}\"]\n\
         certificate_file = \"{dir}/server.pem\"\nkey_file = \"{dir}/server.key\"\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {sink0}\n",
        &[&[]],
    )
}

fn secure_target(env: &ProxyEnv, security: &str) -> String {
    format!(
        "[[relay_target]]\nname = \"secure\"\nhost = \"localhost\"\nport = {}\npriority = 2\n\
         security = \"{security}\"\nca_file = \"{}\"\n",
        env.port,
        env.path("ca.pem")
    )
}

const REQUIRED: &str = "[[encryption_rule]]\nrecipient_domain = \"secure.test\"\n\
                        recipient_encryption = \"required\"\n";

#[test]
fn a_required_recipient_never_goes_in_plaintext() {
    let env = ProxyEnv::start(&front(REQUIRED, PLAIN), &[&[]]);
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    let r = smtp.command("RCPT TO:<x@secure.test>").unwrap();
    assert!(r.starts_with("451 4.7.5"), "{r}");
    // Another recipient of the same transaction still goes, over the plain target.
    let r = smtp.command("RCPT TO:<y@plain.test>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    // Now the transaction's target connection is plain: the secure one waits for its own.
    let r = smtp.command("RCPT TO:<x@secure.test>").unwrap();
    assert!(r.starts_with("452 4.5.3"), "{r}");
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all(b"Subject: s\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("250"), "{r}");
    let got = String::from_utf8(env.sinks[0].wait_delivered(1).remove(0)).unwrap();
    assert!(!got.contains("secure.test"), "{got}");
    drop(smtp);

    // With a TLS target configured, the same recipient is delivered over TLS.
    let target = tls_target();
    let plain = PLAIN.replace("{sink0}", &env.sinks[0].port.to_string());
    env.reload(&front(
        REQUIRED,
        &format!("{plain}{}", secure_target(&target, "auto")),
    ));
    let reply = env
        .smtp()
        .send("a@sender.example", "x@secure.test", MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    let got = target.sinks[0].wait_delivered(1).remove(0);
    assert!(
        support::proxy::without_postern_received(&got).ends_with(&as_stored(MESSAGE)),
        "{}",
        String::from_utf8_lossy(&got)
    );
    target.wait_for_log("TLS established");
    // The delivery's TLS version and cipher are in the log.
    env.wait_for_log(
        "TLS established with the relay target relay_target=secure tls=TLSv1.3 TLS13_",
    );
    let log = env.log();
    assert!(
        log.lines().any(|l| l.contains("message handed on")
            && l.contains("relay_target=secure tls=TLSv1.3 TLS13_")),
        "{log}"
    );
    // Nothing more reached the plain target.
    assert_eq!(env.sinks[0].delivered().len(), 1);
}

#[test]
fn a_target_with_a_certificate_for_another_name_does_not_count_as_encrypted() {
    // The target's certificate names wrong.postern.test, not localhost: validation fails and
    // the recipient is deferred rather than sent anyway.
    let target = ProxyEnv::start(
        "hostname = \"target.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{port}\"]\n\
         certificate_file = \"{dir}/wrong.pem\"\nkey_file = \"{dir}/wrong.key\"\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {sink0}\n",
        &[&[]],
    );
    let env = ProxyEnv::start(
        &front(
            REQUIRED,
            &format!("{PLAIN}{}", secure_target(&target, "auto")),
        ),
        &[&[]],
    );
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    let r = smtp.command("RCPT TO:<x@secure.test>").unwrap();
    assert!(r.starts_with("4"), "{r}");
    drop(smtp);
    assert!(target.sinks[0].delivered().is_empty());
    assert!(env.sinks[0].delivered().is_empty());
}

#[test]
fn allowed_follows_the_clients_session() {
    let policy = "[[encryption_rule]]\nrecipient_domain = \"secure.test\"\n\
                  recipient_encryption = \"allowed\"\n";
    let env = ProxyEnv::start(&front(policy, PLAIN), &[&[]]);
    // A plaintext client: the recipient goes as the target is configured.
    let reply = env
        .smtp()
        .send("a@sender.example", "x@secure.test", MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    env.sinks[0].wait_delivered(1);
    // A client that used TLS: its recipient needs TLS onward too, and the only target is plain.
    let (ok, transcript) = env.swaks(&[
        "--tls",
        "--from",
        "a@sender.example",
        "--to",
        "x@secure.test",
        "--quit-after",
        "RCPT",
    ]);
    assert!(!ok, "{transcript}");
    assert!(transcript.contains("451 4.7.5"), "{transcript}");
}

#[test]
fn tls_for_the_whole_transaction_refuses_mail_before_starttls() {
    let policy = "[[encryption_rule]]\nsender_domain = \"partner.example\"\n\
                  sender_encryption = \"required\"\nrequire_tls_for_whole_transaction = true\n";
    let env = ProxyEnv::start(&front(policy, PLAIN), &[&[]]);
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    let r = smtp.command("MAIL FROM:<a@partner.example>").unwrap();
    assert!(r.starts_with("530 5.7.0"), "{r}");
    // Other senders are not concerned.
    let r = smtp.command("MAIL FROM:<a@other.example>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    drop(smtp);
    let (ok, transcript) = env.swaks(&[
        "--tls",
        "--from",
        "a@partner.example",
        "--to",
        "b@rcpt.example",
    ]);
    assert!(ok, "{transcript}");
    env.sinks[0].wait_delivered(1);
}

use std::io::Write;

/// Behind Postfix, a recipient whose rule requires encryption and names a route (`via`) is
/// delivered by Postern over TLS through that route and taken out of Postfix's envelope;
/// Postfix delivers the others itself. When it was the only recipient, Postfix discards the
/// message (Postern delivered it).
#[test]
fn behind_postfix_required_recipients_go_through_postern_over_tls() {
    let target = tls_target();
    let policy = format!(
        "[[encryption_rule]]\nrecipient_domain = \"secure.test\"\n\
         recipient_encryption = \"required\"\nvia = [\"secure\"]\n\
         [[relay_target]]\nname = \"secure\"\nhost = \"localhost\"\nport = {}\n\
         security = \"tls\"\nca_file = \"{}\"\ndivert_only = true\n",
        target.port,
        target.path("ca.pem")
    );
    let env = support::MailEnv::start(support::Socket::Unix, &policy);
    let mut smtp = env.smtp();
    assert!(
        smtp.command("EHLO client.postern.test")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("MAIL FROM:<a@sender.example>")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("RCPT TO:<x@secure.test>")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("RCPT TO:<y@plain.test>")
            .unwrap()
            .starts_with("250")
    );
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all(b"Subject: two\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("250"), "{r}");
    drop(smtp);
    // Postfix delivered only the plain recipient.
    let got = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(got.contains("X-Rcpt-Args: <y@plain.test>"), "{got}");
    assert!(!got.contains("X-Rcpt-Args: <x@secure.test>"), "{got}");
    // Postern delivered the secure one, over TLS.
    let secure = String::from_utf8(target.sinks[0].wait_delivered(1).remove(0)).unwrap();
    assert!(secure.contains("Subject: two"), "{secure}");
    target.wait_for_log("TLS established");
    env.wait_for_log("recipients delivered by Postern (encryption rule route)");

    // Only a secure recipient: Postern delivers it and Postfix drops its copy.
    let reply = env
        .smtp()
        .send("a@sender.example", "z@secure.test", MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    target.sinks[0].wait_delivered(2);
    env.wait_for_log("reason=secure_route");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        env.delivered().len(),
        1,
        "Postfix delivered the secure recipient itself"
    );
}

/// With the route down, the scan failure action (451 by default) applies: nothing is
/// delivered in plaintext by the MTA instead.
#[test]
fn behind_postfix_a_dead_route_defers_the_message() {
    let policy = format!(
        "[[encryption_rule]]\nrecipient_domain = \"secure.test\"\n\
         recipient_encryption = \"required\"\nvia = [\"secure\"]\n\
         [[relay_target]]\nname = \"secure\"\nhost = \"127.0.0.1\"\nport = {}\n\
         security = \"tls\"\ndivert_only = true\n",
        support::free_port()
    );
    let env = support::MailEnv::start(support::Socket::Unix, &policy);
    let reply = env
        .smtp()
        .send("a@sender.example", "x@secure.test", MESSAGE);
    assert!(reply.starts_with("451"), "{reply}");
    env.assert_nothing_delivered();
}

#[test]
fn check_config_says_a_milter_cannot_enforce_a_rule_without_a_route() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postern.toml");
    std::fs::write(&file, REQUIRED).unwrap();
    let out = support::proxy::postern()
        .args(["check-config", &file.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("warning: encryption rule 1 (recipients secure.test)")
            && text.contains("via = ["),
        "{text}"
    );
}
