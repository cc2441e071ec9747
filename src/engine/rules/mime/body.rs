//! A part body as text and back: undo its transfer encoding, read its charset, and write
//! changed text again in the same charset, transfer encoding and line endings.

use std::borrow::Cow;

use mail_parser::{Encoding, MessagePart, MimeHeaders};

use super::ContentError;
use super::charset::{decode_text, encode_text, is_utf16};
use super::splice::eol_of;
use super::transfer_encoding::{
    HardLineEnd, base64_lines, decode_base64, decode_quoted_printable,
    decode_quoted_printable_lines, quoted_printable, quoted_printable_changed_lines,
};

/// A part body decoded to text, with what it takes to write it back the same way. The text
/// borrows the raw message when the body needs no decoding (UTF-8 or ASCII, no transfer
/// encoding), so that a large untouched body is never copied.
pub(super) struct DecodedText<'a> {
    pub(super) text: Cow<'a, str>,
    charset: &'static encoding_rs::Encoding,
    eol: &'static str,
    trailing_eol: bool,
    /// A quoted-printable UTF-8 body's hard line ends, when the text is exactly its decoding.
    hard_lines: Option<Vec<HardLineEnd>>,
}

pub(super) fn decode_body<'a>(
    part: &MessagePart<'_>,
    raw: &'a [u8],
    index: usize,
) -> Result<DecodedText<'a>, ContentError> {
    let body = &raw[part.offset_body as usize..part.offset_end as usize];
    let eol = eol_of(body);
    let label = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .unwrap_or("utf-8");
    let declared =
        encoding_rs::Encoding::for_label(label.trim().as_bytes()).unwrap_or(encoding_rs::UTF_8);
    let mut hard_lines = None;
    let bytes: Cow<'_, [u8]> = match part.encoding {
        // In UTF-8 the text is the decoded bytes, and its lines can be matched to the
        // body's (see `encode_body`).
        Encoding::QuotedPrintable if declared == encoding_rs::UTF_8 => {
            let (bytes, lines) = decode_quoted_printable_lines(body);
            hard_lines = Some(lines);
            Cow::Owned(bytes)
        }
        encoding => decode_bytes(body, encoding, index)?,
    };
    // "utf-16" names no byte order; a byte order mark says which (RFC 2781 §4.3). The mark
    // stays in the text (U+FEFF) and is written back as it was.
    let declared = match (declared, encoding_rs::Encoding::for_bom(&bytes)) {
        (d, Some((bom, _))) if is_utf16(d) && is_utf16(bom) => bom,
        (d, _) => d,
    };
    let (text, charset) = match bytes {
        Cow::Borrowed(bytes) => decode_text(bytes, declared),
        // UTF-8 is checked once, as the text is made (not once to read it, once to keep it).
        Cow::Owned(bytes) if declared == encoding_rs::UTF_8 => match String::from_utf8(bytes) {
            Ok(text) => (Cow::Owned(text), declared),
            Err(e) => {
                hard_lines = None;
                let (text, charset) = decode_text(e.as_bytes(), declared);
                (Cow::Owned(text.into_owned()), charset)
            }
        },
        Cow::Owned(bytes) => {
            let (text, charset) = decode_text(&bytes, declared);
            let text = match text {
                Cow::Owned(text) => text,
                // Already UTF-8: the decoded bytes become the text without a copy.
                Cow::Borrowed(_) => String::from_utf8(bytes)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            };
            (Cow::Owned(text), charset)
        }
    };
    let trailing_eol = body.ends_with(b"\n");
    Ok(DecodedText {
        text,
        charset,
        eol,
        trailing_eol,
        hard_lines,
    })
}

/// A part body (`body`, of part `index`) with its transfer encoding undone.
pub(super) fn decode_bytes(
    body: &[u8],
    encoding: Encoding,
    index: usize,
) -> Result<Cow<'_, [u8]>, ContentError> {
    Ok(match encoding {
        Encoding::None => Cow::Borrowed(body),
        Encoding::QuotedPrintable => Cow::Owned(decode_quoted_printable(body)),
        Encoding::Base64 => Cow::Owned(decode_base64(body).ok_or(ContentError::Undecodable {
            part: index,
            encoding: "base64",
        })?),
    })
}

/// `new`, the new content of a part whose body was `original`, in the part's transfer
/// encoding and line endings (for content that is not text: a nested message, a document).
pub(super) fn encode_bytes(original: &[u8], new: Vec<u8>, encoding: Encoding) -> Vec<u8> {
    let eol = eol_of(original);
    let mut encoded = match encoding {
        Encoding::Base64 => base64_lines(&new, eol),
        Encoding::QuotedPrintable => quoted_printable(&new, eol),
        Encoding::None => new,
    };
    if original.ends_with(b"\n") && !encoded.ends_with(b"\n") {
        encoded.extend_from_slice(eol.as_bytes());
    }
    encoded
}

/// `text`, the new text of a part whose body was `original` and decoded to `decoded`, in the
/// part's charset and transfer encoding.
pub(super) fn encode_body(
    original: &[u8],
    decoded: &DecodedText<'_>,
    text: String,
    encoding: Encoding,
    index: usize,
) -> Result<Vec<u8>, ContentError> {
    let bytes = encode_text(text, decoded.charset).ok_or_else(|| ContentError::Charset {
        part: index,
        charset: decoded.charset.name().to_owned(),
    })?;
    // When the decoded text is the decoded bytes (UTF-8), lines no rule changed keep their
    // original encoding.
    let unchanged_lines = || {
        let lines = decoded.hard_lines.as_deref()?;
        quoted_printable_changed_lines(
            original,
            lines,
            decoded.text.as_bytes(),
            &bytes,
            decoded.eol,
        )
    };
    let mut out = match encoding {
        Encoding::None => bytes,
        Encoding::QuotedPrintable => {
            unchanged_lines().unwrap_or_else(|| quoted_printable(&bytes, decoded.eol))
        }
        Encoding::Base64 => base64_lines(&bytes, decoded.eol),
    };
    let ends = out.ends_with(b"\n");
    if decoded.trailing_eol && !ends {
        out.extend_from_slice(decoded.eol.as_bytes());
    }
    Ok(out)
}
