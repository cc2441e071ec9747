//! Relay restriction (options "Restrict relaying", "Allowed relay sources", "Allow relay if
//! authenticated"): a client that is neither an allowed relay source nor (when allowed)
//! authenticated may only send to local domains.
//!
//! Recipients are judged by where they really go. MTAs have long re-routed addresses written
//! `user%other@local`, `"user@other"@local`, `@route:user@other`, `other!user` and
//! `user@other@local`; each of these is unwrapped to its real destination domain, so that a
//! relaying attempt dressed as a local recipient is refused.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::engine::address::DomainPattern;
use crate::engine::reply::{SmtpReply, printable_only};

/// The compiled relay restriction.
#[derive(Clone, Debug)]
pub struct RelayRestriction {
    /// Domains we receive mail for; `*.example.org` (or `.example.org`) covers subdomains.
    pub local_domains: Vec<DomainPattern>,
    pub allowed_relay_sources: Vec<IpNet>,
    pub allow_relay_if_authenticated: bool,
}

/// Where a recipient address really goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// No domain at all (`postmaster`): the receiving system itself.
    Here,
    /// The real destination domain, lowercased.
    Domain(String),
}

impl RelayRestriction {
    /// True when the client may relay anywhere.
    pub fn may_relay(&self, client: Option<IpAddr>, authenticated: bool) -> bool {
        (authenticated && self.allow_relay_if_authenticated)
            || client.is_some_and(|ip| self.is_relay_source(ip))
    }

    /// True when `ip` is an allowed relay source.
    pub fn is_relay_source(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allowed_relay_sources.iter().any(|n| n.contains(&ip))
    }

    /// The refusal for `recipient` from a client that may not relay, if it is not local.
    pub fn check(&self, recipient: &str) -> Option<SmtpReply> {
        match destination(recipient) {
            Destination::Here => None,
            Destination::Domain(d) if self.is_local(&d) => None,
            Destination::Domain(_) => Some(
                SmtpReply::new(
                    554,
                    Some("5.7.1"),
                    &format!("<{}>: Relay access denied", printable_only(recipient, 300)),
                )
                .expect("printable reply"),
            ),
        }
    }

    /// Whether `domain` is one of the local domains.
    pub fn is_local(&self, domain: &str) -> bool {
        self.local_domains.iter().any(|local| local.matches(domain))
    }
}

/// Unwraps re-routing syntax until the address's real destination is known.
pub fn destination(address: &str) -> Destination {
    let mut addr = address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    // A bounded number of rounds: each removes one layer of routing.
    for _ in 0..16 {
        // Source route: @a,@b:user@dom goes to user@dom.
        if addr.starts_with('@') {
            match addr.split_once(':') {
                Some((_, rest)) => {
                    addr = rest.to_owned();
                    continue;
                }
                None => return Destination::Domain(String::new()),
            }
        }
        let (local, domain) = match addr.rfind('@') {
            Some(at) => (&addr[..at], Some(&addr[at + 1..])),
            None => (addr.as_str(), None),
        };
        let local = local.trim_matches('"');
        // The local part is itself an address: "user@other"@local, user@other@local.
        if local.contains('@') {
            addr = local.to_owned();
            continue;
        }
        // Percent hack: user%other@local goes to user@other.
        if let Some(pct) = local.rfind('%') {
            addr = format!("{}@{}", &local[..pct], &local[pct + 1..]);
            continue;
        }
        // Bang path: other!user (or other!user@local) goes to user@other.
        if let Some((host, user)) = local.split_once('!') {
            addr = format!("{user}@{host}");
            continue;
        }
        return match domain {
            Some(d) => Destination::Domain(d.trim_end_matches('.').to_ascii_lowercase()),
            None => Destination::Here,
        };
    }
    Destination::Domain(String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> RelayRestriction {
        RelayRestriction {
            local_domains: vec![
                DomainPattern::new("local.example"),
                DomainPattern::new("*.corp.example"),
            ],
            allowed_relay_sources: vec!["10.0.0.0/8".parse().unwrap()],
            allow_relay_if_authenticated: true,
        }
    }

    #[test]
    fn routing_forms_are_judged_by_their_real_destination() {
        let d = |a: &str| destination(a);
        let other = Destination::Domain("other.example".into());
        assert_eq!(
            d("user@Local.Example"),
            Destination::Domain("local.example".into())
        );
        assert_eq!(d("user%other.example@local.example"), other);
        assert_eq!(d("\"user@other.example\"@local.example"), other);
        assert_eq!(d("@route.example:user@other.example"), other);
        assert_eq!(d("@a.example,@b.example:user@other.example"), other);
        assert_eq!(d("other.example!user"), other);
        assert_eq!(d("other.example!user@local.example"), other);
        assert_eq!(d("user@other.example@local.example"), other);
        assert_eq!(d("<user%other.example@local.example>"), other);
        assert_eq!(d("postmaster"), Destination::Here);
    }

    #[test]
    fn untrusted_clients_may_send_only_to_local_domains() {
        let r = relay();
        assert!(r.check("user@local.example").is_none());
        assert!(r.check("user@sub.corp.example").is_none());
        assert!(
            r.check("user@corp.example").is_some(),
            "*. covers subdomains only"
        );
        assert!(r.check("user@notcorp.example").is_some());
        for attempt in [
            "user@other.example",
            "user%other.example@local.example",
            "\"user@other.example\"@local.example",
            "@local.example:user@other.example",
            "other.example!user",
            "user@other.example@local.example",
        ] {
            let reply = r
                .check(attempt)
                .unwrap_or_else(|| panic!("{attempt} must be refused"));
            assert_eq!(reply.enhanced(), Some("5.7.1"));
            assert!(reply.text().contains("Relay access denied"));
        }
    }

    #[test]
    fn relay_sources_and_authenticated_clients_may_relay() {
        let r = relay();
        assert!(r.may_relay(Some("10.1.2.3".parse().unwrap()), false));
        assert!(r.may_relay(Some("::ffff:10.1.2.3".parse().unwrap()), false));
        assert!(!r.may_relay(Some("192.0.2.1".parse().unwrap()), false));
        assert!(r.may_relay(Some("192.0.2.1".parse().unwrap()), true));
        let strict = RelayRestriction {
            allow_relay_if_authenticated: false,
            ..relay()
        };
        assert!(!strict.may_relay(Some("192.0.2.1".parse().unwrap()), true));
    }
}
