//! `[reputation]` and `[[reputation.zone]]`: the client's score from its own misbehaviour and
//! from reputation zones, and when a low score refuses it.

use std::num::NonZeroU64;
use std::time::Duration;

use serde::Deserialize;

use crate::engine::checks::reputation::{Penalties, Reputation, ReputationZone, ZoneKind};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ReputationSection {
    enabled: bool,
    reject_match: bool,
    tempfail_on_lookup_failure: bool,
    threshold: i32,
    half_life: NonZeroU64,
    invalid_command_penalty: u32,
    dictionary_attack_penalty: u32,
    rbl_hit_penalty: u32,
    refused_recipient_penalty: u32,
    #[serde(rename = "zone")]
    zones: Vec<ReputationZoneSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReputationZoneSection {
    zone: String,
    kind: ZoneKind,
    #[serde(default)]
    score: i32,
}

impl Default for ReputationSection {
    fn default() -> Self {
        Self {
            enabled: true,
            reject_match: true,
            tempfail_on_lookup_failure: true,
            threshold: -50,
            half_life: NonZeroU64::new(3600).expect("nonzero"),
            invalid_command_penalty: 1,
            dictionary_attack_penalty: 20,
            rbl_hit_penalty: 25,
            refused_recipient_penalty: 2,
            zones: Vec::new(),
        }
    }
}

/// The reputation check; `None` when it is disabled. Penalties lower the score.
pub(super) fn compile(r: ReputationSection, help_url: &Option<String>) -> Option<Reputation> {
    r.enabled.then(|| Reputation {
        zones: r
            .zones
            .into_iter()
            .map(|z| ReputationZone {
                zone: z.zone.trim_end_matches('.').to_owned(),
                kind: z.kind,
                score: z.score,
            })
            .collect(),
        penalties: Penalties {
            invalid_command: -f64::from(r.invalid_command_penalty),
            dictionary_attack: -f64::from(r.dictionary_attack_penalty),
            rbl_hit: -f64::from(r.rbl_hit_penalty),
            refused_recipient: -f64::from(r.refused_recipient_penalty),
        },
        half_life: Duration::from_secs(r.half_life.get()),
        threshold: f64::from(r.threshold),
        reject_match: r.reject_match,
        tempfail_on_lookup_failure: r.tempfail_on_lookup_failure,
        help_url: help_url.clone(),
    })
}
