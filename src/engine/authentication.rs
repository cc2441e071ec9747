//! Vouching for what arrives (`[authentication]`): the message's DKIM signatures, its ARC chain
//! and its author domain's DMARC policy are verified when the message has arrived, before any
//! content rule runs, and recorded in one `Authentication-Results` field under the hostname
//! (RFC 8601). DMARC's verdict is applied as the operator chooses. The results as they were on
//! arrival are what an ARC sealer (src/engine/arc.rs) records after Postern changed the
//! message, so that a downstream that trusts the sealer still sees them.

use std::net::{IpAddr, Ipv6Addr};

use mail_auth::dmarc::Policy as DmarcPolicy;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::{
    ArcOutput, AuthenticatedMessage, AuthenticationResults, DkimOutput, DkimResult, DmarcOutput,
    DmarcResult, MessageAuthenticator, SpfOutput, SpfResult as AuthSpfResult,
};
use viaspf::SpfResult;

use super::arc::ArcSealer;
use super::checks::spf::{Identity, SpfOutcome};

/// What a DMARC failure does (`dmarc`).
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DmarcMode {
    /// DMARC is not evaluated.
    #[default]
    Off,
    /// Evaluated and recorded; nothing is refused.
    Report,
    /// `p=reject` refuses the message (550 5.7.1); `p=quarantine` takes the quarantine action.
    Enforce,
}

impl DmarcMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Report => "report",
            Self::Enforce => "enforce",
        }
    }
}

/// What an enforced `p=quarantine` does (`dmarc_quarantine_action`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum QuarantineAction {
    /// Accepted and recorded (the mailbox downstream files it by the results field).
    #[default]
    Accept,
    /// Delivered through these relay targets instead (`dmarc_quarantine_relay_targets`).
    Divert(Vec<String>),
    /// Refused for now (451 4.7.1).
    Tempfail,
}

/// The `[authentication]` settings and the ARC sealer. All off by default: nothing is looked up.
#[derive(Debug, Default)]
pub struct Authentication {
    pub verify_dkim: bool,
    pub dmarc: DmarcMode,
    pub quarantine: QuarantineAction,
    pub arc_verify: bool,
    /// Write the results in an `Authentication-Results` field.
    pub results_header: bool,
    /// Connection profiles whose clients DMARC is not enforced on (internal relays).
    pub exempt_connection_profiles: Vec<String>,
    /// Authenticated clients are not held to DMARC.
    pub exempt_authenticated: bool,
    /// The sealer of mail of no organization with a sealer of its own.
    pub sealer: Option<ArcSealer>,
    /// Organizations' own sealers, one each.
    pub organization_sealers: Vec<ArcSealer>,
}

impl Authentication {
    /// Whether messages are verified at all. DMARC needs the DKIM results, a sealer the DKIM
    /// and ARC results it records.
    pub fn verifies(&self) -> bool {
        self.verify_dkim || self.dmarc != DmarcMode::Off || self.verifies_arc()
    }

    fn verifies_arc(&self) -> bool {
        self.arc_verify || self.seals()
    }

    /// Whether some sealer seals messages.
    pub fn seals(&self) -> bool {
        self.sealer.is_some() || !self.organization_sealers.is_empty()
    }

    /// The sealer of a version of a message concerning `organizations` (the most specific
    /// first): the first of them with a sealer of its own, else the sealer of the rest.
    pub fn sealer_for(&self, organizations: &[&str]) -> Option<&ArcSealer> {
        organizations
            .iter()
            .find_map(|name| {
                self.organization_sealers
                    .iter()
                    .find(|s| s.organization.as_deref() == Some(name))
            })
            .or(self.sealer.as_ref())
    }

    /// The methods a verified message has a result for, as metrics name them.
    pub fn methods(&self) -> impl Iterator<Item = (&'static str, bool)> {
        [
            ("dkim", self.verifies()),
            ("dmarc", self.dmarc != DmarcMode::Off),
            ("arc", self.verifies_arc()),
        ]
        .into_iter()
        .filter(|(_, on)| *on)
    }
}

/// What the SMTP conversation said about the message: the client, its HELO, the envelope
/// sender and the SPF outcome (when SPF was checked).
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    pub ip: Option<IpAddr>,
    pub helo: &'a str,
    pub mail_from: &'a str,
    pub spf: Option<&'a SpfOutcome>,
}

/// The results of one message as it arrived; they borrow the parsed message.
pub struct Verified<'x> {
    pub dkim: Vec<DkimOutput<'x>>,
    pub arc: Option<ArcOutput<'x>>,
    pub dmarc: Option<DmarcOutput>,
    spf: Option<(SpfOutput, Identity)>,
}

/// Verifies `message` as `settings` ask: every DKIM signature, the ARC chain, DMARC (aligned
/// against the SPF outcome of the envelope and the DKIM results).
pub async fn verify<'x>(
    settings: &Authentication,
    authenticator: &MessageAuthenticator,
    message: &'x AuthenticatedMessage<'x>,
    envelope: Envelope<'_>,
) -> Verified<'x> {
    let dkim = authenticator.verify_dkim(message).await;
    let arc = if settings.verifies_arc() {
        Some(authenticator.verify_arc(message).await)
    } else {
        None
    };
    let spf = envelope.spf.map(|outcome| {
        let domain = outcome
            .checked
            .rsplit_once('@')
            .map_or(outcome.checked.as_str(), |(_, d)| d);
        (
            SpfOutput::new(domain.to_ascii_lowercase()).with_result(spf_result(&outcome.result)),
            outcome.identity,
        )
    });
    let dmarc = if settings.dmarc == DmarcMode::Off {
        None
    } else {
        // Without an SPF outcome, SPF cannot align: DMARC rests on DKIM alone.
        let none = SpfOutput::new(String::new());
        let (spf_output, spf_domain) = match &spf {
            Some((output, _)) => (output, output.domain()),
            None => (&none, ""),
        };
        Some(
            authenticator
                .verify_dmarc(DmarcParameters::new(message, &dkim, spf_domain, spf_output))
                .await,
        )
    };
    Verified {
        dkim,
        arc,
        dmarc,
        spf,
    }
}

/// viaspf's result as mail-auth names it.
fn spf_result(result: &SpfResult) -> AuthSpfResult {
    match result {
        SpfResult::None => AuthSpfResult::None,
        SpfResult::Neutral => AuthSpfResult::Neutral,
        SpfResult::Pass => AuthSpfResult::Pass,
        SpfResult::Fail(_) => AuthSpfResult::Fail,
        SpfResult::Softfail => AuthSpfResult::SoftFail,
        SpfResult::Temperror => AuthSpfResult::TempError,
        SpfResult::Permerror => AuthSpfResult::PermError,
    }
}

/// A DMARC failure whose policy asks for more than a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmarcFailure {
    Reject { domain: String },
    Quarantine { domain: String },
}

impl<'x> Verified<'x> {
    /// The results as `hostname` records them: what an ARC sealer puts in its
    /// ARC-Authentication-Results. A result that was not evaluated is left out.
    pub fn results<'h>(
        &self,
        hostname: &'h str,
        envelope: Envelope<'_>,
        from: &str,
    ) -> AuthenticationResults<'h> {
        let mut results = AuthenticationResults::new(hostname);
        if let (Some((spf, identity)), Some(ip)) = (&self.spf, envelope.ip) {
            results = match identity {
                Identity::MailFrom => {
                    results.with_spf_mailfrom_result(spf, ip, envelope.mail_from, envelope.helo)
                }
                Identity::Helo => results.with_spf_ehlo_result(spf, ip, envelope.helo),
            };
        }
        results = results.with_dkim_results(&self.dkim, from);
        if let Some(dmarc) = &self.dmarc {
            results = results.with_dmarc_result(dmarc);
        }
        if let Some(arc) = &self.arc {
            let ip = envelope.ip.unwrap_or(IpAddr::V6(Ipv6Addr::LOCALHOST));
            results = results.with_arc_result(arc, ip);
        }
        results
    }

    /// The value of the `Authentication-Results` field: the results above, with `dkim=none`
    /// when the message carries no signature (RFC 8601 §2.7.1).
    pub fn results_value(&self, results: &AuthenticationResults<'_>) -> String {
        let mut value = results.to_string();
        if self.dkim.is_empty() {
            value.push_str(";\r\n\tdkim=none");
        }
        value
    }

    /// The DMARC failure, when the author domain's policy is quarantine or reject.
    pub fn dmarc_failure(&self) -> Option<DmarcFailure> {
        let dmarc = self.dmarc.as_ref()?;
        if !matches!(dmarc.result(), DmarcResult::Fail(_)) {
            return None;
        }
        let domain = dmarc.domain().to_owned();
        match dmarc.policy() {
            DmarcPolicy::Reject => Some(DmarcFailure::Reject { domain }),
            DmarcPolicy::Quarantine => Some(DmarcFailure::Quarantine { domain }),
            DmarcPolicy::None | DmarcPolicy::Unspecified => None,
        }
    }

    /// One word per method, for logs, metrics and tracking.
    pub fn summary(&self) -> AuthSummary {
        let dkim = if self.dkim.is_empty() {
            "none"
        } else if self.dkim.iter().any(|d| d.result() == &DkimResult::Pass) {
            "pass"
        } else {
            dkim_name(self.dkim[0].result())
        };
        AuthSummary {
            dkim,
            dmarc: self.dmarc.as_ref().map(|d| dmarc_name(&d.result())),
            arc: self.arc.as_ref().map(|a| dkim_name(a.result())),
        }
    }
}

/// The arrival results in a word each: `dkim` is `pass` when any signature passed, else the
/// first signature's result; `dmarc` and `arc` are `None` when not evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthSummary {
    pub dkim: &'static str,
    pub dmarc: Option<&'static str>,
    pub arc: Option<&'static str>,
}

impl AuthSummary {
    /// `dkim=pass dmarc=fail arc=none`, as tracking and the message's log line show it.
    pub fn words(&self) -> String {
        let mut out = format!("dkim={}", self.dkim);
        for (name, result) in [("dmarc", self.dmarc), ("arc", self.arc)] {
            if let Some(result) = result {
                out.push_str(&format!(" {name}={result}"));
            }
        }
        out
    }

    /// `(method, result)` for each method evaluated.
    pub fn methods(&self) -> impl Iterator<Item = (&'static str, &'static str)> {
        [
            Some(("dkim", self.dkim)),
            self.dmarc.map(|r| ("dmarc", r)),
            self.arc.map(|r| ("arc", r)),
        ]
        .into_iter()
        .flatten()
    }
}

/// Every result word a method can have, for metrics' label sets.
pub const RESULT_NAMES: [&str; 6] = ["pass", "fail", "neutral", "none", "temperror", "permerror"];

fn dkim_name(result: &DkimResult) -> &'static str {
    match result {
        DkimResult::Pass => "pass",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dmarc_name(result: &DmarcResult) -> &'static str {
    match result {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_names_only_what_was_evaluated() {
        let s = AuthSummary {
            dkim: "pass",
            dmarc: None,
            arc: Some("none"),
        };
        assert_eq!(s.words(), "dkim=pass arc=none");
        assert_eq!(
            s.methods().collect::<Vec<_>>(),
            [("dkim", "pass"), ("arc", "none")]
        );
        for (_, result) in s.methods() {
            assert!(RESULT_NAMES.contains(&result));
        }
    }

    #[test]
    fn viaspf_results_map_one_to_one() {
        assert_eq!(spf_result(&SpfResult::Pass), AuthSpfResult::Pass);
        assert_eq!(spf_result(&SpfResult::Softfail), AuthSpfResult::SoftFail);
        assert_eq!(spf_result(&SpfResult::Temperror), AuthSpfResult::TempError);
    }
}
