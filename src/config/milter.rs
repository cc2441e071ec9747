//! `[milter]`: the milter door's listening socket, its file mode and its connection limits.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::milter::MilterSettings;
use crate::milter::socket::ListenSocket;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct MilterSection {
    listen: ListenSocket,
    #[serde(deserialize_with = "octal_mode")]
    socket_mode: u32,
    max_inbound_connections: NonZeroUsize,
    connection_timeout: NonZeroU64,
    shutdown_timeout: u64,
}

impl Default for MilterSection {
    fn default() -> Self {
        Self {
            listen: ListenSocket::default(),
            socket_mode: 0o660,
            max_inbound_connections: NonZeroUsize::new(256).expect("nonzero"),
            connection_timeout: NonZeroU64::new(300).expect("nonzero"),
            shutdown_timeout: 30,
        }
    }
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    match u32::from_str_radix(&s, 8) {
        Ok(mode) if mode <= 0o777 && !s.is_empty() => Ok(mode),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not an octal file mode such as \"0660\""
        ))),
    }
}

pub(super) fn compile(m: MilterSection) -> MilterSettings {
    MilterSettings {
        listen: m.listen,
        socket_mode: m.socket_mode,
        max_inbound_connections: m.max_inbound_connections.get(),
        connection_timeout: Duration::from_secs(m.connection_timeout.get()),
        shutdown_timeout: Duration::from_secs(m.shutdown_timeout),
    }
}
