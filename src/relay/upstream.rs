//! One transaction with the relay target that took its MAIL: RCPT for each recipient, then
//! DATA and the message; after the end of data was sent, never another target.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tracing::{error, info, warn};

use super::outcome::{self, observe};
use super::pool::{Pool, quit_later};
use super::replies::*;
use super::target::Link;
use super::*;
use crate::engine::SmtpReply;
use crate::engine::address::EnvelopeAddress;
use crate::engine::checks::outbound_tls::TlsRequirement;
use crate::engine::events::AttemptOutcome;
use crate::engine::ports::Events;

/// A relay target's answer to RCPT TO: its reply (a refusal is a [`TargetError::Refused`]).
pub type RcptAnswer = Result<SmtpReply, TargetError>;

/// An open transaction with one relay target: MAIL has been accepted.
pub struct Upstream {
    pub(super) link: Link,
    /// Index of the target in [`Delivery::targets`].
    pub(super) target: usize,
    pub(super) name: String,
    pub(super) protocol_timeout: Duration,
    pub(super) pool: Arc<Pool>,
    /// Whether the connection came from the cache (for the log).
    pub(super) reused: bool,
    /// Whether it may go back to the cache: not for implicit TLS, whose socket lettre opens
    /// without TCP_NODELAY (see [`RelayTarget::connect`]).
    pub(super) cacheable: bool,
    pub(super) line_limit: usize,
    pub(super) events: Option<Arc<dyn Events>>,
    /// When the target last heard a command of this transaction.
    pub(super) last_command: tokio::time::Instant,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.name)
            .finish()
    }
}

impl Upstream {
    /// The relay target's name.
    pub fn target_name(&self) -> &str {
        &self.name
    }

    /// How long the target has heard nothing of this transaction.
    pub fn idle(&self) -> Duration {
        self.last_command.elapsed()
    }

    /// NOOP, so that a target waiting for the rest of the transaction (while a slow client
    /// uploads) does not close an idle connection (`[delivery] noop_interval`).
    pub async fn noop(&mut self) -> Result<SmtpReply, TargetError> {
        self.last_command = tokio::time::Instant::now();
        command_reply(&mut self.link.conn, "NOOP\r\n", self.protocol_timeout).await
    }

    /// Index of the target, so that a failover can start after it.
    pub fn target_index(&self) -> usize {
        self.target
    }

    /// Why the connection does not meet `requirement` (no TLS, or not the version, cipher
    /// or certificate it asks for); `None` when it does.
    pub fn unmet(&self, requirement: &TlsRequirement) -> Option<String> {
        match &self.link.tls {
            None => Some(format!(
                "{}: the connection is not encrypted",
                requirement.by
            )),
            Some(facts) => facts.unmet(requirement),
        }
    }

    /// What TLS the connection negotiated, if any.
    pub fn tls(&self) -> Option<&tls::TlsFacts> {
        self.link.tls.as_ref()
    }

    /// RCPT TO; a refusal carries the target's reply for the client. A non-ASCII address
    /// is refused here (5.6.7) when the target does not offer SMTPUTF8.
    pub async fn rcpt(&mut self, recipient: &EnvelopeAddress) -> Result<SmtpReply, TargetError> {
        self.last_command = tokio::time::Instant::now();
        if !recipient.is_ascii() && !self.link.caps.smtputf8 {
            return Err(TargetError::Refused(own_reply(
                553,
                "5.6.7",
                "Error: the recipient address is not ASCII and the relay target does not offer SMTPUTF8",
            )));
        }
        command_reply(
            &mut self.link.conn,
            &format!("RCPT TO:<{recipient}>\r\n"),
            self.protocol_timeout,
        )
        .await
    }

    /// DATA and the message (CRLF line ends, as received; dot-stuffing is added here), after
    /// `head`: header fields Postern adds in front (its `Received:`), or nothing. The message
    /// goes out in pieces of whole lines, never copied whole. The reply is the target's answer
    /// to the end of the message; the connection goes back to the cache after a reply, or is
    /// closed in the background after a failure.
    pub async fn data(
        mut self,
        head: &[u8],
        message: &Body<'_>,
        data_timeout: Duration,
    ) -> Result<SmtpReply, DataFailure> {
        if !self.link.caps.eight_bit_mime && (message.is_eight_bit() || !head.is_ascii()) {
            // Postern does not downgrade 8-bit content to quoted-printable.
            observe(&self.events, &self.name, AttemptOutcome::Deferred);
            self.abort().await;
            return Err(DataFailure::NotSent(TargetError::Incapable(own_reply(
                451,
                "4.6.3",
                "Error: the message has 8-bit content and no relay target offers 8BITMIME, try again later",
            ))));
        }
        if let Err(e) = command_reply(&mut self.link.conn, "DATA\r\n", self.protocol_timeout).await
        {
            quit_later(self.link.conn, self.protocol_timeout);
            return Err(DataFailure::NotSent(e));
        }
        let breaks = AtomicUsize::new(0);
        let budget = data_timeout + Duration::from_secs(message.len() >> 20);
        // lettre ends the message with CRLF.CRLF itself: the pieces leave out the message's
        // own final line end, so that the target receives exactly the bytes the client sent.
        // Each piece is written on its own; the stream sends them together (stream.rs).
        let unreadable = OnceLock::new();
        let stop = self.link.stop.clone();
        let pieces = std::iter::once(Cow::Borrowed(head))
            .chain(message.pieces(self.line_limit, &breaks, &stop, &unreadable))
            .filter(|p| !p.is_empty());
        let sending = self.link.conn.message_iter(pieces);
        let reply = tokio::time::timeout(budget, sending).await;
        if let Some(why) = unreadable.into_inner() {
            // The spool could not be read (Body::pieces): the end of data was not sent, so
            // the target has nothing; the connection is dropped mid-message.
            error!(relay_target = %self.name, error = %why, "message not sent");
            return Err(DataFailure::Unreadable(why));
        }
        let reply = match reply {
            Err(_) => Err(DataFailure::Uncertain(TargetError::Timeout(
                "the end of the message",
            ))),
            Ok(Ok(r)) => Ok(reply_of(&r)),
            Ok(Err(e)) => Err(match TargetError::from_smtp(e) {
                TargetError::Refused(reply) => DataFailure::Refused(reply),
                broken => DataFailure::Uncertain(broken),
            }),
        };
        if breaks.load(Ordering::Relaxed) > 0 {
            info!(relay_target = %self.name, line_limit = self.line_limit, breaks = breaks.load(Ordering::Relaxed), "long lines broken for the relay target");
        }
        let outcome = match &reply {
            Ok(_) => AttemptOutcome::Delivered,
            Err(DataFailure::Refused(r)) if !r.is_transient() => AttemptOutcome::Refused,
            Err(DataFailure::Refused(_)) => AttemptOutcome::Deferred,
            Err(DataFailure::Uncertain(_)) => AttemptOutcome::Uncertain,
            Err(DataFailure::NotSent(e)) => outcome::of_error(e),
            Err(DataFailure::Unreadable(_)) => AttemptOutcome::Unavailable,
        };
        observe(&self.events, &self.name, outcome);
        match &reply {
            Ok(r) => {
                info!(relay_target = %self.name, reused_connection = self.reused, reply = %r, "delivered to relay target");
                self.pool.put(self.target, self.link, self.cacheable);
            }
            Err(DataFailure::Uncertain(e)) => {
                warn!(relay_target = %self.name, error = %e, "no answer to the end of the message: it may have been delivered, so it is not sent elsewhere");
                quit_later(self.link.conn, self.protocol_timeout);
            }
            // The target's answer is final: the client need not wait for QUIT as well.
            Err(_) => quit_later(self.link.conn, self.protocol_timeout),
        }
        reply
    }

    /// Ends the transaction without delivering (QUIT).
    pub async fn abort(mut self) {
        let _ = tokio::time::timeout(self.protocol_timeout, self.link.conn.abort()).await;
    }
}
