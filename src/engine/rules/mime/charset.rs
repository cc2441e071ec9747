//! Charsets: text read from a part's bytes in the charset it declares (encoding_rs) and
//! written back in the same one, UTF-16 included, in the part's byte order.

use std::borrow::Cow;

/// `bytes` read in the declared charset. Undeclared or wrongly declared 8-bit text is read as
/// windows-1252, which maps every byte to a character and back, so untransformed text is
/// written back as it was.
pub(in crate::engine::rules) fn decode_text<'a>(
    bytes: &'a [u8],
    declared: &'static encoding_rs::Encoding,
) -> (Cow<'a, str>, &'static encoding_rs::Encoding) {
    match declared.decode_without_bom_handling_and_without_replacement(bytes) {
        Some(text) => (text, declared),
        None => (
            encoding_rs::WINDOWS_1252
                .decode_without_bom_handling(bytes)
                .0,
            encoding_rs::WINDOWS_1252,
        ),
    }
}

pub(super) fn is_utf16(encoding: &'static encoding_rs::Encoding) -> bool {
    encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE
}

/// `text` in `charset`. encoding_rs decodes UTF-16 but encodes only to UTF-8 (as the WHATWG
/// Encoding Standard has it), so UTF-16 is written here, in the part's byte order.
pub(in crate::engine::rules) fn encode_text(
    text: String,
    charset: &'static encoding_rs::Encoding,
) -> Option<Vec<u8>> {
    if is_utf16(charset) {
        let big_endian = charset == encoding_rs::UTF_16BE;
        return Some(
            text.encode_utf16()
                .flat_map(|unit| {
                    if big_endian {
                        unit.to_be_bytes()
                    } else {
                        unit.to_le_bytes()
                    }
                })
                .collect(),
        );
    }
    let (bytes, used, errors) = charset.encode(&text);
    if errors || used != charset {
        return None;
    }
    // UTF-8 (and ASCII) text is its own encoding: its bytes are taken, not copied.
    Some(match bytes {
        Cow::Owned(bytes) => bytes,
        Cow::Borrowed(_) => text.into_bytes(),
    })
}
