//! `[milter]` as the door keeps it, and which of its keys a reload cannot change.

use std::time::Duration;

use super::socket::ListenSocket;

/// Settings of the milter door (`[milter]`). They take effect at start; a reload keeps the
/// listener as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilterSettings {
    pub listen: ListenSocket,
    pub socket_mode: u32,
    pub max_inbound_connections: usize,
    pub connection_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl MilterSettings {
    /// Keys that differ in `new`: all need a restart (the listener and its limits are set
    /// up once).
    pub fn changed_keys(&self, new: &Self) -> Vec<&'static str> {
        [
            ("listen", self.listen != new.listen),
            ("socket_mode", self.socket_mode != new.socket_mode),
            (
                "max_inbound_connections",
                self.max_inbound_connections != new.max_inbound_connections,
            ),
            (
                "connection_timeout",
                self.connection_timeout != new.connection_timeout,
            ),
            (
                "shutdown_timeout",
                self.shutdown_timeout != new.shutdown_timeout,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}
