//! IP reputation (options "Enable IP reputation service", "Reject IP reputation match", "4xx on
//! IP reputation tmpfail").
//!
//! A client's reputation is the sum of what reputation zones say of it (DNS allow lists such as
//! DNSWL add a bonus when they list it; scored lists answer `127.x.y.SCORE` with a score from
//! 0 to 100, read as SCORE - 50) and of a local reputation learned from its behaviour here:
//! invalid commands, dictionary attacks, RBL hits and refused recipients lower it, and it decays
//! back towards neutral with a half-life. Below the threshold the client is refused or delayed.
//!
//! The local reputation lives in the engine's [`Store`](crate::engine::ports::Store) port, so
//! that a shared store can serve a fleet of gateways; zones are asked with the one DNSBL
//! lookup, [`dnsbl::query`].

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;

use super::dnsbl::{self, DnsblError, label};
use crate::engine::ports::Resolver;
use crate::engine::reply::SmtpReply;
use crate::engine::verdict::Verdict;

/// Behaviour that lowers a client's local reputation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    InvalidCommand,
    DictionaryAttack,
    RblHit,
    RefusedRecipient,
}

/// How a reputation zone's answer is read.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ZoneKind {
    /// Listed: add the zone's `score` (an allow list adds a positive one).
    Allow,
    /// The answer's last octet is a score from 0 to 100, read as octet - 50.
    Score,
}

/// One reputation zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReputationZone {
    pub zone: String,
    pub kind: ZoneKind,
    /// For `allow` zones: what a listing adds.
    pub score: i32,
}

/// Penalties of the local reputation, per event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalties {
    pub invalid_command: f64,
    pub dictionary_attack: f64,
    pub rbl_hit: f64,
    pub refused_recipient: f64,
}

/// The compiled reputation check.
#[derive(Debug)]
pub struct Reputation {
    pub zones: Vec<ReputationZone>,
    pub penalties: Penalties,
    pub half_life: Duration,
    /// At or below this score the client is refused.
    pub threshold: f64,
    /// "Reject IP reputation match": 554 when true, 421 otherwise.
    pub reject_match: bool,
    /// "4xx on IP reputation tmpfail": 451 when a zone cannot be asked.
    pub tempfail_on_lookup_failure: bool,
    pub help_url: Option<String>,
}

/// What the reputation of one client came to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReputationResult {
    pub local: f64,
    /// (zone, contribution)
    pub zones: Vec<(String, f64)>,
    /// Zones that could not be asked.
    pub failed: Vec<String>,
    /// Zones left out because they answered with an error code, and what they said.
    pub left_out: Vec<(String, String)>,
}

impl ReputationResult {
    pub fn total(&self) -> f64 {
        self.local + self.zones.iter().map(|(_, s)| s).sum::<f64>()
    }
}

impl Reputation {
    /// The penalty of an event.
    pub fn penalty(&self, behaviour: Behaviour) -> f64 {
        match behaviour {
            Behaviour::InvalidCommand => self.penalties.invalid_command,
            Behaviour::DictionaryAttack => self.penalties.dictionary_attack,
            Behaviour::RblHit => self.penalties.rbl_hit,
            Behaviour::RefusedRecipient => self.penalties.refused_recipient,
        }
    }

    /// Adds what every zone (asked at once) says about `ip` to its `local` reputation.
    pub async fn check(
        &self,
        resolver: &Arc<dyn Resolver>,
        local: f64,
        ip: IpAddr,
    ) -> ReputationResult {
        let mut result = ReputationResult {
            local,
            ..ReputationResult::default()
        };
        let mut lookups = JoinSet::new();
        for zone in &self.zones {
            let (resolver, zone) = (resolver.clone(), zone.clone());
            let label = label(ip);
            lookups.spawn(async move {
                let answer = dnsbl::query(resolver.as_ref(), &zone.zone, &label).await;
                (zone, answer)
            });
        }
        while let Some(joined) = lookups.join_next().await {
            let Ok((zone, answer)) = joined else { continue };
            match answer {
                Ok(answers) => {
                    if let Some(a) = answers.first() {
                        let contribution = match zone.kind {
                            ZoneKind::Allow => f64::from(zone.score),
                            ZoneKind::Score => f64::from(a.octets()[3].min(100)) - 50.0,
                        };
                        result.zones.push((zone.zone, contribution));
                    }
                }
                // An error answer is no score: the zone is left out, as the RBL check
                // leaves it out by default, and the log says why.
                Err(why @ DnsblError::ErrorCode(_)) => {
                    result.left_out.push((zone.zone, why.to_string()));
                }
                Err(DnsblError::Lookup(_)) => result.failed.push(zone.zone),
            }
        }
        result
    }

    /// The verdict for a result.
    pub fn verdict(&self, ip: IpAddr, result: &ReputationResult) -> Option<Verdict> {
        let total = result.total();
        let help = self
            .help_url
            .as_ref()
            .map(|u| format!("; see {u}"))
            .unwrap_or_default();
        if total <= self.threshold {
            let text = format!(
                "Client [{ip}] has a poor reputation here ({total:.0}), try again later{help}"
            );
            let reply = if self.reject_match {
                SmtpReply::new(554, Some("5.7.1"), &text.replace(", try again later", ""))
            } else {
                SmtpReply::new(421, Some("4.7.1"), &text)
            };
            return reply.ok().map(Verdict::refuse);
        }
        if !result.failed.is_empty() && self.tempfail_on_lookup_failure {
            let text = format!(
                "Temporary failure checking the reputation of client [{ip}], try again later{help}"
            );
            return SmtpReply::new(451, Some("4.7.1"), &text)
                .ok()
                .map(Verdict::refuse);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn threshold_decides_and_lookup_failures_defer() {
        let rep = Reputation {
            zones: vec![],
            penalties: Penalties {
                invalid_command: -1.0,
                dictionary_attack: -20.0,
                rbl_hit: -25.0,
                refused_recipient: -2.0,
            },
            half_life: HOUR,
            threshold: -20.0,
            reject_match: true,
            tempfail_on_lookup_failure: true,
            help_url: None,
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let bad = ReputationResult {
            local: -30.0,
            zones: vec![("wl.test".into(), 5.0)],
            ..ReputationResult::default()
        };
        assert_eq!(rep.verdict(ip, &bad).unwrap().reply().unwrap().code(), 554);
        let allowed = ReputationResult {
            local: -30.0,
            zones: vec![("wl.test".into(), 50.0)],
            ..ReputationResult::default()
        };
        assert!(
            rep.verdict(ip, &allowed).is_none(),
            "an allow list offsets penalties"
        );
        let failed = ReputationResult {
            failed: vec!["score.test".into()],
            ..ReputationResult::default()
        };
        assert_eq!(
            rep.verdict(ip, &failed).unwrap().reply().unwrap().code(),
            451
        );
        let delay = Reputation {
            reject_match: false,
            ..rep
        };
        assert_eq!(
            delay.verdict(ip, &bad).unwrap().reply().unwrap().code(),
            421
        );
    }
}
