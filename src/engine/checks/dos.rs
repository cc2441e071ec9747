//! Denial-of-service protection (seed: "Enable DoS functionality"): per-client limits on
//! simultaneous connections and on connections per minute, answered with 421, as Postfix's
//! anvil does with smtpd_client_connection_count_limit and _rate_limit.
//!
//! The counts outlive any one policy (a reload must not forget who is connected), so the
//! tracker belongs to the engine; the limits come from the policy in force.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::reply::SmtpReply;

/// The window of the rate limit.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Clients remembered at most; idle ones are forgotten first, so memory stays bounded.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Per-client limits from `[dos_protection]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Simultaneous connections per client address.
    pub max_connections: Option<u32>,
    /// New connections per client address per minute.
    pub max_connection_rate: Option<u32>,
}

#[derive(Debug, Default)]
struct ClientState {
    active: u32,
    recent: VecDeque<Instant>,
}

/// Counts connections per client address across all sessions.
#[derive(Debug, Default)]
pub struct ClientTracker {
    clients: Mutex<HashMap<IpAddr, ClientState>>,
}

/// Held for as long as a connection lasts; dropping it ends the connection's count.
#[derive(Debug)]
pub struct ConnectionSlot {
    tracker: Arc<ClientTracker>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut clients = self
            .tracker
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(state) = clients.get_mut(&self.ip) {
            state.active = state.active.saturating_sub(1);
        }
    }
}

/// The key a client is counted under: its IPv4 address (also when IPv4-mapped), or the /64 of
/// an IPv6 address, the block one host usually holds, so that a client cannot escape its
/// limits by changing the low bits of its address.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

impl ClientTracker {
    /// Counts a new connection from `ip` (under its [`client_key`]). Returns its slot, and the refusal when a limit is
    /// exceeded (the connection is counted either way, as Postfix's anvil does).
    pub fn connect(
        self: &Arc<Self>,
        ip: IpAddr,
        limits: ClientLimits,
        now: Instant,
    ) -> (ConnectionSlot, Option<SmtpReply>) {
        let key = client_key(ip);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if clients.len() >= MAX_TRACKED_CLIENTS && !clients.contains_key(&key) {
            prune(&mut clients, now);
        }
        let state = clients.entry(key).or_default();
        while state
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW)
        {
            state.recent.pop_front();
        }
        state.active += 1;
        state.recent.push_back(now);
        // Never keep more timestamps than the limit needs.
        let keep = limits.max_connection_rate.map_or(0, |r| r as usize + 1);
        while state.recent.len() > keep {
            state.recent.pop_front();
        }
        let refusal = match limits {
            ClientLimits {
                max_connections: Some(max),
                ..
            } if state.active > max => Some(format!(
                "Too many connections from [{ip}] ({} at once, at most {max}), try again later",
                state.active
            )),
            ClientLimits {
                max_connection_rate: Some(max),
                ..
            } if state.recent.len() > max as usize => Some(format!(
                "Too many connections from [{ip}] (more than {max} per minute), try again later"
            )),
            _ => None,
        };
        let slot = ConnectionSlot {
            tracker: self.clone(),
            ip: key,
        };
        let reply =
            refusal.map(|text| SmtpReply::new(421, Some("4.7.0"), &text).expect("printable reply"));
        (slot, reply)
    }

    /// Clients currently remembered.
    pub fn tracked(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Forgets clients with no open connection and nothing in the rate window, or, if none is
/// idle, the half with the oldest activity.
fn prune(clients: &mut HashMap<IpAddr, ClientState>, now: Instant) {
    clients.retain(|_, s| {
        s.active > 0
            || s.recent
                .back()
                .is_some_and(|t| now.duration_since(*t) < RATE_WINDOW)
    });
    if clients.len() >= MAX_TRACKED_CLIENTS {
        let mut by_age: Vec<(IpAddr, Option<Instant>)> = clients
            .iter()
            .map(|(ip, s)| (*ip, s.recent.back().copied()))
            .collect();
        by_age.sort_by_key(|(_, t)| *t);
        for (ip, _) in by_age.into_iter().take(MAX_TRACKED_CLIENTS / 2) {
            clients.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = "192.0.2.10";

    #[test]
    fn concurrency_limit_counts_open_connections() {
        let tracker = Arc::new(ClientTracker::default());
        let limits = ClientLimits {
            max_connections: Some(2),
            max_connection_rate: None,
        };
        let now = Instant::now();
        let (a, refused) = tracker.connect(IP.parse().unwrap(), limits, now);
        assert!(refused.is_none());
        let (_b, refused) = tracker.connect(IP.parse().unwrap(), limits, now);
        assert!(refused.is_none());
        let (c, refused) = tracker.connect(IP.parse().unwrap(), limits, now);
        assert_eq!(refused.unwrap().code(), 421);
        drop(c);
        drop(a);
        let (_d, refused) = tracker.connect(IP.parse().unwrap(), limits, now);
        assert!(refused.is_none(), "closed connections no longer count");
        // Another client is not affected.
        let (_e, refused) = tracker.connect("192.0.2.11".parse().unwrap(), limits, now);
        assert!(refused.is_none());
    }

    #[test]
    fn an_ipv6_client_counts_per_64() {
        let tracker = Arc::new(ClientTracker::default());
        let limits = ClientLimits {
            max_connections: Some(1),
            max_connection_rate: None,
        };
        let now = Instant::now();
        let (_a, refused) = tracker.connect("2001:db8:1:2::1".parse().unwrap(), limits, now);
        assert!(refused.is_none());
        let (_b, refused) = tracker.connect("2001:db8:1:2:ffff::9".parse().unwrap(), limits, now);
        assert!(refused.is_some(), "the same /64");
        let (_c, refused) = tracker.connect("2001:db8:1:3::1".parse().unwrap(), limits, now);
        assert!(refused.is_none(), "another /64");
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn rate_limit_counts_connections_per_minute() {
        let tracker = Arc::new(ClientTracker::default());
        let limits = ClientLimits {
            max_connections: None,
            max_connection_rate: Some(2),
        };
        let start = Instant::now();
        for n in 0..2 {
            let (_slot, refused) =
                tracker.connect(IP.parse().unwrap(), limits, start + Duration::from_secs(n));
            assert!(refused.is_none());
        }
        let (_slot, refused) =
            tracker.connect(IP.parse().unwrap(), limits, start + Duration::from_secs(2));
        assert!(refused.unwrap().text().contains("per minute"));
        // A minute after the first ones, the client may connect again.
        let (_slot, refused) =
            tracker.connect(IP.parse().unwrap(), limits, start + Duration::from_secs(63));
        assert!(refused.is_none());
    }

    #[test]
    fn memory_is_bounded() {
        let tracker = Arc::new(ClientTracker::default());
        let limits = ClientLimits {
            max_connections: Some(50),
            max_connection_rate: None,
        };
        let now = Instant::now();
        for n in 0..(MAX_TRACKED_CLIENTS as u32 + 10) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
            drop(tracker.connect(ip, limits, now));
        }
        assert!(tracker.tracked() <= MAX_TRACKED_CLIENTS);
    }
}
