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

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::Event;

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

/// Document properties: OOXML docProps/core.xml, OpenDocument meta.xml.
pub(super) const PROPERTIES: Grammar = Grammar {
    holds_text: &[
        "title",
        "subject",
        "creator",
        "keywords",
        "keyword",
        "description",
        "lastModifiedBy",
        "category",
        "initial-creator",
    ],
    paragraphs: &[
        "title",
        "subject",
        "creator",
        "keywords",
        "keyword",
        "description",
        "lastModifiedBy",
        "category",
        "initial-creator",
    ],
    tabs: &[],
    breaks: &[],
    spaces: &[],
};

/// One piece of a part's text: borrowed from the XML while it needs no unescaping and has not
/// changed.
#[derive(Debug)]
struct Piece<'x> {
    text: Cow<'x, str>,
    /// Where its escaped text is in the XML; `None` for a separator, which the XML does not
    /// hold and which can therefore take no new text.
    raw: Option<Range<usize>>,
    changed: bool,
}

/// A part's text, in pieces.
#[derive(Debug)]
pub(super) struct Pieces<'x> {
    pieces: Vec<Piece<'x>>,
}

/// Why a part's XML could not be read.
pub(super) type XmlError = String;

impl<'x> Pieces<'x> {
    /// Reads the text of `xml` as `grammar` says where it is.
    pub(super) fn read(xml: &'x [u8], grammar: &Grammar) -> Result<Self, XmlError> {
        let mut reader = quick_xml::Reader::from_reader(xml);
        reader.config_mut().check_end_names = false;
        let mut pieces = Vec::new();
        let mut inside = 0usize;
        let mut run: Option<Range<usize>> = None;
        loop {
            let before = reader.buffer_position() as usize;
            let event = reader
                .read_event()
                .map_err(|e| format!("XML at byte {}: {e}", reader.error_position()))?;
            let after = reader.buffer_position() as usize;
            if inside > 0 && matches!(event, Event::Text(_) | Event::GeneralRef(_)) {
                run = Some(run.map_or(before..after, |r| r.start..after));
                continue;
            }
            if let Some(range) = run.take() {
                let escaped = std::str::from_utf8(&xml[range.clone()])
                    .map_err(|_| "XML text that is not UTF-8".to_owned())?;
                let text = quick_xml::escape::unescape(escaped)
                    .map_err(|e| format!("XML at byte {}: {e}", range.start))?;
                pieces.push(Piece {
                    text,
                    raw: Some(range),
                    changed: false,
                });
            }
            let separator = |s: &'static str| Piece {
                text: Cow::Borrowed(s),
                raw: None,
                changed: false,
            };
            match event {
                Event::Start(e) if grammar.holds_text.contains(&e.local_name().into_inner()) => {
                    inside += 1;
                }
                Event::End(e) => {
                    let name = e.local_name().into_inner();
                    if grammar.holds_text.contains(&name) {
                        inside = inside.saturating_sub(1);
                    }
                    if grammar.paragraphs.contains(&name) {
                        pieces.push(separator("\n"));
                    }
                }
                Event::Empty(e) => {
                    let name = e.local_name().into_inner();
                    if grammar.tabs.contains(&name) {
                        pieces.push(separator("\t"));
                    } else if grammar.breaks.contains(&name) || grammar.paragraphs.contains(&name) {
                        pieces.push(separator("\n"));
                    } else if grammar.spaces.contains(&name) {
                        pieces.push(separator(" "));
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        Ok(Self { pieces })
    }

    /// The text, pieces joined.
    pub(super) fn text(&self) -> String {
        let mut text = String::with_capacity(self.pieces.iter().map(|p| p.text.len()).sum());
        for piece in &self.pieces {
            text.push_str(&piece.text);
        }
        text
    }

    /// True when no piece holds anything but white space.
    pub(super) fn is_blank(&self) -> bool {
        self.pieces
            .iter()
            .all(|p| p.raw.is_none() || p.text.trim().is_empty())
    }

    /// Lays `found` (replacements in the joined text, as it is now) onto the pieces.
    pub(super) fn replace(&mut self, found: &Replacements) {
        let mut spans = found.pieces().peekable();
        let mut offset = 0usize;
        // A replacement whose span begins in a separator waits for the next piece that the XML
        // holds.
        let mut waiting = String::new();
        for piece in &mut self.pieces {
            let len = piece.text.len();
            let end = offset + len;
            let mut out = String::new();
            let mut at = offset;
            let mut touched = false;
            if piece.raw.is_some() && !waiting.is_empty() {
                out.push_str(&waiting);
                waiting.clear();
                touched = true;
            }
            while at < end {
                // Spans that end before `at` are done.
                while spans.next_if(|(span, _)| span.end <= at).is_some() {}
                let Some((span, new)) = spans.peek() else {
                    break;
                };
                if span.start >= end {
                    break;
                }
                if span.start > at {
                    out.push_str(&piece.text[at - offset..span.start - offset]);
                    at = span.start;
                }
                if at == span.start {
                    if piece.raw.is_some() {
                        out.push_str(new);
                    } else {
                        waiting.push_str(new);
                    }
                }
                touched = true;
                at = span.end.min(end);
            }
            if touched {
                out.push_str(&piece.text[at - offset..]);
                piece.text = Cow::Owned(out);
                piece.changed = true;
            }
            offset = end;
        }
        if !waiting.is_empty()
            && let Some(last) = self.pieces.iter_mut().rev().find(|p| p.raw.is_some())
        {
            last.text.to_mut().push_str(&waiting);
            last.changed = true;
        }
    }

    /// `xml` with the changed pieces written in; `None` when none changed.
    pub(super) fn write(&self, xml: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(xml.len());
        let mut at = 0;
        for piece in self.pieces.iter().filter(|p| p.changed) {
            let Some(raw) = &piece.raw else { continue };
            out.extend_from_slice(&xml[at..raw.start]);
            out.extend_from_slice(
                quick_xml::escape::partial_escape(piece.text.as_ref()).as_bytes(),
            );
            at = raw.end;
        }
        if at == 0 {
            return None;
        }
        out.extend_from_slice(&xml[at..]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace_all(pieces: &mut Pieces, pattern: &str, with: &str) {
        let text = pieces.text();
        let spans: Vec<Range<usize>> = text
            .match_indices(pattern)
            .map(|(i, m)| i..i + m.len())
            .collect();
        pieces.replace(&Replacements::new(spans, |_, out| out.push_str(with)));
        assert_eq!(
            pieces.text(),
            text.replace(pattern, with),
            "the pieces hold the replaced text"
        );
    }

    #[test]
    fn a_value_split_over_runs_is_found_and_rewritten_in_its_runs() {
        let xml = br#"<w:document><w:body><w:p><w:r><w:t xml:space="preserve">Card 4111 1111 </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>1111 1111</w:t></w:r><w:r><w:t xml:space="preserve"> ok &amp; done</w:t></w:r></w:p><w:p><w:r><w:t>next</w:t></w:r></w:p></w:body></w:document>"#;
        let mut pieces = Pieces::read(xml, &WORD).unwrap();
        assert_eq!(pieces.text(), "Card 4111 1111 1111 1111 ok & done\nnext\n");
        replace_all(&mut pieces, "4111 1111 1111 1111", "XXXX");
        let out = String::from_utf8(pieces.write(xml).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"<w:document><w:body><w:p><w:r><w:t xml:space="preserve">Card XXXX</w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t></w:t></w:r><w:r><w:t xml:space="preserve"> ok &amp; done</w:t></w:r></w:p><w:p><w:r><w:t>next</w:t></w:r></w:p></w:body></w:document>"#
        );
    }

    #[test]
    fn paragraphs_are_apart_and_markup_outside_text_is_not_text() {
        let xml = br#"<office:text><text:p>123<text:s/>45<text:span>6789</text:span></text:p><text:p>x&lt;y</text:p><draw:frame><svg:desc>123-45-6789</svg:desc></draw:frame></office:text>"#;
        let mut pieces = Pieces::read(xml, &ODF).unwrap();
        assert_eq!(pieces.text(), "123 456789\nx<y\n");
        replace_all(&mut pieces, "x<y", "a&b");
        let out = String::from_utf8(pieces.write(xml).unwrap()).unwrap();
        assert!(out.contains("<text:p>a&amp;b</text:p>"), "{out}");
        assert!(out.contains("<svg:desc>123-45-6789</svg:desc>"), "{out}");
    }

    #[test]
    fn a_span_starting_at_a_separator_goes_into_the_next_piece() {
        let xml = b"<x><p><t>ab</t></p><p><t>cd</t></p></x>";
        let mut pieces = Pieces::read(xml, &WORD).unwrap();
        assert_eq!(pieces.text(), "ab\ncd\n");
        replace_all(&mut pieces, "\ncd", "#");
        let out = String::from_utf8(pieces.write(xml).unwrap()).unwrap();
        assert_eq!(out, "<x><p><t>ab</t></p><p><t>#</t></p></x>");
    }

    #[test]
    fn nothing_changed_writes_nothing() {
        let xml = b"<x><p><t>ab</t></p></x>";
        let pieces = Pieces::read(xml, &WORD).unwrap();
        assert!(pieces.write(xml).is_none());
    }
}
