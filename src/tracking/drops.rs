//! Records that could not be kept: counted for the metrics and logged at most once a minute,
//! so that a store that is down neither floods the log nor goes unnoticed.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::logging::Throttle;

/// Told of every record dropped, with why: `queue_full` (the writer falls behind),
/// `store_unavailable` (the store refused or could not be reached), `writer_stopped` (at
/// shutdown).
pub trait DropObserver: Send + Sync + fmt::Debug {
    fn dropped(&self, reason: &'static str, count: u64);
}

/// How often a drop is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The drop counter shared by the sink and the writer.
#[derive(Debug)]
pub(super) struct Drops {
    observer: Option<Arc<dyn DropObserver>>,
    unlogged: Mutex<Throttle>,
}

impl Drops {
    pub(super) fn new(observer: Option<Arc<dyn DropObserver>>) -> Self {
        Self {
            observer,
            unlogged: Mutex::new(Throttle::default()),
        }
    }

    /// `count` records were dropped for `reason` (`detail` says more, for the log).
    pub(super) fn dropped(&self, reason: &'static str, count: u64, detail: &str) {
        if count == 0 {
            return;
        }
        if let Some(observer) = &self.observer {
            observer.dropped(reason, count);
        }
        let mut unlogged = self.unlogged.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(dropped) = unlogged.due(LOG_INTERVAL, count) {
            warn!(
                dropped,
                reason,
                error = detail,
                "message tracking records dropped; mail is not affected (logged at most once a minute, counted in postern_tracking_dropped_total)"
            );
        }
    }
}
