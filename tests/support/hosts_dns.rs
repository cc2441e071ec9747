//! Host names and PTR records served on loopback by dnsmasq, from `integration/hosts-dns`.
//! Dropping it stops the server.

use super::{free_port, run_script};

pub struct HostsDns {
    dir: tempfile::TempDir,
    /// The server's port on 127.0.0.1 (UDP and TCP).
    pub port: u16,
}

impl HostsDns {
    /// Serves `records`, each a dnsmasq option line (`host-record=NAME,ADDR` gives A and PTR,
    /// `ptr-record=REVERSE,NAME` a PTR alone).
    pub fn start(records: &[&str]) -> Self {
        super::install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-hosts-dns.")
            .tempdir()
            .unwrap();
        let port = free_port();
        let path = dir.path().display().to_string();
        let port_text = port.to_string();
        let mut args = vec!["start", path.as_str(), port_text.as_str()];
        args.extend_from_slice(records);
        run_script("hosts-dns", &args);
        Self { dir, port }
    }

    /// The queries dnsmasq logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for HostsDns {
    fn drop(&mut self) {
        run_script(
            "hosts-dns",
            &["stop", &self.dir.path().display().to_string()],
        );
    }
}
