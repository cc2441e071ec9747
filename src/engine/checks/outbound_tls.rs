//! Outbound TLS per destination (`[[outbound_tls_policy]]`, seed 004's mandatory TLS toward a
//! recipient domain or for a connection profile): what a relay target connection must have
//! negotiated before it may carry a recipient — TLS at all, a lowest version, a cipher
//! strength, and a certificate carrying one of a list of names. Encryption rules with
//! `recipient_encryption = "required"` ask for the first of these only.

use std::fmt;

use serde::Deserialize;

use crate::engine::address::{Address, DomainPattern};

/// Lowest TLS version.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// "Minimum cipher strength".
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum CipherStrength {
    /// Whatever was negotiated.
    Any,
    /// No export, NULL, RC4 or single-DES suites (CBC with 128 bits or more passes).
    #[default]
    Medium,
    /// AEAD (GCM, CCM, ChaCha20-Poly1305) with forward secrecy (ECDHE/DHE, or TLS 1.3).
    High,
}

impl CipherStrength {
    /// The strength of a suite, by its IANA name (`TLS13_AES_256_GCM_SHA384`,
    /// `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`, `TLS_RSA_WITH_AES_128_CBC_SHA`).
    pub fn of_suite(name: &str) -> Self {
        let n = name.to_ascii_uppercase();
        let aead = ["GCM", "CCM", "CHACHA20"].iter().any(|a| n.contains(a));
        let forward_secret = n.starts_with("TLS13_") || n.contains("ECDHE") || n.contains("DHE_");
        let weak = ["NULL", "EXPORT", "RC4", "_DES_", "DES40", "ANON"]
            .iter()
            .any(|w| n.contains(w));
        if aead && forward_secret && !weak {
            Self::High
        } else if !weak {
            Self::Medium
        } else {
            Self::Any
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// What a connection must have negotiated to carry a recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsRequirement {
    /// What asks for it, for the log: `encryption rule` or the policy's name.
    pub by: String,
    pub min_version: MinVersion,
    pub strength: CipherStrength,
    /// The server certificate must carry one of these names (SAN first, CN when it has no
    /// DNS SAN); empty: only the target's host name, which is always checked.
    pub names: Vec<String>,
}

impl TlsRequirement {
    /// TLS with a validated certificate, nothing more (an encryption rule's `required`).
    pub fn encrypted(by: &str) -> Self {
        Self {
            by: by.to_owned(),
            min_version: MinVersion::Tls12,
            strength: CipherStrength::Any,
            names: Vec::new(),
        }
    }

    /// Why a connection with this TLS version (`TLSv1.2`, `TLSv1.3`), suite and certificate
    /// names (DNS SANs, then the subject's CN) does not meet the requirement; `None` when it
    /// does.
    pub fn unmet(
        &self,
        version: &str,
        suite: &str,
        sans: &[String],
        cn: Option<&str>,
    ) -> Option<String> {
        let negotiated = if version == "TLSv1.3" {
            MinVersion::Tls13
        } else {
            MinVersion::Tls12
        };
        if negotiated < self.min_version {
            return Some(format!(
                "{}: {version} is below the minimum, TLS 1.3",
                self.by
            ));
        }
        let strength = CipherStrength::of_suite(suite);
        if strength < self.strength {
            return Some(format!(
                "{}: cipher {suite} is {} strength, {} required",
                self.by,
                strength.name(),
                self.strength.name()
            ));
        }
        if !self.names.is_empty() {
            let carried: Vec<&str> = if sans.is_empty() {
                cn.into_iter().collect()
            } else {
                sans.iter().map(String::as_str).collect()
            };
            let ok = self
                .names
                .iter()
                .any(|want| carried.iter().any(|have| name_matches(have, want)));
            if !ok {
                return Some(format!(
                    "{}: the certificate names {}, none of {}",
                    self.by,
                    carried.join(", "),
                    self.names.join(", ")
                ));
            }
        }
        None
    }
}

/// A certificate name (`mx.example.org`, or `*.example.org` for one label) against a wanted
/// name, any case.
fn name_matches(have: &str, want: &str) -> bool {
    let (have, want) = (
        have.to_ascii_lowercase(),
        want.trim_end_matches('.').to_ascii_lowercase(),
    );
    match have.strip_prefix("*.") {
        Some(parent) => want
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => have == want,
    }
}

impl fmt::Display for TlsRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "TLS {}+, {} ciphers",
            match self.min_version {
                MinVersion::Tls12 => "1.2",
                MinVersion::Tls13 => "1.3",
            },
            self.strength.name()
        )?;
        if !self.names.is_empty() {
            write!(f, ", certificate for {}", self.names.join(" or "))?;
        }
        Ok(())
    }
}

/// The name in `certificate_names` that stands for the recipient's domain.
pub const RECIPIENT_DOMAIN: &str = "recipient_domain";

/// One policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundTlsPolicy {
    pub name: String,
    pub recipient_domains: Vec<DomainPattern>,
    /// Connection profiles (by name) whose clients' mail it covers.
    pub connection_profiles: Vec<String>,
    pub min_version: MinVersion,
    pub strength: CipherStrength,
    /// Names the certificate must carry one of; [`RECIPIENT_DOMAIN`] stands for the
    /// recipient's domain.
    pub certificate_names: Vec<String>,
}

/// The policies, in order: the first that covers a recipient decides.
#[derive(Clone, Debug, Default)]
pub struct OutboundTlsPolicies(pub Vec<OutboundTlsPolicy>);

impl OutboundTlsPolicies {
    /// The requirement for `recipient` from a client of `profile`, if a policy covers it.
    pub fn for_recipient(&self, recipient: &str, profile: Option<&str>) -> Option<TlsRequirement> {
        let domain = Address::parse(recipient).domain;
        let policy = self.0.iter().find(|p| {
            p.recipient_domains.iter().any(|d| d.matches(domain))
                || profile.is_some_and(|name| p.connection_profiles.iter().any(|c| c == name))
        })?;
        let names = policy
            .certificate_names
            .iter()
            .map(|n| {
                if n == RECIPIENT_DOMAIN {
                    domain.to_ascii_lowercase()
                } else {
                    n.to_ascii_lowercase()
                }
            })
            .collect();
        Some(TlsRequirement {
            by: format!("outbound TLS policy {:?}", policy.name),
            min_version: policy.min_version,
            strength: policy.strength,
            names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_have_the_strength_their_names_say() {
        use CipherStrength::*;
        assert_eq!(CipherStrength::of_suite("TLS13_AES_256_GCM_SHA384"), High);
        assert_eq!(
            CipherStrength::of_suite("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
            High
        );
        assert_eq!(
            CipherStrength::of_suite("TLS_RSA_WITH_AES_128_GCM_SHA256"),
            Medium
        );
        assert_eq!(
            CipherStrength::of_suite("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
            Medium
        );
        assert_eq!(CipherStrength::of_suite("TLS_RSA_WITH_RC4_128_SHA"), Any);
    }

    fn policy(names: &[&str]) -> OutboundTlsPolicies {
        OutboundTlsPolicies(vec![OutboundTlsPolicy {
            name: "bank".into(),
            recipient_domains: vec![DomainPattern::new("bank.example")],
            connection_profiles: vec!["partners".into()],
            min_version: MinVersion::Tls13,
            strength: CipherStrength::High,
            certificate_names: names.iter().map(|n| (*n).to_owned()).collect(),
        }])
    }

    #[test]
    fn a_policy_covers_its_domains_and_profiles() {
        let p = policy(&["mx.bank.example", RECIPIENT_DOMAIN]);
        let r = p.for_recipient("a@Bank.Example", None).unwrap();
        assert_eq!(r.names, ["mx.bank.example", "bank.example"]);
        assert!(p.for_recipient("a@other.example", None).is_none());
        assert!(
            p.for_recipient("a@other.example", Some("partners"))
                .is_some()
        );
    }

    #[test]
    fn version_cipher_and_names_are_each_checked() {
        let r = policy(&["mx.bank.example"])
            .for_recipient("a@bank.example", None)
            .unwrap();
        let sans = vec!["mx.bank.example".to_owned()];
        assert_eq!(
            r.unmet("TLSv1.3", "TLS13_AES_128_GCM_SHA256", &sans, None),
            None
        );
        assert!(
            r.unmet(
                "TLSv1.2",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                &sans,
                None
            )
            .unwrap()
            .contains("below the minimum")
        );
        // A CBC suite is below min_cipher_strength = "high" (rustls itself never negotiates
        // one, so this is shown here rather than end to end).
        let weak = r
            .unmet("TLSv1.3", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", &sans, None)
            .unwrap();
        assert!(
            weak.contains("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
            "{weak}"
        );
        let other = vec!["localhost".to_owned()];
        assert!(
            r.unmet(
                "TLSv1.3",
                "TLS13_AES_128_GCM_SHA256",
                &other,
                Some("mx.bank.example")
            )
            .unwrap()
            .contains("none of mx.bank.example")
        );
        // The CN counts only without DNS SANs.
        assert_eq!(
            r.unmet(
                "TLSv1.3",
                "TLS13_AES_128_GCM_SHA256",
                &[],
                Some("MX.bank.example")
            ),
            None
        );
        let wild = vec!["*.bank.example".to_owned()];
        assert_eq!(
            r.unmet("TLSv1.3", "TLS13_AES_128_GCM_SHA256", &wild, None),
            None
        );
        let mut weak = r.clone();
        weak.min_version = MinVersion::Tls12;
        assert!(
            weak.unmet("TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", &sans, None)
                .unwrap()
                .contains("medium strength, high required")
        );
    }
}
