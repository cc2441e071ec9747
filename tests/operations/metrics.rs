//! The Prometheus endpoint after real traffic: through the proxy to an smtp-sink, and through
//! Postfix to the milter. The values are checked, not only the names.

use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, Socket, free_port, get, sample};

const MESSAGE: &str = "From: s@sender.test\r\nTo: a@dest.test\r\nSubject: metrics\r\n\r\ncard 4111 1111 1111 1111\r\n";

const RULESET: &str = r#"
[[ruleset]]
name = "cards"
[[ruleset.rule]]
name = "card numbers"
targets = ["body"]
detector = "card_number"
action = "mask"
"#;

#[test]
fn the_proxy_counts_what_it_did() {
    let metrics = free_port();
    let users = tempfile::tempdir().unwrap();
    let auth_file = users.path().join("metrics-auth");
    std::fs::write(&auth_file, "prom:s3cret\n").unwrap();
    let env = ProxyEnv::start(
        &format!(
            "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\nbasic_auth_file = \"{}\"\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n{RULESET}",
            auth_file.display()
        ),
        &[&[]],
    );
    for _ in 0..2 {
        let r = env
            .smtp()
            .send("s@sender.test", "a@dest.test", MESSAGE.as_bytes());
        assert!(r.starts_with("250"), "{r}");
    }
    env.sinks[0].wait_delivered(2);

    let refused = get(metrics, "/metrics", None);
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    // Header names in any case (hyper writes them in lower case).
    assert!(
        refused.to_lowercase().contains("www-authenticate: basic"),
        "{refused}"
    );
    // "prom:s3cret" in base64.
    let text = get(metrics, "/metrics", Some("Basic cHJvbTpzM2NyZXQ="));
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    let value = |name: &str| sample(&text, name);
    assert_eq!(
        value("postern_messages_total{door=\"proxy\",verdict=\"continue\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value("postern_relay_attempts_total{target=\"sink\",outcome=\"delivered\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        value(
            "postern_rule_actions_total{ruleset=\"cards\",rule=\"card numbers\",action=\"mask\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(value("postern_scan_duration_seconds_count"), Some(2.0));
    // The two clients (and the start script's probe) connected and left; the scraper is no
    // SMTP client.
    let connections = value("postern_connections_total{door=\"proxy\"}").unwrap();
    assert!(connections >= 2.0, "{text}");
    assert_eq!(
        value("postern_active_connections{door=\"proxy\"}"),
        Some(0.0)
    );
    assert_eq!(
        value("postern_session_duration_seconds_count{door=\"proxy\"}"),
        Some(connections)
    );
    assert!(text.contains("postern_build_info{version=\""), "{text}");
    assert!(!text.contains("127.0.0.1"), "no address as a label: {text}");

    let missing = get(metrics, "/nothing", Some("Basic cHJvbTpzM2NyZXQ="));
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    // A refused reload is counted too.
    env.reload_logging("this is = not toml", "configuration not reloaded");
    let text = get(metrics, "/metrics", Some("Basic cHJvbTpzM2NyZXQ="));
    assert_eq!(
        sample(&text, "postern_config_reloads_total{result=\"refused\"}"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn the_milter_counts_what_postfix_sent_and_what_it_refused() {
    let metrics = free_port();
    let env = MailEnv::start(
        Socket::Unix,
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [connection]\nip_address_rejection = [\"192.0.2.0/24\"]\n"
        ),
    );
    let (ok, dialogue) = env.send_from("198.51.100.7");
    assert!(ok, "{dialogue}");
    env.wait_delivered(1);
    let (ok, _) = env.send_from("192.0.2.9");
    assert!(!ok, "a listed client is refused");

    let text = get(metrics, "/metrics", None);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(
        sample(
            &text,
            "postern_messages_total{door=\"milter\",verdict=\"continue\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "postern_check_results_total{check=\"ip_address_rejection\",result=\"reject\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(&text, "postern_connections_total{door=\"milter\"}").is_some_and(|n| n >= 2.0),
        "{text}"
    );
}

/// `[log] format = "json"`: one JSON object per line, with the fields the text lines have; no
/// key twice in a line (a content rule's `target` was written beside tracing's own), no Rust
/// debug text in a value (`Some(127.0.0.1)`), and the lines about the message's delivery name
/// its session (in the `span` every line of a session is logged in).
#[test]
fn json_logs_carry_the_same_fields() {
    // serde_yaml reads JSON (YAML 1.2 is a superset of it) and refuses a key given twice.
    assert!(serde_yaml::from_str::<serde_yaml::Value>("{\"a\": 1, \"a\": 2}").is_err());
    let env = ProxyEnv::start(
        &format!(
            "[log]\nformat = \"json\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n{RULESET}"
        ),
        &[&[]],
    );
    let r = env
        .smtp()
        .send("s@sender.test", "a@dest.test", MESSAGE.as_bytes());
    assert!(r.starts_with("250"), "{r}");
    env.wait_for_log("\"message\":\"disconnect\"");
    let log = env.log();
    let mut seen = Vec::new();
    let mut connected = None;
    for line in log.lines().filter(|l| !l.is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
        // serde_json keeps the last of a key given twice; YAML's parser refuses it.
        serde_yaml::from_str::<serde_yaml::Value>(line)
            .unwrap_or_else(|e| panic!("a key twice: {line}: {e}"));
        assert!(value.get("level").is_some(), "{line}");
        assert!(!line.contains("Some("), "Rust debug text: {line}");
        let message = value.get("message").and_then(|m| m.as_str()).unwrap_or("");
        let session = value
            .get("span")
            .and_then(|s| s.get("id"))
            .and_then(|i| i.as_u64());
        match message {
            "message" => {
                assert_eq!(
                    value.get("verdict").and_then(|v| v.as_str()),
                    Some("continue")
                );
                assert_eq!(value.get("recipients").and_then(|v| v.as_u64()), Some(1));
            }
            "content rule acted" => {
                assert_eq!(
                    value.get("rule_target").and_then(|v| v.as_str()),
                    Some("body"),
                    "{line}"
                );
            }
            "connect" => {
                assert_eq!(
                    value.get("client_addr").and_then(|v| v.as_str()),
                    Some("127.0.0.1"),
                    "{line}"
                );
                connected = value.get("session").and_then(|v| v.as_u64());
                assert!(connected.is_some() && session == connected, "{line}");
            }
            "delivered to relay target" | "message handed on" => {
                assert!(
                    session.is_some() && session == connected,
                    "the session is not named: {line}"
                );
            }
            _ => continue,
        }
        seen.push(message.to_owned());
    }
    for expected in [
        "connect",
        "content rule acted",
        "message",
        "delivered to relay target",
        "message handed on",
    ] {
        assert_eq!(
            seen.iter().filter(|m| *m == expected).count(),
            1,
            "{expected}: {log}"
        );
    }
}

/// A dry run: a policy that refuses the client, the recipient and the message lets the mail
/// through unchanged, and says and counts what it would have done.
#[test]
fn a_dry_run_refuses_nothing_and_counts_what_it_would_have_done() {
    let metrics = free_port();
    let env = ProxyEnv::start(
        &format!(
            "[scan]\ndry_run = true\n[connection]\nip_address_rejection = [\"127.0.0.0/8\"]\n\
             [relay]\nrestrict_relaying = true\nlocal_domains = [\"local.test\"]\n\
             allowed_relay_sources = [\"192.0.2.0/24\"]\n\
             [proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n\
             [[ruleset]]\nname = \"block\"\n[[ruleset.rule]]\nname = \"no cards\"\n\
             targets = [\"body\"]\ndetector = \"card_number\"\naction = \"reject\"\n{RULESET}"
        ),
        &[&[]],
    );
    let r = env
        .smtp()
        .send("s@sender.test", "a@dest.test", MESSAGE.as_bytes());
    assert!(r.starts_with("250"), "{r}");
    let delivered = env.sinks[0].wait_delivered(1);
    let body = String::from_utf8_lossy(&delivered[0]);
    assert!(
        body.contains("card 4111 1111 1111 1111"),
        "the message went on unchanged: {body}"
    );
    let log = env.log();
    for stage in [
        "stage=\"connect\"",
        "stage=\"rcpt\"",
        "stage=\"end_of_message\"",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("dry run: would have refused") && l.contains(stage)),
            "{stage}: {log}"
        );
    }
    // Only "would" lines: no plain refusal is logged.
    assert!(
        !log.lines().any(|l| l.contains("postern::logging: refused")),
        "{log}"
    );
    let text = get(metrics, "/metrics", None);
    let value = |series: &str| sample(&text, series).unwrap_or(-1.0);
    // The message went on: `continue`, and what it would have been beside it.
    assert_eq!(
        value("postern_messages_total{door=\"proxy\",verdict=\"continue\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        value("postern_messages_total{door=\"proxy\",verdict=\"reject\"}"),
        0.0,
        "{text}"
    );
    assert_eq!(
        value("postern_dry_run_verdicts_total{door=\"proxy\",verdict=\"reject\"}"),
        1.0,
        "{text}"
    );
    // The checks' refusals are counted as what they would have been.
    assert_eq!(
        value(
            "postern_check_results_total{check=\"ip_address_rejection\",result=\"would_reject\"}"
        ),
        1.0,
        "{text}"
    );
    assert!(
        !text.contains("check=\"ip_address_rejection\",result=\"reject\""),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "postern_rule_actions_total{ruleset=\"cards\",rule=\"card numbers\",action=\"would_mask\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

/// Connections that never send a request hold at most 64 slots of the HTTP listener, each
/// for at most 5 s: a scraper that comes while they hold every slot is answered 503 at once,
/// an idle connection is closed (without a request there is nothing to answer), and then
/// the endpoint serves again.
#[test]
fn idle_connections_cannot_pile_up_at_the_metrics_endpoint() {
    use std::io::Read;
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    let metrics = free_port();
    let env = ProxyEnv::start(
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
        ),
        &[&[]],
    );
    assert!(get(metrics, "/metrics", None).starts_with("HTTP/1.1 200"));
    let mut idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(("127.0.0.1", metrics)).unwrap())
        .collect();
    // The 65th connection is answered at once (get waits at most 10 s).
    let busy = get(metrics, "/metrics", None);
    assert!(busy.starts_with("HTTP/1.1 503"), "{busy}");
    // Each idle connection is closed once its 5 s for the request head are up.
    let start = Instant::now();
    for stream in &mut idle {
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        assert!(
            response.is_empty() || response.starts_with("HTTP/1.1 408"),
            "{response}"
        );
    }
    assert!(
        start.elapsed() < Duration::from_secs(12),
        "{:?}",
        start.elapsed()
    );
    let served = get(metrics, "/metrics", None);
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(
        env.log().contains("every connection slot is taken"),
        "the refusals are logged"
    );
}

/// A secret file that others than its owner may change is refused, naming the fix; one that
/// every user may read is used with a warning.
#[test]
fn a_credentials_file_others_may_change_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let auth = dir.path().join("metrics-auth");
    std::fs::write(&auth, "prom:s3cret\n").unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[metrics]\nlisten = \"127.0.0.1:9\"\nbasic_auth_file = \"{}\"\n",
            auth.display()
        ),
    )
    .unwrap();
    let check = || {
        std::process::Command::new(crate::support::POSTERN)
            .args(["check-config", &config.display().to_string()])
            .output()
            .unwrap()
    };
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o664)).unwrap();
    let out = check();
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{error}");
    assert!(
        error.contains("may be changed by its group") && error.contains("chmod go-w"),
        "{error}"
    );
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every series the configuration can make is there from the start, at 0, so that an
/// `increase()` alert fires on the first event (before, a series appeared with its first
/// event, and an alert on it never saw it rise).
#[test]
fn every_series_is_there_from_the_start() {
    let metrics = free_port();
    let env = ProxyEnv::start(
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n{RULESET}"
        ),
        &[&[]],
    );
    let text = get(metrics, "/metrics", None);
    for series in [
        "postern_messages_total{door=\"proxy\",verdict=\"reject\"}",
        "postern_messages_total{door=\"proxy\",verdict=\"continue\"}",
        "postern_config_reloads_total{result=\"refused\"}",
        "postern_tracking_dropped_total{reason=\"queue_full\"}",
        "postern_scan_failures_total{reason=\"content\"}",
        "postern_check_results_total{check=\"reputation\",result=\"pass\"}",
        "postern_check_results_total{check=\"max_message_size\",result=\"reject\"}",
        "postern_rule_actions_total{ruleset=\"cards\",rule=\"card numbers\",action=\"mask\"}",
        "postern_relay_attempts_total{target=\"sink\",outcome=\"unavailable\"}",
        "postern_connections_total{door=\"proxy\"}",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    drop(env);
}
