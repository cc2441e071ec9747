//! Parsing a message for the walk: where its parts are, read with mail-parser's own header
//! parser and boundary rules, without the pass of mail-parser's full parse that decodes every
//! body (base64, quoted-printable, charsets) — Postern decodes the bodies it scans itself, to
//! write them back exactly, so that pass was work thrown away.
//!
//! - A message that is one part whose body needs no decoding (not multipart, not a message,
//!   neither base64 nor quoted-printable) is parsed for its header only, its one part being the
//!   rest of the bytes.
//! - A multipart message is walked part by part over mail-parser's stream: each header by its
//!   parser, each multipart's preamble and end by its boundary functions, and each leaf body's
//!   end by [`body_end`], which finds the same boundary as mail-parser's byte-at-a-time scan
//!   with a substring search.
//! - Anything else — a nested message (whose parts mail-parser finds only by decoding it), a
//!   digest, a part without its boundary — gets the full parse.
//!
//! All three delimit the parts exactly as the full parse does (checked against it over the
//! MIME corpus in the tests below).

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{
    Encoding, GetHeader, HeaderName, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders,
    PartType,
};

pub(super) fn parse(raw: &[u8]) -> Option<Message<'_>> {
    let parser = MessageParser::new();
    let mut message = parser.parse_headers(raw)?;
    let part = message.parts.first_mut()?;
    let nested = part.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart") || ct.ctype().eq_ignore_ascii_case("message")
    });
    match clean_body_start(raw, part) {
        Some(start) if !nested && transfer_encoding(part) == Encoding::None => {
            part.offset_body = start as u32;
            part.offset_end = raw.len() as u32;
            part.encoding = Encoding::None;
            part.is_encoding_problem = false;
            part.body = PartType::Text(Cow::Borrowed(""));
            Some(message)
        }
        _ => structure(raw, &parser).or_else(|| parser.parse(raw)),
    }
}

/// An open multipart of the walk: its part's index, its boundary, its parts' indexes.
struct Open {
    index: usize,
    boundary: Vec<u8>,
    parts: Vec<u32>,
}

/// The parts of a multipart message, bodies undecoded, as mail-parser's full parse delimits
/// them; `None` for anything the walk does not take (see the module's text).
fn structure<'x>(raw: &'x [u8], parser: &MessageParser) -> Option<Message<'x>> {
    let mut stream = MessageStream::new(raw);
    let mut parts: Vec<MessagePart<'x>> = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    'parts: loop {
        let offset_header = stream.offset();
        let mut headers = Vec::new();
        if !stream.parse_headers(parser, &mut headers) {
            return None;
        }
        let offset_body = stream.offset();
        let index = parts.len();
        if let Some(parent) = open.last_mut() {
            parent.parts.push(index as u32);
        }
        let mut part = MessagePart {
            headers,
            is_encoding_problem: false,
            body: PartType::Text(Cow::Borrowed("")),
            encoding: Encoding::None,
            offset_header: offset_header as u32,
            offset_body: offset_body as u32,
            offset_end: 0,
        };
        let content_type = part.content_type();
        let subtype = content_type.and_then(|ct| ct.subtype());
        let is = |what: &str| content_type.is_some_and(|ct| ct.ctype() == what);
        if is("message") || subtype.is_some_and(|s| s.eq_ignore_ascii_case("digest")) {
            return None;
        }
        let boundary = content_type.and_then(|ct| ct.attribute("boundary"));
        if is("multipart")
            && let Some(boundary) = boundary
        {
            let boundary = boundary.as_bytes().to_vec();
            if !stream.seek_next_part(&boundary) {
                return None;
            }
            stream.skip_crlf();
            part.body = PartType::Multipart(Vec::new());
            parts.push(part);
            open.push(Open {
                index,
                boundary,
                parts: Vec::new(),
            });
            continue;
        }
        // A leaf: its body ends at its parent's next boundary.
        let parent = open.last()?;
        let (end, after) = body_end(raw, offset_body, &parent.boundary)?;
        stream.skip_bytes(after - stream.offset());
        part.encoding = transfer_encoding(&part);
        part.offset_end = end as u32;
        parts.push(part);
        // Boundary lines that close a multipart, up to the next part's header.
        loop {
            if !stream.is_multipart_end() {
                continue 'parts;
            }
            let closed = open.pop()?;
            parts[closed.index].body = PartType::Multipart(closed.parts);
            match open.last() {
                Some(parent) => {
                    parts[closed.index].offset_end =
                        stream.seek_next_part_offset(&parent.boundary)? as u32;
                }
                None => break 'parts,
            }
        }
    }
    let mut message = Message::default();
    parts[0].offset_end = raw.len() as u32;
    message.parts = parts;
    message.raw_message = Cow::Borrowed(raw);
    Some(message)
}

/// Where a leaf body that starts at `start` ends, and where the stream goes on after the
/// boundary's `--` and `boundary`: what mail-parser's `mime_part` gives, found with a substring
/// search instead of its byte-at-a-time scan. The body ends before the line ending that precedes
/// the boundary, or right before the `--` when it does not start a line. `None` when no boundary
/// follows.
fn body_end(raw: &[u8], start: usize, boundary: &[u8]) -> Option<(usize, usize)> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);
    let at = start + memchr::memmem::find(raw.get(start..)?, &delimiter)?;
    let end = if at > start && raw[at - 1] != b'\n' {
        at
    } else {
        match memchr::memrchr(b'\n', &raw[start..at]).map(|i| start + i) {
            Some(i) if i > start && raw[i - 1] == b'\r' => i - 1,
            Some(i) => i,
            None => start,
        }
    };
    Some((end, at + delimiter.len()))
}

/// The part's transfer encoding as mail-parser's full parse reads it: the last
/// Content-Transfer-Encoding field, base64 or quoted-printable in any case, anything else none.
fn transfer_encoding(part: &MessagePart<'_>) -> Encoding {
    match part
        .headers
        .header_value(&HeaderName::ContentTransferEncoding)
    {
        Some(HeaderValue::Text(text)) if text.eq_ignore_ascii_case("base64") => Encoding::Base64,
        Some(HeaderValue::Text(text)) if text.eq_ignore_ascii_case("quoted-printable") => {
            Encoding::QuotedPrintable
        }
        _ => Encoding::None,
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

    /// The parts as `parse` delimits them: offsets and encoding equal to mail-parser's full
    /// parse, except the encoding of a part whose body the full parse could not decode (it then
    /// takes the body as it stands; Postern decodes it leniently, as mail readers do).
    /// Returns which way `raw` was parsed.
    fn same_parts(raw: &[u8], what: &str) -> Way {
        let ours = parse(raw);
        let full = MessageParser::new().parse(raw);
        let (Some(ours), Some(full)) = (ours, full) else {
            panic!("{what}: parsed by one side only");
        };
        assert_eq!(ours.parts.len(), full.parts.len(), "{what}: parts");
        for (a, b) in ours.parts.iter().zip(&full.parts) {
            assert_eq!(
                (a.offset_header, a.offset_body, a.offset_end),
                (b.offset_header, b.offset_body, b.offset_end),
                "{what}: part offsets"
            );
            if !b.is_encoding_problem {
                assert_eq!(a.encoding, b.encoding, "{what}: part encoding");
            }
        }
        let text_len = |m: &Message<'_>| match &m.parts[0].body {
            PartType::Text(t) => t.len(),
            _ => usize::MAX,
        };
        if text_len(&ours) == 0 && text_len(&full) > 0 {
            Way::HeaderOnly
        } else if structure(raw, &MessageParser::new()).is_some() {
            Way::Structure
        } else {
            Way::Full
        }
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    enum Way {
        HeaderOnly,
        Structure,
        Full,
    }

    /// [`body_end`] ends a body where mail-parser's `mime_part` does, and goes on from the same
    /// place, over bodies made mostly of the bytes that matter to both.
    #[test]
    fn body_end_agrees_with_mail_parser() {
        let pieces: [&[u8]; 9] = [
            b"-", b"--", b"--b", b"--bb", b"\r\n", b"\n", b"\r", b"x", b" ",
        ];
        let mut state = 0x9e37_79b9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        let mut found = 0;
        for _ in 0..5000 {
            let mut raw = Vec::new();
            for _ in 0..next() % 12 {
                raw.extend_from_slice(pieces[next() % pieces.len()]);
            }
            let start = next() % (raw.len() + 1);
            for boundary in [&b"b"[..], b"-b", b"bb"] {
                let mut stream = MessageStream::new(&raw);
                stream.skip_bytes(start);
                let (end, _) = stream.mime_part(boundary);
                let ours = body_end(&raw, start, boundary);
                match ours {
                    Some((ours, after)) => {
                        assert_eq!(
                            (ours, after),
                            (end, stream.offset()),
                            "{raw:?} from {start}"
                        );
                        found += 1;
                    }
                    None => assert_eq!(end, usize::MAX, "{raw:?} from {start}"),
                }
            }
        }
        assert!(found > 1000, "boundaries found in {found} cases");
    }

    #[test]
    fn parts_are_delimited_as_by_the_full_parse() {
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
        assert_eq!(
            same_parts(b"From: a\r\n\r\nbody\r\n", "plain message"),
            Way::HeaderOnly
        );
        let multipart = b"From: a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--b\r\n\
            Content-Transfer-Encoding: Quoted-Printable (as sent)\r\n\r\na=3Db\r\n--b--\r\n";
        assert_eq!(same_parts(multipart, "multipart"), Way::Structure);
        let parts = parse(multipart).expect("parsed").parts;
        assert_eq!(parts[1].encoding, Encoding::Base64);
        // No body is decoded (nor copied) by the walk.
        assert!(matches!(&parts[1].body, PartType::Text(t) if t.is_empty()));
        let rfc822 = b"From: a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
            Content-Type: message/rfc822\r\n\r\nFrom: b\r\n\r\ninner\r\n--b--\r\n";
        assert_eq!(same_parts(rfc822, "nested message"), Way::Full);

        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mime");
        let mut dirs = vec![corpus];
        let mut ways = std::collections::HashMap::new();
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
                        let way = same_parts(&raw, &path.display().to_string());
                        *ways.entry(way).or_insert(0) += 1;
                    }
                }
            }
        }
        let seen: usize = ways.values().sum();
        assert!(seen > 100, "the corpus was read ({seen} messages)");
        for way in [Way::HeaderOnly, Way::Structure, Way::Full] {
            assert!(
                ways.get(&way).is_some_and(|&n| n > 10),
                "{way:?} taken: {ways:?}"
            );
        }
    }
}
