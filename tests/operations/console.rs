//! The web console in a real browser (headless Chromium over WebDriver, through
//! chromedriver), over HTTPS with the tests' own CA, in front of a proxy with tracking and
//! metrics; and `/healthz` and `/readyz`. Screenshots of each page are kept in
//! `target/console-screenshots/`.

use std::time::{Duration, Instant};

use crate::support::proxy::{ProxyEnv, hash_password as hash};
use crate::support::webdriver::Browser;
use crate::support::{free_port, get, screenshots};

/// Waits until the browser is on a page whose address has `path` in it.
fn wait_for_page(browser: &Browser, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !browser.url().contains(path) {
        assert!(
            Instant::now() < deadline,
            "never reached {path}: at {}",
            browser.url()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_in(browser: &Browser, base: &str, user: &str, password: &str) {
    browser.go(&format!("{base}/login"));
    browser.fill("#username", user);
    browser.fill("#password", password);
    browser.click("#login");
}

/// Log in, search, open a message, see the charts and the status; a wrong password, no
/// session, a forged CSRF token and too many failed logins are refused; a user of one
/// organization sees its records only.
#[test]
fn the_console_in_a_browser() {
    let users = tempfile::tempdir().unwrap();
    let users_file = users.path().join("console-users");
    std::fs::write(
        &users_file,
        format!(
            "root:{}:admin\nann:{}:viewer:acme\n",
            hash("root-pw"),
            hash("ann-pw")
        ),
    )
    .unwrap();
    let console = free_port();
    let env = ProxyEnv::start(
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n\
             [[organization]]\nname = \"acme\"\ndomains = [\"acme.test\"]\n\
             [tracking]\nstore = \"sqlite\"\npath = \"{{dir}}/tracking.db\"\n\
             [console]\nlisten = \"127.0.0.1:{console}\"\nusers_file = \"{}\"\n\
             certificate_file = \"{{dir}}/server.pem\"\nkey_file = \"{{dir}}/server.key\"\n\
             max_failed_logins = 3\n",
            users_file.display()
        ),
        &[&[]],
    );
    // Client-given text the pages must show as text: markup in the Message-ID.
    let message = "From: s@sender.test\r\nSubject: hello\r\nMessage-ID: <x<b>bold</b>@evil.test>\r\n\r\nhello\r\n";
    for to in ["bob@acme.test", "carol@other.test"] {
        let r = env.smtp().send("s@sender.test", to, message.as_bytes());
        assert!(r.starts_with("250"), "{r}");
    }
    env.tracked("bob@acme.test");
    env.tracked("carol@other.test");

    let base = format!("https://127.0.0.1:{console}");
    let shots = screenshots();
    let browser = Browser::start();

    // No session: sent to the login form.
    browser.go(&format!("{base}/messages"));
    wait_for_page(&browser, "/login");
    browser.screenshot(&shots.join("login.png"));

    // A wrong password.
    log_in(&browser, &base, "root", "not-it");
    browser.wait_for("#error", "Wrong user name or password");

    // Logged in: both messages.
    log_in(&browser, &base, "root", "root-pw");
    wait_for_page(&browser, "/messages");
    let records = browser.text("#records");
    assert!(records.contains("bob@acme.test"), "{records}");
    assert!(records.contains("carol@other.test"), "{records}");
    assert!(browser.text("#who").contains("root (admin)"));
    browser.screenshot(&shots.join("messages.png"));

    // A search by recipient domain.
    browser.fill("input[name=recipient]", "@acme.test");
    browser.click("#find");
    wait_for_page(&browser, "recipient=%40acme.test");
    let records = browser.text("#records");
    assert!(records.contains("bob@acme.test"), "{records}");
    assert!(!records.contains("carol@other.test"), "{records}");
    assert!(
        browser.url().contains("recipient=%40acme.test"),
        "{}",
        browser.url()
    );

    // One message: its recipient's outcome, reply and target; the client's markup as text.
    browser.click("a.detail");
    wait_for_page(&browser, "/messages/proxy/");
    assert!(
        browser.url().contains("/messages/proxy/"),
        "{}",
        browser.url()
    );
    let detail = browser.text("main");
    assert!(detail.contains("bob@acme.test — relayed"), "{detail}");
    assert!(detail.contains("250 2.0.0 Ok"), "{detail}");
    assert!(detail.contains("<x<b>bold</b>@evil.test>"), "{detail}");
    assert_eq!(
        browser.run("return document.querySelectorAll('main b').length"),
        0,
        "the Message-ID's markup made no element"
    );
    browser.screenshot(&shots.join("message.png"));

    // The charts: verdicts per minute from tracking, times and relay attempts from metrics.
    browser.go(&format!("{base}/stats"));
    assert!(
        browser
            .run("return document.querySelectorAll('#verdicts svg rect').length")
            .as_u64()
            .unwrap()
            >= 2,
        "{}",
        browser.text("main")
    );
    assert!(browser.text("#times").contains("session (proxy)"));
    assert!(browser.text("#relays").contains("sink / delivered"));
    browser.screenshot(&shots.join("stats.png"));

    // The status: ready, the target answers, the configuration in force.
    browser.go(&format!("{base}/status"));
    assert!(
        browser.text("#readiness").starts_with("Ready"),
        "{}",
        browser.text("main")
    );
    assert!(browser.text("#parts").contains("relay target sink"));
    assert!(browser.text("#config").contains("postern.toml"));
    assert!(browser.text("pre.config").contains("[console]"));
    browser.screenshot(&shots.join("status.png"));

    // A forged CSRF token: refused, still logged in.
    browser.run(
        "document.querySelector('form.logout input[name=csrf]').value = 'forged'; \
         document.querySelector('form.logout').submit();",
    );
    wait_for_page(&browser, "/logout");
    browser.wait_for("#error", "CSRF");
    browser.go(&format!("{base}/messages"));
    wait_for_page(&browser, "/messages");

    // Log out: the session is gone.
    browser.click("#logout");
    wait_for_page(&browser, "/login");
    browser.go(&format!("{base}/stats"));
    wait_for_page(&browser, "/login");

    // A user of acme: acme's records only, no gateway-wide figures, no configuration.
    log_in(&browser, &base, "ann", "ann-pw");
    wait_for_page(&browser, "/messages");
    let records = browser.text("#records");
    assert!(records.contains("bob@acme.test"), "{records}");
    assert!(!records.contains("carol@other.test"), "{records}");
    browser.go(&format!("{base}/stats"));
    assert!(browser.find("#times").is_none());
    browser.go(&format!("{base}/status"));
    assert!(browser.find("#config").is_none());
    browser.go(&format!("{base}/fleet"));
    browser.wait_for("#error", "for users of the whole gateway");
    browser.click("#logout");
    wait_for_page(&browser, "/login");

    // The login form without its CSRF token.
    browser.go(&format!("{base}/login"));
    browser.run("document.querySelector('input[name=csrf]').value = '';");
    browser.fill("#username", "root");
    browser.fill("#password", "root-pw");
    browser.click("#login");
    browser.wait_for("#error", "CSRF");

    // Three failed logins from this client (one above): the right password is refused too.
    for _ in 0..2 {
        log_in(&browser, &base, "root", "wrong");
        browser.wait_for("#error", "Wrong user name or password");
    }
    log_in(&browser, &base, "root", "root-pw");
    browser.wait_for("#error", "Too many failed logins from 127.0.0.1");
    assert!(browser.url().ends_with("/login"), "{}", browser.url());
    assert!(
        env.log()
            .contains("console login refused: too many failed logins")
    );
}

/// `/healthz` answers while the process runs; `/readyz` says ready while a relay target that
/// carries ordinary mail answers, names each part, and answers 503 when none does.
#[test]
fn health_and_readiness() {
    let metrics = free_port();
    let dead = free_port();
    let mut env = ProxyEnv::start(
        &format!(
            "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n\
             [[relay_target]]\nname = \"dead\"\nhost = \"127.0.0.1\"\nport = {dead}\npriority = 2\n"
        ),
        &[&[]],
    );
    let alive = get(metrics, "/healthz", None);
    assert!(alive.starts_with("HTTP/1.1 200"), "{alive}");
    let ready = get(metrics, "/readyz", None);
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    assert!(
        ready.contains("\r\n\r\nready\nlisteners: bound\n"),
        "{ready}"
    );
    assert!(ready.contains("relay target sink: reachable"), "{ready}");
    assert!(ready.contains("relay target dead: FAILED: "), "{ready}");
    // No target answers: not ready, once the last report (kept 5 s) is stale.
    env.sinks[0].stop();
    std::thread::sleep(Duration::from_millis(5200));
    let ready = get(metrics, "/readyz", None);
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    assert!(ready.contains("not ready"), "{ready}");
    assert!(ready.contains("relay target sink: FAILED: "), "{ready}");
    let missing = get(metrics, "/console", None);
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    env.stop_postern();
}
