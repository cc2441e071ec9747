//! Address hiding on dictionary attack, through a Postfix that rejects unknown users itself.

mod support;

use support::{MailEnv, Socket};

#[test]
fn after_three_unknown_users_a_valid_one_gets_the_same_answer() {
    let env = MailEnv::start_with_postfix(
        Socket::Unix,
        "",
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
    // Now a valid recipient is answered exactly like an unknown one.
    let hidden = smtp.command("RCPT TO:<valid2@rcpt.example>").unwrap();
    assert_eq!(
        hidden.trim_end(),
        "550 5.1.1 <valid2@rcpt.example>: Recipient address rejected: User unknown in local recipient table"
    );
    assert!(env.postern_log().contains("dictionary attack suspected"));
}
