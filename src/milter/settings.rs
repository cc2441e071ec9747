//! `[milter]` as the door keeps it.

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
