//! A private Redis on a unix socket (integration/redis), stopped when dropped.

use std::process::Command;

use super::{run_script, script};

pub struct Redis {
    pub dir: tempfile::TempDir,
    running: bool,
}

impl Redis {
    pub fn start() -> Self {
        super::install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-redis.")
            .tempdir()
            .unwrap();
        let mut redis = Self {
            dir,
            running: false,
        };
        redis.restart();
        redis
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// The URL Postern is given.
    pub fn url(&self) -> String {
        format!("redis+unix://{}/redis.sock", self.path())
    }

    /// `[shared_state]` pointing at this Redis.
    pub fn section(&self) -> String {
        format!("[shared_state]\nredis_url = \"{}\"\n", self.url())
    }

    /// Stops the server (what it held is gone, as after a crash without persistence).
    pub fn stop(&mut self) {
        run_script("redis", &["stop", &self.path()]);
        self.running = false;
    }

    /// Starts it (again) on the same socket.
    pub fn restart(&mut self) {
        // Marked first: a start that fails half-way is still stopped.
        self.running = true;
        run_script("redis", &["start", &self.path()]);
    }

    /// Forgets everything: for a test to start counting after its servers started (their
    /// start-up probes connect, and connections count).
    pub fn flush(&self) {
        assert_eq!(self.cli(&["FLUSHALL"]).trim(), "OK");
    }

    /// Freezes the server (SIGSTOP): it takes connections and answers nothing, as a Redis
    /// that hangs does.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.path().join("redis.pid")).unwrap();
        let status = Command::new("kill")
            .args([signal, pid.trim()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Runs redis-cli against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.dir.path().join("redis.sock"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.running {
            // A paused server would not act on SIGTERM.
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("redis.pid")) {
                let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
            }
            let _ = Command::new(script("redis"))
                .args(["stop", &self.path()])
                .output();
        }
    }
}
