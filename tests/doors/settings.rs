//! Settings the seed documents name that no other test exercised, each shown doing what it
//! says through the proxy, against real clients (openssl s_client) and a scripted target that
//! records what it was sent.

use std::io::Write;
use std::process::Command;

use crate::support::faulty::{Faults, FaultyTarget};
use crate::support::proxy::ProxyEnv;

/// The proxy with `proxy` keys (plain listener, test certificates at hand) relaying to
/// `target`, with `delivery` keys.
fn proxy(target: &FaultyTarget, proxy: &str, delivery: &str) -> ProxyEnv {
    ProxyEnv::start(
        &format!(
            "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n{proxy}\n\
             [delivery]\n{delivery}\n\
             [[relay_target]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\n",
            target.port
        ),
        &[],
    )
}

/// The first line a new connection to `port` hears.
fn greeting(port: u16) -> String {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut line).unwrap();
    line
}

/// What `target` took of one message sent through the proxy with `delivery` keys.
fn relayed(delivery: &str) -> crate::support::faulty::Taken {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, "", delivery);
    let r = env
        .smtp()
        .send("a@sender.test", "b@rcpt.test", b"Subject: x\r\n\r\nhi\r\n");
    assert!(r.starts_with("250"), "{r}");
    target.taken().remove(0)
}

const CERTS: &str = "certificate_file = \"{dir}/server.pem\"\nkey_file = \"{dir}/server.key\"\n";

/// `[proxy] banner`: the greeting is the host name and exactly that text.
#[test]
fn the_banner_is_the_greeting() {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, "banner = \"ESMTP Gate of the test\"", "");
    assert_eq!(
        greeting(env.port),
        "220 gw.postern.test ESMTP Gate of the test\r\n"
    );
}

/// `[delivery] helo_name`: the name the relay target hears in EHLO (the host name without it).
#[test]
fn the_target_hears_the_helo_name() {
    for (delivery, expected) in [
        (
            "helo_name = \"relay.postern.test\"",
            "EHLO relay.postern.test",
        ),
        ("", "EHLO gw.postern.test"),
    ] {
        assert_eq!(relayed(delivery).ehlo, expected);
    }
}

/// `[proxy] max_inbound_connections`: clients beyond it get 421 4.7.0 at once; a place freed
/// is served again.
#[test]
fn clients_beyond_the_connection_limit_get_421() {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, "max_inbound_connections = 2", "");
    let first = env.smtp();
    let mut second = env.smtp();
    let line = greeting(env.port);
    assert!(line.starts_with("421 4.7.0"), "{line}");
    assert!(second.command("EHLO c.test").unwrap().starts_with("250"));
    drop(first);
    // The freed place is taken again (the proxy notices the close at its next read).
    let served = (0..50).any(|_| {
        let served = greeting(env.port).starts_with("220");
        if !served {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        served
    });
    assert!(served, "a freed place is served again");
}

/// `[proxy] max_inbound_tls_connections`: the implicit TLS listener has a limit of its own.
/// Beyond it a client is closed at once, while the plain listener (its own limit not reached)
/// still greets; a TLS client within the limit completes its handshake.
#[test]
fn the_tls_listener_has_its_own_connection_limit() {
    use std::io::Read;
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(
        &target,
        &format!(
            "listen_tls = [\"127.0.0.1:{{tls_port}}\"]\n{CERTS}max_inbound_tls_connections = 1"
        ),
        "",
    );
    let tls = || std::net::TcpStream::connect(("127.0.0.1", env.tls_port)).unwrap();
    let first = tls();
    let mut second = tls();
    second
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    // Closed (or reset) without a byte: no plain-text reply on a TLS port.
    assert!(
        matches!(second.read(&mut buf), Ok(0) | Err(_)),
        "the second TLS client is closed"
    );
    assert!(
        greeting(env.port).starts_with("220 "),
        "the plain listener is not full"
    );
    drop(first);
    let handshake = (0..50).any(|_| {
        let (done, _) = s_client(env.tls_port, &[]);
        if !done {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        done
    });
    assert!(handshake, "a freed TLS place is served again");
}

/// `tls_support = "disabled"`: no STARTTLS offered or taken, although a certificate is there.
#[test]
fn tls_disabled_offers_no_starttls() {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, &format!("tls_support = \"disabled\"\n{CERTS}"), "");
    let mut smtp = env.smtp();
    let ehlo = smtp.command("EHLO c.test").unwrap();
    assert!(
        ehlo.starts_with("250") && !ehlo.contains("STARTTLS"),
        "{ehlo}"
    );
    let r = smtp.command("STARTTLS").unwrap();
    assert!(r.starts_with('5'), "{r}");
    // With TLS enabled (the default), the same listener offers it.
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, CERTS, "");
    let ehlo = env.smtp().command("EHLO c.test").unwrap();
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
}

/// openssl s_client with STARTTLS at one TLS version: whether the handshake succeeded.
fn handshake(port: u16, version: &str) -> (bool, String) {
    s_client(port, &["-starttls", "smtp", version])
}

/// openssl s_client to `port` with `options`: whether a TLS handshake was made, and what it
/// printed.
fn s_client(port: u16, options: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("s_client")
        .args(options)
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs");
    let (_, text) = crate::support::outcome(&out);
    let negotiated = text.contains("Cipher is") && !text.contains("Cipher is (NONE)");
    (negotiated, text)
}

/// `[dns]` at the test DNS server and a DNSBL zone that lists 192.0.2.10 (`[rbl]` keys
/// `rbl` added).
fn listing_dnsbl(dns: &crate::support::DnsServer, rbl: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"127.0.0.1:{}\"]\ntimeout = 2\nattempts = 1\n\
         [rbl]\nenabled = true\nhit_action = \"reject\"\n{rbl}\n\
         [[rbl.zone]]\nzone = \"zen.test\"\nanswers = [\"127.0.0.[2..11]\"]\n",
        dns.port
    )
}

/// `min_tls_version = "1.3"`: a TLS 1.2 client is refused, a TLS 1.3 client served.
#[test]
fn min_tls_version_refuses_older_clients() {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, &format!("min_tls_version = \"1.3\"\n{CERTS}"), "");
    let (ok, out) = handshake(env.port, "-tls1_2");
    assert!(!ok, "a TLS 1.2 client was served:\n{out}");
    let (ok, out) = handshake(env.port, "-tls1_3");
    assert!(ok, "{out}");
    // The default (1.2) serves the TLS 1.2 client.
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, CERTS, "");
    let (ok, out) = handshake(env.port, "-tls1_2");
    assert!(ok, "{out}");
}

/// `[delivery] source_address`: connections to the relay targets come from that address; one
/// the machine does not have is a clear relay failure (4xx to the client, the reason logged).
#[test]
fn connections_to_targets_come_from_the_source_address() {
    for (delivery, expected) in [
        ("source_address = \"127.0.0.2\"", "127.0.0.2"),
        ("", "127.0.0.1"),
    ] {
        assert_eq!(relayed(delivery).peer.ip().to_string(), expected);
    }
    // TEST-NET-1: no address of this machine, so the bind fails before anything is sent.
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(&target, "", "source_address = \"192.0.2.7\"");
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.test>").unwrap();
    let r = smtp.command("RCPT TO:<b@rcpt.test>").unwrap();
    assert!(r.starts_with('4'), "{r}");
    assert!(target.taken().is_empty());
    env.wait_for_log("cannot use source_address 192.0.2.7");
}

/// `enabled = false` keeps a ruleset or an encryption rule in the file without using it: the
/// same conversation is refused with it enabled and passes with it disabled.
#[test]
fn disabled_rules_stay_in_the_file_unused() {
    let policies = |enabled: bool| {
        [
            format!(
                "[[ruleset]]\nname = \"r\"\nenabled = {enabled}\n[[ruleset.rule]]\nname = \"s\"\n\
                 targets = [\"body\"]\nregex = \"secret\"\naction = \"reject\"\n"
            ),
            format!(
                "[[encryption_rule]]\nrecipient_domain = \"rcpt.test\"\n\
                 sender_encryption = \"required\"\nenabled = {enabled}\n"
            ),
        ]
    };
    for enabled in [true, false] {
        for (i, policy) in policies(enabled).iter().enumerate() {
            let target = FaultyTarget::start(Faults::default());
            let env = ProxyEnv::start(
                &format!(
                    "{policy}[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
                     [[relay_target]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\n",
                    target.port
                ),
                &[],
            );
            let mut smtp = env.smtp();
            smtp.command("EHLO c.test").unwrap();
            smtp.command("MAIL FROM:<a@sender.test>").unwrap();
            let rcpt = smtp.command("RCPT TO:<b@rcpt.test>").unwrap();
            if i == 1 {
                // The encryption rule answers at RCPT (530 without TLS).
                assert_eq!(rcpt.starts_with("530"), enabled, "{rcpt}");
                continue;
            }
            assert!(rcpt.starts_with("250"), "{rcpt}");
            assert!(smtp.command("DATA").unwrap().starts_with("354"));
            smtp.writer_mut()
                .write_all(b"Subject: x\r\n\r\nthe secret plan\r\n.\r\n")
                .unwrap();
            let end = smtp.read_reply().unwrap();
            assert_eq!(end.starts_with("550"), enabled, "{end}");
            assert_eq!(target.taken().len(), usize::from(!enabled));
        }
    }
}

/// `[connection] client_ip_override`: the loopback client is judged as the address given (here
/// one of a refused network), and the setting is warned about at start.
#[test]
fn a_client_ip_override_judges_every_client_as_that_address() {
    let target = FaultyTarget::start(Faults::default());
    let refused = "[connection]\nip_address_rejection = [\"192.0.2.0/24\"]\n";
    let env = proxy(&target, refused, "");
    assert!(
        greeting(env.port).starts_with("220 "),
        "loopback is not refused"
    );
    drop(env);
    let env = proxy(
        &target,
        &format!("{refused}client_ip_override = \"192.0.2.10\"\n"),
        "",
    );
    assert_eq!(
        greeting(env.port),
        "554 5.7.1 Client host rejected: access denied\r\n"
    );
    assert!(
        env.log().contains("client_ip_override is set"),
        "{}",
        env.log()
    );
}

/// `[connection] report_rejections = false`: a policy refusal tells only that it is one, with
/// its codes and the postmaster address; the log keeps the reason. A refusal of the address
/// syntax keeps its text.
#[test]
fn refusals_are_generic_when_rejections_are_not_reported() {
    let target = FaultyTarget::start(Faults::default());
    let relay = "[relay]\nrestrict_relaying = true\nlocal_domains = [\"rcpt.test\"]\n\
                 allowed_relay_sources = []\n";
    for (report, expected) in [
        ("true", "554 5.7.1 <x@other.test>: Relay access denied\r\n"),
        (
            "false",
            "554 5.7.1 Refused by this server's policy; contact <postmaster@rcpt.test>\r\n",
        ),
    ] {
        let env = proxy(
            &target,
            &format!(
                "{relay}[connection]\nreport_rejections = {report}\npostmaster = \"postmaster@rcpt.test\"\n"
            ),
            "",
        );
        let mut smtp = env.smtp();
        smtp.begin("a@sender.test");
        assert_eq!(
            smtp.command("RCPT TO:<x@other.test>").unwrap(),
            expected,
            "report_rejections = {report}"
        );
        let syntax = smtp.command("RCPT TO:<a\u{1b}b@rcpt.test>").unwrap();
        assert!(syntax.starts_with("5"), "{syntax}");
        assert!(
            !syntax.contains("policy"),
            "a syntax error says what is wrong: {syntax}"
        );
        env.wait_for_log("Relay access denied");
    }
}

/// `[connection] postmaster_exempt`: with a DNSBL refusal held until RCPT, mail to postmaster
/// (bare or at a local domain, any case) still gets through; every other recipient is
/// refused. The listed client is made with client_ip_override.
#[test]
fn the_postmaster_is_reachable_from_a_listed_client() {
    let dns = crate::support::DnsServer::start();
    let target = FaultyTarget::start(Faults::default());
    let policy = |exempt: bool| {
        format!(
            "[connection]\nclient_ip_override = \"192.0.2.10\"\ndelayed_rejection_state = \"rcpt\"\n\
             postmaster_exempt = {exempt}\n\
             [relay]\nlocal_domains = [\"rcpt.test\"]\n{}",
            listing_dnsbl(&dns, "")
        )
    };
    let env = proxy(&target, &policy(true), "");
    let mut smtp = env.smtp();
    smtp.begin("a@sender.test");
    let refused = smtp.command("RCPT TO:<b@rcpt.test>").unwrap();
    assert!(
        refused.starts_with("554 5.7.1") && refused.contains("zen.test"),
        "{refused}"
    );
    for postmaster in ["postmaster@rcpt.test", "Postmaster"] {
        let r = smtp.command(&format!("RCPT TO:<{postmaster}>")).unwrap();
        assert!(r.starts_with("250"), "{postmaster}: {r}");
    }
    let r = smtp.command("DATA").unwrap();
    assert!(r.starts_with("354"), "{r}");
    smtp.writer_mut()
        .write_all(b"Subject: help\r\n\r\nI am listed\r\n.\r\n")
        .unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("250"), "{r}");
    let taken = target.taken();
    assert_eq!(
        taken[0].recipients,
        ["postmaster@rcpt.test", "Postmaster"],
        "{taken:?}"
    );
    drop(env);

    let env = proxy(&target, &policy(false), "");
    let mut smtp = env.smtp();
    smtp.begin("a@sender.test");
    let r = smtp.command("RCPT TO:<postmaster@rcpt.test>").unwrap();
    assert!(r.starts_with("554 5.7.1"), "without the exemption: {r}");
}

/// `[proxy] ehlo_discard_keywords` and `ehlo_add_keywords`: withheld keywords are not offered
/// (any case), added lines are, and the rest stays as it was.
#[test]
fn ehlo_keywords_are_withheld_and_added() {
    let target = FaultyTarget::start(Faults::default());
    let ehlo = |keys: &str| {
        let env = proxy(&target, keys, "");
        let mut smtp = env.smtp();
        smtp.command("EHLO client.postern.test").unwrap()
    };
    let plain = ehlo("");
    assert!(
        plain.contains("250-PIPELINING\r\n") && plain.contains("8BITMIME"),
        "{plain}"
    );
    let custom = ehlo(
        "ehlo_discard_keywords = [\"pipelining\", \"SMTPUTF8\"]\nehlo_add_keywords = [\"X-POLICY strict\"]",
    );
    assert!(
        !custom.contains("PIPELINING") && !custom.contains("SMTPUTF8"),
        "{custom}"
    );
    assert!(
        custom.contains("8BITMIME") && custom.ends_with("250 X-POLICY strict\r\n"),
        "{custom}"
    );
}

/// `spoof_detection`: a client from outside (not a relay source, not authenticated) claiming
/// a local domain is refused at MAIL for its envelope sender and at the end of the message
/// for From, or let through tagged; a connection profile turns it off for its clients.
#[test]
fn spoofed_local_senders_are_refused_or_tagged() {
    let target = FaultyTarget::start(Faults::default());
    let relay = |action: &str, profile: &str| {
        format!(
            "[relay]\nlocal_domains = [\"local.test\"]\nallowed_relay_sources = []\n\
             spoof_detection = \"{action}\"\n{profile}"
        )
    };
    let message = |from: &str| format!("From: <{from}>\r\nSubject: x\r\n\r\nhi\r\n");

    let env = proxy(&target, &relay("reject", ""), "");
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    let r = smtp.command("MAIL FROM:<ceo@local.test>").unwrap();
    assert!(
        r.starts_with("550 5.7.1 Spoofed sender: the envelope sender is in local.test"),
        "{r}"
    );
    let r = smtp.transaction(
        "a@other.test",
        "b@local.test",
        message("ceo@local.test").as_bytes(),
    );
    assert!(
        r.starts_with("550 5.7.1 Spoofed sender: the From is in local.test"),
        "{r}"
    );
    let r = smtp.transaction(
        "a@other.test",
        "b@local.test",
        message("a@other.test").as_bytes(),
    );
    assert!(r.starts_with("250"), "an outside domain passes: {r}");
    assert_eq!(target.taken().len(), 1);
    drop(env);

    let env = proxy(&target, &relay("tag", ""), "");
    let r = env.smtp().send(
        "ceo@local.test",
        "b@local.test",
        message("ceo@local.test").as_bytes(),
    );
    assert!(r.starts_with("250"), "{r}");
    let tagged = String::from_utf8_lossy(&target.taken()[1].message).into_owned();
    assert!(
        tagged.contains(
            "X-Postern-Spoofed: envelope sender in local domain local.test from an external client"
        ) && tagged.contains("X-Postern-Spoofed: From in local domain local.test"),
        "{tagged}"
    );
    drop(env);

    let exempt = "[[connection_profile]]\nname = \"partner\"\nclient_hosts = [\"127.0.0.1\"]\n\
                  spoof_detection = \"off\"\n";
    let env = proxy(&target, &relay("reject", exempt), "");
    let r = env.smtp().send(
        "ceo@local.test",
        "b@local.test",
        message("ceo@local.test").as_bytes(),
    );
    assert!(r.starts_with("250"), "the profile turns it off: {r}");
    let untagged = String::from_utf8_lossy(&target.taken()[2].message).into_owned();
    assert!(!untagged.contains("X-Postern-Spoofed"), "{untagged}");
}

/// The proxy relaying to the target at `target_port`, with `relay_target` keys added to it.
fn proxy_with_target_keys(target_port: u16, relay_target: &str) -> ProxyEnv {
    ProxyEnv::start(
        &format!(
            "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {target_port}\n{relay_target}\n"
        ),
        &[],
    )
}

/// One message through `env`: the reply to RCPT when it is not 250, else the reply to the end
/// of the message.
fn try_send(env: &ProxyEnv) -> String {
    let mut smtp = env.smtp();
    smtp.begin("a@sender.test");
    let r = smtp.command("RCPT TO:<b@rcpt.test>").unwrap();
    if !r.starts_with("250") {
        return r;
    }
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all(b"Subject: x\r\n\r\nhi\r\n.\r\n")
        .unwrap();
    smtp.read_reply().unwrap()
}

/// Relay AUTH performed against a target that checks the credentials: PLAIN and LOGIN as
/// configured, `auth = "auto"` taking PLAIN when offered and LOGIN otherwise; a wrong password
/// defers the message (nothing taken); auto with no mechanism Postern speaks defers too.
#[test]
fn relay_auth_is_checked_by_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("relay.password");
    std::fs::write(&password, "s3cret\n").unwrap();
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let keys = |auth: &str| {
        format!(
            "auth = \"{auth}\"\nusername = \"relay-user\"\npassword_file = \"{}\"\nauth_over_plaintext = true",
            password.display()
        )
    };
    let send = |offered: &'static str, expected: (&'static str, &'static str), auth: &str| {
        let target = FaultyTarget::start(Faults {
            extensions: vec![offered],
            credentials: Some(expected),
            ..Faults::default()
        });
        let env = proxy_with_target_keys(target.port, &keys(auth));
        let reply = try_send(&env);
        (reply, target.taken(), env.log())
    };
    let user = ("relay-user", "s3cret");
    for (auth, offered, mechanism) in [
        ("plain", "AUTH PLAIN LOGIN", "PLAIN"),
        ("login", "AUTH PLAIN LOGIN", "LOGIN"),
        ("auto", "AUTH LOGIN PLAIN", "PLAIN"),
        ("auto", "AUTH LOGIN", "LOGIN"),
    ] {
        let (reply, taken, _) = send(offered, user, auth);
        assert!(
            reply.starts_with("250"),
            "auth = {auth}, {offered}: {reply}"
        );
        assert_eq!(
            taken[0].authenticated.as_deref(),
            Some(format!("{mechanism} relay-user").as_str()),
            "auth = {auth}, {offered}"
        );
    }
    let (reply, taken, log) = send("AUTH PLAIN LOGIN", ("relay-user", "other"), "auto");
    assert!(
        reply.starts_with("451 4.4.1"),
        "a wrong password defers: {reply}"
    );
    assert!(taken.is_empty() && log.contains("535 5.7.8"), "{log}");
    let (reply, taken, log) = send("AUTH CRAM-MD5", user, "auto");
    assert!(reply.starts_with("451"), "{reply}");
    assert!(
        taken.is_empty() && log.contains("no AUTH mechanism Postern speaks"),
        "{log}"
    );
}

/// `security = "ssl"` (implicit TLS) toward a relay target that requires a client certificate
/// and checks AUTH: a second Postern on an implicit TLS listener with
/// `client_certificates = "required"` and a users file. With `client_certificate_file` and
/// `auth = "auto"` the message arrives; without the certificate, or with a wrong password,
/// the client is deferred and nothing arrives.
#[test]
fn implicit_tls_relay_with_a_client_certificate_and_auth() {
    let users = tempfile::tempdir().unwrap();
    let users_file = crate::support::proxy::users_file(users.path());
    let target = ProxyEnv::start(
        &format!(
            "hostname = \"target.postern.test\"\n[proxy]\nlisten_tls = [\"127.0.0.1:{{tls_port}}\"]\n\
             certificate_file = \"{{dir}}/server.pem\"\nkey_file = \"{{dir}}/server.key\"\n\
             client_certificates = \"required\"\nca_certs = \"{{dir}}/ca.pem\"\n\
             auth_users_file = \"{}\"\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n",
            users_file.display()
        ),
        &[&[]],
    );
    let dir = tempfile::tempdir().unwrap();
    let password = |word: &str| {
        let path = dir.path().join(format!("{word}.password"));
        std::fs::write(&path, format!("{word}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        path.display().to_string()
    };
    let keys = |certificate: bool, word: &str| {
        let mut keys = format!(
            "security = \"ssl\"\nca_file = \"{}\"\nauth = \"auto\"\nusername = \"alice\"\npassword_file = \"{}\"\n",
            target.path("ca.pem"),
            password(word)
        );
        if certificate {
            keys.push_str(&format!(
                "client_certificate_file = \"{}\"\nclient_key_file = \"{}\"\n",
                target.path("client.pem"),
                target.path("client.key")
            ));
        }
        keys
    };
    let relay = proxy_with_target_keys(target.tls_port, &keys(true, "secret"));
    let reply = try_send(&relay);
    assert!(reply.starts_with("250"), "{reply}\n{}", relay.log());
    let arrived = target.sinks[0].wait_delivered(1);
    assert!(
        String::from_utf8_lossy(&arrived[0]).contains("Subject: x"),
        "{arrived:?}"
    );
    drop(relay);
    for (certificate, word) in [(false, "secret"), (true, "wrong")] {
        let relay = proxy_with_target_keys(target.tls_port, &keys(certificate, word));
        let reply = try_send(&relay);
        assert!(
            reply.starts_with("451"),
            "certificate {certificate}, password {word}: {reply}"
        );
    }
    assert_eq!(target.sinks[0].delivered().len(), 1, "nothing more arrived");
}

/// `[relay] skip_connection_tests`: an allowed relay source is not looked up in the DNSBL
/// even when its address is public (so `skip_local_ip` has no say): the listed client of
/// 192.0.2.0/24, made with client_ip_override, passes with it and is refused without it.
#[test]
fn allowed_relay_sources_skip_the_connection_tests() {
    let dns = crate::support::DnsServer::start();
    let target = FaultyTarget::start(Faults::default());
    for (skip, refused) in [(true, false), (false, true)] {
        let env = proxy(
            &target,
            &format!(
                "[connection]\nclient_ip_override = \"192.0.2.10\"\n\
                 [relay]\nallowed_relay_sources = [\"192.0.2.0/24\"]\nskip_connection_tests = {skip}\n{}",
                listing_dnsbl(&dns, "skip_local_ip = true")
            ),
            "",
        );
        let line = greeting(env.port);
        assert_eq!(
            line.starts_with("554 5.7.1"),
            refused,
            "skip_connection_tests = {skip}: {line}"
        );
    }
}

/// `enabled = false` on an outbound TLS policy: the policy that asks for TLS 1.3 defers a
/// recipient the plain target cannot carry; disabled, the recipient goes.
#[test]
fn a_disabled_outbound_tls_policy_is_not_used() {
    for (enabled, expected) in [(true, "451 4.7.5"), (false, "250")] {
        let env = ProxyEnv::start(
            &format!(
                "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
                 [[outbound_tls_policy]]\nname = \"modern\"\nrecipient_domains = [\"v13.test\"]\n\
                 min_version = \"1.3\"\nenabled = {enabled}\n\
                 [[relay_target]]\nname = \"plain\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
            ),
            &[&[]],
        );
        let mut smtp = env.smtp();
        smtp.begin("a@sender.test");
        let r = smtp.command("RCPT TO:<x@v13.test>").unwrap();
        assert!(r.starts_with(expected), "enabled = {enabled}: {r}");
    }
}

/// `client_data_command_timeout`: a client that goes quiet once a recipient is accepted gets
/// 421 4.4.2 after that timeout, not after the longer ones of the other stages.
#[test]
fn a_client_quiet_after_rcpt_meets_the_data_command_timeout() {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(
        &target,
        "client_connection_timeout = 60\nclient_protocol_timeout = 60\nclient_data_command_timeout = 1",
        "",
    );
    let mut smtp = env.smtp();
    smtp.begin("a@sender.test");
    assert!(
        smtp.command("RCPT TO:<b@rcpt.test>")
            .unwrap()
            .starts_with("250")
    );
    // Read with the helper's 20 s limit: only the 1 s timeout can answer in time.
    let r = smtp
        .read_reply()
        .expect("a reply before the connection closes");
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(smtp.is_closed());
}

/// `tls_negotiation_timeout`: a client of the implicit TLS listener that never starts its
/// handshake is closed after that timeout (the connection timeout being far longer).
#[test]
fn a_client_that_never_shakes_hands_meets_the_tls_negotiation_timeout() {
    use std::io::Read;
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(
        &target,
        &format!(
            "listen_tls = [\"127.0.0.1:{{tls_port}}\"]\n{CERTS}client_connection_timeout = 60\ntls_negotiation_timeout = 1"
        ),
        "",
    );
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", env.tls_port)).unwrap();
    silent
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("sent {:?} before any handshake", &buf[..n]),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open after 20 s: tls_negotiation_timeout did not close it"
        ),
    }
}

/// `[delivery] connection_timeout`: a relay target that takes the TCP connection but never
/// greets (a listener that never accepts) is given up after it, well before the protocol
/// timeout; the client hears 451 and the log says connecting timed out.
#[test]
fn a_target_that_never_greets_meets_the_connection_timeout() {
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stalled.local_addr().unwrap().port();
    let env = ProxyEnv::start(
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [delivery]\nconnection_timeout = 1\nprotocol_timeout = 60\n\
             [[relay_target]]\nname = \"stalled\"\nhost = \"127.0.0.1\"\nport = {port}\n"
        ),
        &[],
    );
    let mut smtp = env.smtp();
    smtp.begin("a@sender.test");
    // Within the helper's 20 s: the protocol timeout (60 s) could not answer in time.
    let r = smtp.command("RCPT TO:<b@rcpt.test>").unwrap();
    assert!(r.starts_with("451 4.4.1"), "{r}");
    env.wait_for_log("connecting");
    drop(stalled);
}

/// A connection profile's own `auth_users_file`: its clients authenticate against it, not
/// against `[proxy] auth_users_file`; one user name in two files is refused by check-config.
#[test]
fn a_profile_has_its_own_auth_users() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let global = crate::support::proxy::users_file(dir.path());
    let partner = dir.path().join("partner.users");
    std::fs::write(
        &partner,
        std::fs::read_to_string(&global)
            .unwrap()
            .replace("alice:", "bob:"),
    )
    .unwrap();
    let target = FaultyTarget::start(Faults::default());
    let config = |profile_file: &std::path::Path| {
        format!(
            "auth_users_file = \"{}\"\nauth_over_plaintext = true\n\
             [[connection_profile]]\nname = \"partner\"\nclient_hosts = [\"127.0.0.1\"]\n\
             auth_users_file = \"{}\"\n",
            global.display(),
            profile_file.display()
        )
    };
    let env = proxy(&target, &config(&partner), "");
    let auth = |user: &str| {
        let mut smtp = env.smtp();
        smtp.command("EHLO c.test").unwrap();
        let response =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0secret"));
        smtp.command(&format!("AUTH PLAIN {response}")).unwrap()
    };
    assert!(auth("bob").starts_with("235"), "the profile's user");
    assert!(
        auth("alice").starts_with("535"),
        "a user of [proxy] auth_users_file is not one of the profile's"
    );
    drop(env);

    // alice in both files: refused, naming her and the profile.
    let file = dir.path().join("postern.toml");
    std::fs::write(
        &file,
        format!(
            "[proxy]\n{}[[relay_target]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\n",
            config(&global),
            target.port
        ),
    )
    .unwrap();
    let out = crate::support::proxy::postern()
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("user \"alice\"") && text.contains("partner"),
        "{text}"
    );
}

/// `delayed_rejection_state = "starttls"`: a refused client is greeted and its EHLO answered;
/// its STARTTLS gets the refusal, and a client that never sends STARTTLS gets it at MAIL.
#[test]
fn a_refusal_can_be_delayed_until_starttls() {
    let target = FaultyTarget::start(Faults::default());
    let env = proxy(
        &target,
        &format!(
            "{CERTS}[connection]\nip_address_rejection = [\"127.0.0.0/8\"]\n\
             delayed_rejection_state = \"starttls\"\n"
        ),
        "",
    );
    let mut smtp = env.smtp();
    assert!(smtp.command("EHLO c.test").unwrap().starts_with("250"));
    let r = smtp.command("STARTTLS").unwrap();
    assert!(r.starts_with("554 5.7.1 Client host rejected"), "{r}");
    let mut plain = env.smtp();
    assert!(plain.command("EHLO c.test").unwrap().starts_with("250"));
    let r = plain.command("MAIL FROM:<a@sender.test>").unwrap();
    assert!(r.starts_with("554 5.7.1"), "{r}");
}

/// `tls_fail_recovery_timeout`: after a STARTTLS handshake that fails (the client sends no
/// TLS), the client is told so in plain text and the connection then closes; with 0 it closes
/// at once without a word.
#[test]
fn a_failed_handshake_is_told_in_plain_text() {
    use std::io::Read;
    let target = FaultyTarget::start(Faults::default());
    for (recovery, told) in [(2, true), (0, false)] {
        let env = proxy(
            &target,
            &format!("{CERTS}tls_fail_recovery_timeout = {recovery}"),
            "",
        );
        let mut smtp = env.smtp();
        assert!(smtp.command("EHLO c.test").unwrap().starts_with("250"));
        assert!(smtp.command("STARTTLS").unwrap().starts_with("220"));
        smtp.writer_mut()
            .write_all(b"EHLO this is not TLS\r\n")
            .unwrap();
        let mut heard = Vec::new();
        let _ = smtp.writer_mut().read_to_end(&mut heard);
        let heard = String::from_utf8_lossy(&heard);
        assert_eq!(
            heard.contains("421 4.7.0 gw.postern.test Error: the TLS handshake failed"),
            told,
            "tls_fail_recovery_timeout = {recovery}: {heard:?}"
        );
    }
}

/// `[scan] retain_raw_messages` and `retain_decoded_messages`: a copy of the message as it
/// arrived and one as it left (the card masked) are kept, private, in retain_directory; a
/// message over retain_max_size is not copied. The setting is warned about at start.
#[test]
fn message_copies_are_retained_for_support() {
    let target = FaultyTarget::start(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let env = proxy(
        &target,
        &format!(
            "[scan]\nretain_raw_messages = true\nretain_decoded_messages = true\n\
             retain_directory = \"{}\"\nretain_max_size = 2000\n\
             [[ruleset]]\nname = \"pci\"\n[[ruleset.rule]]\nname = \"cards\"\n\
             targets = [\"body\"]\ndetector = \"card_number\"\naction = \"mask\"\n",
            dir.path().display()
        ),
        "",
    );
    let message = b"Subject: order\r\n\r\ncharge 4111 1111 1111 1111\r\n";
    let r = env.smtp().send("a@sender.test", "b@rcpt.test", message);
    assert!(r.starts_with("250"), "{r}");
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(3000));
    let r = env
        .smtp()
        .send("a@sender.test", "b@rcpt.test", big.as_bytes());
    assert!(r.starts_with("250"), "{r}");
    env.wait_for_log("message copy retained");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "the big message is not copied: {files:?}");
    let read = |suffix: &str| {
        let path = files
            .iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .unwrap_or_else(|| panic!("no {suffix} in {files:?}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        String::from_utf8_lossy(&std::fs::read(path).unwrap()).into_owned()
    };
    assert!(read(".raw.eml").contains("4111 1111 1111 1111"));
    let decoded = read(".decoded.eml");
    assert!(
        decoded.contains("**** **** **** 1111") && !decoded.contains("4111 1111"),
        "{decoded}"
    );
    assert!(
        env.log().contains("copies of messages are written to"),
        "{}",
        env.log()
    );
}

/// `tls_support = "required"` with plain listeners configured: only the implicit TLS
/// listener serves (the seed's "465 only"); the plain one is not opened, and the log says so.
#[test]
fn tls_required_opens_no_plain_listener() {
    let target = FaultyTarget::start(Faults::default());
    let plain = crate::support::free_port();
    let env = ProxyEnv::start(
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{plain}\"]\nlisten_tls = [\"127.0.0.1:{{tls_port}}\"]\n\
             tls_support = \"required\"\n{CERTS}\
             [[relay_target]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {}\n",
            target.port
        ),
        &[],
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", plain)).is_err(),
        "the plain listener is not opened"
    );
    let (negotiated, text) = s_client(env.tls_port, &[]);
    assert!(negotiated, "{text}");
    env.wait_for_log("the plain listeners (listen, submission_listen) are not opened");
}
