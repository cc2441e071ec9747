//! The systemd readiness protocol: with NOTIFY_SOCKET set, as under `Type=notify`, Postern
//! says READY=1 once it listens, and RELOADING=1 then READY=1 around a reload.

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::free_port;
use crate::support::proxy::postern;

/// The Postern process, stopped when the test ends however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_proxy_tells_systemd_when_it_is_ready_and_when_it_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = [\"127.0.0.1:{}\"]\n\
             [[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\nport = {}\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let child = postern()
        .args(["proxy", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let running = Running(child);
    assert!(next(&socket).contains("READY=1"));
    signal(&running.0, "HUP");
    assert_eq!(next(&socket), "RELOADING=1");
    assert!(next(&socket).contains("READY=1"));
    signal(&running.0, "TERM");
}
