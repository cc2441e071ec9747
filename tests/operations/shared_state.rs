//! Peer gateways sharing their state through a real Redis ([shared_state]): two proxies, and
//! a proxy beside a milter behind Postfix, count one connection rate, one set of AUTH
//! failures and one learned reputation per client; a Redis that hangs or is stopped holds no
//! mail up, and sharing resumes when it is back.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::proxy::ProxyEnv;
use crate::support::redis::Redis;
use crate::support::{MailEnv, Socket};

/// A proxy relaying to one sink, judging 127.0.0.1 like any client (not as a relay source),
/// with `policy`, the shared state of `redis` and `proxy_keys` in its [proxy] section.
fn proxy_with(redis: &Redis, policy: &str, proxy_keys: &str) -> ProxyEnv {
    let config = format!(
        "hostname = \"gw.postern.test\"\n{}timeout_ms = 100\n\
         [relay]\nallowed_relay_sources = []\n{policy}\n\
         [proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         certificate_file = \"{{dir}}/server.pem\"\nkey_file = \"{{dir}}/server.key\"\n\
         auth_over_plaintext = true\n{proxy_keys}\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n",
        redis.section()
    );
    ProxyEnv::start(&config, &[&[]])
}

fn proxy(redis: &Redis, policy: &str) -> ProxyEnv {
    proxy_with(redis, policy, "")
}

/// The greeting a new connection to `port` gets, and how long it took.
fn greeting(port: u16) -> (String, Duration) {
    let started = Instant::now();
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    (line, started.elapsed())
}

fn refused_for_rate(reply: &str) -> bool {
    reply.starts_with("421 4.7.0") && reply.contains("per minute")
}

const RATE: &str = "[dos_protection]\nmax_connection_rate_per_client = 2\n";

#[test]
fn two_proxies_count_one_connection_rate() {
    let redis = Redis::start();
    let a = proxy(&redis, RATE);
    let b = proxy(&redis, RATE);
    redis.flush();
    assert!(greeting(a.port).0.starts_with("220"));
    assert!(greeting(b.port).0.starts_with("220"));
    // Each has seen one connection: only the shared count refuses the third.
    let (third, _) = greeting(a.port);
    assert!(refused_for_rate(&third), "{third}");
    let (fourth, _) = greeting(b.port);
    assert!(refused_for_rate(&fourth), "{fourth}");
    let keys = redis.cli(&["--scan", "--pattern", "postern:*"]);
    assert!(keys.contains("postern:connections:127.0.0.1"), "{keys}");
}

#[test]
fn auth_failures_at_one_proxy_count_at_the_other() {
    let redis = Redis::start();
    let users = tempfile::tempdir().unwrap();
    let keys = format!(
        "auth_users_file = \"{}\"\nmax_auth_failures_per_client = 2\n",
        crate::support::proxy::users_file(users.path()).display()
    );
    let a = proxy_with(&redis, "", &keys);
    let b = proxy_with(&redis, "", &keys);
    redis.flush();
    for _ in 0..2 {
        let mut smtp = a.smtp();
        smtp.command("EHLO c.test").unwrap();
        // alice / wrong
        let r = smtp.command("AUTH PLAIN AGFsaWNlAHdyb25n").unwrap();
        assert!(r.starts_with("535"), "{r}");
    }
    let mut smtp = b.smtp();
    smtp.command("EHLO c.test").unwrap();
    // alice / secret: right, but the client has used up its guesses at the other proxy.
    let r = smtp.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
    assert!(r.starts_with("454 4.7.0"), "{r}");
}

const REPUTATION: &str = "[reputation]\nthreshold = -20\n";

/// A client that probed unknown users through Postfix (the milter learned it) is refused
/// by the proxy.
#[test]
fn a_prober_at_the_milter_is_refused_at_the_proxy() {
    let redis = Redis::start();
    let policy = format!(
        "{}[relay]\nallowed_relay_sources = []\n{REPUTATION}",
        redis.section()
    );
    let postfix = MailEnv::start_with_postfix(
        Socket::Unix,
        &policy,
        &["smtpd_recipient_restrictions = check_recipient_access regexp:{dir}/recipients"],
        &[(
            "recipients",
            "/^nosuch/ 550 5.1.1 User unknown in local recipient table\n",
        )],
    );
    let gateway = proxy(&redis, REPUTATION);
    redis.flush();
    // Through Postfix, from 127.0.0.1: three unknown users (-6), a dictionary attack (-20).
    let mut smtp = postfix.smtp();
    smtp.command("EHLO client.postern.test").unwrap();
    let r = smtp.command("MAIL FROM:<a@sender.example>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    for n in 1..=3 {
        smtp.command(&format!("RCPT TO:<nosuch{n}@rcpt.example>"))
            .unwrap();
    }
    smtp.command("QUIT");
    postfix.wait_for_log("dictionary attack suspected");
    // At the proxy, which never saw the client misbehave: refused as it connects.
    let (reply, _) = greeting(gateway.port);
    assert!(
        reply.starts_with("554 5.7.1 Client [127.0.0.1] has a poor reputation here (-26)"),
        "{reply}"
    );
    let stored = redis.cli(&["HGET", "postern:reputation:127.0.0.1", "s"]);
    // Decayed by the half life since, a little.
    assert_eq!(
        stored.trim().parse::<f64>().ok().map(f64::round),
        Some(-26.0),
        "{stored}"
    );
}

/// Sends one message through `env`; whether it was accepted.
fn send(env: &ProxyEnv, n: usize) -> bool {
    let (ok, out) = env.swaks(&[
        "--from",
        "a@sender.example",
        "--to",
        "b@rcpt.example",
        "--header",
        &format!("Subject: message {n}"),
    ]);
    assert!(ok, "message {n} was not accepted:\n{out}");
    ok
}

/// Redis that hangs, then is stopped, then is back: every connection is answered within
/// the timeout's reach, every message is accepted and delivered, the log and the metric say
/// so, and both instances share again once Redis answers.
#[test]
fn redis_down_or_hanging_holds_no_mail_up() {
    let mut redis = Redis::start();
    let metrics_port = crate::support::free_port();
    let policy = format!(
        "{REPUTATION}[dos_protection]\nmax_connection_rate_per_client = 1000\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
    );
    let a = proxy(&redis, &policy);
    let b = proxy(
        &redis,
        "[dos_protection]\nmax_connection_rate_per_client = 1000\n",
    );
    redis.flush();
    let mut sent = 0;
    let mut round = |redis_state: &str| {
        for env in [&a, &b] {
            let (reply, took) = greeting(env.port);
            assert!(reply.starts_with("220"), "{redis_state}: {reply}");
            // timeout_ms is 100; one connection asks at most twice (rate, reputation). Left
            // to itself a hanging Redis holds a command for ever (the client waits 20 s);
            // the bound leaves room for a loaded machine.
            assert!(
                took < Duration::from_millis(5000),
                "{redis_state}: the greeting took {took:?}"
            );
            sent += 1;
            send(env, sent);
        }
    };
    round("Redis up");
    let counted = |redis: &Redis| {
        redis
            .cli(&["ZCARD", "postern:connections:127.0.0.1"])
            .trim()
            .parse::<u32>()
            .unwrap_or(0)
    };
    assert_eq!(counted(&redis), 4, "two greetings and two swaks sessions");

    redis.pause();
    round("Redis hanging");
    round("Redis hanging");
    redis.resume();
    redis.stop();
    round("Redis stopped");
    a.wait_for_log("state store unavailable; decided without it");
    b.wait_for_log("state store unavailable; decided without it");
    // Told once a minute, not once per decision.
    assert_eq!(
        a.log()
            .matches("state store unavailable; decided without it")
            .count(),
        1,
        "{}",
        a.log()
    );
    let metrics = crate::support::get(metrics_port, "/metrics", None);
    let unavailable = crate::support::sample(&metrics, "postern_state_store_unavailable_total");
    assert!(unavailable.is_some_and(|n| n >= 6.0), "{metrics}");

    redis.restart();
    // Both reconnect by themselves within a few seconds.
    for env in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !env.log().contains("state store answers again") {
            assert!(Instant::now() < deadline, "no reconnect:\n{}", env.log());
            assert!(greeting(env.port).0.starts_with("220"));
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let before = counted(&redis);
    round("Redis back");
    assert_eq!(counted(&redis), before + 4, "counted in Redis again");
    assert_eq!(a.sinks[0].wait_delivered(sent / 2).len(), sent / 2);
    assert_eq!(b.sinks[0].wait_delivered(sent / 2).len(), sent / 2);
}

/// What one instance remembers of a message it handed to an encryption route (so that the
/// sender's next attempt does not hand it on again) another instance knows through Redis, and
/// only for the time it was given.
#[test]
fn handed_messages_are_remembered_across_instances_for_their_time() {
    use std::sync::Arc;

    use postern::engine::ports::{Fanout, Store};
    use postern::state::{MemoryStore, RedisStore, SharedStateSettings};

    let redis = Redis::start();
    let settings = SharedStateSettings {
        redis_url: redis.url(),
        ..SharedStateSettings::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = || {
            RedisStore::new(
                &settings,
                MemoryStore::default(),
                Arc::new(Fanout(Vec::new())),
            )
            .unwrap()
        };
        let (one, other) = (store(), store());
        let handed = [7u8; 32];
        assert!(!other.was_handed(&handed).await.unwrap());
        one.remember_handed(&handed, Duration::from_millis(2000))
            .await
            .unwrap();
        assert!(other.was_handed(&handed).await.unwrap(), "shared");
        assert!(!other.was_handed(&[8u8; 32]).await.unwrap());
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert!(
            !other.was_handed(&handed).await.unwrap(),
            "forgotten in time"
        );
    });
    assert!(redis.cli(&["KEYS", "postern:handed:*"]).trim().is_empty());
}

/// A Redis that requires a password: `password_file` gives it (and two proxies then share
/// one count), and no password shows anywhere: not the file's in the log, not one written in
/// the URL's `pass=` parameter in check-config's summary.
#[test]
fn a_password_file_authenticates_and_no_password_is_shown() {
    let redis = Redis::start();
    assert_eq!(
        redis
            .cli(&["CONFIG", "SET", "requirepass", "s3cret-pass"])
            .trim(),
        "OK"
    );
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("redis.password");
    std::fs::write(&password, "s3cret-pass\n").unwrap();
    let section = format!(
        "[shared_state]\nredis_url = \"{}\"\npassword_file = \"{}\"\ntimeout_ms = 100\n",
        redis.url(),
        password.display()
    );
    let config = |section: &str| {
        format!(
            "hostname = \"gw.postern.test\"\n{section}[relay]\nallowed_relay_sources = []\n{RATE}\n\
             [proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
        )
    };
    let a = ProxyEnv::start(&config(&section), &[&[]]);
    let b = ProxyEnv::start(&config(&section), &[&[]]);
    let authed = |args: &[&str]| {
        let mut all = vec!["--no-auth-warning", "-a", "s3cret-pass"];
        all.extend_from_slice(args);
        redis.cli(&all)
    };
    assert_eq!(authed(&["FLUSHALL"]).trim(), "OK");
    assert!(greeting(a.port).0.starts_with("220"));
    assert!(greeting(b.port).0.starts_with("220"));
    let (third, _) = greeting(a.port);
    assert!(refused_for_rate(&third), "the count is shared: {third}");
    let keys = authed(&["--scan", "--pattern", "postern:*"]);
    assert!(keys.contains("postern:connections:127.0.0.1"), "{keys}");
    for env in [&a, &b] {
        assert!(!env.log().contains("s3cret-pass"));
    }

    let file = secrets.path().join("postern.toml");
    std::fs::write(
        &file,
        config(&format!(
            "[shared_state]\nredis_url = \"{}?db=0&pass=SHOWN-NOWHERE\"\n",
            redis.url()
        ))
        .replace("{port}", "2525")
        .replace("{sink0}", "2526"),
    )
    .unwrap();
    let (ok, shown) = crate::support::run_postern(&["check-config", &file.display().to_string()]);
    assert!(ok, "{shown}");
    assert!(
        shown.contains("pass=***") && !shown.contains("SHOWN-NOWHERE"),
        "{shown}"
    );
}
