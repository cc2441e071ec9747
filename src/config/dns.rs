//! `[dns]`: the resolver the DNS checks (RBL, reputation zones, SPF) look names up with.

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use crate::dns::DnsSettings;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DnsSection {
    nameservers: Vec<SocketAddr>,
    timeout: NonZeroU64,
    attempts: NonZeroUsize,
    cache_size: u64,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: NonZeroU64::new(5).expect("nonzero"),
            attempts: NonZeroUsize::new(2).expect("nonzero"),
            cache_size: 8192,
        }
    }
}

/// The resolver's settings; `None` when no enabled check looks anything up.
pub(super) fn compile(d: DnsSection, needed: bool) -> Option<DnsSettings> {
    needed.then(|| DnsSettings {
        nameservers: d.nameservers,
        timeout: Duration::from_secs(d.timeout.get()),
        attempts: d.attempts.get(),
        cache_size: d.cache_size,
    })
}
