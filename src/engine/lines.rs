//! A relay target's line limit ("Line Limit", default 1000 octets with CRLF, as RFC
//! 5321 §4.5.3.1.6 allows): longer lines are broken before they are sent, as Postfix's
//! `smtp_line_length_limit` does, by inserting CRLF and a space. DKIM signing breaks a body's
//! long lines the same way first, so that the signature covers what the next hop gets. In a header that is a valid
//! fold; in MIME-encoded bodies lines are short anyway, so little is damaged where it matters.

use std::borrow::Cow;

/// `message` (CRLF line ends) with no line longer than `limit` octets including its CRLF;
/// borrowed when nothing needed breaking. A limit of 0 means none. The second value counts
/// the breaks inserted.
pub fn break_long_lines(message: &[u8], limit: usize) -> (Cow<'_, [u8]>, usize) {
    // Room for the content of one line, and for the content after a break's leading space.
    let Some(room) = limit.checked_sub(2).filter(|r| *r >= 2) else {
        return (Cow::Borrowed(message), 0);
    };
    let mut start = 0;
    let fits = memchr::memchr_iter(b'\n', message)
        .chain(std::iter::once(message.len()))
        .all(|end| {
            let line = &message[start..end];
            start = end + 1;
            line.strip_suffix(b"\r").unwrap_or(line).len() <= room
        });
    if fits {
        return (Cow::Borrowed(message), 0);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / room * 3 + 3);
    let mut breaks = 0;
    let mut lines = message.split_inclusive(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let (mut content, end): (&[u8], &[u8]) = match line.strip_suffix(b"\r\n") {
            Some(c) => (c, b"\r\n"),
            None => (line, b""),
        };
        let mut first = true;
        loop {
            // A continuation starts with the inserted space: one octet less for content.
            let fits = if first { room } else { room - 1 };
            if content.len() <= fits {
                if !first {
                    out.push(b' ');
                }
                out.extend_from_slice(content);
                break;
            }
            // Never split a UTF-8 sequence: back up to the start of a character.
            let mut at = fits;
            while at > fits / 2 && (content[at] & 0xC0) == 0x80 {
                at -= 1;
            }
            if at == 0 {
                at = fits;
            }
            if !first {
                out.push(b' ');
            }
            out.extend_from_slice(&content[..at]);
            out.extend_from_slice(b"\r\n");
            breaks += 1;
            content = &content[at..];
            first = false;
        }
        out.extend_from_slice(end);
        if lines.peek().is_none() {
            break;
        }
    }
    (Cow::Owned(out), breaks)
}

/// A header field's value folded so that every line of `Name: value` (CRLF included) is at
/// most `limit` octets: existing folds are undone and new ones (CRLF) put before white space
/// only, so the field unfolds to the same text and DKIM's relaxed canonicalization reads it
/// the same. `None` when it fits on one line already; the bool says whether every line fits
/// (a run of more than a line's room without white space cannot be folded).
pub fn fold_value(name: &str, value: &str, limit: usize) -> Option<(String, bool)> {
    let room = limit.checked_sub(2)?;
    let unfolded = value.replace("\r\n", "").replace(['\r', '\n'], " ");
    let first = name.len() + 2;
    if first + unfolded.len() <= room {
        return None;
    }
    // Pieces that each start at a run of white space (the first one at the start).
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_space = true;
    for (i, c) in unfolded.char_indices() {
        let space = c == ' ' || c == '\t';
        if space && !in_space && i > 0 {
            pieces.push(&unfolded[start..i]);
            start = i;
        }
        in_space = space;
    }
    pieces.push(&unfolded[start..]);
    let mut out = String::with_capacity(unfolded.len() + unfolded.len() / room * 2 + 2);
    let (mut line, mut fits) = (first, true);
    for piece in pieces {
        if line + piece.len() > room && !out.is_empty() {
            out.push_str("\r\n");
            line = 0;
        }
        out.push_str(piece);
        line += piece.len();
        fits &= line <= room;
    }
    Some((out, fits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_folded_before_white_space_only() {
        let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
        let value = words.join(" ");
        let (folded, fits) = fold_value("Subject", &value, 78).unwrap();
        assert!(fits);
        let field = format!("Subject: {folded}");
        for line in field.split("\r\n") {
            assert!(line.len() <= 76, "{line:?}");
        }
        assert!(field.split("\r\n").skip(1).all(|l| l.starts_with(' ')));
        assert_eq!(
            folded.replace("\r\n", ""),
            value,
            "unfolds to the same text"
        );
        // Earlier folds are undone first.
        let (again, _) = fold_value("Subject", &folded.replace("\r\n ", "\r\n\t "), 200).unwrap();
        assert_eq!(again.replace("\r\n", "").replace('\t', ""), value);
        assert_eq!(fold_value("Subject", "short", 78), None);
        // A run without white space longer than a line stays whole, and says so.
        let (folded, fits) = fold_value("X", &format!("a {} b", "x".repeat(100)), 78).unwrap();
        assert!(!fits);
        assert_eq!(
            folded.replace("\r\n", ""),
            format!("a {} b", "x".repeat(100))
        );
    }

    #[test]
    fn short_lines_are_left_alone() {
        let m = b"Subject: hi\r\n\r\nbody\r\n";
        let (out, n) = break_long_lines(m, 1000);
        assert!(matches!(out, Cow::Borrowed(_)));
        assert_eq!(n, 0);
        assert_eq!(break_long_lines(m, 0).0.as_ref(), m);
    }

    #[test]
    fn long_lines_are_broken_with_crlf_space() {
        let line = "x".repeat(25);
        let m = format!("A: {line}\r\n\r\n{line}\r\nend\r\n");
        let (out, n) = break_long_lines(m.as_bytes(), 12);
        let out = String::from_utf8(out.into_owned()).unwrap();
        for l in out.split("\r\n") {
            assert!(l.len() <= 10, "{l:?} in {out:?}");
        }
        // Removing each inserted CRLF SPACE gives the original back.
        assert_eq!(out.replace("\r\n ", ""), m);
        assert_eq!(n, 4);
    }

    #[test]
    fn a_character_is_never_split() {
        let m = "ééééé\r\n".repeat(2);
        let (out, _) = break_long_lines(m.as_bytes(), 7);
        let out = String::from_utf8(out.into_owned()).expect("still UTF-8");
        assert_eq!(out.replace("\r\n ", ""), m);
    }
}
