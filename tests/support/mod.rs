//! A private mail environment on loopback for end-to-end tests: smtp-sink, Postern and a
//! real MTA (Postfix, or Sendmail) with Postern as its milter, all started by the scripts in
//! `integration/`. Dropping the environment stops everything; when a test failed, the logs of
//! all three are printed.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;
use std::time::{Duration, Instant};

pub const POSTERN: &str = env!("CARGO_BIN_EXE_postern");

/// Runs `postern ARGS` to its end: whether it succeeded, and what it printed (stdout, then
/// stderr).
pub fn run_postern(args: &[&str]) -> (bool, String) {
    let out = Command::new(POSTERN).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

pub mod dkim;
pub mod faulty;
pub mod hosts_dns;
pub mod proxy;
pub mod redis;
pub mod webdriver;

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration")
        .join(name)
}

/// Whether a finished command succeeded, and all it printed (stdout, then stderr).
pub fn outcome(out: &Output) -> (bool, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs an integration script, panicking with its output when it fails.
pub fn run_script(name: &str, args: &[&str]) {
    let out = Command::new(script(name))
        .args(args)
        .env("POSTERN_BIN", POSTERN)
        .output()
        .unwrap_or_else(|e| panic!("cannot run integration/{name}: {e}"));
    assert!(
        out.status.success(),
        "integration/{name} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Installs Postfix and swaks if missing (once per test binary).
pub fn install_deps() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| run_script("install-deps", &[]));
}

/// Message files in an MTA's queue directory: Postfix's queue files under incoming, active,
/// deferred, hold, maildrop (and the others it keeps there), Sendmail's qf/df files; the
/// directories the MTA keeps for its own use (pid, public, private sockets) hold no files of
/// messages.
fn queued_files(queue: &Path) -> usize {
    const POSTFIX_QUEUES: [&str; 6] = [
        "incoming", "active", "deferred", "hold", "maildrop", "corrupt",
    ];
    let count = |dir: &Path| {
        walk_files(dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .count()
    };
    let postfix: usize = POSTFIX_QUEUES.iter().map(|q| count(&queue.join(q))).sum();
    let sendmail = walk_files(queue)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("qf") || n.starts_with("df"))
        })
        .count();
    postfix + sendmail
}

/// Every file below `dir` (none when it cannot be read).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(walk_files(&path)),
            Ok(t) if t.is_file() => files.push(path),
            _ => {}
        }
    }
    files
}

/// A free TCP port on 127.0.0.1 for a server a test starts, never one handed out before in
/// this test binary (tests run in parallel threads, and a port one test was given and has not
/// bound yet must not go to another). It is taken below the kernel's range of ephemeral ports
/// (`ip_local_port_range`), from which outgoing connections take their source ports: between
/// this check and the server's bind, no connection of any test can take it as its own.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ephemeral_start: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    // Below the ephemeral range, away from the well-known ports; each test binary (its
    // process) starts somewhere else in it, so that binaries run one after another, or beside
    // another test run, rarely meet.
    let low = 10_000.min(ephemeral_start / 2);
    let span = ephemeral_start.saturating_sub(low).max(1);
    let start = std::process::id().wrapping_mul(7919) % span;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < span, "no free port below {ephemeral_start}");
        let port = (low + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Waits up to 10 s until the log that `read` returns contains `needle`.
pub fn wait_for_log_in(needle: &str, read: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !read().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "Postern never logged {needle:?}; log:\n{}",
            read()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The files of a sink's mail directory, sorted by name (arrival order).
pub fn sink_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Waits up to 20 s until `read` returns at least `n` messages, and returns them. smtp-sink
/// creates a message's file before it has written it: the messages count only once a second
/// read, a moment later, finds them unchanged.
pub fn wait_for_messages(n: usize, read: impl Fn() -> Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = read();
        if got.len() >= n && got.iter().all(|m| !m.is_empty()) {
            std::thread::sleep(Duration::from_millis(100));
            if read() == got {
                return got;
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} message(s) reached the sink whole",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// rbldnsd on loopback serving the DNSBL zones of integration/dns-zones.
pub struct DnsServer {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl DnsServer {
    pub fn start() -> Self {
        install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-dns.")
            .tempdir()
            .unwrap();
        let port = free_port();
        let path = dir.path().display().to_string();
        run_script("dns", &["start", &path, &port.to_string()]);
        Self { dir, port }
    }

    /// Queries the server has answered for `name` so far.
    pub fn queries_for(&self, name: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("queries.log")).unwrap_or_default();
        log.lines().filter(|l| l.contains(name)).count()
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = Command::new(script("dns"))
            .args(["stop", &self.dir.path().display().to_string()])
            .output();
    }
}

/// How Postfix reaches Postern.
#[derive(Clone, Copy, Debug)]
pub enum Socket {
    Unix,
    Inet,
}

/// The MTA in front of Postern, started and stopped by `integration/<script>`, which takes
/// `start DIR SMTP_PORT SINK_PORT MILTER [more...]` and `stop DIR` for either.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mta {
    /// Postfix with `smtpd_milters` (integration/postfix).
    Postfix,
    /// Sendmail 8.17 with `INPUT_MAIL_FILTER(..., F=T)` (integration/sendmail): its
    /// `F=T` plays the part of Postfix's `milter_default_action = tempfail`.
    Sendmail,
}

impl Mta {
    /// The name of its script in `integration/`, and of its directory in the environment.
    pub fn script(self) -> &'static str {
        match self {
            Mta::Postfix => "postfix",
            Mta::Sendmail => "sendmail",
        }
    }

    /// The logs worth reading when a test failed, relative to its directory: Postfix's maillog;
    /// what Sendmail printed and its sessions' SMTP dialogues (it has no syslog here).
    fn logs(self) -> &'static [&'static str] {
        match self {
            Mta::Postfix => &["maillog"],
            Mta::Sendmail => &["sendmail.log", "traffic"],
        }
    }
}

pub struct MailEnv {
    pub dir: tempfile::TempDir,
    pub mta: Mta,
    pub smtp_port: u16,
    pub sink_port: u16,
    pub milter: String,
    pub config: PathBuf,
    postern_running: bool,
}

impl MailEnv {
    /// Starts sink, Postern (with `config` as its config file) and Postfix.
    pub fn start(socket: Socket, config: &str) -> Self {
        Self::start_with(socket, config, "tempfail")
    }

    /// Starts sink, Postern (with `config` as its config file) and Sendmail, whose milter
    /// is Postern over `socket` with `F=T` (see integration/sendmail for its .mc). Sendmail
    /// has no XCLIENT: the client is always 127.0.0.1, and `send_from`/`smtp_as` do not apply.
    pub fn sendmail(socket: Socket, config: &str) -> Self {
        let env = Self::start_sink_and_postern(Mta::Sendmail, socket, config, &[]);
        env.start_mta(&[]);
        env
    }

    pub fn start_with(socket: Socket, config: &str, default_action: &str) -> Self {
        Self::start_full_files(socket, config, default_action, &[], &[])
    }

    /// Like `start`, with extra main.cf lines for Postfix; `{dir}` in them stands for the
    /// environment's directory (for lookup tables the test writes there first).
    pub fn start_with_postfix(
        socket: Socket,
        config: &str,
        main_cf: &[&str],
        files: &[(&str, &str)],
    ) -> Self {
        Self::start_full_files(socket, config, "tempfail", main_cf, files)
    }

    fn start_full_files(
        socket: Socket,
        config: &str,
        default_action: &str,
        main_cf: &[&str],
        files: &[(&str, &str)],
    ) -> Self {
        let env = Self::start_sink_and_postern(Mta::Postfix, socket, config, files);
        let dir = env.dir.path().display().to_string();
        let mut args = vec![default_action.to_owned()];
        args.extend(main_cf.iter().map(|l| l.replace("{dir}", &dir)));
        env.start_mta(&args);
        env
    }

    /// The environment with sink and Postern running, its MTA not yet: `files` are written
    /// into its directory first (lookup tables, keys the config names).
    fn start_sink_and_postern(
        mta: Mta,
        socket: Socket,
        config: &str,
        files: &[(&str, &str)],
    ) -> Self {
        install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-e2e.")
            .tempdir()
            .unwrap();
        let root = dir.path().to_owned();
        let milter = match socket {
            Socket::Unix => format!("unix:{}", root.join("postern.sock").display()),
            Socket::Inet => format!("inet:127.0.0.1:{}", free_port()),
        };
        // Postfix's smtpd runs as user postfix: it must reach the socket in this directory.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let config_path = root.join("postern.toml");
        std::fs::write(&config_path, Self::with_socket_mode(config)).unwrap();
        let mut env = Self {
            mta,
            smtp_port: free_port(),
            sink_port: free_port(),
            milter,
            config: config_path,
            dir,
            postern_running: false,
        };
        for (name, content) in files {
            std::fs::write(root.join(name), content).unwrap();
        }
        run_script(
            "sink",
            &["start", &env.path("sink"), &env.sink_port.to_string()],
        );
        env.start_postern();
        env
    }

    /// Starts the MTA with the environment's ports and milter socket, and `more` arguments.
    fn start_mta(&self, more: &[String]) {
        let (smtp_port, sink_port) = (self.smtp_port.to_string(), self.sink_port.to_string());
        let dir = self.path(self.mta.script());
        let mut args = vec!["start", &dir, &smtp_port, &sink_port, &self.milter];
        args.extend(more.iter().map(String::as_str));
        run_script(self.mta.script(), &args);
    }

    /// Test configs get a world-connectable socket unless they set [milter] themselves (a
    /// real installation runs Postern as, or in the group of, the postfix user instead).
    pub fn with_socket_mode(config: &str) -> String {
        if config.contains("[milter]") {
            config.to_owned()
        } else {
            format!("{config}\n[milter]\nsocket_mode = \"0666\"\n")
        }
    }

    /// Replaces Postern's config file (before a SIGHUP).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config, Self::with_socket_mode(config)).unwrap();
    }

    pub fn path(&self, sub: &str) -> String {
        self.dir.path().join(sub).display().to_string()
    }

    pub fn start_postern(&mut self) {
        let config = self.config.display().to_string();
        run_script(
            "postern",
            &["start", &self.path("postern"), &self.milter, &config],
        );
        self.postern_running = true;
    }

    pub fn stop_postern(&mut self) {
        run_script("postern", &["stop", &self.path("postern")]);
        self.postern_running = false;
    }

    pub fn hup_postern(&self) {
        run_script("postern", &["hup", &self.path("postern")]);
    }

    pub fn postern_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postern/postern.log")).unwrap_or_default()
    }

    /// Waits until Postern's log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        wait_for_log_in(needle, || self.postern_log());
    }

    /// Runs swaks against the MTA with the given extra arguments.
    pub fn swaks(&self, args: &[&str]) -> Output {
        Command::new("swaks")
            .args([
                "--server",
                "127.0.0.1",
                "--port",
                &self.smtp_port.to_string(),
            ])
            .args(["--timeout", "20", "--helo", "client.postern.test"])
            .args(args)
            .output()
            .expect("swaks runs")
    }

    /// Runs swaks with `args`: whether it succeeded, and its whole dialogue.
    pub fn swaks_result(&self, args: &[&str]) -> (bool, String) {
        let o = self.swaks(args);
        let dialogue = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), dialogue)
    }

    /// Sends a test message with swaks as if from `client_ip` (Postfix's XCLIENT, allowed from
    /// loopback), so that Postfix and Postern judge that address. Postfix only.
    pub fn send_from(&self, client_ip: &str) -> (bool, String) {
        assert_eq!(self.mta, Mta::Postfix, "only Postfix offers XCLIENT");
        self.swaks_result(&[
            "--xclient-addr",
            client_ip,
            "-f",
            "a@sender.example",
            "-t",
            "b@rcpt.example",
        ])
    }

    /// Messages the sink holds now, sorted by name.
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        sink_files(&self.dir.path().join("sink/mail"))
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    }

    /// Waits for `n` messages at the sink.
    pub fn wait_delivered(&self, n: usize) -> Vec<Vec<u8>> {
        wait_for_messages(n, || self.delivered())
    }

    /// Asserts that nothing was delivered and nothing is on its way: once the MTA's queue
    /// holds no message (an accepted message is queued before the client hears 250, and
    /// leaves the queue only when delivered or bounced), the sink must be empty. Waits for the
    /// queue to empty, at most 10 s, rather than for a fixed while.
    pub fn assert_nothing_delivered(&self) {
        let queue = PathBuf::from(self.path(self.mta.script())).join("queue");
        let deadline = Instant::now() + Duration::from_secs(10);
        while queued_files(&queue) > 0 {
            assert!(
                Instant::now() < deadline,
                "a message stayed in the MTA's queue ({})",
                queue.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.delivered().is_empty(), "a message reached the sink");
    }

    /// A raw SMTP client to the MTA.
    pub fn smtp(&self) -> Smtp {
        Smtp::connect(self.smtp_port)
    }

    /// A raw SMTP session to Postfix as `client_ip` (XCLIENT): returns it with the reply to
    /// the EHLO that follows XCLIENT (where a connect-stage refusal shows). Postfix only.
    pub fn smtp_as(&self, client_ip: &str) -> (Smtp, String) {
        assert_eq!(self.mta, Mta::Postfix, "only Postfix offers XCLIENT");
        let mut smtp = self.smtp();
        smtp.command("EHLO client.postern.test").unwrap();
        let r = smtp.command(&format!("XCLIENT ADDR={client_ip}")).unwrap();
        assert!(r.starts_with("220"), "XCLIENT: {r}");
        let ehlo = smtp.command("EHLO client.postern.test").unwrap_or_default();
        (smtp, ehlo)
    }
}

impl Drop for MailEnv {
    fn drop(&mut self) {
        let _ = Command::new(script(self.mta.script()))
            .args(["stop", &self.path(self.mta.script())])
            .output();
        if self.postern_running {
            let _ = Command::new(script("postern"))
                .args(["stop", &self.path("postern")])
                .output();
        }
        let _ = Command::new(script("sink"))
            .args(["stop", &self.path("sink")])
            .output();
        if std::thread::panicking() {
            eprintln!("--- postern.log ---\n{}", self.postern_log());
            for log in self.mta.logs() {
                let path = self.dir.path().join(self.mta.script()).join(log);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<_> = text.lines().rev().take(30).collect();
                eprintln!("--- {} (last lines) ---", path.display());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}

/// Checks that `stored` (as the sink keeps it) is `sent` with only header fields that the
/// sink and the MTA add of their own before it: the sink's `X-Client-*`, `X-*-Args` and
/// `Received:` fields, and the MTA's `Received:` field.
pub fn assert_arrived_unchanged(stored: &[u8], sent: &[u8]) {
    // smtp-sink ends each dump with one newline of its own.
    let stored = stored.strip_suffix(b"\n").unwrap_or(stored);
    let sent = proxy::as_stored(sent);
    assert!(
        stored.ends_with(&sent),
        "message changed on the way:\n{}",
        String::from_utf8_lossy(stored)
    );
    let prefix = String::from_utf8_lossy(&stored[..stored.len() - sent.len()]).into_owned();
    for line in prefix.lines() {
        let added_by_mta = [
            "X-Client-",
            "X-Helo-Args:",
            "X-Mail-Args:",
            "X-Rcpt-Args:",
            "Received:",
            "\t",
        ]
        .iter()
        .any(|p| line.starts_with(p));
        assert!(
            added_by_mta,
            "unexpected header added before the message: {line:?}"
        );
    }
}

/// A minimal line-based SMTP client for conversations swaks cannot script.
pub struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut s = Self {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let banner = s.read_reply().expect("banner");
        assert!(banner.starts_with("220"), "banner: {banner}");
        s
    }

    /// Reads one (possibly multi-line) reply; `None` when the server closed (or reset) the
    /// connection. No reply within the read timeout (20 s) fails the test: a server that
    /// stays silent has not closed.
    pub fn read_reply(&mut self) -> Option<String> {
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return (!reply.is_empty()).then_some(reply),
                Ok(_) => {}
                Err(e) if timed_out(&e) => panic!("no reply within 20 s (so far: {reply:?})"),
                Err(_) => return (!reply.is_empty()).then_some(reply),
            }
            reply.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Some(reply);
            }
        }
    }

    /// Sends a command line and returns the reply.
    pub fn command(&mut self, line: &str) -> Option<String> {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .ok()?;
        self.read_reply()
    }

    /// EHLO and MAIL FROM:<`from`>, each answered 250.
    pub fn begin(&mut self, from: &str) {
        let ehlo = self.command("EHLO client.postern.test").unwrap();
        assert!(ehlo.starts_with("250"), "EHLO: {ehlo}");
        let r = self.command(&format!("MAIL FROM:<{from}>")).unwrap();
        assert!(r.starts_with("250"), "MAIL: {r}");
    }

    /// A whole transaction: EHLO, MAIL, RCPT, DATA with `message` dot-stuffed. Returns the
    /// reply to the end of data.
    pub fn send(&mut self, from: &str, to: &str, message: &[u8]) -> String {
        let ehlo = self.command("EHLO client.postern.test").unwrap();
        assert!(ehlo.starts_with("250"), "EHLO: {ehlo}");
        self.transaction(from, to, message)
    }

    /// MAIL, RCPT, DATA with `message` dot-stuffed, after an EHLO already answered (and, say,
    /// AUTH). Returns the reply to the end of data.
    pub fn transaction(&mut self, from: &str, to: &str, message: &[u8]) -> String {
        let r = self.command(&format!("MAIL FROM:<{from}>")).unwrap();
        assert!(r.starts_with("250"), "MAIL: {r}");
        let r = self.command(&format!("RCPT TO:<{to}>")).unwrap();
        assert!(r.starts_with("250"), "RCPT: {r}");
        self.data(message)
    }

    /// EHLO, MAIL from `from` and RCPT to each of `recipients`, every one accepted, then
    /// `message`; the reply to the end of data.
    pub fn send_to(&mut self, from: &str, recipients: &[&str], message: &[u8]) -> String {
        for command in ["EHLO client.postern.test", &format!("MAIL FROM:<{from}>")] {
            let r = self.command(command).unwrap();
            assert!(r.starts_with("250"), "{command}: {r}");
        }
        for recipient in recipients {
            let r = self.command(&format!("RCPT TO:<{recipient}>")).unwrap();
            assert!(r.starts_with("250"), "{recipient}: {r}");
        }
        self.data(message)
    }

    /// DATA and `message` dot-stuffed, in a transaction whose recipients were accepted; the
    /// reply to the end of data.
    pub fn data(&mut self, message: &[u8]) -> String {
        let r = self.command("DATA").unwrap();
        assert!(r.starts_with("354"), "DATA: {r}");
        let mut wire = Vec::with_capacity(message.len() + 16);
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
        }
        wire.extend_from_slice(b".\r\n");
        self.writer.write_all(&wire).unwrap();
        self.read_reply().expect("reply to end of data")
    }

    /// The socket, for writing raw bytes.
    pub fn writer_mut(&mut self) -> &mut TcpStream {
        &mut self.writer
    }

    /// True when the server has closed (or reset) the connection, false when it sent
    /// something; a connection still open and silent after the read timeout (20 s) fails the
    /// test.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        match self.reader.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) if timed_out(&e) => panic!("the connection is still open after 20 s"),
            Err(_) => true,
        }
    }
}

/// A read that ended at the socket's read timeout.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// One HTTP request to a metrics endpoint on 127.0.0.1; the whole response (head and body).
pub fn get(port: u16, path: &str, authorization: Option<&str>) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Where the console's browser tests keep their screenshots: `target/console-screenshots/`.
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("console-screenshots")
}

/// The value of the sample `name` (with its labels, as printed) in `text`.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
