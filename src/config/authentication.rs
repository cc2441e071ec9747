//! `[authentication]` and `[[arc_sealer]]`: DKIM, ARC and DMARC verification of arriving mail,
//! what a DMARC failure does, and the ARC sealer (src/engine/authentication.rs,
//! src/engine/arc.rs).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::Invalid;
use super::dkim::{domain_and_selector, load_key};
use crate::engine::arc::ArcSealer;
use crate::engine::authentication::{Authentication, DmarcMode, QuarantineAction};
use crate::engine::dkim::SignWhen;
use crate::relay::Delivery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct AuthenticationSection {
    verify_dkim: bool,
    dmarc: DmarcMode,
    dmarc_quarantine_action: Spanned<String>,
    dmarc_quarantine_relay_targets: Option<Spanned<Vec<String>>>,
    arc_verify: bool,
    results_header: bool,
    exempt_connection_profiles: Spanned<Vec<String>>,
    exempt_authenticated: bool,
}

impl Default for AuthenticationSection {
    fn default() -> Self {
        Self {
            verify_dkim: false,
            dmarc: DmarcMode::Off,
            dmarc_quarantine_action: Spanned::new(0..0, "accept".to_owned()),
            dmarc_quarantine_relay_targets: None,
            arc_verify: false,
            results_header: true,
            exempt_connection_profiles: Spanned::new(0..0, Vec::new()),
            exempt_authenticated: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArcSealerSection {
    domain: Spanned<String>,
    selector: Spanned<String>,
    key_file: Spanned<PathBuf>,
    #[serde(default = "transformed")]
    seal: SignWhen,
    /// Seals only the versions of this organization's mail.
    organization: Option<Spanned<String>>,
}

fn transformed() -> SignWhen {
    SignWhen::Transformed
}

pub(super) fn compile(
    s: AuthenticationSection,
    sealers: Vec<Spanned<ArcSealerSection>>,
    profile_names: &[String],
    organization_names: &[String],
    delivery: &Delivery,
    config_dir: Option<&Path>,
) -> Result<Authentication, Invalid> {
    let key = |k: &str| format!("authentication.{k}");
    let action = &s.dmarc_quarantine_action;
    let quarantine = match action.get_ref().as_str() {
        "accept" => QuarantineAction::Accept,
        "tempfail" => QuarantineAction::Tempfail,
        "divert" => {
            let Some(names) = &s.dmarc_quarantine_relay_targets else {
                return Err((
                    action.span(),
                    key("dmarc_quarantine_relay_targets"),
                    "dmarc_quarantine_action = \"divert\" needs dmarc_quarantine_relay_targets: \
                     the [[relay_target]] names to deliver through"
                        .into(),
                ));
            };
            delivery.through(names.get_ref()).map_err(|m| {
                (
                    names.span(),
                    key("dmarc_quarantine_relay_targets"),
                    m.to_string(),
                )
            })?;
            QuarantineAction::Divert(names.get_ref().clone())
        }
        other => {
            return Err((
                action.span(),
                key("dmarc_quarantine_action"),
                format!("{other:?} is not a quarantine action; use accept, divert or tempfail"),
            ));
        }
    };
    let exempt = &s.exempt_connection_profiles;
    if let Some(unknown) = exempt.get_ref().iter().find(|n| !profile_names.contains(n)) {
        return Err((
            exempt.span(),
            key("exempt_connection_profiles"),
            format!(
                "no [[connection_profile]] is named {unknown:?} (known: {})",
                profile_names.join(", ")
            ),
        ));
    }
    // One sealer for the mail of no organization, one for each organization at most.
    let mut seen: Vec<Option<&String>> = Vec::new();
    for (i, section) in sealers.iter().enumerate() {
        let organization = section
            .get_ref()
            .organization
            .as_ref()
            .map(Spanned::get_ref);
        if seen.contains(&organization) {
            let whose = organization.map_or(
                "one [[arc_sealer]] seals every message that no organization's own sealer seals"
                    .to_owned(),
                |o| format!("organization {o:?} has a sealer already"),
            );
            return Err((
                section.span(),
                format!("arc_sealer[{i}]"),
                format!("{whose}: remove the others"),
            ));
        }
        seen.push(organization);
    }
    let mut sealer: Option<ArcSealer> = None;
    let mut organization_sealers: Vec<ArcSealer> = Vec::new();
    for (i, section) in sealers.into_iter().enumerate() {
        let made = self::sealer(section.into_inner(), i, organization_names, config_dir)?;
        match made.organization {
            None => sealer = Some(made),
            Some(_) => organization_sealers.push(made),
        }
    }
    Ok(Authentication {
        verify_dkim: s.verify_dkim,
        dmarc: s.dmarc,
        quarantine,
        arc_verify: s.arc_verify,
        results_header: s.results_header,
        exempt_connection_profiles: exempt.get_ref().clone(),
        exempt_authenticated: s.exempt_authenticated,
        sealer,
        organization_sealers,
    })
}

fn sealer(
    s: ArcSealerSection,
    i: usize,
    organization_names: &[String],
    config_dir: Option<&Path>,
) -> Result<ArcSealer, Invalid> {
    let key = |k: &str| format!("arc_sealer[{i}].{k}");
    let organization =
        super::organizations::named(s.organization, organization_names, key("organization"))?;
    let (domain, selector) = domain_and_selector(&s.domain, &s.selector, key)?;
    let span = s.key_file.span();
    let path = super::relative(s.key_file.into_inner(), config_dir);
    let private = load_key(&path, "ARC sealing key").map_err(|e| (span, key("key_file"), e))?;
    let mut sealer = ArcSealer::new(
        private,
        domain,
        selector,
        path.display().to_string(),
        s.seal,
    );
    sealer.organization = organization;
    Ok(sealer)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::engine::authentication::{DmarcMode, QuarantineAction};

    fn error(text: &str) -> String {
        Config::parse(text, "test.toml").unwrap_err().to_string()
    }

    #[test]
    fn nothing_is_verified_or_looked_up_unless_asked() {
        let c = Config::parse("", "t").unwrap();
        assert!(!c.policy.authentication.verifies());
        assert!(c.dns.is_none());
        let c = Config::parse("[authentication]\nverify_dkim = true\n", "t").unwrap();
        assert!(c.policy.authentication.verifies());
        assert!(c.dns.is_some(), "verification needs the resolver");
        let c = Config::parse("[authentication]\ndmarc = \"report\"\n", "t").unwrap();
        assert_eq!(c.policy.authentication.dmarc, DmarcMode::Report);
        assert!(c.policy.authentication.verifies(), "DMARC needs DKIM");
        assert!(c.policy.authentication.results_header);
        assert!(c.policy.authentication.exempt_authenticated);
    }

    #[test]
    fn quarantine_actions_and_exemptions_name_what_exists() {
        let targets = "[[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\n\
                       [[relay_target]]\nname = \"spam\"\nhost = \"127.0.0.1\"\ndivert_only = true\n";
        let auth = |keys: &str| format!("{targets}[authentication]\ndmarc = \"enforce\"\n{keys}");
        let e = error(&auth("dmarc_quarantine_action = \"divert\"\n"));
        assert!(
            e.contains("authentication.dmarc_quarantine_relay_targets")
                && e.contains("needs dmarc_quarantine_relay_targets"),
            "{e}"
        );
        let e = error(&auth(
            "dmarc_quarantine_action = \"divert\"\ndmarc_quarantine_relay_targets = [\"junk\"]\n",
        ));
        assert!(e.contains("no [[relay_target]] is named \"junk\""), "{e}");
        let c = Config::parse(
            &auth(
                "dmarc_quarantine_action = \"divert\"\ndmarc_quarantine_relay_targets = [\"spam\"]\n",
            ),
            "t",
        )
        .unwrap();
        assert_eq!(
            c.policy.authentication.quarantine,
            QuarantineAction::Divert(vec!["spam".into()])
        );
        let e = error(&auth("dmarc_quarantine_action = \"bounce\"\n"));
        assert!(
            e.contains("authentication.dmarc_quarantine_action")
                && e.contains("use accept, divert or tempfail"),
            "{e}"
        );
        let e = error(&auth("exempt_connection_profiles = [\"internal\"]\n"));
        assert!(
            e.contains("authentication.exempt_connection_profiles")
                && e.contains("no [[connection_profile]] is named \"internal\""),
            "{e}"
        );
        let e = error("[authentication]\ndmarc = \"sometimes\"\n");
        assert!(e.contains("authentication.dmarc"), "{e}");
    }

    #[test]
    fn one_sealer_with_a_readable_key() {
        let e = error(
            "[[arc_sealer]]\ndomain = \"gw.example\"\nselector = \"arc\"\nkey_file = \"/nonexistent/arc.pem\"\n",
        );
        assert!(
            e.contains("arc_sealer[0].key_file") && e.contains("/nonexistent/arc.pem"),
            "{e}"
        );
        let e =
            error("[[arc_sealer]]\ndomain = \"gw\"\nselector = \"arc\"\nkey_file = \"arc.pem\"\n");
        assert!(
            e.contains("arc_sealer[0].domain") && e.contains("not a domain name"),
            "{e}"
        );
        let sealer = "[[arc_sealer]]\ndomain = \"gw.example\"\nselector = \"arc\"\nkey_file = \"/nonexistent/arc.pem\"\n";
        let e = error(&format!("{sealer}{sealer}"));
        assert!(
            e.contains("arc_sealer[1]") && e.contains("one [[arc_sealer]] seals every message"),
            "{e}"
        );
        let orgs = "[[organization]]\nname = \"acme\"\ndomains = [\"acme.test\"]\n";
        let of_acme = format!("{sealer}organization = \"acme\"\n");
        let e = error(&format!("{orgs}{of_acme}{of_acme}"));
        assert!(
            e.contains("arc_sealer[1]") && e.contains("organization \"acme\" has a sealer already"),
            "{e}"
        );
        let e = error(&format!("{sealer}organization = \"globex\"\n"));
        assert!(
            e.contains("arc_sealer[0].organization") && e.contains("\"globex\""),
            "{e}"
        );
    }
}
