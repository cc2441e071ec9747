//! `[[organization]]` and `default_organization`: the organizations one gateway serves
//! (src/engine/organizations.rs). Each claims its domains (a domain belongs to one
//! organization), may have its own relay targets and AUTH users; rulesets and DKIM signers
//! name the organizations they serve.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative, valid_hostname};
use crate::engine::address::DomainPattern;
use crate::engine::authentication::DmarcMode;
use crate::engine::checks::spf::SpfAction;
use crate::engine::organizations::{Organization, Organizations};
use crate::relay::Delivery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OrganizationSection {
    name: Spanned<String>,
    domains: Spanned<Vec<String>>,
    /// Its own route: names of `[[relay_target]]`s.
    relay_targets: Option<Spanned<Vec<String>>>,
    /// Its AUTH users (proxy door), `name:HASH` lines as `[proxy] auth_users_file`.
    auth_users_file: Option<Spanned<PathBuf>>,
    /// Its message size limit, below `[scan] max_message_size`.
    max_message_size: Option<std::num::NonZeroU64>,
    /// How long its tracking records are kept, instead of `[tracking] retention_days`.
    tracking_retention_days: Option<u32>,
    /// What SPF results do to its recipients, instead of `[spf]`'s.
    spf_fail_action: Option<SpfAction>,
    spf_softfail_action: Option<SpfAction>,
    /// Whether DMARC failures are enforced on its recipients' mail.
    dmarc: Option<Spanned<DmarcMode>>,
    /// What a DNSBL listing of the client does to its recipients.
    rbl_hit_action: Option<crate::engine::organizations::RblHitAction>,
}

/// The organizations, before the rulesets and signers that name them are known; with the
/// users files the proxy is to load, by organization.
pub(super) struct Compiled {
    pub organizations: Organizations,
    pub users_files: Vec<(String, Spanned<PathBuf>)>,
    /// Organizations with their own `tracking_retention_days`.
    pub retention: Vec<(String, u32)>,
    /// Where the first organization's `dmarc` is written, if one is.
    pub dmarc_span: Option<std::ops::Range<usize>>,
}

impl Compiled {
    pub fn names(&self) -> Vec<String> {
        self.organizations
            .list
            .iter()
            .map(|o| o.name.clone())
            .collect()
    }
}

pub(super) fn compile(
    sections: Vec<OrganizationSection>,
    default: Option<Spanned<String>>,
    delivery: &Delivery,
    config_dir: Option<&Path>,
) -> Result<Compiled, Invalid> {
    let mut list: Vec<Organization> = Vec::new();
    let mut users_files = Vec::new();
    let mut retention = Vec::new();
    let mut dmarc_span = None;
    // Every domain claimed, by whom: a domain of two organizations is refused.
    let mut claimed: HashMap<String, String> = HashMap::new();
    for (i, s) in sections.into_iter().enumerate() {
        let key = |k: &str| format!("organization[{i}].{k}");
        let name = s.name.get_ref().clone();
        let printable = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !printable {
            return Err((
                s.name.span(),
                key("name"),
                format!(
                    "{name:?} is not an organization name: 1 to 64 letters, digits, '-', '_' or '.' (it is a metrics label and a tracking value)"
                ),
            ));
        }
        if list.iter().any(|o| o.name == name) {
            return Err((
                s.name.span(),
                key("name"),
                format!("organization {name:?} is defined twice; names must be unique"),
            ));
        }
        if s.domains.get_ref().is_empty() {
            return Err((
                s.domains.span(),
                key("domains"),
                "an organization claims at least one domain".into(),
            ));
        }
        let mut domains = Vec::new();
        for d in s.domains.get_ref() {
            let pattern = DomainPattern::new(d);
            let text = pattern.to_string();
            let bare = text.strip_prefix("*.").unwrap_or(&text);
            if !valid_hostname(bare) || pattern.is_any() {
                return Err((
                    s.domains.span(),
                    key("domains"),
                    format!("{d:?} is not a domain: write \"example.com\" or \"*.example.com\""),
                ));
            }
            if let Some(other) = claimed.insert(text.clone(), name.clone()) {
                return Err((
                    s.domains.span(),
                    key("domains"),
                    format!(
                        "{text} is claimed by organization {other:?} too: a domain belongs to one organization"
                    ),
                ));
            }
            domains.push(pattern);
        }
        let own_route = match s.relay_targets {
            Some(names) => {
                delivery
                    .through(names.get_ref())
                    .map_err(|e| (names.span(), key("relay_targets"), e.to_string()))?;
                names.into_inner()
            }
            None => Vec::new(),
        };
        if let Some(file) = s.auth_users_file {
            let span = file.span();
            let path = relative(file.into_inner(), config_dir);
            users_files.push((name.clone(), Spanned::new(span, path)));
        }
        if let Some(dmarc) = &s.dmarc {
            dmarc_span.get_or_insert(dmarc.span());
        }
        if let Some(days) = s.tracking_retention_days {
            retention.push((name.clone(), days));
        }
        list.push(Organization {
            name,
            domains,
            own_route,
            has_rulesets: false,
            max_message_size: s.max_message_size.map(std::num::NonZeroU64::get),
            spf_fail_action: s.spf_fail_action,
            spf_softfail_action: s.spf_softfail_action,
            dmarc: s.dmarc.map(Spanned::into_inner),
            rbl_hit_action: s.rbl_hit_action,
        });
    }
    let default = match default {
        Some(name) => match list.iter().position(|o| o.name == *name.get_ref()) {
            Some(id) => Some(id),
            None => {
                return Err((
                    name.span(),
                    "default_organization".into(),
                    format!("no [[organization]] is named {:?}", name.get_ref()),
                ));
            }
        },
        None => None,
    };
    let ordinary_route = delivery
        .targets
        .iter()
        .filter(|t| !t.divert_only)
        .map(|t| t.name.clone())
        .collect();
    Ok(Compiled {
        organizations: Organizations {
            list,
            default,
            users: HashMap::new(),
            profiles: HashMap::new(),
            ordinary_route,
        },
        users_files,
        retention,
        dmarc_span,
    })
}

/// One `organization` key (a signer's, a sealer's, a profile's): its name when it names one
/// that exists; `key` is the key's full name for the error.
pub(super) fn named(
    name: Option<Spanned<String>>,
    known: &[String],
    key: String,
) -> Result<Option<String>, Invalid> {
    let Some(name) = name else {
        return Ok(None);
    };
    match unknown(std::slice::from_ref(name.get_ref()), known) {
        Some(m) => Err((name.span(), key, m)),
        None => Ok(Some(name.into_inner())),
    }
}

/// An unknown name in a list of organizations (`organizations` of a ruleset, `organization`
/// of a signer), said with the names there are.
pub(super) fn unknown(names: &[String], known: &[String]) -> Option<String> {
    names.iter().find(|n| !known.contains(n)).map(|n| {
        if known.is_empty() {
            format!("no [[organization]] is named {n:?} (none is configured)")
        } else {
            format!(
                "no [[organization]] is named {n:?} (known: {})",
                known.join(", ")
            )
        }
    })
}
