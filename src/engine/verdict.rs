//! What the engine decides at each SMTP stage, and what it wants changed in a message.

use std::fmt;

use super::reply::SmtpReply;

/// The engine's answer to one SMTP stage. Doors translate it into their own protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing against it: go on to the next stage.
    Continue,
    /// Accept the message (or connection) without asking the policy again.
    Accept,
    /// Refuse permanently with this 5xx reply.
    Reject(SmtpReply),
    /// Refuse for now with this 4xx reply; the client keeps the message.
    Tempfail(SmtpReply),
    /// Accept the message and throw it away (a policy decision, logged).
    Discard,
    /// Answer this reply (421) and end the connection.
    Drop(SmtpReply),
}

impl Verdict {
    /// Reject or tempfail, according to the reply's class; 421 ends the connection.
    pub fn refuse(reply: SmtpReply) -> Self {
        if reply.code() == 421 {
            Self::Drop(reply)
        } else if reply.is_transient() {
            Self::Tempfail(reply)
        } else {
            Self::Reject(reply)
        }
    }

    /// The reply this verdict sends, if it refuses.
    pub fn reply(&self) -> Option<&SmtpReply> {
        match self {
            Self::Reject(r) | Self::Tempfail(r) | Self::Drop(r) => Some(r),
            Self::Continue | Self::Accept | Self::Discard => None,
        }
    }

    /// Short name used in logs and the trace header.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Accept => "accept",
            Self::Reject(_) => "reject",
            Self::Tempfail(_) => "tempfail",
            Self::Discard => "discard",
            Self::Drop(_) => "drop",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.reply() {
            Some(r) => write!(f, "{} ({r})", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// A change to one header field. Indexes are 1-based among fields of the same name, as the
/// milter protocol and Postfix's `header_checks` count them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Append a field at the end of the header.
    Add { name: String, value: String },
    /// Insert a field at a 0-based position in the whole header.
    Insert {
        index: u32,
        name: String,
        value: String,
    },
    /// Replace (or, with `None`, delete) the `index`-th field called `name`.
    Change {
        name: String,
        index: u32,
        value: Option<String>,
    },
}

/// Changes the engine asks for at the end of a message. Empty means "leave the message
/// byte-for-byte as it came" (invariant 6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits {
    /// Header changes, applied in order.
    pub headers: Vec<HeaderEdit>,
    /// A new body (CRLF line endings), replacing the original entirely.
    pub body: Option<Vec<u8>>,
}

impl Edits {
    /// True when the message is to leave untouched.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.body.is_none()
    }
}

/// The engine's answer at end of message: the verdict and, when it lets the message on, the
/// edits to apply first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOutcome {
    pub verdict: Verdict,
    pub edits: Edits,
}
