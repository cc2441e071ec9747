//! systemd's readiness protocol (sd_notify): with `Type=notify`, systemd passes a datagram
//! socket in `NOTIFY_SOCKET`; Postern says `READY=1` once its listeners are bound, and
//! `RELOADING=1` … `READY=1` around a reload, so `systemctl reload` waits for it. Without the
//! variable nothing is sent. A failure to send is logged, never fatal.

use std::os::unix::net::{SocketAddr, UnixDatagram};

use tracing::warn;

/// Sends `state` (lines of `KEY=value`) to systemd, if it asked for them.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = address(&path).and_then(|addr| {
        let socket = UnixDatagram::unbound()?;
        socket.send_to_addr(state.as_bytes(), &addr)
    });
    if let Err(e) = sent {
        warn!(socket = %path, error = %e, "cannot tell systemd our state");
    }
}

/// Set once the door's listeners are bound (`/readyz`).
static SERVING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Postern is serving: its listeners are bound.
pub fn ready() {
    SERVING.store(true, std::sync::atomic::Ordering::Relaxed);
    notify("READY=1\nSTATUS=serving");
}

/// Whether [`ready`] was said: the door's listeners are bound.
pub fn serving() -> bool {
    SERVING.load(std::sync::atomic::Ordering::Relaxed)
}

/// A reload starts; [`ready`] ends it. (Type=notify-reload would also want MONOTONIC_USEC,
/// a clock std does not expose; the shipped units use Type=notify with ExecReload.)
pub fn reloading() {
    notify("RELOADING=1");
}

/// A path (`/run/...`) or an abstract name (`@...`).
fn address(path: &str) -> std::io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}
