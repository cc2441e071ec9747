//! SMTP replies, 2xx to 5xx: a code, an optional enhanced status code and text. The one reply
//! type of the project: the policy's refusals, the doors' own answers and what relay targets
//! answered all take this shape.
//!
//! Replies are validated when they are built (the configuration's when it is compiled), so
//! that a door never has to send something an MTA or client would choke on (a bare CR or LF,
//! an out-of-range code); a reply read from a peer is cleaned with [`SmtpReply::from_wire`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// Longest text line we send in a reply: RFC 5321 allows 512 octets for the whole reply line.
const MAX_TEXT_LEN: usize = 500;

/// A validated SMTP reply: `554 5.7.1 Client host rejected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpReply {
    code: u16,
    enhanced: Option<String>,
    text: String,
}

/// Why a reply given in the configuration (or built by the engine) is not a valid SMTP reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("reply code {0} is not a 4xx or 5xx code (write it as e.g. \"554 5.7.1 text\")")]
    Code(String),
    #[error(
        "enhanced status code {0:?} is malformed or its class does not match the reply code (e.g. 554 goes with 5.x.y)"
    )]
    Enhanced(String),
    #[error(
        "reply text must be printable ASCII without CR or LF, at most {MAX_TEXT_LEN} characters"
    )]
    Text,
}

impl SmtpReply {
    /// Builds a reply with a code from 200 to 599.
    pub fn new(code: u16, enhanced: Option<&str>, text: &str) -> Result<Self, ReplyError> {
        if !(200..=599).contains(&code) {
            return Err(ReplyError::Code(code.to_string()));
        }
        if let Some(e) = enhanced
            && !valid_enhanced(e, code)
        {
            return Err(ReplyError::Enhanced(e.to_owned()));
        }
        if text.len() > MAX_TEXT_LEN || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(ReplyError::Text);
        }
        Ok(Self {
            code,
            enhanced: enhanced.map(str::to_owned),
            text: text.to_owned(),
        })
    }

    /// The three-digit reply code.
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code (RFC 3463), if any.
    pub fn enhanced(&self) -> Option<&str> {
        self.enhanced.as_deref()
    }

    /// The human-readable text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// True for 4xx replies: the client should try again later.
    pub fn is_transient(&self) -> bool {
        self.code < 500
    }

    /// The same reply under another code of the same class (e.g. 421 for a refusal at the
    /// greeting, where only 421 and 554 may be sent).
    pub fn with_code(mut self, code: u16) -> Self {
        if code / 100 == self.code / 100 {
            self.code = code;
        }
        self
    }

    /// A reply as a peer (a relay target) sent it, made safe to pass on: anything but
    /// printable ASCII becomes a space, the text is cut at the longest text we send, a code
    /// outside 200-599 becomes 451, and a leading enhanced status code of the reply's class
    /// is recognised as one.
    pub fn from_wire(code: u16, text: &str) -> Self {
        let code = if (200..=599).contains(&code) {
            code
        } else {
            451
        };
        let text: String = text
            .chars()
            .map(|c| if (' '..='~').contains(&c) { c } else { ' ' })
            .take(MAX_TEXT_LEN)
            .collect();
        let first = text.split(' ').next().unwrap_or("");
        let enhanced = valid_enhanced(first, code).then(|| first.to_owned());
        let text = match &enhanced {
            Some(e) => text[e.len()..].trim_start().to_owned(),
            None => text,
        };
        Self {
            code,
            enhanced,
            text,
        }
    }
}

fn valid_enhanced(e: &str, code: u16) -> bool {
    let mut parts = e.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let num = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    num(subject, 3) && num(detail, 3) && class == (code / 100).to_string()
}

/// `s` with everything but printable ASCII dropped, at most `max` characters: for addresses
/// and names quoted in a reply.
pub fn printable_only(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| (' '..='~').contains(c))
        .take(max)
        .collect()
}

/// `s` with every character but printable ASCII replaced by `?`, at most `max` characters: for
/// free text (a blocklist's reason, an explanation) quoted in a reply.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .take(max)
        .collect()
}

impl fmt::Display for SmtpReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

impl FromStr for SmtpReply {
    type Err = ReplyError;

    /// Parses `"554 5.7.1 text"`, `"554 text"` or `"554"`.
    /// Replies in the configuration are refusals: 4xx or 5xx.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (code, rest) = s.split_once(' ').unwrap_or((s, ""));
        let code_num = match code.parse::<u16>() {
            Ok(n) if code.len() == 3 && (400..=599).contains(&n) => n,
            _ => return Err(ReplyError::Code(code.to_owned())),
        };
        let rest = rest.trim_start();
        let first = rest.split(' ').next().unwrap_or("");
        if first.starts_with(|c: char| c.is_ascii_digit()) && first.contains('.') {
            let text = rest[first.len()..].trim_start();
            Self::new(code_num, Some(first), text)
        } else {
            Self::new(code_num, None, rest)
        }
    }
}

impl<'de> Deserialize<'de> for SmtpReply {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_code_enhanced_and_text() {
        let r: SmtpReply = "554 5.7.1 Client host rejected".parse().unwrap();
        assert_eq!(r.code(), 554);
        assert_eq!(r.enhanced(), Some("5.7.1"));
        assert_eq!(r.text(), "Client host rejected");
        assert_eq!(r.to_string(), "554 5.7.1 Client host rejected");
        assert!(!r.is_transient());
    }

    #[test]
    fn parses_without_enhanced_code() {
        let r: SmtpReply = "451 try again".parse().unwrap();
        assert_eq!(r.enhanced(), None);
        assert_eq!(r.text(), "try again");
        assert!(r.is_transient());
    }

    #[test]
    fn refuses_bad_replies() {
        assert!(matches!(
            "250 ok".parse::<SmtpReply>(),
            Err(ReplyError::Code(_))
        ));
        assert!(matches!(
            "55 x".parse::<SmtpReply>(),
            Err(ReplyError::Code(_))
        ));
        assert!(matches!(
            "554 4.7.1 mismatched class".parse::<SmtpReply>(),
            Err(ReplyError::Enhanced(_))
        ));
        assert_eq!(SmtpReply::new(554, None, "a\r\nb"), Err(ReplyError::Text));
        assert!(SmtpReply::new(199, None, "x").is_err());
        assert_eq!(
            SmtpReply::new(554, None, &"x".repeat(501)),
            Err(ReplyError::Text)
        );
    }

    #[test]
    fn a_peer_reply_is_cleaned_and_its_enhanced_code_recognised() {
        let r = SmtpReply::from_wire(550, "5.1.1 <a@b>: Recipient address rejected");
        assert_eq!(r.enhanced(), Some("5.1.1"));
        assert_eq!(r.text(), "<a@b>: Recipient address rejected");
        assert_eq!(r.to_string(), "550 5.1.1 <a@b>: Recipient address rejected");
        assert_eq!(SmtpReply::from_wire(550, "Rejected").enhanced(), None);
        assert_eq!(SmtpReply::from_wire(550, "5.1 x").enhanced(), None);
        assert_eq!(
            SmtpReply::from_wire(250, "2.0.0 Ok").enhanced(),
            Some("2.0.0")
        );
        let r = SmtpReply::from_wire(550, &format!("a\r\nb\t{}", "x".repeat(900)));
        assert!(r.text().starts_with("a  b "));
        assert_eq!(r.text().len(), MAX_TEXT_LEN);
        assert_eq!(SmtpReply::from_wire(999, "x").code(), 451);
    }
}
