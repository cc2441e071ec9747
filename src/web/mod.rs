//! The HTTP server of a running Postern: `GET /metrics` (Prometheus), `/healthz` (alive),
//! `/readyz` (listeners bound, relay targets and stores reachable) and the web console, on
//! axum over hyper. One router serves every HTTP listener (`[metrics] listen`, `[console]
//! listen`; one listener when both name the same address), with TLS where the console has a
//! certificate. Every connection is bounded: slots, head size, header count, body size and
//! time.
//!
//! `metrics.rs` the Prometheus endpoint and its credentials; `health.rs` what ready means;
//! `console/` the pages for people.

pub mod console;
pub mod health;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;
use tracing::{info, warn};

pub use metrics::{BasicAuth, MetricsSettings, routes as metrics_routes};

/// The longest request head (request line and header fields) a client may send.
const MAX_HEAD: usize = 16 * 1024;
/// The most header fields in one request.
const MAX_HEADERS: usize = 64;
/// The longest request body: the console's forms, a configuration published from it among
/// them.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a client has to send a request head once it starts one, and to finish TLS.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection lives, keep-alive included: a browser opens another.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection past its time has to finish the request in progress.
const CLOSING_GRACE: Duration = Duration::from_secs(10);
/// Connections served at once per listener: beyond them a connection is answered 503 at
/// once and closed, so that idle or slow clients can neither pile up tasks and buffers nor
/// make a scraper wait.
const MAX_CONNECTIONS: usize = 64;

/// The answer to a connection beyond [`MAX_CONNECTIONS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 35\r\nRetry-After: 2\r\nConnection: close\r\n\r\nevery HTTP slot is busy, try again\n";

/// The client's address, for the handlers (the console limits failed logins by it).
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// Whether a request came over TLS (the console's cookies say `Secure` then).
#[derive(Clone, Copy, Debug)]
pub struct OverTls(pub bool);

/// One HTTP listener: where, and with which certificate when it speaks TLS.
pub struct Listener {
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Binds `addr`; `what` names it in the error.
pub async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))
}

/// The answer to a path no route serves.
pub async fn not_found() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_FOUND,
        "not found: Postern serves /metrics, /healthz, /readyz and, with [console], /login\n",
    )
}

/// Serves `router` on `listener` for as long as the process runs.
pub async fn serve(listener: Listener, router: Router) {
    let Listener { listener, tls } = listener;
    let router = router.layer(DefaultBodyLimit::max(MAX_BODY));
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(listen = %addr, %scheme, "HTTP listening");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut busy = crate::logging::Throttle::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(n) = busy.due(Duration::from_secs(60), 1) {
                warn!(
                    limit = MAX_CONNECTIONS,
                    times = n,
                    "HTTP: every connection slot is taken; further connections are answered 503 (check what holds them)"
                );
            }
            refuse_busy(&stream);
            continue;
        };
        let (router, tls) = (router.clone(), tls.clone());
        tokio::spawn(async move {
            let served = async {
                match tls {
                    None => connection(stream, peer, false, router).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => connection(stream, peer, true, router).await,
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                            Err(_) => Err("no TLS handshake in time".to_owned()),
                        }
                    }
                }
            };
            if let Err(e) = served.await {
                info!(client = %peer, error = %e, "HTTP connection failed");
            }
            drop(slot);
        });
    }
}

/// Serves the requests of one connection.
async fn connection<S>(stream: S, peer: SocketAddr, tls: bool, router: Router) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        request.extensions_mut().insert(OverTls(tls));
        router.clone().oneshot(request)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // Past its time a connection finishes the request in progress and closes (a scrape is
    // never cut in the middle); one that does not finish within the grace is dropped.
    match tokio::time::timeout(CONNECTION_TIMEOUT, conn.as_mut()).await {
        Ok(served) => served.map_err(|e| e.to_string()),
        Err(_) => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSING_GRACE, conn).await {
                Ok(served) => served.map_err(|e| e.to_string()),
                Err(_) => Err("the last request did not finish in time; closed".to_owned()),
            }
        }
    }
}

/// Answers [`BUSY`] without waiting: what the client sent already is read (closing on unread
/// data would reset the connection before the answer is read), and what the socket does not
/// take at once is not sent. Costs no task and no buffer beyond this call.
fn refuse_busy(stream: &TcpStream) {
    let mut scratch = [0u8; 1024];
    for _ in 0..(MAX_HEAD / scratch.len()) {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(BUSY);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_answer_announces_its_length() {
        let busy = String::from_utf8_lossy(BUSY);
        let (head, body) = busy.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
