//! Records that could not be kept, told to the event sinks as they happen: the metrics count
//! them, the log tells them at most once a minute, so that a store that is down neither floods
//! the log nor goes unnoticed.

use std::sync::Arc;

use crate::engine::events::Event;
use crate::engine::ports::Events;

/// The drop counter shared by the sink and the writer.
#[derive(Debug)]
pub(super) struct Drops {
    events: Option<Arc<dyn Events>>,
}

impl Drops {
    /// Drops are told to `events` (the log and the metrics, never tracking itself).
    pub(super) fn new(events: Option<Arc<dyn Events>>) -> Self {
        Self { events }
    }

    /// `count` records were dropped for `reason` (`detail` says more, for the log).
    pub(super) fn dropped(&self, reason: &'static str, count: u64, detail: &str) {
        if count == 0 {
            return;
        }
        if let Some(events) = &self.events {
            events.emit(&Event::TrackingDropped {
                reason,
                count,
                detail,
            });
        }
    }
}
