//! Hostile input against both doors: header floods get a clear refusal at the named bound and
//! the connection stays usable; junk commands, trickling messages, clients that never read and
//! clients that hold every slot are let go.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, Socket};

/// A ruleset, so that the content stage would walk the header if the message got that far.
const RULESET: &str = "[[ruleset]]\nname = \"pci\"\n[[ruleset.rule]]\nname = \"cards\"\n\
                       targets = [\"subject\", \"body\"]\ndetector = \"card_number\"\naction = \"mask\"\n";

fn header_flood(fields: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(fields * 24);
    for i in 0..fields {
        m.extend_from_slice(format!("X-Flood-{i:06}: v\r\n").as_bytes());
    }
    m.extend_from_slice(b"Subject: flood\r\n\r\nbody\r\n");
    m
}

#[test]
fn a_header_flood_is_refused_at_max_header_fields_by_the_proxy() {
    let config = format!(
        "hostname = \"gw.postern.test\"\n{RULESET}[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         client_data_payload_timeout = 30\n[[relay_target]]\nname = \"sink\"\n\
         host = \"127.0.0.1\"\nport = {{sink0}}\n"
    );
    let env = ProxyEnv::start(&config, &[&[]]);
    let mut smtp = env.smtp();
    let reply = smtp.send("a@sender.test", "b@rcpt.test", &header_flood(150_000));
    assert!(
        reply.starts_with(
            "552 5.3.4 Error: message header has more than max_header_fields (1000) fields"
        ),
        "{reply}"
    );
    // The connection goes on: a normal message after it is delivered.
    for line in ["RSET", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@rcpt.test>"] {
        let r = smtp.command(line).unwrap();
        assert!(r.starts_with("250"), "{line}: {r}");
    }
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    let r = smtp.command("Subject: fine\r\n\r\nbody\r\n.").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let delivered = env.sinks[0].wait_delivered(1);
    assert_eq!(delivered.len(), 1);
    assert!(String::from_utf8_lossy(&delivered[0]).contains("Subject: fine"));
}

#[test]
fn a_header_flood_is_refused_through_postfix() {
    let env = MailEnv::start(
        Socket::Unix,
        &format!("hostname = \"mx.postern.test\"\n[scan]\nmax_header_fields = 500\n{RULESET}"),
    );
    let reply = env
        .smtp()
        .send("a@sender.test", "b@rcpt.test", &header_flood(2000));
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert!(
        reply.contains("max_header_fields (500)"),
        "the reply says which bound: {reply}"
    );
    env.assert_nothing_delivered();
}

fn proxy(extra_proxy: &str) -> ProxyEnv {
    let config = format!(
        "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n{extra_proxy}\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
    );
    ProxyEnv::start(&config, &[&[]])
}

/// 500 pipelined NOOPs: the first junk_command_limit (100) are answered, then each counts as
/// an invalid command and the invalid-command limit (5) closes the session.
#[test]
fn junk_commands_are_limited() {
    let env = proxy("");
    let mut smtp = env.smtp();
    assert!(smtp.command("EHLO c.test").unwrap().starts_with("250"));
    smtp.writer_mut()
        .write_all("NOOP\r\n".repeat(500).as_bytes())
        .unwrap();
    let mut replies = Vec::new();
    while let Some(r) = smtp.read_reply() {
        replies.push(r);
    }
    let ok = replies.iter().filter(|r| r.starts_with("250")).count();
    assert_eq!(ok, 105, "100 junk commands, then 5 counted as invalid");
    assert!(
        replies.last().unwrap().starts_with("421"),
        "{:?}",
        replies.last()
    );
}

/// A DATA phase has client_data_payload_timeout plus its size at min_data_rate: one byte a
/// second (under the per-read timeout) no longer holds the connection forever.
#[test]
fn a_trickling_message_meets_its_deadline() {
    let env = proxy("client_data_payload_timeout = 3\nmin_data_rate = 500");
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    smtp.command("MAIL FROM:<a@sender.test>").unwrap();
    assert!(
        smtp.command("RCPT TO:<b@rcpt.test>")
            .unwrap()
            .starts_with("250")
    );
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    let started = Instant::now();
    let mut writer = smtp.writer_mut().try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"Subject: slow\r\n\r\n".iter().cycle().take(30) {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let reply = smtp.read_reply().unwrap_or_default();
    assert!(reply.starts_with("421 4.4.2"), "{reply}");
    assert!(
        reply.contains("1s per 500 bytes"),
        "the reply says why: {reply}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "closed at the deadline, not after the trickle ended"
    );
    trickle.join().unwrap();
    assert!(env.sinks[0].delivered().is_empty());
}

/// Clients that hold every connection slot while saying nothing: once the slots are nearly
/// all taken (stress_threshold), timeouts shrink to stress_timeout, they are let go, and a
/// fresh client is served.
#[test]
fn slow_clients_cannot_hold_every_slot() {
    let env = proxy(
        "max_inbound_connections = 4\nclient_connection_timeout = 60\n\
         stress_threshold = 75\nstress_timeout = 2",
    );
    let mut holders: Vec<crate::support::Smtp> = (0..4).map(|_| env.smtp()).collect();
    std::thread::sleep(Duration::from_secs(4));
    for h in &mut holders {
        let r = h.read_reply().unwrap_or_default();
        assert!(r.starts_with("421 4.4.2"), "{r}");
    }
    let mut fresh = env.smtp();
    let r = fresh.command("EHLO fresh.test").unwrap();
    assert!(r.starts_with("250"), "{r}");
}

/// A client that pipelines without reading its replies is closed when a reply cannot be
/// written within the protocol timeout, not held.
#[test]
fn a_client_that_does_not_read_is_closed() {
    let env = proxy(
        "client_protocol_timeout = 2\nclient_connection_timeout = 2\njunk_command_limit = 10000000",
    );
    let mut smtp = env.smtp();
    assert!(smtp.command("EHLO c.test").unwrap().starts_with("250"));
    let mut writer = smtp.writer_mut().try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let started = Instant::now();
    let burst = "HELP\r\n".repeat(10_000);
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(60) {
        if writer.write_all(burst.as_bytes()).is_err() {
            closed = true;
            break;
        }
    }
    assert!(
        closed,
        "the proxy never gave up on a client that does not read"
    );
    env.wait_for_log("did not read its replies");
}

/// AUTH before EHLO is 503; `AUTH PLAIN =` is an empty response (a failure, not a
/// challenge); `*` cancels with 501 and is not counted.
#[test]
fn auth_commands_are_read_as_rfc_4954_says() {
    let users = tempfile::tempdir().unwrap();
    let env = proxy(&format!(
        "auth_users_file = \"{}\"\nauth_over_plaintext = true\n",
        crate::support::proxy::users_file(users.path()).display()
    ));
    let mut smtp = env.smtp();
    let r = smtp.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
    assert!(r.starts_with("503 5.5.1"), "{r}");
    smtp.command("EHLO c.test").unwrap();
    let r = smtp.command("AUTH PLAIN =").unwrap();
    assert!(r.starts_with("535 5.7.8"), "{r}");
    assert!(smtp.command("AUTH LOGIN").unwrap().starts_with("334"));
    let r = smtp.command("*").unwrap();
    assert!(r.starts_with("501"), "{r}");
    let r = smtp.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
    assert!(r.starts_with("235"), "{r}");
}

/// The per-client failure limit holds over parallel connections: each attempt is counted
/// before its password is checked, so four at once get no more than the two guesses allowed.
#[test]
fn parallel_connections_get_no_extra_guesses() {
    let users = tempfile::tempdir().unwrap();
    let env = proxy(&format!(
        "auth_users_file = \"{}\"\nauth_over_plaintext = true\nmax_auth_failures_per_client = 2\n",
        crate::support::proxy::users_file(users.path()).display()
    ));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
    let replies: Vec<String> = (0..4)
        .map(|_| {
            let mut smtp = env.smtp();
            smtp.command("EHLO c.test").unwrap();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                // alice / wrong
                smtp.command("AUTH PLAIN AGFsaWNlAHdyb25n").unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let guessed = replies.iter().filter(|r| r.starts_with("535")).count();
    let refused = replies
        .iter()
        .filter(|r| r.starts_with("454 4.7.0"))
        .count();
    assert_eq!((guessed, refused), (2, 2), "{replies:?}");
}
