//! Encryption rules (seed 003, "STARTTLS Encryption"): ordered rules by sender and recipient
//! domain, `*` as wildcard; the first rule matching a (sender, recipient) pair decides.
//!
//! Sender encryption is judged from the session: `required` refuses a recipient on a session
//! without TLS with `530 5.7.0 Must issue a STARTTLS command first`; `optional` and `none`
//! pass. Recipient encryption concerns onward delivery (relay targets); in milter mode the MTA
//! delivers, so it is parsed and kept for delivery but not enforced here.

use serde::Deserialize;

use crate::engine::reply::SmtpReply;

/// Seed "Sender Encryption".
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

/// Seed "Recipient Encryption".
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
    /// Sender domain pattern (`*`, `*.example.org`, `example.org`), lowercase.
    pub sender_domain: String,
    /// Recipient domain pattern, lowercase.
    pub recipient_domain: String,
    pub sender_encryption: SenderEncryption,
    pub recipient_encryption: RecipientEncryption,
}

/// The ordered rules.
#[derive(Clone, Debug, Default)]
pub struct EncryptionRules(pub Vec<EncryptionRule>);

impl EncryptionRules {
    /// The first rule matching the sender and recipient addresses.
    pub fn rule_for(&self, sender: &str, recipient: &str) -> Option<&EncryptionRule> {
        let (sender, recipient) = (domain_of(sender), domain_of(recipient));
        self.0
            .iter()
            .find(|r| glob(&r.sender_domain, &sender) && glob(&r.recipient_domain, &recipient))
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

fn domain_of(address: &str) -> String {
    let address = address.trim_start_matches('<').trim_end_matches('>');
    address
        .rsplit_once('@')
        .map(|(_, d)| d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default()
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(sender: &str, recipient: &str, enc: SenderEncryption) -> EncryptionRule {
        EncryptionRule {
            sender_domain: sender.into(),
            recipient_domain: recipient.into(),
            sender_encryption: enc,
            recipient_encryption: RecipientEncryption::Preferred,
        }
    }

    #[test]
    fn wildcards() {
        assert!(glob("*", "anything.example"));
        assert!(glob("*", ""));
        assert!(glob("*.example.org", "mx.example.org"));
        assert!(!glob("*.example.org", "example.org"));
        assert!(glob("example.org", "example.org"));
        assert!(!glob("example.org", "example.org.evil"));
        assert!(glob("mail*.example.*", "mail2.example.net"));
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
