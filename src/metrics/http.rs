//! `GET /metrics` over a small HTTP/1.1 server of its own: bounded slots, timeouts and head
//! size, Basic credentials compared in constant time.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prometheus_client::encoding::prometheus_text;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use super::Metrics;

/// Settings of `[metrics]`; no endpoint without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    /// `user:password` a scraper must give (HTTP Basic), read from `basic_auth_file`.
    pub basic_auth: Option<BasicAuth>,
}

/// The credentials of the endpoint and where they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub file: PathBuf,
    /// The Basic token (base64 of `user:password`) a scraper must send.
    token: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl BasicAuth {
    /// Whether an `Authorization` value carries these credentials: the scheme in any case
    /// (RFC 9110), the token compared through digests of equal length in constant time, so
    /// the time taken tells nothing of how much of it was right.
    fn admits(&self, given: Option<&str>) -> bool {
        let Some((scheme, token)) = given.and_then(|g| g.trim().split_once(' ')) else {
            return false;
        };
        let digest = |s: &str| Sha256::digest(s.as_bytes());
        let same: bool = digest(token.trim())
            .as_slice()
            .ct_eq(digest(&self.token).as_slice())
            .into();
        scheme.eq_ignore_ascii_case("basic") & same
    }

    /// Reads `user:password` (first line) from `file`.
    pub fn load(file: PathBuf) -> Result<Self, String> {
        let text = crate::secret_file::read_to_string(&file, "metrics credentials file")
            .map_err(|e| e.to_string())?;
        let line = text.lines().next().unwrap_or("").trim_end();
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() && !password.is_empty() => Ok(Self {
                token: STANDARD.encode(line),
                file,
            }),
            _ => Err(format!(
                "{} must hold one line user:password",
                file.display()
            )),
        }
    }
}

/// The longest request head read from a scraper.
const MAX_REQUEST: usize = 8192;
/// How long a scraper has to send its request head (a scraper sends it at once; an idle
/// connection must not hold a slot for long).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a scraper has for the whole exchange, reading the response included.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// Scrapers served at once (Prometheus scrapes a target over one connection at a time): while
/// that many are connected, a further connection is answered 503 at once and closed, so that
/// idle or slow connections can neither pile up tasks and buffers nor make a scraper wait.
const MAX_SCRAPERS: usize = 16;

/// The answer to a connection beyond [`MAX_SCRAPERS`].
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 2\r\nConnection: close\r\n\r\nevery metrics slot is busy, try again\n";

/// Binds `[metrics] listen`.
pub async fn bind(settings: &MetricsSettings) -> anyhow::Result<TcpListener> {
    TcpListener::bind(settings.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for metrics on {}: {e}", settings.listen))
}

/// Serves `GET /metrics` on `listener` for as long as the process runs.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, auth: Option<BasicAuth>) {
    if let Ok(addr) = listener.local_addr() {
        info!(listen = %addr, "metrics listening");
    }
    let auth = Arc::new(auth);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPERS));
    let mut busy = crate::logging::Throttle::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(n) = busy.due(Duration::from_secs(60), 1) {
                warn!(
                    limit = MAX_SCRAPERS,
                    times = n,
                    "metrics: every scraper slot is taken; further connections are answered 503 (check what holds them)"
                );
            }
            refuse_busy(&stream);
            continue;
        };
        let (metrics, auth) = (metrics.clone(), auth.clone());
        tokio::spawn(async move {
            let exchange = answer(stream, &metrics, auth.as_ref().as_ref());
            match tokio::time::timeout(EXCHANGE_TIMEOUT, exchange).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => info!(client = %peer, error = %e, "metrics request failed"),
                Err(_) => info!(client = %peer, "metrics request took too long, closed"),
            }
            drop(slot);
        });
    }
}

/// Answers [`BUSY`] without waiting: what the client sent already is read (closing on unread
/// data would reset the connection before the answer is read), and what the socket does not
/// take at once is not sent. Costs no task and no buffer beyond this call.
fn refuse_busy(stream: &TcpStream) {
    let mut scratch = [0u8; 1024];
    for _ in 0..(MAX_REQUEST / scratch.len()) {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
    let _ = stream.try_write(BUSY);
}

/// One HTTP request, answered and closed.
async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    auth: Option<&BasicAuth>,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "",
                (String::new(), 0),
            )
            .await;
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return respond(&mut stream, "408 Request Timeout", "", (String::new(), 0)).await,
    };
    let (status, extra, body) = route(&head, metrics, auth);
    // HEAD: the same head, no body.
    let body = if head.starts_with("HEAD ") {
        (String::new(), body.len())
    } else {
        let len = body.len();
        (body, len)
    };
    respond(&mut stream, status, extra, body).await
}

/// The status line, extra header lines and body for a request head.
fn route(
    head: &str,
    metrics: &Metrics,
    auth: Option<&BasicAuth>,
) -> (&'static str, &'static str, String) {
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or("");
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if let Some(auth) = auth {
        let given = lines.find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim())
        });
        if !auth.admits(given) {
            return (
                "401 Unauthorized",
                "WWW-Authenticate: Basic realm=\"postern metrics\"\r\n",
                "authentication required\n".to_owned(),
            );
        }
    }
    match (method, path.split('?').next().unwrap_or("")) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", "", metrics.render()),
        ("GET" | "HEAD", _) => ("404 Not Found", "", "try /metrics\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "only GET /metrics is served\n".to_owned(),
        ),
    }
}

/// Reads up to the blank line that ends the request head; `None` when it is longer than
/// [`MAX_REQUEST`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(String::from_utf8_lossy(&buf[..end]).into_owned()));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Writes the response: `body` is what is sent and the length the head announces (a HEAD
/// request's body is not sent).
async fn respond(
    stream: &mut TcpStream,
    status: &str,
    extra: &str,
    (body, length): (String, usize),
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {length}\r\n{extra}Connection: close\r\n\r\n",
        prometheus_text::CONTENT_TYPE,
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed_and_authenticated() {
        let m = Metrics::new(crate::engine::events::DoorKind::Milter);
        let (status, _, body) = route("GET /metrics HTTP/1.1\r\nHost: x", &m, None);
        assert_eq!(status, "200 OK");
        assert!(body.contains("postern_build_info"));
        assert_eq!(route("GET / HTTP/1.1", &m, None).0, "404 Not Found");
        assert_eq!(
            route("POST /metrics HTTP/1.1", &m, None).0,
            "405 Method Not Allowed"
        );
        let auth = BasicAuth {
            file: PathBuf::new(),
            token: STANDARD.encode("prom:s3cret"),
        };
        assert_eq!(
            route("GET /metrics HTTP/1.1", &m, Some(&auth)).0,
            "401 Unauthorized"
        );
        let good = format!(
            "GET /metrics HTTP/1.1\r\nauthorization: Basic {}",
            STANDARD.encode("prom:s3cret")
        );
        assert_eq!(route(&good, &m, Some(&auth)).0, "200 OK");
        let busy = String::from_utf8_lossy(BUSY);
        let (head, body) = busy.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        // The scheme in any case; a wrong or truncated token, another scheme: refused.
        let token = STANDARD.encode("prom:s3cret");
        for (value, admitted) in [
            (format!("BASIC {token}"), true),
            (format!("basic  {token} "), true),
            (format!("Basic {}", &token[..token.len() - 1]), false),
            (format!("Basic {}", STANDARD.encode("prom:s3crex")), false),
            (format!("Bearer {token}"), false),
            (token.clone(), false),
        ] {
            assert_eq!(auth.admits(Some(&value)), admitted, "{value}");
        }
    }
}
