//! The memory the proxy's messages may take at once (`[proxy] message_memory_budget`): each
//! DATA reserves what one message can hold in memory before it moves to a temporary file
//! (`[scan] message_memory_limit`), and the reservation ends with the message. A DATA that
//! would pass the budget is answered 452 4.3.1, as an MTA short of storage does, and the client
//! retries later. Messages no rule changes are relayed from memory or the spool piece by piece,
//! so this bounds their memory; messages a rule changes are also bounded by
//! `[scan] max_concurrent_scans`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct MemoryBudget {
    used: AtomicUsize,
    limit: usize,
}

/// Bytes reserved for one message; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: usize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// Reserves `bytes` (at most the whole budget), or `None` when they are not left.
    pub fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reservation> {
        let bytes = bytes.min(self.limit);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.limit).then_some(used + bytes)
            })
            .ok()?;
        Some(Reservation {
            budget: self.clone(),
            bytes,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back() {
        let budget = MemoryBudget::new(3 << 20);
        let a = budget.reserve(1 << 20).unwrap();
        let b = budget.reserve(2 << 20).unwrap();
        assert!(budget.reserve(1).is_none());
        drop(a);
        let c = budget.reserve(1 << 20).unwrap();
        drop((b, c));
        assert_eq!(budget.used(), 0);
        // More than the whole budget takes the whole budget, never refuses forever.
        let all = budget.reserve(10 << 20).unwrap();
        assert_eq!(budget.used(), 3 << 20);
        drop(all);
    }
}
