//! Delivery to relay targets (lettre): the proxy door hands every accepted message on here, in
//! priority order, before it says 250 to its client (invariant 1). A target that cannot be
//! reached, refuses with 4xx or breaks mid-way is skipped for the next; when every target
//! fails the caller gets an error and answers 4xx, so the client keeps the message. The engine
//! delivers here too, for `divert` rules, through the targets a rule names.

mod lines;
mod pool;
mod target;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tracing::{debug, info, warn};

use pool::{Pool, quit_later};

pub use target::{RelayAuth, RelayTarget, Security, TargetError};

/// An SMTP reply from a relay target, flattened to one line for the client:
/// `550 5.1.1 <x@example.org>: Recipient address rejected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetReply {
    pub code: u16,
    /// Enhanced status code and text, printable ASCII only, at most 500 characters.
    pub text: String,
}

impl TargetReply {
    fn from_response(r: &Response) -> Self {
        let code: u16 = r.code().to_string().parse().unwrap_or(451);
        Self::new(code, &r.message().collect::<Vec<_>>().join(" "))
    }

    fn from_error(e: &lettre::transport::smtp::Error) -> Option<Self> {
        let code: u16 = e.status()?.to_string().parse().ok()?;
        let text = std::error::Error::source(e)
            .map(|s| s.to_string())
            .unwrap_or_default();
        Some(Self::new(code, &text))
    }

    fn new(code: u16, text: &str) -> Self {
        let text: String = text
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
            .take(500)
            .collect();
        Self { code, text }
    }

    /// True for 2xx and 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// The enhanced status code at the start of the text, if any (`5.1.1`).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.text.split(' ').next()?;
        let mut parts = first.split('.');
        let ok = parts.next().is_some_and(|c| c.len() == 1)
            && parts.clone().count() == 2
            && first.bytes().all(|b| b.is_ascii_digit() || b == b'.');
        ok.then_some(first)
    }
}

impl fmt::Display for TargetReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Outbound settings (`[delivery]`) and the relay targets (`[[relay_target]]`), by priority.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Highest priority (1) first; equal priorities in configuration order.
    pub targets: Vec<RelayTarget>,
    /// Name Postern gives in EHLO.
    pub helo_name: String,
    /// Seed "Server connection timeout": TCP connect, TLS and greeting.
    pub connection_timeout: Duration,
    /// Seed "Server protocol timeout": each command's reply.
    pub protocol_timeout: Duration,
    /// Seed "Server DATA timeout": the reply to the end of the message (plus one second per
    /// megabyte sent, so that a large message on a slow link is not cut off).
    pub data_timeout: Duration,
    /// Idle connections kept for the next message (`connection_cache_time`).
    pool: Arc<Pool>,
}

/// Why a transaction could not be opened or a message not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A target answered the sender with a permanent refusal; the client should see it.
    #[error("relay target {target} refused: {reply}")]
    Refused { target: String, reply: TargetReply },
    /// No target could take the transaction; each one's reason, in order.
    #[error("no relay target is available: {}", .0.join("; "))]
    Unavailable(Vec<String>),
    /// A target was sent the whole message and then gave no answer: it may have taken it, so
    /// no other target may be tried (invariant 1).
    #[error("relay target {target} gave no answer to the end of the message: {why}")]
    Uncertain { target: String, why: String },
}

/// How handing a message to one target failed; which kind decides whether another target may
/// be tried with it.
#[derive(Debug, thiserror::Error)]
pub enum DataFailure {
    /// Nothing of the message was sent: the connection broke or the target refused up to and
    /// including the DATA command. Another target (or a fresh connection) may take it.
    #[error("before the message was sent: {0}")]
    NotSent(TargetError),
    /// The target answered the end of the message with 4xx or 5xx: it did not take it.
    #[error("refused the message: {0}")]
    Refused(TargetReply),
    /// The message (or part of it) was sent and no answer came: the target may have
    /// committed it. Sending it anywhere else could deliver it twice.
    #[error("no answer after the message was sent: {0}")]
    Uncertain(TargetError),
}

/// The sender and MAIL parameters of one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    /// Parameters passed on to the target when it supports them (`BODY=8BITMIME`,
    /// `SMTPUTF8`, `SIZE=n`).
    pub params: Vec<String>,
}

impl Envelope {
    /// The envelope for a whole message sent on by Postern itself: `BODY=8BITMIME` when the
    /// message has 8-bit bytes, `SMTPUTF8` when an address is not ASCII, and its `SIZE`.
    pub fn for_message(sender: &str, recipients: &[String], message: &[u8]) -> Self {
        let mut params = Vec::new();
        if !message.is_ascii() {
            params.push("BODY=8BITMIME".to_owned());
        }
        if !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii()) {
            params.push("SMTPUTF8".to_owned());
        }
        params.push(format!("SIZE={}", message.len()));
        Self {
            sender: sender.to_owned(),
            params,
        }
    }
}

/// An open transaction with one relay target: MAIL has been accepted.
pub struct Upstream {
    conn: AsyncSmtpConnection,
    /// Index of the target in [`Delivery::targets`].
    target: usize,
    name: String,
    protocol_timeout: Duration,
    pool: Arc<Pool>,
    /// Whether the connection came from the cache (for the log).
    reused: bool,
    /// Whether it may go back to the cache: not for implicit TLS, whose socket lettre opens
    /// without TCP_NODELAY (see [`RelayTarget::connect`]).
    cacheable: bool,
    line_limit: usize,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.name)
            .finish()
    }
}

impl Delivery {
    /// Relay targets (sorted here by priority, equal priorities in the given order) and the
    /// outbound settings; connections stay open `connection_cache_time` after a message for
    /// the next one (zero: closed at once).
    pub fn new(
        mut targets: Vec<RelayTarget>,
        helo_name: String,
        connection_timeout: Duration,
        protocol_timeout: Duration,
        data_timeout: Duration,
        connection_cache_time: Duration,
    ) -> Self {
        targets.sort_by_key(|t| t.priority);
        Self {
            targets,
            helo_name,
            connection_timeout,
            protocol_timeout,
            data_timeout,
            pool: Pool::new(connection_cache_time, protocol_timeout),
        }
    }

    /// Opens a transaction with the first target, from `first` on, that accepts the sender.
    pub async fn open(&self, envelope: &Envelope, first: usize) -> Result<Upstream, DeliveryError> {
        let mut failures = Vec::new();
        let targets = self.targets.iter().enumerate().skip(first);
        for (index, target) in targets.filter(|(_, t)| !t.divert_only) {
            match self.open_one(index, target, envelope).await {
                Ok((conn, reused)) => {
                    return Ok(Upstream {
                        conn,
                        target: index,
                        name: target.name.clone(),
                        protocol_timeout: self.protocol_timeout,
                        pool: self.pool.clone(),
                        reused,
                        cacheable: target.security != Security::Ssl,
                        line_limit: target.line_limit,
                    });
                }
                Err(TargetError::Refused(reply)) if reply.code >= 500 => {
                    return Err(DeliveryError::Refused {
                        target: target.name.clone(),
                        reply,
                    });
                }
                Err(e) => {
                    warn!(relay_target = %target.name, error = %e, "relay target unavailable, trying the next");
                    failures.push(format!("{}: {e}", target.name));
                }
            }
        }
        if failures.is_empty() {
            failures.push("no [[relay_target]] relays ordinary mail".to_owned());
        }
        Err(DeliveryError::Unavailable(failures))
    }

    /// The same outbound settings with only the named targets, in priority order, each usable
    /// whether or not it is `divert_only`: where a `divert` rule sends messages.
    pub fn through(&self, names: &[String]) -> Result<Delivery, String> {
        let mut targets = Vec::new();
        for name in names {
            let Some(target) = self.targets.iter().find(|t| t.name == *name) else {
                return Err(format!("no [[relay_target]] is named {name:?}"));
            };
            targets.push(RelayTarget {
                divert_only: false,
                ..target.clone()
            });
        }
        if targets.is_empty() {
            return Err("name at least one relay target".into());
        }
        Ok(Delivery::new(
            targets,
            self.helo_name.clone(),
            self.connection_timeout,
            self.protocol_timeout,
            self.data_timeout,
            self.pool.keep(),
        ))
    }

    /// Whether any target relays ordinary mail (is not `divert_only`).
    pub fn relays(&self) -> bool {
        self.targets.iter().any(|t| !t.divert_only)
    }

    /// A connection to the target with MAIL accepted: a cached one if it still works (then
    /// `true`), else a fresh one.
    async fn open_one(
        &self,
        index: usize,
        target: &RelayTarget,
        envelope: &Envelope,
    ) -> Result<(AsyncSmtpConnection, bool), TargetError> {
        if let Some(mut conn) = self.pool.take(index) {
            match self.mail(&mut conn, envelope).await {
                Ok(()) => return Ok((conn, true)),
                Err(e) => {
                    debug!(relay_target = %target.name, error = %e, "cached connection no longer usable, opening a new one");
                    quit_later(conn, self.protocol_timeout);
                }
            }
        }
        let helo = ClientId::Domain(self.helo_name.clone());
        let mut conn = tokio::time::timeout(self.connection_timeout, target.connect(&helo))
            .await
            .map_err(|_| TargetError::Timeout("connecting"))??;
        match self.mail(&mut conn, envelope).await {
            Ok(()) => Ok((conn, false)),
            Err(e) => {
                conn.abort().await;
                Err(e)
            }
        }
    }

    /// MAIL FROM, with the parameters the target supports.
    async fn mail(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
    ) -> Result<(), TargetError> {
        let info = conn.server_info().clone();
        let params: Vec<&str> = envelope
            .params
            .iter()
            .map(String::as_str)
            .filter(|p| {
                let keyword = p.split('=').next().unwrap_or("").to_ascii_uppercase();
                info.supports_feature(match keyword.as_str() {
                    "BODY" => lettre::transport::smtp::extension::Extension::EightBitMime,
                    "SMTPUTF8" => lettre::transport::smtp::extension::Extension::SmtpUtfEight,
                    // SIZE is advisory; other parameters are never passed on.
                    _ => return keyword == "SIZE",
                })
            })
            .collect();
        let mut command = format!("MAIL FROM:<{}>", envelope.sender);
        for p in params {
            command.push(' ');
            command.push_str(p);
        }
        command.push_str("\r\n");
        command_reply(conn, &command, self.protocol_timeout)
            .await
            .map(|_| ())
    }

    /// Delivers a whole message through the targets from `first` on: each must accept the
    /// sender, every recipient and the message, or it is skipped. A permanent refusal of the
    /// message ends the attempt with that answer; a target that was sent the message and did
    /// not answer ends it too, never tried elsewhere (invariant 1). Used when the target that
    /// took the recipients breaks before DATA, and for diverted messages.
    pub async fn send(
        &self,
        envelope: &Envelope,
        recipients: &[String],
        message: &[u8],
        first: usize,
    ) -> Result<(String, TargetReply), DeliveryError> {
        let mut failures = Vec::new();
        let mut next = first;
        while next < self.targets.len() {
            let mut upstream = match self.open(envelope, next).await {
                Ok(u) => u,
                Err(DeliveryError::Unavailable(f)) => {
                    failures.extend(f);
                    break;
                }
                Err(refused) => return Err(refused),
            };
            next = upstream.target + 1;
            let mut refused = None;
            for rcpt in recipients {
                if let Err(e) = upstream.rcpt(rcpt).await {
                    refused = Some(format!("{}: recipient <{rcpt}>: {e}", upstream.name));
                    break;
                }
            }
            if let Some(why) = refused {
                warn!(relay_target = %upstream.name, reason = %why, "relay target skipped");
                failures.push(why);
                upstream.abort().await;
                continue;
            }
            let name = upstream.name.clone();
            match upstream.data(message, self.data_timeout).await {
                Ok(reply) => return Ok((name, reply)),
                Err(DataFailure::Refused(reply)) if reply.code >= 500 => {
                    return Err(DeliveryError::Refused {
                        target: name,
                        reply,
                    });
                }
                Err(DataFailure::Uncertain(e)) => {
                    return Err(DeliveryError::Uncertain {
                        target: name,
                        why: e.to_string(),
                    });
                }
                Err(e) => {
                    warn!(relay_target = %name, error = %e, "relay target failed at DATA, trying the next");
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        Err(DeliveryError::Unavailable(failures))
    }
}

impl Upstream {
    /// The relay target's name.
    pub fn target_name(&self) -> &str {
        &self.name
    }

    /// Index of the target, so that a failover can start after it.
    pub fn target_index(&self) -> usize {
        self.target
    }

    /// RCPT TO; a refusal carries the target's reply for the client.
    pub async fn rcpt(&mut self, recipient: &str) -> Result<TargetReply, TargetError> {
        command_reply(
            &mut self.conn,
            &format!("RCPT TO:<{recipient}>\r\n"),
            self.protocol_timeout,
        )
        .await
    }

    /// DATA and the message (CRLF line ends, as received; dot-stuffing is added here). The
    /// reply is the target's answer to the end of the message; the connection goes back to
    /// the cache after a reply, or is closed in the background after a failure.
    pub async fn data(
        mut self,
        message: &[u8],
        data_timeout: Duration,
    ) -> Result<TargetReply, DataFailure> {
        if let Err(e) = command_reply(&mut self.conn, "DATA\r\n", self.protocol_timeout).await {
            quit_later(self.conn, self.protocol_timeout);
            return Err(DataFailure::NotSent(e));
        }
        let (message, breaks) = lines::break_long_lines(message, self.line_limit);
        if breaks > 0 {
            info!(relay_target = %self.name, line_limit = self.line_limit, breaks, "long lines broken for the relay target");
        }
        let message = message.as_ref();
        // lettre ends the message with CRLF.CRLF itself: give it the message without its own
        // final line end, so that the target receives exactly the bytes the client sent.
        let body = message.strip_suffix(b"\r\n").unwrap_or(message);
        let budget = data_timeout + Duration::from_secs((message.len() >> 20) as u64);
        let reply = match tokio::time::timeout(budget, self.conn.message(body)).await {
            Err(_) => Err(DataFailure::Uncertain(TargetError::Timeout(
                "the end of the message",
            ))),
            Ok(Ok(r)) => Ok(TargetReply::from_response(&r)),
            Ok(Err(e)) => Err(match TargetError::from_smtp(e) {
                TargetError::Refused(reply) => DataFailure::Refused(reply),
                broken => DataFailure::Uncertain(broken),
            }),
        };
        match &reply {
            Ok(r) => {
                info!(relay_target = %self.name, reused_connection = self.reused, reply = %r, "delivered to relay target");
                self.pool.put(self.target, self.conn, self.cacheable);
            }
            Err(DataFailure::Uncertain(e)) => {
                warn!(relay_target = %self.name, error = %e, "no answer to the end of the message: it may have been delivered, so it is not sent elsewhere");
                quit_later(self.conn, self.protocol_timeout);
            }
            // The target's answer is final: the client need not wait for QUIT as well.
            Err(_) => quit_later(self.conn, self.protocol_timeout),
        }
        reply
    }

    /// Ends the transaction without delivering (QUIT).
    pub async fn abort(mut self) {
        let _ = tokio::time::timeout(self.protocol_timeout, self.conn.abort()).await;
    }
}

async fn command_reply(
    conn: &mut AsyncSmtpConnection,
    command: &str,
    timeout: Duration,
) -> Result<TargetReply, TargetError> {
    let verb = command.split([' ', '\r']).next().unwrap_or("").to_owned();
    match tokio::time::timeout(timeout, conn.command(command)).await {
        Err(_) => Err(TargetError::Timeout("a reply")),
        Ok(Ok(r)) => Ok(TargetReply::from_response(&r)),
        Ok(Err(e)) => Err(match TargetError::from_smtp(e) {
            TargetError::Smtp(why) => TargetError::Smtp(format!("{verb}: {why}")),
            other => other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_is_read_from_the_text() {
        let r = TargetReply::new(550, "5.1.1 <a@b>: Recipient address rejected");
        assert_eq!(r.enhanced(), Some("5.1.1"));
        assert_eq!(TargetReply::new(550, "Rejected").enhanced(), None);
        assert_eq!(TargetReply::new(550, "5.1 x").enhanced(), None);
    }

    #[test]
    fn replies_are_printable_and_bounded() {
        let r = TargetReply::new(550, &format!("a\r\nb\t{}", "x".repeat(900)));
        assert!(r.text.starts_with("a  b "));
        assert_eq!(r.text.len(), 500);
    }
}
