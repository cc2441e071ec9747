//! Transforms applied to a detected span. `mask` keeps the shape of the value (separators and
//! length stay; all but the last `keep_last` letters and digits become the mask character);
//! `redact` replaces the span with a fixed text.

use std::ops::Range;

/// Masks `value`: every ASCII letter or digit but the last `keep_last` becomes `mask`;
/// separators and other characters stay where they are.
pub fn mask(value: &str, keep_last: usize, mask: char) -> String {
    let total = value.chars().filter(char::is_ascii_alphanumeric).count();
    let hide = total.saturating_sub(keep_last);
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                seen += 1;
                if seen <= hide { mask } else { c }
            } else {
                c
            }
        })
        .collect()
}

/// The new text for every span of a text, worked out before any byte of the text is
/// written, so that the spans and the markup around them can be moved first
/// ([`Replacements::shift`]) and the text written once into a new buffer.
#[derive(Debug)]
pub struct Replacements {
    /// Each span (in order, not overlapping) and where its new text ends in `new`.
    spans: Vec<(Range<usize>, usize)>,
    new: String,
}

impl Replacements {
    /// `f` writes the new text for each span; it gets the span's range, so it can look at the
    /// text around it.
    pub fn new(spans: Vec<Range<usize>>, mut f: impl FnMut(Range<usize>, &mut String)) -> Self {
        let mut new = String::new();
        let spans = spans
            .into_iter()
            .map(|span| {
                f(span.clone(), &mut new);
                (span, new.len())
            })
            .collect();
        Replacements { spans, new }
    }

    /// How many spans are replaced.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The new text of each span, in order.
    pub fn pieces(&self) -> impl Iterator<Item = (&Range<usize>, &str)> {
        let mut from = 0;
        self.spans.iter().map(move |(span, end)| {
            let piece = &self.new[from..*end];
            from = *end;
            (span, piece)
        })
    }

    /// Moves `ranges` of the text (in order, none overlapping a span) to where they are once
    /// the replacements are written.
    pub fn shift(&self, ranges: &mut [Range<usize>]) {
        let mut pieces = self.pieces().peekable();
        let mut delta = 0isize;
        for range in ranges {
            while let Some((span, piece)) = pieces.next_if(|(span, _)| span.start < range.start) {
                delta += piece.len() as isize - span.len() as isize;
            }
            *range =
                range.start.saturating_add_signed(delta)..range.end.saturating_add_signed(delta);
        }
    }

    /// Writes `text` with the replacements into `out` (cleared first).
    pub fn write_into(&self, text: &str, out: &mut String) {
        out.clear();
        out.reserve(text.len() + self.new.len());
        let mut at = 0;
        for (span, piece) in self.pieces() {
            out.push_str(&text[at..span.start]);
            out.push_str(piece);
            at = span.end;
        }
        out.push_str(&text[at..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::detectors::Detector;

    /// Every span of `text` replaced with what `f` writes for it, into a new string.
    fn replace_spans(
        text: &str,
        spans: &[Range<usize>],
        f: impl FnMut(Range<usize>, &mut String),
    ) -> String {
        let mut out = String::new();
        Replacements::new(spans.to_vec(), f).write_into(text, &mut out);
        out
    }

    #[test]
    fn mask_keeps_shape_and_last_digits() {
        assert_eq!(mask("4111 1111 1111 1111", 4, '*'), "**** **** **** 1111");
        assert_eq!(mask("123-45-6789", 4, 'X'), "XXX-XX-6789");
        assert_eq!(
            mask("12", 4, '*'),
            "12",
            "shorter than keep_last: nothing hidden"
        );
    }

    /// Ranges between the spans still hold the same text once the spans are replaced, with
    /// shorter, longer and equal replacements.
    #[test]
    fn shifted_ranges_hold_the_same_text() {
        let text = "<b>4111</b> and <i>123</i> then <p>55</p>";
        let spans = vec![3..7, 19..22, 35..37];
        let markup = vec![0..3, 7..11, 16..19, 22..26, 32..35, 37..41];
        for new in ["", "#", "###", "a longer text"] {
            let found = Replacements::new(spans.clone(), |_, out| out.push_str(new));
            let mut out = String::new();
            found.write_into(text, &mut out);
            let mut moved = markup.clone();
            found.shift(&mut moved);
            let before: Vec<&str> = markup.iter().map(|r| &text[r.clone()]).collect();
            let after: Vec<&str> = moved.iter().map(|r| &out[r.clone()]).collect();
            assert_eq!(before, after, "replaced with {new:?}: {out}");
        }
    }

    /// Spans around multi-byte characters are replaced whole, with shorter and longer texts.
    #[test]
    fn replacements_keep_the_text_around_them() {
        let text = "k\u{e4}rte 4111 1111 1111 1111, \u{fc}ber 123-45-6789 und \u{20ac}5";
        let spans = vec![7..26, 34..45, 50..54];
        assert_eq!(
            replace_spans(text, &spans, |_, out| out.push_str("\u{2588}\u{2588}")),
            "k\u{e4}rte \u{2588}\u{2588}, \u{fc}ber \u{2588}\u{2588} und \u{2588}\u{2588}"
        );
        assert_eq!(
            replace_spans(text, &spans, |_, out| out.push_str("[x]")),
            "k\u{e4}rte [x], \u{fc}ber [x] und [x]"
        );
    }

    #[test]
    fn spans_are_replaced_in_place() {
        let text = "card 4111 1111 1111 1111 and ssn 123-45-6789.";
        let cards = Detector::CardNumber.find(text);
        let masked = replace_spans(text, &cards, |r, out| out.push_str(&mask(&text[r], 4, '*')));
        assert_eq!(masked, "card **** **** **** 1111 and ssn 123-45-6789.");
        let ssns = Detector::UsSsn.find(&masked);
        let redacted = replace_spans(&masked, &ssns, |_, out| out.push_str("[redacted]"));
        assert_eq!(redacted, "card **** **** **** 1111 and ssn [redacted].");
    }
}
