//! The text a reader sees in one XML part of a document, and that text put back.
//!
//! A document's text lies in many small pieces: a Word paragraph is runs of `<w:t>` elements,
//! one per change of format, so a card number can be `4111 1111 ` in one run and `1111 1111`
//! (bold) in the next. The rules must see the paragraph whole, and a transform must change
//! only the characters it replaces, in whichever pieces they are. So a part is read into
//! [`Pieces`]: each character-data run in an element that holds text (its byte range in the
//! XML and its unescaped text), and between paragraphs a separator the XML does not have.
//! The rules run over the pieces joined; each transform's replacements are laid onto the
//! pieces (the new text goes into the piece where the replaced span began, the rest of the
//! span is taken out of the pieces it covered); at the end only the changed pieces are
//! written back, escaped, into the XML, every other byte staying as it was.

use std::io::{self, Write};
use std::ops::Range;

use crate::engine::rules::transforms::Replacements;

/// Which elements of a kind of XML part hold text, by local name (namespace prefixes vary
/// from writer to writer).
pub(super) struct Grammar {
    /// Character data inside these elements (at any depth) is text.
    pub(super) holds_text: &'static [&'static str],
    /// The end of one of these ends a paragraph.
    pub(super) paragraphs: &'static [&'static str],
    /// Empty elements read as a tab, a line break, a space.
    pub(super) tabs: &'static [&'static str],
    pub(super) breaks: &'static [&'static str],
    pub(super) spaces: &'static [&'static str],
}

/// WordprocessingML (document, headers, footers, footnotes, endnotes, comments).
pub(super) const WORD: Grammar = Grammar {
    holds_text: &["t"],
    paragraphs: &["p"],
    tabs: &["tab"],
    breaks: &["br", "cr"],
    spaces: &[],
};

/// SpreadsheetML shared strings, inline strings and comments.
pub(super) const SHEET: Grammar = Grammar {
    holds_text: &["t"],
    paragraphs: &["si", "is", "comment"],
    tabs: &[],
    breaks: &[],
    spaces: &[],
};

/// DrawingML text of slides and notes, and slide comments.
pub(super) const SLIDES: Grammar = Grammar {
    holds_text: &["t", "text"],
    paragraphs: &["p", "cm"],
    tabs: &["tab"],
    breaks: &["br"],
    spaces: &[],
};

/// OpenDocument content and styles (headers and footers are in styles.xml).
pub(super) const ODF: Grammar = Grammar {
    holds_text: &["p", "h"],
    paragraphs: &["p", "h"],
    tabs: &["tab"],
    breaks: &["line-break"],
    spaces: &["s"],
};

/// Document properties: OOXML docProps/core.xml, OpenDocument meta.xml. Each is a paragraph.
pub(super) const PROPERTIES: Grammar = Grammar {
    holds_text: PROPERTY_NAMES,
    paragraphs: PROPERTY_NAMES,
    tabs: &[],
    breaks: &[],
    spaces: &[],
};

const PROPERTY_NAMES: &[&str] = &[
    "title",
    "subject",
    "creator",
    "keywords",
    "keyword",
    "description",
    "lastModifiedBy",
    "category",
    "initial-creator",
];
/// A step through a part's XML: character data, or a tag by its local name (the name after
/// any namespace prefix), or anything else (comments, CDATA, processing instructions, the
/// declaration).
#[derive(Debug, PartialEq, Eq)]
enum Token<'x> {
    Text(Range<usize>),
    Start(&'x [u8]),
    End(&'x [u8]),
    Empty(&'x [u8]),
    Other,
}

/// The markup of a part, tag by tag. Only what the text needs is read: where each tag begins
/// and ends (a `>` inside a quoted attribute value does not end it) and its local name. It
/// was written for speed (quick-xml's reader took more than half of a large document's
/// rewrite, benches/documents.rs), and is checked against quick-xml in the tests below.
struct Scanner<'x> {
    xml: &'x [u8],
    at: usize,
}

impl<'x> Scanner<'x> {
    fn next(&mut self) -> Result<Option<Token<'x>>, XmlError> {
        let (xml, at) = (self.xml, self.at);
        if at >= xml.len() {
            return Ok(None);
        }
        if xml[at] != b'<' {
            let end = memchr::memchr(b'<', &xml[at..]).map_or(xml.len(), |i| at + i);
            self.at = end;
            return Ok(Some(Token::Text(at..end)));
        }
        let rest = &xml[at..];
        let unterminated = || format!("XML at byte {at}: markup that does not end");
        let until = |close: &[u8]| {
            memchr::memmem::find(rest, close)
                .map(|i| i + close.len())
                .ok_or_else(unterminated)
        };
        let (token, len) = if rest.starts_with(b"<!--") {
            (Token::Other, until(b"-->")?)
        } else if rest.starts_with(b"<![CDATA[") {
            (Token::Other, until(b"]]>")?)
        } else if rest.starts_with(b"<?") {
            (Token::Other, until(b"?>")?)
        } else if rest.starts_with(b"<!") {
            // A document type declaration; one with an internal subset ends at "]>".
            let first = memchr::memchr2(b'[', b'>', rest).ok_or_else(unterminated)?;
            match rest[first] {
                b'[' => (Token::Other, until(b"]>")?),
                _ => (Token::Other, first + 1),
            }
        } else {
            // Tags are short: a plain loop finds the end sooner than a search set up per tag.
            let mut quote = 0u8;
            let close = rest
                .iter()
                .enumerate()
                .skip(1)
                .find(|&(_, &b)| {
                    if quote != 0 {
                        if b == quote {
                            quote = 0;
                        }
                        false
                    } else if b == b'"' || b == b'\'' {
                        quote = b;
                        false
                    } else {
                        b == b'>'
                    }
                })
                .map(|(i, _)| i)
                .ok_or_else(unterminated)?;
            let inner = &rest[1..close];
            let token = match inner {
                [b'/', name @ ..] => Token::End(local_name(name)),
                [.., b'/'] => Token::Empty(local_name(inner)),
                _ => Token::Start(local_name(inner)),
            };
            (token, close + 1)
        };
        self.at = at + len;
        Ok(Some(token))
    }
}

/// The local name of the tag whose inside (after `<` or `</`) is `inner`: after the first
/// colon, as quick-xml has it.
fn local_name(inner: &[u8]) -> &[u8] {
    let end = inner
        .iter()
        .position(|&b| b.is_ascii_whitespace() || b == b'/')
        .unwrap_or(inner.len());
    let name = &inner[..end];
    match memchr::memchr(b':', name) {
        Some(i) => &name[i + 1..],
        None => name,
    }
}

/// One piece of a part's text: where it starts in the joined text (it ends where the next
/// one starts) and where its escaped text is in the XML.
/// (A large part has hundreds of thousands of pieces: they are kept small.)
#[derive(Clone, Debug)]
struct Piece {
    at: usize,
    /// `0..0` for a separator, which the XML does not hold and which can therefore take no
    /// new text (a text run never starts at byte 0: an element comes first).
    raw: Range<u32>,
    changed: bool,
}

impl Piece {
    fn is_raw(&self) -> bool {
        self.raw.end > 0
    }
}

/// A part's text, as pieces of one joined text. The text itself is the caller's: the rules
/// make each new one, and [`Pieces::replace`] moves the pieces' bounds along.
#[derive(Debug)]
pub(super) struct Pieces {
    pieces: Vec<Piece>,
    /// The joined text's length now.
    len: usize,
}

/// Why a part's XML could not be read.
pub(super) type XmlError = String;

impl Pieces {
    /// Reads the text of `xml` as `grammar` says where it is: the pieces and the joined text.
    pub(super) fn read(xml: &[u8], grammar: &Grammar) -> Result<(Self, String), XmlError> {
        if u32::try_from(xml.len()).is_err() {
            return Err("an XML part of 4 GiB or more".to_owned());
        }
        // Word's XML is about a third text, and a text run takes some 60 bytes of markup.
        let mut text = String::with_capacity(xml.len() / 3);
        let mut pieces = Vec::with_capacity(xml.len() / 64);
        let mut inside = 0usize;
        // Names are a few bytes: compared in a loop, not by a call to memcmp per name.
        let is = |names: &[&str], name: &[u8]| {
            names
                .iter()
                .any(|n| n.len() == name.len() && n.bytes().zip(name).all(|(a, &b)| a == b))
        };
        let mut scanner = Scanner { xml, at: 0 };
        while let Some(token) = scanner.next()? {
            let mut separator = |s: &str| {
                pieces.push(Piece {
                    at: text.len(),
                    raw: 0..0,
                    changed: false,
                });
                text.push_str(s);
            };
            match token {
                Token::Text(range) if inside > 0 => {
                    let escaped = std::str::from_utf8(&xml[range.clone()])
                        .map_err(|_| "XML text that is not UTF-8".to_owned())?;
                    let unescaped = quick_xml::escape::unescape(escaped)
                        .map_err(|e| format!("XML at byte {}: {e}", range.start))?;
                    pieces.push(Piece {
                        at: text.len(),
                        // Within the part, which is under 4 GiB.
                        raw: range.start as u32..range.end as u32,
                        changed: false,
                    });
                    text.push_str(&unescaped);
                }
                Token::Start(name) if is(grammar.holds_text, name) => inside += 1,
                Token::End(name) => {
                    if is(grammar.holds_text, name) {
                        inside = inside.saturating_sub(1);
                    }
                    if is(grammar.paragraphs, name) {
                        separator("\n");
                    }
                }
                Token::Empty(name) => {
                    if is(grammar.tabs, name) {
                        separator("\t");
                    } else if is(grammar.breaks, name) || is(grammar.paragraphs, name) {
                        separator("\n");
                    } else if is(grammar.spaces, name) {
                        separator(" ");
                    }
                }
                _ => {}
            }
        }
        let len = text.len();
        Ok((Self { pieces, len }, text))
    }

    /// Where piece `i` ends in the joined text.
    fn end(&self, i: usize) -> usize {
        self.pieces.get(i + 1).map_or(self.len, |p| p.at)
    }

    /// Moves the pieces' bounds as `found` (replacements in the joined text as it is now)
    /// changes the text: a replacement goes to the piece where its span began (or, when that
    /// is a separator, to the next piece the XML holds, else the one before), and the rest of
    /// the span is taken out of the pieces it covered.
    pub(super) fn replace(&mut self, found: &Replacements) {
        let mut spans = found.pieces().peekable();
        let mut delta = 0isize;
        // Replacements that began in a separator: the separator's index, where the new text
        // starts, its length.
        let mut homeless = Vec::new();
        for i in 0..self.pieces.len() {
            let (start, end) = (self.pieces[i].at, self.end(i));
            while let Some((span, new)) = spans.next_if(|(span, _)| span.end <= start) {
                delta += new.len() as isize - span.len() as isize;
            }
            let moved = |at: usize| at.saturating_add_signed(delta);
            let new_start = match spans.peek() {
                // The piece begins inside a span: after that span's new text.
                Some((span, new)) if span.start < start => moved(span.start) + new.len(),
                _ => moved(start),
            };
            if let Some((span, new)) = spans.peek()
                && span.start < end
                && span.end > start
            {
                if !self.pieces[i].is_raw() && span.start >= start {
                    homeless.push((i, moved(span.start), new.len()));
                }
                self.pieces[i].changed = true;
            }
            self.pieces[i].at = new_start;
        }
        for (span, new) in spans {
            delta += new.len() as isize - span.len() as isize;
        }
        self.len = self.len.saturating_add_signed(delta);
        for (i, at, len) in homeless {
            if let Some(j) = (i + 1..self.pieces.len()).find(|&j| self.pieces[j].is_raw()) {
                for piece in &mut self.pieces[i + 1..=j] {
                    piece.at = piece.at.min(at);
                }
                self.pieces[j].changed = true;
            } else if let Some(j) = (0..i).rev().find(|&j| self.pieces[j].is_raw()) {
                for piece in &mut self.pieces[j + 1..=i] {
                    piece.at = piece.at.max(at + len);
                }
                self.pieces[j].changed = true;
            }
        }
    }

    /// Whether any piece the XML holds changed.
    pub(super) fn changed(&self) -> bool {
        self.pieces.iter().any(|p| p.changed && p.is_raw())
    }

    /// Writes `xml` with the changed pieces' text from `text` (the joined text after the
    /// changes) into `out`, piece by piece: a large part is never copied whole first.
    pub(super) fn write_to(&self, xml: &[u8], text: &str, out: &mut impl Write) -> io::Result<()> {
        let mut at = 0;
        for (i, piece) in self.pieces.iter().enumerate() {
            if !piece.changed || !piece.is_raw() {
                continue;
            }
            out.write_all(&xml[at..piece.raw.start as usize])?;
            let new = &text[piece.at..self.end(i)];
            out.write_all(quick_xml::escape::partial_escape(new).as_bytes())?;
            at = piece.raw.end as usize;
        }
        out.write_all(&xml[at..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces every `pattern` in `text` with `with`, laying the replacements onto the pieces.
    fn replace_all(pieces: &mut Pieces, text: &mut String, pattern: &str, with: &str) {
        let spans: Vec<Range<usize>> = text
            .match_indices(pattern)
            .map(|(i, m)| i..i + m.len())
            .collect();
        let found = Replacements::new(spans, |_, out| out.push_str(with));
        pieces.replace(&found);
        let mut new = String::new();
        found.write_into(text, &mut new);
        *text = new;
        assert_eq!(pieces.len, text.len());
    }

    fn write(pieces: &Pieces, xml: &[u8], text: &str) -> Option<String> {
        let mut out = Vec::new();
        pieces.write_to(xml, text, &mut out).unwrap();
        pieces.changed().then(|| String::from_utf8(out).unwrap())
    }

    fn written(xml: &[u8], grammar: &Grammar, pattern: &str, with: &str) -> String {
        let (mut pieces, mut text) = Pieces::read(xml, grammar).unwrap();
        replace_all(&mut pieces, &mut text, pattern, with);
        write(&pieces, xml, &text).expect("changed")
    }

    #[test]
    fn a_value_split_over_runs_is_found_and_rewritten_in_its_runs() {
        let xml = br#"<w:document><w:body><w:p><w:r><w:t xml:space="preserve">Card 4111 1111 </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>1111 1111</w:t></w:r><w:r><w:t xml:space="preserve"> ok &amp; done</w:t></w:r></w:p><w:p><w:r><w:t>next</w:t></w:r></w:p></w:body></w:document>"#;
        let (_, text) = Pieces::read(xml, &WORD).unwrap();
        assert_eq!(text, "Card 4111 1111 1111 1111 ok & done\nnext\n");
        assert_eq!(
            written(xml, &WORD, "4111 1111 1111 1111", "XXXX"),
            r#"<w:document><w:body><w:p><w:r><w:t xml:space="preserve">Card XXXX</w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t></w:t></w:r><w:r><w:t xml:space="preserve"> ok &amp; done</w:t></w:r></w:p><w:p><w:r><w:t>next</w:t></w:r></w:p></w:body></w:document>"#
        );
    }

    #[test]
    fn several_rules_one_after_the_other_move_the_bounds_along() {
        let xml = b"<x><p><t>a1</t><t>b22</t></p><p><t>c333</t></p></x>";
        let (mut pieces, mut text) = Pieces::read(xml, &WORD).unwrap();
        replace_all(&mut pieces, &mut text, "1b", "#");
        replace_all(&mut pieces, &mut text, "333", "");
        replace_all(&mut pieces, &mut text, "a", "AAA");
        assert_eq!(text, "AAA#22\nc\n");
        let out = write(&pieces, xml, &text).unwrap();
        assert_eq!(out, "<x><p><t>AAA#</t><t>22</t></p><p><t>c</t></p></x>");
    }

    #[test]
    fn paragraphs_are_apart_and_markup_outside_text_is_not_text() {
        let xml = br#"<office:text><text:p>123<text:s/>45<text:span>6789</text:span></text:p><text:p>x&lt;y</text:p><draw:frame><svg:desc>123-45-6789</svg:desc></draw:frame></office:text>"#;
        let (_, text) = Pieces::read(xml, &ODF).unwrap();
        assert_eq!(text, "123 456789\nx<y\n");
        let out = written(xml, &ODF, "x<y", "a&b");
        assert!(out.contains("<text:p>a&amp;b</text:p>"), "{out}");
        assert!(out.contains("<svg:desc>123-45-6789</svg:desc>"), "{out}");
    }

    #[test]
    fn a_span_starting_at_a_separator_goes_into_the_next_piece_or_the_one_before() {
        let xml = b"<x><p><t>ab</t></p><p><t>cd</t></p></x>";
        assert_eq!(
            written(xml, &WORD, "\ncd", "#"),
            "<x><p><t>ab</t></p><p><t>#</t></p></x>"
        );
        // The last separator has no piece after it.
        assert_eq!(
            written(xml, &WORD, "d\n", "#"),
            "<x><p><t>ab</t></p><p><t>c#</t></p></x>"
        );
        assert_eq!(
            written(b"<x><p><t>ab</t></p><p/></x>", &WORD, "\n\n", "#"),
            "<x><p><t>ab#</t></p><p/></x>"
        );
    }

    /// The scanner's tokens are quick-xml's events, over markup of every kind and random
    /// mixtures of its pieces.
    #[test]
    fn the_scanner_reads_tags_as_quick_xml_does() {
        use quick_xml::events::Event;
        fn theirs(xml: &[u8]) -> Option<Vec<String>> {
            let mut reader = quick_xml::Reader::from_reader(xml);
            reader.config_mut().check_end_names = false;
            let mut out = Vec::new();
            let mut text = String::new();
            loop {
                let before = reader.buffer_position() as usize;
                let event = reader.read_event().ok()?;
                if let Event::Text(_) | Event::GeneralRef(_) = event {
                    let after = reader.buffer_position() as usize;
                    text.push_str(std::str::from_utf8(&xml[before..after]).ok()?);
                    continue;
                }
                if !text.is_empty() {
                    out.push(format!("text {}", std::mem::take(&mut text)));
                }
                let name = |n: quick_xml::name::LocalName<'_>| n.into_inner().to_owned();
                out.push(match event {
                    Event::Start(e) => format!("start {}", name(e.local_name())),
                    Event::End(e) => format!("end {}", name(e.local_name())),
                    Event::Empty(e) => format!("empty {}", name(e.local_name())),
                    Event::Eof => break,
                    _ => "other".to_owned(),
                });
            }
            Some(out)
        }
        fn ours(xml: &[u8]) -> Option<Vec<String>> {
            let mut scanner = Scanner { xml, at: 0 };
            let mut out: Vec<String> = Vec::new();
            while let Some(token) = scanner.next().ok()? {
                let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
                match token {
                    Token::Text(r) => match out.last_mut() {
                        // Text around markup quick-xml skips (comments) stays apart in both.
                        Some(last) if last.starts_with("text ") => last.push_str(&s(&xml[r])),
                        _ => out.push(format!("text {}", s(&xml[r]))),
                    },
                    Token::Start(n) => out.push(format!("start {}", s(n))),
                    Token::End(n) => out.push(format!("end {}", s(n))),
                    Token::Empty(n) => out.push(format!("empty {}", s(n))),
                    Token::Other => out.push("other".to_owned()),
                }
            }
            Some(out)
        }
        let samples: [&[u8]; 6] = [
            br#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="x"><w:body><w:p w:rsidR="00A1"><w:r><w:t xml:space="preserve"> a &amp; b </w:t></w:r><w:tab/><w:br w:type="page" /></w:p></w:body></w:document>"#,
            br#"<a title="x > y" other='say "hi"'>t<!-- c > d --><![CDATA[<raw>]]>u</a>"#,
            br#"<!DOCTYPE html [<!ENTITY e "v">]><p>&#65;&lt;</p>"#,
            b"<!DOCTYPE p><p/><q\n/><r\tattr=\"1\"></r>",
            b"text before<x:y:z>ns</x:y:z>",
            b"<unterminated attr=\"1",
        ];
        let pieces: [&[u8]; 12] = [
            b"<p>",
            b"</p>",
            b"<t a=\">\">",
            b"<e/>",
            b"text",
            b"&amp;",
            b"<!--x-->",
            b"<![CDATA[y]]>",
            b"<?pi z?>",
            b"<n:m>",
            b"</n:m>",
            b" ",
        ];
        let mut state = 0x2545_f491_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as usize
        };
        let mut cases: Vec<Vec<u8>> = samples.iter().map(|s| s.to_vec()).collect();
        for _ in 0..2000 {
            let mut xml = Vec::new();
            for _ in 0..next() % 10 {
                xml.extend_from_slice(pieces[next() % pieces.len()]);
            }
            cases.push(xml);
        }
        let mut compared = 0;
        for xml in &cases {
            let Some(expected) = theirs(xml) else {
                continue;
            };
            assert_eq!(
                ours(xml),
                Some(expected),
                "{}",
                String::from_utf8_lossy(xml)
            );
            compared += 1;
        }
        assert!(compared > 1000, "{compared} cases compared");
        assert!(
            ours(samples[5]).is_none(),
            "an unterminated tag is an error"
        );
    }

    #[test]
    fn nothing_changed_writes_nothing() {
        let xml = b"<x><p><t>ab</t></p></x>";
        let (pieces, text) = Pieces::read(xml, &WORD).unwrap();
        assert!(write(&pieces, xml, &text).is_none());
    }
}
