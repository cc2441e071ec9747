//! The stream lettre is given for a connection to a relay target: it replays a greeting
//! read before (STARTTLS, or the look Postern takes to decide on it) and holds writes back
//! until the next read, so that what lettre writes apart leaves in as few packets as possible.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// `inner` for lettre: `greeting` read first, writes held until a read (see [`Coalesced`]),
/// nothing more written once `stop` is pulled.
pub fn for_lettre<S>(
    greeting: Vec<u8>,
    inner: S,
    peer: io::Result<SocketAddr>,
    stop: Stop,
) -> Box<dyn AsyncTokioStream>
where
    S: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static,
{
    Box::new(Replayed::new(greeting, Coalesced::new(inner, stop), peer))
}

/// Ends a connection's writing for good: a message that cannot be read to its end must not
/// be ended either, and lettre writes the end-of-data dot after its last piece whatever
/// happened. Once pulled, every write fails, what is held is never sent, and the connection
/// can only be dropped (the target then discards the unfinished message).
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn pull(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_pulled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn stopped() -> io::Error {
    io::Error::other("the message could not be read to its end: it is not ended")
}

/// Writes are gathered, not sent, until the stream is read (or [`HOLD`] bytes wait): lettre
/// writes and flushes every piece of a message, then the end-of-data dot, each on its own,
/// which made a packet (and a wake-up of the target) of each. lettre reads a reply after
/// everything the target must see, so a held write never waits on the target: the read sends
/// it first. Shutdown sends what is held, too.
pub struct Coalesced<S> {
    inner: S,
    held: Vec<u8>,
    sent: usize,
    stop: Stop,
}

/// Held bytes past which a write or flush sends them at once.
const HOLD: usize = 64 * 1024;

impl<S> Coalesced<S> {
    pub fn new(inner: S, stop: Stop) -> Self {
        Self {
            inner,
            held: Vec::new(),
            sent: 0,
            stop,
        }
    }
}

impl<S: AsyncWrite + Unpin> Coalesced<S> {
    /// Sends everything held, then flushes the stream under it.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stop.is_pulled() {
            self.held.clear();
            return Poll::Ready(Err(stopped()));
        }
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.stop.is_pulled() {
            return Poll::Ready(Err(stopped()));
        }
        if self.held.len() >= HOLD {
            ready!(self.poll_send(cx))?;
        }
        self.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.stop.is_pulled() || self.held.len() >= HOLD {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream that yields `prefix` before what it reads: the SMTP library reads a greeting on a
/// connection that was greeted before (before STARTTLS, or read here to decide on it).
struct Replayed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
    peer: io::Result<SocketAddr>,
}

impl<S> Replayed<S> {
    fn new(prefix: Vec<u8>, inner: S, peer: io::Result<SocketAddr>) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
            peer,
        }
    }
}

impl<S> fmt::Debug for Replayed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replayed").finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Sync + Unpin> AsyncTokioStream for Replayed<S> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.peer {
            Ok(a) => Ok(*a),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Flushed writes wait for the next read and then leave together; a large one leaves at
    /// once; shutdown sends what is held.
    #[tokio::test]
    async fn writes_leave_together_when_the_stream_is_read() {
        let (ours, mut target) = tokio::io::duplex(1 << 20);
        let mut stream = Coalesced::new(ours, Stop::default());
        for piece in [&b"DATA-1\r\n"[..], b"line\r\n", b"\r\n.\r\n"] {
            stream.write_all(piece).await.unwrap();
            stream.flush().await.unwrap();
        }
        let mut got = [0u8; 64];
        let nothing_yet =
            tokio::time::timeout(std::time::Duration::from_millis(50), target.read(&mut got)).await;
        assert!(nothing_yet.is_err(), "held until a read");
        target.write_all(b"250 ok\r\n").await.unwrap();
        let mut reply = [0u8; 8];
        stream.read_exact(&mut reply).await.unwrap();
        let n = target.read(&mut got).await.unwrap();
        assert_eq!(
            &got[..n],
            b"DATA-1\r\nline\r\n\r\n.\r\n",
            "one write, in order"
        );

        // Past HOLD, what is held goes out with the next write, without a read.
        let big = vec![b'x'; HOLD + 10];
        stream.write_all(&big).await.unwrap();
        stream.write_all(b"more").await.unwrap();
        stream.flush().await.unwrap();
        let mut seen = vec![0u8; big.len()];
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            target.read_exact(&mut seen),
        )
        .await
        .expect("sent without a read")
        .unwrap();

        stream.write_all(b"QUIT\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        target.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"moreQUIT\r\n", "shutdown sends what is held");
    }

    /// Once the stop is pulled, nothing more leaves: not what is held, not the dot after.
    #[tokio::test]
    async fn a_pulled_stop_sends_nothing_more() {
        let (ours, mut target) = tokio::io::duplex(1 << 20);
        let stop = Stop::default();
        let mut stream = Coalesced::new(ours, stop.clone());
        stream.write_all(b"partial line\r\n").await.unwrap();
        stop.pull();
        assert!(stream.write_all(b"\r\n.\r\n").await.is_err());
        assert!(stream.flush().await.is_err());
        assert!(stream.shutdown().await.is_err());
        drop(stream);
        let mut seen = Vec::new();
        target.read_to_end(&mut seen).await.unwrap();
        assert!(seen.is_empty(), "{seen:?}");
    }
}
