//! Message tracking end to end: real mail through the proxy (swaks) and through Postfix to the
//! milter, tracked in SQLite and in a PostgreSQL server the test starts itself, read back with
//! `postern track`. A PostgreSQL that stops mid-run costs no mail: the drop shows in the log
//! and the metrics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::faulty::{Faults, FaultyTarget};
use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, POSTERN, Socket, free_port};
use serde_json::Value;

/// A relay target that refuses one recipient, and a policy that refuses other domains and
/// rejects messages with a US SSN and masks card numbers.
fn proxy_config(target: &FaultyTarget, tracking: &str, extra: &str) -> String {
    format!(
        "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         [relay]\nrestrict_relaying = true\nlocal_domains = [\"dest.test\"]\n\
         allowed_relay_sources = [\"192.0.2.0/24\"]\n\
         [tracking]\n{tracking}\n{extra}\n\
         [[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\nport = {}\n\
         [[ruleset]]\nname = \"block\"\n[[ruleset.rule]]\nname = \"no ssn\"\n\
         targets = [\"body\"]\ndetector = \"us_ssn\"\naction = \"reject\"\n\
         [[ruleset]]\nname = \"cards\"\n[[ruleset.rule]]\nname = \"card numbers\"\n\
         targets = [\"body\"]\ndetector = \"card_number\"\naction = \"mask\"\n",
        target.port
    )
}

fn refusing_target() -> FaultyTarget {
    FaultyTarget::start(Faults {
        rcpt_replies: vec![(
            "gone@dest.test",
            "550 5.1.1 <gone@dest.test>: Recipient address rejected: User unknown",
        )],
        ..Faults::default()
    })
}

/// `postern track --config CONFIG --format json ARGS`: the records, or the error it printed.
fn track(config: &Path, args: &[&str]) -> Result<Vec<Value>, String> {
    let out = Command::new(POSTERN)
        .arg("track")
        .arg("--config")
        .arg(config)
        .args(["--format", "json"])
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let records: Value = serde_json::from_slice(&out.stdout).expect("track prints JSON");
    Ok(records.as_array().expect("one array").clone())
}

/// Waits up to 15 s until `track` finds at least `n` records.
fn wait_track(config: &Path, args: &[&str], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = track(config, args);
        if let Ok(records) = &found
            && records.len() >= n
        {
            return records.clone();
        }
        assert!(
            Instant::now() < deadline,
            "postern track {args:?} did not find {n} records: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn field<'a>(record: &'a Value, name: &str) -> &'a str {
    record.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The record for `recipient` among `records`.
fn for_recipient<'a>(records: &'a [Value], recipient: &str) -> &'a Value {
    records
        .iter()
        .find(|r| field(r, "recipient") == recipient)
        .unwrap_or_else(|| panic!("no record for {recipient}: {records:#?}"))
}

/// swaks against the proxy: whether it succeeded, and the dialogue.
fn swaks(env: &ProxyEnv, from: &str, to: &str, body: &str) -> (bool, String) {
    env.swaks(&[
        "--helo",
        "client.postern.test",
        "-f",
        from,
        "-t",
        to,
        "--header",
        "Subject: tracking",
        "--body",
        body,
    ])
}

/// Sends the three transactions the stores are checked with: a message to one good and two
/// refused recipients (by the policy and by the relay target), a message the policy rejects,
/// and a transaction whose only recipient is refused.
fn send_three(env: &ProxyEnv, target: &FaultyTarget) {
    let (_, dialogue) = swaks(
        env,
        "alice@sender.test",
        "good@dest.test,x@other.test,gone@dest.test",
        "card 4111 1111 1111 1111",
    );
    assert!(
        dialogue.contains("250 2.0.0 Ok: queued"),
        "the good recipient's message was accepted: {dialogue}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.taken().is_empty() {
        assert!(Instant::now() < deadline, "nothing reached the target");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (ok, dialogue) = swaks(env, "bob@sender.test", "good@dest.test", "ssn 078-05-1121");
    assert!(!ok, "the SSN message is rejected: {dialogue}");
    let (ok, dialogue) = swaks(env, "carol@sender.test", "nobody@other.test", "hello");
    assert!(!ok, "the only recipient is refused: {dialogue}");
    assert_eq!(
        target.taken().len(),
        1,
        "only the first message was relayed"
    );
}

/// What every store must show for [`send_three`].
fn check_three(config: &Path) {
    let alice = wait_track(config, &["--sender", "alice@sender.test"], 3);
    assert_eq!(alice.len(), 3, "{alice:#?}");
    let good = for_recipient(&alice, "good@dest.test");
    assert_eq!(field(good, "outcome"), "relayed", "{good:#}");
    assert_eq!(field(good, "relay_target"), "mta", "{good:#}");
    assert!(field(good, "reply").starts_with("250"), "{good:#}");
    assert_eq!(field(good, "verdict"), "continue");
    assert_eq!(field(good, "door"), "proxy");
    assert_eq!(field(good, "client_addr"), "127.0.0.1");
    assert_eq!(field(good, "helo"), "client.postern.test");
    assert_eq!(field(good, "rules"), "cards/card numbers:mask", "{good:#}");
    assert!(field(good, "message_id").starts_with('<'), "{good:#}");
    assert!(good.get("size").and_then(Value::as_i64).unwrap_or(0) > 0);
    assert_eq!(good.get("dry_run"), Some(&Value::Bool(false)));
    // The rules' names and actions only: never what they matched.
    // (The number's digit groups, not "4111" alone, which a timestamp can hold.)
    for clear in ["4111 1111", "4111111111111111"] {
        assert!(!good.to_string().contains(clear), "{good:#}");
    }

    let x = for_recipient(&alice, "x@other.test");
    assert_eq!(field(x, "outcome"), "refused", "{x:#}");
    assert!(field(x, "reply").starts_with("554 5.7.1"), "{x:#}");
    assert_eq!(field(x, "reason"), "relay");
    assert_eq!(field(x, "verdict"), "reject");
    let gone = for_recipient(&alice, "gone@dest.test");
    assert_eq!(field(gone, "outcome"), "refused", "{gone:#}");
    assert!(field(gone, "reply").starts_with("550 5.1.1"), "{gone:#}");
    assert_eq!(field(gone, "relay_target"), "mta", "{gone:#}");
    assert_eq!(field(gone, "reason"), "relay_target");

    // A refused address is found by itself.
    let x_only = track(config, &["--recipient", "X@Other.test"]).unwrap();
    assert_eq!(x_only.len(), 1, "{x_only:#?}");

    let bob = wait_track(config, &["--sender", "bob@sender.test"], 1);
    assert_eq!(bob.len(), 1, "{bob:#?}");
    assert_eq!(field(&bob[0], "outcome"), "rejected", "{:#}", bob[0]);
    assert_eq!(field(&bob[0], "verdict"), "reject");
    assert_eq!(field(&bob[0], "reason"), "content");
    assert!(field(&bob[0], "reply").starts_with('5'), "{:#}", bob[0]);
    assert_eq!(field(&bob[0], "rules"), "block/no ssn:reject");

    // A transaction that never reached DATA is tracked with its refusal.
    let nobody = wait_track(config, &["--recipient", "nobody@other.test"], 1);
    assert_eq!(field(&nobody[0], "outcome"), "refused", "{:#}", nobody[0]);
    assert_eq!(field(&nobody[0], "sender"), "carol@sender.test");

    // The other filters.
    let rejected = track(config, &["--verdict", "reject", "--since", "1h"]).unwrap();
    assert_eq!(
        rejected.len(),
        4,
        "x, gone, bob's and nobody: {rejected:#?}"
    );
    let domain = track(config, &["--recipient", "@dest.test"]).unwrap();
    assert_eq!(domain.len(), 3, "{domain:#?}");
    let id = field(good, "message_id")
        .trim_matches(['<', '>'])
        .to_owned();
    let by_id = track(config, &["--message-id", &id]).unwrap();
    assert_eq!(by_id.len(), 3, "every recipient of the message: {by_id:#?}");
    assert!(
        track(config, &["--until", "2000-01-01"])
            .unwrap()
            .is_empty()
    );
    assert_eq!(track(config, &["--limit", "2"]).unwrap().len(), 2);
    let bad = track(config, &["--since", "yesterday"]).unwrap_err();
    assert!(bad.contains("--since") && bad.contains("1h"), "{bad}");

    // The table fits a 100-column terminal.
    let out = Command::new(POSTERN)
        .args(["track", "--config"])
        .arg(config)
        .args(["--sender", "alice@sender.test"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("relayed") && table.contains("target mta"),
        "{table}"
    );
    for line in table.lines() {
        assert!(line.chars().count() <= 100, "{line:?}");
    }
}

#[test]
fn the_proxy_tracks_each_recipient_in_sqlite() {
    let target = refusing_target();
    let env = ProxyEnv::start(
        &proxy_config(
            &target,
            "store = \"sqlite\"\npath = \"tracking.sqlite\"\ntrack_dropped_connections = true",
            "",
        ),
        &[],
    );
    send_three(&env, &target);
    let config = env.dir.path().join("postern.toml");
    check_three(&config);
    // WAL mode: readers never wait for the writer.
    assert!(env.dir.path().join("tracking.sqlite-wal").exists());
}

#[test]
fn track_says_when_tracking_is_not_configured() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(&config, "[metrics]\n").unwrap();
    let e = track(&config, &[]).unwrap_err();
    assert!(
        e.contains("message tracking is not configured") && e.contains("[tracking] store"),
        "{e}"
    );
    std::fs::write(&config, "[tracking]\nstore = \"sqlite\"\n").unwrap();
    let e = track(&config, &[]).unwrap_err();
    assert!(e.contains("tracking.path"), "{e}");
    std::fs::write(
        &config,
        "[tracking]\nstore = \"sqlite\"\npath = \"none.sqlite\"\n",
    )
    .unwrap();
    let e = track(&config, &[]).unwrap_err();
    assert!(e.contains("no tracking database"), "{e}");
}

/// A dry run tracks what it would have done, and the mail goes through.
#[test]
fn a_dry_run_tracks_the_would_be_verdicts() {
    let target = refusing_target();
    let env = ProxyEnv::start(
        &proxy_config(
            &target,
            "store = \"sqlite\"\npath = \"tracking.sqlite\"",
            "[scan]\ndry_run = true\n",
        ),
        &[],
    );
    let (ok, dialogue) = swaks(
        &env,
        "dave@sender.test",
        "x@other.test,good@dest.test",
        "ssn 078-05-1121 card 4111 1111 1111 1111",
    );
    assert!(ok, "nothing is refused in a dry run: {dialogue}");
    let config = env.dir.path().join("postern.toml");
    let records = wait_track(&config, &["--sender", "dave@sender.test"], 2);
    // The refusal at RCPT is told on the recipient it concerns only.
    let good = for_recipient(&records, "good@dest.test");
    assert!(!field(good, "would").contains("rcpt:"), "{good:#}");
    assert!(
        field(good, "would").contains("end_of_message: reject"),
        "{good:#}"
    );
    let r = for_recipient(&records, "x@other.test");
    assert_eq!(field(r, "outcome"), "relayed", "{r:#}");
    assert_eq!(field(r, "verdict"), "continue", "{r:#}");
    assert_eq!(r.get("dry_run"), Some(&Value::Bool(true)), "{r:#}");
    let would = field(r, "would");
    assert!(would.contains("rcpt: reject (554 5.7.1"), "{would}");
    assert!(would.contains("end_of_message: reject"), "{would}");
    let rules = field(r, "rules");
    assert!(rules.contains("block/no ssn:would_reject"), "{rules}");
    assert!(rules.contains("cards/card numbers:would_mask"), "{rules}");
    let taken = target.taken();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].recipients.len(), 2);
    assert!(String::from_utf8_lossy(&taken[0].message).contains("078-05-1121"));
}

/// The milter door through a real Postfix: a delivered message, a recipient Postfix refused
/// itself, and a refused connection.
#[test]
fn the_milter_tracks_what_postfix_passed_and_refused() {
    let env = MailEnv::start_with_postfix(
        Socket::Unix,
        "[connection]\nip_address_rejection = [\"192.0.2.0/24\"]\n\
         [tracking]\nstore = \"sqlite\"\npath = \"tracking.sqlite\"\n\
         track_dropped_connections = true\n",
        &["smtpd_recipient_restrictions = check_recipient_access regexp:{dir}/recipients"],
        &[(
            "recipients",
            "/^nosuch/ 550 5.1.1 User unknown in local recipient table\n",
        )],
    );
    let (ok, dialogue) = env.swaks_result(&[
        "--xclient-addr",
        "198.51.100.7",
        "-f",
        "a@sender.example",
        "-t",
        "b@rcpt.example,nosuch@rcpt.example",
    ]);
    assert!(dialogue.contains("250 2.0.0 Ok: queued"), "{ok} {dialogue}");
    env.wait_delivered(1);
    let (ok, _) = env.send_from("192.0.2.9");
    assert!(!ok, "a listed client is refused");

    let records = wait_track(&env.config, &["--sender", "a@sender.example"], 2);
    let r = for_recipient(&records, "b@rcpt.example");
    assert_eq!(field(r, "door"), "milter", "{r:#}");
    assert_eq!(field(r, "outcome"), "accepted", "{r:#}");
    assert_eq!(field(r, "client_addr"), "198.51.100.7", "{r:#}");
    assert!(
        !field(r, "queue_id").is_empty(),
        "Postfix's queue id: {r:#}"
    );
    let queue_id = field(r, "queue_id").to_owned();
    let nosuch = for_recipient(&records, "nosuch@rcpt.example");
    assert_eq!(field(nosuch, "outcome"), "refused", "{nosuch:#}");
    assert_eq!(field(nosuch, "reason"), "mta", "{nosuch:#}");
    assert!(
        field(nosuch, "reply").starts_with("550 5.1.1"),
        "{nosuch:#}"
    );
    // Both recipients of the message, the refused one included.
    assert_eq!(
        track(&env.config, &["--queue-id", &queue_id])
            .unwrap()
            .len(),
        2
    );

    let refused = wait_track(&env.config, &["--client", "192.0.2.9"], 1);
    let r = &refused[0];
    assert_eq!(field(r, "outcome"), "connection_refused", "{r:#}");
    assert_eq!(field(r, "reason"), "ip_address_rejection", "{r:#}");
    assert!(field(r, "reply").starts_with('5'), "{r:#}");
}

/// A private PostgreSQL 15 in a temporary directory, on a loopback port. The server runs in
/// the foreground as this test's child (under runuser), so that it is reaped when it stops;
/// dropping this stops it.
struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
    server: Option<std::process::Child>,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl Postgres {
    fn start() -> Self {
        Self::start_with(None)
    }

    /// A server that takes TLS connections only, with the certificate `certs/server.pem` (of
    /// the test CA `certs/ca.pem`, for localhost and 127.0.0.1): a plain-text connection is
    /// refused (`hostnossl ... reject`).
    fn start_tls_only(certs: &std::path::Path) -> Self {
        Self::start_with(Some(certs))
    }

    fn start_with(certs: Option<&std::path::Path>) -> Self {
        crate::support::install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-pg.")
            .tempdir()
            .unwrap();
        let status = Command::new("chown")
            .args(["postgres:", &dir.path().display().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "chown postgres");
        let mut pg = Self {
            port: free_port(),
            dir,
            server: None,
        };
        let out = pg
            .as_postgres("initdb")
            .args([
                "-D",
                &pg.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if let Some(certs) = certs {
            let data = PathBuf::from(pg.data());
            for name in ["server.pem", "server.key"] {
                std::fs::copy(certs.join(name), data.join(name)).unwrap();
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server.key"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .unwrap();
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            use std::io::Write as _;
            writeln!(
                conf,
                "ssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'"
            )
            .unwrap();
            let status = Command::new("chown")
                .args(["-R", "postgres:", &pg.data()])
                .status()
                .unwrap();
            assert!(status.success(), "chown postgres");
        }
        pg.start_server();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("pg").display().to_string()
    }

    fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    /// `program` of PostgreSQL's, run as the postgres user.
    fn as_postgres(&self, program: &str) -> Command {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(PathBuf::from(PG_BIN).join(program))
            .current_dir(self.dir.path());
        command
    }

    /// Starts the server and waits until it accepts connections.
    fn start_server(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pg.log"))
            .unwrap();
        let server = self
            .as_postgres("postgres")
            .args(["-D", &self.data(), "-p", &self.port.to_string()])
            .args(["-k", &self.dir.path().display().to_string()])
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(server);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .as_postgres("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (fast shutdown: sessions are ended) and reaps it.
    fn stop(&mut self) {
        if let Some(mut server) = self.server.take() {
            let _ = self
                .as_postgres("pg_ctl")
                .args(["-D", &self.data(), "-m", "fast", "-w", "stop"])
                .output();
            let deadline = Instant::now() + Duration::from_secs(20);
            while server.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP GET of the metrics endpoint; the body.
#[test]
fn postgres_tracks_the_same_and_its_outage_loses_no_mail() {
    let mut pg = Postgres::start();
    let target = refusing_target();
    let metrics_port = free_port();
    let env = ProxyEnv::start(
        &proxy_config(
            &target,
            &format!("store = \"postgres\"\nurl = \"{}\"", pg.url()),
            &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"),
        ),
        &[],
    );
    send_three(&env, &target);
    let config = env.dir.path().join("postern.toml");
    check_three(&config);

    // PostgreSQL goes away: mail still flows, and the lost records are said and counted.
    pg.stop();
    for n in 0..3 {
        let (ok, dialogue) = swaks(&env, "erin@sender.test", "good@dest.test", "hello");
        assert!(ok, "message {n} is not deferred for tracking: {dialogue}");
    }
    assert_eq!(target.taken().len(), 4);
    env.wait_for_log("message tracking records dropped");
    let log = env.log();
    assert!(log.contains("reason=\"store_unavailable\""), "{log}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = crate::support::get(metrics_port, "/metrics", None);
        let dropped = crate::support::sample(
            &text,
            "postern_tracking_dropped_total{reason=\"store_unavailable\"}",
        );
        if dropped.is_some_and(|n| n >= 3.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let e = track(&config, &[]).unwrap_err();
    assert!(e.contains("cannot connect to the tracking database"), "{e}");

    // Back again: the writer reconnects and tracks the next message.
    pg.start_server();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, dialogue) = swaks(&env, "frank@sender.test", "good@dest.test", "hello");
        assert!(ok, "{dialogue}");
        std::thread::sleep(Duration::from_secs(1));
        if track(&config, &["--sender", "frank@sender.test"]).is_ok_and(|r| !r.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no record after PostgreSQL came back: {}",
            env.log()
        );
    }
}

/// What a client sends is stored bounded and shown escaped: an EHLO and a Message-ID holding
/// terminal escape sequences do not reach the administrator's terminal through `postern
/// track`, and a 420-byte EHLO is kept as 256 bytes marked as cut.
#[test]
fn client_text_is_stored_bounded_and_shown_escaped() {
    let target = FaultyTarget::start(Faults::default());
    let env = ProxyEnv::start(
        &proxy_config(
            &target,
            "store = \"sqlite\"\npath = \"tracking.sqlite\"",
            "",
        ),
        &[],
    );
    let helo = format!("x\u{1b}]0;PWNED\u{7}\u{1b}[2J{}", "h".repeat(400));
    let mut smtp = env.smtp();
    assert!(
        smtp.command(&format!("EHLO {helo}"))
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("MAIL FROM:<alice@sender.test>")
            .unwrap()
            .starts_with("250")
    );
    assert!(
        smtp.command("RCPT TO:<good@dest.test>")
            .unwrap()
            .starts_with("250")
    );
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all(
            b"Message-ID: <evil\x1b[31m\x07@sender.test>\r\nSubject: t\r\n\r\nhello\r\n.\r\n",
        )
        .unwrap();
    let end = smtp.read_reply().unwrap();
    assert!(end.starts_with("250"), "{end}");
    smtp.command("QUIT");
    let config = env.dir.path().join("postern.toml");
    let records = wait_track(&config, &["--sender", "alice@sender.test"], 1);
    let stored = field(&records[0], "helo");
    assert!(
        stored.len() <= 256 && stored.starts_with("x\u{1b}]0;PWNED") && stored.ends_with("[cut]"),
        "{stored:?}"
    );
    let out = Command::new(POSTERN)
        .args(["track", "--config"])
        .arg(&config)
        .args(["--sender", "alice@sender.test", "--wide"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{7}'),
        "{table:?}"
    );
    assert!(table.contains("helo x\\u{1b}]0;PWNED\\u{7}"), "{table}");
    assert!(
        table.contains("id <evil\\u{1b}[31m\\u{7}@sender.test>"),
        "{table}"
    );
}

/// One client causes at most `max_records_per_client` records a minute: a message to eight
/// recipients with a limit of five keeps five, and one `left_out` record (written at the
/// latest at shutdown) says three more were left out, and the log tells it. (Per-client
/// counting, IPv6 /64 included, is unit-tested in src/tracking/limit.rs.)
#[test]
fn one_client_cannot_fill_the_store() {
    let target = FaultyTarget::start(Faults::default());
    let mut env = ProxyEnv::start(
        &proxy_config(
            &target,
            "store = \"sqlite\"\npath = \"tracking.sqlite\"\nmax_records_per_client = 5",
            "",
        ),
        &[],
    );
    let recipients: Vec<String> = (1..=8).map(|i| format!("r{i}@dest.test")).collect();
    let (_, dialogue) = swaks(&env, "many@sender.test", &recipients.join(","), "hello");
    assert!(dialogue.contains("250 2.0.0 Ok: queued"), "{dialogue}");
    env.stop_postern();
    let config = env.dir.path().join("postern.toml");
    let records = track(&config, &["--sender", "many@sender.test"]).unwrap();
    let relayed = records
        .iter()
        .filter(|r| field(r, "outcome") == "relayed")
        .count();
    assert_eq!(relayed, 5, "{records:#?}");
    let left_out: Vec<&Value> = records
        .iter()
        .filter(|r| field(r, "outcome") == "left_out")
        .collect();
    assert_eq!(left_out.len(), 1, "{records:#?}");
    assert!(
        field(left_out[0], "reply").starts_with("3 more records of this client"),
        "{left_out:#?}"
    );
    assert_eq!(target.taken().len(), 1, "the mail itself went through");
    assert!(env.log().contains("max_records_per_client"));
}

/// PostgreSQL over TLS: with `sslmode=verify-full` and the test CA as `ca_file`, records are
/// written to and read back from a server that refuses plain text (before, Postern spoke only
/// plain text); without the CA the certificate is not trusted and nothing is read.
#[test]
fn postgres_over_tls_checks_the_servers_certificate() {
    let certs = tempfile::tempdir().unwrap();
    crate::support::proxy::write_certificates(certs.path());
    let pg = Postgres::start_tls_only(certs.path());
    let target = FaultyTarget::start(Faults::default());
    let url = format!("{}?sslmode=verify-full", pg.url());
    let ca = certs.path().join("ca.pem");
    let env = ProxyEnv::start(
        &proxy_config(
            &target,
            &format!(
                "store = \"postgres\"\nurl = \"{url}\"\nca_file = \"{}\"",
                ca.display()
            ),
            "",
        ),
        &[],
    );
    let (ok, dialogue) = swaks(&env, "tls@sender.test", "good@dest.test", "hello");
    assert!(ok, "{dialogue}");
    let config = env.dir.path().join("postern.toml");
    let records = wait_track(&config, &["--sender", "tls@sender.test"], 1);
    assert_eq!(field(&records[0], "outcome"), "relayed", "{records:#?}");
    assert!(!env.log().contains("records dropped"), "{}", env.log());

    // The same server without the CA: the certificate is not trusted.
    let untrusted = env.dir.path().join("untrusted.toml");
    std::fs::write(
        &untrusted,
        format!("[tracking]\nstore = \"postgres\"\nurl = \"{url}\"\n"),
    )
    .unwrap();
    let e = track(&untrusted, &[]).unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    // Plain text is what the server refuses: sslmode=disable gets its refusal.
    std::fs::write(
        &untrusted,
        format!(
            "[tracking]\nstore = \"postgres\"\nurl = \"{}?sslmode=disable\"\n",
            pg.url()
        ),
    )
    .unwrap();
    let e = track(&untrusted, &[]).unwrap_err();
    assert!(e.contains("no encryption"), "{e}");
}

/// `check-config --connect` connects to a PostgreSQL store, and what is wrong is said in
/// PostgreSQL's words (before: `db error`, or "unreachable" whatever the cause).
#[test]
fn check_config_connects_to_postgres_and_says_what_is_wrong() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postern.toml");
    let check = |url: &str| {
        std::fs::write(
            &file,
            format!("[tracking]\nstore = \"postgres\"\nurl = \"{url}\"\n"),
        )
        .unwrap();
        crate::support::run_postern(&[
            "check-config",
            "--connect",
            "-c",
            &file.display().to_string(),
        ])
    };
    let (ok, out) = check(&pg.url());
    assert!(ok && out.contains("(reachable)"), "{out}");
    let nosuch = format!("{}nosuch", pg.url().strip_suffix("postgres").unwrap());
    let (ok, out) = check(&nosuch);
    assert!(
        !ok && out.contains("database \"nosuch\" does not exist"),
        "{out}"
    );
    let (ok, out) = check(&format!(
        "postgresql://postgres@127.0.0.1:{}/postgres",
        free_port()
    ));
    assert!(
        !ok && out.to_lowercase().contains("connection refused"),
        "{out}"
    );
}
