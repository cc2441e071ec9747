//! PDF: its text read (lopdf) for the rules to look at. A PDF is never rewritten — its text
//! is drawn glyph by glyph and cannot be changed faithfully — so a transform that finds
//! something in it takes its rule's `unchangeable` action instead; `reject`, `divert` and
//! `strip_attachment` rules act as on any attachment.

use super::{DocumentError, Kind, Outcome, Reader, Rules, Unread};

pub(super) fn scan(
    reader: &mut Reader<'_>,
    rules: &mut dyn Rules,
    bytes: &[u8],
    place: &str,
) -> Result<Outcome, DocumentError> {
    let ctype = Kind::Pdf.content_type();
    let document = match lopdf::Document::load_mem(bytes) {
        Ok(document) => document,
        Err(lopdf::Error::Decryption(_) | lopdf::Error::InvalidPassword) => {
            return Err(DocumentError::unread(place, Unread::Encrypted));
        }
        Err(e) => return Err(DocumentError::damaged(place, format!("PDF: {e}"))),
    };
    if document.is_encrypted() {
        return Err(DocumentError::unread(place, Unread::Encrypted));
    }
    let pages: Vec<u32> = document.get_pages().keys().copied().collect();
    // Each page's content is expanded no further than what is left of max_expanded_size.
    let room = usize::try_from(reader.room()).unwrap_or(usize::MAX);
    let text = document
        .extract_text_with_limit(&pages, room)
        .map_err(|e| match e {
            lopdf::Error::Decompress(_) => DocumentError::unread(place, Unread::TooLarge),
            e => DocumentError::damaged(place, format!("PDF text: {e}")),
        })?;
    reader
        .expand(text.len() as u64)
        .map_err(|why| DocumentError::unread(place, why))?;
    if rules.strips(ctype, place, Some(&text)) {
        return Ok(Outcome::Strip);
    }
    let ran = rules.run(ctype, place, &text, true, &mut |_| {});
    Ok(match ran.unchangeable {
        Some(super::Unchangeable::StripAttachment) => Outcome::Strip,
        _ => Outcome::Unchanged,
    })
}
