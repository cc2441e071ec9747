//! What became of one attempt with one relay target, for the observers (metrics).

use std::fmt;
use std::sync::Arc;

use super::TargetError;

/// What became of one attempt with one relay target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target took the message.
    Delivered,
    /// It refused the sender or the message permanently (5xx).
    Refused,
    /// It refused for now (4xx), or cannot carry this transaction.
    Deferred,
    /// It could not be reached or broke before it had the message.
    Unavailable,
    /// It was sent the message and gave no answer.
    Uncertain,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Self; 5] = [
        Self::Delivered,
        Self::Refused,
        Self::Deferred,
        Self::Unavailable,
        Self::Uncertain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Refused => "refused",
            Self::Deferred => "deferred",
            Self::Unavailable => "unavailable",
            Self::Uncertain => "uncertain",
        }
    }

    pub(super) fn of_error(e: &TargetError) -> Self {
        match e {
            TargetError::Refused(reply) if !reply.is_transient() => Self::Refused,
            TargetError::Refused(_) | TargetError::Incapable(_) => Self::Deferred,
            _ => Self::Unavailable,
        }
    }
}

/// Told of the outcome of each attempt with a relay target.
pub trait RelayObserver: Send + Sync + fmt::Debug {
    fn attempt(&self, target: &str, outcome: Outcome);
}

pub(super) fn observe(observer: &Option<Arc<dyn RelayObserver>>, target: &str, outcome: Outcome) {
    if let Some(o) = observer {
        o.attempt(target, outcome);
    }
}
