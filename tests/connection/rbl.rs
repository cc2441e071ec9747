//! DNSBL/RBL end to end: Postfix with Postern as its milter, rbldnsd serving test zones, client
//! addresses set with XCLIENT.

use std::time::{Duration, Instant};

use crate::support::{DnsServer, MailEnv, Socket};

fn config(dns: &DnsServer, rbl: &str) -> String {
    format!(
        "[connection]\nhelp_url = \"https://postmaster.example/blocked\"\n\
         [dns]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = 2\nattempts = 1\n\
         [rbl]\nenabled = true\n{rbl}",
        dns.port
    )
}

const ZEN: &str = "[[rbl.zone]]\nzone = \"zen.test\"\nanswers = [\"127.0.0.[2..11]\"]\n";

#[test]
fn listed_ipv4_client_is_refused_naming_zone_reason_and_help() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, &format!("hit_action = \"reject\"\n{ZEN}")),
    );
    let (ok, text) = env.send_from("192.0.2.10");
    assert!(!ok);
    assert!(
        text.contains(
            "554 5.7.1 Service unavailable; client [192.0.2.10] blocked using zen.test: \
             Listed by zen.test; see http://zen.test/lookup?192.0.2.10; \
             see https://postmaster.example/blocked"
        ),
        "{text}"
    );
    let (ok, text) = env.send_from("198.51.100.20");
    assert!(ok, "an unlisted client passes: {text}");
    env.wait_delivered(1);
    assert!(
        env.postern_log().contains("check=\"rbl\""),
        "one log line per check"
    );
}

#[test]
fn listed_ipv6_client_is_refused() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, &format!("hit_action = \"reject\"\n{ZEN}")),
    );
    let (ok, text) = env.send_from("IPV6:2001:db8:bad::25");
    assert!(!ok);
    assert!(
        text.contains("554 5.7.1") && text.contains("IPv6 client listed by zen.test"),
        "{text}"
    );
}

#[test]
fn default_hit_action_delays_with_421_and_disconnects() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns, ZEN));
    let (ok, text) = env.send_from("192.0.2.10");
    assert!(!ok);
    assert!(text.contains("421 4.7.1 Service unavailable"), "{text}");
    env.assert_nothing_delivered();
}

#[test]
fn error_answers_are_not_listings() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, &format!("hit_action = \"reject\"\n{ZEN}")),
    );
    // zen.test answers 127.255.255.254 ("query refused") for this client.
    let (ok, text) = env.send_from("198.51.100.66");
    assert!(ok, "{text}");
    env.wait_delivered(1);
    assert!(
        env.postern_log()
            .contains("an error code rather than a listing")
    );
}

#[test]
fn weights_add_up_to_the_threshold() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(
            &dns,
            &format!(
                "hit_action = \"reject\"\nhit_threshold = 2\n{ZEN}[[rbl.zone]]\nzone = \"bl.test\"\n"
            ),
        ),
    );
    // Listed by both zones.
    let (ok, text) = env.send_from("192.0.2.10");
    assert!(!ok && text.contains("blocked using zen.test"), "{text}");
    // Listed by zen.test only: weight 1 < 2.
    let (ok, text) = env.send_from("192.0.2.200");
    assert!(ok, "{text}");
    env.wait_delivered(1);
}

#[test]
fn a_zone_failing_its_self_test_is_taken_out_of_use() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(
            &dns,
            "hit_action = \"reject\"\n[[rbl.zone]]\nzone = \"broken.test\"\n",
        ),
    );
    let (ok, text) = env.send_from("198.51.100.20");
    assert!(ok, "a zone listing everything must not block mail: {text}");
    env.wait_delivered(1);
    assert!(
        env.postern_log().contains("127.0.0.1 is listed"),
        "{}",
        env.postern_log()
    );
}

#[test]
fn dns_timeout_never_blocks_mail_unless_configured() {
    // A nameserver that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let rbl = |extra: &str| {
        format!(
            "[dns]\nnameservers = [\"127.0.0.1:{port}\"]\ntimeout = 1\nattempts = 1\n\
             [rbl]\nenabled = true\n{extra}{ZEN}"
        )
    };
    let env = MailEnv::start(Socket::Unix, &rbl(""));
    let started = Instant::now();
    let (ok, text) = env.send_from("192.0.2.10");
    assert!(ok, "a DNS failure lets mail through by default: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "bounded by the DNS timeout"
    );
    env.wait_delivered(1);
    drop(env);

    let env = MailEnv::start(Socket::Unix, &rbl("lookup_failure_action = \"delay\"\n"));
    let (ok, text) = env.send_from("192.0.2.10");
    assert!(!ok);
    assert!(text.contains("451 4.4.3 Temporary DNS failure"), "{text}");
}

#[test]
fn local_clients_are_not_looked_up_and_answers_are_cached() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns, ZEN));
    let (ok, _) = env.send_from("10.1.2.3");
    assert!(ok);
    assert_eq!(
        dns.queries_for("3.2.1.10.zen.test"),
        0,
        "private address skipped"
    );
    for _ in 0..2 {
        let (ok, text) = env.send_from("198.51.100.20");
        assert!(ok, "{text}");
    }
    env.wait_delivered(3);
    assert_eq!(
        dns.queries_for("20.100.51.198.zen.test"),
        1,
        "the second connection from the same client is answered from the cache"
    );
}

/// With organizations of their own hit actions, a listed client is judged per recipient at
/// RCPT: accepted for the organization that accepts listed clients, refused for the one that
/// follows `[rbl] hit_action`; the message reaches the first only.
#[test]
fn each_organization_judges_a_listed_client_for_its_recipients() {
    let dns = DnsServer::start();
    let orgs = "[[organization]]\nname = \"open\"\ndomains = [\"open.test\"]\n\
                rbl_hit_action = \"accept\"\n\
                [[organization]]\nname = \"closed\"\ndomains = [\"closed.test\"]\n";
    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, &format!("hit_action = \"reject\"\n{ZEN}{orgs}")),
    );
    let (mut smtp, ehlo) = env.smtp_as("192.0.2.10");
    assert!(
        ehlo.starts_with("250"),
        "judged at RCPT, not at connect: {ehlo}"
    );
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let r = smtp.command("RCPT TO:<y@closed.test>").unwrap();
    assert!(
        r.starts_with("554 5.7.1 Service unavailable; client [192.0.2.10] blocked using zen.test"),
        "{r}"
    );
    let r = smtp.command("RCPT TO:<x@open.test>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let reply = smtp.data(b"Subject: listed\r\n\r\nbody\r\n");
    assert!(reply.starts_with("250"), "{reply}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(stored.contains("X-Rcpt-Args: <x@open.test>"), "{stored}");
    assert!(!stored.contains("closed.test"), "{stored}");
}
