//! Organizations one gateway serves (`[[organization]]`): which organization owns an address,
//! and which recipients of one transaction are to receive a version of their own.
//!
//! A recipient belongs to the organization that claims its domain; an outbound sender to the
//! organization of its authenticated user, else its connection profile's, else its domain's;
//! mail of none falls to the default organization, when one is set. The organizations a
//! recipient's copy concerns are its own and, on outbound mail, the sender's: those choose the
//! rulesets of that copy.

use std::collections::HashMap;

use super::address::{Address, DomainPattern, EnvelopeAddress};
use super::authentication::DmarcMode;
use super::checks::spf::SpfAction;

/// An index into [`Organizations`]; stable for the policy it was taken from.
pub type OrgId = usize;

/// One organization.
#[derive(Clone, Debug)]
pub struct Organization {
    pub name: String,
    /// The domains it claims, `*.` patterns included.
    pub domains: Vec<DomainPattern>,
    /// Its own relay targets (`relay_targets`): its recipients' copies always leave through
    /// them, never with the other organizations' mail. Empty: the ordinary targets.
    pub own_route: Vec<String>,
    /// Whether some ruleset names it: its recipients may need a version of their own.
    pub has_rulesets: bool,
    /// `max_message_size`: messages to its recipients or from its senders larger than this
    /// are refused.
    pub max_message_size: Option<u64>,
    /// `spf_fail_action`, `spf_softfail_action`: what SPF results do to its recipients,
    /// instead of `[spf]`'s.
    pub spf_fail_action: Option<SpfAction>,
    pub spf_softfail_action: Option<SpfAction>,
    /// `dmarc`: whether DMARC failures are enforced on mail to its recipients (`report` or
    /// `enforce`), instead of `[authentication] dmarc`.
    pub dmarc: Option<DmarcMode>,
    /// `rbl_hit_action`: what a DNSBL listing of the client does to its recipients, instead
    /// of `[rbl] hit_action`.
    pub rbl_hit_action: Option<RblHitAction>,
}

/// An organization's `rbl_hit_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RblHitAction {
    /// Its recipients are accepted from a listed client.
    Accept,
    /// 421, as `[rbl] hit_action = "delay"`.
    Delay,
    /// 554, as `[rbl] hit_action = "reject"`.
    Reject,
}

impl RblHitAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Accept => "accept",
            Self::Delay => "delay",
            Self::Reject => "reject",
        }
    }
}

/// The organizations of the policy, in configuration order.
#[derive(Clone, Debug, Default)]
pub struct Organizations {
    pub list: Vec<Organization>,
    /// `default_organization`: the owner of mail no organization claims.
    pub default: Option<OrgId>,
    /// Authenticated users by name (the organizations' `auth_users_file`s).
    pub users: HashMap<String, OrgId>,
    /// Connection profiles whose clients send for an organization (`organization`).
    pub profiles: HashMap<String, OrgId>,
    /// Names of the ordinary relay targets (not `divert_only`): the route of a version whose
    /// organization has none of its own.
    pub ordinary_route: Vec<String>,
}

impl Organizations {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn name(&self, id: OrgId) -> &str {
        &self.list[id].name
    }

    /// The domains the organizations `names` claim (names checked by the caller).
    pub fn domains_of(&self, names: &[String]) -> Vec<DomainPattern> {
        self.list
            .iter()
            .filter(|o| names.contains(&o.name))
            .flat_map(|o| o.domains.iter().cloned())
            .collect()
    }

    /// The organization that claims `domain`: an exact domain before a `*.` pattern, the
    /// longest pattern among those.
    pub fn of_domain(&self, domain: &str) -> Option<OrgId> {
        let domain = domain.trim_end_matches('.');
        self.list
            .iter()
            .enumerate()
            .flat_map(|(id, org)| org.domains.iter().map(move |d| (id, d)))
            .filter(|(_, pattern)| pattern.matches(domain))
            .max_by_key(|(_, pattern)| {
                let text = pattern.as_str();
                (!text.contains('*'), text.len())
            })
            .map(|(id, _)| id)
    }

    /// The sender's organization: outbound mail only (an inbound sender's domain proves
    /// nothing), by its authenticated user, else its client's connection profile, else its
    /// domain, else the default.
    pub fn of_sender(
        &self,
        outbound: bool,
        user: Option<&str>,
        profile: Option<&str>,
        sender: &EnvelopeAddress,
    ) -> Option<OrgId> {
        if self.is_empty() || !outbound {
            return None;
        }
        user.and_then(|u| self.users.get(u).copied())
            .or_else(|| profile.and_then(|p| self.profiles.get(p).copied()))
            .or_else(|| self.of_domain(sender.domain()))
            .or(self.default)
    }

    /// A recipient's organization: of its domain, else the sender's (outbound mail to the
    /// outside), else the default.
    pub fn of_recipient(
        &self,
        recipient: &EnvelopeAddress,
        sender: Option<OrgId>,
    ) -> Option<OrgId> {
        self.of_recipient_domain(recipient.domain(), sender)
    }

    /// [`Organizations::of_recipient`] for a recipient of `domain`.
    fn of_recipient_domain(&self, domain: &str, sender: Option<OrgId>) -> Option<OrgId> {
        if self.is_empty() {
            return None;
        }
        self.of_domain(domain).or(sender).or(self.default)
    }

    /// Which version of the message a recipient of organization `org` receives: the
    /// organization's own when it has rulesets or a route of its own, else the common one
    /// (`None`), which every organization without either shares.
    pub fn version_of(&self, org: Option<OrgId>) -> Option<OrgId> {
        org.filter(|&id| {
            let o = &self.list[id];
            o.has_rulesets || !o.own_route.is_empty()
        })
    }

    /// Whether some organization has SPF actions of its own: SPF results are then judged per
    /// recipient, at RCPT.
    pub fn judge_spf(&self) -> bool {
        self.list
            .iter()
            .any(|o| o.spf_fail_action.is_some() || o.spf_softfail_action.is_some())
    }

    /// Whether some organization has a DNSBL hit action of its own: a listed client is then
    /// judged per recipient, at RCPT.
    pub fn judge_rbl(&self) -> bool {
        self.list.iter().any(|o| o.rbl_hit_action.is_some())
    }

    /// Whether recipients of `org` always leave through routes of their own.
    pub fn routed_apart(&self, org: Option<OrgId>) -> bool {
        org.is_some_and(|id| !self.list[id].own_route.is_empty())
    }

    /// The relay targets of the version of `org`.
    pub fn route(&self, version: Option<OrgId>) -> &[String] {
        match version {
            Some(id) if !self.list[id].own_route.is_empty() => &self.list[id].own_route,
            _ => &self.ordinary_route,
        }
    }
}

/// Who owns a transaction's addresses, as its reports tell it: names from the configuration
/// only (a bounded label, a tracking value).
#[derive(Clone, Copy, Debug)]
pub struct Owners<'a> {
    pub organizations: &'a Organizations,
    /// The sender's organization ([`Organizations::of_sender`]).
    pub sender: Option<OrgId>,
}

impl<'a> Owners<'a> {
    /// Nobody's: a gateway without organizations.
    pub fn none(organizations: &'a Organizations) -> Self {
        Self {
            organizations,
            sender: None,
        }
    }

    pub fn sender(&self) -> Option<&'a str> {
        self.sender.map(|id| self.organizations.name(id))
    }

    /// The organizations of the sender and of `recipients`, each once, sorted.
    pub fn involved(&self, recipients: &[EnvelopeAddress]) -> Vec<&'a str> {
        let mut names: Vec<&str> = recipients
            .iter()
            .filter_map(|r| self.recipient(r))
            .chain(self.sender())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The organization of the recipient `address` (as given, refused ones too).
    pub fn recipient(&self, address: &str) -> Option<&'a str> {
        let orgs = self.organizations;
        orgs.of_recipient_domain(Address::parse(address).domain, self.sender)
            .map(|id| orgs.name(id))
    }
}

/// The recipients of one transaction as versions of the message: each version key
/// ([`Organizations::version_of`]) with its recipients, in the order of their first recipient,
/// and the version the carrier (the MTA's queue, the proxy's open transaction) takes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Versions {
    /// The carrier's version: recipients the door hands on itself.
    pub carried: Option<Option<OrgId>>,
    pub groups: Vec<(Option<OrgId>, Vec<EnvelopeAddress>)>,
}

impl Versions {
    /// Adds `recipient` of version `version`; `apart` when it must not go with the carrier.
    /// The carrier's version is the first recipient's that may go with it.
    pub fn add(&mut self, version: Option<OrgId>, apart: bool, recipient: EnvelopeAddress) {
        if !apart && self.carried.is_none() {
            self.carried = Some(version);
        }
        match self.groups.iter_mut().find(|(v, _)| *v == version) {
            Some((_, list)) => list.push(recipient),
            None => self.groups.push((version, vec![recipient])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orgs() -> Organizations {
        let org = |name: &str, domains: &[&str], route: &[&str], rulesets| Organization {
            name: name.into(),
            domains: domains.iter().map(|d| DomainPattern::new(d)).collect(),
            own_route: route.iter().map(|r| (*r).to_owned()).collect(),
            has_rulesets: rulesets,
            max_message_size: None,
            spf_fail_action: None,
            spf_softfail_action: None,
            dmarc: None,
            rbl_hit_action: None,
        };
        Organizations {
            list: vec![
                org("acme", &["acme.test", "*.acme.test"], &[], true),
                org("globex", &["globex.test"], &["globex-mx"], false),
                org("initech", &["initech.test", "sales.acme.test"], &[], false),
            ],
            default: None,
            users: HashMap::from([("alice".to_owned(), 0)]),
            profiles: HashMap::new(),
            ordinary_route: vec!["mx".into()],
        }
    }

    fn a(s: &str) -> EnvelopeAddress {
        s.parse().unwrap()
    }

    #[test]
    fn a_domain_belongs_to_its_most_specific_claim() {
        let o = orgs();
        assert_eq!(o.of_domain("acme.test"), Some(0));
        assert_eq!(o.of_domain("eu.acme.test."), Some(0));
        assert_eq!(o.of_domain("SALES.acme.test"), Some(2), "exact before *.");
        assert_eq!(o.of_domain("example.test"), None);
    }

    #[test]
    fn the_sender_counts_on_outbound_mail_only() {
        let o = orgs();
        let bob = a("bob@globex.test");
        assert_eq!(
            o.of_sender(true, Some("alice"), None, &bob),
            Some(0),
            "user first"
        );
        assert_eq!(o.of_sender(true, None, None, &bob), Some(1));
        assert_eq!(o.of_sender(false, Some("alice"), None, &bob), None);
        let with_profile = Organizations {
            profiles: HashMap::from([("initech-servers".to_owned(), 2)]),
            ..orgs()
        };
        assert_eq!(
            with_profile.of_sender(true, None, Some("initech-servers"), &bob),
            Some(2),
            "the profile before the domain"
        );
        let outside = a("x@example.test");
        assert_eq!(o.of_recipient(&outside, Some(1)), Some(1));
        assert_eq!(o.of_recipient(&a("y@acme.test"), Some(1)), Some(0));
        let with_default = Organizations {
            default: Some(2),
            ..orgs()
        };
        assert_eq!(with_default.of_recipient(&outside, None), Some(2));
    }

    #[test]
    fn versions_split_only_where_organizations_differ() {
        let o = orgs();
        // initech has neither rulesets nor a route: it shares the common version.
        assert_eq!(o.version_of(Some(2)), None);
        assert_eq!(o.version_of(Some(0)), Some(0));
        assert!(o.routed_apart(Some(1)) && !o.routed_apart(Some(0)));
        assert_eq!(o.route(Some(1)), ["globex-mx"]);
        assert_eq!(o.route(Some(0)), ["mx"]);

        let mut v = Versions::default();
        v.add(Some(1), true, a("g@globex.test"));
        v.add(Some(0), false, a("x@acme.test"));
        v.add(None, false, a("i@initech.test"));
        v.add(Some(0), false, a("y@acme.test"));
        assert_eq!(
            v.carried,
            Some(Some(0)),
            "the first that may go with the carrier"
        );
        assert_eq!(
            v.groups,
            [
                (Some(1), vec![a("g@globex.test")]),
                (Some(0), vec![a("x@acme.test"), a("y@acme.test")]),
                (None, vec![a("i@initech.test")]),
            ],
            "one version per organization of its own, the others together"
        );
    }
}
