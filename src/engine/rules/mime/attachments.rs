//! Attachments that are not text by their declared type: their true type read from their
//! content, documents and archives handed to `documents` (with the walk's rules), the rest
//! left to strip rules by type or name. And the walk's rules as `documents` runs them.

use std::ops::Range;

use mail_parser::MessagePart;

use super::body::{decode_bytes, encode_bytes};
use super::part::removal_notice;
use super::{ContentError, Walker};
use crate::engine::reply::SmtpReply;
use crate::engine::rules::documents::{
    self, Outcome, Ran, Reader, Rules, Unread, UnreadAction, UnreadNote,
};
use crate::engine::rules::ruleset::Target;
use crate::engine::rules::transforms::Replacements;

/// Where in the message new bytes go, and the bytes.
type Splice = (Range<usize>, Vec<u8>);

impl Walker<'_> {
    /// What becomes of an attachment whose declared type is not text: `Some` splice when it
    /// is stripped or rewritten.
    pub(super) fn binary_attachment(
        &mut self,
        part: &MessagePart<'_>,
        raw: &[u8],
        index: usize,
        ctype: &str,
        filename: Option<&str>,
        eol: &str,
    ) -> Result<Option<Splice>, ContentError> {
        let whole = part.offset_header as usize..part.offset_end as usize;
        let body = part.offset_body as usize..part.offset_end as usize;
        let looks = self.rules.iter().any(|(_, r)| {
            r.targets
                .iter()
                .any(|t| matches!(t, Target::Attachment | Target::Filename))
        });
        if !looks {
            return Ok(None);
        }
        let bytes = decode_bytes(&raw[body.clone()], part.encoding, index)?;
        let kind = documents::detect(&bytes, filename);
        let true_type = kind.content_type();
        // A strip rule by type sees the declared type and the true one (an .exe sent as a PDF).
        if self.strips(&Target::Attachment, ctype, None)
            || true_type != ctype && self.strips(&Target::Attachment, true_type, None)
        {
            return Ok(Some((whole, removal_notice(eol))));
        }
        // An archive is opened for any rule on attachments or names (its entries have types
        // of their own); a PDF or text file only for rules on its type.
        if !(kind.is_container()
            || kind.is_readable() && self.wants(&Target::Attachment, true_type))
        {
            return Ok(None);
        }
        let place = filename.unwrap_or("(unnamed)").to_owned();
        let limits = self.documents.limits;
        let mut reader = std::mem::replace(&mut self.documents, Reader::new(limits));
        let outcome = reader.attachment(self, kind, &bytes, &place, 1);
        self.documents = reader;
        Ok(match outcome? {
            Outcome::Unchanged => None,
            Outcome::Strip => Some((whole, removal_notice(eol))),
            Outcome::Rewritten(new) => {
                let encoded = encode_bytes(&raw[body.clone()], new, part.encoding);
                Some((body, encoded))
            }
        })
    }

    /// Runs `f` with the hits named after `place`.
    fn in_place<T>(&mut self, place: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        let outer = self.place.replace(place.to_owned());
        let result = f(self);
        self.place = outer;
        result
    }
}

/// The refusal of a message with an attachment that could not be read, when the limit's
/// action is `reject`.
fn unread_reply(why: &Unread) -> SmtpReply {
    SmtpReply::new(
        550,
        Some("5.7.1"),
        &format!(
            "Message content refused by policy: an attachment cannot be read ({})",
            why.name()
        ),
    )
    .expect("a valid reply")
}

impl Rules for Walker<'_> {
    fn wants(&self, ctype: &str) -> bool {
        Walker::wants(self, &Target::Attachment, ctype)
    }

    fn strips(&mut self, ctype: &str, place: &str, text: Option<&str>) -> bool {
        self.in_place(place, |w| {
            Walker::strips(w, &Target::Attachment, ctype, text)
        })
    }

    fn strips_name(&mut self, ctype: &str, place: &str, name: &str) -> bool {
        self.in_place(place, |w| {
            Walker::strips(w, &Target::Filename, ctype, Some(name))
        })
    }

    fn run(
        &mut self,
        ctype: &str,
        place: &str,
        text: &str,
        read_only: bool,
        each: &mut dyn FnMut(&Replacements),
    ) -> Ran {
        let (new, unchangeable) = self.in_place(place, |w| {
            w.run_rules(&Target::Attachment, ctype, text, &[], read_only, each)
        });
        Ran { new, unchangeable }
    }

    fn unread(&mut self, place: &str, why: &Unread, action: UnreadAction) {
        if action == UnreadAction::Reject && self.rewrite.reject.is_none() {
            self.rewrite.reject = Some((
                unread_reply(why),
                "content".to_owned(),
                format!("{}_action", why.name()),
            ));
        }
        self.rewrite.unread.push(UnreadNote {
            attachment: place.to_owned(),
            why: why.clone(),
            action,
        });
    }

    fn time_is_up(&mut self) -> bool {
        Walker::time_is_up(self)
    }

    fn refused(&self) -> bool {
        self.rewrite.reject.is_some()
    }
}
