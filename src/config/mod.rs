//! The configuration file: one TOML document, parsed strictly (unknown keys are refused) and
//! compiled into a [`Policy`] for the engine and settings for the doors.
//!
//! Every key, its default and its meaning is in `config/postern.toml`, which is also the
//! embedded default configuration.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use tokio::sync::Semaphore;
use toml::Spanned;

use crate::dns::DnsSettings;
use crate::engine::address::DomainPattern;
use crate::engine::checks::dos::ClientLimits;
use crate::engine::checks::encryption::{EncryptionRule, RecipientEncryption, SenderEncryption};
use crate::engine::checks::exploit_detection::HidingReply;
use crate::engine::checks::profiles::{ClientHost, ConnectionProfile, Profiles, RelayControl};
use crate::engine::checks::rbl::{AnswerRange, HitAction, LookupFailureAction, Zone};
use crate::engine::checks::reputation::{Penalties, Reputation, ReputationZone, ZoneKind};
use crate::engine::checks::spf::{Spf, SpfAction, SpfHeader};
use crate::engine::checks::{
    EncryptionRules, ExploitDetection, IpRejection, Rbl, RelayRestriction,
};
use crate::engine::policy::TraceHeader;
use crate::engine::{MessageLimits, Policy, ScanFailureAction, SmtpReply, Stage};
use crate::milter::MilterSettings;
use crate::milter::socket::ListenSocket;
use crate::proxy::ProxySettings;
use crate::relay::Delivery;

mod proxy;
mod rulesets;

/// The documented default configuration, used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/postern.toml");

/// Name shown for the embedded configuration in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

/// A configuration that could not be used: which file, where, which key and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}{}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default(),
        if key.is_empty() { String::new() } else { format!(": key `{key}`") })]
    Invalid {
        file: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// A compiled configuration.
#[derive(Debug)]
pub struct Config {
    pub policy: Policy,
    /// The resolver's settings, when a check needs DNS.
    pub dns: Option<DnsSettings>,
    pub milter: MilterSettings,
    pub proxy: ProxySettings,
    pub delivery: Delivery,
}

impl Config {
    /// Reads and compiles a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        Self::parse(DEFAULT_CONFIG, DEFAULT_CONFIG_NAME)
            .expect("the embedded default configuration is valid (tested)")
    }

    /// Compiles configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let raw: ConfigFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                ConfigError::Invalid {
                    file: file.to_owned(),
                    line: inner.span().map(|s| line_of(text, s.start)),
                    key: if key == "." { String::new() } else { key },
                    message: inner.message().to_owned(),
                }
            })?;
        raw.compile(text, file)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    hostname: Option<Spanned<String>>,
    milter: MilterSection,
    scan: ScanSection,
    connection: ConnectionSection,
    exploit_detection: ExploitDetectionSection,
    dns: DnsSection,
    rbl: RblSection,
    relay: RelaySection,
    #[serde(rename = "encryption_rule")]
    encryption_rules: Vec<EncryptionRuleSection>,
    spf: SpfSection,
    dos_protection: DosSection,
    #[serde(rename = "connection_profile")]
    connection_profiles: Vec<ProfileSection>,
    reputation: ReputationSection,
    content: rulesets::ContentSection,
    #[serde(rename = "ruleset")]
    rulesets: Vec<rulesets::RulesetSection>,
    proxy: proxy::ProxySection,
    delivery: proxy::DeliverySection,
    #[serde(rename = "relay_target")]
    relay_targets: Vec<proxy::RelayTargetSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ReputationSection {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileSection {
    name: String,
    #[serde(default)]
    client_hosts: Vec<String>,
    #[serde(default)]
    sender_domains: Vec<String>,
    #[serde(default)]
    relay_control: RelayControl,
    rbl: Option<bool>,
    spf: Option<bool>,
    #[serde(default)]
    require_tls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DosSection {
    enabled: bool,
    max_connections_per_client: u32,
    max_connection_rate_per_client: u32,
}

impl Default for DosSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_connections_per_client: 50,
            max_connection_rate_per_client: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SpfSection {
    enabled: bool,
    treat_softfail_as_fail: bool,
    fail_action: SpfAction,
    softfail_action: SpfAction,
    temperror_action: SpfAction,
    permerror_action: SpfAction,
    header: SpfHeader,
    timeout: NonZeroU64,
}

impl Default for SpfSection {
    fn default() -> Self {
        Self {
            enabled: false,
            treat_softfail_as_fail: false,
            fail_action: SpfAction::Reject,
            softfail_action: SpfAction::Accept,
            temperror_action: SpfAction::Tempfail,
            permerror_action: SpfAction::Accept,
            header: SpfHeader::ReceivedSpf,
            timeout: NonZeroU64::new(20).expect("nonzero"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptionRuleSection {
    #[serde(default = "any_domain")]
    sender_domain: String,
    #[serde(default = "any_domain")]
    recipient_domain: String,
    #[serde(default)]
    sender_encryption: SenderEncryption,
    #[serde(default)]
    recipient_encryption: RecipientEncryption,
    #[serde(default = "yes")]
    enabled: bool,
}

fn any_domain() -> String {
    "*".to_owned()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RelaySection {
    restrict_relaying: bool,
    local_domains: Vec<String>,
    #[serde(deserialize_with = "networks")]
    allowed_relay_sources: Vec<IpNet>,
    allow_relay_if_authenticated: bool,
    skip_connection_tests: bool,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            restrict_relaying: false,
            local_domains: Vec::new(),
            allowed_relay_sources: [
                "127.0.0.0/8",
                "::1/128",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
            ]
            .iter()
            .map(|n| n.parse().expect("static network"))
            .collect(),
            allow_relay_if_authenticated: false,
            skip_connection_tests: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct DnsSection {
    nameservers: Vec<SocketAddr>,
    timeout: NonZeroU64,
    attempts: NonZeroUsize,
    cache_size: u64,
}

impl Default for DnsSection {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            timeout: NonZeroU64::new(5).expect("nonzero"),
            attempts: NonZeroUsize::new(2).expect("nonzero"),
            cache_size: 8192,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RblSection {
    enabled: bool,
    skip_local_ip: bool,
    hit_action: HitAction,
    hit_threshold: NonZeroU32,
    lookup_failure_action: LookupFailureAction,
    self_test_interval: NonZeroU64,
    #[serde(rename = "zone")]
    zones: Vec<RblZoneSection>,
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

impl Default for RblSection {
    fn default() -> Self {
        let zone = |name: &str| RblZoneSection {
            zone: name.to_owned(),
            answers: Vec::new(),
            weight: 1,
        };
        Self {
            enabled: false,
            skip_local_ip: true,
            hit_action: HitAction::Delay,
            hit_threshold: NonZeroU32::new(1).expect("nonzero"),
            lookup_failure_action: LookupFailureAction::Ignore,
            self_test_interval: NonZeroU64::new(3600).expect("nonzero"),
            zones: vec![zone("sbl-xbl.spamhaus.org"), zone("bl.spamcop.net")],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct MilterSection {
    listen: ListenSocket,
    #[serde(deserialize_with = "octal_mode")]
    socket_mode: u32,
    max_inbound_connections: NonZeroUsize,
    connection_timeout: NonZeroU64,
    shutdown_timeout: u64,
}

impl Default for MilterSection {
    fn default() -> Self {
        Self {
            listen: ListenSocket::default(),
            socket_mode: 0o660,
            max_inbound_connections: NonZeroUsize::new(256).expect("nonzero"),
            connection_timeout: NonZeroU64::new(300).expect("nonzero"),
            shutdown_timeout: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ScanSection {
    scan_failure_action: ScanFailureAction,
    scan_timeout: NonZeroU64,
    message_memory_limit: NonZeroUsize,
    max_message_size: NonZeroU64,
    max_header_fields: NonZeroUsize,
    max_header_size: NonZeroU64,
    max_concurrent_scans: usize,
    spool_directory: Option<Spanned<PathBuf>>,
    trace_header: bool,
    trace_header_name: Spanned<String>,
}

impl Default for ScanSection {
    fn default() -> Self {
        Self {
            scan_failure_action: ScanFailureAction::Delay,
            scan_timeout: NonZeroU64::new(30).expect("nonzero"),
            message_memory_limit: NonZeroUsize::new(1 << 20).expect("nonzero"),
            max_message_size: NonZeroU64::new(40_000_000).expect("nonzero"),
            max_header_fields: NonZeroUsize::new(1000).expect("nonzero"),
            max_header_size: NonZeroU64::new(1 << 20).expect("nonzero"),
            max_concurrent_scans: 0,
            spool_directory: None,
            trace_header: false,
            trace_header_name: Spanned::new(0..0, "X-Postern-Verdict".to_owned()),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConnectionSection {
    delayed_rejection_state: Stage,
    #[serde(deserialize_with = "networks")]
    ip_address_rejection: Vec<IpNet>,
    ip_address_rejection_reply: SmtpReply,
    help_url: Option<String>,
}

impl Default for ConnectionSection {
    fn default() -> Self {
        Self {
            delayed_rejection_state: Stage::None,
            ip_address_rejection: Vec::new(),
            ip_address_rejection_reply: "554 5.7.1 Client host rejected: access denied"
                .parse()
                .expect("static reply is valid"),
            help_url: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ExploitDetectionSection {
    drop_on_invalid_commands: bool,
    max_invalid_commands: NonZeroU32,
    address_hiding_on_dictionary_attack: bool,
    max_failed_addresses: NonZeroU32,
    address_hiding_reply: HidingReply,
}

impl Default for ExploitDetectionSection {
    fn default() -> Self {
        Self {
            drop_on_invalid_commands: true,
            max_invalid_commands: NonZeroU32::new(5).expect("nonzero"),
            address_hiding_on_dictionary_attack: true,
            max_failed_addresses: NonZeroU32::new(3).expect("nonzero"),
            address_hiding_reply: HidingReply::Temporary,
        }
    }
}

impl ConfigFile {
    /// Checks what serde cannot and builds the policy.
    fn compile(self, text: &str, file: &str) -> Result<Config, ConfigError> {
        let invalid =
            |span: std::ops::Range<usize>, key: &str, message: String| ConfigError::Invalid {
                file: file.to_owned(),
                line: (span != (0..0)).then(|| line_of(text, span.start)),
                key: key.to_owned(),
                message,
            };

        let spool_directory = match self.scan.spool_directory {
            Some(dir) => {
                let span = dir.span();
                let dir = dir.into_inner();
                if !dir.is_dir() {
                    return Err(invalid(
                        span,
                        "scan.spool_directory",
                        format!(
                            "{} is not an existing directory; create it or point the key at one",
                            dir.display()
                        ),
                    ));
                }
                dir
            }
            None => std::env::temp_dir(),
        };

        let trace_name = &self.scan.trace_header_name;
        if !valid_header_name(trace_name.get_ref()) {
            return Err(invalid(
                trace_name.span(),
                "scan.trace_header_name",
                format!(
                    "{:?} is not a header field name (printable ASCII, no spaces or colons)",
                    trace_name.get_ref()
                ),
            ));
        }

        let hostname = match self.hostname {
            Some(h) if valid_hostname(h.get_ref()) => h.into_inner(),
            Some(h) => {
                return Err(invalid(
                    h.span(),
                    "hostname",
                    format!(
                        "{:?} is not a host name (letters, digits, '-' and '.')",
                        h.get_ref()
                    ),
                ));
            }
            None => system_hostname(),
        };

        let help_url = match self.connection.help_url {
            Some(url) if url.is_empty() => None,
            Some(url) if url.len() <= 200 && url.bytes().all(|b| b.is_ascii_graphic()) => Some(url),
            Some(url) => {
                return Err(invalid(
                    0..0,
                    "connection.help_url",
                    format!(
                        "{url:?} is not a URL for a reply: printable ASCII without spaces, at most 200 characters"
                    ),
                ));
            }
            None => None,
        };

        let reputation_zones = self.reputation.enabled && !self.reputation.zones.is_empty();
        let dns = (self.rbl.enabled || self.spf.enabled || reputation_zones).then(|| DnsSettings {
            nameservers: self.dns.nameservers.clone(),
            timeout: Duration::from_secs(self.dns.timeout.get()),
            attempts: self.dns.attempts.get(),
            cache_size: self.dns.cache_size,
        });

        let rbl = if self.rbl.enabled {
            if self.rbl.zones.is_empty() {
                return Err(invalid(
                    0..0,
                    "rbl.zone",
                    "RBL is enabled but no [[rbl.zone]] is listed; add one or set enabled = false"
                        .to_owned(),
                ));
            }
            Some(Rbl {
                zones: self
                    .rbl
                    .zones
                    .into_iter()
                    .map(|z| {
                        Arc::new(Zone::new(
                            z.zone.trim_end_matches('.').to_owned(),
                            z.answers,
                            z.weight,
                        ))
                    })
                    .collect(),
                skip_local_ip: self.rbl.skip_local_ip,
                hit_action: self.rbl.hit_action,
                hit_threshold: self.rbl.hit_threshold.get(),
                lookup_failure_action: self.rbl.lookup_failure_action,
                self_test_interval: Duration::from_secs(self.rbl.self_test_interval.get()),
                help_url: help_url.clone(),
            })
        } else {
            None
        };

        let reputation = self.reputation.enabled.then(|| Reputation {
            zones: self
                .reputation
                .zones
                .into_iter()
                .map(|z| ReputationZone {
                    zone: z.zone.trim_end_matches('.').to_owned(),
                    kind: z.kind,
                    score: z.score,
                })
                .collect(),
            penalties: Penalties {
                invalid_command: -f64::from(self.reputation.invalid_command_penalty),
                dictionary_attack: -f64::from(self.reputation.dictionary_attack_penalty),
                rbl_hit: -f64::from(self.reputation.rbl_hit_penalty),
                refused_recipient: -f64::from(self.reputation.refused_recipient_penalty),
            },
            half_life: Duration::from_secs(self.reputation.half_life.get()),
            threshold: f64::from(self.reputation.threshold),
            reject_match: self.reputation.reject_match,
            tempfail_on_lookup_failure: self.reputation.tempfail_on_lookup_failure,
            help_url: help_url.clone(),
        });

        let spf = self.spf.enabled.then(|| Spf {
            timeout: Duration::from_secs(self.spf.timeout.get()),
            fail_action: self.spf.fail_action,
            softfail_action: self.spf.softfail_action,
            temperror_action: self.spf.temperror_action,
            permerror_action: self.spf.permerror_action,
            treat_softfail_as_fail: self.spf.treat_softfail_as_fail,
            header: self.spf.header,
            help_url: help_url.clone(),
        });

        if let Some(bad) = self
            .relay
            .local_domains
            .iter()
            .find(|d| !valid_hostname(d.trim_start_matches("*.").trim_start_matches('.')))
        {
            return Err(invalid(
                0..0,
                "relay.local_domains",
                format!(
                    "{bad:?} is not a domain (write example.org, or *.example.org for its subdomains)"
                ),
            ));
        }
        if self.relay.restrict_relaying && self.relay.local_domains.is_empty() {
            return Err(invalid(
                0..0,
                "relay.local_domains",
                "restrict_relaying is on but no local domain is listed, so every recipient of a client outside allowed_relay_sources would be refused; list the domains you receive mail for".to_owned(),
            ));
        }

        let mut profiles = Vec::new();
        for (n, p) in self.connection_profiles.into_iter().enumerate() {
            let key = format!("connection_profile[{n}]");
            let mut client_hosts = Vec::new();
            for host in &p.client_hosts {
                let parsed = host
                    .parse::<IpNet>()
                    .or_else(|_| host.parse::<std::net::IpAddr>().map(IpNet::from))
                    .map(ClientHost::Network)
                    .ok()
                    .or_else(|| {
                        valid_hostname(host).then(|| {
                            ClientHost::Name(host.trim_end_matches('.').to_ascii_lowercase())
                        })
                    });
                match parsed {
                    Some(h) => client_hosts.push(h),
                    None => {
                        return Err(invalid(
                            0..0,
                            &format!("{key}.client_hosts"),
                            format!(
                                "{host:?} is neither an IP network (192.0.2.0/24, 2001:db8::/32) nor a host name"
                            ),
                        ));
                    }
                }
            }
            if matches!(
                p.relay_control,
                RelayControl::RestrictedExternal | RelayControl::RestrictedInternal
            ) && self.relay.local_domains.is_empty()
            {
                return Err(invalid(
                    0..0,
                    &format!("{key}.relay_control"),
                    format!(
                        "profile {:?} restricts its clients to local domains, but [relay] local_domains is empty; list the domains you receive mail for",
                        p.name
                    ),
                ));
            }
            let checks = ConnectionProfile::checks_by_default(p.relay_control);
            profiles.push(ConnectionProfile {
                name: p.name,
                client_hosts,
                sender_domains: p
                    .sender_domains
                    .iter()
                    .map(|d| DomainPattern::new(d))
                    .collect(),
                relay_control: p.relay_control,
                rbl: p.rbl.unwrap_or(checks),
                spf: p.spf.unwrap_or(checks),
                require_tls: p.require_tls,
            });
        }

        let profile_names: Vec<String> = profiles.iter().map(|p| p.name.clone()).collect();
        let config_dir = Path::new(file).parent().filter(|d| d.is_dir());
        let proxy = proxy::compile_proxy(self.proxy, config_dir)
            .map_err(|(span, key, message)| invalid(span, &key, message))?;
        let delivery =
            proxy::compile_delivery(self.delivery, self.relay_targets, &hostname, config_dir)
                .map_err(|(span, key, message)| invalid(span, &key, message))?;
        let content = rulesets::compile(
            self.content,
            self.rulesets,
            &profile_names,
            &delivery,
            config_dir,
        )
        .map_err(|(span, key, message)| invalid(span, &key, message))?;

        let policy = Policy {
            content,
            hostname,
            help_url,
            scan_failure_action: self.scan.scan_failure_action,
            scan_timeout: Duration::from_secs(self.scan.scan_timeout.get()),
            scan_slots: Arc::new(Semaphore::new(match self.scan.max_concurrent_scans {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            })),
            message_limits: MessageLimits {
                memory_limit: self.scan.message_memory_limit.get(),
                max_message_size: self.scan.max_message_size.get(),
                max_header_fields: self.scan.max_header_fields.get(),
                max_header_size: self.scan.max_header_size.get(),
                spool_directory,
            },
            delayed_rejection_state: self.connection.delayed_rejection_state,
            ip_address_rejection: IpRejection::new(
                self.connection.ip_address_rejection,
                self.connection.ip_address_rejection_reply,
            ),
            profiles: Profiles(profiles),
            client_limits: self.dos_protection.enabled.then(|| ClientLimits {
                max_connections: Some(self.dos_protection.max_connections_per_client)
                    .filter(|n| *n > 0),
                max_connection_rate: Some(self.dos_protection.max_connection_rate_per_client)
                    .filter(|n| *n > 0),
            }),
            rbl,
            reputation,
            spf,
            relay: RelayRestriction {
                local_domains: self
                    .relay
                    .local_domains
                    .iter()
                    .map(|d| DomainPattern::new(d))
                    .collect(),
                allowed_relay_sources: self.relay.allowed_relay_sources,
                allow_relay_if_authenticated: self.relay.allow_relay_if_authenticated,
            },
            encryption_rules: EncryptionRules(
                self.encryption_rules
                    .into_iter()
                    .filter(|r| r.enabled)
                    .map(|r| EncryptionRule {
                        sender_domain: DomainPattern::new(&r.sender_domain),
                        recipient_domain: DomainPattern::new(&r.recipient_domain),
                        sender_encryption: r.sender_encryption,
                        recipient_encryption: r.recipient_encryption,
                    })
                    .collect(),
            ),
            restrict_relaying: self.relay.restrict_relaying,
            skip_connection_tests_for_relay_sources: self.relay.skip_connection_tests,
            exploit_detection: ExploitDetection {
                max_invalid_commands: self
                    .exploit_detection
                    .drop_on_invalid_commands
                    .then_some(self.exploit_detection.max_invalid_commands.get()),
                max_failed_addresses: self
                    .exploit_detection
                    .address_hiding_on_dictionary_attack
                    .then_some(self.exploit_detection.max_failed_addresses.get()),
                hiding_reply: self.exploit_detection.address_hiding_reply,
            },
            trace_header: self.scan.trace_header.then(|| TraceHeader {
                name: self.scan.trace_header_name.into_inner(),
            }),
        };
        let milter = MilterSettings {
            listen: self.milter.listen,
            socket_mode: self.milter.socket_mode,
            max_inbound_connections: self.milter.max_inbound_connections.get(),
            connection_timeout: Duration::from_secs(self.milter.connection_timeout.get()),
            shutdown_timeout: Duration::from_secs(self.milter.shutdown_timeout),
        };
        Ok(Config {
            policy,
            dns,
            milter,
            proxy,
            delivery,
        })
    }
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    match u32::from_str_radix(&s, 8) {
        Ok(mode) if mode <= 0o777 && !s.is_empty() => Ok(mode),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not an octal file mode such as \"0660\""
        ))),
    }
}

/// A CIDR network; a bare address stands for itself (/32 or /128).
struct Network(IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map(Network)
            .map_err(|_| {
                serde::de::Error::custom(format!(
                    "{s:?} is not an IP network: write e.g. \"192.0.2.0/24\", \"2001:db8::/32\" or \"192.0.2.7\""
                ))
            })
    }
}

fn networks<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    Ok(Vec::<Network>::deserialize(d)?
        .into_iter()
        .map(|n| n.0)
        .collect())
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| valid_hostname(h))
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::ruleset::Action;

    fn error(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn embedded_default_compiles_with_documented_defaults() {
        let c = Config::embedded_default();
        assert_eq!(c.policy.scan_failure_action, ScanFailureAction::Delay);
        assert_eq!(c.policy.delayed_rejection_state, Stage::None);
        assert_eq!(c.policy.exploit_detection.max_invalid_commands, Some(5));
        assert_eq!(c.policy.message_limits.max_message_size, 40_000_000);
        assert!(c.policy.trace_header.is_none());
        assert_eq!(c.milter.max_inbound_connections, 256);
        assert_eq!(c.milter.socket_mode, 0o660);
    }

    #[test]
    fn empty_file_means_all_defaults() {
        let c = Config::parse("", "empty.toml").unwrap();
        let d = Config::embedded_default();
        assert_eq!(c.policy.to_string(), d.policy.to_string());
        assert_eq!(c.milter.listen, d.milter.listen);
    }

    #[test]
    fn unknown_key_is_refused_with_line_and_key() {
        let e = error("[connection]\n\nip_adress_rejection = []\n");
        assert!(e.starts_with("test.toml:3:"), "{e}");
        assert!(e.contains("ip_adress_rejection"), "{e}");
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_relay_password_in_plaintext_needs_saying_so() {
        let target = "[[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\n\
                      auth = \"plain\"\nusername = \"u\"\npassword_env = \"PATH\"\n";
        let e = error(target);
        assert!(e.contains("relay_target[0].auth"), "{e}");
        assert!(e.contains("auth_over_plaintext = true"), "{e}");
        let allowed = format!("{target}auth_over_plaintext = true\n");
        assert!(Config::parse(&allowed, "test.toml").is_ok());
    }

    #[test]
    fn bad_cidr_names_line_and_key() {
        let e = error("[connection]\nip_address_rejection = [\"192.0.2.0/24\", \"300.1.1.0/8\"]\n");
        assert!(e.starts_with("test.toml:2:"), "{e}");
        assert!(e.contains("connection.ip_address_rejection"), "{e}");
    }

    #[test]
    fn bad_reply_and_enum_values_are_explained() {
        let e = error("[connection]\nip_address_rejection_reply = \"250 fine\"\n");
        assert!(
            e.contains("test.toml:2:") && e.contains("4xx or 5xx"),
            "{e}"
        );
        let e = error("[scan]\nscan_failure_action = \"bounce\"\n");
        assert!(e.contains("test.toml:2:") && e.contains("delay"), "{e}");
        let e = error("[exploit_detection]\nmax_invalid_commands = 0\n");
        assert!(e.contains("test.toml:2:") && e.contains("nonzero"), "{e}");
    }

    #[test]
    fn missing_spool_directory_is_refused() {
        let e = error("[scan]\nspool_directory = \"/nonexistent/postern\"\n");
        assert!(
            e.starts_with("test.toml:2: key `scan.spool_directory`"),
            "{e}"
        );
    }

    #[test]
    fn rbl_keys_are_checked() {
        let e = error(
            "[rbl]\nenabled = true\n[[rbl.zone]]\nzone = \"zen.test\"\nanswers = [\"127.0.0.[9..2]\"]\n",
        );
        assert!(
            e.starts_with("test.toml:5: key `rbl.zone[0].answers[0]`"),
            "{e}"
        );
        let e = error("[rbl]\nenabled = true\nzone = []\n");
        assert!(e.contains("no [[rbl.zone]]"), "{e}");
        let e = error("[dns]\nnameservers = [\"127.0.0.1\"]\n");
        assert!(
            e.starts_with("test.toml:2: key `dns.nameservers[0]`"),
            "{e}"
        );
        // Enabled without zones listed: the seed's default zones.
        let c = Config::parse(
            "[dns]\nnameservers = [\"127.0.0.1:53\"]\n[rbl]\nenabled = true\n",
            "t",
        )
        .unwrap();
        let zones: Vec<_> = c
            .policy
            .rbl
            .unwrap()
            .zones
            .iter()
            .map(|z| z.zone.clone())
            .collect();
        assert_eq!(zones, ["sbl-xbl.spamhaus.org", "bl.spamcop.net"]);
    }

    #[test]
    fn bad_hostname_names_line() {
        let e = error("\nhostname = \"mx example\"\n");
        assert!(e.starts_with("test.toml:2: key `hostname`"), "{e}");
    }

    #[test]
    fn divert_names_existing_relay_targets() {
        let targets = "[[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\n\
                       [[relay_target]]\nname = \"vault\"\nhost = \"127.0.0.1\"\n\
                       divert_only = true\n";
        let rule = |extra: &str| {
            format!(
                "{targets}[[ruleset]]\nname = \"r\"\n[[ruleset.rule]]\nname = \"d\"\n\
                 targets = [\"body\"]\naction = \"divert\"\n{extra}"
            )
        };
        let e = error(&rule(""));
        assert!(
            e.contains("ruleset[0].rule[0].relay_targets") && e.contains("needs relay_targets"),
            "{e}"
        );
        let e = error(&rule("relay_targets = [\"quarantine\"]\n"));
        assert!(
            e.starts_with("test.toml:14:") && e.contains("no [[relay_target]] is named"),
            "{e}"
        );
        let c = Config::parse(&rule("relay_targets = [\"vault\"]\n"), "t").unwrap();
        // The divert-only target relays no ordinary mail; the rule may use it.
        assert!(c.delivery.relays());
        let names: Vec<_> = c.delivery.targets.iter().map(|t| &t.name).collect();
        assert_eq!(names, ["mta", "vault"]);
        let Action::Divert(through) = &c.policy.content.rulesets[0].rules[0].action else {
            panic!("not a divert rule");
        };
        assert_eq!(through, &["vault"]);
        let route = c.delivery.through(through).unwrap();
        assert_eq!(route.targets.len(), 1);
        assert!(!route.targets[0].divert_only);
    }

    #[test]
    fn a_key_of_another_action_is_refused_with_its_line() {
        let rule = |action: &str, keys: &str| {
            format!(
                "[[ruleset]]\nname = \"r\"\n[[ruleset.rule]]\nname = \"x\"\n\
                 targets = [\"body\"]\ndetector = \"card_number\"\naction = \"{action}\"\n{keys}"
            )
        };
        let e = error(&rule("mask", "keep_last = 2\ntemplate = \"$1\"\n"));
        assert!(
            e.starts_with("test.toml:9: key `ruleset[0].rule[0].template`: "),
            "{e}"
        );
        assert!(
            e.contains("template does not belong to action \"mask\", which takes keep_last and mask_char; remove it or change the action"),
            "{e}"
        );
        let e = error(&rule(
            "tokenize",
            "reply = \"550 5.7.1 no\"\nkey_env = \"POSTERN_TEST_UNSET_KEY\"\n",
        ));
        assert!(
            e.starts_with("test.toml:8: key `ruleset[0].rule[0].reply`: "),
            "{e}"
        );
        assert!(
            e.contains("reply does not belong to action \"tokenize\", which takes key_file, key_env, prefix and length; remove it or change the action"),
            "{e}"
        );
        let e = error(&rule("strip_attachment", "mask_char = \"#\"\n"));
        assert!(
            e.starts_with("test.toml:8: key `ruleset[0].rule[0].mask_char`: ")
                && e.contains("which takes no keys of its own"),
            "{e}"
        );
        // The keys an action does take are still taken.
        let c = Config::parse(&rule("mask", "keep_last = 2\nmask_char = \"#\"\n"), "t");
        assert!(c.is_ok(), "{c:?}");
    }

    #[test]
    fn a_bad_ruleset_header_names_its_line() {
        let e = error("[content]\n\nruleset_header = \"X Rulesets\"\n");
        assert!(
            e.starts_with("test.toml:3: key `content.ruleset_header`"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let e = error("[milter]\nlisten = \n");
        assert!(e.starts_with("test.toml:2"), "{e}");
    }
}
