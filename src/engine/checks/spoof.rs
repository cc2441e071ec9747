//! Spoof detection: mail from outside (a client that is neither authenticated nor one of the
//! internal hosts, as [`Direction::Inbound`](crate::engine::address_transformation::Direction)
//! says) whose envelope sender or From domain is one of the local (hosted) domains claims to
//! come from here. It is refused, or tagged with a header, per connection profile.

use serde::Deserialize;

use crate::engine::reply::SmtpReply;

/// What is done with a spoofed sender (`spoof_detection`).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SpoofAction {
    /// Not looked at.
    #[default]
    Off,
    /// 550 5.7.1, at MAIL for the envelope sender, at the end of the message for From.
    Reject,
    /// Let through with an `X-Postern-Spoofed` field saying which address claimed a local
    /// domain.
    Tag,
}

/// The header field a tagged message gets.
pub const TAG_FIELD: &str = "X-Postern-Spoofed";

/// Which address of a message claims a local domain from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spoofed {
    EnvelopeSender,
    From,
}

impl Spoofed {
    pub fn name(self) -> &'static str {
        match self {
            Self::EnvelopeSender => "envelope sender",
            Self::From => "From",
        }
    }

    /// The refusal.
    pub fn refusal(self, domain: &str) -> SmtpReply {
        // The domain came from the client: only its printable ASCII goes into a reply.
        let domain = crate::engine::reply::printable_only(domain, 255);
        let text = format!(
            "Spoofed sender: the {} is in {domain}, a domain of this server, and the client is not one of its servers; authenticate (submission) or send from your own domain",
            self.name()
        );
        SmtpReply::new(550, Some("5.7.1"), &text).expect("printable reply")
    }

    /// The tag's value.
    pub fn tag(self, domain: &str) -> String {
        format!(
            "{} in local domain {domain} from an external client",
            self.name()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A domain from the client with characters a reply cannot carry still makes a reply.
    #[test]
    fn the_refusal_carries_only_printable_ascii() {
        let reply = Spoofed::From.refusal("bü\r\ncher.local.test");
        assert_eq!(reply.code(), 550);
        assert!(
            reply.text().contains("in bcher.local.test,"),
            "{}",
            reply.text()
        );
    }
}
