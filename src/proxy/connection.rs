//! Framing of one client connection: a plain or TLS stream, a bounded read buffer that yields
//! command lines and raw DATA bytes, and a write buffer flushed when the client waits for
//! answers (so that replies to a pipelined group leave in one packet).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::engine::TlsInfo;

/// Room made in the read buffer before each read from the socket.
const READ_CHUNK: usize = 8 * 1024;

/// The client's socket, before or after TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Taken out during the TLS handshake.
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// Why reading from the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("client closed the connection")]
    Closed,
    #[error("client timed out")]
    Timeout,
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// One client connection.
pub struct Connection {
    stream: Stream,
    /// Bytes read but not yet consumed.
    input: Vec<u8>,
    /// Replies not yet sent.
    output: Vec<u8>,
    /// How long a write may wait for a client that does not read.
    write_timeout: Duration,
}

impl Connection {
    pub fn new(stream: Stream, write_timeout: Duration) -> Self {
        Self {
            stream,
            input: Vec::new(),
            output: Vec::with_capacity(512),
            write_timeout,
        }
    }

    /// Changes the write timeout (shorter while the proxy is under stress).
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = timeout;
    }

    /// True when the client sent more than has been consumed: it pipelined.
    pub fn has_pending_input(&self) -> bool {
        !self.input.is_empty()
    }

    /// Forgets whatever the client sent beyond the current command (STARTTLS: what was
    /// sent in plaintext behind it could have been injected by a man in the middle).
    /// Returns how many bytes were thrown away.
    /// Whether the connection is plain TCP (no TLS).
    pub fn is_plain(&self) -> bool {
        matches!(self.stream, Stream::Plain(_))
    }

    pub fn discard_pending_input(&mut self) -> usize {
        let n = self.input.len();
        self.input.clear();
        n
    }

    /// Queues a reply line set (each line already ends with CRLF).
    pub fn queue(&mut self, reply: &[u8]) {
        self.output.extend_from_slice(reply);
    }

    /// Sends queued replies; a client that does not take them within the write timeout
    /// (it pipelines without reading) is an error.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.output.is_empty() {
            return Ok(());
        }
        let writing = async {
            self.stream.write_all(&self.output).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, writing).await {
            Ok(written) => written?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read its replies",
                ));
            }
        }
        self.output.clear();
        Ok(())
    }

    /// Waits up to `wait` for the client to send anything, without consuming it. True when
    /// it did (an early talker, when called before the banner).
    pub async fn peek_input(&mut self, wait: Duration) -> bool {
        if !self.input.is_empty() {
            return true;
        }
        let filled = if wait.is_zero() {
            // No pause: only what has already arrived counts, looked at once. A zero timeout
            // would wait for the timer's next tick, a millisecond per connection.
            tokio::select! {
                biased;
                read = self.fill() => Some(read),
                () = std::future::ready(()) => None,
            }
        } else {
            tokio::time::timeout(wait, self.fill()).await.ok()
        };
        matches!(filled, Some(Ok(n)) if n > 0)
    }

    /// The next line, without its line end (LF or CRLF), at most `limit` bytes, whole within
    /// `timeout` (a deadline for the line, which a client sending it a byte at a time cannot
    /// stretch). Queued replies are sent first when no input is waiting: the client is
    /// waiting for them. A too long line is consumed up to its end and reported.
    pub async fn read_line(
        &mut self,
        limit: usize,
        timeout: Duration,
    ) -> Result<Vec<u8>, ReadError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut too_long = false;
        loop {
            if let Some(end) = self.input.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.input.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if too_long || line.len() > limit {
                    return Err(ReadError::TooLong(limit));
                }
                return Ok(line);
            }
            if self.input.len() > limit {
                // Keep reading to the end of the line, holding none of it.
                too_long = true;
                self.input.clear();
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            self.receive(left).await?;
        }
    }

    /// Makes sure some input is buffered for the DATA reader: what is there, or else whatever
    /// the client sends next (waiting at most `timeout`). Read it with
    /// [`Connection::buffered`] and call [`Connection::consume`] with what was used.
    pub async fn wait_input(&mut self, timeout: Duration) -> Result<(), ReadError> {
        if self.input.is_empty() {
            self.receive(timeout).await?;
        }
        Ok(())
    }

    /// The input buffered and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.input
    }

    /// Sends queued replies (the client waits for them before it sends more), then reads
    /// what the client sends next, waiting at most `timeout`.
    async fn receive(&mut self, timeout: Duration) -> Result<(), ReadError> {
        self.flush().await?;
        if timeout.is_zero() {
            return Err(ReadError::Timeout);
        }
        match tokio::time::timeout(timeout, self.fill()).await {
            Err(_) => Err(ReadError::Timeout),
            Ok(Ok(0)) => Err(ReadError::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Drops the first `n` bytes of buffered input.
    pub fn consume(&mut self, n: usize) {
        self.input.drain(..n);
    }

    async fn fill(&mut self) -> io::Result<usize> {
        if self.input.capacity() == 0
            && let Stream::Plain(tcp) = &self.stream
        {
            // A client that has not said anything yet holds no read buffer: its first bytes
            // are waited for before one is allocated (a TLS stream has its own buffers).
            tcp.readable().await?;
        }
        if self.input.is_empty() && self.input.capacity() > 4 * READ_CHUNK {
            // A large pipelined burst is over: an idle connection holds little memory.
            self.input = Vec::with_capacity(READ_CHUNK);
        }
        self.input.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.input).await
    }

    /// Performs the TLS handshake (after STARTTLS, or at once for implicit TLS).
    pub async fn start_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> Result<TlsInfo, String> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err("TLS is already active".to_owned());
        };
        let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp).into_fallible()).await {
            Err(_) => return Err(format!("TLS handshake not finished within {timeout:?}")),
            Ok(Err((e, tcp))) => {
                // Plain text again, for a recovery answer (tls_fail_recovery_timeout).
                self.stream = Stream::Plain(tcp);
                self.discard_pending_input();
                return Err(format!("TLS handshake failed: {e}"));
            }
            Ok(Ok(tls)) => tls,
        };
        let (_, state) = tls.get_ref();
        let info = TlsInfo {
            version: state
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS")
                .replace('_', "."),
            cipher: state
                .negotiated_cipher_suite()
                .and_then(|c| c.suite().as_str())
                .unwrap_or("unknown")
                .to_owned(),
            cert_subject: state
                .peer_certificates()
                .filter(|c| !c.is_empty())
                .map(|_| "verified client certificate".to_owned()),
        };
        self.stream = Stream::Tls(Box::new(tls));
        Ok(info)
    }

    /// Closes the connection after sending what is queued.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(self.write_timeout, self.stream.shutdown()).await;
    }
}

/// Shared TLS acceptor, replaced whole when certificates are reloaded.
pub type SharedAcceptor = Arc<arc_swap::ArcSwapOption<TlsAcceptor>>;
