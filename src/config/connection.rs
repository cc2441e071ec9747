//! `[connection]`, `[exploit_detection]`, `[dos_protection]`, `[relay]`, `[[encryption_rule]]`
//! and `[[connection_profile]]`: which clients are refused, limited or trusted, who may relay
//! to which domains, and which connections must be encrypted.

use std::num::NonZeroU32;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, networks, valid_hostname, yes};
use crate::engine::address::{DomainPattern, EnvelopeAddress};
use crate::engine::checks::dos::ClientLimits;
use crate::engine::checks::encryption::{EncryptionRule, RecipientEncryption, SenderEncryption};
use crate::engine::checks::exploit_detection::HidingReply;
use crate::engine::checks::profiles::{ClientHost, ConnectionProfile, Profiles, RelayControl};
use crate::engine::checks::spoof::SpoofAction;
use crate::engine::checks::{EncryptionRules, ExploitDetection, IpRejection, RelayRestriction};
use crate::engine::policy::Answers;
use crate::engine::{SmtpReply, Stage};
use crate::relay::Delivery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ConnectionSection {
    delayed_rejection_state: Stage,
    #[serde(deserialize_with = "networks")]
    ip_address_rejection: Vec<IpNet>,
    ip_address_rejection_reply: SmtpReply,
    help_url: Option<Spanned<String>>,
    report_rejections: bool,
    postmaster: Option<Spanned<String>>,
    postmaster_exempt: bool,
    client_ip_override: Option<Spanned<String>>,
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
            report_rejections: true,
            postmaster: None,
            postmaster_exempt: true,
            client_ip_override: None,
        }
    }
}

/// What `[connection]` gives the policy.
pub(super) struct Connection {
    pub(super) delayed_rejection_state: Stage,
    pub(super) ip_address_rejection: IpRejection,
    /// Added to the replies of Postern's own checks, so it is compiled before them.
    pub(super) help_url: Option<String>,
    pub(super) answers: Answers,
    pub(super) client_ip_override: Option<std::net::IpAddr>,
}

pub(super) fn compile(c: ConnectionSection) -> Result<Connection, Invalid> {
    let help_url = match c.help_url {
        Some(url) if url.get_ref().is_empty() => None,
        Some(url)
            if url.get_ref().len() <= 200
                && url.get_ref().bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Some(url.into_inner())
        }
        Some(url) => {
            return Err((
                url.span(),
                "connection.help_url".into(),
                format!(
                    "{:?} is not a URL for a reply: printable ASCII without spaces, at most 200 characters",
                    url.get_ref()
                ),
            ));
        }
        None => None,
    };
    let postmaster = match c.postmaster {
        Some(p) if p.get_ref().is_empty() => None,
        Some(p) => match EnvelopeAddress::parse(p.get_ref()) {
            Ok(a)
                if !a.domain().is_empty() && p.get_ref().bytes().all(|b| b.is_ascii_graphic()) =>
            {
                Some(a.as_str().to_owned())
            }
            _ => {
                return Err((
                    p.span(),
                    "connection.postmaster".into(),
                    format!(
                        "{:?} is not an address for a reply: write e.g. \"postmaster@example.org\"",
                        p.get_ref()
                    ),
                ));
            }
        },
        None => None,
    };
    let client_ip_override = match c.client_ip_override {
        Some(ip) if ip.get_ref().is_empty() => None,
        Some(ip) => Some(ip.get_ref().parse().map_err(|_| {
            (
                ip.span(),
                "connection.client_ip_override".to_owned(),
                format!(
                    "{:?} is not an IP address: write e.g. \"192.0.2.10\" or \"2001:db8::1\", or \"\" for none",
                    ip.get_ref()
                ),
            )
        })?),
        None => None,
    };
    Ok(Connection {
        delayed_rejection_state: c.delayed_rejection_state,
        ip_address_rejection: IpRejection::new(
            c.ip_address_rejection,
            c.ip_address_rejection_reply,
        ),
        help_url,
        answers: Answers {
            report_rejections: c.report_rejections,
            postmaster,
            postmaster_exempt: c.postmaster_exempt,
        },
        client_ip_override,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ExploitDetectionSection {
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

pub(super) fn exploit_detection(e: ExploitDetectionSection) -> ExploitDetection {
    ExploitDetection {
        max_invalid_commands: e
            .drop_on_invalid_commands
            .then_some(e.max_invalid_commands.get()),
        max_failed_addresses: e
            .address_hiding_on_dictionary_attack
            .then_some(e.max_failed_addresses.get()),
        hiding_reply: e.address_hiding_reply,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DosSection {
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

/// `None` when DoS protection is off; a limit of 0 is no limit.
pub(super) fn client_limits(d: DosSection) -> Option<ClientLimits> {
    d.enabled.then(|| ClientLimits {
        max_connections: Some(d.max_connections_per_client).filter(|n| *n > 0),
        max_connection_rate: Some(d.max_connection_rate_per_client).filter(|n| *n > 0),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RelaySection {
    /// Unset: off. Kept with its line, for the error when no local domain is listed.
    restrict_relaying: Option<Spanned<bool>>,
    local_domains: Vec<Spanned<String>>,
    #[serde(deserialize_with = "networks")]
    allowed_relay_sources: Vec<IpNet>,
    allow_relay_if_authenticated: bool,
    skip_connection_tests: bool,
    /// Unset: off.
    spoof_detection: Option<Spanned<SpoofAction>>,
}

impl Default for RelaySection {
    fn default() -> Self {
        Self {
            restrict_relaying: None,
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
            spoof_detection: None,
        }
    }
}

/// What `[relay]` gives the policy.
pub(super) struct Relay {
    pub(super) restriction: RelayRestriction,
    pub(super) restrict_relaying: bool,
    pub(super) skip_connection_tests: bool,
    pub(super) spoof_detection: SpoofAction,
}

pub(super) fn relay(r: RelaySection) -> Result<Relay, Invalid> {
    if let Some(bad) = r
        .local_domains
        .iter()
        .find(|d| !valid_hostname(d.get_ref().trim_start_matches("*.").trim_start_matches('.')))
    {
        return Err((
            bad.span(),
            "relay.local_domains".into(),
            format!(
                "{:?} is not a domain (write example.org, or *.example.org for its subdomains)",
                bad.get_ref()
            ),
        ));
    }
    let restrict_relaying = match r.restrict_relaying {
        // With no local domain to name, the error points at the key that needs one.
        Some(on) if *on.get_ref() && r.local_domains.is_empty() => {
            return Err((
                on.span(),
                "relay.local_domains".into(),
                "restrict_relaying is on but no local domain is listed, so every recipient of a client outside allowed_relay_sources would be refused; list the domains you receive mail for".to_owned(),
            ));
        }
        Some(on) => on.into_inner(),
        None => false,
    };
    let spoof_detection = match r.spoof_detection {
        Some(action) if *action.get_ref() != SpoofAction::Off && r.local_domains.is_empty() => {
            return Err((
                action.span(),
                "relay.local_domains".into(),
                "spoof_detection looks for senders claiming a local domain, but no local domain is listed; list the domains you receive mail for".to_owned(),
            ));
        }
        Some(action) => action.into_inner(),
        None => SpoofAction::Off,
    };
    Ok(Relay {
        restriction: RelayRestriction {
            local_domains: r
                .local_domains
                .iter()
                .map(|d| DomainPattern::new(d.get_ref()))
                .collect(),
            allowed_relay_sources: r.allowed_relay_sources,
            allow_relay_if_authenticated: r.allow_relay_if_authenticated,
        },
        restrict_relaying,
        skip_connection_tests: r.skip_connection_tests,
        spoof_detection,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EncryptionRuleSection {
    #[serde(default = "any_domain")]
    sender_domain: String,
    #[serde(default = "any_domain")]
    recipient_domain: String,
    #[serde(default)]
    sender_encryption: SenderEncryption,
    #[serde(default)]
    recipient_encryption: RecipientEncryption,
    require_tls_for_whole_transaction: Option<Spanned<bool>>,
    via: Option<Spanned<Vec<String>>>,
    /// Only mail from or to these organizations' domains.
    #[serde(default)]
    organizations: Vec<String>,
    #[serde(default = "yes")]
    enabled: bool,
}

fn any_domain() -> String {
    "*".to_owned()
}

/// The enabled rules, in order.
/// The longest encryption rule, as one line of its domains, settings and route names: the
/// limit the firewall documents for its rules, kept so that rules move between them whole.
const MAX_ENCRYPTION_RULE: usize = 200;

/// An encryption rule as one line: `sender_domain recipient_domain sender_encryption
/// recipient_encryption [whole] [via names]`.
fn rule_line(r: &EncryptionRuleSection) -> String {
    let mut line = format!(
        "{} {} {:?} {:?}",
        r.sender_domain, r.recipient_domain, r.sender_encryption, r.recipient_encryption
    );
    if r.require_tls_for_whole_transaction
        .as_ref()
        .is_some_and(|f| *f.get_ref())
    {
        line.push_str(" whole");
    }
    if let Some(via) = &r.via {
        line.push(' ');
        line.push_str(&via.get_ref().join(","));
    }
    line
}

pub(super) fn encryption_rules(
    rules: Vec<Spanned<EncryptionRuleSection>>,
    delivery: &Delivery,
    organizations: &crate::engine::organizations::Organizations,
) -> Result<EncryptionRules, Invalid> {
    let known: Vec<String> = organizations.list.iter().map(|o| o.name.clone()).collect();
    let mut compiled = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        let span = rule.span();
        let r = rule.into_inner();
        if let Some(m) = super::organizations::unknown(&r.organizations, &known) {
            return Err((span, format!("encryption_rule[{i}].organizations"), m));
        }
        let line = rule_line(&r);
        if line.len() > MAX_ENCRYPTION_RULE {
            return Err((
                span,
                format!("encryption_rule[{i}]"),
                format!(
                    "the rule is {} bytes as one line (its domains, settings and route), more than the {MAX_ENCRYPTION_RULE} an encryption rule may have: split it into several rules",
                    line.len()
                ),
            ));
        }
        let via = match r.via {
            Some(names) => {
                delivery.through(names.get_ref()).map_err(|m| {
                    (
                        names.span(),
                        format!("encryption_rule[{i}].via"),
                        m.to_string(),
                    )
                })?;
                names.into_inner()
            }
            None => Vec::new(),
        };
        let flag = r.require_tls_for_whole_transaction;
        let whole = flag.as_ref().is_some_and(|f| *f.get_ref());
        if let Some(flag) = flag.filter(|_| whole)
            && r.sender_encryption != SenderEncryption::Required
        {
            return Err((
                flag.span(),
                format!("encryption_rule[{i}].require_tls_for_whole_transaction"),
                "applies only with sender_encryption = \"required\"".to_owned(),
            ));
        }
        if r.enabled {
            compiled.push(EncryptionRule {
                sender_domain: DomainPattern::new(&r.sender_domain),
                recipient_domain: DomainPattern::new(&r.recipient_domain),
                sender_encryption: r.sender_encryption,
                recipient_encryption: r.recipient_encryption,
                whole_transaction: whole,
                via,
                domains: organizations.domains_of(&r.organizations),
            });
        }
    }
    Ok(EncryptionRules(compiled))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileSection {
    name: String,
    #[serde(default)]
    client_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    sender_domains: Vec<String>,
    /// Unset: the default, [`RelayControl::None`].
    relay_control: Option<Spanned<RelayControl>>,
    rbl: Option<bool>,
    spf: Option<bool>,
    #[serde(default)]
    require_tls: bool,
    spoof_detection: Option<Spanned<SpoofAction>>,
    /// The users this profile's clients authenticate as (the proxy door), instead of
    /// `[proxy] auth_users_file`'s.
    auth_users_file: Option<Spanned<std::path::PathBuf>>,
    /// The organization whose senders this profile's clients are (outbound mail).
    organization: Option<Spanned<String>>,
}

/// A profile's organization, as written: the profile's name and the organization's.
pub(super) type ProfileOrganization = (String, Spanned<String>);

/// A profile's own AUTH users file, for the proxy door to load: the profile's name and the
/// file as written.
pub(super) type ProfileUsersFile = (String, Spanned<std::path::PathBuf>);

/// An IPv4 host entry with wildcards for its last octets (`10.100.80.*`, `10.*.*.*`), as the
/// email gateway's host lists have them: the network it stands for.
fn wildcard_network(host: &str) -> Option<IpNet> {
    let octets: Vec<&str> = host.split('.').collect();
    let fixed = octets.iter().take_while(|o| **o != "*").count();
    if octets.len() != 4 || fixed == 4 || octets[fixed..].iter().any(|o| *o != "*") {
        return None;
    }
    let mut address = [0u8; 4];
    for (i, octet) in octets[..fixed].iter().enumerate() {
        address[i] = octet.parse().ok()?;
    }
    IpNet::new(std::net::Ipv4Addr::from(address).into(), (fixed * 8) as u8).ok()
}

/// The connection profiles, in order; a restricted profile needs `[relay]`'s local domains.
/// A host entry with wildcards is read as its network, and said so in `notes`; one host entry
/// in two profiles is refused (the first profile would always win).
pub(super) fn profiles(
    sections: Vec<ProfileSection>,
    relay: &RelayRestriction,
    notes: &mut Vec<String>,
    users_files: &mut Vec<ProfileUsersFile>,
    organizations: &mut Vec<ProfileOrganization>,
) -> Result<Profiles, Invalid> {
    let mut profiles: Vec<ConnectionProfile> = Vec::new();
    for (n, p) in sections.into_iter().enumerate() {
        let key = format!("connection_profile[{n}]");
        let mut client_hosts = Vec::new();
        for spanned in &p.client_hosts {
            let host = spanned.get_ref();
            let wildcard = wildcard_network(host);
            if let Some(network) = wildcard {
                notes.push(format!(
                    "{key}.client_hosts: {host:?} is read as the network {network}; write it so (wildcard host entries are converted as the email gateway does on upgrade)"
                ));
            }
            let parsed = host
                .parse::<IpNet>()
                .or_else(|_| host.parse::<std::net::IpAddr>().map(IpNet::from))
                .ok()
                .or(wildcard)
                .map(ClientHost::Network)
                .or_else(|| {
                    valid_hostname(host)
                        .then(|| ClientHost::Name(host.trim_end_matches('.').to_ascii_lowercase()))
                });
            if let Some(h) = &parsed
                && let Some(other) = profiles.iter().find(|o| o.client_hosts.contains(h))
            {
                return Err((
                    spanned.span(),
                    format!("{key}.client_hosts"),
                    format!(
                        "{host:?} is already a host of profile {:?}: a host entry belongs to one profile (the first that lists it would always win)",
                        other.name
                    ),
                ));
            }
            match parsed {
                Some(h) => client_hosts.push(h),
                None => {
                    return Err((
                        spanned.span(),
                        format!("{key}.client_hosts"),
                        format!(
                            "{host:?} is neither an IP network (192.0.2.0/24, 2001:db8::/32) nor a host name"
                        ),
                    ));
                }
            }
        }
        let relay_control = match p.relay_control {
            Some(control)
                if matches!(
                    control.get_ref(),
                    RelayControl::RestrictedExternal | RelayControl::RestrictedInternal
                ) && relay.local_domains.is_empty() =>
            {
                return Err((
                    control.span(),
                    format!("{key}.relay_control"),
                    format!(
                        "profile {:?} restricts its clients to local domains, but [relay] local_domains is empty; list the domains you receive mail for",
                        p.name
                    ),
                ));
            }
            Some(control) => control.into_inner(),
            None => RelayControl::default(),
        };
        let spoof_detection = match p.spoof_detection {
            Some(action)
                if *action.get_ref() != SpoofAction::Off && relay.local_domains.is_empty() =>
            {
                return Err((
                    action.span(),
                    format!("{key}.spoof_detection"),
                    "spoof detection looks for senders claiming a local domain, but [relay] local_domains is empty; list the domains you receive mail for".to_owned(),
                ));
            }
            Some(action) => Some(action.into_inner()),
            None => None,
        };
        if let Some(file) = p.auth_users_file {
            users_files.push((p.name.clone(), file));
        }
        if let Some(organization) = p.organization {
            organizations.push((p.name.clone(), organization));
        }
        let checks = ConnectionProfile::checks_by_default(relay_control);
        profiles.push(ConnectionProfile {
            name: p.name,
            client_hosts,
            sender_domains: p
                .sender_domains
                .iter()
                .map(|d| DomainPattern::new(d))
                .collect(),
            relay_control,
            rbl: p.rbl.unwrap_or(checks),
            spf: p.spf.unwrap_or(checks),
            require_tls: p.require_tls,
            spoof_detection,
        });
    }
    Ok(Profiles(profiles))
}
