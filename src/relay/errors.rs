//! How a delivery failed, in kinds that decide what may be tried next.

use super::TargetError;
use crate::engine::SmtpReply;

/// Why a transaction could not be opened or a message not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A target answered the sender with a permanent refusal; the client should see it.
    #[error("relay target {target} refused: {reply}")]
    Refused { target: String, reply: SmtpReply },
    /// No target could take the transaction; each one's reason, in order.
    #[error("no relay target is available: {}", .0.join("; "))]
    Unavailable(Vec<String>),
    /// A target was sent the whole message and then gave no answer: it may have taken it, so
    /// no other target may be tried (that could deliver it twice).
    #[error("relay target {target} gave no answer to the end of the message: {why}")]
    Uncertain { target: String, why: String },
}

/// Why a list of relay target names is not a route.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("no [[relay_target]] is named {0:?}")]
    NoSuchTarget(String),
    #[error("name at least one relay target")]
    Empty,
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
    Refused(SmtpReply),
    /// The message (or part of it) was sent and no answer came: the target may have
    /// committed it. Sending it anywhere else could deliver it twice.
    #[error("no answer after the message was sent: {0}")]
    Uncertain(TargetError),
    /// The message could not be read back from the spool; the target was not sent its end
    /// and has nothing. No other target can be sent it either.
    #[error("{0}")]
    Unreadable(String),
}
