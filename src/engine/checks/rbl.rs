//! DNSBL/RBL (options "Enable RBL", "RBL server", "Skip Local IP", "RBL hit action"): the
//! client's address is looked up in every configured zone at once (RFC 5782).
//!
//! The lookup itself is [`dnsbl::query`]: an error answer is a lookup failure, never a
//! listing. Each zone is self-tested (127.0.0.2 must
//! be listed, 127.0.0.1 must not) before use and again every `self_test_interval`; a zone that
//! fails is taken out of use with a warning until it passes again.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};
use tokio::task::JoinSet;

use super::dnsbl::{self, label};
use crate::engine::ports::Resolver;
use crate::engine::reply::{SmtpReply, printable};
use crate::engine::verdict::Verdict;

/// An inclusive range of IPv4 answers that count as a listing: `127.0.0.2`,
/// `127.0.0.0/24` or `127.0.0.[2..11]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerRange {
    first: u32,
    last: u32,
}

impl AnswerRange {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }
}

impl FromStr for AnswerRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{s:?} is not an answer range: write \"127.0.0.2\", \"127.0.0.0/24\" or \"127.0.0.[2..11]\""
            )
        };
        if let Some((prefix, range)) = s.split_once('[') {
            let (lo, hi) = range
                .strip_suffix(']')
                .and_then(|r| r.split_once(".."))
                .ok_or_else(bad)?;
            let lo: u8 = lo.parse().map_err(|_| bad())?;
            let hi: u8 = hi.parse().map_err(|_| bad())?;
            let first: Ipv4Addr = format!("{prefix}{lo}").parse().map_err(|_| bad())?;
            let last: Ipv4Addr = format!("{prefix}{hi}").parse().map_err(|_| bad())?;
            if lo > hi {
                return Err(bad());
            }
            return Ok(Self {
                first: first.into(),
                last: last.into(),
            });
        }
        if let Ok(net) = s.parse::<ipnet::Ipv4Net>() {
            return Ok(Self {
                first: net.network().into(),
                last: net.broadcast().into(),
            });
        }
        let ip: Ipv4Addr = s.parse().map_err(|_| bad())?;
        Ok(Self {
            first: ip.into(),
            last: ip.into(),
        })
    }
}

impl<'de> Deserialize<'de> for AnswerRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// "RBL hit action".
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HitAction {
    /// 421: the client is asked to come back later and disconnected.
    #[default]
    Delay,
    /// 554: refused.
    Reject,
}

impl HitAction {
    /// The action's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Delay => "delay",
            Self::Reject => "reject",
        }
    }
}

/// What a failed lookup (timeout, SERVFAIL, an error answer) does: by default nothing, so
/// that a DNS hiccup never blocks good mail.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LookupFailureAction {
    #[default]
    Ignore,
    /// 451: the client retries later.
    Delay,
}

/// One DNSBL zone.
#[derive(Debug)]
pub struct Zone {
    pub zone: String,
    /// Answers that count as a listing; empty means any proper answer (127.0.0.0/8 outside
    /// 127.255.255.0/24).
    pub answers: Vec<AnswerRange>,
    pub weight: u32,
    health: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    tested: Option<Instant>,
    usable: bool,
}

impl Zone {
    pub fn new(zone: String, answers: Vec<AnswerRange>, weight: u32) -> Self {
        Self {
            zone,
            answers,
            weight,
            health: Mutex::default(),
        }
    }
}

/// The compiled DNSBL check.
#[derive(Debug)]
pub struct Rbl {
    pub zones: Vec<Arc<Zone>>,
    pub skip_local_ip: bool,
    pub hit_action: HitAction,
    /// Sum of the weights of listing zones from which the hit action applies.
    pub hit_threshold: u32,
    pub lookup_failure_action: LookupFailureAction,
    pub self_test_interval: Duration,
    pub help_url: Option<String>,
}

/// A zone that lists the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    pub zone: String,
    pub answer: Ipv4Addr,
    pub weight: u32,
    /// The zone's TXT record for the client, if it has one.
    pub reason: Option<String>,
}

/// What the zones said about one client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RblResult {
    pub listed: Vec<Listing>,
    /// Zones that could not be asked, and why.
    pub failed: Vec<(String, String)>,
    /// Zones out of use (failed their self-test).
    pub out_of_use: Vec<String>,
    /// Why no zone was asked at all (local client).
    pub skipped: Option<&'static str>,
    /// Self-tests run for this lookup, for the session to report.
    pub self_tests: Vec<ZoneTest>,
}

/// The outcome of a zone's self-test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneTest {
    pub zone: String,
    /// Whether the zone is in use now; `None` when the test could not run (the zone stays
    /// as it was).
    pub usable: Option<bool>,
    /// What the test found, in words.
    pub note: String,
}

impl fmt::Display for RblResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(why) = self.skipped {
            return write!(f, "skipped ({why})");
        }
        if self.listed.is_empty() {
            f.write_str("not listed")?;
        } else {
            let zones: Vec<_> = self
                .listed
                .iter()
                .map(|l| format!("{}={}", l.zone, l.answer))
                .collect();
            write!(f, "listed at {}", zones.join(","))?;
        }
        for (zone, why) in &self.failed {
            write!(f, "; {zone} failed: {why}")?;
        }
        for zone in &self.out_of_use {
            write!(f, "; {zone} out of use")?;
        }
        Ok(())
    }
}

impl Rbl {
    /// Asks every usable zone about `ip`, all at once.
    pub async fn check(&self, resolver: &Arc<dyn Resolver>, ip: IpAddr) -> RblResult {
        // IPv4-mapped IPv6 addresses are judged as IPv4.
        let ip = ip.to_canonical();
        if self.skip_local_ip && is_local(ip) {
            return RblResult {
                skipped: Some("local client address"),
                ..RblResult::default()
            };
        }
        let mut lookups = JoinSet::new();
        for zone in &self.zones {
            let (resolver, zone) = (resolver.clone(), zone.clone());
            let interval = self.self_test_interval;
            lookups.spawn(async move {
                let (usable, test) = self_test(resolver.as_ref(), &zone, interval).await;
                if !usable {
                    return (zone, Err(None), test);
                }
                let answer = query(resolver.as_ref(), &zone, &label(ip)).await;
                (zone, answer.map_err(Some), test)
            });
        }
        let mut result = RblResult::default();
        while let Some(joined) = lookups.join_next().await {
            let Ok((zone, answer, test)) = joined else {
                continue;
            };
            result.self_tests.extend(test);
            match answer {
                Ok(Some(answer)) => {
                    let name = format!("{}.{}", label(ip), zone.zone);
                    let reason = resolver
                        .txt(&name)
                        .await
                        .ok()
                        .and_then(|t| t.into_iter().next());
                    result.listed.push(Listing {
                        zone: zone.zone.clone(),
                        answer,
                        weight: zone.weight,
                        reason,
                    });
                }
                Ok(None) => {}
                Err(Some(why)) => result.failed.push((zone.zone.clone(), why)),
                Err(None) => result.out_of_use.push(zone.zone.clone()),
            }
        }
        // Zones in configuration order, so that replies and logs are stable.
        let order = |z: &str| self.zones.iter().position(|c| c.zone == z);
        result.listed.sort_by_key(|l| order(&l.zone));
        result
    }

    /// The verdict for a result: the hit action when the listing zones weigh enough, the
    /// lookup failure action when a zone could not be asked and nothing listed the client.
    pub fn verdict(&self, ip: IpAddr, result: &RblResult) -> Option<Verdict> {
        // IPv4-mapped IPv6 addresses are looked up as IPv4.
        let ip = ip.to_canonical();
        let weight: u32 = result.listed.iter().map(|l| l.weight).sum();
        if !result.listed.is_empty() && weight >= self.hit_threshold {
            let first = &result.listed[0];
            let mut text = format!(
                "Service unavailable; client [{ip}] blocked using {}",
                first.zone
            );
            if let Some(reason) = &first.reason {
                text.push_str(": ");
                text.push_str(&printable(reason, 200));
            }
            if let Some(url) = &self.help_url {
                text.push_str("; see ");
                text.push_str(url);
            }
            let text = printable(&text, 450);
            let reply = match self.hit_action {
                HitAction::Delay => SmtpReply::new(421, Some("4.7.1"), &text),
                HitAction::Reject => SmtpReply::new(554, Some("5.7.1"), &text),
            };
            return reply.ok().map(Verdict::refuse);
        }
        if !result.failed.is_empty() && self.lookup_failure_action == LookupFailureAction::Delay {
            let text = format!(
                "Temporary DNS failure checking client [{ip}] against blocklists, try again later"
            );
            return SmtpReply::new(451, Some("4.4.3"), &text)
                .ok()
                .map(Verdict::refuse);
        }
        None
    }
}

/// Looks `label` up in a zone: `Some(answer)` when listed in one of its answer ranges, `None`
/// when not.
async fn query(
    resolver: &dyn Resolver,
    zone: &Zone,
    label: &str,
) -> Result<Option<Ipv4Addr>, String> {
    let answers = dnsbl::query(resolver, &zone.zone, label)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answers
        .into_iter()
        .find(|a| zone.answers.is_empty() || zone.answers.iter().any(|r| r.contains(*a))))
}

/// RFC 5782 self-test, at most once per `interval`: 127.0.0.2 listed, 127.0.0.1 not. A
/// lookup failure during the test leaves the zone as it was (a DNS hiccup is not a broken
/// zone); a zone never tested successfully is given the benefit of the doubt. Whether the
/// zone may be used, and the test's outcome when one ran.
async fn self_test(
    resolver: &dyn Resolver,
    zone: &Zone,
    interval: Duration,
) -> (bool, Option<ZoneTest>) {
    {
        let health = zone.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tested) = health.tested
            && tested.elapsed() < interval
        {
            return (health.usable, None);
        }
    }
    let test_listed = query(resolver, zone, "2.0.0.127").await;
    let test_clean = query(resolver, zone, "1.0.0.127").await;
    let mut health = zone.health.lock().unwrap_or_else(|e| e.into_inner());
    let (usable, note) = match (test_listed, test_clean) {
        (Ok(Some(_)), Ok(None)) => (Some(true), "DNSBL self-test passed".to_owned()),
        (Ok(None), Ok(_)) => (
            Some(false),
            "DNSBL self-test failed: 127.0.0.2 is not listed; zone taken out of use (is the zone name right?)".to_owned(),
        ),
        (Ok(Some(_)), Ok(Some(_))) => (
            Some(false),
            "DNSBL self-test failed: 127.0.0.1 is listed, so the zone lists everything; zone taken out of use".to_owned(),
        ),
        (Err(e), _) | (_, Err(e)) => (
            None,
            format!("DNSBL self-test could not run ({e}); will retry"),
        ),
    };
    let test = ZoneTest {
        zone: zone.zone.clone(),
        usable,
        note,
    };
    let now_usable = match usable {
        Some(usable) => {
            health.usable = usable;
            health.tested = Some(Instant::now());
            usable
        }
        None => health.tested.is_none() || health.usable,
    };
    (now_usable, Some(test))
}

/// Addresses no public blocklist lists: loopback, private, link-local, shared, unique local.
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_ranges_parse_in_three_forms() {
        let r: AnswerRange = "127.0.0.[2..11]".parse().unwrap();
        assert!(r.contains("127.0.0.2".parse().unwrap()));
        assert!(r.contains("127.0.0.11".parse().unwrap()));
        assert!(!r.contains("127.0.0.12".parse().unwrap()));
        let r: AnswerRange = "127.0.1.0/24".parse().unwrap();
        assert!(r.contains("127.0.1.200".parse().unwrap()));
        let r: AnswerRange = "127.0.0.4".parse().unwrap();
        assert!(r.contains("127.0.0.4".parse().unwrap()));
        assert!(!r.contains("127.0.0.5".parse().unwrap()));
        for bad in ["127.0.0.[11..2]", "127.0.0.[2..]", "zone", "127.0.0.0/40"] {
            assert!(bad.parse::<AnswerRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn local_addresses_are_recognised() {
        for local in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_local(local.parse().unwrap()), "{local}");
        }
        for public in ["192.0.2.10", "198.51.100.1", "2001:db8::1"] {
            assert!(!is_local(public.parse().unwrap()), "{public}");
        }
    }
}
