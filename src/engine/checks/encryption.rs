//! Encryption rules ("STARTTLS Encryption"): ordered rules by sender and recipient
//! domain, `*` as wildcard; the first rule matching a (sender, recipient) pair decides.
//!
//! Sender encryption is judged from the session: `required` refuses a recipient on a session
//! without TLS with `530 5.7.0 Must issue a STARTTLS command first`; `optional` and `none`
//! pass. Recipient encryption concerns onward delivery (relay targets); in milter mode the MTA
//! delivers, so it is parsed and kept for delivery but not enforced here.

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
}

/// The ordered rules.
#[derive(Clone, Debug, Default)]
pub struct EncryptionRules(pub Vec<EncryptionRule>);

impl EncryptionRules {
    /// The first rule matching the sender and recipient addresses.
    pub fn rule_for(&self, sender: &str, recipient: &str) -> Option<&EncryptionRule> {
        self.0.iter().find(|r| {
            r.sender_domain.matches_address(sender) && r.recipient_domain.matches_address(recipient)
        })
    }

    /// The refusal for a recipient on a session without TLS, if a rule requires it.
    pub fn check(&self, sender: &str, recipient: &str, tls: bool) -> Option<SmtpReply> {
        let rule = self.rule_for(sender, recipient)?;
        (rule.sender_encryption == SenderEncryption::Required && !tls).then(|| {
            SmtpReply::new(530, Some("5.7.0"), "Must issue a STARTTLS command first")
                .expect("static reply is valid")
        })
    }
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
        }
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
