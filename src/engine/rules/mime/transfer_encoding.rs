//! The transfer encodings of a part body: base64 and quoted-printable, decoded leniently as
//! mail readers do and encoded in lines of at most 76 characters.

use base64::Engine as _;

/// Quoted-printable (RFC 2045 §6.7): lines of at most 76 characters, soft breaks that never
/// split an escape, trailing white space escaped.
pub fn quoted_printable(data: &[u8], eol: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let lines: Vec<&[u8]> = if eol == "\r\n" {
        split_crlf(data)
    } else {
        data.split(|&b| b == b'\n').collect()
    };
    let last = lines.len() - 1;
    for (n, line) in lines.iter().enumerate() {
        let mut width = 0;
        for (i, &b) in line.iter().enumerate() {
            let at_end = i + 1 == line.len();
            let literal =
                (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !at_end;
            let piece_len = if literal { 1 } else { 3 };
            // Room for the piece and, unless it ends the line, a soft break's "=".
            let room = if at_end { 76 } else { 75 };
            if width + piece_len > room {
                out.extend_from_slice(b"=");
                out.extend_from_slice(eol.as_bytes());
                width = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.extend_from_slice(format!("={b:02X}").as_bytes());
            }
            width += piece_len;
        }
        if n != last {
            out.extend_from_slice(eol.as_bytes());
        }
    }
    out
}

fn split_crlf(data: &[u8]) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == b'\r' && data[i + 1] == b'\n' {
            lines.push(&data[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    lines.push(&data[start..]);
    lines
}

/// Base64 in lines of 76 characters.
pub fn base64_lines(data: &[u8], eol: &str) -> Vec<u8> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = Vec::with_capacity(encoded.len() + encoded.len() / 76 * 2 + 2);
    for (i, line) in encoded.as_bytes().chunks(76).enumerate() {
        if i > 0 {
            out.extend_from_slice(eol.as_bytes());
        }
        out.extend_from_slice(line);
    }
    out
}

/// Quoted-printable decoding as RFC 2045 §6.7 asks of a robust decoder: soft breaks (also with
/// trailing white space before them) are removed, and an `=` that starts no valid escape is
/// kept as it is rather than failing the part.
pub fn decode_quoted_printable(data: &[u8]) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'=' {
            out.push(data[i]);
            i += 1;
            continue;
        }
        if let (Some(h), Some(l)) = (
            data.get(i + 1).and_then(|&b| hex(b)),
            data.get(i + 2).and_then(|&b| hex(b)),
        ) {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        let mut j = i + 1;
        while j < data.len() && (data[j] == b' ' || data[j] == b'\t') {
            j += 1;
        }
        match data.get(j..) {
            Some([b'\r', b'\n', ..]) => i = j + 2,
            Some([b'\n', ..]) => i = j + 1,
            Some([]) => i = j,
            _ => {
                out.push(b'=');
                i += 1;
            }
        }
    }
    out
}

/// Base64 decoding that skips line breaks and stray characters, as mail readers do; `None`
/// only when nothing decodable is left.
pub fn decode_base64(data: &[u8]) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let mut clean: Vec<u8> = data
        .iter()
        .copied()
        .take_while(|&b| b != b'=')
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    // A single character left over carries no whole byte.
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    LENIENT.decode(&clean).ok()
}
