//! HTML bodies: where the markup is, so that rules transform only the text a reader sees.

use std::ops::Range;

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
