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

#[cfg(test)]
mod tests {
    use super::*;

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
