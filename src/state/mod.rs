//! Implementations of the engine's [`Store`](crate::engine::ports::Store) port: state that
//! outlives a connection (rate counters, failure windows, learned reputation, messages handed
//! to encryption routes).
//! [`MemoryStore`] keeps it in this process; [`RedisStore`] keeps it in a Redis that a fleet
//! of instances shares, with a `MemoryStore` as its fallback. [`fleet`] keeps the fleet's one
//! configuration and each instance's state in the same Redis.

pub mod fleet;
mod memory;
mod redis;

use std::time::Duration;

pub use memory::{DEFAULT_CAPACITY, MemoryStore};
pub use redis::{RETRY_AFTER, RedisStore, SharedStateError, check_url, ping, redacted};

/// Settings of the state store (`[state]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSettings {
    /// Clients the in-process store remembers per kind of state (connection rate, AUTH
    /// failures, learned reputation); beyond it, what ran out and then the weakest half are
    /// forgotten.
    pub max_tracked_clients: usize,
    /// How long a `via` route's delivery of a message is remembered (`via_memory_days`).
    pub via_memory: Duration,
}

/// `via_memory_days` when unset: Postfix's default `maximal_queue_lifetime`, the longest a
/// sending MTA keeps retrying.
pub const DEFAULT_VIA_MEMORY_DAYS: u64 = 5;

/// Settings of the shared store (`[shared_state]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedStateSettings {
    /// `redis://host:port/db`, `rediss://host:port/db` or `redis+unix:///path`.
    pub redis_url: String,
    /// Put before every key, so that several fleets can share one Redis.
    pub key_prefix: String,
    /// How long one call may take before the decision is made locally.
    pub timeout: Duration,
    /// The password from `password_file`, given to Redis instead of one in the URL.
    pub password: Option<Password>,
    /// This instance's name among the fleet's (`instance_name`); without it the host name,
    /// the door and its first listener.
    pub instance_name: Option<String>,
}

/// A password that shows as `***` in Debug output.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The default key prefix.
pub const DEFAULT_KEY_PREFIX: &str = "postern:";

/// The default timeout of one call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

impl Default for SharedStateSettings {
    fn default() -> Self {
        Self {
            redis_url: String::new(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            password: None,
            instance_name: None,
        }
    }
}
