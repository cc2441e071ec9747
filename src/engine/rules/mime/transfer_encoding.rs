//! The transfer encodings of a part body: base64 and quoted-printable, decoded leniently as
//! mail readers do and encoded in lines of at most 76 characters.

use base64::Engine as _;

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Quoted-printable (RFC 2045 §6.7): lines of at most 76 characters, soft breaks that never
/// split an escape, trailing white space escaped. Lines end at `eol` only (with CRLF, a bare LF
/// or CR is data and escaped).
pub fn quoted_printable(data: &[u8], eol: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 8);
    let crlf = eol == "\r\n";
    let mut rest = data;
    loop {
        let (line, next) = next_line(rest, crlf);
        quoted_printable_line(line, eol.as_bytes(), &mut out);
        match next {
            Some(next) => {
                out.extend_from_slice(eol.as_bytes());
                rest = next;
            }
            None => return out,
        }
    }
}

/// `new` in quoted-printable for a part whose body was `original`, decoded to `old` with the
/// hard line ends `lines` (from [`decode_quoted_printable_lines`]): every line no rule changed
/// keeps its original encoding (soft breaks included), only changed lines are encoded anew, so
/// the body stays byte-for-byte as it came wherever nothing changed and the cost is that of the
/// changes: the texts are compared a stretch at a time up to their next difference, and only
/// the line holding it is looked at.
///
/// What it gives back always decodes to `new`: it is, in order, original hard lines whose
/// decoding `new` holds in the same place (the comparison found it there) and lines of `new`
/// encoded anew, each followed by the original's line ending, which `new` also has there. `None`
/// when the lines do not correspond one to one (a transform added or removed a line ending, or a
/// changed line does not end in `eol`, as when its ending was escaped).
pub fn quoted_printable_changed_lines(
    original: &[u8],
    lines: &[HardLineEnd],
    old: &[u8],
    new: &[u8],
    eol: &str,
) -> Option<Vec<u8>> {
    let crlf = eol == "\r\n";
    let fits = lines
        .last()
        .is_none_or(|l| l.encoded <= original.len() && l.decoded <= old.len());
    if !fits {
        return None;
    }
    let mut out = Vec::with_capacity(original.len() + new.len().saturating_sub(old.len()) * 3);
    // `original[..copied]` is in `out`; `old[o..]` and `new[n..]` start a line each, the lines
    // before them done; `lines[line..]` are the ends of the lines from `o` on.
    let (mut copied, mut o, mut n, mut line) = (0, 0, 0, 0);
    loop {
        let differs_at = o + common_prefix(&old[o..], &new[n..]);
        if differs_at == old.len() && new.len() - n == old.len() - o {
            break;
        }
        // The lines that end before the difference are the same in both texts.
        line += lines_up_to(&lines[line..], differs_at);
        let starts = line
            .checked_sub(1)
            .map_or(HardLineEnd::default(), |l| lines[l]);
        n += starts.decoded - o;
        let last = line == lines.len();
        // A changed line is written as its content, then the original's line ending: both
        // must be `eol`.
        let old_end = content_end(old, lines.get(line).map(|l| l.decoded), eol)?;
        let old_line = &old[starts.decoded..old_end];
        let (new_line, new_next) = next_line(&new[n..], crlf);
        if new_next.is_some() == last {
            return None;
        }
        if old_line != new_line {
            out.extend_from_slice(&original[copied..starts.encoded]);
            quoted_printable_line(new_line, eol.as_bytes(), &mut out);
            copied = content_end(original, lines.get(line).map(|l| l.encoded), eol)?;
        }
        if last {
            break;
        }
        o = lines[line].decoded;
        n += new_line.len() + eol.len();
        line += 1;
    }
    out.extend_from_slice(&original[copied..]);
    debug_assert_eq!(
        decode_quoted_printable(&out),
        new,
        "requoted lines decode to the text"
    );
    Some(out)
}

/// How many of `lines` end at or before `at`: looked for near the first (the next difference
/// is usually a few lines on), a span twice as long at each step, then within that span, so
/// that a text with changes every few lines costs a few steps per change, not a search of
/// every line left.
fn lines_up_to(lines: &[HardLineEnd], at: usize) -> usize {
    let mut span = 1;
    while span < lines.len() && lines[span - 1].decoded <= at {
        span *= 2;
    }
    let from = span / 2;
    let to = span.min(lines.len());
    from + lines[from..to].partition_point(|l| l.decoded <= at)
}

/// Where a line's content ends in `text`, given where its line ending ends (`None`: the last
/// line, which runs to the end); `None` when that line ending is not `eol`.
fn content_end(text: &[u8], line_end: Option<usize>, eol: &str) -> Option<usize> {
    match line_end {
        Some(end) if text[..end].ends_with(eol.as_bytes()) => Some(end - eol.len()),
        Some(_) => None,
        None => Some(text.len()),
    }
}

/// How many bytes `a` and `b` begin with alike: compared 256 at a time (one memcmp each),
/// then 8 at a time to the first difference.
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    const BLOCK: usize = 256;
    let len = a.len().min(b.len());
    let mut same = 0;
    while same + BLOCK <= len && a[same..same + BLOCK] == b[same..same + BLOCK] {
        same += BLOCK;
    }
    let word = |s: &[u8], at: usize| u64::from_le_bytes(s[at..at + 8].try_into().expect("8 bytes"));
    while same + 8 <= len {
        let differ = word(a, same) ^ word(b, same);
        if differ != 0 {
            return same + (differ.trailing_zeros() / 8) as usize;
        }
        same += 8;
    }
    same + a[same..len]
        .iter()
        .zip(&b[same..len])
        .take_while(|(x, y)| x == y)
        .count()
}

/// The first line of `data` and what follows its line ending (`None`: no line ending left).
fn next_line(data: &[u8], crlf: bool) -> (&[u8], Option<&[u8]>) {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &data[from..]).map(|i| from + i) {
        if !crlf {
            return (&data[..i], Some(&data[i + 1..]));
        }
        if i > 0 && data[i - 1] == b'\r' {
            return (&data[..i - 1], Some(&data[i + 1..]));
        }
        from = i + 1;
    }
    (data, None)
}

fn quoted_printable_line(line: &[u8], eol: &[u8], out: &mut Vec<u8>) {
    let mut width = 0;
    let last = line.len().saturating_sub(1);
    let mut i = 0;
    while i < line.len() {
        // A run of characters that stand for themselves, as many as fit before a soft break
        // is due (75 columns and its "="), copied at once; the line's last character is never
        // in a run (white space there is escaped).
        let limit = last.min(i + 75usize.saturating_sub(width));
        let run = line[i..limit]
            .iter()
            .position(|&b| !LITERAL[usize::from(b)])
            .unwrap_or(limit - i);
        if run > 0 {
            out.extend_from_slice(&line[i..i + run]);
            width += run;
            i += run;
            continue;
        }
        let b = line[i];
        let literal = LITERAL[usize::from(b)] && (i != last || (b != b' ' && b != b'\t'));
        let piece_len = if literal { 1 } else { 3 };
        // Room for the piece and, unless it ends the line, a soft break's "=".
        let room = if i == last { 76 } else { 75 };
        if width + piece_len > room {
            out.push(b'=');
            out.extend_from_slice(eol);
            width = 0;
        }
        if literal {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'=', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
        width += piece_len;
        i += 1;
    }
}

/// The bytes quoted-printable writes as themselves (white space only inside a line).
const LITERAL: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = (c >= b'!' && c <= b'~' && c != b'=') || c == b' ' || c == b'\t';
        b += 1;
    }
    table
};

/// Base64 in lines of 76 characters: encoded a batch of lines at a time (a call per line cost
/// about as much as encoding it), then laid out in lines. Each line but the last holds 57
/// bytes, three times 19, so a batch's text is its lines' texts one after the other.
pub fn base64_lines(data: &[u8], eol: &str) -> Vec<u8> {
    const LINE: usize = 57;
    const BATCH: usize = LINE * 256;
    let engine = base64_simd::STANDARD;
    let lines = data.len().div_ceil(LINE);
    let mut out = Vec::with_capacity(lines * (76 + eol.len()));
    let mut encoded = vec![0; engine.encoded_length(BATCH)];
    for batch in data.chunks(BATCH) {
        let text = engine.encode(batch, base64_simd::Out::from_slice(&mut encoded));
        for line in text.chunks(76) {
            if !out.is_empty() {
                out.extend_from_slice(eol.as_bytes());
            }
            out.extend_from_slice(line);
        }
    }
    out
}

/// Quoted-printable decoding as RFC 2045 §6.7 asks of a robust decoder: soft breaks (also with
/// trailing white space before them) are removed, and an `=` that starts no valid escape is
/// kept as it is rather than failing the part.
pub fn decode_quoted_printable(data: &[u8]) -> Vec<u8> {
    decode_quoted_printable_into(data, None)
}

/// Where a hard line break of a quoted-printable body ends (just after its line feed), in the
/// body and in its decoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardLineEnd {
    pub encoded: usize,
    pub decoded: usize,
}

/// [`decode_quoted_printable`], with where each hard line break ends, for
/// [`quoted_printable_changed_lines`].
pub fn decode_quoted_printable_lines(data: &[u8]) -> (Vec<u8>, Vec<HardLineEnd>) {
    let mut lines = Vec::new();
    let decoded = decode_quoted_printable_into(data, Some(&mut lines));
    (decoded, lines)
}

fn decode_quoted_printable_into(data: &[u8], mut lines: Option<&mut Vec<HardLineEnd>>) -> Vec<u8> {
    let hex = |b: u8| char::from(b).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    // Text up to the next `=` (or line feed, when line ends are wanted) is copied as it
    // stands, a run at a time.
    let next = |from: &[u8], lines: bool| {
        if lines {
            memchr::memchr2(b'=', b'\n', from)
        } else {
            memchr::memchr(b'=', from)
        }
    };
    while let Some(at) = next(&data[i..], lines.is_some()).map(|at| i + at) {
        out.extend_from_slice(&data[i..at]);
        i = at;
        if data[i] == b'\n' {
            // A line feed no `=` made a soft break: a hard line break, copied.
            out.push(b'\n');
            i += 1;
            if let Some(lines) = lines.as_deref_mut() {
                lines.push(HardLineEnd {
                    encoded: i,
                    decoded: out.len(),
                });
            }
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
    out.extend_from_slice(&data[i..]);
    out
}

/// Base64 as mail readers decode it: padding optional, trailing bits allowed.
const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Base64 decoding that skips line breaks and stray characters, as mail readers do; `None`
/// only when nothing decodable is left.
pub fn decode_base64(data: &[u8]) -> Option<Vec<u8>> {
    let data = &data[..memchr::memchr(b'=', data).unwrap_or(data.len())];
    if let Some(decoded) = decode_base64_lines(data) {
        return Some(decoded);
    }
    let mut clean = base64_alphabet_only(data);
    // A single character left over carries no whole byte.
    if clean.len() % 4 == 1 {
        clean.pop();
    }
    LENIENT.decode(&clean).ok()
}

/// Base64 as mail carries it — lines of whole groups of four characters, the last one
/// shorter, no padding left (the caller cut it off) — decoded a line at a time straight into
/// the result; `None` for anything else (a stray character, a line that splits a group, bits
/// left over after the last byte), which is then read the lenient way.
fn decode_base64_lines(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = vec![0; data.len() / 4 * 3 + 3];
    let mut written = 0;
    let mut rest = data;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(at) => (&rest[..at], &rest[at + 1..]),
            None => (rest, &b""[..]),
        };
        let mut line = line.strip_suffix(b"\r").unwrap_or(line);
        if !next.is_empty() && line.len() % 4 != 0 {
            return None;
        }
        // A single character left over carries no whole byte.
        if line.len() % 4 == 1 {
            line = &line[..line.len() - 1];
        }
        written += base64_simd::STANDARD_NO_PAD
            .decode(line, base64_simd::Out::from_slice(&mut out[written..]))
            .ok()?
            .len();
        rest = next;
    }
    out.truncate(written);
    Some(out)
}

/// Which bytes are base64 characters (padding aside).
const BASE64_ALPHABET: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/';
        b += 1;
    }
    table
};

/// The base64 characters of `data` (cut at its first `=`). Lines are copied whole, without
/// their line endings; only text with anything else in it is read a character at a time.
fn base64_alphabet_only(data: &[u8]) -> Vec<u8> {
    let mut clean = Vec::with_capacity(data.len());
    let mut from = 0;
    for at in memchr::memchr2_iter(b'\r', b'\n', data) {
        clean.extend_from_slice(&data[from..at]);
        from = at + 1;
    }
    clean.extend_from_slice(&data[from..]);
    if !clean.iter().all(|&b| BASE64_ALPHABET[usize::from(b)]) {
        clean.retain(|&b| BASE64_ALPHABET[usize::from(b)]);
    }
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain byte-at-a-time forms of the encoder and the decoders, as written before they
    /// were made to copy runs: the fast forms must give the same bytes.
    fn reference_quoted_printable(data: &[u8], eol: &str) -> Vec<u8> {
        let mut lines: Vec<&[u8]> = Vec::new();
        if eol == "\r\n" {
            let (mut start, mut i) = (0, 0);
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
        } else {
            lines = data.split(|&b| b == b'\n').collect();
        }
        let mut out = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let mut width = 0;
            for (i, &b) in line.iter().enumerate() {
                let at_end = i + 1 == line.len();
                let literal =
                    (b'!'..=b'~').contains(&b) && b != b'=' || (b == b' ' || b == b'\t') && !at_end;
                let piece_len = if literal { 1 } else { 3 };
                if width + piece_len > if at_end { 76 } else { 75 } {
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
            if n + 1 != lines.len() {
                out.extend_from_slice(eol.as_bytes());
            }
        }
        out
    }

    /// The line-by-line form written first: each line of the three found and compared in
    /// turn. The fast form must give the same bytes.
    fn reference_changed_lines(
        original: &[u8],
        old: &[u8],
        new: &[u8],
        eol: &str,
    ) -> Option<Vec<u8>> {
        let crlf = eol == "\r\n";
        if !hard_lines_are_decoded_lines(original, crlf) {
            return None;
        }
        let mut out = Vec::with_capacity(original.len() + new.len().saturating_sub(old.len()) * 3);
        let (mut encoded, mut old, mut new_rest) = (original, old, new);
        // `original[..copied]` is in `out`: unchanged lines, with their line endings, are copied a
        // run at a time when a changed line (or the end) comes.
        let mut copied = 0;
        loop {
            let start = original.len() - encoded.len();
            let (encoded_line, encoded_next) = next_hard_line(encoded, crlf);
            let (old_line, old_next) = next_line(old, crlf);
            // Most lines are unchanged: the new text is checked to go on with the same line
            // before it is searched for its own line ending.
            let len = old_line.len();
            let same = match old_next {
                Some(_) => {
                    new_rest.get(..len) == Some(old_line)
                        && new_rest[len..].starts_with(eol.as_bytes())
                }
                None => new_rest == old_line,
            };
            let (new_line, new_next) = if same {
                (old_line, old_next.map(|_| &new_rest[len + eol.len()..]))
            } else {
                next_line(new_rest, crlf)
            };
            if old_line != new_line {
                out.extend_from_slice(&original[copied..start]);
                quoted_printable_line(new_line, eol.as_bytes(), &mut out);
                copied = start + encoded_line.len();
            }
            match (encoded_next, old_next, new_next) {
                (Some(e), Some(o), Some(n)) => (encoded, old, new_rest) = (e, o, n),
                (None, None, None) => break,
                _ => return None,
            }
        }
        out.extend_from_slice(&original[copied..]);
        Some(out)
    }

    /// The first line of quoted-printable `data` up to a line ending that is not a soft break
    /// (`=`, then only spaces or tabs, as the decoder reads it), and what follows that line ending.
    fn next_hard_line(data: &[u8], crlf: bool) -> (&[u8], Option<&[u8]>) {
        let mut from = 0;
        while let Some(i) = memchr::memchr(b'\n', &data[from..]).map(|i| from + i) {
            from = i + 1;
            // Where a soft break's white space would end: before the CR of the line ending.
            let end = match (crlf, i.checked_sub(1).map(|p| data[p])) {
                (_, Some(b'\r')) => i - 1,
                (true, _) => continue,
                (false, _) => i,
            };
            let content = data[..end].trim_ascii_end();
            let soft = content.ends_with(b"=")
                && data[content.len()..end]
                    .iter()
                    .all(|&b| b == b' ' || b == b'\t');
            if !soft {
                let line_end = if crlf { i - 1 } else { i };
                return (&data[..line_end], Some(&data[i + 1..]));
            }
        }
        (data, None)
    }

    /// Whether the line endings of the decoded text are exactly the hard line breaks of the
    /// quoted-printable `data` (those [`next_hard_line`] finds), so that its n-th hard line decodes
    /// to the text's n-th line. The decoder copies a literal line ending that no `=` makes a soft
    /// break, and makes others only from escapes (`=0D`, `=0A`) or, with CRLF lines, from a CR or
    /// LF standing alone next to other bytes; without those, the two sets are the same.
    fn hard_lines_are_decoded_lines(data: &[u8], crlf: bool) -> bool {
        let escaped_line_end = memchr::memmem::find_iter(data, b"=0")
            .any(|at| matches!(data.get(at + 2), Some(b'D' | b'd' | b'A' | b'a')));
        if escaped_line_end {
            return false;
        }
        if !crlf {
            return true;
        }
        let mut ends = memchr::memchr2_iter(b'\r', b'\n', data);
        while let Some(at) = ends.next() {
            if data[at] == b'\n' || data.get(at + 1) != Some(&b'\n') {
                return false;
            }
            ends.next();
        }
        true
    }

    fn reference_clean_base64(data: &[u8]) -> Vec<u8> {
        data.iter()
            .copied()
            .take_while(|&b| b != b'=')
            .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
            .collect()
    }

    /// Bytes drawn mostly from the ones the coders treat specially.
    fn samples() -> Vec<Vec<u8>> {
        let alphabet = b"ab =\t\r\n\xc3\xa9Z09+/-.3D=0A";
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        (0..400)
            .map(|n| {
                let len = (next() % 300) as usize;
                (0..len)
                    .map(|_| match n % 3 {
                        0 => alphabet[next() as usize % alphabet.len()],
                        1 => (next() % 256) as u8,
                        _ => b"abcdefgh \r\n"[next() as usize % 11],
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn quoted_printable_matches_the_reference_and_decodes_back() {
        for data in samples() {
            for eol in ["\r\n", "\n"] {
                let encoded = quoted_printable(&data, eol);
                assert_eq!(encoded, reference_quoted_printable(&data, eol), "{data:?}");
                assert!(
                    encoded.split(|&b| b == b'\n').all(|l| l
                        .strip_suffix(b"\r")
                        .unwrap_or(l)
                        .len()
                        <= 76),
                    "lines of at most 76 characters: {data:?}"
                );
                assert!(encoded.iter().all(|b| b.is_ascii()));
                if eol == "\r\n" {
                    assert_eq!(decode_quoted_printable(&encoded), data, "{data:?}");
                }
            }
        }
        assert_eq!(
            quoted_printable(b"a=b \r\nc\t", "\r\n"),
            b"a=3Db=20\r\nc=09"
        );
    }

    /// `quoted_printable_changed_lines` over `original`, decoded with its line ends.
    fn changed_lines(original: &[u8], new: &[u8], eol: &str) -> Option<Vec<u8>> {
        let (old, lines) = decode_quoted_printable_lines(original);
        assert_eq!(old, decode_quoted_printable(original));
        quoted_printable_changed_lines(original, &lines, &old, new, eol)
    }

    #[test]
    fn only_changed_lines_are_encoded_anew() {
        // Wrapped at 20 columns, which Postern's encoder never does: untouched lines keep it.
        let original = b"card 4111 1111 1111=\r\n 1111 on file\r\nGr=C3=BC=\r\n=C3=9Fe, J=C3=B6rg=20\r\n\r\nend=3D\r\n";
        let old = decode_quoted_printable(original);
        assert_eq!(
            old,
            "card 4111 1111 1111 1111 on file\r\nGrüße, Jörg \r\n\r\nend=\r\n".as_bytes()
        );
        let new = b"card **** **** **** 1111 on file\r\nGr\xc3\xbc\xc3\x9fe, J\xc3\xb6rg \r\n\r\nend=\r\n";
        let requoted = changed_lines(original, new, "\r\n").expect("lines correspond");
        assert_eq!(
            String::from_utf8_lossy(&requoted),
            "card **** **** **** 1111 on file\r\nGr=C3=BC=\r\n=C3=9Fe, J=C3=B6rg=20\r\n\r\nend=3D\r\n"
        );
        // A transform that joins two lines: no line-for-line correspondence.
        assert_eq!(
            changed_lines(original, b"card gone\r\n\r\nend=\r\n", "\r\n"),
            None
        );
        // Escaped line endings: a change inside such a line splits it in the new text, and the
        // result is refused rather than wrong; a change elsewhere leaves it as it was encoded.
        assert_eq!(
            changed_lines(b"a=0D=0Ab\r\nc\r\n", b"a\r\nX\r\nc\r\n", "\r\n"),
            None
        );
        assert_eq!(
            changed_lines(b"a=0D=0Ab\r\nc\r\n", b"a\r\nb\r\nX\r\n", "\r\n").as_deref(),
            Some(&b"a=0D=0Ab\r\nX\r\n"[..])
        );
        // Over the samples and transforms that keep, shorten, lengthen, join and split lines,
        // whatever is given back decodes to the new text, and is the line-by-line form's byte
        // for byte wherever that form (which refuses escaped or lone line endings outright)
        // gives one; text made of lines (no CR or LF inside one) is always requoted line by
        // line when a transform keeps the lines.
        type Transform = fn(&[u8]) -> Vec<u8>;
        let transforms: [(&str, Transform, bool); 5] = [
            (
                "digits hidden",
                |old| {
                    old.iter()
                        .map(|&b| if b.is_ascii_digit() { b'#' } else { b })
                        .collect()
                },
                true,
            ),
            (
                "digits gone",
                |old| {
                    old.iter()
                        .copied()
                        .filter(|b| !b.is_ascii_digit())
                        .collect()
                },
                true,
            ),
            (
                "a doubled",
                |old| {
                    old.iter()
                        .flat_map(|&b| if b == b'a' { vec![b, b] } else { vec![b] })
                        .collect()
                },
                true,
            ),
            (
                "first line end gone",
                |old| {
                    let mut new = old.to_vec();
                    if let Some(at) = memchr::memchr(b'\n', &new) {
                        new.remove(at);
                    }
                    new
                },
                false,
            ),
            ("a line added", |old| [b"added\r\n", old].concat(), false),
        ];
        for data in samples() {
            let lines: Vec<u8> = data
                .split(|&b| b == b'\r' || b == b'\n')
                .collect::<Vec<_>>()
                .join(&b"\r\n"[..]);
            for (data, eol, lines_only) in [
                (&data, "\r\n", false),
                (&data, "\n", false),
                (&lines, "\r\n", true),
            ] {
                let encoded = quoted_printable(data, eol);
                let old = decode_quoted_printable(&encoded);
                for (name, transform, keeps_lines) in &transforms {
                    let new = transform(&old);
                    let out = changed_lines(&encoded, &new, eol);
                    if let Some(reference) = reference_changed_lines(&encoded, &old, &new, eol) {
                        assert_eq!(out.as_ref(), Some(&reference), "{name}: {data:?}");
                    }
                    match out {
                        Some(out) => assert_eq!(decode_quoted_printable(&out), new, "{name}"),
                        None => assert!(
                            !(lines_only && *keeps_lines),
                            "{name}: lines requoted: {data:?}"
                        ),
                    }
                }
            }
        }
    }

    #[test]
    fn quoted_printable_decoding_is_lenient() {
        assert_eq!(
            decode_quoted_printable(b"a=3Db=\r\nc= \t\r\nd=\ne=zz=4=\r"),
            b"a=bcde=zz=4=\r"
        );
        assert_eq!(decode_quoted_printable(b"end="), b"end");
        assert_eq!(decode_quoted_printable(b"=c3=A9"), "é".as_bytes());
    }

    #[test]
    fn lines_up_to_counts_the_lines_ending_by_then() {
        let lines: Vec<HardLineEnd> = (1..=100)
            .map(|i| HardLineEnd {
                encoded: i * 10,
                decoded: i * 10,
            })
            .collect();
        for at in [0, 9, 10, 11, 19, 20, 35, 640, 999, 1000, 5000] {
            let expected = lines.iter().filter(|l| l.decoded <= at).count();
            assert_eq!(lines_up_to(&lines, at), expected, "at {at}");
        }
        assert_eq!(lines_up_to(&[], 5), 0);
    }

    #[test]
    fn common_prefix_finds_the_first_difference() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for at in [0, 1, 7, 8, 9, 255, 256, 257, 263, 511, 512, 999] {
            let mut b = a.clone();
            b[at] ^= 0x40;
            assert_eq!(common_prefix(&a, &b), at, "differs at {at}");
            assert_eq!(common_prefix(&a[..at], &b), at, "shorter, {at}");
        }
        assert_eq!(common_prefix(&a, &a), a.len());
        assert_eq!(common_prefix(&a[..300], &a), 300);
    }

    #[test]
    fn base64_lines_are_lines_of_57_bytes_each() {
        let data: Vec<u8> = (0..57 * 600 + 5)
            .map(|i: u32| (i * 7 % 251) as u8)
            .collect();
        for len in [
            0,
            1,
            56,
            57,
            58,
            57 * 256 - 1,
            57 * 256,
            57 * 256 + 1,
            data.len(),
        ] {
            for eol in ["\r\n", "\n"] {
                let reference: Vec<String> = data[..len]
                    .chunks(57)
                    .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
                    .collect();
                assert_eq!(
                    base64_lines(&data[..len], eol),
                    reference.join(eol).into_bytes(),
                    "{len} bytes"
                );
            }
        }
    }

    #[test]
    fn base64_decoding_skips_line_breaks_and_stray_characters() {
        for data in samples() {
            let encoded = base64_lines(&data, "\r\n");
            assert_eq!(decode_base64(&encoded).as_deref(), Some(&data[..]));
        }
        for data in samples() {
            // Whatever the input, the fast ways decode what the plain one decodes.
            let mut clean = reference_clean_base64(&data);
            if clean.len() % 4 == 1 {
                clean.pop();
            }
            assert_eq!(
                decode_base64(&data),
                LENIENT.decode(&clean).ok(),
                "{data:?}"
            );
            let cut = &data[..memchr::memchr(b'=', &data).unwrap_or(data.len())];
            assert_eq!(base64_alphabet_only(cut), reference_clean_base64(&data));
        }
        assert_eq!(
            decode_base64(b"aGVs\r\nbG8*\n=\r\nignored").as_deref(),
            Some(&b"hello"[..])
        );
        // Bits left over after the last byte, as some writers leave them: still decoded.
        assert_eq!(
            decode_base64(b"aGVs\r\naGl").as_deref(),
            Some(&b"helhi"[..])
        );
        // Bodies of several batches, with both line ends, lines of other lengths, a last line
        // cut anywhere, and a line that splits a group (read the slow way, to the same bytes).
        let big: Vec<u8> = samples().concat().repeat(4);
        for eol in ["\r\n", "\n"] {
            for cut in [0, 1, 2, 3, 5, 77] {
                let data = &big[..big.len() - cut];
                let encoded = base64_lines(data, eol);
                assert!(encoded.len() > 64 * 1024);
                assert_eq!(decode_base64(&encoded).as_deref(), Some(data), "cut {cut}");
                let b64 = base64::engine::general_purpose::STANDARD.encode(data);
                let lines: Vec<&[u8]> = b64.as_bytes().chunks(64).collect();
                let short = lines.join(eol.as_bytes());
                assert_eq!(decode_base64(&short).as_deref(), Some(data), "64 a line");
                let odd = b64
                    .as_bytes()
                    .chunks(70)
                    .collect::<Vec<_>>()
                    .join(eol.as_bytes());
                assert_eq!(decode_base64(&odd).as_deref(), Some(data), "70 a line");
            }
        }
    }
}
