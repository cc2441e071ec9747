//! Transforms applied to a detected span. `mask` keeps the shape of the value (separators and
//! length stay; all but the last `keep_last` letters and digits become the mask character);
//! `redact` replaces the span with a fixed text.

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

/// Replaces every span of `text` (byte ranges, in order, not overlapping) with what `f`
/// writes for it; `f` gets the span's range, so it can look at the text around it.
pub fn replace_spans(
    text: &str,
    spans: &[std::ops::Range<usize>],
    f: impl FnMut(std::ops::Range<usize>, &mut String),
) -> String {
    let mut out = String::new();
    replace_spans_into(text, spans, &mut out, f);
    out
}

/// [`replace_spans`] writing into `out` (cleared first), so that a caller running several
/// rules over a large text can reuse one buffer instead of allocating one per rule.
pub fn replace_spans_into(
    text: &str,
    spans: &[std::ops::Range<usize>],
    out: &mut String,
    mut f: impl FnMut(std::ops::Range<usize>, &mut String),
) {
    out.clear();
    out.reserve(text.len() + 16 * spans.len());
    let mut at = 0;
    for span in spans {
        out.push_str(&text[at..span.start]);
        f(span.clone(), out);
        at = span.end;
    }
    out.push_str(&text[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules::detectors::Detector;

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
