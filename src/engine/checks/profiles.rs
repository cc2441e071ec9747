//! Connection profiles: who a client is decides which rules apply to it.
//!
//! A profile is chosen by the client's address (IPv4/IPv6 CIDR), then by its verified host
//! name, and, failing both, by the sender's domain at MAIL FROM. As on other gateways, a profile
//! chosen by sender domain governs inbound TLS only, never relaying or checks.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::engine::address::DomainPattern;

/// "Inbound Relay Control".
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RelayControl {
    /// The profile does not change relaying: the global `[relay]` rules apply.
    #[default]
    None,
    /// Internal mail servers: may send to any domain; connection checks skipped by default.
    Full,
    /// External hosts: may send to local domains only; checks run.
    RestrictedExternal,
    /// Internal hosts: may send to local domains only; checks skipped by default.
    RestrictedInternal,
    /// Nothing is accepted.
    Blocked,
}

/// A client host entry: a network, or a host name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientHost {
    Network(IpNet),
    Name(String),
}

/// One compiled profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionProfile {
    pub name: String,
    pub client_hosts: Vec<ClientHost>,
    /// Sender domains (patterns, as everywhere).
    pub sender_domains: Vec<DomainPattern>,
    pub relay_control: RelayControl,
    /// Run the RBL check for this profile's clients.
    pub rbl: bool,
    /// Run the SPF check for this profile's clients.
    pub spf: bool,
    /// Inbound mandatory TLS: without TLS, MAIL gets 530 5.7.0.
    pub require_tls: bool,
    /// What is done with a sender from outside claiming a local domain; `None`: `[relay]
    /// spoof_detection`.
    pub spoof_detection: Option<super::spoof::SpoofAction>,
}

impl ConnectionProfile {
    /// Whether connection checks run by default under a relay control.
    pub fn checks_by_default(relay_control: RelayControl) -> bool {
        !matches!(
            relay_control,
            RelayControl::Full | RelayControl::RestrictedInternal
        )
    }
}

/// The profiles, in configuration order.
#[derive(Clone, Debug, Default)]
pub struct Profiles(pub Vec<ConnectionProfile>);

impl Profiles {
    /// The profile of a client: by address first, then by verified host name.
    pub fn for_client(&self, ip: Option<IpAddr>, name: Option<&str>) -> Option<usize> {
        let ip = ip.map(|ip| ip.to_canonical());
        let by_address = ip.and_then(|ip| {
            self.0.iter().position(|p| {
                p.client_hosts
                    .iter()
                    .any(|h| matches!(h, ClientHost::Network(net) if net.contains(&ip)))
            })
        });
        by_address.or_else(|| {
            let name = name?.trim_end_matches('.');
            self.0.iter().position(|p| {
                p.client_hosts
                    .iter()
                    .any(|h| matches!(h, ClientHost::Name(n) if n.eq_ignore_ascii_case(name)))
            })
        })
    }

    /// Whether some profile names a client by host name: only then does a door without an
    /// MTA's verified name (the proxy) look the client's name up.
    pub fn names_hosts(&self) -> bool {
        self.0.iter().any(|p| {
            p.client_hosts
                .iter()
                .any(|h| matches!(h, ClientHost::Name(_)))
        })
    }

    /// Whether some profile refuses its clients at connect (`relay_control = "blocked"`).
    pub fn blocks_any(&self) -> bool {
        self.0
            .iter()
            .any(|p| p.relay_control == RelayControl::Blocked)
    }

    /// The profile chosen by the sender's domain (for inbound TLS only).
    pub fn for_sender(&self, sender: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|p| p.sender_domains.iter().any(|d| d.matches_address(sender)))
    }

    pub fn get(&self, index: usize) -> &ConnectionProfile {
        &self.0[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, hosts: &[&str], senders: &[&str]) -> ConnectionProfile {
        ConnectionProfile {
            name: name.into(),
            client_hosts: hosts
                .iter()
                .map(|h| match h.parse() {
                    Ok(net) => ClientHost::Network(net),
                    Err(_) => ClientHost::Name(h.to_string()),
                })
                .collect(),
            sender_domains: senders.iter().map(|s| DomainPattern::new(s)).collect(),
            relay_control: RelayControl::Full,
            rbl: false,
            spf: false,
            require_tls: false,
            spoof_detection: None,
        }
    }

    #[test]
    fn address_first_then_host_name_then_sender_domain() {
        let p = Profiles(vec![
            profile("by-name", &["mx.partner.example"], &[]),
            profile("by-net", &["192.0.2.0/24", "2001:db8::/32"], &[]),
            profile("by-sender", &[], &["tls.example"]),
        ]);
        let ip = |s: &str| Some(s.parse().unwrap());
        // The address wins over the name even though the name profile comes first.
        assert_eq!(
            p.for_client(ip("192.0.2.9"), Some("mx.partner.example")),
            Some(1)
        );
        assert_eq!(p.for_client(ip("::ffff:192.0.2.9"), None), Some(1));
        assert_eq!(p.for_client(ip("2001:db8::1"), None), Some(1));
        assert_eq!(
            p.for_client(ip("198.51.100.1"), Some("MX.Partner.Example.")),
            Some(0)
        );
        assert_eq!(p.for_client(ip("198.51.100.1"), None), None);
        assert_eq!(p.for_sender("a@TLS.example"), Some(2));
        assert_eq!(p.for_sender("a@other.example"), None);
        assert!(p.names_hosts());
        assert!(!Profiles(p.0[1..].to_vec()).names_hosts());
    }

    #[test]
    fn internal_profiles_skip_checks_by_default() {
        assert!(!ConnectionProfile::checks_by_default(RelayControl::Full));
        assert!(!ConnectionProfile::checks_by_default(
            RelayControl::RestrictedInternal
        ));
        assert!(ConnectionProfile::checks_by_default(
            RelayControl::RestrictedExternal
        ));
        assert!(ConnectionProfile::checks_by_default(RelayControl::None));
    }
}
