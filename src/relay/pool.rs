//! Connections to relay targets kept open between transactions, as Postfix's SMTP client
//! caches them (`smtp_connection_cache_time_limit`): a message that follows another to the same
//! target within the cache time skips the TCP connect, TLS handshake, greeting, EHLO and AUTH.
//! A cached connection that turns out to be closed is dropped and a fresh one opened; nothing
//! was sent on it yet, so nothing is lost.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::transport::smtp::client::AsyncSmtpConnection;

use super::target::Link;

struct Idle {
    target: usize,
    link: Link,
    since: Instant,
}

/// How connections are kept between transactions (`connection_cache_time`,
/// `max_idle_connections`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCache {
    pub keep: Duration,
    pub max_idle: usize,
}

pub(super) struct Pool {
    idle: Mutex<VecDeque<Idle>>,
    /// How long an idle connection is kept; zero keeps none.
    keep: Duration,
    /// Idle connections kept at most, over all targets; the oldest goes first.
    max_idle: usize,
    /// Time allowed for QUIT when a connection is let go.
    quit_timeout: Duration,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let idle = self.idle.lock().map_or(0, |i| i.len());
        f.debug_struct("Pool")
            .field("keep", &self.keep)
            .field("idle", &idle)
            .finish()
    }
}

impl Pool {
    pub(super) fn new(cache: ConnectionCache, quit_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(VecDeque::new()),
            keep: cache.keep,
            max_idle: cache.max_idle,
            quit_timeout,
        })
    }

    pub(super) fn settings(&self) -> ConnectionCache {
        ConnectionCache {
            keep: self.keep,
            max_idle: self.max_idle,
        }
    }

    /// The most recently used idle connection to `target`, if one is still within its time.
    pub(super) fn take(&self, target: usize) -> Option<Link> {
        let mut idle = self.idle.lock().ok()?;
        let at = idle
            .iter()
            .rposition(|i| i.target == target && i.since.elapsed() < self.keep)?;
        idle.remove(at).map(|i| i.link)
    }

    /// Keeps a connection whose transaction ended well for the next message to `target`, or
    /// ends it with QUIT when the cache is off or the connection is not `cacheable`.
    pub(super) fn put(self: &Arc<Self>, target: usize, link: Link, cacheable: bool) {
        if self.keep.is_zero() || self.max_idle == 0 || !cacheable {
            quit_later(link.conn, self.quit_timeout);
            return;
        }
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        if idle.len() >= self.max_idle
            && let Some(oldest) = idle.pop_front()
        {
            quit_later(oldest.link.conn, self.quit_timeout);
        }
        idle.push_back(Idle {
            target,
            link,
            since: Instant::now(),
        });
        drop(idle);
        // Once its time is up, an unused connection is closed properly.
        let pool = Arc::downgrade(self);
        let keep = self.keep;
        tokio::spawn(async move {
            tokio::time::sleep(keep).await;
            if let Some(pool) = pool.upgrade() {
                pool.expire();
            }
        });
    }

    fn expire(&self) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        while idle.front().is_some_and(|i| i.since.elapsed() >= self.keep) {
            if let Some(old) = idle.pop_front() {
                quit_later(old.link.conn, self.quit_timeout);
            }
        }
    }
}

/// QUIT in the background: nobody waits for the target's goodbye.
pub(super) fn quit_later(mut conn: AsyncSmtpConnection, timeout: Duration) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, conn.quit()).await;
    });
}
