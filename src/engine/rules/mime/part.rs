//! What a part is to the rules: its content type, whether an attachment holds text they can
//! read, and the notice that takes a stripped attachment's place.

use mail_parser::{MessagePart, MimeHeaders};

pub(super) fn content_type(part: &MessagePart<'_>) -> String {
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
pub(super) fn text_like(content_type: &str, filename: Option<&str>) -> bool {
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

/// The part that takes a stripped attachment's place: it names no file (the name itself may
/// be what the rule was about).
pub(super) fn removal_notice(eol: &str) -> Vec<u8> {
    format!(
        "Content-Type: text/plain; charset=us-ascii{eol}Content-Disposition: inline{eol}\
         Content-Transfer-Encoding: 7bit{eol}{eol}\
         An attachment was removed from this message by the sender's mail policy.{eol}"
    )
    .into_bytes()
}
