//! Encryption rules ("STARTTLS Encryption"): ordered rules by sender and recipient
//! domain, `*` as wildcard; the first rule matching a (sender, recipient) pair decides.
//!
//! Sender encryption is judged from the session: `required` refuses a recipient on a session
//! without TLS with `530 5.7.0 Must issue a STARTTLS command first` (and MAIL and DATA too with
//! `require_tls_for_whole_transaction`); `optional` and `none` pass. Recipient encryption
//! concerns onward delivery: the proxy door relays a `required` recipient only over TLS; behind
//! an MTA, a rule with a route (`via`) has Postern deliver those recipients itself.

use crate::engine::address::EnvelopeAddress;
use serde::Deserialize;

use crate::engine::address::DomainPattern;
use crate::engine::reply::SmtpReply;

/// "Sender Encryption".
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SenderEncryption {
    /// The sending server must have negotiated TLS.
    Required,
    /// TLS is not asked for.
    None,
    /// TLS is welcome, not needed.
    #[default]
    Optional,
}

/// "Recipient Encryption".
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecipientEncryption {
    Required,
    None,
    #[default]
    Preferred,
    Allowed,
}

/// One rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncryptionRule {
    /// Sender domain pattern (`*`, `*.example.org`, `example.org`, `mail*.example.*`).
    pub sender_domain: DomainPattern,
    pub recipient_domain: DomainPattern,
    pub sender_encryption: SenderEncryption,
    pub recipient_encryption: RecipientEncryption,
    /// With `sender_encryption = required`: MAIL, RCPT and DATA are all refused before TLS,
    /// not only the recipients ("TLS must be used for the sender, recipient and body").
    pub whole_transaction: bool,
    /// Behind an MTA: relay targets (names) through which Postern delivers the rule's
    /// recipients itself when their encryption is `required` or `preferred`, taking them out
    /// of the MTA's envelope. Empty: the MTA delivers them.
    pub via: Vec<String>,
    /// `organizations`: the domains of those organizations; the rule covers only mail from or
    /// to an address in them. Empty: any mail.
    pub domains: Vec<DomainPattern>,
}

impl EncryptionRule {
    /// Whether the rule covers mail from `sender` to `recipient`.
    fn covers(&self, sender: &str, recipient: &str) -> bool {
        self.sender_domain.matches_address(sender)
            && self.recipient_domain.matches_address(recipient)
            && self.of_organizations(sender, Some(recipient))
    }

    /// Whether the rule's organizations (if it names any) own `sender` or `recipient`.
    fn of_organizations(&self, sender: &str, recipient: Option<&str>) -> bool {
        self.domains.is_empty()
            || self.domains.iter().any(|d| {
                d.matches_address(sender) || recipient.is_some_and(|r| d.matches_address(r))
            })
    }
}

/// The ordered rules.
#[derive(Clone, Debug, Default)]
pub struct EncryptionRules(pub Vec<EncryptionRule>);

impl EncryptionRules {
    /// The first rule matching the sender and recipient addresses.
    pub fn rule_for(&self, sender: &str, recipient: &str) -> Option<&EncryptionRule> {
        self.0.iter().find(|r| r.covers(sender, recipient))
    }

    /// Whether a recipient may only be relayed over TLS with a validated certificate: its rule
    /// says `required`, or `allowed` ("as the sender did") on a session that used TLS.
    /// `preferred` and `none` leave it to the relay target's `security`.
    pub fn recipient_needs_tls(&self, sender: &str, recipient: &str, tls: bool) -> bool {
        match self
            .rule_for(sender, recipient)
            .map(|r| r.recipient_encryption)
        {
            Some(RecipientEncryption::Required) => true,
            Some(RecipientEncryption::Allowed) => tls,
            Some(RecipientEncryption::Preferred | RecipientEncryption::None) | None => false,
        }
    }

    /// The relay targets Postern delivers `recipient` through itself behind an MTA, if its
    /// rule has a route (`via`) and asks for encryption (`required` or `preferred`).
    pub fn secure_route(&self, sender: &str, recipient: &str) -> Option<&[String]> {
        let rule = self.rule_for(sender, recipient)?;
        let wants = matches!(
            rule.recipient_encryption,
            RecipientEncryption::Required | RecipientEncryption::Preferred
        );
        (wants && !rule.via.is_empty()).then_some(rule.via.as_slice())
    }

    /// The refusal for MAIL on a session without TLS: a rule that requires TLS for the whole
    /// transaction of this sender whatever the recipient (its recipient domain is `*`).
    pub fn check_mail(&self, sender: &str, tls: bool) -> Option<SmtpReply> {
        let whole = |r: &EncryptionRule| {
            r.whole_transaction
                && r.sender_encryption == SenderEncryption::Required
                && r.recipient_domain.is_any()
        };
        let rule = self.0.iter().find(|r| {
            r.sender_domain.matches_address(sender) && r.of_organizations(sender, None)
        })?;
        (whole(rule) && !tls).then(starttls_first)
    }

    /// Whether some rule can refuse DATA ([`EncryptionRules::check_data`]).
    pub fn may_refuse_data(&self) -> bool {
        self.0
            .iter()
            .any(|r| r.whole_transaction && r.sender_encryption == SenderEncryption::Required)
    }

    /// The refusal for DATA on a session without TLS, when the rule of any recipient requires
    /// TLS for the whole transaction.
    pub fn check_data(
        &self,
        sender: &str,
        recipients: &[EnvelopeAddress],
        tls: bool,
    ) -> Option<SmtpReply> {
        let whole = recipients.iter().any(|r| {
            self.rule_for(sender, r).is_some_and(|rule| {
                rule.whole_transaction && rule.sender_encryption == SenderEncryption::Required
            })
        });
        (whole && !tls).then(starttls_first)
    }

    /// The refusal for a recipient on a session without TLS, if a rule requires it.
    pub fn check(&self, sender: &str, recipient: &str, tls: bool) -> Option<SmtpReply> {
        let rule = self.rule_for(sender, recipient)?;
        (rule.sender_encryption == SenderEncryption::Required && !tls).then(starttls_first)
    }
}

fn starttls_first() -> SmtpReply {
    SmtpReply::new(530, Some("5.7.0"), "Must issue a STARTTLS command first")
        .expect("static reply is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(sender: &str, recipient: &str, enc: SenderEncryption) -> EncryptionRule {
        EncryptionRule {
            sender_domain: DomainPattern::new(sender),
            recipient_domain: DomainPattern::new(recipient),
            sender_encryption: enc,
            recipient_encryption: RecipientEncryption::Preferred,
            whole_transaction: false,
            via: Vec::new(),
            domains: Vec::new(),
        }
    }

    #[test]
    fn a_rule_of_organizations_covers_only_their_mail() {
        let mut acme = rule("*", "*", SenderEncryption::Required);
        acme.domains = vec![
            DomainPattern::new("acme.test"),
            DomainPattern::new("*.acme.test"),
        ];
        let rules = EncryptionRules(vec![acme]);
        assert!(
            rules.check("a@x.test", "b@eu.acme.test", false).is_some(),
            "to acme"
        );
        assert!(
            rules.check("a@acme.test", "b@x.test", false).is_some(),
            "from acme"
        );
        assert!(rules.check("a@x.test", "b@globex.test", false).is_none());
    }

    #[test]
    fn a_whole_transaction_rule_refuses_mail_and_data_too() {
        let mut whole = rule("partner.example", "*", SenderEncryption::Required);
        whole.whole_transaction = true;
        let mut narrow = rule(
            "other.example",
            "secure.example",
            SenderEncryption::Required,
        );
        narrow.whole_transaction = true;
        let rules = EncryptionRules(vec![whole, narrow]);
        assert!(rules.check_mail("a@partner.example", false).is_some());
        assert!(rules.check_mail("a@partner.example", true).is_none());
        // Its recipients alone need TLS: MAIL passes, RCPT and DATA do not.
        assert!(rules.check_mail("a@other.example", false).is_none());
        let rcpts = vec!["b@secure.example".parse().unwrap()];
        assert!(rules.check_data("a@other.example", &rcpts, false).is_some());
        assert!(rules.check_data("a@other.example", &rcpts, true).is_none());
        let plain = vec!["b@plain.example".parse().unwrap()];
        assert!(rules.check_data("a@other.example", &plain, false).is_none());
        // Without the flag, MAIL is not refused.
        let rules = EncryptionRules(vec![rule(
            "partner.example",
            "*",
            SenderEncryption::Required,
        )]);
        assert!(rules.check_mail("a@partner.example", false).is_none());
    }

    #[test]
    fn first_matching_rule_decides() {
        let rules = EncryptionRules(vec![
            rule("partner.example", "*", SenderEncryption::Optional),
            rule("*", "secure.example", SenderEncryption::Required),
        ]);
        // Rule 1 matches first: optional.
        assert!(
            rules
                .check("a@partner.example", "b@secure.example", false)
                .is_none()
        );
        let refused = rules
            .check("a@other.example", "b@secure.example", false)
            .unwrap();
        assert_eq!(
            refused.to_string(),
            "530 5.7.0 Must issue a STARTTLS command first"
        );
        assert!(
            rules
                .check("a@other.example", "b@Secure.Example", true)
                .is_none(),
            "TLS session"
        );
        assert!(
            rules
                .check("a@other.example", "b@plain.example", false)
                .is_none(),
            "no rule"
        );
        assert!(
            rules.check("", "b@secure.example", false).is_some(),
            "null sender matches *"
        );
    }
}
