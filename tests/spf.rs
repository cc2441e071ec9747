//! SPF end to end: Postfix with Postern as its milter, rbldnsd serving spf.test, client
//! addresses set with XCLIENT.

mod support;

use support::{DnsServer, MailEnv, Socket};

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
