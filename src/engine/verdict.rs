//! What the engine decides at each SMTP stage, and what it wants changed in a message.

use super::address::EnvelopeAddress;
use std::fmt;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;

use super::reply::SmtpReply;

/// The engine's answer to one SMTP stage. Doors translate it into their own protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing against it: go on to the next stage.
    Continue,
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

    /// The same verdict with its reply (if it refuses) made by `f`.
    pub fn map_reply(self, f: impl FnOnce(SmtpReply) -> SmtpReply) -> Self {
        match self {
            Self::Reject(r) => Self::Reject(f(r)),
            Self::Tempfail(r) => Self::Tempfail(f(r)),
            Self::Drop(r) => Self::Drop(f(r)),
            other => other,
        }
    }

    /// The reply this verdict sends, if it refuses.
    pub fn reply(&self) -> Option<&SmtpReply> {
        match self {
            Self::Reject(r) | Self::Tempfail(r) | Self::Drop(r) => Some(r),
            Self::Continue | Self::Discard => None,
        }
    }

    /// Every verdict's [`name`](Verdict::name).
    pub const NAMES: [&'static str; 5] = ["continue", "reject", "tempfail", "discard", "drop"];

    /// Short name used in logs and the trace header.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Continue => "continue",
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
/// byte-for-byte as it came": a message no rule touched is never re-encoded.
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

    /// `raw` with these edits applied, or `raw` itself when there are none.
    pub fn applied_to(&self, raw: Vec<u8>) -> Vec<u8> {
        if self.is_empty() {
            raw
        } else {
            self.apply_to(&raw)
        }
    }

    /// The message with these edits applied, as an MTA applies milter edits: header changes in
    /// order, then the new body. New fields end with the line ending the message uses.
    pub fn apply_to(&self, raw: &[u8]) -> Vec<u8> {
        let body_start = header_end(raw);
        let eol: &[u8] = if raw[..body_start].windows(2).any(|w| w == b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        let mut fields = header_fields_raw(&raw[..body_start]);
        for edit in &self.headers {
            let field = |name: &str, value: &str| {
                let mut f = format!("{name}: {value}").into_bytes();
                f.extend_from_slice(eol);
                f
            };
            match edit {
                HeaderEdit::Add { name, value } => fields.push(field(name, value)),
                HeaderEdit::Insert { index, name, value } => {
                    let at = (*index as usize).min(fields.len());
                    fields.insert(at, field(name, value));
                }
                HeaderEdit::Change { name, index, value } => {
                    let position = fields
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| field_name(f).eq_ignore_ascii_case(name.as_bytes()))
                        .nth((*index as usize).saturating_sub(1))
                        .map(|(i, _)| i);
                    match (position, value) {
                        (Some(i), Some(v)) => fields[i] = field(name, v),
                        (Some(i), None) => {
                            fields.remove(i);
                        }
                        (None, Some(v)) => fields.push(field(name, v)),
                        (None, None) => {}
                    }
                }
            }
        }
        let mut out: Vec<u8> = fields.concat();
        match &self.body {
            Some(body) => {
                if !out.is_empty() {
                    out.extend_from_slice(eol);
                }
                out.extend_from_slice(body);
            }
            None => out.extend_from_slice(&raw[body_start..]),
        }
        out
    }
}

/// Where the header ends: the offset of the empty line that separates it from the body (or
/// the end of the message when there is none).
pub(crate) fn header_end(raw: &[u8]) -> usize {
    // Text that starts with neither a header field nor an mbox "From " line has no header.
    let first = raw.split(|&b| b == b'\n').next().unwrap_or_default();
    let named = first
        .iter()
        .position(|&b| b == b':')
        .is_some_and(|c| c > 0 && first[..c].iter().all(|b| b.is_ascii_graphic()));
    if !named && !first.starts_with(b"From ") {
        return 0;
    }
    let mut at = 0;
    while at < raw.len() {
        let line_end = raw[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| at + p + 1);
        let line = &raw[at..line_end];
        if line == b"\r\n" || line == b"\n" {
            return at;
        }
        at = line_end;
    }
    raw.len()
}

/// Header fields with their folded continuation lines and line endings, as raw bytes.
pub(crate) fn header_fields_raw(header: &[u8]) -> Vec<Vec<u8>> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in header.split_inclusive(|&b| b == b'\n') {
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.extend_from_slice(line),
            _ => fields.push(line.to_vec()),
        }
    }
    fields
}

/// The name of a raw header field.
pub(crate) fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    field[..end].trim_ascii()
}

/// The engine's answer at end of message: the verdict and, when it lets the message on, the
/// edits to apply first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageOutcome {
    pub verdict: Verdict,
    pub edits: Edits,
    /// The recipients the message was accepted for, as the client gave them.
    pub recipients: Vec<EnvelopeAddress>,
    /// The envelope as it is to be relayed, where the address transformation changes it.
    pub envelope: EnvelopeEdits,
    /// With [`Verdict::Discard`], when a `divert` rule delivered the message: the answer of
    /// the relay target that took it (a door that speaks SMTP passes it on).
    pub diverted: Option<SmtpReply>,
    /// The content-scan slot, held while the new body exists: the door lets it go (drops the
    /// outcome) once it has passed the edits on, so that `max_concurrent_scans` bounds the
    /// memory of rewritten bodies too.
    pub scan_slot: ScanSlot,
}

impl MessageOutcome {
    /// The recipients as the door is to relay them (rewritten where a rule says so): those
    /// Postern did not deliver itself.
    pub fn relayed_recipients(&self) -> Vec<EnvelopeAddress> {
        self.recipients
            .iter()
            .filter(|r| !self.envelope.removed.contains(r))
            .map(|r| self.envelope.recipient(r).clone())
            .collect()
    }
}

/// Envelope changes of the address transformation: empty when it changes nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvelopeEdits {
    /// The new envelope sender.
    pub sender: Option<EnvelopeAddress>,
    /// Recipients replaced: (as the client gave it, as it is relayed).
    pub recipients: Vec<(EnvelopeAddress, EnvelopeAddress)>,
    /// Recipients Postern delivered itself (an encryption rule's route): the MTA drops them.
    pub removed: Vec<EnvelopeAddress>,
}

impl EnvelopeEdits {
    pub fn is_empty(&self) -> bool {
        self.sender.is_none() && self.recipients.is_empty() && self.removed.is_empty()
    }

    /// `recipients` delivered by Postern itself: out of the MTA's envelope.
    pub fn remove(&mut self, recipients: &[EnvelopeAddress]) {
        for r in recipients {
            self.recipients.retain(|(from, _)| from != r);
            self.removed.push(r.clone());
        }
    }

    /// `recipient` as it is relayed.
    pub fn recipient<'a>(&'a self, recipient: &'a EnvelopeAddress) -> &'a EnvelopeAddress {
        self.recipients
            .iter()
            .find(|(from, _)| from == recipient)
            .map_or(recipient, |(_, to)| to)
    }
}

impl fmt::Display for EnvelopeEdits {
    /// `-` when nothing is rewritten; else `sender <a> -> <b>, <c> -> <d>`, escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        let mut parts = Vec::new();
        if let Some(sender) = &self.sender {
            parts.push(format!("sender -> <{}>", sender.escape_debug()));
        }
        for (from, to) in &self.recipients {
            parts.push(format!(
                "<{}> -> <{}>",
                from.escape_debug(),
                to.escape_debug()
            ));
        }
        f.write_str(&parts.join(", "))
    }
}

/// A slot of `max_concurrent_scans`, released when the last clone is dropped. Slots never
/// make two outcomes differ.
#[derive(Clone, Debug, Default)]
pub struct ScanSlot(pub Option<Arc<OwnedSemaphorePermit>>);

impl PartialEq for ScanSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ScanSlot {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_apply_like_an_mta() {
        let raw = b"Subject: one\r\nX-A: 1\r\n\tfolded\r\nX-A: 2\r\n\r\nbody\r\n";
        let edits = Edits {
            headers: vec![
                HeaderEdit::Change {
                    name: "x-a".into(),
                    index: 2,
                    value: None,
                },
                HeaderEdit::Change {
                    name: "Subject".into(),
                    index: 1,
                    value: Some("two".into()),
                },
                HeaderEdit::Insert {
                    index: 0,
                    name: "Received-SPF".into(),
                    value: "pass".into(),
                },
                HeaderEdit::Add {
                    name: "X-B".into(),
                    value: "b".into(),
                },
            ],
            body: Some(b"new\r\n".to_vec()),
        };
        assert_eq!(
            String::from_utf8(edits.apply_to(raw)).unwrap(),
            "Received-SPF: pass\r\nSubject: two\r\nX-A: 1\r\n\tfolded\r\nX-B: b\r\n\r\nnew\r\n"
        );
        assert_eq!(Edits::default().apply_to(raw), raw.to_vec());
    }
}
