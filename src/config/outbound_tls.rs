//! `[[outbound_tls_policy]]`: what connections to relay targets must have negotiated, per
//! recipient domain or connection profile (src/engine/checks/outbound_tls.rs).

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::engine::address::DomainPattern;
use crate::engine::checks::outbound_tls::{
    CipherStrength, MinVersion, OutboundTlsPolicies, OutboundTlsPolicy, RECIPIENT_DOMAIN,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OutboundTlsPolicySection {
    name: Option<String>,
    #[serde(default)]
    recipient_domains: Vec<String>,
    #[serde(default)]
    connection_profiles: Vec<Spanned<String>>,
    #[serde(default)]
    min_version: MinVersion,
    #[serde(default)]
    min_cipher_strength: CipherStrength,
    #[serde(default)]
    certificate_names: Vec<Spanned<String>>,
    #[serde(default = "super::yes")]
    enabled: bool,
}

pub(super) fn compile(
    sections: Vec<Spanned<OutboundTlsPolicySection>>,
    profiles: &[String],
) -> Result<OutboundTlsPolicies, Invalid> {
    let mut policies = Vec::new();
    for (i, section) in sections.into_iter().enumerate() {
        let span = section.span();
        let s = section.into_inner();
        let key = |k: &str| format!("outbound_tls_policy[{i}].{k}");
        if s.recipient_domains.is_empty() && s.connection_profiles.is_empty() {
            return Err((
                span,
                format!("outbound_tls_policy[{i}]"),
                "name the recipient_domains or connection_profiles it covers".to_owned(),
            ));
        }
        for p in &s.connection_profiles {
            if !profiles.contains(p.get_ref()) {
                return Err((
                    p.span(),
                    key("connection_profiles"),
                    format!("no [[connection_profile]] is named {:?}", p.get_ref()),
                ));
            }
        }
        for n in &s.certificate_names {
            let name = n.get_ref();
            let plain = name.strip_prefix("*.").unwrap_or(name);
            let valid = name == RECIPIENT_DOMAIN
                || (!plain.is_empty()
                    && plain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
            if !valid {
                return Err((
                    n.span(),
                    key("certificate_names"),
                    format!(
                        "{name:?} is not a host name; use a name like mx.example.org, or {RECIPIENT_DOMAIN:?} for the recipient's domain"
                    ),
                ));
            }
        }
        if !s.enabled {
            continue;
        }
        policies.push(OutboundTlsPolicy {
            name: s.name.unwrap_or_else(|| format!("policy {}", i + 1)),
            recipient_domains: s
                .recipient_domains
                .iter()
                .map(|d| DomainPattern::new(d))
                .collect(),
            connection_profiles: s
                .connection_profiles
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            min_version: s.min_version,
            strength: s.min_cipher_strength,
            certificate_names: s
                .certificate_names
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        });
    }
    Ok(OutboundTlsPolicies(policies))
}
