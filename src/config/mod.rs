//! The configuration file: one TOML document, parsed strictly (unknown keys are refused) and
//! compiled into a [`Policy`] for the engine and settings for the doors.
//!
//! Each section is read and compiled in its own module, next to its struct; this one holds
//! the file as a whole, its errors, and the order in which the sections compile.
//!
//! Every key, its default and its meaning is in `config/postern.toml`, which is also the
//! embedded default configuration.

use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};
use serde_path_to_error::Segment;
use toml::Spanned;

use crate::dns::DnsSettings;
use crate::engine::Policy;
use crate::logging::LogSettings;
use crate::milter::MilterSettings;
use crate::proxy::ProxySettings;
use crate::relay::Delivery;
use crate::state::{SharedStateSettings, StateSettings};
use crate::tracking::TrackingSettings;
use crate::web::MetricsSettings;
use crate::web::console::ConsoleSettings;

mod address_transformation;
mod authentication;
mod connection;
mod console;
mod delivery;
mod dkim;
mod dns;
mod lints;
mod log;
mod metrics;
mod milter;
mod organizations;
mod outbound_tls;
mod proxy;
mod rbl;
mod reputation;
mod restart;
mod rulesets;
mod scan;
mod spf;
mod state;
mod tracking;

pub use restart::FixedAtStart;

/// The documented default configuration, used when no file is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/postern.toml");

/// Name shown for the embedded configuration in messages.
pub const DEFAULT_CONFIG_NAME: &str = "<embedded default config>";

/// The configuration file read when none is given, as Postfix reads main.cf.
pub const SYSTEM_CONFIG: &str = "/etc/postern/postern.toml";

/// The file to read: `given`, else [`SYSTEM_CONFIG`] when it exists; `None`: the embedded
/// default serves.
pub fn config_path(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()))
}

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

/// The text a configuration was compiled from, and the file's name.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub file: String,
    pub text: String,
}

impl Source {
    /// SHA-256 of the text, in hex: what names a configuration among a fleet's.
    pub fn digest(&self) -> String {
        digest(&self.text)
    }
}

/// SHA-256 of a configuration's text, in hex.
pub fn digest(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    pub state: StateSettings,
    /// The Redis a fleet shares its state through, when `[shared_state] redis_url` is set.
    pub shared_state: Option<SharedStateSettings>,
    /// The Prometheus endpoint, when `[metrics] listen` is set.
    pub metrics: Option<MetricsSettings>,
    /// The web console, when `[console] listen` is set.
    pub console: Option<ConsoleSettings>,
    /// How log lines are written; read at start.
    pub log: LogSettings,
    /// Message tracking, when `[tracking] store` is set; read at start.
    pub tracking: Option<TrackingSettings>,
    /// The file it was compiled from, for the console's status page.
    pub source: Source,
    /// What the compiler read otherwise than it was written (a wildcard host entry as its
    /// network): warned about with the lints.
    pub notes: Vec<String>,
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

    /// Compiles configuration text; `file` names it in errors, and its directory is where
    /// relative paths are read.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config_dir = Path::new(file).parent().filter(|d| d.is_dir());
        Self::parse_in(text, file, config_dir)
    }

    /// Compiles configuration text that `name` names in errors, reading relative paths in
    /// `config_dir`: a fleet's configuration with this instance's files.
    pub fn parse_in(
        text: &str,
        file: &str,
        config_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let raw: ConfigFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = key_path(e.path());
                let inner = e.into_inner();
                ConfigError::Invalid {
                    file: file.to_owned(),
                    line: inner.span().map(|s| line_of(text, s.start)),
                    message: in_words(inner.message(), &key),
                    key,
                }
            })?;
        let mut config =
            raw.compile(config_dir)
                .map_err(|(span, key, message)| ConfigError::Invalid {
                    file: file.to_owned(),
                    line: Some(line_of(text, span.start)),
                    key,
                    message,
                })?;
        config.source = Source {
            file: file.to_owned(),
            text: text.to_owned(),
        };
        Ok(config)
    }
}

/// A parse error's message with the Rust type names serde gives (`a nonzero u64`, `usize`,
/// `invalid socket address syntax`) said in an administrator's words; `key` tells whether a
/// number is seconds.
fn in_words(message: &str, key: &str) -> String {
    let seconds = key.ends_with("timeout") || key.ends_with("_time") || key.ends_with("_seconds");
    let unit = if seconds { " of seconds" } else { "" };
    let mut out = message.to_owned();
    for (rust, words) in [
        ("a nonzero u64", format!("a whole number{unit}, at least 1")),
        ("a nonzero u32", format!("a whole number{unit}, at least 1")),
        (
            "a nonzero usize",
            format!("a whole number{unit}, at least 1"),
        ),
        ("u64", format!("a whole number{unit}, 0 or more")),
        ("u32", format!("a whole number{unit}, 0 or more")),
        ("usize", format!("a whole number{unit}, 0 or more")),
        ("u16", "a whole number from 0 to 65535".to_owned()),
        ("u8", "a whole number from 0 to 255".to_owned()),
        ("i64", "a whole number".to_owned()),
        ("f64", "a number".to_owned()),
    ] {
        if let Some(rest) = out.strip_suffix(&format!("expected {rust}")) {
            out = format!("{rest}expected {words}");
            break;
        }
    }
    if out == "invalid socket address syntax" {
        out = "not an IP address with a port: write e.g. \"127.0.0.1:25\" or \"[::1]:25\" (a host name such as localhost is not taken here)".to_owned();
    }
    out
}

/// The key of a parse error as the file writes it, e.g. `relay_target[0].port`; empty for the
/// file as a whole. A value read through `Spanned` adds the private field that `Spanned` takes
/// it from to the path: it is left out.
fn key_path(path: &serde_path_to_error::Path) -> String {
    let mut key = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Map { key: field } if field.starts_with("$__serde_spanned_private") => {}
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            named => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&named.to_string());
            }
        }
    }
    key
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// A config error before it is given its file and line: the span, the key path, the message.
type Invalid = (Range<usize>, String, String);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    hostname: Option<Spanned<String>>,
    default_organization: Option<Spanned<String>>,
    #[serde(rename = "organization")]
    organizations: Vec<organizations::OrganizationSection>,
    milter: milter::MilterSection,
    scan: scan::ScanSection,
    connection: connection::ConnectionSection,
    exploit_detection: connection::ExploitDetectionSection,
    dns: dns::DnsSection,
    rbl: rbl::RblSection,
    relay: connection::RelaySection,
    #[serde(rename = "encryption_rule")]
    encryption_rules: Vec<Spanned<connection::EncryptionRuleSection>>,
    spf: spf::SpfSection,
    dos_protection: connection::DosSection,
    #[serde(rename = "connection_profile")]
    connection_profiles: Vec<connection::ProfileSection>,
    reputation: reputation::ReputationSection,
    content: rulesets::ContentSection,
    #[serde(rename = "ruleset")]
    rulesets: Vec<rulesets::RulesetSection>,
    proxy: proxy::ProxySection,
    delivery: delivery::DeliverySection,
    #[serde(rename = "relay_target")]
    relay_targets: Vec<delivery::RelayTargetSection>,
    state: state::StateSection,
    shared_state: state::SharedStateSection,
    metrics: metrics::MetricsSection,
    console: console::ConsoleSection,
    log: log::LogSection,
    tracking: tracking::TrackingSection,
    #[serde(rename = "address_transformation")]
    address_transformations: Vec<address_transformation::AddressTransformationSection>,
    #[serde(rename = "dkim_signer")]
    dkim_signers: Vec<dkim::DkimSignerSection>,
    authentication: authentication::AuthenticationSection,
    #[serde(rename = "arc_sealer")]
    arc_sealers: Vec<Spanned<authentication::ArcSealerSection>>,
    #[serde(rename = "outbound_tls_policy")]
    outbound_tls_policies: Vec<Spanned<outbound_tls::OutboundTlsPolicySection>>,
}

impl ConfigFile {
    /// Checks what serde cannot and builds the settings, one section after another: a
    /// section compiles after those it reads (the checks take the help URL, a ruleset names
    /// profiles and relay targets), and the first error found is the one reported.
    fn compile(self, config_dir: Option<&Path>) -> Result<Config, Invalid> {
        let scan = scan::compile(self.scan)?;
        let hostname = hostname(self.hostname)?;
        let connection = connection::compile(self.connection)?;
        let help_url = &connection.help_url;
        let rbl = rbl::compile(self.rbl, help_url)?;
        let reputation = reputation::compile(self.reputation, help_url);
        let spf = spf::compile(self.spf, help_url);
        let relay = connection::relay(self.relay)?;
        let mut notes = Vec::new();
        let mut users_files = Vec::new();
        let mut profile_organizations = Vec::new();
        let profiles = connection::profiles(
            self.connection_profiles,
            &relay.restriction,
            &mut notes,
            &mut users_files,
            &mut profile_organizations,
        )?;
        let profile_names: Vec<String> = profiles.0.iter().map(|p| p.name.clone()).collect();
        let delivery = delivery::compile(self.delivery, self.relay_targets, &hostname, config_dir)?;
        let organizations = organizations::compile(
            self.organizations,
            self.default_organization,
            &delivery,
            config_dir,
        )?;
        let organization_names = organizations.names();
        let console_organizations: Vec<String> =
            organization_names.iter().map(|n| n.to_string()).collect();
        let organization_retention = organizations.retention;
        let organization_dmarc = organizations.dmarc_span;
        let (proxy, organization_users) = proxy::compile(
            self.proxy,
            config_dir,
            users_files,
            organizations.users_files,
        )?;
        let mut organizations = organizations.organizations;
        organizations.users = organization_users
            .into_iter()
            .filter_map(|(user, org)| {
                let id = organization_names.iter().position(|n| *n == org)?;
                Some((user, id))
            })
            .collect();
        for (profile, organization) in profile_organizations {
            let key = format!("connection_profile {profile:?} organization");
            let name = organizations::named(Some(organization), &organization_names, key)?;
            if let Some(id) = name.and_then(|n| organization_names.iter().position(|k| *k == n)) {
                organizations.profiles.insert(profile, id);
            }
        }
        let authentication = authentication::compile(
            self.authentication,
            self.arc_sealers,
            &profile_names,
            &organization_names,
            &delivery,
            config_dir,
        )?;
        if let Some(span) = organization_dmarc
            && authentication.dmarc == crate::engine::authentication::DmarcMode::Off
        {
            return Err((
                span,
                "organization.dmarc".into(),
                "[authentication] dmarc is \"off\": DMARC is not evaluated at all; set it to \"report\" (or \"enforce\") so that an organization's dmarc decides whether failures are enforced on its mail".into(),
            ));
        }
        // The resolver is set up only for a check that looks something up, or for profiles
        // naming hosts, whose names the proxy verifies itself.
        let needs_dns = rbl.is_some()
            || spf.is_some()
            || reputation.as_ref().is_some_and(|r| !r.zones.is_empty())
            || profiles.names_hosts()
            || authentication.verifies();
        let dns = dns::compile(self.dns, needs_dns);
        let content = rulesets::compile(
            self.content,
            self.rulesets,
            &profile_names,
            &organization_names,
            &delivery,
            config_dir,
        )?;
        for org in &mut organizations.list {
            org.has_rulesets = content
                .rulesets
                .iter()
                .any(|rs| rs.conditions.organizations.contains(&org.name));
        }

        let encryption_rules =
            connection::encryption_rules(self.encryption_rules, &delivery, &organizations)?;
        let outbound_tls = outbound_tls::compile(self.outbound_tls_policies, &profile_names)?;
        let address_transformations =
            address_transformation::compile(self.address_transformations, &organizations)?;
        let dkim = dkim::compile(
            self.dkim_signers,
            &profile_names,
            &organization_names,
            config_dir,
        )?;
        let state = state::compile(self.state)?;
        let line_limit = delivery
            .targets
            .iter()
            .map(|t| t.line_limit)
            .filter(|l| *l > 0)
            .fold(delivery::RFC5321_LINE, usize::min);
        let policy = Policy {
            content,
            organizations,
            address_transformations,
            dkim,
            authentication,
            line_limit,
            hostname,
            help_url: connection.help_url,
            answers: connection.answers,
            client_ip_override: connection.client_ip_override,
            scan_failure_action: scan.scan_failure_action,
            scan_timeout: scan.scan_timeout,
            scan_slots: scan.scan_slots,
            signing_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            message_limits: scan.message_limits,
            delayed_rejection_state: connection.delayed_rejection_state,
            ip_address_rejection: connection.ip_address_rejection,
            profiles,
            client_limits: connection::client_limits(self.dos_protection),
            rbl,
            reputation,
            spf,
            relay: relay.restriction,
            encryption_rules,
            via_memory: state.via_memory,
            outbound_tls,
            restrict_relaying: relay.restrict_relaying,
            skip_connection_tests_for_relay_sources: relay.skip_connection_tests,
            spoof_detection: relay.spoof_detection,
            exploit_detection: connection::exploit_detection(self.exploit_detection),
            trace_header: scan.trace_header,
            retain: scan.retain,
            dry_run: scan.dry_run,
        };
        Ok(Config {
            policy,
            dns,
            milter: milter::compile(self.milter),
            proxy,
            delivery,
            state,
            shared_state: state::compile_shared(self.shared_state, config_dir)?,
            metrics: metrics::compile(self.metrics, config_dir)?,
            console: console::compile(self.console, config_dir, &console_organizations)?,
            log: log::compile(self.log)?,
            tracking: tracking::compile(self.tracking, config_dir, organization_retention)?,
            source: Source::default(),
            notes,
        })
    }
}

/// The top-level `hostname` key; the system's host name when it is not set.
fn hostname(key: Option<Spanned<String>>) -> Result<String, Invalid> {
    match key {
        Some(h) if valid_hostname(h.get_ref()) => Ok(h.into_inner()),
        Some(h) => Err((
            h.span(),
            "hostname".into(),
            format!(
                "{:?} is not a host name (letters, digits, '-' and '.')",
                h.get_ref()
            ),
        )),
        None => Ok(system_hostname()),
    }
}

fn yes() -> bool {
    true
}

/// A path in the file is relative to the file's directory.
fn relative(path: PathBuf, config_dir: Option<&Path>) -> PathBuf {
    match config_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

/// The CA certificates of a PEM file (`ca_file` keys): an error says what is wrong with it.
fn ca_certificates(path: &Path) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let not_pem = |why: String| format!("{}: not a PEM certificate: {why}", path.display());
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem("no CERTIFICATE block".into()));
    }
    Ok(certs)
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
    use crate::engine::{ScanFailureAction, Stage};
    use crate::relay::{RelayAuth, Security};

    fn error(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn organizations_are_checked_where_they_are_named() {
        let orgs =
            "[[organization]]\nname = \"acme\"\ndomains = [\"acme.test\", \"*.acme.test\"]\n";
        let c = Config::parse(
            &format!(
                "default_organization = \"acme\"\n{orgs}\
                 [[ruleset]]\nname = \"r\"\norganizations = [\"acme\"]\n"
            ),
            "t.toml",
        )
        .unwrap();
        let o = &c.policy.organizations;
        assert_eq!(o.default, Some(0));
        assert!(o.list[0].has_rulesets && o.list[0].own_route.is_empty());
        assert!(c.policy.to_string().contains(
            "organization:            acme (default): domains acme.test, *.acme.test; route shared; rulesets r;"
        ), "{}", c.policy);

        let e = error(&format!(
            "{orgs}[[organization]]\nname = \"globex\"\ndomains = [\"x.acme.test\", \"*.Acme.test\"]\n"
        ));
        assert!(
            e.contains("test.toml:6:") && e.contains("organization[1].domains"),
            "{e}"
        );
        assert!(
            e.contains("*.acme.test is claimed by organization \"acme\" too"),
            "{e}"
        );
        let e = error(&format!(
            "{orgs}[[organization]]\nname = \"acme\"\ndomains = [\"b.test\"]\n"
        ));
        assert!(
            e.contains("organization[1].name") && e.contains("defined twice"),
            "{e}"
        );
        let e = error("[[organization]]\nname = \"a b\"\ndomains = [\"b.test\"]\n");
        assert!(
            e.contains("organization[0].name") && e.contains("metrics label"),
            "{e}"
        );
        let e = error("[[organization]]\nname = \"a\"\ndomains = [\"*\"]\n");
        assert!(e.contains("\"*\" is not a domain"), "{e}");
        let e = error(&format!("default_organization = \"globex\"\n{orgs}"));
        assert!(
            e.starts_with("test.toml:1:") && e.contains("no [[organization]] is named \"globex\""),
            "{e}"
        );
        let e = error(&format!(
            "{orgs}[[ruleset]]\nname = \"r\"\norganizations = [\"globex\"]\n"
        ));
        assert!(
            e.contains("ruleset[0].organizations") && e.contains("(known: acme)"),
            "{e}"
        );
        let profile = "[[connection_profile]]\nname = \"servers\"\nclient_hosts = [\"10.0.0.0/8\"]\n\
                       relay_control = \"full\"\norganization = ";
        let c = Config::parse(&format!("{orgs}{profile}\"acme\"\n"), "t.toml").unwrap();
        assert_eq!(c.policy.organizations.profiles.get("servers"), Some(&0));
        let e = error(&format!("{orgs}{profile}\"globex\"\n"));
        assert!(
            e.contains("connection_profile \"servers\" organization")
                && e.contains("no [[organization]] is named \"globex\""),
            "{e}"
        );
        for (section, key) in [
            (
                "[[encryption_rule]]\nrecipient_domain = \"*\"\n",
                "encryption_rule[0].organizations",
            ),
            (
                "[[address_transformation]]\nmatch = \"@a.test\"\nreplace = \"@b.test\"\n",
                "address_transformation[0].organizations",
            ),
        ] {
            let e = error(&format!("{orgs}{section}organizations = [\"globex\"]\n"));
            assert!(e.contains(key) && e.contains("(known: acme)"), "{e}");
            let c = Config::parse(&format!("{orgs}{section}organizations = [\"acme\"]\n"), "t");
            assert!(c.is_ok(), "{section}");
        }
        let c = Config::parse(
            &format!("{orgs}[[encryption_rule]]\norganizations = [\"acme\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(c.policy.encryption_rules.0[0].domains.len(), 2);
        let e = error(&format!("{orgs}dmarc = \"enforce\"\n"));
        assert!(
            e.contains("organization.dmarc") && e.contains("[authentication] dmarc is \"off\""),
            "{e}"
        );
        let c = Config::parse(
            &format!("{orgs}dmarc = \"enforce\"\nspf_fail_action = \"accept\"\n[authentication]\ndmarc = \"report\"\n"),
            "t",
        )
        .unwrap();
        assert!(c.policy.organizations.judge_spf());
        assert!(
            c.policy
                .to_string()
                .contains("; spf fail accept; dmarc enforce"),
            "{}",
            c.policy
        );
        let e = error(&format!("{orgs}relay_targets = [\"nowhere\"]\n"));
        assert!(
            e.contains("organization[0].relay_targets") && e.contains("nowhere"),
            "{e}"
        );
    }

    #[test]
    fn a_user_name_belongs_to_one_organization() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$Ia0vL4Hw1BqBwH5KJeyWBJZ6eS4QeU7jyNzCdyCvXgk";
        for (file, users) in [("acme", "alice"), ("globex", "bob\nalice")] {
            let path = dir.path().join(file);
            let lines: Vec<String> = users.lines().map(|u| format!("{u}:{hash}")).collect();
            std::fs::write(&path, lines.join("\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let org = |name: &str| {
            format!(
                "[[organization]]\nname = \"{name}\"\ndomains = [\"{name}.test\"]\n\
                 auth_users_file = \"{}\"\n",
                dir.path().join(name).display()
            )
        };
        let c = Config::parse(&org("acme"), "t.toml").unwrap();
        assert_eq!(c.policy.organizations.users.get("alice"), Some(&0));
        assert!(
            c.proxy.auth_users.is_some(),
            "the organizations' users authenticate"
        );
        let e = error(&format!("{}{}", org("acme"), org("globex")));
        assert!(
            e.contains("organization \"globex\" auth_users_file")
                && e.contains("organization \"acme\"'s user \"alice\""),
            "{e}"
        );
    }

    #[test]
    fn type_errors_are_said_in_words() {
        let error = |text: &str| Config::parse(text, "t.toml").unwrap_err().to_string();
        let e = error("[dns]\ntimeout = 0\n");
        assert!(
            e.contains("dns.timeout")
                && e.ends_with("expected a whole number of seconds, at least 1"),
            "{e}"
        );
        let e = error("[dns]\nattempts = \"two\"\n");
        assert!(e.ends_with("expected a whole number, at least 1"), "{e}");
        let e = error("[proxy]\nlisten = [\"localhost:25\"]\n");
        assert!(e.contains("write e.g. \"127.0.0.1:25\""), "{e}");
        assert!(!e.contains("u64") && !e.contains("syntax"), "{e}");
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
        assert!(
            e.contains("test.toml:2:") && e.contains("at least 1"),
            "{e}"
        );
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
        // Enabled without zones listed: the default zones.
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
            e.contains("template does not belong to action \"mask\", which takes keep_last, mask_char, unchangeable and relay_targets; remove it or change the action"),
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
            e.contains("reply does not belong to action \"tokenize\", which takes key_file, key_env, prefix, length, unchangeable and relay_targets; remove it or change the action"),
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
        // A bad value of an action's own key names that key's line, not the action's.
        let e = error(&rule("reject", "\n\nreply = \"450 4.7.1 later\"\n"));
        assert!(
            e.starts_with("test.toml:10: key `ruleset[0].rule[0].reply`: ")
                && e.contains("a reject reply is a 5xx reply"),
            "{e}"
        );
        let e = error(&rule(
            "tokenize",
            "\nkey_env = \"POSTERN_TEST_UNSET_KEY\"\n",
        ));
        assert!(
            e.starts_with("test.toml:9: key `ruleset[0].rule[0].key_file`: "),
            "{e}"
        );
    }

    #[test]
    fn a_bad_ruleset_header_names_its_line() {
        let e = error("[content]\n\nruleset_header = \"X Rulesets\"\n");
        assert!(
            e.starts_with("test.toml:3: key `content.ruleset_header`"),
            "{e}"
        );
    }

    /// Asserts that `text` is refused at `line` with `key` named.
    fn assert_error_at(text: &str, line: usize, key: &str) {
        let e = error(text);
        let at = format!("test.toml:{line}: key `{key}`: ");
        assert!(e.starts_with(&at), "expected {at:?}, got: {e}");
    }

    #[test]
    fn a_bad_help_url_names_its_line() {
        assert_error_at(
            "[connection]\n\nhelp_url = \"see https://example.org\"\n",
            3,
            "connection.help_url",
        );
    }

    #[test]
    fn connection_answers_and_their_errors() {
        let c = Config::parse(
            "[connection]\nreport_rejections = false\npostmaster = \"postmaster@example.org\"\n\
             client_ip_override = \"192.0.2.10\"\n",
            "test.toml",
        )
        .unwrap();
        assert!(!c.policy.answers.report_rejections);
        assert_eq!(
            c.policy.answers.postmaster.as_deref(),
            Some("postmaster@example.org")
        );
        assert_eq!(
            c.policy.client_ip_override,
            Some("192.0.2.10".parse().unwrap())
        );
        assert!(
            c.lints()[0].contains("client_ip_override"),
            "{:?}",
            c.lints()
        );
        assert_error_at(
            "[connection]\n\npostmaster = \"no domain\"\n",
            3,
            "connection.postmaster",
        );
        assert_error_at(
            "[connection]\nclient_ip_override = \"192.0.2\"\n",
            2,
            "connection.client_ip_override",
        );
    }

    #[test]
    fn wildcard_hosts_are_read_as_networks_and_a_host_belongs_to_one_profile() {
        let c = Config::parse(
            "[[connection_profile]]\nname = \"lan\"\nclient_hosts = [\"10.100.80.*\", \"10.*.*.*\", \"192.0.2.7\"]\n",
            "test.toml",
        )
        .unwrap();
        let hosts: Vec<String> = c.policy.profiles.0[0]
            .client_hosts
            .iter()
            .map(|h| format!("{h:?}"))
            .collect();
        assert_eq!(
            hosts,
            [
                "Network(10.100.80.0/24)",
                "Network(10.0.0.0/8)",
                "Network(192.0.2.7/32)"
            ]
        );
        let lints = c.lints();
        assert!(
            lints.len() == 2
                && lints[0].contains("\"10.100.80.*\" is read as the network 10.100.80.0/24"),
            "{lints:?}"
        );
        for bad in ["10.*.80.*", "10.100.80.*.*", "*"] {
            let text =
                format!("[[connection_profile]]\nname = \"lan\"\nclient_hosts = [\"{bad}\"]\n");
            assert!(Config::parse(&text, "test.toml").is_err(), "{bad}");
        }
        assert_error_at(
            "[[connection_profile]]\nname = \"a\"\nclient_hosts = [\"10.1.0.0/16\"]\n\
             [[connection_profile]]\nname = \"b\"\nclient_hosts = [\"10.1.*.*\"]\n",
            6,
            "connection_profile[1].client_hosts",
        );
    }

    #[test]
    fn an_encryption_rule_longer_than_200_bytes_is_refused() {
        let domains: Vec<String> = (0..12).map(|i| format!("sub{i}.example.org")).collect();
        let long = format!("*.{}", domains.join("-"));
        let rule = |domain: &str| {
            format!(
                "\n[[encryption_rule]]\nrecipient_domain = \"{domain}\"\nsender_encryption = \"required\"\n"
            )
        };
        assert!(Config::parse(&rule("secure.example"), "test.toml").is_ok());
        let e = error(&rule(&long));
        assert!(
            e.contains("encryption_rule[0]") && e.contains("more than the 200"),
            "{e}"
        );
    }

    #[test]
    fn rbl_without_zones_names_the_empty_list() {
        assert_error_at("[rbl]\nenabled = true\n\nzone = []\n", 4, "rbl.zone");
    }

    #[test]
    fn relay_errors_name_their_line() {
        // A bad domain in a list written over several lines: the line of that domain.
        assert_error_at(
            "[relay]\nlocal_domains = [\n  \"example.org\",\n  \"bad domain\",\n]\n",
            4,
            "relay.local_domains",
        );
        // No local domain to point at: the key that needs one.
        assert_error_at(
            "[relay]\nallow_relay_if_authenticated = true\nrestrict_relaying = true\n",
            3,
            "relay.local_domains",
        );
    }

    #[test]
    fn connection_profile_errors_name_their_line() {
        assert_error_at(
            "[[connection_profile]]\nname = \"p\"\nclient_hosts = [\n  \"10.0.0.0/8\",\n  \"bad host!\",\n]\n",
            5,
            "connection_profile[0].client_hosts",
        );
        assert_error_at(
            "[[connection_profile]]\nname = \"p\"\nrequire_tls = true\nrelay_control = \"restricted-internal\"\n",
            4,
            "connection_profile[0].relay_control",
        );
    }

    #[test]
    fn proxy_errors_name_their_line() {
        assert_error_at(
            "[proxy]\nlisten = []\nbanner = \"ESMTP \u{e9}\"\n",
            3,
            "proxy.banner",
        );
        assert_error_at(
            "[proxy]\n\nstress_threshold = 101\n",
            3,
            "proxy.stress_threshold",
        );
        // Either half of the certificate pair alone: the line of the half given.
        assert_error_at(
            "[proxy]\nlisten = []\nkey_file = \"/nonexistent/key.pem\"\n",
            3,
            "proxy.certificate_file",
        );
        assert_error_at(
            "[proxy]\n\ncertificate_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
            3,
            "proxy.certificate_file",
        );
        assert_error_at(
            "[proxy]\n\nauth_users_file = \"/nonexistent/users\"\n",
            3,
            "proxy.auth_users_file",
        );
        assert_error_at(
            "[proxy]\n\nsubmission_listen = [\"127.0.0.1:587\"]\n",
            3,
            "proxy.submission_listen",
        );
    }

    #[test]
    fn relay_target_errors_name_the_line_of_their_key() {
        let target =
            |keys: &str| format!("[[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\n{keys}");
        assert_error_at(
            &target("line_limit = 10\n"),
            4,
            "relay_target[0].line_limit",
        );
        assert_error_at(
            &target("port = 2525\npriority = 0\n"),
            5,
            "relay_target[0].priority",
        );
        assert_error_at(&target("auth = \"plain\"\n"), 4, "relay_target[0].auth");
        let tls = "security = \"tls\"\nauth = \"login\"\n";
        // A missing username or password: the auth key that needs it.
        assert_error_at(&target(tls), 5, "relay_target[0].username");
        assert_error_at(
            &target(&format!("{tls}username = \"u\"\n")),
            5,
            "relay_target[0].password_file",
        );
        assert_error_at(
            &target(&format!(
                "{tls}username = \"u\"\npassword_env = \"POSTERN_TEST_UNSET_PASSWORD\"\n"
            )),
            7,
            "relay_target[0].password_file",
        );
        assert_error_at(
            &target("security = \"tls\"\nca_file = \"/nonexistent/ca.pem\"\n"),
            5,
            "relay_target[0].ca_file",
        );
    }

    #[test]
    fn a_bad_trace_header_name_names_its_line() {
        assert_error_at(
            "[scan]\ntrace_header = true\ntrace_header_name = \"X Verdict\"\n",
            3,
            "scan.trace_header_name",
        );
    }

    #[test]
    fn keys_left_out_take_their_documented_defaults() {
        let c = Config::parse(
            "[scan]\ntrace_header = true\n[[relay_target]]\nname = \"mta\"\nhost = \"h\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.policy.trace_header.unwrap().name, "X-Postern-Verdict");
        assert_eq!(
            c.policy.content.ruleset_header.as_deref(),
            Some("X-Postern-Rulesets")
        );
        assert_eq!(c.proxy.banner, "ESMTP Postern");
        assert_eq!(c.proxy.stress_threshold, 80);
        assert!(!c.policy.restrict_relaying);
        let t = &c.delivery.targets[0];
        assert_eq!((t.port, t.priority, t.line_limit), (25, 1, 1000));
        assert_eq!((t.security, t.auth), (Security::None, RelayAuth::None));
        assert!(t.credentials.is_none() && t.tls.is_none());
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key_as_written() {
        let e = error("[scan]\nspool_directory = 5\n");
        assert!(
            e.starts_with("test.toml:2: key `scan.spool_directory`: invalid type"),
            "{e}"
        );
        let e = error("hostname = 5\n");
        assert!(e.starts_with("test.toml:1: key `hostname`: "), "{e}");
        let e = error(
            "[[ruleset]]\nname = \"r\"\n[[ruleset.rule]]\nname = \"x\"\n\
             targets = [\"body\", 1]\naction = \"redact\"\n",
        );
        assert!(
            e.starts_with("test.toml:5: key `ruleset[0].rule[0].targets[1]`: "),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let e = error("[milter]\nlisten = \n");
        assert!(e.starts_with("test.toml:2"), "{e}");
    }
}
