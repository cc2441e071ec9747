//! Configurations that compile but will not do what their author probably meant: check-config
//! prints each as a warning, and a starting or reloading Postern logs it.

use super::Config;
use crate::engine::checks::encryption::RecipientEncryption;

impl Config {
    /// What is probably a mistake in this configuration, each in a sentence that says what to
    /// do about it.
    pub fn lints(&self) -> Vec<String> {
        let mut lints = self.notes.clone();
        if let Some(retain) = &self.policy.retain {
            lints.push(format!(
                "[scan] retain_raw_messages/retain_decoded_messages: copies of messages are written to {} (up to {} bytes each, kept {} days); turn it off once the support case is done",
                retain.directory.display(),
                retain.max_size,
                retain.max_age.as_secs() / 86_400
            ));
        }
        if let Some(ip) = self.policy.client_ip_override {
            lints.push(format!(
                "[connection] client_ip_override is set: every connection is judged as if it came from {ip}, whatever its real address; remove it once the diagnosis is done"
            ));
        }
        for (i, rule) in self.policy.encryption_rules.0.iter().enumerate() {
            if rule.recipient_encryption == RecipientEncryption::Required && rule.via.is_empty() {
                lints.push(format!(
                    "encryption rule {} (recipients {}) requires encryption: the proxy door enforces it, but behind an MTA the MTA delivers and Postern cannot; give it a route with via = [\"<relay target with security tls or ssl>\"] so that Postern delivers those recipients itself, or make the MTA require TLS for them (Postfix: smtp_tls_policy_maps)",
                    i + 1,
                    rule.recipient_domain
                ));
            }
        }
        if let Some(console) = &self.console
            && console.certificate_file.is_none()
            && !console.listen.ip().is_loopback()
        {
            lints.push(format!(
                "[console] listens on {} without certificate_file and key_file: passwords and session cookies cross the network in clear; give it a certificate, or listen on 127.0.0.1 behind a TLS proxy",
                console.listen
            ));
        }
        let orgs = &self.policy.organizations;
        for o in &orgs.list {
            for name in &o.own_route {
                if self
                    .delivery
                    .targets
                    .iter()
                    .any(|t| t.name == *name && !t.divert_only)
                {
                    lints.push(format!(
                        "organization {:?}: its relay target {name:?} also carries ordinary mail (every organization's, when the targets before it fail); set divert_only = true on it so that it carries only this organization's",
                        o.name
                    ));
                }
            }
            if o.has_rulesets && o.own_route.is_empty() && orgs.ordinary_route.is_empty() {
                lints.push(format!(
                    "organization {:?} has rulesets of its own but no route: a message to its recipients and others is split, and Postern delivers the other version itself, which needs a [[relay_target]] (not divert_only) or relay_targets on the organization; without one such messages are deferred",
                    o.name
                ));
            }
        }
        lints
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_required_rule_without_a_route_is_named() {
        let config = Config::parse(
            "[[encryption_rule]]\nrecipient_domain = \"secure.test\"\nrecipient_encryption = \"required\"\n",
            "test.toml",
        )
        .expect("compiles");
        let lints = config.lints();
        assert_eq!(lints.len(), 1, "{lints:?}");
        assert!(lints[0].starts_with("encryption rule 1 (recipients secure.test)"));
        assert!(Config::parse("", "test.toml").unwrap().lints().is_empty());
    }

    #[test]
    fn an_organization_whose_versions_cannot_leave_is_named() {
        let config = Config::parse(
            "[[relay_target]]\nname = \"acme-mx\"\nhost = \"127.0.0.1\"\n\
             [[organization]]\nname = \"acme\"\ndomains = [\"acme.test\"]\n\
             relay_targets = [\"acme-mx\"]\n\
             [[organization]]\nname = \"globex\"\ndomains = [\"globex.test\"]\n\
             [[ruleset]]\nname = \"g\"\norganizations = [\"globex\"]\n",
            "test.toml",
        )
        .expect("compiles");
        let lints = config.lints();
        assert_eq!(lints.len(), 1, "{lints:?}");
        assert!(
            lints[0].contains("\"acme-mx\" also carries ordinary mail"),
            "{lints:?}"
        );
        // With acme-mx only for acme, globex's version has no ordinary target.
        let config = Config::parse(
            "[[relay_target]]\nname = \"acme-mx\"\nhost = \"127.0.0.1\"\ndivert_only = true\n\
             [[organization]]\nname = \"acme\"\ndomains = [\"acme.test\"]\n\
             relay_targets = [\"acme-mx\"]\n\
             [[organization]]\nname = \"globex\"\ndomains = [\"globex.test\"]\n\
             [[ruleset]]\nname = \"g\"\norganizations = [\"globex\"]\n",
            "test.toml",
        )
        .expect("compiles");
        let lints = config.lints();
        assert_eq!(lints.len(), 1, "{lints:?}");
        assert!(
            lints[0].starts_with("organization \"globex\" has rulesets"),
            "{lints:?}"
        );
    }
}
