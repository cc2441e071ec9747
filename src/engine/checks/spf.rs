//! SPF (RFC 7208, options "Enable SPF", "Treat ~all as -all"), evaluated by viaspf over the
//! shared resolver.
//!
//! Identities in RFC 7208 order: the HELO identity first (when HELO names a domain); a HELO
//! `fail` decides; otherwise the MAIL FROM identity (or `postmaster@HELO` for the null sender)
//! decides. Each result has a configured action; authenticated clients and allowed relay
//! sources are not checked. The result is recorded in a `Received-SPF` or
//! `Authentication-Results` header.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use viaspf::lookup::{Lookup, LookupError, LookupResult, Name};
use viaspf::{Config, DomainName, Sender, SpfResult};

use super::auth_results::{comment_text, property_value, quoted};
use crate::engine::ports::{self, Resolver};
use crate::engine::reply::{SmtpReply, printable_only};
use crate::engine::verdict::Verdict;

/// viaspf's lookup seam over the engine's resolver.
pub struct SpfLookup<'a>(pub &'a dyn Resolver);

fn spf_error(e: ports::LookupError) -> LookupError {
    if e.timeout {
        LookupError::Timeout
    } else {
        LookupError::Dns(Some(Box::new(e)))
    }
}

/// An empty answer is "no records" to viaspf.
fn non_empty<T>(v: Vec<T>) -> LookupResult<Vec<T>> {
    if v.is_empty() {
        Err(LookupError::NoRecords)
    } else {
        Ok(v)
    }
}

fn names(v: Vec<String>) -> LookupResult<Vec<Name>> {
    non_empty(v.iter().filter_map(|n| Name::new(n).ok()).collect())
}

#[async_trait]
impl Lookup for SpfLookup<'_> {
    async fn lookup_a<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Ipv4Addr>> {
        non_empty(self.0.a(name.as_str()).await.map_err(spf_error)?)
    }

    async fn lookup_aaaa<'lookup, 'a>(
        &'lookup self,
        name: &'a Name,
    ) -> LookupResult<Vec<Ipv6Addr>> {
        non_empty(self.0.aaaa(name.as_str()).await.map_err(spf_error)?)
    }

    async fn lookup_mx<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<Name>> {
        names(self.0.mx(name.as_str()).await.map_err(spf_error)?)
    }

    async fn lookup_txt<'lookup, 'a>(&'lookup self, name: &'a Name) -> LookupResult<Vec<String>> {
        non_empty(self.0.txt(name.as_str()).await.map_err(spf_error)?)
    }

    async fn lookup_ptr<'lookup>(&'lookup self, ip: IpAddr) -> LookupResult<Vec<Name>> {
        names(self.0.ptr(ip).await.map_err(spf_error)?)
    }
}

/// Which identity a result is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    Helo,
    MailFrom,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Helo => "helo",
            Self::MailFrom => "mailfrom",
        })
    }
}

/// The SPF result for one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpfOutcome {
    pub result: SpfResult,
    pub identity: Identity,
    /// The checked identity: the sender address, or `postmaster@HELO`.
    pub checked: String,
}

impl SpfOutcome {
    /// The result's name (`pass`, `fail`, ...), without explanation.
    pub fn name(&self) -> &'static str {
        result_name(&self.result)
    }
}

/// The result's name as RFC 7208 writes it.
pub fn result_name(result: &SpfResult) -> &'static str {
    match result {
        SpfResult::None => "none",
        SpfResult::Neutral => "neutral",
        SpfResult::Pass => "pass",
        SpfResult::Fail(_) => "fail",
        SpfResult::Softfail => "softfail",
        SpfResult::Temperror => "temperror",
        SpfResult::Permerror => "permerror",
    }
}

/// Evaluates one identity: `mail_from` when given, else `postmaster@helo`. An identity that
/// is not a valid domain gives `none` (RFC 7208 §4.3).
pub async fn check_identity(
    lookup: &impl Lookup,
    config: &Config,
    ip: IpAddr,
    helo: &str,
    mail_from: &str,
) -> SpfOutcome {
    // RFC 7208 §4.3: an empty local part stands for "postmaster".
    let mail_from = match mail_from.strip_prefix('@') {
        Some(domain) => format!("postmaster@{domain}"),
        None => mail_from.to_owned(),
    };
    let (identity, sender) = if mail_from.is_empty() {
        (Identity::Helo, Sender::from_domain(helo))
    } else {
        (Identity::MailFrom, Sender::new(&mail_from))
    };
    let checked = if mail_from.is_empty() {
        format!("postmaster@{helo}")
    } else {
        mail_from.clone()
    };
    let result = match sender {
        Ok(sender) => {
            let helo_domain = DomainName::new(helo).ok();
            viaspf::evaluate_sender(lookup, config, ip, &sender, helo_domain.as_ref())
                .await
                .spf_result
        }
        Err(_) => SpfResult::None,
    };
    SpfOutcome {
        result,
        identity,
        checked,
    }
}

/// What a result does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpfAction {
    Accept,
    /// 4xx: the client retries later.
    Tempfail,
    /// 5xx.
    Reject,
}

impl SpfAction {
    /// The action's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Tempfail => "tempfail",
            Self::Reject => "reject",
        }
    }
}

/// Where the result is recorded.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SpfHeader {
    #[default]
    ReceivedSpf,
    AuthenticationResults,
    None,
}

impl SpfHeader {
    /// The header's name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReceivedSpf => "received-spf",
            Self::AuthenticationResults => "authentication-results",
            Self::None => "none",
        }
    }
}

/// The compiled SPF check.
#[derive(Clone, Debug)]
pub struct Spf {
    pub timeout: Duration,
    pub fail_action: SpfAction,
    pub softfail_action: SpfAction,
    pub temperror_action: SpfAction,
    pub permerror_action: SpfAction,
    /// "Treat ~all as -all": softfail gets the fail action.
    pub treat_softfail_as_fail: bool,
    pub header: SpfHeader,
    pub help_url: Option<String>,
}

impl Spf {
    fn config(&self, hostname: &str) -> Config {
        Config::builder()
            .timeout(self.timeout)
            .hostname(hostname.to_owned())
            .build()
    }

    /// HELO identity first; its `fail` decides, else the MAIL FROM identity does.
    pub async fn check(
        &self,
        resolver: &dyn Resolver,
        hostname: &str,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
    ) -> SpfOutcome {
        let config = self.config(hostname);
        let lookup = SpfLookup(resolver);
        if !mail_from.is_empty() && DomainName::new(helo).is_ok() {
            let helo_outcome = check_identity(&lookup, &config, ip, helo, "").await;
            if matches!(helo_outcome.result, SpfResult::Fail(_)) {
                return helo_outcome;
            }
        }
        check_identity(&lookup, &config, ip, helo, mail_from).await
    }

    /// The verdict for an outcome, by the configured action of its result.
    pub fn verdict(&self, ip: IpAddr, outcome: &SpfOutcome) -> Option<Verdict> {
        self.verdict_with(ip, outcome, (self.fail_action, self.softfail_action))
    }

    /// The verdict for an outcome with other fail and softfail actions (an organization's).
    pub fn verdict_with(
        &self,
        ip: IpAddr,
        outcome: &SpfOutcome,
        (fail_action, softfail_action): (SpfAction, SpfAction),
    ) -> Option<Verdict> {
        let softfail = self.treat_softfail_as_fail && outcome.result == SpfResult::Softfail;
        let (action, why) = match &outcome.result {
            SpfResult::Fail(exp) => (fail_action, explained(exp.as_ref())),
            SpfResult::Softfail if softfail => (fail_action, String::new()),
            SpfResult::Softfail => (softfail_action, String::new()),
            SpfResult::Temperror => (self.temperror_action, String::new()),
            SpfResult::Permerror => (self.permerror_action, String::new()),
            SpfResult::None | SpfResult::Neutral | SpfResult::Pass => return None,
        };
        let checked = printable_only(&outcome.checked, 200);
        let mut text = match (&outcome.result, action) {
            (SpfResult::Temperror, _) => format!(
                "Temporary DNS failure evaluating SPF for {checked} (client [{ip}]), try again later"
            ),
            (SpfResult::Permerror, _) => {
                format!("The SPF record for {checked} is invalid (permerror)")
            }
            _ => format!(
                "SPF {}: {checked} does not allow client [{ip}] to send its mail{why}",
                if softfail {
                    "softfail treated as fail"
                } else {
                    outcome.name()
                }
            ),
        };
        if let Some(url) = &self.help_url {
            text.push_str("; see ");
            text.push_str(url);
        }
        let text: String = text.chars().take(450).collect();
        let (code, enhanced) = match (action, &outcome.result) {
            (SpfAction::Accept, _) => return None,
            (SpfAction::Tempfail, SpfResult::Temperror) => (451, "4.4.3"),
            (SpfAction::Tempfail, _) => (451, "4.7.24"),
            (SpfAction::Reject, SpfResult::Permerror) => (550, "5.7.24"),
            (SpfAction::Reject, _) => (550, "5.7.23"),
        };
        SmtpReply::new(code, Some(enhanced), &text)
            .ok()
            .map(Verdict::refuse)
    }

    /// The header recording the outcome: (name, value), or `None` when off.
    pub fn header(
        &self,
        hostname: &str,
        ip: IpAddr,
        helo: &str,
        mail_from: &str,
        outcome: &SpfOutcome,
    ) -> Option<(String, String)> {
        // What the client gave is written so that it cannot end the value and start another
        // key or result (a forged `;dkim=pass`).
        let value = |s: &str| property_value(s, 200);
        match self.header {
            SpfHeader::None => None,
            SpfHeader::ReceivedSpf => Some((
                "Received-SPF".to_owned(),
                format!(
                    "{} ({hostname}: {}) client-ip={ip}; envelope-from={}; helo={}; identity={}; receiver={hostname};",
                    outcome.name(),
                    comment_text(&comment(outcome, ip), 300),
                    quoted(&mail_from.chars().take(200).collect::<String>()),
                    value(helo),
                    outcome.identity
                ),
            )),
            SpfHeader::AuthenticationResults => {
                let property = match outcome.identity {
                    Identity::MailFrom => format!("smtp.mailfrom={}", value(&outcome.checked)),
                    Identity::Helo => format!("smtp.helo={}", value(helo)),
                };
                Some((
                    "Authentication-Results".to_owned(),
                    format!("{hostname}; spf={} {property}", outcome.name()),
                ))
            }
        }
    }
}

fn explained(exp: &str) -> String {
    let exp = printable_only(exp, 200);
    if exp.is_empty() {
        String::new()
    } else {
        format!(" ({exp})")
    }
}

/// The comment of a Received-SPF header (RFC 7208 §9.1).
fn comment(outcome: &SpfOutcome, ip: IpAddr) -> String {
    let who = &outcome.checked;
    match outcome.result {
        SpfResult::Pass => format!("domain of {who} designates {ip} as permitted sender"),
        SpfResult::Fail(_) => {
            format!("domain of {who} does not designate {ip} as permitted sender")
        }
        SpfResult::Softfail => {
            format!("domain of transitioning {who} does not designate {ip} as permitted sender")
        }
        SpfResult::Neutral => format!("{ip} is neither permitted nor denied by domain of {who}"),
        SpfResult::None => format!("domain of {who} does not provide an SPF record"),
        SpfResult::Temperror => {
            format!("error in processing during lookup of {who}: DNS timeout or error")
        }
        SpfResult::Permerror => format!("permanent error in processing the SPF record of {who}"),
    }
}
