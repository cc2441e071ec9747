//! Attachments that are documents or archives: Office Open XML (docx, xlsx, pptx),
//! OpenDocument (odt, ods, odp), PDF, ZIP and gzip, recognised by their content rather than their
//! name, read within named limits, and — where the rules change what they say — written back
//! with only the changed text changed.
//!
//! One step a file: `detect.rs` says what a file is, `archive.rs` opens ZIP containers (the
//! documents among them) entry by entry and writes a changed one back, copying every other
//! entry's compressed bytes as they were, `gzip.rs` does the same for the one file of a gzip
//! file, `xml.rs` finds the text a reader sees in a
//! document's XML and puts changed text back into the same elements, `pdf.rs` reads a PDF's
//! text (a PDF is never rewritten: see [`Unchangeable`]).
//!
//! The rules themselves stay with the MIME walk: it implements [`Rules`], so documents run
//! exactly the rules, in the order and with the hits, that a text attachment runs.

mod archive;
mod detect;
mod gzip;
mod pdf;
mod xml;

use std::fmt;

use serde::Deserialize;

use super::mime::{decode_text, encode_text};
use super::transforms::Replacements;

pub use detect::{Kind, detect};

/// How a document or archive may be read: from `[content]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Containers within containers: an attachment that is an archive or a document is depth
    /// 1, an archive inside it 2, and so on.
    pub max_nesting_depth: usize,
    /// Entries in one archive or document.
    pub max_archive_entries: usize,
    /// Uncompressed bytes read out of all the archives and documents of one message.
    pub max_expanded_size: u64,
    /// Uncompressed to compressed size of one entry (entries under 1 MiB are not held to it).
    pub max_compression_ratio: u64,
    /// What happens to an attachment that reaches one of the limits above, is ambiguous
    /// (entries sharing a name) or cannot be written back after the rules changed it.
    pub limit_action: UnreadAction,
    /// What happens to an encrypted archive entry or PDF, whose content cannot be read.
    pub encrypted_action: UnreadAction,
    /// What happens to a document or archive too damaged (or too unusual) to read.
    pub damaged_action: UnreadAction,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        Self {
            max_nesting_depth: 3,
            max_archive_entries: 1000,
            max_expanded_size: 100_000_000,
            max_compression_ratio: 250,
            limit_action: UnreadAction::ScanFailure,
            encrypted_action: UnreadAction::Accept,
            damaged_action: UnreadAction::Accept,
        }
    }
}

/// Entries smaller than this are not held to `max_compression_ratio`: small XML compresses
/// far better than 250 to 1 without being a bomb.
const RATIO_FLOOR: u64 = 1 << 20;

/// What is done with an attachment Postern cannot read to the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnreadAction {
    /// The scan failure action (`[scan] scan_failure_action`) takes the whole message.
    ScanFailure,
    /// The message is refused (5xx).
    Reject,
    /// The attachment is replaced by a short notice.
    StripAttachment,
    /// The attachment goes on unread (logged and counted).
    Accept,
}

impl UnreadAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::ScanFailure => "scan_failure",
            Self::Reject => "reject",
            Self::StripAttachment => "strip_attachment",
            Self::Accept => "accept",
        }
    }
}

/// Why an attachment was not read to the end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unread {
    /// Nested deeper than `max_nesting_depth`.
    TooDeep,
    /// More entries than `max_archive_entries`.
    TooManyEntries(usize),
    /// The message's archives expand past `max_expanded_size`.
    TooLarge,
    /// An entry compressed better than `max_compression_ratio`.
    Ratio(u64),
    /// Encrypted: an archive entry, or a PDF.
    Encrypted,
    /// Damaged or of a form Postern does not read (the reason).
    Damaged(String),
    /// Readable in more than one way (entries sharing a name: readers differ on which one
    /// they show), so what Postern reads may not be what the recipient opens.
    Ambiguous(&'static str),
    /// Read and changed by the rules, but it cannot be written back (the reason): what the
    /// rules would have protected must not go on as it was, so the limits' action applies.
    Unwritable(String),
}

impl Unread {
    /// A short name for logs and metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TooDeep => "max_nesting_depth",
            Self::TooManyEntries(_) => "max_archive_entries",
            Self::TooLarge => "max_expanded_size",
            Self::Ratio(_) => "max_compression_ratio",
            Self::Encrypted => "encrypted",
            Self::Damaged(_) => "damaged",
            Self::Ambiguous(_) => "ambiguous",
            Self::Unwritable(_) => "unwritable",
        }
    }
}

impl fmt::Display for Unread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooDeep => f.write_str("nested deeper than content.max_nesting_depth"),
            Self::TooManyEntries(n) => write!(
                f,
                "{n} entries, more than content.max_archive_entries allows"
            ),
            Self::TooLarge => {
                f.write_str("the message's archives expand past content.max_expanded_size bytes")
            }
            Self::Ratio(r) => write!(
                f,
                "an entry expands {r} times its compressed size, more than \
                 content.max_compression_ratio allows"
            ),
            Self::Encrypted => f.write_str("encrypted, its content cannot be read"),
            Self::Damaged(why) => write!(f, "cannot be read: {why}"),
            Self::Ambiguous(why) => write!(
                f,
                "read one way by Postern, maybe another by the recipient: {why}"
            ),
            Self::Unwritable(why) => write!(f, "cannot be written back after the rules: {why}"),
        }
    }
}

/// An attachment not read to the end, for the log and the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadNote {
    /// The attachment, and within archives the entry.
    pub attachment: String,
    pub why: Unread,
    pub action: UnreadAction,
}

/// What a transforming rule does when what it found is in a file Postern cannot rewrite
/// faithfully (a PDF): the rule's `unchangeable` key.
#[derive(Clone, Debug, Default)]
pub enum Unchangeable {
    #[default]
    Reject,
    StripAttachment,
    /// Through these relay targets, as a `divert` rule.
    Divert(Vec<String>),
}

impl Unchangeable {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::StripAttachment => "strip_attachment",
            Self::Divert(_) => "divert",
        }
    }
}

/// What became of one attachment.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    /// The attachment's new bytes.
    Rewritten(Vec<u8>),
    /// The attachment is to be replaced by the removal notice.
    Strip,
}

/// A file that stopped the scan: the scan failure action follows.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("attachment {place}: {why}")]
    Unread { place: String, why: Unread },
    #[error("scan_timeout reached")]
    Deadline,
}

impl DocumentError {
    /// `place` was not read to the end, for `why`.
    fn unread(place: &str, why: Unread) -> Self {
        Self::Unread {
            place: place.to_owned(),
            why,
        }
    }

    /// `place` is damaged (or of a form Postern does not read), as `why` says.
    fn damaged(place: &str, why: impl fmt::Display) -> Self {
        Self::unread(place, Unread::Damaged(why.to_string()))
    }
}

/// The rules, as the MIME walk runs them for attachments. `place` names the attachment and,
/// within archives, the entry (`export.zip/data.csv`), for the hits and the log.
pub trait Rules {
    /// Any rule looks at attachments of this content type.
    fn wants(&self, ctype: &str) -> bool;
    /// A `strip_attachment` rule matches an attachment of this type with this text (`None`:
    /// rules that match every such attachment, by type).
    fn strips(&mut self, ctype: &str, place: &str, text: Option<&str>) -> bool;
    /// A `strip_attachment` rule on `filename` matches this file name (an entry of an archive).
    fn strips_name(&mut self, ctype: &str, place: &str, name: &str) -> bool;
    /// Runs the rules over `text`. Every transform that changes it is shown to `each` (its
    /// spans in the text as the transforms before it left it); returns the new text. With
    /// `read_only`, nothing may change: a transform that finds something takes its rule's
    /// [`Unchangeable`] action
    /// instead (recorded by the rules), and `Some` of it is returned.
    fn run(
        &mut self,
        ctype: &str,
        place: &str,
        text: &str,
        read_only: bool,
        each: &mut dyn FnMut(&Replacements),
    ) -> Ran;
    /// An attachment was not read to the end (logged and counted by the walk).
    fn unread(&mut self, place: &str, why: &Unread, action: UnreadAction);
    /// The scan's deadline passed.
    fn time_is_up(&mut self) -> bool;
    /// The message is refused already: nothing more needs reading.
    fn refused(&self) -> bool;
}

/// What running the rules over one text did.
#[derive(Debug, Default)]
pub struct Ran {
    /// The text after the transforms, when they changed it.
    pub new: Option<String>,
    /// A transform found something in a read-only text: its rule's action.
    pub unchangeable: Option<Unchangeable>,
}

/// One message's reading of its attachments: the limits and what has been expanded so far.
pub struct Reader<'l> {
    pub limits: &'l DocumentLimits,
    expanded: u64,
}

impl<'l> Reader<'l> {
    pub fn new(limits: &'l DocumentLimits) -> Self {
        Self {
            limits,
            expanded: 0,
        }
    }

    /// Reads one attachment (its decoded bytes) of `kind`, at nesting `depth` (1 for an
    /// attachment of the message).
    pub fn attachment(
        &mut self,
        rules: &mut dyn Rules,
        kind: Kind,
        bytes: &[u8],
        place: &str,
        depth: usize,
    ) -> Result<Outcome, DocumentError> {
        let read = match kind {
            Kind::Pdf => pdf::scan(self, rules, bytes, place),
            Kind::Gzip => gzip::scan(self, rules, bytes, place, depth),
            Kind::Text(_) => self.text(rules, kind, bytes, place),
            Kind::Other(_) => Ok(Outcome::Unchanged),
            _ => archive::scan(self, rules, kind, bytes, place, depth),
        };
        match read {
            Err(DocumentError::Unread { place, why }) => {
                let action = match why {
                    Unread::Encrypted => self.limits.encrypted_action,
                    Unread::Damaged(_) => self.limits.damaged_action,
                    _ => self.limits.limit_action,
                };
                rules.unread(&place, &why, action);
                match action {
                    UnreadAction::ScanFailure => Err(DocumentError::Unread { place, why }),
                    // The walk records the refusal (`unread`); the rest is not read.
                    UnreadAction::Reject | UnreadAction::Accept => Ok(Outcome::Unchanged),
                    UnreadAction::StripAttachment => Ok(Outcome::Strip),
                }
            }
            other => other,
        }
    }

    /// A text file inside an archive (a CSV, say): read and written back in its charset as
    /// the MIME walk does a text part's (UTF-8, or windows-1252 for any other bytes, which maps
    /// every byte to a character and back).
    fn text(
        &mut self,
        rules: &mut dyn Rules,
        kind: Kind,
        bytes: &[u8],
        place: &str,
    ) -> Result<Outcome, DocumentError> {
        let ctype = kind.content_type();
        let (text, charset) = decode_text(bytes, encoding_rs::UTF_8);
        if rules.strips(ctype, place, Some(&text)) {
            return Ok(Outcome::Strip);
        }
        let ran = rules.run(ctype, place, &text, false, &mut |_| {});
        let Some(new) = ran.new else {
            return Ok(Outcome::Unchanged);
        };
        encode_text(new, charset)
            .map(Outcome::Rewritten)
            .ok_or_else(|| {
                DocumentError::unread(
                    place,
                    Unread::Unwritable(format!(
                        "the new text has characters {} lacks",
                        charset.name()
                    )),
                )
            })
    }

    /// Counts `size` more expanded bytes against `max_expanded_size`.
    fn expand(&mut self, size: u64) -> Result<(), Unread> {
        self.expanded = self.expanded.saturating_add(size);
        if self.expanded > self.limits.max_expanded_size {
            return Err(Unread::TooLarge);
        }
        Ok(())
    }

    /// What is left of `max_expanded_size`.
    fn room(&self) -> u64 {
        self.limits.max_expanded_size.saturating_sub(self.expanded)
    }
}
