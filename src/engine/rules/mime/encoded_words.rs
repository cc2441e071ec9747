//! Changed header text going back into a message: RFC 2047 encoded words for a subject or
//! other header field, RFC 2231 parameters for an attachment's file name.

use base64::Engine as _;

/// A header value as it goes back into a message: plain when it is ASCII, otherwise RFC 2047
/// encoded words (base64) separated by spaces, each within the 75-character limit. The words
/// are in `charset` — the charset the value came in, as labelled there — when it is a
/// single-byte charset that can write the whole new value, so that every character the rules
/// left alone goes back as the same bytes under the same label; otherwise in UTF-8.
pub fn encode_header_text(text: &str, charset: Option<&str>) -> String {
    let plain = text
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) || b == b'\t')
        && !text.contains("=?");
    if plain {
        return text.to_owned();
    }
    let single_byte = charset.and_then(|label| {
        let encoding = encoding_rs::Encoding::for_label(label.as_bytes())?;
        let (bytes, _, errors) = encoding.encode(text);
        // encoding_rs reads an ASCII label as windows-1252; 8-bit bytes must not go out
        // under it.
        let ascii_label = ["us-ascii", "ascii"]
            .iter()
            .any(|a| label.eq_ignore_ascii_case(a));
        let fits = !errors && (!ascii_label || bytes.is_ascii());
        (encoding.is_single_byte() && fits).then(|| (label, bytes.into_owned()))
    });
    // 45 bytes become 60 characters of base64: with "=?", the label and "?B?" ... "?=", a
    // word stays within 75 characters for labels up to 8 characters; longer labels get
    // shorter words.
    let words: Vec<(&str, Vec<u8>)> = match single_byte {
        Some((label, bytes)) => {
            let room = 45 - 3 * label.len().saturating_sub(8).div_ceil(4);
            bytes.chunks(room).map(|c| (label, c.to_vec())).collect()
        }
        None => {
            let mut words = Vec::new();
            let mut chunk = String::new();
            for c in text.chars() {
                if chunk.len() + c.len_utf8() > 45 {
                    words.push(("UTF-8", std::mem::take(&mut chunk).into_bytes()));
                }
                chunk.push(c);
            }
            if !chunk.is_empty() {
                words.push(("UTF-8", chunk.into_bytes()));
            }
            words
        }
    };
    words
        .iter()
        .map(|(label, bytes)| {
            format!(
                "=?{label}?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The charset label of the first RFC 2047 encoded word in a raw header value (without an
/// RFC 2231 language suffix), when it is a well-formed label.
pub(super) fn first_word_charset(raw: &str) -> Option<&str> {
    let rest = &raw[raw.find("=?")? + 2..];
    let label = rest[..rest.find('?')?].split('*').next()?;
    let well_formed = !label.is_empty()
        && label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    well_formed.then_some(label)
}

/// A MIME parameter, RFC 2231 encoded when it is not plain ASCII.
pub(super) fn encode_parameter(name: &str, value: &str) -> String {
    if value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("{name}=\"{escaped}\"")
    } else {
        let encoded: String = value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("{name}*=utf-8''{encoded}")
    }
}
