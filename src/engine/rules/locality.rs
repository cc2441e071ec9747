//! Which patterns match within one line: every match non-empty, no line feed in it, and no
//! assertion that looks further than the characters beside it. The matches of such a pattern
//! in a text are exactly its matches in each of the text's stretches cut just after a line
//! feed, so that the rules can run over a long text a stretch at a time (see
//! `mime::apply`), each stretch still in the core's cache while every rule reads and rewrites
//! it.
//!
//! Why the stretches give the same matches: a match holds no line feed, so it lies within one
//! stretch, and the search that finds it starts within that stretch or before it, where no
//! match reaches past the line feed ending the stretch before. An assertion at a stretch's
//! first position looks at the line feed before it in the whole text and at nothing in the
//! stretch; a line feed is no word character and ends a line, so word boundaries and line
//! anchors (`(?m)^`, `(?m)$`, also in CRLF mode) answer alike. No match ends at a stretch's
//! end (it would hold the line feed before it). The text anchors (`\A`, `\z`, `^` and `$`
//! without `m`) answer differently inside a stretch, so a pattern with one is not local.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Whether every match of `pattern` (as `regex::Regex::new` reads it) lies within one line,
/// as the module says.
pub fn within_lines(pattern: &str) -> bool {
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return false;
    };
    hir.properties().minimum_len().is_some_and(|n| n > 0) && no_line_feed(&hir)
}

fn no_line_feed(hir: &Hir) -> bool {
    match hir.kind() {
        HirKind::Empty => true,
        HirKind::Literal(literal) => !literal.0.contains(&b'\n'),
        HirKind::Class(Class::Unicode(class)) => class
            .ranges()
            .iter()
            .all(|r| !(r.start()..=r.end()).contains(&'\n')),
        HirKind::Class(Class::Bytes(class)) => class
            .ranges()
            .iter()
            .all(|r| !(r.start()..=r.end()).contains(&b'\n')),
        HirKind::Look(look) => matches!(
            look,
            Look::StartLF
                | Look::EndLF
                | Look::StartCRLF
                | Look::EndCRLF
                | Look::WordAscii
                | Look::WordAsciiNegate
                | Look::WordUnicode
                | Look::WordUnicodeNegate
                | Look::WordStartAscii
                | Look::WordEndAscii
                | Look::WordStartUnicode
                | Look::WordEndUnicode
                | Look::WordStartHalfAscii
                | Look::WordEndHalfAscii
                | Look::WordStartHalfUnicode
                | Look::WordEndHalfUnicode
        ),
        HirKind::Repetition(repetition) => no_line_feed(&repetition.sub),
        HirKind::Capture(capture) => no_line_feed(&capture.sub),
        HirKind::Concat(all) | HirKind::Alternation(all) => all.iter().all(no_line_feed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_feeds_and_text_anchors_make_a_pattern_not_local() {
        for local in [
            "[0-9]{4} [0-9]{4}",
            r"\bconfidential\b",
            r"(?m)^account [0-9]+$",
            r"(?mR)^PIN \d{4}$",
            r"password: \S+",
            "a.b",
            r"(?i)secret project [a-z]+",
            r"[^ \n]+@example\.org",
            r"\b\d(?:[ -]?\d){12,18}\b",
        ] {
            assert!(within_lines(local), "{local} is local");
        }
        for not_local in [
            "password: [^ ]+",
            r"a\sb",
            "(?s)a.b",
            r"\Aaccount",
            "^account",
            "account$",
            r"a\nb",
            "[[:space:]]",
            "x*",
            r"\b",
            "(",
        ] {
            assert!(!within_lines(not_local), "{not_local} is not local");
        }
    }
}
