//! Implementations of the engine's [`Store`](crate::engine::ports::Store) port: state that
//! outlives a connection (rate counters, failure windows, learned reputation). [`MemoryStore`]
//! keeps it in this process; a store a fleet shares can be added beside it.

mod memory;

pub use memory::{DEFAULT_CAPACITY, MemoryStore};

/// Settings of the state store (`[state]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSettings {
    /// Clients the in-process store remembers per kind of state (connection rate, AUTH
    /// failures, learned reputation); beyond it, what ran out and then the weakest half are
    /// forgotten.
    pub max_tracked_clients: usize,
}
