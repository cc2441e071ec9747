//! MIME-correct rewriting: find the subject, headers, body texts, text-like attachments and
//! attachment names of a message, let the rules transform their decoded text, and write each
//! changed piece back in its own charset and transfer encoding. Everything no rule changed
//! stays byte-for-byte as it came: the message is rewritten by splicing new bytes into the
//! original at the changed places only, never by re-serialising a parsed tree.
//!
//! One step a file: `parse.rs` reads the message, the walk here goes through its parts,
//! `apply.rs` runs the rules over each decoded text, `body.rs` (with `transfer_encoding.rs`
//! and `charset.rs`) decodes a part body and writes it back, `header.rs` and
//! `encoded_words.rs` do the same for header fields and file names, `part.rs` says what a
//! part is, `html.rs` keeps HTML markup out of the rules' reach, and `splice.rs` puts the
//! new bytes into the message.

mod apply;
mod attachments;
mod body;
mod charset;
mod encoded_words;
mod header;
mod html;
mod parse;
mod part;
mod splice;
mod transfer_encoding;

use std::time::Instant;

use mail_parser::{Message, MimeHeaders, PartType};

use super::documents::{DocumentError, DocumentLimits, Reader, UnreadNote};
use super::ruleset::{Rule, Ruleset, Target};
use crate::engine::reply::SmtpReply;
use crate::engine::verdict::HeaderEdit;
use body::{decode_body, encode_body, encode_bytes};
use parse::parse;
use part::{content_type, removal_notice, text_like};
use splice::{Splices, eol_of, splice};

pub(in crate::engine::rules) use charset::{decode_text, encode_text};
pub use encoded_words::encode_header_text;
pub use html::html_markup;
pub use transfer_encoding::{
    base64_lines, decode_base64, decode_quoted_printable, quoted_printable,
};

/// What one rule did to one target, for the audit log: never the values themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub ruleset: String,
    pub rule: String,
    pub target: String,
    /// The rule's action (`mask`, `divert`, ...).
    pub action: &'static str,
    pub count: usize,
}

/// The content stage's result for one message.
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    /// Changes to the message's own header fields.
    pub headers: Vec<HeaderEdit>,
    /// The new body (everything after the header), when anything in it changed.
    pub body: Option<Vec<u8>>,
    pub hits: Vec<Hit>,
    /// Set when a `reject` rule matched: the reply, the ruleset and the rule.
    pub reject: Option<(SmtpReply, String, String)>,
    /// Set when a `divert` rule matched (the first one counts).
    pub divert: Option<Diversion>,
    /// Attachments not read to the end (a limit, encryption), and what was done about it.
    pub unread: Vec<UnreadNote>,
}

/// A `divert` rule that matched: where the message goes instead of on.
#[derive(Clone, Debug)]
pub struct Diversion {
    /// The relay targets to deliver through, by name.
    pub via: Vec<String>,
    pub ruleset: String,
    pub rule: String,
}

impl Hit {
    /// `rule` of the ruleset named `ruleset` acted `count` times on `target`.
    pub(super) fn of(ruleset: &str, rule: &Rule, target: &Target, count: usize) -> Self {
        Self {
            ruleset: ruleset.to_owned(),
            rule: rule.name.clone(),
            target: target.name(),
            action: rule.action.name(),
            count,
        }
    }
}

impl Rewrite {
    /// Names of the rulesets that acted, in order, once each.
    pub fn rulesets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for hit in &self.hits {
            if !names.contains(&hit.ruleset.as_str()) {
                names.push(&hit.ruleset);
            }
        }
        names
    }
}

/// Why a message could not be scanned or rewritten; the scan failure action follows.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("part {part}: its {encoding} body cannot be decoded")]
    Undecodable { part: usize, encoding: &'static str },
    #[error("part {part}: text in charset {charset} cannot be written back after the transform")]
    Charset { part: usize, charset: String },
    #[error("scan_timeout reached before the message was scanned")]
    Deadline,
    /// An attachment reached a limit of `[content]` or could not be read, and the limit's
    /// action is the scan failure action.
    #[error("{0}")]
    Document(DocumentError),
}

impl From<DocumentError> for ContentError {
    fn from(e: DocumentError) -> Self {
        match e {
            DocumentError::Deadline => Self::Deadline,
            e => Self::Document(e),
        }
    }
}

/// Runs `rulesets` over the raw message (header and body, as received), reading documents
/// and archives within the default limits.
pub fn rewrite(raw: &[u8], rulesets: &[&Ruleset]) -> Result<Rewrite, ContentError> {
    rewrite_within(raw, rulesets, &DocumentLimits::default(), None)
}

/// [`rewrite`], giving up with [`ContentError::Deadline`] once `deadline` has passed: the
/// walk and the rule loops look at the clock, so the work really stops (and its thread and
/// scan slot are free again) soon after `scan_timeout`, not when a huge message is done.
pub fn rewrite_within(
    raw: &[u8],
    rulesets: &[&Ruleset],
    limits: &DocumentLimits,
    deadline: Option<Instant>,
) -> Result<Rewrite, ContentError> {
    let rules: Vec<(&Ruleset, &Rule)> = rulesets
        .iter()
        .flat_map(|rs| rs.rules.iter().map(move |r| (*rs, r)))
        .collect();
    let mut walker = Walker {
        rules,
        rewrite: Rewrite::default(),
        deadline,
        expired: false,
        place: None,
        documents: Reader::new(limits),
    };
    if walker.rules.is_empty() {
        return Ok(walker.rewrite);
    }
    let Some(message) = parse(raw) else {
        // No header at all: the whole message is one plain text body, and is still scanned.
        let rewrite = walker.headerless(raw);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ContentError::Deadline);
        }
        return Ok(rewrite);
    };
    let mut splices = Vec::new();
    let mut headers = Vec::new();
    walker.walk(&message, raw, Some(&mut headers), &mut splices)?;
    if walker.expired {
        return Err(ContentError::Deadline);
    }
    let mut rewrite = walker.rewrite;
    if rewrite.reject.is_some() {
        return Ok(rewrite);
    }
    rewrite.headers = headers;
    if !splices.is_empty() {
        let body_start = message.parts.first().map_or(0, |p| p.offset_body as usize);
        // Splices only ever touch bytes after the header (header fields are edits).
        rewrite.body = Some(splice(raw, body_start, splices));
    }
    Ok(rewrite)
}

/// One message's walk through its parts: the rules to run, in order, and what they did.
struct Walker<'r> {
    rules: Vec<(&'r Ruleset, &'r Rule)>,
    rewrite: Rewrite,
    deadline: Option<Instant>,
    /// The deadline passed: the walk stops and the rewrite fails.
    expired: bool,
    /// The attachment (and archive entry) whose text the rules run over, for the hits.
    place: Option<String>,
    /// Documents and archives read so far, within `[content]`'s limits.
    documents: Reader<'r>,
}

impl Walker<'_> {
    fn time_is_up(&mut self) -> bool {
        self.expired |= self.deadline.is_some_and(|d| Instant::now() >= d);
        self.expired
    }

    fn headerless(mut self, raw: &[u8]) -> Rewrite {
        let (text, charset) = decode_text(raw, encoding_rs::UTF_8);
        if let Some(new) = self.apply(&Target::Body, "text/plain", &text, &[]) {
            let (bytes, _, _) = charset.encode(&new);
            self.rewrite.body = Some(bytes.into_owned());
        }
        self.rewrite
    }

    fn walk(
        &mut self,
        message: &Message<'_>,
        raw: &[u8],
        mut top_headers: Option<&mut Vec<HeaderEdit>>,
        splices: &mut Splices,
    ) -> Result<(), ContentError> {
        for (index, part) in message.parts.iter().enumerate() {
            if self.time_is_up() {
                return Err(ContentError::Deadline);
            }
            if index == 0 {
                self.header_targets(part, raw, top_headers.as_deref_mut(), splices);
            }
            let ctype = content_type(part);
            let body = part.offset_body as usize..part.offset_end as usize;
            match &part.body {
                PartType::Multipart(_) => continue,
                PartType::Message(inner) => {
                    let same_space =
                        inner.raw_message.len() == raw.len() && inner.raw_message.as_ref() == raw;
                    if same_space {
                        self.walk(inner, raw, None, splices)?;
                    } else {
                        let mut inner_splices = Vec::new();
                        self.walk(inner, &inner.raw_message, None, &mut inner_splices)?;
                        if !inner_splices.is_empty() {
                            let new = splice(&inner.raw_message, 0, inner_splices);
                            let encoded = encode_bytes(&raw[body.clone()], new, part.encoding);
                            splices.push((body, encoded));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if self.rewrite.reject.is_some() {
                return Ok(());
            }
            let filename = part.attachment_name().map(str::to_owned);
            let is_attachment = filename.is_some()
                || part
                    .content_disposition()
                    .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
            let eol = eol_of(&raw[part.offset_header as usize..part.offset_end as usize]);
            if let Some(name) = &filename {
                if self.strips(&Target::Filename, &ctype, Some(name)) {
                    splices.push((
                        part.offset_header as usize..part.offset_end as usize,
                        removal_notice(eol),
                    ));
                    continue;
                }
                if self.wants(&Target::Filename, &ctype)
                    && let Some(new_name) = self.apply(&Target::Filename, &ctype, name, &[])
                {
                    self.rename(part, &new_name, eol, splices);
                }
            }
            let target = if !is_attachment && (ctype == "text/plain" || ctype == "text/html") {
                Target::Body
            } else if is_attachment && text_like(&ctype, filename.as_deref()) {
                Target::Attachment
            } else if is_attachment {
                // Other attachments: documents and archives are read (attachments.rs); the
                // rest only a strip rule by type or name can act on.
                if let Some(splice) =
                    self.binary_attachment(part, raw, index, &ctype, filename.as_deref(), eol)?
                {
                    splices.push(splice);
                }
                continue;
            } else {
                continue;
            };
            if !self.wants(&target, &ctype) {
                continue;
            }
            let decoded = decode_body(part, raw, index)?;
            if target == Target::Attachment && self.strips(&target, &ctype, Some(&decoded.text)) {
                splices.push((
                    part.offset_header as usize..part.offset_end as usize,
                    removal_notice(eol),
                ));
                continue;
            }
            let skip = if ctype == "text/html" {
                html_markup(&decoded.text)
            } else {
                Vec::new()
            };
            if let Some(new) = self.apply(&target, &ctype, &decoded.text, &skip) {
                let encoded = encode_body(&raw[body.clone()], &decoded, new, part.encoding, index)?;
                splices.push((body, encoded));
            }
        }
        Ok(())
    }
}
