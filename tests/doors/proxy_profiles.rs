//! Connection profiles by host name in the proxy door: with no MTA in front to give a verified
//! client name, the proxy finds it itself by forward-confirmed reverse DNS (PTR, then A),
//! asking the `[dns]` server — here dnsmasq on loopback.
//!
//! The resolver answers every PTR question in 127.in-addr.arpa with `localhost` itself, as
//! RFC 6761 asks, so clients on 127.0.0.x all look alike. Each test therefore runs in a
//! network namespace of its own whose only device is `lo`, holding 127.0.0.1 and clients from
//! 192.0.2.0/24 (TEST-NET-1): nothing can leave the machine from there either.

use std::process::Command;

use crate::support::hosts_dns::HostsDns;
use crate::support::proxy::ProxyEnv;

/// Moves the test's thread (and so every process it starts) into a new network namespace
/// with `lo` up, holding 127.0.0.1 and `clients`.
fn private_network(clients: &[&str]) {
    // The packages come first: the registries are out of reach from inside.
    crate::support::install_deps();
    // SAFETY: unshare takes no pointers; CLONE_NEWNET changes only this thread's namespace.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed (this test runs as root): {}",
        std::io::Error::last_os_error()
    );
    let ip = |args: &[&str]| {
        let out = Command::new("ip").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ip(&["link", "set", "lo", "up"]);
    for client in clients {
        ip(&["addr", "add", &format!("{client}/32"), "dev", "lo"]);
    }
}

/// mx.partner.test (192.0.2.10) is blocked by name; relay.partner.test (192.0.2.12) may relay
/// anywhere; 192.0.2.11 claims relay.partner.test in its PTR, which the A record does not
/// confirm.
fn config(dns: &HostsDns, profiles: &str) -> String {
    format!(
        r#"hostname = "gw.postern.test"
[dns]
nameservers = ["127.0.0.1:{}"]
timeout = 2
attempts = 1
[relay]
restrict_relaying = true
local_domains = ["rcpt.example"]
{profiles}
[proxy]
listen = ["127.0.0.1:{{port}}"]
[[relay_target]]
name = "sink"
host = "127.0.0.1"
port = {{sink0}}
"#,
        dns.port
    )
}

const BY_NAME: &str = r#"[[connection_profile]]
name = "blocked-partner"
client_hosts = ["mx.partner.test"]
relay_control = "blocked"
[[connection_profile]]
name = "partner-relay"
client_hosts = ["relay.partner.test"]
relay_control = "full"
"#;

const CLIENTS: [&str; 3] = ["192.0.2.10", "192.0.2.11", "192.0.2.12"];

fn records() -> HostsDns {
    HostsDns::start(&[
        "host-record=mx.partner.test,192.0.2.10",
        "host-record=relay.partner.test,192.0.2.12",
        "ptr-record=11.2.0.192.in-addr.arpa,relay.partner.test",
    ])
}

/// The message as the sink stored it, trace fields and all: the Received field of Postern's
/// hop names the client.
fn stored_raw(env: &ProxyEnv, n: usize) -> Vec<String> {
    env.sinks[0].wait_delivered(n);
    crate::support::sink_files(&env.sinks[0].dir.join("mail"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

fn send_from(env: &ProxyEnv, source: &str, to: &str) -> (bool, String) {
    env.swaks(&[
        "--local-interface",
        source,
        "--from",
        "a@sender.example",
        "--to",
        to,
        "--header",
        &format!("Subject: from {source}"),
    ])
}

#[test]
fn profiles_match_forward_confirmed_host_names() {
    private_network(&CLIENTS);
    let dns = records();
    let env = ProxyEnv::start(&config(&dns, BY_NAME), &[&[]]);

    // Verified as mx.partner.test: its profile blocks it at the greeting.
    let (ok, out) = send_from(&env, "192.0.2.10", "b@rcpt.example");
    assert!(!ok, "a blocked client got through:\n{out}");
    assert!(out.contains("<** 554"), "{out}");
    assert!(out.contains("access denied"), "{out}");
    env.wait_for_log("client name mx.partner.test verified");

    // Verified as relay.partner.test: its profile lets it relay to any domain, and the name
    // is the client's in the Received field.
    let (ok, out) = send_from(&env, "192.0.2.12", "b@other.example");
    assert!(ok, "{out}");
    let stored = stored_raw(&env, 1);
    let text = &stored[0];
    assert!(
        text.contains("(relay.partner.test [192.0.2.12])"),
        "the verified name is not in Received:\n{text}"
    );
    assert!(env.log().contains("profile=partner-relay"), "{}", env.log());

    // Its PTR says relay.partner.test, but that name's A record is another address: not
    // verified, no profile, so it may not relay, and Received says "unknown".
    let (ok, out) = send_from(&env, "192.0.2.11", "b@other.example");
    assert!(!ok, "an unverified name was trusted:\n{out}");
    assert!(out.contains("Relay access denied"), "{out}");
    env.wait_for_log("not confirmed");
    let (ok, out) = send_from(&env, "192.0.2.11", "b@rcpt.example");
    assert!(ok, "{out}");
    let stored = stored_raw(&env, 2);
    let text = stored
        .iter()
        .find(|m| m.contains("Subject: from 192.0.2.11"))
        .expect("the message from 192.0.2.11");
    assert!(text.contains("(unknown [192.0.2.11])"), "{text}");
}

#[test]
fn no_name_lookup_without_a_profile_by_name() {
    private_network(&CLIENTS);
    let dns = records();
    // SPF makes Postern set up its resolver: a name lookup would reach dnsmasq.
    let by_address = "[[connection_profile]]\nname = \"partner-net\"\n\
                      client_hosts = [\"192.0.2.12/32\"]\nrelay_control = \"full\"\n\
                      [spf]\nenabled = true\ntemperror_action = \"accept\"\n";
    let env = ProxyEnv::start(&config(&dns, by_address), &[&[]]);
    let (ok, out) = send_from(&env, "192.0.2.12", "b@other.example");
    assert!(ok, "{out}");
    let stored = stored_raw(&env, 1);
    let text = &stored[0];
    assert!(text.contains("(unknown [192.0.2.12])"), "{text}");
    assert!(
        !dns.log().contains("query[PTR]"),
        "a PTR lookup without a profile by name:\n{}",
        dns.log()
    );
}
