//! Relay restriction end to end through Postfix: recipients in the forms MTAs re-route are
//! judged by where they really go.

use crate::support::{MailEnv, Socket};

const RELAY: &str = "[relay]\nrestrict_relaying = true\nlocal_domains = [\"rcpt.example\"]\n";

#[test]
fn untrusted_client_may_send_only_to_local_domains() {
    // Each form is judged on its own: no address hiding after the third refusal.
    let config =
        format!("{RELAY}[exploit_detection]\naddress_hiding_on_dictionary_attack = false\n");
    let env = MailEnv::start(Socket::Unix, &config);
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    let r = smtp.command("XCLIENT ADDR=198.51.100.20").unwrap();
    assert!(r.starts_with("220"), "XCLIENT: {r}");
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
    let ok = smtp.command("RCPT TO:<b@rcpt.example>").unwrap();
    assert!(ok.starts_with("250"), "local recipient: {ok}");
    for attempt in [
        "<b@other.example>",
        "<b%other.example@rcpt.example>",
        "<\"b@other.example\"@rcpt.example>",
        "<@rcpt.example:b@other.example>",
        "<other.example!b@rcpt.example>",
    ] {
        let r = smtp.command(&format!("RCPT TO:{attempt}")).unwrap();
        assert!(
            r.starts_with("554 5.7.1") && r.contains("Relay access denied"),
            "{attempt}: {r}"
        );
    }
    assert!(env.postern_log().contains("relay access denied"));
}

#[test]
fn allowed_relay_source_may_relay_anywhere() {
    let env = MailEnv::start(Socket::Unix, RELAY);
    // No XCLIENT: the client is 127.0.0.1, an allowed relay source by default.
    let reply = env.smtp().send(
        "a@sender.example",
        "b@other.example",
        b"Subject: relayed\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    env.wait_delivered(1);
}
