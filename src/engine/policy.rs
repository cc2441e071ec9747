//! The compiled policy: everything the engine needs, validated and built once from the
//! configuration, immutable afterwards and swapped whole on reload.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::Semaphore;

use super::address_transformation::AddressTransformations;
use super::authentication::{Authentication, DmarcMode, QuarantineAction};
use super::checks::dos::ClientLimits;
use super::checks::outbound_tls::OutboundTlsPolicies;
use super::checks::profiles::Profiles;
use super::checks::reputation::Reputation;
use super::checks::spf::Spf;
use super::checks::spoof::SpoofAction;
use super::checks::{EncryptionRules, ExploitDetection, IpRejection, Rbl, RelayRestriction};
use super::dkim::DkimSigners;
use super::message::MessageLimits;
use super::organizations::Organizations;
use super::reply::SmtpReply;
use super::rules::ContentPolicy;
use super::verdict::Verdict;

/// "Scan failure action": what happens to a message when Postern cannot judge it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ScanFailureAction {
    /// 451: the client keeps the message and retries later.
    #[default]
    Delay,
    /// 250: let the message through unscanned (logged).
    Allow,
    /// 554: refuse the message.
    Reject,
}

impl ScanFailureAction {
    /// The action's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Delay => "delay",
            Self::Allow => "allow",
            Self::Reject => "reject",
        }
    }

    /// The verdict this action gives.
    pub fn verdict(self) -> Verdict {
        match self {
            Self::Delay => Verdict::Tempfail(
                SmtpReply::new(
                    451,
                    Some("4.3.0"),
                    "Message could not be scanned, try again later",
                )
                .expect("static reply is valid"),
            ),
            Self::Allow => Verdict::Continue,
            Self::Reject => Verdict::Reject(
                SmtpReply::new(554, Some("5.3.0"), "Message could not be scanned")
                    .expect("static reply is valid"),
            ),
        }
    }
}

/// SMTP stages in conversation order, for delayed rejection.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// "No delay": refuse where the verdict is reached.
    #[default]
    None,
    Helo,
    /// STARTTLS (the proxy door; behind an MTA, which does not tell the milter about
    /// STARTTLS, and for a client that never sends it, the refusal comes at MAIL).
    StartTls,
    Mail,
    Rcpt,
    Data,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Helo => "helo",
            Self::StartTls => "starttls",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The trace header: a header naming the verdict, added to messages that pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHeader {
    pub name: String,
}

/// How refusals are told and who may always be written to (`[connection]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answers {
    /// "Report rejections to SMTP": a policy refusal's text says why. When off, the client
    /// hears a generic text (the code and enhanced code stay); the reason is only in the log
    /// and tracking.
    pub report_rejections: bool,
    /// The postmaster address refusal texts name (and the generic ones point to).
    pub postmaster: Option<String>,
    /// `postmaster` and `postmaster@<local domain>` are accepted whatever a DNSBL or the
    /// reputation decided (RFC 5321 4.5.1), when that refusal is held until RCPT or later.
    pub postmaster_exempt: bool,
}

impl Default for Answers {
    fn default() -> Self {
        Self {
            report_rejections: true,
            postmaster: None,
            postmaster_exempt: true,
        }
    }
}

/// Everything the engine decides with.
#[derive(Debug)]
pub struct Policy {
    /// Host name used in replies and headers.
    pub hostname: String,
    /// Where refused senders get help; added to the replies of Postern's own rules.
    pub help_url: Option<String>,
    pub answers: Answers,
    /// Diagnostic: every connection is judged as if it came from this address.
    pub client_ip_override: Option<std::net::IpAddr>,
    pub scan_failure_action: ScanFailureAction,
    /// Time budget of the engine for one stage.
    pub scan_timeout: Duration,
    /// Content scans that may run at once (`max_concurrent_scans`): each holds a whole
    /// message and its parse in memory, so this bounds the content stage's memory. A message
    /// waits for a slot within its scan_timeout.
    pub scan_slots: Arc<Semaphore>,
    /// RSA signatures made at once, off the connections' thread: one per CPU core, so that
    /// signing uses every core and a burst waits its turn rather than piling up threads.
    pub signing_slots: Arc<Semaphore>,
    pub message_limits: MessageLimits,
    pub delayed_rejection_state: Stage,
    pub ip_address_rejection: IpRejection,
    /// Connection profiles, in order.
    pub profiles: Profiles,
    /// Per-client connection limits; `None` when DoS protection is off.
    pub client_limits: Option<ClientLimits>,
    /// DNSBL/RBL check; `None` when disabled.
    pub rbl: Option<Rbl>,
    /// IP reputation; `None` when disabled.
    pub reputation: Option<Reputation>,
    /// SPF check; `None` when disabled.
    pub spf: Option<Spf>,
    /// Allowed relay sources and local domains.
    pub relay: RelayRestriction,
    /// "Restrict relaying": clients that may not relay may send only to local domains.
    pub restrict_relaying: bool,
    /// "Skip Connection Tests": allowed relay sources skip the connection tests (RBL).
    pub skip_connection_tests_for_relay_sources: bool,
    /// Spoof detection for clients whose profile does not set it.
    pub spoof_detection: SpoofAction,
    pub exploit_detection: ExploitDetection,
    /// Encryption rules, in order.
    pub encryption_rules: EncryptionRules,
    /// How long a `via` route's delivery of a message is remembered against the sending MTA
    /// sending it again (`[state] via_memory_days`).
    pub via_memory: Duration,
    /// What connections to relay targets must have negotiated, per recipient domain or
    /// connection profile, in order.
    pub outbound_tls: OutboundTlsPolicies,
    pub trace_header: Option<TraceHeader>,
    /// Copies of messages kept for support (`[scan] retain_*`); `None`: none.
    pub retain: Option<super::retain::Retain>,
    /// The content stage: rulesets over subject, headers, body, attachments and names.
    pub content: ContentPolicy,
    /// The organizations the gateway serves (`[[organization]]`); empty: one for everyone.
    pub organizations: Organizations,
    /// Address transformation rules, in order: applied to what is relayed, never to what the
    /// policy judges.
    pub address_transformations: AddressTransformations,
    /// DKIM signers, in order: outbound messages are signed as they leave.
    pub dkim: DkimSigners,
    /// DKIM, ARC and DMARC verification on arrival, and the ARC sealer.
    pub authentication: Authentication,
    /// The longest line (octets, CRLF included) any hop that carries a message out lets
    /// through: 1000 (RFC 5321, the MTA) or a relay target's lower `line_limit`. A signed
    /// message is folded and broken to it first, so that no hop changes what was signed.
    pub line_limit: usize,
    /// Every check and rule runs and reports, but nothing is refused or changed
    /// (`[scan] dry_run`, `--dry-run`).
    pub dry_run: bool,
}

impl Policy {
    /// Each organization's own policy, as check-config shows it: its domains, its route, the
    /// rulesets and signers that serve it, its users.
    fn fmt_organizations(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let orgs = &self.organizations;
        let list = |items: Vec<String>| {
            if items.is_empty() {
                "-".to_owned()
            } else {
                items.join(", ")
            }
        };
        for (id, o) in orgs.list.iter().enumerate() {
            let rulesets = self
                .content
                .rulesets
                .iter()
                .filter(|rs| {
                    rs.conditions.organizations.is_empty()
                        || rs.conditions.organizations.contains(&o.name)
                })
                .map(|rs| rs.name.clone())
                .collect();
            let signers = self
                .dkim
                .0
                .iter()
                .filter(|s| s.clients.organization.as_ref().is_none_or(|n| *n == o.name))
                .map(|s| format!("{} ({})", s.domain, s.selector))
                .collect();
            writeln!(
                f,
                "organization:            {}{}: domains {}; route {}; rulesets {}; signers {}; {} AUTH user(s){}{}{}{}{}",
                o.name,
                if orgs.default == Some(id) {
                    " (default)"
                } else {
                    ""
                },
                list(o.domains.iter().map(ToString::to_string).collect()),
                if o.own_route.is_empty() {
                    "shared".to_owned()
                } else {
                    o.own_route.join(", ")
                },
                list(rulesets),
                list(signers),
                orgs.users.values().filter(|u| **u == id).count(),
                o.max_message_size
                    .map_or(String::new(), |m| format!("; {m} bytes max")),
                o.spf_fail_action
                    .map_or(String::new(), |a| format!("; spf fail {}", a.name())),
                o.spf_softfail_action
                    .map_or(String::new(), |a| format!("; spf softfail {}", a.name())),
                o.dmarc
                    .map_or(String::new(), |m| format!("; dmarc {}", m.name())),
                o.rbl_hit_action
                    .map_or(String::new(), |a| format!("; rbl hit {}", a.name()))
            )?;
        }
        Ok(())
    }

    /// Whether spoof detection is on for some client.
    pub fn spoofing_checked(&self) -> bool {
        self.spoof_detection != SpoofAction::Off
            || self
                .profiles
                .0
                .iter()
                .any(|p| p.spoof_detection.is_some_and(|a| a != SpoofAction::Off))
    }
}

impl fmt::Display for Policy {
    /// The short summary `postern check-config` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "hostname:                {}", self.hostname)?;
        writeln!(
            f,
            "scan failure action:     {} ({})",
            self.scan_failure_action.name(),
            self.scan_failure_action.verdict()
        )?;
        writeln!(
            f,
            "scan timeout:            {} s",
            self.scan_timeout.as_secs()
        )?;
        if self.dry_run {
            writeln!(
                f,
                "dry run:                 on (nothing is refused or changed)"
            )?;
        }
        writeln!(
            f,
            "concurrent scans:        {}",
            self.scan_slots.available_permits()
        )?;
        writeln!(
            f,
            "message limits:          {} bytes max, {} bytes in memory, spool in {}",
            self.message_limits.max_message_size,
            self.message_limits.memory_limit,
            self.message_limits.spool_directory.display()
        )?;
        writeln!(
            f,
            "delayed rejection state: {}",
            self.delayed_rejection_state
        )?;
        writeln!(
            f,
            "ip address rejection:    {} network(s)",
            self.ip_address_rejection.len()
        )?;
        let names: Vec<&str> = self.profiles.0.iter().map(|p| p.name.as_str()).collect();
        writeln!(
            f,
            "connection profiles:     {}",
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        )?;
        match self.client_limits {
            Some(l) => writeln!(
                f,
                "dos protection:          {} connections, {} per minute per client",
                l.max_connections
                    .map_or("any".to_owned(), |n| n.to_string()),
                l.max_connection_rate
                    .map_or("any".to_owned(), |n| n.to_string())
            )?,
            None => writeln!(f, "dos protection:          off")?,
        }
        match &self.rbl {
            Some(rbl) => {
                let zones: Vec<_> = rbl.zones.iter().map(|z| z.zone.as_str()).collect();
                writeln!(
                    f,
                    "rbl:                     {} ({} on hit)",
                    zones.join(", "),
                    rbl.hit_action.name()
                )?
            }
            None => writeln!(f, "rbl:                     off")?,
        }
        match &self.reputation {
            Some(r) => writeln!(
                f,
                "ip reputation:           on (threshold {}, {} zone(s), half-life {} s)",
                r.threshold,
                r.zones.len(),
                r.half_life.as_secs()
            )?,
            None => writeln!(f, "ip reputation:           off")?,
        }
        match &self.spf {
            Some(spf) => writeln!(
                f,
                "spf:                     on (fail: {}, softfail: {}, header: {})",
                spf.fail_action.name(),
                spf.softfail_action.name(),
                spf.header.name()
            )?,
            None => writeln!(f, "spf:                     off")?,
        }
        writeln!(
            f,
            "relay restriction:       {} ({} local domain(s), {} relay source network(s))",
            if self.restrict_relaying { "on" } else { "off" },
            self.relay.local_domains.len(),
            self.relay.allowed_relay_sources.len()
        )?;
        match self.exploit_detection.max_invalid_commands {
            Some(n) => writeln!(f, "invalid commands:        drop after {n}")?,
            None => writeln!(f, "invalid commands:        no limit")?,
        }
        writeln!(
            f,
            "encryption rules:        {}",
            self.encryption_rules.0.len()
        )?;
        for p in &self.outbound_tls.0 {
            let domains: Vec<String> = p.recipient_domains.iter().map(|d| d.to_string()).collect();
            let requirement = crate::engine::checks::outbound_tls::TlsRequirement {
                by: String::new(),
                min_version: p.min_version,
                strength: p.strength,
                names: p.certificate_names.clone(),
            };
            writeln!(
                f,
                "outbound TLS policy:     {}: recipients {}, profiles {}: {requirement}",
                p.name,
                if domains.is_empty() {
                    "-".to_owned()
                } else {
                    domains.join(", ")
                },
                if p.connection_profiles.is_empty() {
                    "-".to_owned()
                } else {
                    p.connection_profiles.join(", ")
                },
            )?;
        }
        self.fmt_organizations(f)?;
        for rs in &self.content.rulesets {
            let rules: Vec<&str> = rs.rules.iter().map(|r| r.name.as_str()).collect();
            writeln!(
                f,
                "ruleset:                 {} ({} rule(s): {})",
                rs.name,
                rules.len(),
                rules.join(", ")
            )?;
        }
        if self.content.rulesets.is_empty() {
            writeln!(f, "rulesets:                none")?;
        } else {
            let d = &self.content.documents;
            writeln!(
                f,
                "documents:               depth {}, {} entries, {} bytes expanded, ratio {}; \
                 limit {}, encrypted {}, damaged {}",
                d.max_nesting_depth,
                d.max_archive_entries,
                d.max_expanded_size,
                d.max_compression_ratio,
                d.limit_action.name(),
                d.encrypted_action.name(),
                d.damaged_action.name()
            )?;
        }
        for r in &self.address_transformations.0 {
            let places: Vec<&str> = r.applies_to.iter().map(|p| p.name()).collect();
            writeln!(
                f,
                "address transformation:  {}: {} -> {} ({}, {})",
                r.name,
                r.matcher,
                r.replacement,
                r.direction.name(),
                places.join(", ")
            )?;
        }
        let auth = &self.authentication;
        if auth.verifies() {
            writeln!(
                f,
                "authentication:          dkim {}, arc {}, dmarc {}{}, results header {}",
                if auth.verify_dkim || auth.dmarc != DmarcMode::Off || auth.seals() {
                    "verified"
                } else {
                    "off"
                },
                if auth.arc_verify || auth.seals() {
                    "verified"
                } else {
                    "off"
                },
                auth.dmarc.name(),
                match (&auth.dmarc, &auth.quarantine) {
                    (DmarcMode::Enforce, QuarantineAction::Accept) => " (quarantine: accept)",
                    (DmarcMode::Enforce, QuarantineAction::Divert(_)) => " (quarantine: divert)",
                    (DmarcMode::Enforce, QuarantineAction::Tempfail) => " (quarantine: tempfail)",
                    _ => "",
                },
                if auth.results_header { "on" } else { "off" }
            )?;
        } else {
            writeln!(f, "authentication:          off")?;
        }
        for s in auth.sealer.iter().chain(&auth.organization_sealers) {
            let key = KeyLines {
                role: "arc sealer:             ",
                domain: &s.domain,
                selector: &s.selector,
                algorithm: s.algorithm(),
                when: s.seal.name(),
                key_file: &s.key_file,
                record: s.record(),
            };
            key.write(f)?;
        }
        for s in &self.dkim.0 {
            let key = KeyLines {
                role: "dkim signer:            ",
                domain: &s.domain,
                selector: &s.selector,
                algorithm: s.key.algorithm(),
                when: s.sign.name(),
                key_file: &s.key_file,
                record: s.key.record(),
            };
            key.write(f)?;
            let profiles = match &s.clients.connection_profiles {
                Some(names) => names.join(", "),
                None => "any".to_owned(),
            };
            writeln!(
                f,
                "  signs for users {}; unauthenticated clients of profiles: {profiles}",
                s.clients.users.join(", "),
            )?;
        }
        match &self.trace_header {
            Some(t) => write!(f, "trace header:            {}", t.name),
            None => write!(f, "trace header:            off"),
        }
    }
}

/// A signer's or sealer's two lines in check-config's summary: what it is and the record to
/// publish.
struct KeyLines<'a> {
    role: &'static str,
    domain: &'a str,
    selector: &'a str,
    algorithm: &'static str,
    when: &'static str,
    key_file: &'a str,
    record: &'a str,
}

impl KeyLines<'_> {
    fn write(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} d={} s={} {} ({} messages, key {})",
            self.role, self.domain, self.selector, self.algorithm, self.when, self.key_file
        )?;
        writeln!(
            f,
            "  publish as TXT at {}._domainkey.{}: {}",
            self.selector, self.domain, self.record
        )
    }
}
