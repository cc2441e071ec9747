//! End-to-end tests through a real Sendmail 8.17 with Postern as its `INPUT_MAIL_FILTER`
//! (`F=T`), started by integration/sendmail from Debian's packages unpacked in a private
//! directory (Sendmail cannot be installed beside Postfix). They need root (a mount namespace
//! for Sendmail's own /etc/hosts) and download the packages once when missing.
//!
//! Sendmail has no XCLIENT: every session comes from 127.0.0.1, so the address checks here
//! list 127.0.0.1 itself.

use crate::support::{MailEnv, Socket, assert_arrived_unchanged};

const CLEAN: &[u8] = include_bytes!("../data/clean-multipart.eml");

fn clean_message_arrives_unchanged(socket: Socket) {
    let env = MailEnv::sendmail(socket, "");
    let reply = env.smtp().send("a@sender.example", "b@rcpt.example", CLEAN);
    assert!(reply.starts_with("250"), "end of data: {reply}");
    let stored = env.wait_delivered(1);
    assert_arrived_unchanged(&stored[0], CLEAN);
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(
        text.contains("by sendmail.postern.test (8.17"),
        "the message went through Sendmail:\n{text}"
    );
    let log = env.postern_log();
    assert!(log.contains("verdict=continue"), "Postern saw the message");
    assert!(
        !log.contains("WARN"),
        "a clean conversation logs no warning:\n{log}"
    );
}

#[test]
fn clean_message_arrives_byte_identical_over_tcp() {
    clean_message_arrives_unchanged(Socket::Inet);
}

#[test]
fn clean_message_arrives_byte_identical_over_unix_socket() {
    clean_message_arrives_unchanged(Socket::Unix);
}

/// Sendmail applies the milter's body replacement and header addition: the card number
/// arrives masked and the rest of the message as it was sent.
#[test]
fn card_number_in_the_body_arrives_masked() {
    let env = MailEnv::sendmail(
        Socket::Inet,
        r#"
[[ruleset]]
name = "pci"
[[ruleset.rule]]
name = "cards"
targets = ["body"]
detector = "card_number"
action = "mask"
"#,
    );
    let message = b"From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: order\r\n\r\n\
        Please charge 4111 1111 1111 1111 today.\r\nThanks.\r\n";
    let reply = env
        .smtp()
        .send("a@sender.example", "b@rcpt.example", message);
    assert!(reply.starts_with("250"), "end of data: {reply}");
    let stored = env.wait_delivered(1).remove(0);
    let text = String::from_utf8_lossy(&stored);
    assert!(
        text.ends_with(
            "Subject: order\nX-Postern-Rulesets: pci\n\n\
             Please charge **** **** **** 1111 today.\nThanks.\n\n"
        ),
        "masked body and the ruleset header, nothing else changed:\n{text}"
    );
    assert!(!text.contains("4111 1111"), "{text}");
    let log = env.postern_log();
    let acted = log
        .lines()
        .find(|l| l.contains("content rule acted"))
        .unwrap_or_else(|| panic!("the rule's action is logged:\n{log}"));
    assert!(
        acted.contains("queue_id=\"")
            && acted.ends_with("ruleset=pci rule=cards rule_target=body count=1"),
        "with Sendmail's queue id: {acted}"
    );
}

/// Postern refuses a listed client at HELO (its first reply stage, for Postfix's sake).
/// Sendmail answers that EHLO with 250 itself and gives the milter's reply to every MAIL
/// (and RCPT) of the session instead: the client sees the configured text at MAIL.
#[test]
fn rejected_ip_gets_the_configured_reply_at_mail() {
    let env = MailEnv::sendmail(
        Socket::Inet,
        "[connection]\nip_address_rejection = [\"127.0.0.1\"]\n\
         ip_address_rejection_reply = \"550 5.7.1 Rejected by test policy\"\n",
    );
    let mut smtp = env.smtp();
    let ehlo = smtp.command("EHLO client.postern.test").unwrap();
    assert!(
        ehlo.starts_with("250"),
        "Sendmail does not give a refusal at EHLO: {ehlo}"
    );
    let mail = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(
        mail.starts_with("550 5.7.1 Rejected by test policy"),
        "MAIL: {mail}"
    );
    let rcpt = smtp.command("RCPT TO:<b@rcpt.example>").unwrap();
    assert!(
        rcpt.starts_with("550 5.7.1 Rejected by test policy"),
        "RCPT: {rcpt}"
    );
    // A new transaction in the same session is refused as well.
    assert!(smtp.command("RSET").unwrap().starts_with("250"));
    let mail = smtp.command("MAIL FROM:<c@sender.example>").unwrap();
    assert!(
        mail.starts_with("550 5.7.1 Rejected by test policy"),
        "second MAIL: {mail}"
    );
    assert!(
        env.postern_log().contains(
            "check=\"ip_address_rejection\" \
             verdict=reject (550 5.7.1 Rejected by test policy) stage=\"helo\""
        ),
        "Postern refused at HELO:\n{}",
        env.postern_log()
    );
    env.assert_nothing_delivered();
}

/// Sendmail answers unknown commands itself (`500 5.5.1`) and hands them to the milter; at
/// `max_invalid_commands` Postern's 421 reaches the client and Sendmail hangs up.
#[test]
fn invalid_command_limit_drops_the_client() {
    let env = MailEnv::sendmail(
        Socket::Inet,
        "[exploit_detection]\nmax_invalid_commands = 3\n",
    );
    let mut smtp = env.smtp();
    let ehlo = smtp.command("EHLO client.postern.test").unwrap();
    assert!(ehlo.starts_with("250"), "EHLO: {ehlo}");
    for cmd in ["FOO", "BAR baz"] {
        let r = smtp.command(cmd).unwrap();
        assert!(
            r.starts_with("500 5.5.1"),
            "{cmd}: Sendmail answers unknown commands itself: {r}"
        );
    }
    let r = smtp.command("QUUX").unwrap();
    assert!(
        r.starts_with("421 4.7.0 Too many invalid commands"),
        "third invalid command: {r}"
    );
    assert!(
        smtp.is_closed(),
        "Sendmail ended the connection after the 421"
    );
}

/// `F=T`: with Postern not running, Sendmail tempfails the transaction, and nothing is
/// delivered unscanned.
#[test]
fn postern_stopped_gives_a_tempfail() {
    let mut env = MailEnv::sendmail(Socket::Inet, "");
    env.stop_postern();
    let mut smtp = env.smtp();
    let ehlo = smtp.command("EHLO client.postern.test").unwrap();
    assert!(ehlo.starts_with("250"), "EHLO: {ehlo}");
    let mail = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(
        mail.starts_with("451 4.3.2"),
        "F=T tempfails when the milter cannot be reached: {mail}"
    );
    let (ok, dialogue) = env.swaks_result(&["-f", "a@sender.example", "-t", "b@rcpt.example"]);
    assert!(!ok, "swaks must fail:\n{dialogue}");
    assert!(dialogue.contains("451 4.3.2"), "{dialogue}");
    env.assert_nothing_delivered();
}
