//! IP reputation through Postfix: learned from behaviour, offset by an allow list, read from
//! a scored list; a zone that cannot be asked defers.

use crate::support::{DnsServer, MailEnv, Socket};

const RECIPIENTS: (&str, &str) = (
    "recipients",
    "/^nosuch/ 550 5.1.1 User unknown in local recipient table\n",
);

fn env(dns: &DnsServer, reputation: &str) -> MailEnv {
    MailEnv::start_with_postfix(
        Socket::Unix,
        &format!(
            "[dns]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = 2\nattempts = 1\n[reputation]\nthreshold = -20\n{reputation}",
            dns.port
        ),
        &["smtpd_recipient_restrictions = check_recipient_access regexp:{dir}/recipients"],
        &[RECIPIENTS],
    )
}

/// A session from `ip` that probes three unknown recipients; returns the reply to MAIL FROM.
fn probe(env: &MailEnv, ip: &str) -> String {
    let (mut smtp, _) = env.smtp_as(ip);
    let mail = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    if mail.starts_with("250") {
        for n in 1..=3 {
            smtp.command(&format!("RCPT TO:<nosuch{n}@rcpt.example>"))
                .unwrap();
        }
        smtp.command("QUIT");
    }
    mail
}

#[test]
fn a_dictionary_attacker_is_refused_next_time_unless_allow_listed() {
    let dns = DnsServer::start();
    let env = env(
        &dns,
        "[[reputation.zone]]\nzone = \"wl.test\"\nkind = \"allow\"\nscore = 50\n",
    );
    // First visit: three unknown users (-6) and a suspected dictionary attack (-20).
    assert!(probe(&env, "198.51.100.40").starts_with("250"));
    let again = probe(&env, "198.51.100.40");
    assert!(
        again.starts_with("554 5.7.1 Client [198.51.100.40] has a poor reputation here (-26)"),
        "{again}"
    );
    // The same behaviour from an allow-listed client: -26 + 50.
    assert!(probe(&env, "198.51.100.50").starts_with("250"));
    let again = probe(&env, "198.51.100.50");
    assert!(again.starts_with("250"), "{again}");
    assert!(env.postern_log().contains("check=\"reputation\""));
}

#[test]
fn scored_list_and_lookup_failure() {
    let dns = DnsServer::start();
    let env = env(
        &dns,
        "[[reputation.zone]]\nzone = \"score.test\"\nkind = \"score\"\n[[reputation.zone]]\nzone = \"down.example\"\nkind = \"allow\"\n",
    );
    // score.test: 5 -> -45. The refusal outranks the failed zone.
    let (mut smtp, _) = env.smtp_as("192.0.2.77");
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(r.starts_with("554 5.7.1") && r.contains("(-45)"), "{r}");
    // 90 -> +40, but down.example cannot be asked (not served: REFUSED): 4xx by default.
    let (mut smtp, _) = env.smtp_as("192.0.2.78");
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(
        r.starts_with("451 4.7.1 Temporary failure checking the reputation"),
        "{r}"
    );
}

/// A blocklist's error answer (zen.test answers 127.255.255.254, "query refused", for
/// 198.51.100.66) is no score: before, a `score` zone read it as +50 and a refused query
/// improved the client's reputation past a local penalty.
#[test]
fn an_error_answer_is_no_score() {
    let dns = DnsServer::start();
    let env = env(
        &dns,
        "[[reputation.zone]]\nzone = \"zen.test\"\nkind = \"score\"\n",
    );
    // Three refused recipients: -26 of local reputation, below the threshold of -20.
    probe(&env, "198.51.100.66");
    let (mut smtp, _) = env.smtp_as("198.51.100.66");
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(
        r.starts_with("554 5.7.1"),
        "the error answer did not offset the penalty: {r}"
    );
    assert!(env.postern_log().contains("answered an error code"));
}

/// Learned reputation is kept per client as connection and AUTH counts are: an IPv6 client
/// under its /64, so a new address in the same block does not start afresh (before, the
/// store was asked for the exact address).
#[test]
fn an_ipv6_client_keeps_its_reputation_across_its_64() {
    let dns = DnsServer::start();
    let env = env(&dns, "");
    assert!(probe(&env, "IPV6:2001:db8:40:1::10").starts_with("250"));
    let (mut smtp, _) = env.smtp_as("IPV6:2001:db8:40:1:ffff::99");
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(
        r.starts_with("554 5.7.1") && r.contains("(-26)"),
        "same /64, other address: {r}"
    );
    // Another /64 is another client.
    let (mut smtp, _) = env.smtp_as("IPV6:2001:db8:40:2::10");
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(r.starts_with("250"), "another /64: {r}");
}
