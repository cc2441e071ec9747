//! Parsing a message for the walk: mail-parser's parse of its structure, without the pass that
//! decodes every body, which Postern does not use (it decodes the bodies it scans itself, to
//! write them back exactly).
//!
//! - A message that is one part whose body needs no decoding (not multipart, not a message,
//!   neither base64 nor quoted-printable) is parsed for its header only, and its one part built
//!   here, the body being the rest of the bytes.
//! - Any other message is parsed by a parser that reads no Content-Transfer-Encoding field, so
//!   mail-parser delimits every part by its boundaries without decoding base64 or
//!   quoted-printable; each part's encoding is then read from its own header. A message with a
//!   nested message (whose parts mail-parser finds only by decoding it) or a part mail-parser
//!   could not delimit gets the full parse.
//!
//! Both give the parts exactly as the full parse delimits them (checked against it over the
//! MIME corpus in the tests below).

use std::borrow::Cow;

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
    let encoding = transfer_encoding(part, raw);
    match clean_body_start(raw, part) {
        Some(start) if !nested && encoding == Encoding::None => {
            part.offset_body = start as u32;
            part.offset_end = raw.len() as u32;
            part.encoding = Encoding::None;
            part.is_encoding_problem = false;
            part.body = PartType::Text(Cow::Borrowed(""));
            Some(message)
        }
        _ => structure(raw).or_else(|| parser.parse(raw)),
    }
}

/// The parts of `raw` as delimited by its boundaries, bodies undecoded; `None` when the
/// message needs the full parse (a nested message, or a part without its boundary).
fn structure(raw: &[u8]) -> Option<Message<'_>> {
    let mut message = structure_parser().parse(raw)?;
    for part in &mut message.parts {
        let message_type = part.content_type().is_some_and(|ct| {
            ct.ctype().eq_ignore_ascii_case("message")
                || ct.ctype().eq_ignore_ascii_case("multipart")
                    && ct
                        .subtype()
                        .is_some_and(|s| s.eq_ignore_ascii_case("digest"))
        });
        if message_type || part.is_encoding_problem || matches!(part.body, PartType::Message(_)) {
            return None;
        }
        if !matches!(part.body, PartType::Multipart(_)) {
            part.encoding = transfer_encoding(part, raw);
        }
    }
    Some(message)
}

/// mail-parser's default reading of every field it knows, except Content-Transfer-Encoding,
/// which it is not given: without it every body is taken as it stands.
fn structure_parser() -> MessageParser {
    use HeaderName::*;
    let mut parser = MessageParser::new()
        .ignore_header(ContentTransferEncoding)
        .header_raw(MimeVersion)
        .header_received(Received);
    for name in [Subject, Comments, ContentDescription, ContentLocation] {
        parser = parser.header_text(name);
    }
    for name in [
        From,
        To,
        Cc,
        Bcc,
        ReplyTo,
        Sender,
        ResentTo,
        ResentFrom,
        ResentBcc,
        ResentCc,
        ResentSender,
        ListArchive,
        ListHelp,
        ListId,
        ListOwner,
        ListPost,
        ListSubscribe,
        ListUnsubscribe,
    ] {
        parser = parser.header_address(name);
    }
    for name in [Date, ResentDate] {
        parser = parser.header_date(name);
    }
    for name in [
        MessageId,
        References,
        InReplyTo,
        ReturnPath,
        ContentId,
        ResentMessageId,
    ] {
        parser = parser.header_id(name);
    }
    for name in [Keywords, ContentLanguage] {
        parser = parser.header_comma_separated(name);
    }
    for name in [ContentType, ContentDisposition] {
        parser = parser.header_content_type(name);
    }
    parser
}

/// The part's transfer encoding as mail-parser's full parse reads it (the last
/// Content-Transfer-Encoding field, as unstructured text: base64 or quoted-printable in any
/// case, anything else none). A field the structure parser did not read is read again, from the
/// part's own header, by the default parser.
fn transfer_encoding(part: &MessagePart<'_>, raw: &[u8]) -> Encoding {
    let Some(field) = part.headers.header(HeaderName::ContentTransferEncoding) else {
        return Encoding::None;
    };
    let reread;
    let value = match &field.value {
        HeaderValue::Empty => {
            let header = raw.get(part.offset_header as usize..part.offset_body as usize);
            reread = header.and_then(|h| MessageParser::new().parse_headers(h));
            reread
                .as_ref()
                .and_then(|m| m.parts.first())
                .and_then(|p| p.headers.header_value(&HeaderName::ContentTransferEncoding))
        }
        value => Some(value),
    };
    match value {
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
        } else if structure(raw).is_some() {
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
        // The base64 body is not decoded by the parse.
        assert!(matches!(&parts[1].body, PartType::Text(t) if t.starts_with("aGVsbG8=")));
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
