//! The content stage end to end: a message with a card number in its subject, an SSN in a
//! quoted-printable body, a base64 CSV attachment and a card number in a file name goes
//! through a real Postfix with Postern as its milter; the sink gets it protected, and
//! `postern unprotect` restores the originals exactly.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::support::{MailEnv, POSTERN, Socket};
use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders};

const CSV: &str = "name,card,ssn\r\nJane Roe,5500 0000 0000 0004,078-05-1121\r\n";

fn original() -> Vec<u8> {
    let csv = base64::engine::general_purpose::STANDARD.encode(CSV);
    format!(
        "From: a@sender.example\r\nTo: b@rcpt.example\r\n\
         Subject: =?UTF-8?Q?Zahlung_f=C3=BCr_4111_1111_1111_1111?=\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n\
         --sep\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\r\n\
         Gr=C3=BC=C3=9Fe, my SSN is 123-45-=\r\n6789.\r\n\
         --sep\r\nContent-Type: text/csv; charset=utf-8\r\n\
         Content-Disposition: attachment; filename=\"card 4111111111111111.csv\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{csv}\r\n--sep--\r\n"
    )
    .into_bytes()
}

fn config(key: &std::path::Path) -> String {
    format!(
        r#"
[[ruleset]]
name = "pci"
[[ruleset.rule]]
name = "card numbers"
targets = ["subject", "body", "attachment", "filename"]
detector = "card_number"
action = "protect"
key_file = "{key}"
[[ruleset.rule]]
name = "ssn"
targets = ["body", "attachment"]
detector = "us_ssn"
action = "protect"
key_file = "{key}"
"#,
        key = key.display()
    )
}

#[test]
fn sensitive_data_arrives_protected_and_unprotect_restores_it() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("protect.key");
    std::fs::write(&key, format!("{}\n", "5e".repeat(32))).unwrap();
    let env = MailEnv::start(Socket::Unix, &config(&key));
    let sent = original();
    let reply = env.smtp().send("a@sender.example", "b@rcpt.example", &sent);
    assert!(reply.starts_with("250"), "end of data: {reply}");
    let stored = env.wait_delivered(1).remove(0);
    let text = String::from_utf8_lossy(&stored);
    for clear in [
        "4111",
        "C3=BCr_4111",
        "123-45-",
        "5500 0000",
        "078-05-1121",
        &base64::engine::general_purpose::STANDARD.encode(CSV)[..40],
    ] {
        assert!(!text.contains(clear), "{clear:?} reached the sink:\n{text}");
    }
    assert!(text.contains("X-Postern-Rulesets: pci"), "{text}");

    let arrived = MessageParser::new().parse(&stored[..]).unwrap();
    let subject = arrived.subject().unwrap();
    assert!(
        subject.starts_with("Zahlung für [p:") && subject.len() == "Zahlung für [p:]".len() + 19,
        "{subject}"
    );
    let body = arrived.body_text(0).unwrap();
    assert!(body.starts_with("Grüße, my SSN is [p:"), "{body}");

    let log = env.postern_log();
    assert!(log.contains("content rule acted"), "{log}");
    assert!(log.contains("rule=card numbers") || log.contains("rule=\"card numbers\""));
    // The card number in each form the message holds it; "4111" alone also turns up in
    // timestamps and queue ids.
    for secret in [
        "4111 1111",
        "4111_1111",
        "4111111111111111",
        "123-45-6789",
        "078-05-1121",
        "5e5e5e",
    ] {
        assert!(!log.contains(secret), "the log leaks {secret}:\n{log}");
    }

    let mut child = Command::new(POSTERN)
        .args(["unprotect", "--message", "--key-file"])
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stored).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("restored 5 protected values"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored = MessageParser::new().parse(&out.stdout[..]).unwrap();
    let before = MessageParser::new().parse(&sent[..]).unwrap();
    assert_eq!(restored.subject(), before.subject());
    // The sink stores lines with LF ends; compare the texts with CRLF made LF.
    let lf = |s: &str| s.replace("\r\n", "\n");
    assert_eq!(
        lf(&restored.body_text(0).unwrap()),
        lf(&before.body_text(0).unwrap())
    );
    assert_eq!(
        restored.parts[2].attachment_name(),
        before.parts[2].attachment_name()
    );
    assert_eq!(
        lf(std::str::from_utf8(restored.parts[2].contents()).unwrap()),
        lf(CSV)
    );
}

#[test]
fn content_reject_rule_refuses_at_end_of_data() {
    let env = MailEnv::start(
        Socket::Inet,
        r#"
[[ruleset]]
name = "dlp"
recipient_domains = ["rcpt.example"]
[[ruleset.rule]]
name = "no ssn"
targets = ["body"]
detector = "us_ssn"
action = "reject"
reply = "550 5.7.1 Social security numbers may not leave by mail"
"#,
    );
    let reply = env.smtp().send(
        "a@sender.example",
        "b@rcpt.example",
        b"Subject: x\r\n\r\nmy ssn: 123-45-6789\r\n",
    );
    assert!(
        reply.starts_with("550 5.7.1 Social security numbers may not leave by mail"),
        "{reply}"
    );
    let reply = env.smtp().send(
        "a@sender.example",
        "b@other.example",
        b"Subject: x\r\n\r\nmy ssn: 123-45-6789\r\n",
    );
    assert!(
        reply.starts_with("250"),
        "ruleset only for rcpt.example: {reply}"
    );
    env.wait_delivered(1);
}
