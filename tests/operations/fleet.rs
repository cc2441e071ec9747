//! One configuration for a fleet: two proxies sharing a Redis take what `postern apply`
//! publishes, each checks it itself (and one refuses what it cannot use, saying why),
//! `postern fleet` and the console's /fleet show every instance and what it runs, an admin
//! publishes from the console, and an instance cut off from Redis keeps what it runs.

use std::time::{Duration, Instant};

use crate::support::proxy::{ProxyEnv, hash_password};
use crate::support::redis::Redis;
use crate::support::webdriver::Browser;
use crate::support::{free_port, run_postern};

const CARD: &str = "4111 1111 1111 1111";

const RULESET: &str = "[[ruleset]]\nname = \"cards\"\n[[ruleset.rule]]\nname = \"card numbers\"\n\
     targets = [\"body\"]\ndetector = \"card_number\"\naction = \"mask\"\n";

/// `postern fleet` for the fleet of `config`, until `done` holds of its output (15 s at most).
fn fleet_until(config: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = run_postern(&["fleet", "--config", config]);
        assert!(ok, "{out}");
        if done(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "the fleet never got there:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn send_card(env: &ProxyEnv) {
    let message = format!("From: s@sender.test\r\nSubject: card\r\n\r\ncard {CARD}\r\n");
    let r = env
        .smtp()
        .send("s@sender.test", "r@dest.test", message.as_bytes());
    assert!(r.starts_with("250"), "{r}");
}

/// The message the shared sink got last, as text.
fn last_delivered(a: &ProxyEnv, n: usize) -> String {
    let delivered = a.sinks[0].wait_delivered(n);
    String::from_utf8_lossy(delivered.last().unwrap()).into_owned()
}

#[test]
fn a_configuration_published_to_the_fleet_is_taken_by_each_instance() {
    let mut redis = Redis::start();
    let users = tempfile::tempdir().unwrap();
    let hash = hash_password("root-pw");
    std::fs::write(
        users.path().join("console-users"),
        format!("root:{}:admin\n", hash.trim()),
    )
    .unwrap();
    let console = free_port();
    let base = |name: &str, relay: &str, extra: &str| {
        format!(
            "{}timeout_ms = 100\ninstance_name = \"{name}\"\n\
             [proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {relay}\n{extra}",
            redis.section()
        )
    };
    // a has the console and its users file (console-users, beside its configuration); both
    // relay to a's sink.
    let a = ProxyEnv::start(
        &base(
            "a",
            "{sink0}",
            &format!(
                "[console]\nlisten = \"127.0.0.1:{console}\"\nusers_file = \"{}\"\n",
                users.path().join("console-users").display()
            ),
        ),
        &[&[]],
    );
    std::fs::write(
        a.dir.path().join("console-users"),
        format!("root:{}:admin\n", hash.trim()),
    )
    .unwrap();
    let sink = a.sinks[0].port;
    let b = ProxyEnv::start(&base("b", &sink.to_string(), ""), &[]);
    let config_a = a.path("postern.toml");

    // Both report; nothing is published yet.
    let out = fleet_until(&config_a, |o| {
        o.contains("\na  proxy") && o.contains("\nb  proxy")
    });
    assert!(out.starts_with("published: nothing yet"), "{out}");
    assert!(out.contains("has taken no fleet configuration"), "{out}");
    send_card(&b);
    assert!(last_delivered(&a, 1).contains(CARD), "no ruleset yet");

    // Published: the ruleset, for every instance.
    let fleet_dir = tempfile::tempdir().unwrap();
    let published = fleet_dir.path().join("fleet.toml");
    std::fs::write(
        &published,
        format!(
            "{}{RULESET}",
            base("fleet", &sink.to_string(), "").replace("{port}", &a.port.to_string())
        ),
    )
    .unwrap();
    let (ok, out) = run_postern(&["apply", &published.display().to_string()]);
    assert!(ok, "{out}");
    let digest = out
        .split("published to the fleet as ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{out}"))
        .to_owned();
    let applied = format!("applied {digest}");
    let out = fleet_until(&config_a, |o| o.matches(&applied).count() == 2);
    assert!(out.contains(&format!("published: {digest}")), "{out}");
    assert!(out.contains(&format!("runs {digest}")), "{out}");
    for (n, env) in [(2, &a), (3, &b)] {
        send_card(env);
        let got = last_delivered(&a, n);
        assert!(
            !got.contains(CARD),
            "the published ruleset masks at every instance:\n{got}"
        );
    }
    assert!(
        b.log()
            .contains("configuration reloaded config=fleet configuration"),
        "{}",
        b.log()
    );

    // A configuration that does not compile is not published.
    std::fs::write(&published, "[proxy]\nlisten = 7\n").unwrap();
    let (ok, out) = run_postern(&["apply", &published.display().to_string()]);
    assert!(!ok && out.contains("fleet.toml:2"), "{out}");

    // Published from the console by an admin: a configuration naming a file only a has. a
    // takes it, b refuses it and says why, and the console shows both.
    let browser = Browser::start();
    let url = format!("http://127.0.0.1:{console}");
    browser.go(&format!("{url}/login"));
    browser.fill("#username", "root");
    browser.fill("#password", "root-pw");
    browser.click("#login");
    browser.go(&format!("{url}/fleet"));
    let peers = browser.text("#peers");
    assert!(
        peers.contains(&digest[..12]) && peers.contains("(published)"),
        "{peers}"
    );
    let with_users = format!(
        "{}{RULESET}[console]\nlisten = \"127.0.0.1:{console}\"\nusers_file = \"console-users\"\n",
        base("fleet", &sink.to_string(), "").replace("{port}", &a.port.to_string())
    );
    browser.fill("#config-text", &with_users);
    browser.click("#publish-text");
    let notice = browser.wait_for("#notice", "Published ");
    let second = notice["Published ".len()..]
        .split(':')
        .next()
        .unwrap()
        .to_owned();
    let out = fleet_until(&config_a, |o| {
        o.contains(&format!("applied {second}")) && o.contains(&format!("refused {second}"))
    });
    let b_line = out.lines().find(|l| l.starts_with("b  ")).unwrap();
    assert!(
        b_line.contains("console-users"),
        "b says what it cannot use: {b_line}"
    );
    assert!(
        b_line.contains(&format!("runs {digest}")),
        "b keeps what it ran: {b_line}"
    );
    browser.go(&format!("{url}/fleet"));
    let peers = browser.text("#peers");
    assert!(peers.contains(&format!("refused {second}")), "{peers}");
    std::fs::create_dir_all(crate::support::screenshots()).unwrap();
    browser.screenshot(&crate::support::screenshots().join("fleet.png"));
    // A CSRF token not the session's: refused.
    browser.run("document.querySelector('#apply-running input[name=csrf]').value = 'x'; document.querySelector('#apply-running').submit();");
    browser.wait_for("#error", "CSRF");
    drop(browser);

    // Redis gone: both keep what they run and say so.
    redis.stop();
    send_card(&b);
    assert!(!last_delivered(&a, 4).contains(CARD));
    b.wait_for_log("fleet: cannot reach Redis; this instance keeps the configuration it runs");
}
