//! `[rbl]` and `[[rbl.zone]]`: which DNS blocklists the connection stage asks about the
//! client, and what a listing does.

use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use crate::engine::checks::Rbl;
use crate::engine::checks::rbl::{AnswerRange, HitAction, LookupFailureAction, Zone};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RblSection {
    enabled: bool,
    skip_local_ip: bool,
    hit_action: HitAction,
    hit_threshold: NonZeroU32,
    lookup_failure_action: LookupFailureAction,
    self_test_interval: NonZeroU64,
    /// Unset: [`default_zones`]. Kept with its line: only `zone = []` leaves the list empty.
    #[serde(rename = "zone")]
    zones: Option<Spanned<Vec<RblZoneSection>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RblZoneSection {
    zone: String,
    #[serde(default)]
    answers: Vec<AnswerRange>,
    #[serde(default = "one")]
    weight: u32,
}

fn one() -> u32 {
    1
}

/// The zones used when the file has no `zone` key at all (Spamhaus SBL-XBL and SpamCop, the
/// defaults other gateways ship).
fn default_zones() -> Vec<RblZoneSection> {
    let zone = |name: &str| RblZoneSection {
        zone: name.to_owned(),
        answers: Vec::new(),
        weight: 1,
    };
    vec![zone("sbl-xbl.spamhaus.org"), zone("bl.spamcop.net")]
}

impl Default for RblSection {
    fn default() -> Self {
        Self {
            enabled: false,
            skip_local_ip: true,
            hit_action: HitAction::Delay,
            hit_threshold: NonZeroU32::new(1).expect("nonzero"),
            lookup_failure_action: LookupFailureAction::Ignore,
            self_test_interval: NonZeroU64::new(3600).expect("nonzero"),
            zones: None,
        }
    }
}

/// The RBL check; `None` when it is disabled.
pub(super) fn compile(r: RblSection, help_url: &Option<String>) -> Result<Option<Rbl>, Invalid> {
    if !r.enabled {
        return Ok(None);
    }
    let zones = match r.zones {
        Some(zones) if zones.get_ref().is_empty() => {
            return Err((
                zones.span(),
                "rbl.zone".into(),
                "RBL is enabled but no [[rbl.zone]] is listed; add one or set enabled = false"
                    .to_owned(),
            ));
        }
        Some(zones) => zones.into_inner(),
        None => default_zones(),
    };
    Ok(Some(Rbl {
        zones: zones
            .into_iter()
            .map(|z| {
                Arc::new(Zone::new(
                    z.zone.trim_end_matches('.').to_owned(),
                    z.answers,
                    z.weight,
                ))
            })
            .collect(),
        skip_local_ip: r.skip_local_ip,
        hit_action: r.hit_action,
        hit_threshold: r.hit_threshold.get(),
        lookup_failure_action: r.lookup_failure_action,
        self_test_interval: Duration::from_secs(r.self_test_interval.get()),
        help_url: help_url.clone(),
    }))
}
