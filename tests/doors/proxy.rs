//! The proxy door end to end: real clients (swaks, openssl s_client, a raw socket, a rustls
//! client) talk to `postern proxy`, which relays to real smtp-sinks (some made faulty), to a
//! second Postern proxy as a TLS target and to a real Postfix. Each invariant of DESIGN.md has a test that fails
//! without its protection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use crate::support::proxy::{ProxyEnv, as_stored};
use crate::support::{Smtp, free_port};

/// A proxy on `{port}` with STARTTLS, relaying to the sinks by `targets`.
fn config(extra: &str, targets: &str) -> String {
    format!(
        "hostname = \"gw.postern.test\"\n{extra}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         certificate_file = \"{{dir}}/server.pem\"\nkey_file = \"{{dir}}/server.key\"\n\
         client_connection_timeout = 20\nclient_protocol_timeout = 20\n{targets}"
    )
}

fn target(name: &str, port: &str, priority: u32) -> String {
    format!(
        "[[relay_target]]\nname = \"{name}\"\nhost = \"127.0.0.1\"\nport = {port}\npriority = {priority}\n"
    )
}

const MESSAGE: &[u8] = b"From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: proxy test\r\n\
\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\n\r\nlast line\r\n";

#[test]
fn relays_byte_for_byte_through_the_first_target_that_works() {
    let down = free_port().to_string();
    let targets = [
        target("down", &down, 1),
        // Takes the recipient, then hangs up with 421 at DATA: the message goes on to the next.
        target("breaks-at-data", "{sink0}", 2),
        target("good", "{sink1}", 3),
    ]
    .concat();
    let env = ProxyEnv::start(&config("", &targets), &[&["-Q", "data"], &[]]);
    let reply = env
        .smtp()
        .send("a@sender.example", "b@rcpt.example", MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    let got = env.sinks[1].wait_delivered(1);
    assert_eq!(
        String::from_utf8_lossy(&got[0]),
        String::from_utf8_lossy(&as_stored(MESSAGE))
    );
    assert!(env.sinks[0].delivered().is_empty());
    let log = env.log();
    assert!(
        log.contains("relay target unavailable, trying the next relay_target=down"),
        "{log}"
    );
    assert!(log.contains("relay_target=breaks-at-data"), "{log}");
}

/// A real Postfix (started by integration/postfix, relaying to a sink) as the relay target
/// behind one that is down; stopped when dropped.
struct PostfixTarget(String);

impl Drop for PostfixTarget {
    fn drop(&mut self) {
        let _ = std::process::Command::new(crate::support::script("postfix"))
            .args(["stop", &self.0])
            .output();
    }
}

/// A real Postfix as the relay target: the message reaches the sink through it, and the
/// answer Postfix gives for a recipient it refuses reaches the client as Postfix gave it.
#[test]
fn a_real_postfix_is_a_relay_target() {
    let (down, postfix_port) = (free_port().to_string(), free_port().to_string());
    let targets = [
        target("down", &down, 1),
        target("postfix", &postfix_port, 2),
    ]
    .concat();
    let env = ProxyEnv::start(&config("", &targets), &[&[]]);
    let postfix = PostfixTarget(env.path("postfix"));
    crate::support::run_script(
        "postfix",
        &[
            "start",
            &postfix.0,
            &postfix_port,
            &env.sinks[0].port.to_string(),
            "none",
            "tempfail",
            "smtpd_recipient_restrictions = check_recipient_access inline:{refused@rcpt.example=REJECT}",
        ],
    );
    let mut smtp = env.smtp();
    smtp.begin("a@sender.example");
    let r = smtp.command("RCPT TO:<b@rcpt.example>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let r = smtp.command("RCPT TO:<refused@rcpt.example>").unwrap();
    assert!(
        r.starts_with("554 5.7.1") && r.contains("Recipient address rejected: Access denied"),
        "Postfix's own answer: {r}"
    );
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all(
            b"From: a@sender.example\r\nSubject: through postfix\r\n\r\n..dot line\r\nend\r\n.\r\n",
        )
        .unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("250"), "{r}");
    let got = env.sinks[0].wait_delivered(1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("by postfix.postern.test"),
        "went through Postfix:\n{text}"
    );
    assert!(text.contains("Subject: through postfix"), "{text}");
    assert!(
        text.contains("\n.dot line\n") || text.contains("\n.dot line\r\n"),
        "{text}"
    );
    let log = env.log();
    assert!(log.contains("relay_target=down"), "{log}");
}

#[test]
fn target_connections_are_reused_and_a_broken_one_loses_nothing() {
    let env = ProxyEnv::start(&config("", &target("mta", "{sink0}", 1)), &[&[]]);
    let send = || {
        env.smtp()
            .send("a@sender.example", "b@rcpt.example", MESSAGE)
    };
    for _ in 0..2 {
        let reply = send();
        assert!(reply.starts_with("250"), "{reply}");
    }
    env.sinks[0].wait_delivered(2);
    let log = env.log();
    assert_eq!(log.matches("reused_connection=false").count(), 1, "{log}");
    assert_eq!(log.matches("reused_connection=true").count(), 1, "{log}");

    // The target restarts while its connection waits in the cache: that connection is dead,
    // and the next message goes over a new one.
    env.sinks[0].restart();
    let reply = send();
    assert!(
        reply.starts_with("250"),
        "after the target restarted: {reply}"
    );
    assert_eq!(env.sinks[0].wait_delivered(3).len(), 3);
    assert_eq!(env.log().matches("reused_connection=false").count(), 2);
}

#[test]
fn lines_longer_than_a_targets_line_limit_are_broken() {
    let targets = format!("{}line_limit = 100\n", target("mta", "{sink0}", 1));
    let env = ProxyEnv::start(&config("", &targets), &[&[]]);
    let long = "0123456789".repeat(25);
    let message = format!("Subject: long\r\nX-Long: {long}\r\n\r\n{long}\r\nend\r\n");
    let reply = env
        .smtp()
        .send("a@sender.example", "b@rcpt.example", message.as_bytes());
    assert!(reply.starts_with("250"), "{reply}");
    let stored = env.sinks[0].wait_delivered(1).remove(0);
    let text = String::from_utf8(stored).unwrap();
    for line in text.lines() {
        assert!(line.len() <= 98, "{} octets: {line:?}", line.len());
    }
    // Broken with CRLF SPACE: a header fold, and the words are all there.
    assert_eq!(text.replace("\n ", ""), as_stored_text(&message));
    assert!(env.log().contains("long lines broken"), "{}", env.log());
}

fn as_stored_text(message: &str) -> String {
    String::from_utf8(as_stored(message.as_bytes())).unwrap()
}

#[test]
fn nothing_is_accepted_when_every_target_fails() {
    let targets = [
        target("down1", &free_port().to_string(), 1),
        target("down2", &free_port().to_string(), 2),
    ]
    .concat();
    let env = ProxyEnv::start(&config("", &targets), &[]);
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    assert!(
        smtp.command("MAIL FROM:<a@sender.example>")
            .unwrap()
            .starts_with("250")
    );
    let r = smtp.command("RCPT TO:<b@rcpt.example>").unwrap();
    assert!(r.starts_with("451 4.4.1"), "{r}");
    assert!(smtp.command("DATA").unwrap().starts_with("554"));

    // The only target takes the recipient, then fails at DATA: the client hears 451 and
    // keeps the message; nothing was delivered anywhere.
    let env = ProxyEnv::start(
        &config("", &target("breaks", "{sink0}", 1)),
        &[&["-Q", "data"]],
    );
    let reply = env
        .smtp()
        .send("a@sender.example", "b@rcpt.example", MESSAGE);
    assert!(reply.starts_with("451 4.4.1"), "{reply}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(env.sinks[0].delivered().is_empty());
}

#[test]
fn the_targets_answer_for_each_recipient_reaches_the_client() {
    let env = ProxyEnv::start(
        &config("", &target("defers", "{sink0}", 1)),
        &[&["-r", "rcpt"]],
    );
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    let r = smtp.command("RCPT TO:<b@rcpt.example>").unwrap();
    assert_eq!(r.trim_end(), "450 4.3.0 Error: command failed");
}

/// Invariant 2: "<LF>.<LF>", "<LF>.<CRLF>" and "<CRLF>.<LF>" are message content. Were any
/// of them taken as the end, the rest would run as a second, smuggled transaction.
#[test]
fn only_crlf_dot_crlf_ends_a_message() {
    for end in ["\n.\n", "\n.\r\n", "\r\n.\n", "\r.\r\n"] {
        let env = ProxyEnv::start(&config("", &target("sink", "{sink0}", 1)), &[&[]]);
        let mut smtp = env.smtp();
        smtp.command("EHLO client.postern.test").unwrap();
        smtp.command("MAIL FROM:<a@sender.example>").unwrap();
        smtp.command("RCPT TO:<b@rcpt.example>").unwrap();
        assert!(smtp.command("DATA").unwrap().starts_with("354"));
        let smuggled = format!(
            "Subject: one\r\n\r\nfirst{end}MAIL FROM:<smuggled@evil.example>\r\n\
             RCPT TO:<victim@rcpt.example>\r\nDATA\r\n\r\nsmuggled\r\n.\r\n"
        );
        smtp.writer_mut().write_all(smuggled.as_bytes()).unwrap();
        let reply = smtp.read_reply().unwrap();
        assert!(reply.starts_with("250"), "{end:?}: {reply}");
        assert!(smtp.command("QUIT").unwrap().starts_with("221"));
        let got = env.sinks[0].wait_delivered(1);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            env.sinks[0].delivered().len(),
            1,
            "{end:?}: a second message was delivered"
        );
        let text = String::from_utf8_lossy(&got[0]);
        assert!(text.contains("MAIL FROM:<smuggled@evil.example>"), "{text}");
    }

    // With bare_newline = "reject" such a message is refused instead.
    let env = ProxyEnv::start(
        &config("", &target("sink", "{sink0}", 1))
            .replace("[proxy]\n", "[proxy]\nbare_newline = \"reject\"\n"),
        &[&[]],
    );
    let reply = env.smtp().send(
        "a@sender.example",
        "b@rcpt.example",
        b"Subject: x\r\n\r\na\nb\r\n",
    );
    assert!(reply.starts_with("550 5.5.2"), "{reply}");
}

/// Invariant 3: what the client pipelined after STARTTLS in plaintext is thrown away, and
/// HELO is forgotten. Without it the injected MAIL would run inside TLS and the client's own
/// MAIL would get "nested MAIL command".
#[test]
fn starttls_discards_plaintext_and_forgets_the_session() {
    let env = ProxyEnv::start(&config("", &target("sink", "{sink0}", 1)), &[&[]]);
    let tcp = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut plain = BufReader::new(tcp.try_clone().unwrap());
    let mut w = tcp.try_clone().unwrap();
    let read_reply = |r: &mut dyn BufRead| {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    };
    assert!(read_reply(&mut plain).starts_with("220"));
    w.write_all(b"EHLO client.postern.test\r\n").unwrap();
    assert!(read_reply(&mut plain).contains("STARTTLS"));
    w.write_all(b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
        .unwrap();
    assert!(read_reply(&mut plain).starts_with("220 2.0.0"));

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(env.dir.path().join("ca.pem")).unwrap();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    tls.get_mut()
        .write_all(b"MAIL FROM:<a@sender.example>\r\n")
        .unwrap();
    let r = read_reply(&mut tls);
    assert!(
        r.starts_with("503 5.5.1 Error: send HELO/EHLO first"),
        "{r}"
    );
    tls.get_mut()
        .write_all(b"EHLO client.postern.test\r\n")
        .unwrap();
    let ehlo = read_reply(&mut tls);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    tls.get_mut()
        .write_all(b"MAIL FROM:<a@sender.example>\r\n")
        .unwrap();
    let r = read_reply(&mut tls);
    assert!(r.starts_with("250"), "{r}");
    env.wait_for_log("plaintext sent after STARTTLS discarded");
    env.wait_for_log("TLS established");
}

#[test]
fn pipelining_only_after_ehlo() {
    let env = ProxyEnv::start(&config("", &target("sink", "{sink0}", 1)), &[&[]]);
    // Without EHLO there is no PIPELINING: a second command before the reply is an error.
    let mut smtp = env.smtp();
    smtp.writer_mut()
        .write_all(b"HELO client.postern.test\r\nMAIL FROM:<a@sender.example>\r\n")
        .unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("554 5.5.0"), "{r}");
    assert!(smtp.is_closed());

    // After EHLO a pipelining client is served.
    let (ok, out) = env.swaks(&[
        "--pipeline",
        "--to",
        "b@rcpt.example",
        "--from",
        "a@sender.example",
    ]);
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(1);
}

#[test]
fn every_input_is_bounded() {
    let cfg = config(
        "[scan]\nmax_message_size = 2000\n",
        &target("sink", "{sink0}", 1),
    )
    .replace(
        "client_connection_timeout = 20",
        "client_connection_timeout = 1",
    )
    .replace(
        "[proxy]\n",
        "[proxy]\nline_limit = 100\nmax_recipients = 2\n",
    );
    let env = ProxyEnv::start(&cfg, &[&[]]);
    let mut smtp = env.smtp();
    let r = smtp.command(&format!("NOOP {}", "x".repeat(200))).unwrap();
    assert!(r.starts_with("500 5.5.2"), "{r}");
    let ehlo = smtp.command("EHLO client.postern.test").unwrap();
    assert!(ehlo.contains("SIZE 2000"), "{ehlo}");
    let r = smtp
        .command("MAIL FROM:<a@sender.example> SIZE=5000")
        .unwrap();
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(
        smtp.command("MAIL FROM:<a@sender.example>")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("RCPT TO:<b1@rcpt.example>")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("RCPT TO:<b2@rcpt.example>")
            .unwrap()
            .starts_with("250")
    );
    let r = smtp.command("RCPT TO:<b3@rcpt.example>").unwrap();
    assert!(r.starts_with("452 4.5.3"), "{r}");
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(3000));
    smtp.writer_mut().write_all(big.as_bytes()).unwrap();
    let r = smtp.read_reply().unwrap();
    assert!(r.starts_with("552 5.3.4"), "{r}");

    // A client that says nothing is dropped after client_connection_timeout.
    let mut idle = env.smtp();
    let r = idle.read_reply().unwrap();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(idle.is_closed());
    std::thread::sleep(Duration::from_millis(200));
    assert!(env.sinks[0].delivered().is_empty());
}

#[test]
fn tls_listeners_and_auth() {
    // The users file is written into the environment's directory before Postern reads its
    // config: make it in a directory of its own and point at it.
    let users = tempfile::tempdir().unwrap();
    crate::support::proxy::users_file(users.path());
    let cfg = config("", &target("sink", "{sink0}", 1)).replace(
        "[proxy]\n",
        &format!(
            "[proxy]\nlisten_tls = [\"127.0.0.1:{{tls_port}}\"]\n\
             submission_listen = [\"127.0.0.1:{{submission_port}}\"]\n\
             auth_users_file = \"{}/users\"\nmax_auth_failures_per_client = 2\n",
            users.path().display()
        ),
    );
    let env = ProxyEnv::start(&cfg, &[&[]]);
    let ca = env.path("ca.pem");
    let common = [
        "--to",
        "b@rcpt.example",
        "--from",
        "a@sender.example",
        "--tls-ca-path",
        &ca,
        "--tls-verify",
    ];

    // STARTTLS on the plain listener.
    let (ok, out) = env.swaks(&[&common[..], &["--tls"]].concat());
    assert!(ok, "{out}");
    // Implicit TLS.
    let tls_server = format!("127.0.0.1:{}", env.tls_port);
    let (ok, out) = env.swaks(&[&common[..], &["--tlsc", "--server", &tls_server]].concat());
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(2);
    env.wait_for_log("TLS established");
    assert!(env.log().contains("version=TLSv1.3"), "{}", env.log());

    // openssl s_client sees the certificate verify for localhost.
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-starttls", "smtp", "-connect"])
        .arg(format!("127.0.0.1:{}", env.port))
        .args([
            "-CAfile",
            &ca,
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Verification: OK"), "{text}");
    assert!(text.contains("TLSv1.3"), "{text}");

    // Submission: MAIL needs AUTH; AUTH needs TLS; a wrong password fails.
    let sub = format!("127.0.0.1:{}", env.submission_port);
    let (ok, out) = env.swaks(&[&common[..], &["--server", &sub]].concat());
    assert!(!ok && out.contains("530 5.7.0"), "{out}");
    let mut smtp = Smtp::connect(env.submission_port);
    smtp.command("EHLO client.postern.test").unwrap();
    let r = smtp.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
    assert!(r.starts_with("538 5.7.11"), "{r}");
    let auth = [
        "--server",
        &sub,
        "--tls",
        "--auth",
        "PLAIN",
        "--auth-user",
        "alice",
    ];
    let (ok, out) = env.swaks(&[&common[..], &auth, &["--auth-password", "wrong"]].concat());
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
    let (ok, out) = env.swaks(&[&common[..], &auth, &["--auth-password", "secret"]].concat());
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(3);
    env.wait_for_log("authenticated");

    // A second failure, in another connection: this client has used up its failures, and
    // not even the right password is tried now.
    let (ok, out) = env.swaks(&[&common[..], &auth, &["--auth-password", "wrong"]].concat());
    assert!(!ok && out.contains("535 5.7.8"), "{out}");
    let (ok, out) = env.swaks(&[&common[..], &auth, &["--auth-password", "secret"]].concat());
    assert!(!ok && out.contains("454 4.7.0"), "{out}");
}

/// A proxy on an implicit TLS listener asking clients for certificates (`client_certificates
/// = mode`, trusting its test CA), and a swaks message to it with `options` added.
fn with_client_certificates(
    mode: &str,
) -> (ProxyEnv, impl Fn(&ProxyEnv, &[&str]) -> (bool, String)) {
    let cfg = format!(
        "hostname = \"gw.postern.test\"\n[proxy]\nlisten = []\ntls_support = \"required\"\n\
         listen_tls = [\"127.0.0.1:{{tls_port}}\"]\ncertificate_file = \"{{dir}}/server.pem\"\n\
         key_file = \"{{dir}}/server.key\"\nclient_certificates = \"{mode}\"\n\
         ca_certs = \"{{dir}}/ca.pem\"\n{}",
        target("sink", "{sink0}", 1)
    );
    let env = ProxyEnv::start(&cfg, &[&[]]);
    let send = |env: &ProxyEnv, options: &[&str]| {
        let server = format!("127.0.0.1:{}", env.tls_port);
        let base = [
            "--server",
            &server,
            "--tlsc",
            "--to",
            "b@rcpt.example",
            "--from",
            "a@sender.example",
        ];
        env.swaks(&[&base[..], options].concat())
    };
    (env, send)
}

#[test]
fn client_certificates_required() {
    let (env, send) = with_client_certificates("required");
    let (ok, out) = send(&env, &[]);
    assert!(!ok, "a client without a certificate got through:\n{out}");
    let (cert, key) = (env.path("client.pem"), env.path("client.key"));
    let (ok, out) = send(&env, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(1);
    assert!(
        env.log().contains("client_certificate=true"),
        "{}",
        env.log()
    );
}

/// `client_certificates = "optional"`: a client without a certificate is served, one with a
/// certificate of the trusted CA is served and logged as such, one with a certificate of
/// another CA is refused in the handshake.
#[test]
fn client_certificates_optional() {
    let (env, send) = with_client_certificates("optional");
    let (ok, out) = send(&env, &[]);
    assert!(ok, "without a certificate:\n{out}");
    env.sinks[0].wait_delivered(1);
    assert!(
        env.log().contains("client_certificate=false"),
        "{}",
        env.log()
    );
    let (cert, key) = (env.path("client.pem"), env.path("client.key"));
    let (ok, out) = send(&env, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(ok, "{out}");
    env.sinks[0].wait_delivered(2);
    assert!(
        env.log().contains("client_certificate=true"),
        "{}",
        env.log()
    );
    let other = tempfile::tempdir().unwrap();
    crate::support::proxy::write_certificates(other.path());
    let (cert, key) = (
        other.path().join("client.pem").display().to_string(),
        other.path().join("client.key").display().to_string(),
    );
    let (ok, out) = send(&env, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(!ok, "a certificate of another CA got through:\n{out}");
    assert_eq!(env.sinks[0].delivered().len(), 2);
}

/// Outbound TLS: a target whose certificate names another host and a target without
/// STARTTLS (security = "tls" makes it mandatory) are both skipped; the message reaches the
/// target whose certificate is valid for its name. The TLS targets are Postern proxies
/// themselves, with certificates from their own test CA.
#[test]
fn outbound_tls_is_mandatory_and_validated() {
    let plain_target = |cert: &str| {
        format!(
            "hostname = \"target.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             certificate_file = \"{{dir}}/{cert}.pem\"\nkey_file = \"{{dir}}/{cert}.key\"\n{}",
            target("sink", "{sink0}", 1)
        )
    };
    let wrong = ProxyEnv::start(&plain_target("wrong"), &[&[]]);
    let right = ProxyEnv::start(&plain_target("server"), &[&[]]);
    let tls_target = |name: &str, env: &ProxyEnv, priority: u32| {
        format!(
            "[[relay_target]]\nname = \"{name}\"\nhost = \"localhost\"\nport = {}\n\
             priority = {priority}\nsecurity = \"tls\"\nca_file = \"{}\"\n",
            env.port,
            env.path("ca.pem")
        )
    };
    let targets = [
        tls_target("wrong-name", &wrong, 1),
        // An smtp-sink: no STARTTLS.
        "[[relay_target]]\nname = \"no-starttls\"\nhost = \"localhost\"\nport = {sink0}\npriority = 2\nsecurity = \"tls\"\n".to_owned(),
        tls_target("valid", &right, 3),
    ]
    .concat();
    let front = ProxyEnv::start(&config("", &targets), &[&[]]);
    let reply = front
        .smtp()
        .send("a@sender.example", "b@rcpt.example", MESSAGE);
    assert!(reply.starts_with("250"), "{reply}");
    let got = right.sinks[0].wait_delivered(1);
    assert_eq!(got[0], as_stored(MESSAGE));
    assert!(wrong.sinks[0].delivered().is_empty());
    assert!(front.sinks[0].delivered().is_empty());
    let log = front.log();
    assert!(log.contains("relay_target=wrong-name"), "{log}");
    assert!(
        log.contains("NotValidForName") || log.contains("not valid for"),
        "{log}"
    );
    assert!(log.contains("does not offer STARTTLS"), "{log}");
    right.wait_for_log("TLS established");
}

/// The proxy is a door to the same engine: relay restriction refuses a recipient with the
/// engine's reply, and a content rule changes the message before it is handed on.
#[test]
fn the_engine_judges_proxy_conversations() {
    let policy = "[relay]\nrestrict_relaying = true\nlocal_domains = [\"rcpt.example\"]\n\
                  allowed_relay_sources = []\n\
                  [[ruleset]]\nname = \"pci\"\n[[ruleset.rule]]\nname = \"cards\"\n\
                  targets = [\"subject\"]\ndetector = \"card_number\"\naction = \"mask\"\n";
    let env = ProxyEnv::start(&config(policy, &target("sink", "{sink0}", 1)), &[&[]]);
    let mut smtp = env.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    let r = smtp.command("RCPT TO:<x@other.example>").unwrap();
    assert_eq!(
        r.trim_end(),
        "554 5.7.1 <x@other.example>: Relay access denied"
    );
    drop(smtp);
    let reply = env.smtp().send(
        "a@sender.example",
        "b@rcpt.example",
        b"Subject: card 4111 1111 1111 1111\r\n\r\nbody\r\n",
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = String::from_utf8(env.sinks[0].wait_delivered(1).remove(0)).unwrap();
    assert!(got.contains("Subject: card **** **** **** 1111"), "{got}");
    assert!(got.contains("X-Postern-Rulesets: pci"), "{got}");
}

#[test]
fn early_talkers_are_refused() {
    let env = ProxyEnv::start(
        &config("", &target("sink", "{sink0}", 1))
            .replace("[proxy]\n", "[proxy]\ngreet_pause_ms = 500\n"),
        &[&[]],
    );
    let mut tcp = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(b"EHLO too.early\r\n").unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("554 5.5.0"), "{reply}");
}

/// Through the proxy door too, a forged Authentication-Results naming this host (behind a
/// comment, in another case) is removed and any other one kept.
#[test]
fn forged_authentication_results_are_removed() {
    let env = ProxyEnv::start(&config("", &target("mta", "{sink0}", 1)), &[&[]]);
    let message =
        b"Authentication-Results: (forged) GW.postern.test; dkim=pass header.d=paypal.com\r\n\
Authentication-Results: other.example; dkim=pass header.d=other.example\r\n\
Subject: forged\r\n\r\nbody\r\n";
    let reply = env
        .smtp()
        .send("a@sender.example", "b@rcpt.example", message);
    assert!(reply.starts_with("250"), "{reply}");
    let stored = String::from_utf8(env.sinks[0].wait_delivered(1).remove(0)).unwrap();
    assert!(!stored.contains("paypal.com"), "{stored}");
    assert!(
        stored.starts_with("Authentication-Results: other.example; dkim=pass"),
        "{stored}"
    );
}
