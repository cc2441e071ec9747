//! DKIM keys with their records served on loopback, and an independent verifier (dkimpy), from
//! `integration/dkim`. Dropping it stops the DNS server.

use std::path::PathBuf;
use std::process::Command;

use super::{free_port, run_script, script};

pub struct DkimKeys {
    pub dir: tempfile::TempDir,
    /// The DNS server's port on 127.0.0.1 (UDP and TCP).
    pub port: u16,
}

impl DkimKeys {
    /// Makes an RSA and an Ed25519 key, published as `rsa._domainkey.signer.test` and
    /// `ed25519._domainkey.signer.test`.
    pub fn start() -> Self {
        super::install_deps();
        let dir = tempfile::Builder::new()
            .prefix("postern-dkim.")
            .tempdir()
            .unwrap();
        let port = free_port();
        run_script(
            "dkim",
            &[
                "start",
                &dir.path().display().to_string(),
                &port.to_string(),
            ],
        );
        Self { dir, port }
    }

    /// The key file of `kind` (`rsa` or `ed25519`).
    pub fn key(&self, kind: &str) -> PathBuf {
        self.dir.path().join(format!("{kind}.pem"))
    }

    /// Verifies every DKIM-Signature of `message`: whether all pass, and the verifier's words.
    pub fn verify(&self, message: &[u8]) -> (bool, String) {
        let file = self.dir.path().join("message.eml");
        std::fs::write(&file, message).unwrap();
        let out = Command::new(script("dkim"))
            .args([
                "verify",
                &self.port.to_string(),
                &file.display().to_string(),
            ])
            .output()
            .unwrap();
        super::outcome(&out)
    }
}

impl DkimKeys {
    /// `message` signed by its sender with dkimpy (d=`domain`, s=sel, the sender's key, which
    /// sender.test, quarantine.test and report.test publish).
    pub fn sign_as(&self, domain: &str, message: &[u8]) -> Vec<u8> {
        let file = self.dir.path().join("unsigned.eml");
        std::fs::write(&file, message).unwrap();
        let key = self.key("sender").display().to_string();
        self.script(&["sign", &key, domain, "sel", &file.display().to_string()])
    }

    /// `message` ARC-sealed by a forwarder before Postern (d=forwarder.test, dkimpy),
    /// recording its Authentication-Results field of authserv-id `srv_id`.
    pub fn forwarded(&self, srv_id: &str, message: &[u8]) -> Vec<u8> {
        let file = self.dir.path().join("forwarded.eml");
        std::fs::write(&file, message).unwrap();
        let key = self.key("forwarder").display().to_string();
        self.script(&[
            "arc-sign",
            &key,
            "forwarder.test",
            "sel",
            srv_id,
            &file.display().to_string(),
        ])
    }

    /// Verifies the ARC chain of `message` with dkimpy: whether cv=pass, and its words.
    pub fn arc_verify(&self, message: &[u8]) -> (bool, String) {
        let file = self.dir.path().join("sealed.eml");
        std::fs::write(&file, message).unwrap();
        let out = Command::new(script("dkim"))
            .args([
                "arc-verify",
                &self.port.to_string(),
                &file.display().to_string(),
            ])
            .output()
            .unwrap();
        super::outcome(&out)
    }

    fn script(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(script("dkim")).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "dkim {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for DkimKeys {
    fn drop(&mut self) {
        run_script("dkim", &["stop", &self.dir.path().display().to_string()]);
    }
}
