//! Denial-of-service protection (option "Enable DoS functionality"): per-client limits on
//! simultaneous connections and on connections per minute, answered with 421, as Postfix's
//! anvil does with smtpd_client_connection_count_limit and _rate_limit.
//!
//! Open connections are counted here, in this process (a reload must not forget who is
//! connected, and a count kept elsewhere would outlive a process that crashed); connections
//! per minute are counted in the engine's store, which a fleet can share.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::ports::ClientKey;
use crate::engine::reply::SmtpReply;

/// The window of the rate limit.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// Per-client limits from `[dos_protection]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// Simultaneous connections per client address.
    pub max_connections: Option<u32>,
    /// New connections per client address per minute.
    pub max_connection_rate: Option<u32>,
}

impl ClientLimits {
    /// The refusal for a client with `active` connections open (this one included) and
    /// `recent` opened within the rate window, when either is over its limit.
    pub fn refusal(&self, ip: IpAddr, active: u32, recent: Option<u32>) -> Option<SmtpReply> {
        let text = match (self.max_connections, self.max_connection_rate, recent) {
            (Some(max), _, _) if active > max => format!(
                "Too many connections from [{ip}] ({active} at once, at most {max}), try again later"
            ),
            (_, Some(max), Some(recent)) if recent > max => format!(
                "Too many connections from [{ip}] (more than {max} per minute), try again later"
            ),
            _ => return None,
        };
        Some(SmtpReply::new(421, Some("4.7.0"), &text).expect("printable reply"))
    }
}

/// Counts the connections each client has open, across all sessions of this process.
#[derive(Debug, Default)]
pub struct ClientTracker {
    clients: Mutex<HashMap<ClientKey, u32>>,
}

/// Held for as long as a connection lasts; dropping it ends the connection's count.
#[derive(Debug)]
pub struct ConnectionSlot {
    tracker: Arc<ClientTracker>,
    key: ClientKey,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut clients = self
            .tracker
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(active) = clients.get_mut(&self.key) {
            *active = active.saturating_sub(1);
            // Only clients with an open connection are remembered, so memory follows the
            // number of open connections.
            if *active == 0 {
                clients.remove(&self.key);
            }
        }
    }
}

impl ClientTracker {
    /// Counts a new connection from `ip` (under its [`ClientKey`]): its slot, and how many
    /// connections the client has open now, this one included.
    pub fn connect(self: &Arc<Self>, ip: IpAddr) -> (ConnectionSlot, u32) {
        let key = ClientKey::of(ip);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let active = clients.entry(key).or_default();
        *active += 1;
        let slot = ConnectionSlot {
            tracker: self.clone(),
            key,
        };
        (slot, *active)
    }

    /// Clients currently remembered.
    pub fn tracked(&self) -> usize {
        self.clients.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: &str = "192.0.2.10";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn open_connections_are_counted_until_their_slot_goes() {
        let tracker = Arc::new(ClientTracker::default());
        let (a, n) = tracker.connect(ip(IP));
        assert_eq!(n, 1);
        let (_b, n) = tracker.connect(ip(IP));
        assert_eq!(n, 2);
        let (c, n) = tracker.connect(ip(IP));
        assert_eq!(n, 3);
        drop(c);
        drop(a);
        let (_d, n) = tracker.connect(ip(IP));
        assert_eq!(n, 2, "closed connections no longer count");
        let (e, n) = tracker.connect(ip("192.0.2.11"));
        assert_eq!(n, 1, "another client is not affected");
        drop(e);
        assert_eq!(
            tracker.tracked(),
            1,
            "a client without connections is forgotten"
        );
    }

    #[test]
    fn an_ipv6_client_counts_per_64() {
        let tracker = Arc::new(ClientTracker::default());
        let (_a, _) = tracker.connect(ip("2001:db8:1:2::1"));
        let (_b, n) = tracker.connect(ip("2001:db8:1:2:ffff::9"));
        assert_eq!(n, 2, "the same /64");
        let (_c, n) = tracker.connect(ip("2001:db8:1:3::1"));
        assert_eq!(n, 1, "another /64");
        assert_eq!(ClientKey::of(ip("::ffff:192.0.2.1")).ip(), ip("192.0.2.1"));
        assert_eq!(
            ClientKey::of(ip("2001:db8:1:2:3:4:5:6")).to_string(),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn limits_refuse_with_421() {
        let limits = ClientLimits {
            max_connections: Some(2),
            max_connection_rate: Some(2),
        };
        assert!(limits.refusal(ip(IP), 2, Some(2)).is_none());
        let at_once = limits.refusal(ip(IP), 3, Some(1)).unwrap();
        assert_eq!(at_once.code(), 421);
        assert!(at_once.text().contains("3 at once, at most 2"));
        let rate = limits.refusal(ip(IP), 1, Some(3)).unwrap();
        assert!(rate.text().contains("per minute"));
        assert!(
            limits.refusal(ip(IP), 1, None).is_none(),
            "rate not counted"
        );
    }
}
