//! Parsing a message for the walk: mail-parser's full parse, or, for a plain single-part
//! message, a parse of its header only, so that a large body is not decoded for nothing.

use std::borrow::Cow;

use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Parses `raw` for the walk. mail-parser decodes every text body it meets — for a large
/// plain message a whole pass over the body that Postern does not use, since it decodes the
/// bodies it scans itself (to write them back exactly). So a message that is one part whose
/// body needs no decoding of its transfer encoding (not multipart, not a message, neither
/// base64 nor quoted-printable) is parsed for its header only and its one part built here,
/// the body being the rest of the bytes, exactly as mail-parser's full parse delimits it
/// (checked against it over the MIME corpus). Anything else, and any header that does not end
/// cleanly, gets the full parse.
pub(super) fn parse(raw: &[u8]) -> Option<Message<'_>> {
    let parser = MessageParser::new();
    let mut message = parser.parse_headers(raw)?;
    let part = message.parts.first_mut()?;
    let nested = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart") || ct.ctype().eq_ignore_ascii_case("message")
    });
    let encoded = part.content_transfer_encoding().is_some_and(|cte| {
        let cte = cte.trim();
        cte.eq_ignore_ascii_case("base64") || cte.eq_ignore_ascii_case("quoted-printable")
    });
    let body_start = clean_body_start(raw, part);
    match body_start {
        Some(start) if !nested && !encoded => {
            part.offset_body = start as u32;
            part.offset_end = raw.len() as u32;
            part.encoding = Encoding::None;
            part.is_encoding_problem = false;
            part.body = PartType::Text(Cow::Borrowed(""));
            Some(message)
        }
        _ => parser.parse(raw),
    }
}

/// Where the body starts when the header ends cleanly: the last field (mail-parser's offset
/// ends after its line ending) followed by the empty line. `None` when anything else follows
/// (a malformed line mail-parser would skip, or no empty line at all).
fn clean_body_start(raw: &[u8], part: &MessagePart<'_>) -> Option<usize> {
    let field_end = part.headers.last()?.offset_end as usize;
    let rest = raw.get(field_end..)?;
    if !raw[..field_end].ends_with(b"\n") {
        return None;
    }
    if rest.starts_with(b"\r\n") {
        Some(field_end + 2)
    } else if rest.starts_with(b"\n") {
        Some(field_end + 1)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header-only parse of a plain single-part message delimits its one part exactly as
    /// mail-parser's full parse does; everything else takes the full parse.
    /// Returns whether the header-only parse was taken (its part has no decoded body).
    fn same_parts(raw: &[u8], what: &str) -> bool {
        let ours = parse(raw);
        let full = MessageParser::new().parse(raw);
        let (Some(ours), Some(full)) = (ours, full) else {
            panic!("{what}: parsed by one side only");
        };
        assert_eq!(ours.parts.len(), full.parts.len(), "{what}: parts");
        for (a, b) in ours.parts.iter().zip(&full.parts) {
            assert_eq!(
                (a.offset_header, a.offset_body, a.offset_end, a.encoding),
                (b.offset_header, b.offset_body, b.offset_end, b.encoding),
                "{what}: part offsets and encoding"
            );
        }
        let decoded_len = |m: &Message<'_>| match &m.parts[0].body {
            PartType::Text(t) => t.len(),
            _ => usize::MAX,
        };
        decoded_len(&ours) == 0 && decoded_len(&full) > 0
    }

    #[test]
    fn header_only_parse_matches_the_full_parse() {
        for raw in [
            &b"From: a\r\nSubject: x\r\n  y\r\n\r\nbody\r\n"[..],
            b"From: a\nSubject: x\n\nbody\n",
            b"From: a\r\n\r\n",
            b"From: a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>x</p>",
            b"From: a\r\nContent-Transfer-Encoding: BASE64\r\n\r\naGVsbG8=\r\n",
            b"From: a\r\nbody line\r\n\r\nmore",
        ] {
            same_parts(raw, &String::from_utf8_lossy(raw));
        }
        assert!(same_parts(b"From: a\r\n\r\nbody\r\n", "plain message"));
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mime");
        let mut dirs = vec![corpus];
        let (mut seen, mut header_only) = (0, 0);
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("corpus directory") {
                let path = entry.expect("corpus entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if !matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("txt" | "tsv")
                ) {
                    let raw = std::fs::read(&path).expect("corpus message");
                    if MessageParser::new().parse(&raw).is_some() {
                        header_only += usize::from(same_parts(&raw, &path.display().to_string()));
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 100, "the corpus was read ({seen} messages)");
        assert!(
            header_only > 10,
            "plain messages took the header-only parse"
        );
    }
}
