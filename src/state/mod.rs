//! Implementations of the engine's [`Store`](crate::engine::ports::Store) port: state that
//! outlives a connection (rate counters, failure windows, learned reputation). [`MemoryStore`]
//! keeps it in this process; a store a fleet shares can be added beside it.

mod memory;

pub use memory::MemoryStore;
