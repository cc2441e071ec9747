//! Connection profiles (seed 004) through Postfix: chosen by client address or sender domain,
//! they decide relaying, which checks run, blocking and inbound mandatory TLS.

use crate::support::{DnsServer, MailEnv, Socket};

fn config(dns: &DnsServer) -> String {
    format!(
        r#"
[dns]
nameservers = ["127.0.0.1:{}"]
timeout = 2
attempts = 1
[rbl]
enabled = true
hit_action = "reject"
[[rbl.zone]]
zone = "zen.test"
[relay]
restrict_relaying = true
local_domains = ["rcpt.example"]
[[connection_profile]]
name = "internal"
client_hosts = ["192.0.2.0/25"]
relay_control = "full"
[[connection_profile]]
name = "partners"
client_hosts = ["192.0.2.128/25"]
relay_control = "restricted-external"
[[connection_profile]]
name = "blocked"
client_hosts = ["198.51.100.66"]
relay_control = "blocked"
[[connection_profile]]
name = "tls-senders"
sender_domains = ["secure.example"]
require_tls = true
"#,
        dns.port
    )
}

#[test]
fn internal_profile_skips_checks_and_relays_anywhere() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns));
    // 192.0.2.10 is listed by zen.test, but "internal" skips the RBL.
    let (mut smtp, ehlo) = env.smtp_as("192.0.2.10");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    assert!(
        smtp.command("MAIL FROM:<a@corp.example>")
            .unwrap()
            .starts_with("250")
    );
    let r = smtp.command("RCPT TO:<b@other.example>").unwrap();
    assert!(
        r.starts_with("250"),
        "full relay control relays anywhere: {r}"
    );
    assert!(env.postern_log().contains("profile=internal"));
}

#[test]
fn external_profile_runs_checks_and_relays_only_locally() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns));
    // 192.0.2.200 is listed too, and "partners" runs the checks.
    // Postfix passes a milter's 5xx to EHLO on at MAIL FROM.
    let (mut smtp, _) = env.smtp_as("192.0.2.200");
    let r = smtp.command("MAIL FROM:<a@partner.example>").unwrap();
    assert!(r.starts_with("554 5.7.1") && r.contains("zen.test"), "{r}");
    // An unlisted partner (zen.test lists 192.0.2.0/24 only) may send to local domains only.
    let env2 = MailEnv::start(
        Socket::Unix,
        &config(&dns).replace("192.0.2.128/25", "198.51.100.128/25"),
    );
    let (mut smtp, ehlo) = env2.smtp_as("198.51.100.130");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    assert!(
        smtp.command("MAIL FROM:<a@partner.example>")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("RCPT TO:<b@rcpt.example>")
            .unwrap()
            .starts_with("250")
    );
    let r = smtp.command("RCPT TO:<b@other.example>").unwrap();
    assert!(
        r.starts_with("554 5.7.1") && r.contains("Relay access denied"),
        "{r}"
    );
}

#[test]
fn blocked_profile_and_sender_domain_tls() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns));
    let (mut smtp, _) = env.smtp_as("198.51.100.66");
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(
        r.starts_with("554 5.7.1 Client host [198.51.100.66] rejected"),
        "{r}"
    );
    // No client profile: the sender domain chooses "tls-senders", which requires TLS.
    let (mut smtp, ehlo) = env.smtp_as("198.51.100.20");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let r = smtp.command("MAIL FROM:<a@secure.example>").unwrap();
    assert!(
        r.starts_with("530 5.7.0 Must issue a STARTTLS command first"),
        "{r}"
    );
    let r = smtp.command("MAIL FROM:<a@plain.example>").unwrap();
    assert!(r.starts_with("250"), "{r}");
}
