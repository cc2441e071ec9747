//! SPF end to end: Postfix with Postern as its milter, rbldnsd serving spf.test, client
//! addresses set with XCLIENT.

use crate::support::{DnsServer, MailEnv, Socket};

fn config(dns: &DnsServer, spf: &str) -> String {
    format!(
        "hostname = \"mx.postern.test\"\n\
         [dns]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = 2\nattempts = 1\n\
         [spf]\nenabled = true\n{spf}",
        dns.port
    )
}

/// Sends from `client_ip` with MAIL FROM `from`; returns (accepted, swaks dialogue).
fn send(env: &MailEnv, client_ip: &str, from: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "--xclient-addr",
        client_ip,
        "-f",
        from,
        "-t",
        "b@rcpt.example",
    ];
    args.extend_from_slice(extra);
    env.swaks_result(&args)
}

#[test]
fn pass_is_recorded_and_fail_is_refused() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns, ""));
    let (ok, text) = send(&env, "192.0.2.10", "a@pass.spf.test", &[]);
    assert!(ok, "{text}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(
        stored.contains(
            "Received-SPF: pass (mx.postern.test: domain of a@pass.spf.test designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from=\"a@pass.spf.test\"; helo=client.postern.test; identity=mailfrom; receiver=mx.postern.test;"
        ),
        "{stored}"
    );

    let (ok, text) = send(&env, "198.51.100.20", "a@pass.spf.test", &[]);
    assert!(!ok);
    assert!(
        text.contains("550 5.7.23 SPF fail: a@pass.spf.test does not allow client [198.51.100.20]"),
        "{text}"
    );
}

#[test]
fn softfail_is_accepted_unless_treated_as_fail() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns, ""));
    let (ok, text) = send(&env, "198.51.100.20", "a@soft.spf.test", &[]);
    assert!(ok, "{text}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(stored.contains("Received-SPF: softfail"), "{stored}");
    drop(env);

    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, "treat_softfail_as_fail = true\n"),
    );
    let (ok, text) = send(&env, "198.51.100.20", "a@soft.spf.test", &[]);
    assert!(!ok);
    assert!(
        text.contains("550 5.7.23 SPF softfail treated as fail"),
        "{text}"
    );
}

#[test]
fn temperror_defers_and_helo_fail_decides() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns, ""));
    let (ok, text) = send(&env, "192.0.2.10", "a@temp.spf.test", &[]);
    assert!(!ok);
    assert!(
        text.contains("451 4.4.3 Temporary DNS failure evaluating SPF"),
        "{text}"
    );
    // The HELO identity fails although MAIL FROM would pass.
    let (ok, text) = send(
        &env,
        "192.0.2.10",
        "a@pass.spf.test",
        &["--helo", "badhelo.spf.test"],
    );
    assert!(!ok);
    assert!(
        text.contains("550 5.7.23 SPF fail: postmaster@badhelo.spf.test"),
        "{text}"
    );
}

#[test]
fn trusted_clients_are_not_checked() {
    let dns = DnsServer::start();
    let env = MailEnv::start(Socket::Unix, &config(&dns, ""));
    // 127.0.0.1 is an allowed relay source: no SPF check, no header.
    let reply = env.smtp().send(
        "a@pass.spf.test",
        "b@rcpt.example",
        b"Subject: t\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(!stored.contains("Received-SPF"), "{stored}");
}

#[test]
fn authentication_results_replace_forged_ones_for_this_host() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, "header = \"authentication-results\"\n"),
    );
    let (ok, text) = send(
        &env,
        "192.0.2.10",
        "a@pass.spf.test",
        &[
            "--add-header",
            "Authentication-Results: mx.postern.test; spf=pass smtp.mailfrom=forged@example.com",
            "--add-header",
            "Authentication-Results: other.example; spf=none",
        ],
    );
    assert!(ok, "{text}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(
        !stored.contains("forged@example.com"),
        "forged result removed:\n{stored}"
    );
    assert!(
        stored.contains("Authentication-Results: other.example; spf=none"),
        "{stored}"
    );
    assert!(
        stored.contains(
            "Authentication-Results: mx.postern.test; spf=pass smtp.mailfrom=a@pass.spf.test"
        ),
        "{stored}"
    );
}

/// A HELO crafted to read as a second result (`x;dkim=pass;...`) is written as one quoted
/// value: no `dkim=pass` result appears under this host's name.
#[test]
fn a_crafted_helo_cannot_add_a_result() {
    let dns = DnsServer::start();
    let env = MailEnv::start(
        Socket::Unix,
        &config(&dns, "header = \"authentication-results\"\n"),
    );
    let (ok, text) = send(
        &env,
        "192.0.2.10",
        "<>",
        &["--helo", "x;dkim=pass;header.d=paypal.com"],
    );
    assert!(ok, "{text}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    let ours = stored
        .lines()
        .find(|l| l.starts_with("Authentication-Results: mx.postern.test;"))
        .unwrap_or_else(|| panic!("no result header:\n{stored}"));
    assert!(
        ours.ends_with("smtp.helo=\"x;dkim=pass;header.d=paypal.com\""),
        "{ours}"
    );
    assert_eq!(ours.matches(';').count(), 3, "one resinfo only: {ours}");
}

/// Forged results naming this host go from every message, also when SPF did not run, and the
/// authserv-id is found after a comment and in any case.
#[test]
fn forged_results_are_removed_without_spf() {
    let env = MailEnv::start(Socket::Unix, "hostname = \"mx.postern.test\"\n");
    let (ok, text) = env.swaks_result(&[
        "-t",
        "b@rcpt.example",
        "--add-header",
        "Authentication-Results: (c) MX.Postern.Test; dkim=pass header.d=paypal.com",
        "--add-header",
        "Authentication-Results: other.example; dkim=pass header.d=other.example",
    ]);
    assert!(ok, "{text}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(
        !stored.contains("paypal.com"),
        "forged result kept:\n{stored}"
    );
    assert!(
        stored.contains("Authentication-Results: other.example; dkim=pass"),
        "{stored}"
    );
}

/// With organizations of their own SPF actions, each recipient is judged by its own: an SPF
/// fail is accepted for the lenient organization's recipient and refused at RCPT for the
/// strict one's (which follows `[spf]`); the message reaches the lenient recipient only.
#[test]
fn each_organization_judges_spf_for_its_recipients() {
    let dns = DnsServer::start();
    let orgs = "[[organization]]\nname = \"lenient\"\ndomains = [\"lenient.test\"]\n\
                spf_fail_action = \"accept\"\n\
                [[organization]]\nname = \"strict\"\ndomains = [\"strict.test\"]\n";
    let env = MailEnv::start(Socket::Unix, &config(&dns, orgs));
    let (mut smtp, ehlo) = env.smtp_as("198.51.100.20");
    assert!(ehlo.starts_with("250"), "{ehlo}");
    let r = smtp.command("MAIL FROM:<a@pass.spf.test>").unwrap();
    assert!(r.starts_with("250"), "MAIL is judged per recipient: {r}");
    let r = smtp.command("RCPT TO:<y@strict.test>").unwrap();
    assert!(
        r.starts_with("550 5.7.23 SPF fail: a@pass.spf.test does not allow client [198.51.100.20]"),
        "{r}"
    );
    let r = smtp.command("RCPT TO:<x@lenient.test>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let reply = smtp.data(b"Subject: spf\r\n\r\nbody\r\n");
    assert!(reply.starts_with("250"), "{reply}");
    let stored = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(stored.contains("X-Rcpt-Args: <x@lenient.test>"), "{stored}");
    assert!(!stored.contains("strict.test"), "{stored}");
    assert!(stored.contains("Received-SPF: fail"), "{stored}");
}
