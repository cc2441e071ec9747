//! The milter listening socket, written as Postfix writes it (`inet:HOST:PORT`,
//! `unix:/path`; Sendmail's `inet:PORT@HOST` is accepted too), and the listener that serves it.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use indymilter::{EitherListener, EitherStream, Listener};
use serde::{Deserialize, Deserializer};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::watch;
use tracing::{info, warn};

/// Where the milter listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenSocket {
    Inet { host: String, port: u16 },
    Unix(PathBuf),
}

impl Default for ListenSocket {
    fn default() -> Self {
        Self::Inet {
            host: "127.0.0.1".to_owned(),
            port: 7357,
        }
    }
}

impl fmt::Display for ListenSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet { host, port } if host.contains(':') => write!(f, "inet:[{host}]:{port}"),
            Self::Inet { host, port } => write!(f, "inet:{host}:{port}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Why a socket specification is not understood.
#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a milter socket: write inet:HOST:PORT (e.g. inet:127.0.0.1:7357) or unix:/path"
)]
pub struct SocketSpecError(String);

impl FromStr for ListenSocket {
    type Err = SocketSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || SocketSpecError(s.to_owned());
        if let Some(path) = s.strip_prefix("unix:").or_else(|| s.strip_prefix("local:")) {
            if !path.starts_with('/') {
                return Err(bad());
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        let rest = s
            .strip_prefix("inet:")
            .or_else(|| s.strip_prefix("inet6:"))
            .ok_or_else(bad)?;
        let (host, port) = if let Some((port, host)) = rest.split_once('@') {
            (host, port)
        } else if let Some(v6) = rest.strip_prefix('[') {
            let (host, port) = v6.split_once("]:").ok_or_else(bad)?;
            (host, port)
        } else {
            rest.rsplit_once(':').ok_or_else(bad)?
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Self::Inet { host, port })
    }
}

impl<'de> Deserialize<'de> for ListenSocket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The stream of one MTA connection.
pub type MilterStream = EitherStream<TcpStream, UnixStream>;

/// Closes a [`MilterListener`] (also when dropped).
#[derive(Debug)]
pub struct StopListening(watch::Sender<bool>);

impl StopListening {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// A listener that sets TCP_NODELAY on every accepted TCP socket (without it, Nagle's
/// algorithm and delayed ACKs stall every milter exchange ~40 ms) and that closes its socket
/// when told to stop, so that the MTA sees at once that nobody is listening.
pub struct MilterListener {
    inner: Option<EitherListener<TcpListener, UnixListener>>,
    unix_path: Option<PathBuf>,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Binds a unix socket that appears at `path` already with `mode`: it is made in a private
/// directory (mode 0700) beside `path`, given its mode there and renamed into place, so there
/// is no moment when the umask's mode lets others connect.
fn bind_with_mode(path: &std::path::Path, mode: u32) -> io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let private = parent.join(format!(".postern-socket.{}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

impl MilterListener {
    /// Binds the socket. A stale unix socket file is replaced and given `mode`. The handle
    /// returned with the listener closes it.
    pub async fn bind(spec: &ListenSocket, mode: u32) -> io::Result<(Self, StopListening)> {
        let (inner, unix_path) = match spec {
            ListenSocket::Inet { host, port } => {
                let listener = TcpListener::bind((host.as_str(), *port)).await?;
                (EitherListener::Tcp(listener), None)
            }
            ListenSocket::Unix(path) => {
                match std::fs::symlink_metadata(path) {
                    Ok(meta) if is_socket(&meta) => {
                        if UnixStream::connect(path).await.is_ok() {
                            return Err(io::Error::new(
                                io::ErrorKind::AddrInUse,
                                format!(
                                    "{} is in use by another running milter; stop it or choose another socket",
                                    path.display()
                                ),
                            ));
                        }
                        warn!(path = %path.display(), "replacing stale milter socket");
                        std::fs::remove_file(path)?;
                    }
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "{} exists and is not a socket; refusing to replace it",
                                path.display()
                            ),
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                let listener = bind_with_mode(path, mode)?;
                (EitherListener::Unix(listener), Some(path.clone()))
            }
        };
        info!(socket = %spec, "milter listening");
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let stop = async move {
            while !*stop_rx.borrow_and_update() {
                if stop_rx.changed().await.is_err() {
                    break;
                }
            }
        };
        let listener = Self {
            inner: Some(inner),
            unix_path,
            stop: Box::pin(stop),
        };
        Ok((listener, StopListening(stop_tx)))
    }

    /// The bound TCP address (useful when port 0 was asked for).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self.inner.as_ref()? {
            EitherListener::Tcp(l) => l.local_addr().ok(),
            EitherListener::Unix(_) => None,
        }
    }

    fn close(&mut self) {
        if self.inner.take().is_some()
            && let Some(path) = &self.unix_path
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

impl Drop for MilterListener {
    fn drop(&mut self) {
        self.close();
    }
}

impl Listener for MilterListener {
    type Io = MilterStream;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        if self.inner.is_some() && self.stop.as_mut().poll(cx).is_ready() {
            info!("milter stopped accepting connections");
            self.close();
        }
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Pending;
        };
        match inner.poll_accept(cx) {
            Poll::Ready(Ok(EitherStream::Tcp(stream))) => {
                if let Err(e) = stream.set_nodelay(true) {
                    warn!(error = %e, "cannot set TCP_NODELAY on milter connection");
                }
                Poll::Ready(Ok(EitherStream::Tcp(stream)))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postfix_and_sendmail_forms() {
        let inet = |h: &str, p| ListenSocket::Inet {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            "inet:127.0.0.1:7357".parse::<ListenSocket>().unwrap(),
            inet("127.0.0.1", 7357)
        );
        assert_eq!(
            "inet:7357@localhost".parse::<ListenSocket>().unwrap(),
            inet("localhost", 7357)
        );
        assert_eq!(
            "inet:[::1]:7357".parse::<ListenSocket>().unwrap(),
            inet("::1", 7357)
        );
        assert_eq!(
            "unix:/run/postern/milter.sock"
                .parse::<ListenSocket>()
                .unwrap(),
            ListenSocket::Unix("/run/postern/milter.sock".into())
        );
        assert_eq!(
            "inet:[::1]:7357"
                .parse::<ListenSocket>()
                .unwrap()
                .to_string(),
            "inet:[::1]:7357"
        );
    }

    #[test]
    fn refuses_malformed_specs() {
        for bad in [
            "127.0.0.1:7357",
            "inet:host",
            "inet::7357",
            "inet:h:0",
            "unix:relative",
            "inet:h:99999",
        ] {
            assert!(bad.parse::<ListenSocket>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn stale_unix_socket_is_replaced_with_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        // A socket file nobody listens on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let spec = ListenSocket::Unix(path.clone());
        let (l, _stop) = MilterListener::bind(&spec, 0o600).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // It was made in a private directory and moved into place: it works, and nothing
        // else is left beside it.
        UnixStream::connect(&path).await.unwrap();
        let beside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(beside, ["m.sock"]);
        drop(l);
        assert!(!path.exists(), "socket file removed on close");
    }

    #[tokio::test]
    async fn live_unix_socket_is_not_stolen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sock");
        let _live = UnixListener::bind(&path).unwrap();
        let spec = ListenSocket::Unix(path.clone());
        let err = MilterListener::bind(&spec, 0o600).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[tokio::test]
    async fn regular_file_is_not_replaced() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let spec = ListenSocket::Unix(file.path().to_owned());
        let err = MilterListener::bind(&spec, 0o600).await.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }
}
