//! The proxy door on loopback for end-to-end tests: smtp-sinks as relay targets and Postern's
//! proxy in front of them, started by the scripts in `integration/`; test certificates made
//! with rcgen. Dropping the environment stops everything; when a test failed, Postern's log is
//! printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{POSTERN, Smtp, free_port, install_deps, run_script, script};

/// One smtp-sink relay target.
pub struct Sink {
    pub port: u16,
    pub dir: PathBuf,
    options: Vec<String>,
    /// The running smtp-sink, remembered here: its pid file may be gone with its directory
    /// by the time the sink is dropped.
    pid: std::cell::Cell<Option<u32>>,
}

impl Sink {
    /// Starts an smtp-sink on a free loopback port keeping messages in `dir`, with extra
    /// smtp-sink `options` (a faulty target). Dropping it stops it.
    pub fn start(dir: PathBuf, options: &[&str]) -> Self {
        let sink = Self {
            port: free_port(),
            dir,
            options: options.iter().map(|o| o.to_string()).collect(),
            pid: std::cell::Cell::new(None),
        };
        sink.run();
        sink
    }

    fn run(&self) {
        let mut args = vec![
            "start".to_owned(),
            self.dir.display().to_string(),
            self.port.to_string(),
        ];
        args.extend(self.options.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_script("sink", &args);
        let pid = std::fs::read_to_string(self.dir.join("sink.pid")).unwrap();
        self.pid.set(Some(pid.trim().parse().unwrap()));
    }

    /// Stops the sink and starts it again on the same port: connections to it break.
    pub fn restart(&self) {
        self.stop();
        self.run();
    }

    /// Stops the sink: its port refuses connections from now on.
    pub fn stop(&self) {
        if let Some(pid) = self.pid.take() {
            let _ = Command::new("kill").arg(pid.to_string()).output();
            // Wait until it is gone, so that its port is free again.
            for _ in 0..100 {
                if !Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .is_ok_and(|s| s.contains(") Z "))
                {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// Messages the sink holds, sorted by name: the message as received, with smtp-sink's own
    /// trace lines removed and LF line ends (smtp-sink stores lines that way).
    pub fn delivered(&self) -> Vec<Vec<u8>> {
        super::sink_files(&self.dir.join("mail"))
            .iter()
            .map(|p| without_sink_trace(&std::fs::read(p).unwrap()))
            .collect()
    }

    /// Waits for `n` messages.
    pub fn wait_delivered(&self, n: usize) -> Vec<Vec<u8>> {
        super::wait_for_messages(n, || self.delivered())
    }

    /// The envelope recipients of each message the sink holds (from smtp-sink's
    /// `X-Rcpt-Args` trace lines, which `delivered` leaves out), sorted by file name.
    pub fn recipients(&self) -> Vec<Vec<String>> {
        super::sink_files(&self.dir.join("mail"))
            .iter()
            .map(|p| {
                String::from_utf8_lossy(&std::fs::read(p).unwrap())
                    .lines()
                    .take_while(|l| !l.starts_with("Received: "))
                    .filter_map(|l| l.strip_prefix("X-Rcpt-Args: <"))
                    .map(|r| r.split('>').next().unwrap_or("").to_owned())
                    .collect()
            })
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

/// smtp-sink writes X-Client-Addr .. X-Rcpt-Args and its own Received field first, and one
/// empty line after the message; Postern's own Received field (its hop) follows.
fn without_sink_trace(raw: &[u8]) -> Vec<u8> {
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let mut lines = raw.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(b"Received: from ") {
            while lines.peek().is_some_and(|l| l.starts_with(b"\t")) {
                lines.next();
            }
            let rest: Vec<u8> = lines.flatten().copied().collect();
            return without_postern_received(&rest).to_vec();
        }
    }
    raw.to_vec()
}

/// The message without the `Received:` fields Postern's proxies put first (those whose
/// continuation lines name Postern; one per proxy hop), so that a relayed message compares
/// with what the client sent.
pub fn without_postern_received(mut message: &[u8]) -> &[u8] {
    while message.starts_with(b"Received: from ") {
        let mut end = 0;
        let mut ours = false;
        for (i, line) in message.split_inclusive(|&b| b == b'\n').enumerate() {
            if i > 0 && !line.starts_with(b"\t") {
                break;
            }
            ours |= line.windows(9).any(|w| w == b"(Postern)");
            end += line.len();
        }
        if !ours {
            break;
        }
        message = &message[end..];
    }
    message
}

/// The message as a sink stores it: CRLF made LF.
pub fn as_stored(message: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(message)
        .replace("\r\n", "\n")
        .into_bytes()
}

pub struct ProxyEnv {
    pub dir: tempfile::TempDir,
    /// Plain SMTP listener.
    pub port: u16,
    /// Implicit TLS listener (in the config only where the test puts `{tls_port}`).
    pub tls_port: u16,
    /// Submission listener (where the test puts `{submission_port}`).
    pub submission_port: u16,
    pub sinks: Vec<Sink>,
    running: bool,
}

impl ProxyEnv {
    /// Starts one smtp-sink per entry of `sinks` (its extra smtp-sink options) and the proxy
    /// with `config`, in which `{port}`, `{tls_port}`, `{submission_port}`, `{sink0}`,
    /// `{sink1}`, ... and `{dir}` (the environment's directory, holding the test
    /// certificates) are replaced.
    pub fn start(config: &str, sinks: &[&[&str]]) -> Self {
        install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-proxy.")
            .tempdir()
            .unwrap();
        write_certificates(dir.path());
        let mut env = Self {
            port: free_port(),
            tls_port: free_port(),
            submission_port: free_port(),
            sinks: Vec::new(),
            running: false,
            dir,
        };
        for (i, options) in sinks.iter().enumerate() {
            let sink_dir = env.dir.path().join(format!("sink{i}"));
            env.sinks.push(Sink::start(sink_dir, options));
        }
        let mut text = config
            .replace("{port}", &env.port.to_string())
            .replace("{tls_port}", &env.tls_port.to_string())
            .replace("{submission_port}", &env.submission_port.to_string())
            .replace("{dir}", &env.dir.path().display().to_string());
        for (i, sink) in env.sinks.iter().enumerate() {
            text = text.replace(&format!("{{sink{i}}}"), &sink.port.to_string());
        }
        let config_path = env.dir.path().join("postern.toml");
        std::fs::write(&config_path, text).unwrap();
        let listen = if config.contains("{port}") {
            env.port
        } else {
            env.tls_port
        };
        run_script(
            "postern",
            &[
                "proxy",
                &env.path("postern"),
                &config_path.display().to_string(),
                &format!("127.0.0.1:{listen}"),
            ],
        );
        env.running = true;
        env
    }

    pub fn path(&self, sub: &str) -> String {
        self.dir.path().join(sub).display().to_string()
    }

    /// Replaces the config file (placeholders as in [`ProxyEnv::start`], ports unchanged) and
    /// sends SIGHUP; returns once Postern logged the outcome.
    pub fn reload(&self, config: &str) {
        self.reload_logging(config, "configuration reloaded");
    }

    /// As [`ProxyEnv::reload`], returning once Postern logged one more line with `outcome`
    /// (`configuration reloaded`, or `configuration not reloaded` for a refused file).
    pub fn reload_logging(&self, config: &str, outcome: &str) {
        let text = config
            .replace("{port}", &self.port.to_string())
            .replace("{dir}", &self.dir.path().display().to_string());
        std::fs::write(self.dir.path().join("postern.toml"), text).unwrap();
        let before = self.log().matches(outcome).count();
        run_script("postern", &["hup", &self.path("postern")]);
        super::wait_for_log_in(outcome, || {
            let log = self.log();
            if log.matches(outcome).count() > before {
                log
            } else {
                String::new()
            }
        });
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postern/postern.log")).unwrap_or_default()
    }

    /// Stops Postern (SIGTERM, as at a shutdown) and waits until it is gone; the directory
    /// with its files stays until the environment is dropped.
    pub fn stop_postern(&mut self) {
        if self.running {
            run_script("postern", &["stop", &self.path("postern")]);
            self.running = false;
        }
    }

    /// The tracking record of `recipient` (as the client gave it), once the writer stored it.
    pub fn tracked(&self, recipient: &str) -> serde_json::Value {
        let config = self.path("postern.toml");
        for _ in 0..100 {
            let out = postern()
                .args(["track", "--config", &config, "--format", "json"])
                .args(["--recipient", recipient])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if let Some(r) = records.as_array().and_then(|a| a.first())
                && r["outcome"] != "accepted"
            {
                return r.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("no tracking record for {recipient}");
    }

    /// Waits until Postern's log has a line containing `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        super::wait_for_log_in(needle, || self.log());
    }

    /// A raw SMTP client to the proxy.
    pub fn smtp(&self) -> Smtp {
        Smtp::connect(self.port)
    }

    /// Runs swaks against the proxy (`--server` is given by the caller when not the plain
    /// listener). Returns whether it succeeded and its transcript.
    pub fn swaks(&self, args: &[&str]) -> (bool, String) {
        let server = format!("127.0.0.1:{}", self.port);
        let mut all = vec!["--server", server.as_str(), "--timeout", "20"];
        all.extend_from_slice(args);
        // A later --server wins in swaks.
        let out = Command::new("swaks").args(&all).output().unwrap();
        super::outcome(&out)
    }
}

impl Drop for ProxyEnv {
    fn drop(&mut self) {
        if self.running {
            let _ = Command::new(script("postern"))
                .args(["stop", &self.path("postern")])
                .output();
        }
        if std::thread::panicking() {
            eprintln!("--- postern.log ---\n{}", self.log());
        }
    }
}

/// Test certificates in `dir`: a CA (ca.pem), a server certificate for localhost and
/// 127.0.0.1 (server.pem, server.key), one for another name (wrong.pem, wrong.key) and a
/// client certificate (client.pem, client.key), all signed by the CA.
pub fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Postern test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issue = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, name.to_owned());
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    issue(
        "server",
        vec!["localhost".into(), "127.0.0.1".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    issue(
        "wrong",
        vec!["wrong.postern.test".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    issue(
        "client",
        vec!["client.postern.test".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
}

/// Writes `dir/users` with alice:secret, hashed by `postern hash-password`; returns its path.
pub fn users_file(dir: &Path) -> PathBuf {
    let path = dir.join("users");
    std::fs::write(&path, format!("alice:{}", hash_password("secret"))).unwrap();
    path
}

/// An argon2id hash of `password`, from `postern hash-password`.
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = postern()
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// The proxy binary, for tests that run it directly (hash-password).
pub fn postern() -> Command {
    Command::new(POSTERN)
}
