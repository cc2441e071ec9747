//! IP reputation (seed: "Enable IP reputation service", "Reject IP reputation match", "4xx on
//! IP reputation tmpfail").
//!
//! A client's reputation is the sum of what reputation zones say of it (DNS allow lists such as
//! DNSWL add a bonus when they list it; scored lists answer `127.x.y.SCORE` with a score from
//! 0 to 100, read as SCORE - 50) and of a local reputation learned from its behaviour here:
//! invalid commands, dictionary attacks, RBL hits and refused recipients lower it, and it decays
//! back towards neutral with a half-life. Below the threshold the client is refused or delayed.
//!
//! The local reputation lives behind [`ReputationStore`], so that a shared store (Redis, say)
//! can serve a fleet of gateways; [`MemoryStore`] serves one process.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::task::JoinSet;
use tracing::warn;

use super::rbl::is_listing_code;
use crate::dns::{Dns, reversed};
use crate::engine::reply::SmtpReply;
use crate::engine::verdict::Verdict;

/// Behaviour that lowers a client's local reputation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    InvalidCommand,
    DictionaryAttack,
    RblHit,
    RefusedRecipient,
}

/// Where local reputations are kept. Scores decay towards 0 with `half_life`.
pub trait ReputationStore: Send + Sync + std::fmt::Debug {
    /// The client's local reputation now.
    fn score(&self, ip: IpAddr, half_life: Duration, now: Instant) -> f64;
    /// Adds `delta` to the client's local reputation.
    fn record(&self, ip: IpAddr, delta: f64, half_life: Duration, now: Instant);
}

/// Local reputations remembered at most by [`MemoryStore`].
const MAX_REMEMBERED: usize = 100_000;

/// An in-process store.
#[derive(Debug, Default)]
pub struct MemoryStore {
    scores: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

fn decayed(score: f64, since: Instant, half_life: Duration, now: Instant) -> f64 {
    let elapsed = now.saturating_duration_since(since).as_secs_f64();
    score * 0.5f64.powf(elapsed / half_life.as_secs_f64().max(1.0))
}

impl ReputationStore for MemoryStore {
    fn score(&self, ip: IpAddr, half_life: Duration, now: Instant) -> f64 {
        let scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        scores
            .get(&ip)
            .map_or(0.0, |(s, t)| decayed(*s, *t, half_life, now))
    }

    fn record(&self, ip: IpAddr, delta: f64, half_life: Duration, now: Instant) {
        let mut scores = self.scores.lock().unwrap_or_else(|e| e.into_inner());
        if scores.len() >= MAX_REMEMBERED && !scores.contains_key(&ip) {
            // Forget what has (nearly) decayed away, then the weakest half.
            scores.retain(|_, (s, t)| decayed(*s, *t, half_life, now).abs() >= 0.5);
            if scores.len() >= MAX_REMEMBERED {
                let mut weakest: Vec<(IpAddr, f64)> = scores
                    .iter()
                    .map(|(ip, (s, t))| (*ip, decayed(*s, *t, half_life, now).abs()))
                    .collect();
                weakest.sort_by(|a, b| a.1.total_cmp(&b.1));
                for (ip, _) in weakest.into_iter().take(MAX_REMEMBERED / 2) {
                    scores.remove(&ip);
                }
            }
        }
        let entry = scores.entry(ip).or_insert((0.0, now));
        *entry = (decayed(entry.0, entry.1, half_life, now) + delta, now);
    }
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
    pub dns: Option<Dns>,
    pub zones: Vec<ReputationZone>,
    pub penalties: Penalties,
    pub half_life: Duration,
    /// At or below this score the client is refused.
    pub threshold: f64,
    /// Seed "Reject IP reputation match": 554 when true, 421 otherwise.
    pub reject_match: bool,
    /// Seed "4xx on IP reputation tmpfail": 451 when a zone cannot be asked.
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
}

impl ReputationResult {
    pub fn total(&self) -> f64 {
        self.local + self.zones.iter().map(|(_, s)| s).sum::<f64>()
    }
}

impl Reputation {
    /// The penalty of an event.
    pub fn penalty(&self, event: Event) -> f64 {
        match event {
            Event::InvalidCommand => self.penalties.invalid_command,
            Event::DictionaryAttack => self.penalties.dictionary_attack,
            Event::RblHit => self.penalties.rbl_hit,
            Event::RefusedRecipient => self.penalties.refused_recipient,
        }
    }

    /// Asks the store and every zone (at once) about `ip`.
    pub async fn check(&self, store: &dyn ReputationStore, ip: IpAddr) -> ReputationResult {
        let mut result = ReputationResult {
            local: store.score(ip, self.half_life, Instant::now()),
            ..ReputationResult::default()
        };
        let Some(dns) = &self.dns else { return result };
        // IPv4-mapped IPv6 addresses are looked up as IPv4, as the RBL check does.
        let ip = ip.to_canonical();
        let mut lookups = JoinSet::new();
        for zone in &self.zones {
            let (dns, zone) = (dns.clone(), zone.clone());
            let name = format!("{}.{}", reversed(ip), zone.zone);
            lookups.spawn(async move { (zone, dns.a(&name).await) });
        }
        while let Some(joined) = lookups.join_next().await {
            let Ok((zone, answer)) = joined else { continue };
            match answer {
                // An error code (127.255.255.0/24: "query refused", or anything outside
                // 127.0.0.0/8) is no answer, never a score: the zone is left out, as the RBL
                // check leaves it out by default, and the log says why.
                Ok(answers) if answers.iter().any(|a| !is_listing_code(*a)) => {
                    warn!(zone = %zone.zone, answers = ?answers, "reputation zone answered an error code, not a listing; left out (a blocklist refuses queries it considers abusive, e.g. through public resolvers)");
                }
                Ok(answers) => {
                    if let Some(a) = answers.first() {
                        let contribution = match zone.kind {
                            ZoneKind::Allow => f64::from(zone.score),
                            ZoneKind::Score => f64::from(a.octets()[3].min(100)) - 50.0,
                        };
                        result.zones.push((zone.zone, contribution));
                    }
                }
                Err(_) => result.failed.push(zone.zone),
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
    fn local_reputation_adds_up_and_decays_by_half_life() {
        let store = MemoryStore::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        store.record(ip, -20.0, HOUR, t0);
        store.record(ip, -20.0, HOUR, t0);
        assert_eq!(store.score(ip, HOUR, t0), -40.0);
        let later = store.score(ip, HOUR, t0 + HOUR);
        assert!(
            (later + 20.0).abs() < 0.01,
            "half after one half-life: {later}"
        );
        assert_eq!(store.score("192.0.2.2".parse().unwrap(), HOUR, t0), 0.0);
    }

    #[test]
    fn threshold_decides_and_lookup_failures_defer() {
        let rep = Reputation {
            dns: None,
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
            failed: vec![],
        };
        assert_eq!(rep.verdict(ip, &bad).unwrap().reply().unwrap().code(), 554);
        let allowed = ReputationResult {
            local: -30.0,
            zones: vec![("wl.test".into(), 50.0)],
            failed: vec![],
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
