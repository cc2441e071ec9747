//! MIME-correct rewriting: find the subject, headers, body texts, text-like attachments and
//! attachment names of a message, let the rules transform their decoded text, and write each
//! changed piece back in its own charset and transfer encoding. Everything no rule changed
//! stays byte-for-byte as it came: the message is rewritten by splicing new bytes into the
//! original at the changed places only, never by re-serialising a parsed tree.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Instant;

use base64::Engine as _;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::ruleset::{Action, Finder, Rule, Ruleset, Target};
use crate::engine::reply::SmtpReply;
use crate::engine::verdict::HeaderEdit;

/// What one rule did to one target, for the audit log: never the values themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub ruleset: String,
    pub rule: String,
    pub target: String,
    pub count: usize,
}

/// The content stage's result for one message.
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    /// Changes to the message's own header fields.
    pub headers: Vec<HeaderEdit>,
    /// The new body (everything after the header), when anything in it changed.
    pub body: Option<Vec<u8>>,
    pub hits: Vec<Hit>,
    /// Set when a `reject` rule matched: the reply, the ruleset and the rule.
    pub reject: Option<(SmtpReply, String, String)>,
    /// Set when a `divert` rule matched (the first one counts).
    pub divert: Option<Diversion>,
}

/// A `divert` rule that matched: where the message goes instead of on.
#[derive(Clone, Debug)]
pub struct Diversion {
    /// The relay targets to deliver through, by name.
    pub via: Vec<String>,
    pub ruleset: String,
    pub rule: String,
}

impl Rewrite {
    /// Names of the rulesets that acted, in order, once each.
    pub fn rulesets(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for hit in &self.hits {
            if !names.contains(&hit.ruleset.as_str()) {
                names.push(&hit.ruleset);
            }
        }
        names
    }
}

/// Why a message could not be scanned or rewritten; the scan failure action follows.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("part {part}: its {encoding} body cannot be decoded")]
    Undecodable { part: usize, encoding: &'static str },
    #[error("part {part}: text in charset {charset} cannot be written back after the transform")]
    Charset { part: usize, charset: String },
    #[error("scan_timeout reached before the message was scanned")]
    Deadline,
}

/// Runs `rulesets` over the raw message (header and body, as received).
pub fn rewrite(raw: &[u8], rulesets: &[&Ruleset]) -> Result<Rewrite, ContentError> {
    rewrite_within(raw, rulesets, None)
}

/// [`rewrite`], giving up with [`ContentError::Deadline`] once `deadline` has passed: the
/// walk and the rule loops look at the clock, so the work really stops (and its thread and
/// scan slot are free again) soon after `scan_timeout`, not when a huge message is done.
pub fn rewrite_within(
    raw: &[u8],
    rulesets: &[&Ruleset],
    deadline: Option<Instant>,
) -> Result<Rewrite, ContentError> {
    let rules: Vec<(&Ruleset, &Rule)> = rulesets
        .iter()
        .flat_map(|rs| rs.rules.iter().map(move |r| (*rs, r)))
        .collect();
    let mut walker = Walker {
        rules,
        rewrite: Rewrite::default(),
        deadline,
        expired: false,
    };
    if walker.rules.is_empty() {
        return Ok(walker.rewrite);
    }
    let Some(message) = parse(raw) else {
        // No header at all: the whole message is one plain text body, and is still scanned.
        let rewrite = walker.headerless(raw);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(ContentError::Deadline);
        }
        return Ok(rewrite);
    };
    let mut splices = Vec::new();
    let mut headers = Vec::new();
    walker.walk(&message, raw, Some(&mut headers), &mut splices)?;
    if walker.expired {
        return Err(ContentError::Deadline);
    }
    let mut rewrite = walker.rewrite;
    if rewrite.reject.is_some() {
        return Ok(rewrite);
    }
    rewrite.headers = headers;
    if !splices.is_empty() {
        let body_start = message.parts.first().map_or(0, |p| p.offset_body as usize);
        // Splices only ever touch bytes after the header (header fields are edits).
        rewrite.body = Some(splice(raw, body_start, splices));
    }
    Ok(rewrite)
}

/// Parses `raw` for the walk. mail-parser decodes every text body it meets — for a large
/// plain message a whole pass over the body that Postern does not use, since it decodes the
/// bodies it scans itself (to write them back exactly). So a message that is one part whose
/// body needs no decoding of its transfer encoding (not multipart, not a message, neither
/// base64 nor quoted-printable) is parsed for its header only and its one part built here,
/// the body being the rest of the bytes, exactly as mail-parser's full parse delimits it
/// (checked against it over the MIME corpus). Anything else, and any header that does not end
/// cleanly, gets the full parse.
fn parse(raw: &[u8]) -> Option<Message<'_>> {
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

struct Walker<'r> {
    rules: Vec<(&'r Ruleset, &'r Rule)>,
    rewrite: Rewrite,
    deadline: Option<Instant>,
    /// The deadline passed: the walk stops and the rewrite fails.
    expired: bool,
}

impl Walker<'_> {
    fn time_is_up(&mut self) -> bool {
        self.expired |= self.deadline.is_some_and(|d| Instant::now() >= d);
        self.expired
    }
}

type Splices = Vec<(Range<usize>, Vec<u8>)>;

/// `raw[from..]` with the splices (ranges of `raw`, none before `from`) put in place.
fn splice(raw: &[u8], from: usize, mut splices: Splices) -> Vec<u8> {
    let from = from.min(raw.len());
    splices.sort_by_key(|(r, _)| r.start);
    // A single part whose body is the whole rest: its new bytes are the result, uncopied.
    if let [(range, _)] = splices.as_slice()
        && *range == (from..raw.len())
        && let Some((_, bytes)) = splices.pop()
    {
        return bytes;
    }
    let mut out = Vec::with_capacity(raw.len() - from);
    let mut at = from;
    for (range, bytes) in splices {
        if range.start < at {
            continue;
        }
        out.extend_from_slice(&raw[at..range.start]);
        out.extend_from_slice(&bytes);
        at = range.end;
    }
    out.extend_from_slice(&raw[at..]);
    out
}

/// The line ending a piece of a message uses.
fn eol_of(bytes: &[u8]) -> &'static str {
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && bytes[i - 1] == b'\r' => "\r\n",
        Some(_) => "\n",
        None => "\r\n",
    }
}

fn content_type(part: &MessagePart<'_>) -> String {
    part.content_type().map_or_else(
        || "text/plain".to_owned(),
        |ct| {
            format!(
                "{}/{}",
                ct.ctype(),
                ct.subtype()
                    .unwrap_or(if ct.ctype().eq_ignore_ascii_case("text") {
                        "plain"
                    } else {
                        "octet-stream"
                    })
            )
            .to_ascii_lowercase()
        },
    )
}

/// Attachments whose decoded content is text the rules can read.
fn text_like(content_type: &str, filename: Option<&str>) -> bool {
    let by_type = content_type.starts_with("text/")
        || matches!(
            content_type,
            "application/json" | "application/xml" | "application/csv" | "application/x-csv"
        )
        || content_type.ends_with("+json")
        || content_type.ends_with("+xml");
    let by_name = filename.is_some_and(|n| {
        let n = n.to_ascii_lowercase();
        [".csv", ".tsv", ".txt", ".json", ".xml"]
            .iter()
            .any(|e| n.ends_with(e))
    });
    by_type || by_name
}

/// Byte ranges of HTML markup (tags, comments, script and style content): rules transform
/// only the text between them.
pub fn html_markup(html: &str) -> Vec<Range<usize>> {
    let bytes = html.as_bytes();
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(off) = bytes[i..].iter().position(|&b| b == b'<') {
        let start = i + off;
        let end = if html[start..].starts_with("<!--") {
            html[start..]
                .find("-->")
                .map_or(bytes.len(), |e| start + e + 3)
        } else {
            let mut quote = None;
            let mut j = start + 1;
            while j < bytes.len() {
                match (quote, bytes[j]) {
                    (None, b'"' | b'\'') => quote = Some(bytes[j]),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            (j + 1).min(bytes.len())
        };
        let tag = html[start + 1..end].trim_start().to_ascii_lowercase();
        let end = ["script", "style"]
            .iter()
            .find(|t| tag.starts_with(*t))
            .and_then(|t| {
                let close = format!("</{t}");
                html[end..]
                    .to_ascii_lowercase()
                    .find(&close)
                    .map(|c| end + c)
            })
            .unwrap_or(end);
        ranges.push(start..end);
        i = end;
        if i >= bytes.len() {
            break;
        }
    }
    ranges
}

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
fn first_word_charset(raw: &str) -> Option<&str> {
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
fn encode_parameter(name: &str, value: &str) -> String {
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

/// A part body decoded to text, with what it takes to write it back the same way. The text
/// borrows the raw message when the body needs no decoding (UTF-8 or ASCII, no transfer
/// encoding), so that a large untouched body is never copied.
struct DecodedText<'a> {
    text: Cow<'a, str>,
    charset: &'static encoding_rs::Encoding,
    eol: &'static str,
    trailing_eol: bool,
}

fn decode_body<'a>(
    part: &MessagePart<'_>,
    raw: &'a [u8],
    index: usize,
) -> Result<DecodedText<'a>, ContentError> {
    let body = &raw[part.offset_body as usize..part.offset_end as usize];
    let eol = eol_of(body);
    let bytes: Cow<'_, [u8]> = match part.encoding {
        Encoding::None => Cow::Borrowed(body),
        Encoding::QuotedPrintable => Cow::Owned(decode_quoted_printable(body)),
        Encoding::Base64 => Cow::Owned(decode_base64(body).ok_or(ContentError::Undecodable {
            part: index,
            encoding: "base64",
        })?),
    };
    let label = part
        .content_type()
        .and_then(|ct| ct.attribute("charset"))
        .unwrap_or("utf-8");
    let declared =
        encoding_rs::Encoding::for_label(label.trim().as_bytes()).unwrap_or(encoding_rs::UTF_8);
    // "utf-16" names no byte order; a byte order mark says which (RFC 2781 §4.3). The mark
    // stays in the text (U+FEFF) and is written back as it was.
    let declared = match (declared, encoding_rs::Encoding::for_bom(&bytes)) {
        (d, Some((bom, _))) if is_utf16(d) && is_utf16(bom) => bom,
        (d, _) => d,
    };
    let (text, charset) = match bytes {
        Cow::Borrowed(bytes) => decode_text(bytes, declared),
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
    })
}

/// `bytes` read in the declared charset. Undeclared or wrongly declared 8-bit text is read as
/// windows-1252, which maps every byte to a character and back, so untransformed text is
/// written back as it was.
fn decode_text<'a>(
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

fn is_utf16(encoding: &'static encoding_rs::Encoding) -> bool {
    encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE
}

/// `text` in `charset`. encoding_rs decodes UTF-16 but encodes only to UTF-8 (as the WHATWG
/// Encoding Standard has it), so UTF-16 is written here, in the part's byte order.
fn encode_text(text: String, charset: &'static encoding_rs::Encoding) -> Option<Vec<u8>> {
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

fn encode_body(
    decoded: &DecodedText<'_>,
    text: String,
    encoding: Encoding,
    index: usize,
) -> Result<Vec<u8>, ContentError> {
    let bytes = encode_text(text, decoded.charset).ok_or_else(|| ContentError::Charset {
        part: index,
        charset: decoded.charset.name().to_owned(),
    })?;
    let mut out = match encoding {
        Encoding::None => bytes,
        Encoding::QuotedPrintable => quoted_printable(&bytes, decoded.eol),
        Encoding::Base64 => base64_lines(&bytes, decoded.eol),
    };
    let ends = out.ends_with(b"\n");
    if decoded.trailing_eol && !ends {
        out.extend_from_slice(decoded.eol.as_bytes());
    }
    Ok(out)
}

fn targets_match(rule: &Rule, target: &Target) -> bool {
    rule.targets.iter().any(|t| match (t, target) {
        (Target::Header(a), Target::Header(b)) => a.eq_ignore_ascii_case(b),
        (a, b) => a == b,
    })
}

impl Walker<'_> {
    fn headerless(mut self, raw: &[u8]) -> Rewrite {
        let (text, charset) = decode_text(raw, encoding_rs::UTF_8);
        if let Some(new) = self.apply(&Target::Body, "text/plain", &text, &[]) {
            let (bytes, _, _) = charset.encode(&new);
            self.rewrite.body = Some(bytes.into_owned());
        }
        self.rewrite
    }

    fn wants(&self, target: &Target, ctype: &str) -> bool {
        self.rules.iter().any(|(_, r)| {
            targets_match(r, target)
                && (!matches!(target, Target::Attachment | Target::Filename) || r.wants_type(ctype))
        })
    }

    /// Runs the transform rules for `target` over `text`; the new text when any changed it.
    /// A matching `reject` rule is recorded.
    fn apply(
        &mut self,
        target: &Target,
        ctype: &str,
        text: &str,
        skip: &[Range<usize>],
    ) -> Option<String> {
        let mut current: Cow<'_, str> = Cow::Borrowed(text);
        // A transform whose new texts are no longer than what they replace is written into
        // `current`'s own buffer. Otherwise it writes into `spare`, which then becomes
        // `current`, the text it replaced being the next spare: at most two buffers serve the
        // whole chain of rules.
        let mut spare = String::new();
        let mut changed = false;
        if self.time_is_up() {
            return None;
        }
        for (ruleset, rule) in &self.rules {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.expired = true;
                break;
            }
            if !targets_match(rule, target)
                || matches!(target, Target::Attachment | Target::Filename)
                    && !rule.wants_type(ctype)
            {
                continue;
            }
            match &rule.action {
                Action::Reject(reply) => {
                    if self.rewrite.reject.is_none() && rule.finds(&current) {
                        self.rewrite.reject =
                            Some((reply.clone(), ruleset.name.clone(), rule.name.clone()));
                    }
                }
                Action::Divert(via) => {
                    if self.rewrite.divert.is_none() && rule.finds(&current) {
                        self.rewrite.hits.push(Hit {
                            ruleset: ruleset.name.clone(),
                            rule: rule.name.clone(),
                            target: target.name(),
                            count: 1,
                        });
                        self.rewrite.divert = Some(Diversion {
                            via: via.clone(),
                            ruleset: ruleset.name.clone(),
                            rule: rule.name.clone(),
                        });
                    }
                }
                Action::StripAttachment => {}
                Action::Transform(_) => {
                    // Markup positions hold only while the text is the original.
                    let skip = if changed && !skip.is_empty() {
                        html_markup(&current)
                    } else {
                        skip.to_vec()
                    };
                    if let Some(found) = rule.replacements(&current, &skip) {
                        self.rewrite.hits.push(Hit {
                            ruleset: ruleset.name.clone(),
                            rule: rule.name.clone(),
                            target: target.name(),
                            count: found.len(),
                        });
                        let in_place = match &mut current {
                            Cow::Owned(text) => found.apply_in_place(text),
                            Cow::Borrowed(_) => false,
                        };
                        if !in_place {
                            found.write_into(&current, &mut spare);
                            let new = Cow::Owned(std::mem::take(&mut spare));
                            if let Cow::Owned(old) = std::mem::replace(&mut current, new) {
                                spare = old;
                            }
                        }
                        changed = true;
                    }
                }
            }
        }
        changed.then(|| current.into_owned())
    }

    /// True when a `strip_attachment` rule for `target` matches `text`.
    fn strips(&mut self, target: &Target, ctype: &str, text: Option<&str>) -> bool {
        for (ruleset, rule) in &self.rules {
            if matches!(rule.action, Action::StripAttachment)
                && targets_match(rule, target)
                && rule.wants_type(ctype)
                && (matches!(rule.finder, Finder::Everything)
                    || text.is_some_and(|t| rule.finds(t)))
            {
                self.rewrite.hits.push(Hit {
                    ruleset: ruleset.name.clone(),
                    rule: rule.name.clone(),
                    target: target.name(),
                    count: 1,
                });
                return true;
            }
        }
        false
    }

    fn walk(
        &mut self,
        message: &Message<'_>,
        raw: &[u8],
        mut top_headers: Option<&mut Vec<HeaderEdit>>,
        splices: &mut Splices,
    ) -> Result<(), ContentError> {
        for (index, part) in message.parts.iter().enumerate() {
            if self.time_is_up() {
                return Err(ContentError::Deadline);
            }
            if index == 0 {
                self.header_targets(part, raw, top_headers.as_deref_mut(), splices);
            }
            let ctype = content_type(part);
            let body = part.offset_body as usize..part.offset_end as usize;
            match &part.body {
                PartType::Multipart(_) => continue,
                PartType::Message(inner) => {
                    let same_space =
                        inner.raw_message.len() == raw.len() && inner.raw_message.as_ref() == raw;
                    if same_space {
                        self.walk(inner, raw, None, splices)?;
                    } else {
                        let mut inner_splices = Vec::new();
                        self.walk(inner, &inner.raw_message, None, &mut inner_splices)?;
                        if !inner_splices.is_empty() {
                            let new = splice(&inner.raw_message, 0, inner_splices);
                            let eol = eol_of(&raw[body.clone()]);
                            let mut encoded = match part.encoding {
                                Encoding::Base64 => base64_lines(&new, eol),
                                Encoding::QuotedPrintable => quoted_printable(&new, eol),
                                Encoding::None => new,
                            };
                            if raw[body.clone()].ends_with(b"\n") && !encoded.ends_with(b"\n") {
                                encoded.extend_from_slice(eol.as_bytes());
                            }
                            splices.push((body, encoded));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            if self.rewrite.reject.is_some() {
                return Ok(());
            }
            let filename = part.attachment_name().map(str::to_owned);
            let is_attachment = filename.is_some()
                || part
                    .content_disposition()
                    .is_some_and(|d| d.ctype().eq_ignore_ascii_case("attachment"));
            let eol = eol_of(&raw[part.offset_header as usize..part.offset_end as usize]);
            if let Some(name) = &filename {
                if self.strips(&Target::Filename, &ctype, Some(name)) {
                    splices.push((
                        part.offset_header as usize..part.offset_end as usize,
                        removal_notice(eol),
                    ));
                    continue;
                }
                if self.wants(&Target::Filename, &ctype)
                    && let Some(new_name) = self.apply(&Target::Filename, &ctype, name, &[])
                {
                    self.rename(part, &new_name, eol, splices);
                }
            }
            let target = if !is_attachment && (ctype == "text/plain" || ctype == "text/html") {
                Target::Body
            } else if is_attachment && text_like(&ctype, filename.as_deref()) {
                Target::Attachment
            } else if is_attachment {
                // Binary attachments: only a strip rule by type or name can act on them.
                if self.strips(&Target::Attachment, &ctype, None) {
                    splices.push((
                        part.offset_header as usize..part.offset_end as usize,
                        removal_notice(eol),
                    ));
                }
                continue;
            } else {
                continue;
            };
            if !self.wants(&target, &ctype) {
                continue;
            }
            let decoded = decode_body(part, raw, index)?;
            if target == Target::Attachment && self.strips(&target, &ctype, Some(&decoded.text)) {
                splices.push((
                    part.offset_header as usize..part.offset_end as usize,
                    removal_notice(eol),
                ));
                continue;
            }
            let skip = if ctype == "text/html" {
                html_markup(&decoded.text)
            } else {
                Vec::new()
            };
            if let Some(new) = self.apply(&target, &ctype, &decoded.text, &skip) {
                splices.push((body, encode_body(&decoded, new, part.encoding, index)?));
            }
        }
        Ok(())
    }

    /// Subject and `header:NAME` targets of a message's own header. For the message itself
    /// they become header edits; in a nested message they are spliced into its bytes.
    fn header_targets(
        &mut self,
        part: &MessagePart<'_>,
        raw: &[u8],
        mut edits: Option<&mut Vec<HeaderEdit>>,
        splices: &mut Splices,
    ) {
        // Per-name counts (CHGHEADER indexes), kept in a map: linear in the number of fields.
        let mut seen: std::collections::HashMap<String, u32> = std::collections::HashMap::new();
        for header in &part.headers {
            let name = header.name.as_str().to_owned();
            let lower = name.to_ascii_lowercase();
            let index = {
                let count = seen.entry(lower.clone()).or_insert(0);
                *count += 1;
                *count
            };
            let target = if lower == "subject" {
                Target::Subject
            } else {
                Target::Header(lower.clone())
            };
            if !self.wants(&target, "") {
                continue;
            }
            let range = header.offset_start as usize..header.offset_end as usize;
            let raw_value = String::from_utf8_lossy(&raw[range.clone()]);
            let text = match header.value.as_text() {
                Some(t) => t.to_owned(),
                None => unfold(&raw_value),
            };
            let Some(new) = self.apply(&target, "", &text, &[]) else {
                continue;
            };
            let value = encode_header_text(&new, first_word_charset(&raw_value));
            match edits.as_deref_mut() {
                Some(edits) => edits.push(HeaderEdit::Change {
                    name,
                    index,
                    value: Some(value),
                }),
                None => {
                    let eol = eol_of(&raw[range.clone()]);
                    splices.push((range, format!(" {value}{eol}").into_bytes()));
                }
            }
        }
    }

    /// Writes a new attachment name into the part's Content-Disposition and Content-Type.
    fn rename(&mut self, part: &MessagePart<'_>, new_name: &str, eol: &str, splices: &mut Splices) {
        for header in &part.headers {
            let lower = header.name.as_str().to_ascii_lowercase();
            let param = match lower.as_str() {
                "content-disposition" => "filename",
                "content-type" => "name",
                _ => continue,
            };
            let Some(ct) = header.value.as_content_type() else {
                continue;
            };
            if !ct.has_attribute(param) {
                continue;
            }
            let mut value = match ct.subtype() {
                Some(sub) => format!("{}/{}", ct.ctype(), sub),
                None => ct.ctype().to_owned(),
            };
            for attr in ct.attributes().unwrap_or_default() {
                value.push(';');
                value.push_str(eol);
                value.push('\t');
                let v = if attr.name.eq_ignore_ascii_case(param) {
                    new_name
                } else {
                    &attr.value
                };
                value.push_str(&encode_parameter(&attr.name, v));
            }
            splices.push((
                header.offset_start as usize..header.offset_end as usize,
                format!(" {value}{eol}").into_bytes(),
            ));
        }
    }
}

fn unfold(value: &str) -> String {
    value
        .replace("\r\n", "")
        .replace('\n', "")
        .trim()
        .to_owned()
}

/// The part that takes a stripped attachment's place: it names no file (the name itself may
/// be what the rule was about).
fn removal_notice(eol: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/plain; charset=us-ascii{eol}Content-Disposition: inline{eol}\
         Content-Transfer-Encoding: 7bit{eol}{eol}\
         An attachment was removed from this message by the sender's mail policy.{eol}"
    )
    .into_bytes()
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
