//! Encryption rules through the proxy door, end to end: a recipient whose rule requires
//! encryption is never relayed in plaintext (4xx, nothing at the plain target) and goes over
//! TLS, with the certificate validated, as soon as a TLS target is there; `allowed` follows
//! the client's session; `require_tls_for_whole_transaction` refuses MAIL before STARTTLS.
//! The TLS target is a second Postern proxy with its own certificate (rcgen CA).

use crate::support::proxy::{ProxyEnv, as_stored};

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

/// The end of a transaction whose recipients are given: DATA, a short message, 250; then
/// what the plain target holds must be one message for y@plain.test only.
fn only_the_plain_recipient_is_delivered(env: &ProxyEnv, mut smtp: crate::support::Smtp) {
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all(b"Subject: s\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("250"), "{r}");
    env.sinks[0].wait_delivered(1);
    assert_eq!(
        env.sinks[0].recipients(),
        [["y@plain.test"]],
        "only the plain recipient"
    );
}

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
    only_the_plain_recipient_is_delivered(&env, smtp);

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
        crate::support::proxy::without_postern_received(&got).ends_with(&as_stored(MESSAGE)),
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
    // The message goes on for a plain recipient: the refused one is not carried with it.
    let r = smtp.command("RCPT TO:<y@plain.test>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    only_the_plain_recipient_is_delivered(&env, smtp);
    assert!(target.sinks[0].delivered().is_empty());
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

/// One transaction from a@sender.example to `recipients` through `env`'s Postfix, every
/// command accepted; the reply to the end of `message`.
fn transaction(env: &crate::support::MailEnv, recipients: &[&str], message: &[u8]) -> String {
    env.smtp().send_to("a@sender.example", recipients, message)
}

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
    let env = crate::support::MailEnv::start(crate::support::Socket::Unix, &policy);
    let r = transaction(
        &env,
        &["x@secure.test", "y@plain.test"],
        b"Subject: two\r\n\r\nbody\r\n",
    );
    assert!(r.starts_with("250"), "{r}");
    // Postfix delivered only the plain recipient.
    let got = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(got.contains("X-Rcpt-Args: <y@plain.test>"), "{got}");
    assert!(!got.contains("X-Rcpt-Args: <x@secure.test>"), "{got}");
    // Postern delivered the secure one, over TLS.
    let secure = String::from_utf8(target.sinks[0].wait_delivered(1).remove(0)).unwrap();
    assert!(secure.contains("Subject: two"), "{secure}");
    target.wait_for_log("TLS established");
    env.wait_for_log("ruleset=encryption_rule rule=via relay_target=secure");

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
        crate::support::free_port()
    );
    let env = crate::support::MailEnv::start(crate::support::Socket::Unix, &policy);
    let reply = env
        .smtp()
        .send("a@sender.example", "x@secure.test", MESSAGE);
    assert!(reply.starts_with("451"), "{reply}");
    env.assert_nothing_delivered();
}

/// Behind Postfix, two routes: the second refuses, so the message is deferred although the
/// first took its recipient. When the client sends the message again (the second route
/// fixed by a reload), the first route is not used again: nobody gets the message twice.
#[test]
fn behind_postfix_a_message_sent_again_after_a_failed_route_reaches_nobody_twice() {
    use crate::support::faulty::{Faults, FaultyTarget};
    let one = FaultyTarget::start(Faults::default());
    let refusing = FaultyTarget::start(Faults {
        mail_reply: Some("451 4.3.0 Error: try again later"),
        ..Faults::default()
    });
    let two = FaultyTarget::start(Faults::default());
    let policy = |second: u16| {
        format!(
            "[[encryption_rule]]\nrecipient_domain = \"one.test\"\nvia = [\"one\"]\n\
             [[encryption_rule]]\nrecipient_domain = \"two.test\"\nvia = [\"two\"]\n\
             [[relay_target]]\nname = \"one\"\nhost = \"127.0.0.1\"\nport = {}\ndivert_only = true\n\
             [[relay_target]]\nname = \"two\"\nhost = \"127.0.0.1\"\nport = {second}\ndivert_only = true\n",
            one.port
        )
    };
    let env = crate::support::MailEnv::start(crate::support::Socket::Unix, &policy(refusing.port));
    let message = b"From: a@sender.example\r\nTo: x@one.test, y@two.test\r\n\
                    Message-ID: <twice@sender.example>\r\nDate: Thu, 3 Dec 2026 08:00:00 +0000\r\n\
                    Subject: once each\r\n\r\nbody\r\n";
    let send = || transaction(&env, &["x@one.test", "y@two.test"], message);
    let first = send();
    assert!(first.starts_with("451"), "{first}");
    assert_eq!(one.taken().len(), 1, "the first route took x");
    assert!(refusing.taken().is_empty());

    env.write_config(&policy(two.port));
    env.hup_postern();
    env.wait_for_log("configuration reloaded");
    let again = send();
    assert!(again.starts_with("250"), "{again}");
    assert_eq!(one.taken().len(), 1, "x got the message a second time");
    env.wait_for_log("already handed to this route on an earlier attempt");
    let taken = two.taken();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].recipients, ["y@two.test"]);
    env.assert_nothing_delivered();
}

/// Two messages that differ only in bytes that are not UTF-8 are two messages: each reaches
/// the route (before, both read as U+FFFD, and the second was taken for an attempt of the first
/// and never delivered).
#[test]
fn behind_postfix_messages_differing_only_in_raw_bytes_both_take_the_route() {
    use crate::support::faulty::{Faults, FaultyTarget};
    let one = FaultyTarget::start(Faults::default());
    let policy = format!(
        "[[encryption_rule]]\nrecipient_domain = \"one.test\"\nvia = [\"one\"]\n\
         [[relay_target]]\nname = \"one\"\nhost = \"127.0.0.1\"\nport = {}\ndivert_only = true\n",
        one.port
    );
    let env = crate::support::MailEnv::start(crate::support::Socket::Unix, &policy);
    for byte in [0xff, 0xfe] {
        let mut message = b"From: a@sender.example\r\nMessage-ID: <same@sender.example>\r\n\
                            Date: Thu, 3 Dec 2026 08:00:00 +0000\r\nSubject: caf"
            .to_vec();
        message.push(byte);
        message.extend_from_slice(b"\r\n\r\nbody\r\n");
        let r = transaction(&env, &["x@one.test"], &message);
        assert!(r.starts_with("250"), "{r}");
    }
    assert_eq!(one.taken().len(), 2, "each message reached the route");
    assert!(!env.postern_log().contains("already handed"));
}

#[test]
fn check_config_says_a_milter_cannot_enforce_a_rule_without_a_route() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postern.toml");
    std::fs::write(&file, REQUIRED).unwrap();
    let out = crate::support::proxy::postern()
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

/// A real Postfix with the test certificate as a TLS relay target, with extra main.cf
/// settings (TLS versions, ciphers); stopped when dropped.
struct PostfixTarget {
    dir: String,
    port: u16,
}

impl PostfixTarget {
    fn start(env: &ProxyEnv, settings: &[&str]) -> Self {
        let target = Self {
            dir: env.path("postfix-target"),
            port: crate::support::free_port(),
        };
        let cert = format!("smtpd_tls_cert_file = {}", env.path("server.pem"));
        let key = format!("smtpd_tls_key_file = {}", env.path("server.key"));
        let mut args = vec![
            "start".to_owned(),
            target.dir.clone(),
            target.port.to_string(),
            env.sinks[0].port.to_string(),
            "none".to_owned(),
            "tempfail".to_owned(),
            cert,
            key,
            "smtpd_tls_security_level = may".to_owned(),
            "smtpd_tls_loglevel = 1".to_owned(),
        ];
        args.extend(settings.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::support::run_script("postfix", &args);
        target
    }

    fn relay_target(&self, env: &ProxyEnv) -> String {
        format!(
            "[[relay_target]]\nname = \"postfix\"\nhost = \"localhost\"\nport = {}\n\
             security = \"auto\"\nca_file = \"{}\"\n",
            self.port,
            env.path("ca.pem")
        )
    }
}

impl Drop for PostfixTarget {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate::support::script("postfix"))
            .args(["stop", &self.dir])
            .output();
    }
}

/// RCPT of `recipient` in a new transaction: the reply.
fn rcpt(env: &ProxyEnv, recipient: &str) -> String {
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    smtp.command(&format!("RCPT TO:<{recipient}>")).unwrap()
}

const POLICIES: &str = "\
[[outbound_tls_policy]]
name = \"modern\"
recipient_domains = [\"v13.test\"]
min_version = \"1.3\"

[[outbound_tls_policy]]
name = \"named\"
recipient_domains = [\"names.test\"]
certificate_names = [\"mx.names.test\", \"recipient_domain\"]

[[outbound_tls_policy]]
name = \"strong\"
recipient_domains = [\"ok.test\"]
min_cipher_strength = \"high\"
certificate_names = [\"localhost\"]
";

/// Per-destination TLS policies against a Postfix that speaks TLS 1.2 only: a policy asking
/// for 1.3 or for a certificate name the target lacks does not use it (451, reason logged);
/// one it meets does.
#[test]
fn outbound_tls_policies_check_version_cipher_and_names() {
    // Started with a placeholder config: the Postfix target needs the proxy's certificates.
    let env = ProxyEnv::start(&front("", PLAIN), &[&[]]);
    let postfix = PostfixTarget::start(
        &env,
        &["smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3"],
    );
    env.reload(&front(POLICIES, &postfix.relay_target(&env)));
    let r = rcpt(&env, "a@v13.test");
    assert!(r.starts_with("451 4.7.5"), "{r}");
    env.wait_for_log("TLSv1.2 is below the minimum, TLS 1.3");
    let r = rcpt(&env, "a@names.test");
    assert!(r.starts_with("451 4.7.5"), "{r}");
    env.wait_for_log("none of mx.names.test, names.test");
    let reply = env.smtp().send("a@sender.example", "a@ok.test", MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    env.sinks[0].wait_delivered(1);
    let log = env.log();
    assert!(
        log.lines().any(|l| l.contains("message handed on")
            && l.contains("relay_target=postfix tls=TLSv1.2 TLS_ECDHE_")),
        "{log}"
    );
}

/// A target that offers only CBC suites (over TLS 1.2): Postern's TLS (AEAD suites only)
/// cannot be made with it, so a recipient that needs TLS is deferred, never sent in
/// plaintext.
#[test]
fn a_target_with_only_cbc_suites_carries_no_recipient_that_needs_tls() {
    let env = ProxyEnv::start(&front("", PLAIN), &[&[]]);
    let postfix = PostfixTarget::start(
        &env,
        &[
            "smtpd_tls_protocols = !SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.3",
            "smtpd_tls_ciphers = medium",
            "tls_medium_cipherlist = ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA",
        ],
    );
    env.reload(&front(REQUIRED, &postfix.relay_target(&env)));
    let r = rcpt(&env, "x@secure.test");
    assert!(r.starts_with("4"), "{r}");
    env.wait_for_log("TLS handshake failed");
}

/// `preferred` and `none` leave it to the target's `security`: a plain target carries them,
/// while in the same configuration a `required` recipient is deferred (the rules are in force).
#[test]
fn preferred_and_none_go_as_the_target_is_configured() {
    let policy = format!(
        "{REQUIRED}[[encryption_rule]]\nrecipient_domain = \"pref.test\"\n\
         recipient_encryption = \"preferred\"\n\
         [[encryption_rule]]\nrecipient_domain = \"none.test\"\n\
         recipient_encryption = \"none\"\n"
    );
    let env = ProxyEnv::start(&front(&policy, PLAIN), &[&[]]);
    let r = rcpt(&env, "x@secure.test");
    assert!(
        r.starts_with("451 4.7.5"),
        "required, over a plain target: {r}"
    );
    for to in ["x@pref.test", "x@none.test"] {
        let reply = env.smtp().send("a@sender.example", to, MESSAGE);
        assert!(reply.starts_with("250"), "{to}: {reply}");
    }
    assert_eq!(env.sinks[0].wait_delivered(2).len(), 2);
}

/// Sender encryption end to end at RCPT, in both doors: a rule that requires it refuses the
/// recipient of a plaintext session with 530 5.7.0 (other recipients pass), and the same
/// conversation after STARTTLS passes — through the proxy, and behind a real Postfix that
/// offers STARTTLS itself (the milter learns the session's TLS from its macros).
#[test]
fn sender_encryption_is_required_at_rcpt_in_both_doors() {
    let rule = "[[encryption_rule]]\nrecipient_domain = \"secure.test\"\n\
                sender_encryption = \"required\"\n";
    let plaintext_refused = |mut smtp: crate::support::Smtp| {
        smtp.begin("a@sender.example");
        let r = smtp.command("RCPT TO:<x@secure.test>").unwrap();
        assert!(r.starts_with("530 5.7.0"), "{r}");
        let r = smtp.command("RCPT TO:<y@plain.test>").unwrap();
        assert!(r.starts_with("250"), "{r}");
    };

    let proxy = ProxyEnv::start(&front(rule, PLAIN), &[&[]]);
    plaintext_refused(proxy.smtp());
    let (ok, transcript) = proxy.swaks(&[
        "--tls",
        "--from",
        "a@sender.example",
        "--to",
        "x@secure.test",
    ]);
    assert!(ok, "{transcript}");
    proxy.sinks[0].wait_delivered(1);

    let certs = tempfile::tempdir().unwrap();
    crate::support::proxy::write_certificates(certs.path());
    let read = |name: &str| std::fs::read_to_string(certs.path().join(name)).unwrap();
    let (pem, key) = (read("server.pem"), read("server.key"));
    let postfix = crate::support::MailEnv::start_with_postfix(
        crate::support::Socket::Unix,
        rule,
        &[
            "smtpd_tls_chain_files = {dir}/server.key, {dir}/server.pem",
            "smtpd_tls_security_level = may",
        ],
        &[("server.pem", &pem), ("server.key", &key)],
    );
    plaintext_refused(postfix.smtp());
    let (ok, transcript) = postfix.swaks_result(&[
        "--tls",
        "--from",
        "a@sender.example",
        "--to",
        "x@secure.test",
    ]);
    assert!(ok, "{transcript}");
    postfix.wait_delivered(1);
}
