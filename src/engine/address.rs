//! Mail addresses and domain patterns, read one way everywhere: relay restriction, encryption
//! rules, connection profiles and ruleset conditions all ask [`Address`] for a domain and a
//! [`DomainPattern`] whether it matches.

use std::fmt;

/// An envelope address as given in MAIL FROM or RCPT TO (with or without angle brackets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Address<'a> {
    /// Everything before the last `@` (the whole address when there is none).
    pub local: &'a str,
    /// What follows the last `@`, as given; empty when there is none.
    pub domain: &'a str,
}

impl<'a> Address<'a> {
    pub fn parse(address: &'a str) -> Self {
        let address = address.trim().trim_start_matches('<').trim_end_matches('>');
        match address.rsplit_once('@') {
            Some((local, domain)) => Self { local, domain },
            None => Self {
                local: address,
                domain: "",
            },
        }
    }
}

/// An envelope address past the doors: read once from MAIL FROM or RCPT TO (angle brackets and
/// surrounding white space gone), never holding a control character, split at its last `@`.
/// The engine, the relay and the sinks read its parts without parsing it again, and a relay
/// target is never written an address that could end its command early.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EnvelopeAddress {
    text: String,
    /// Where the domain starts (after the last `@`); `text.len()` when there is none.
    domain_at: usize,
}

/// Why a given envelope address cannot be one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("it holds the control character {0:?}")]
    ControlCharacter(char),
}

impl EnvelopeAddress {
    /// `given` as MAIL FROM or RCPT TO carried it, with or without angle brackets; `<>` (or
    /// nothing) is the null sender.
    pub fn parse(given: &str) -> Result<Self, AddressError> {
        if let Some(c) = control_character(given) {
            return Err(AddressError::ControlCharacter(c));
        }
        let bare = given.trim().trim_start_matches('<').trim_end_matches('>');
        Ok(Self {
            text: bare.to_owned(),
            domain_at: bare.rfind('@').map_or(bare.len(), |at| at + 1),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Everything before the last `@` (the whole address when there is none).
    pub fn local(&self) -> &str {
        self.text[..self.domain_at]
            .strip_suffix('@')
            .unwrap_or(&self.text)
    }

    /// What follows the last `@`, as given; empty when there is none.
    pub fn domain(&self) -> &str {
        &self.text[self.domain_at..]
    }

    /// Its parts, as [`Address`] gives them.
    pub fn parts(&self) -> Address<'_> {
        Address {
            local: self.local(),
            domain: self.domain(),
        }
    }
}

impl std::str::FromStr for EnvelopeAddress {
    type Err = AddressError;

    fn from_str(given: &str) -> Result<Self, AddressError> {
        Self::parse(given)
    }
}

impl std::ops::Deref for EnvelopeAddress {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

impl std::borrow::Borrow<str> for EnvelopeAddress {
    fn borrow(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for EnvelopeAddress {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq<str> for EnvelopeAddress {
    fn eq(&self, other: &str) -> bool {
        self.text == other
    }
}

impl PartialEq<&str> for EnvelopeAddress {
    fn eq(&self, other: &&str) -> bool {
        self.text == *other
    }
}

impl PartialEq<String> for EnvelopeAddress {
    fn eq(&self, other: &String) -> bool {
        &self.text == other
    }
}

impl fmt::Display for EnvelopeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The first control character (C0, DEL or C1) in `address`, if any. No address holding one
/// is accepted in either door or written into an SMTP command: CR and LF would end the command
/// early and start another.
pub fn control_character(address: &str) -> Option<char> {
    address.chars().find(|c| c.is_control())
}

/// A domain pattern from the configuration: `example.org` (that domain), `*.example.org` or
/// `.example.org` (its sub-domains only), `*` (any domain), or a pattern with `*` wildcards
/// elsewhere (`mail*.example.*`), each `*` standing for any run of characters. Case does not
/// matter, nor a trailing dot.
#[derive(Clone, PartialEq, Eq)]
pub struct DomainPattern(String);

impl DomainPattern {
    pub fn new(pattern: &str) -> Self {
        let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        match pattern.strip_prefix('.') {
            Some(parent) => Self(format!("*.{parent}")),
            None => Self(pattern),
        }
    }

    /// The pattern as written (lower case, `*.` for sub-domains).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `*`, any domain.
    pub fn is_any(&self) -> bool {
        self.0 == "*"
    }

    /// Whether `domain` (any case, trailing dot or not) matches.
    pub fn matches(&self, domain: &str) -> bool {
        glob(self.0.as_bytes(), domain.trim_end_matches('.').as_bytes())
    }

    /// Whether the domain of `address` matches.
    pub fn matches_address(&self, address: &str) -> bool {
        self.matches(Address::parse(address).domain)
    }
}

impl fmt::Debug for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*` matches any run of bytes (including none); every other byte matches itself, ASCII case
/// aside (`pattern` is lowercase). Only the
/// last `*` is backtracked to, so the cost is at most the product of the two lengths (a
/// pattern from the configuration, a domain of at most 255 characters).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t].to_ascii_lowercase() {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_at_the_last_at() {
        let a = Address::parse("<\"a@b\"@Example.ORG.>");
        assert_eq!((a.local, a.domain), ("\"a@b\"", "Example.ORG."));
        let null = Address::parse("<>");
        assert_eq!((null.local, null.domain), ("", ""));
        let local = Address::parse("postmaster");
        assert_eq!((local.local, local.domain), ("postmaster", ""));
    }

    #[test]
    fn envelope_addresses_are_read_once_and_refuse_control_characters() {
        let a = EnvelopeAddress::parse(" <\"a@b\"@Example.ORG.>").unwrap();
        assert_eq!(a.as_str(), "\"a@b\"@Example.ORG.");
        assert_eq!((a.local(), a.domain()), ("\"a@b\"", "Example.ORG."));
        assert_eq!(a.parts(), Address::parse("<\"a@b\"@Example.ORG.>"));
        let null = EnvelopeAddress::parse("<>").unwrap();
        assert_eq!((null.as_str(), null.local(), null.domain()), ("", "", ""));
        let local = EnvelopeAddress::parse("postmaster").unwrap();
        assert_eq!((local.local(), local.domain()), ("postmaster", ""));
        assert_eq!(
            EnvelopeAddress::parse("a@b\r\nRCPT TO:<c@d>"),
            Err(AddressError::ControlCharacter('\r'))
        );
    }

    #[test]
    fn control_characters_are_found() {
        assert_eq!(
            control_character("<a@b.example>\r\nRCPT TO:<c@d>"),
            Some('\r')
        );
        assert_eq!(control_character("a\u{1b}]0;x\u{7}@b"), Some('\u{1b}'));
        assert_eq!(control_character("a\u{85}@b"), Some('\u{85}'));
        assert_eq!(control_character("\"a b\"@b.example"), None);
        assert_eq!(control_character("üser@bücher.example"), None);
    }

    #[test]
    fn patterns_match_exact_sub_domains_any_and_wildcards() {
        let exact = DomainPattern::new("Example.org");
        assert!(exact.matches("example.ORG."));
        assert!(!exact.matches("mx.example.org"));
        assert!(!exact.matches("example.org.evil"));
        for sub in ["*.example.org", ".example.org"] {
            let sub = DomainPattern::new(sub);
            assert!(sub.matches("mx.example.org"));
            assert!(sub.matches("a.b.example.org"));
            assert!(!sub.matches("example.org"));
            assert!(!sub.matches("badexample.org"));
        }
        let any = DomainPattern::new("*");
        assert!(any.matches("anything.example"));
        assert!(any.matches(""));
        let wild = DomainPattern::new("mail*.example.*");
        assert!(wild.matches("mail2.example.net"));
        assert!(!wild.matches("smtp.example.net"));
        assert!(DomainPattern::new("*.example.org").matches_address("<u@mx.example.org>"));
        assert!(!DomainPattern::new("example.org").matches_address("<>"));
    }
}
