//! What became of one attempt with one relay target, told to the event sinks (the metrics
//! count it).

use std::sync::Arc;

use super::TargetError;
use crate::engine::events::{AttemptOutcome, Event};
use crate::engine::ports::Events;

/// The outcome of an attempt that failed with `e`.
pub(super) fn of_error(e: &TargetError) -> AttemptOutcome {
    match e {
        TargetError::Refused(reply) if !reply.is_transient() => AttemptOutcome::Refused,
        TargetError::Refused(_) | TargetError::Incapable(_) => AttemptOutcome::Deferred,
        _ => AttemptOutcome::Unavailable,
    }
}

/// Tells the sinks of one attempt with `relay_target`.
pub(super) fn observe(
    events: &Option<Arc<dyn Events>>,
    relay_target: &str,
    outcome: AttemptOutcome,
) {
    if let Some(events) = events {
        events.emit(&Event::RelayAttempt {
            relay_target,
            outcome,
        });
    }
}
