//! Header fields the rules act on: a message's subject and `header:NAME` fields (edits for
//! the message itself, splices inside a nested message), and the file name parameters an
//! attachment rename rewrites.

use mail_parser::MessagePart;

use super::Walker;
use super::encoded_words::{encode_header_text, encode_parameter, first_word_charset};
use super::splice::{Splices, eol_of};
use crate::engine::rules::ruleset::Target;
use crate::engine::verdict::HeaderEdit;

impl Walker<'_> {
    /// Subject and `header:NAME` targets of a message's own header. For the message itself
    /// they become header edits; in a nested message they are spliced into its bytes.
    pub(super) fn header_targets(
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
    pub(super) fn rename(
        &mut self,
        part: &MessagePart<'_>,
        new_name: &str,
        eol: &str,
        splices: &mut Splices,
    ) {
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
