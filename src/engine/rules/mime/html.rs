//! HTML bodies: where the markup is, so that rules transform only the text a reader sees.

use std::ops::Range;

/// Byte ranges of HTML markup (tags, comments, script and style content): rules transform
/// only the text between them.
pub fn html_markup(html: &str) -> Vec<Range<usize>> {
    let bytes = html.as_bytes();
    let mut ranges = Vec::new();
    let mut i = 0;
    while let Some(off) = memchr::memchr(b'<', &bytes[i..]) {
        let start = i + off;
        let end = if html[start..].starts_with("<!--") {
            memchr::memmem::find(&bytes[start..], b"-->").map_or(bytes.len(), |e| start + e + 3)
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
        // Compared in place, without a lowercased copy of the tag or of the rest of the document
        // (a copy of the rest per script tag made the cost grow with their square).
        let tag = html[start + 1..end].trim_start().as_bytes();
        let end = ["script", "style"]
            .iter()
            .find(|t| starts_with_ignore_case(tag, t.as_bytes()))
            .and_then(|t| {
                let close = format!("</{t}");
                let rest = &bytes[end..];
                memchr::memchr_iter(b'<', rest)
                    .find(|&c| starts_with_ignore_case(&rest[c..], close.as_bytes()))
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

/// `text` begins with `prefix`, ASCII letters compared without case.
fn starts_with_ignore_case(text: &[u8], prefix: &[u8]) -> bool {
    text.len() >= prefix.len() && text[..prefix.len()].eq_ignore_ascii_case(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_comments_and_script_content_are_markup() {
        let html = r#"<p a=">">x</p><!-- c --><SCRIPT>1<2</Script>y<style x>z</STYLE"#;
        let marked: Vec<&str> = html_markup(html).into_iter().map(|r| &html[r]).collect();
        assert_eq!(
            marked,
            [
                r#"<p a=">">"#,
                "</p>",
                "<!-- c -->",
                "<SCRIPT>1<2",
                "</Script>",
                "<style x>z",
                "</STYLE"
            ]
        );
        // No end of a script: only its tag, and what follows is read as usual.
        assert_eq!(html_markup("a<script>b<c"), [1..9, 10..12]);
    }
}
