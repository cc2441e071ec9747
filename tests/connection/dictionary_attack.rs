//! Address hiding on dictionary attack, through a Postfix that rejects unknown users itself.

use crate::support::{MailEnv, Socket};

/// Postfix refusing nosuch* itself, Postern as its milter with `hiding` as
/// address_hiding_reply: three unknown users, then what a valid one hears.
fn valid_after_three_unknown(hiding: &str) -> (MailEnv, String) {
    let env = MailEnv::start_with_postfix(
        Socket::Unix,
        &format!("[exploit_detection]\naddress_hiding_reply = \"{hiding}\"\n"),
        &["smtpd_recipient_restrictions = check_recipient_access regexp:{dir}/recipients"],
        &[(
            "recipients",
            "/^nosuch/ 550 5.1.1 User unknown in local recipient table\n",
        )],
    );
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    assert!(
        smtp.command("XCLIENT ADDR=198.51.100.20")
            .unwrap()
            .starts_with("220")
    );
    smtp.command("EHLO client.postern.test").unwrap();
    assert!(
        smtp.command("MAIL FROM:<a@sender.example>")
            .unwrap()
            .starts_with("250")
    );
    // Before the attack is suspected, a valid recipient is accepted.
    let r = smtp.command("RCPT TO:<valid1@rcpt.example>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let mut refused = Vec::new();
    for n in 1..=3 {
        refused.push(
            smtp.command(&format!("RCPT TO:<nosuch{n}@rcpt.example>"))
                .unwrap(),
        );
    }
    assert_eq!(
        refused[2].trim_end(),
        "550 5.1.1 <nosuch3@rcpt.example>: Recipient address rejected: User unknown in local recipient table"
    );
    let hidden = smtp.command("RCPT TO:<valid2@rcpt.example>").unwrap();
    (env, hidden.trim_end().to_owned())
}

/// By default a valid recipient then hears the refusal made temporary: a real sender with a
/// few stale addresses retries, and its valid recipients arrive later.
#[test]
fn after_three_unknown_users_a_valid_one_is_deferred() {
    let (env, hidden) = valid_after_three_unknown("temporary");
    assert_eq!(
        hidden,
        "450 4.1.1 <valid2@rcpt.example>: Recipient address rejected: User unknown in local recipient table"
    );
    assert!(env.postern_log().contains("dictionary attack suspected"));
}

/// With address_hiding_reply = "same" it hears exactly what an unknown one hears.
#[test]
fn after_three_unknown_users_a_valid_one_can_get_the_same_answer() {
    let (_env, hidden) = valid_after_three_unknown("same");
    assert_eq!(
        hidden,
        "550 5.1.1 <valid2@rcpt.example>: Recipient address rejected: User unknown in local recipient table"
    );
}
