//! The engine's edits as milter actions, and header and body bytes made safe for them: no
//! bare CR or LF, no value that would start a field of its own.

use std::ffi::CString;

use indymilter::ContextActions;

use crate::engine::{Edits, EnvelopeEdits, HeaderEdit};

/// Sends the engine's edits to the MTA. A header value's folds (CRLF and white space) go as
/// the MTA hands them over itself, LF and the white space; no other CR or LF is passed. With
/// SMFIP_HDR_LEADSPC negotiated the MTA takes values verbatim, so they get their leading space
/// here (`Name: value`, not `Name:value`).
pub(super) async fn apply_edits(
    actions: &impl ContextActions,
    edits: &Edits,
    leading_space: bool,
) -> Result<(), indymilter::ActionError> {
    let value = |v: &str| {
        let v = milter_value(v);
        if leading_space { format!(" {v}") } else { v }
    };
    for edit in &edits.headers {
        match edit {
            HeaderEdit::Add { name, value: v } => {
                actions.add_header(name.as_str(), value(v)).await?
            }
            HeaderEdit::Insert {
                index,
                name,
                value: v,
            } => {
                let index = i32::try_from(*index).unwrap_or(i32::MAX);
                actions
                    .insert_header(index, name.as_str(), value(v))
                    .await?
            }
            HeaderEdit::Change {
                name,
                index,
                value: v,
            } => {
                let index = i32::try_from(*index).unwrap_or(i32::MAX);
                actions
                    .change_header(name.as_str(), index, v.as_deref().map(value))
                    .await?
            }
        }
    }
    if let Some(body) = &edits.body {
        actions.replace_body(&crlf_only(body)).await?;
    }
    Ok(())
}

/// Sends the envelope changes: the address transformation's new sender, each rewritten
/// recipient removed and its new address added, and the recipients Postern delivered itself
/// removed.
pub(super) async fn apply_envelope(
    actions: &impl ContextActions,
    envelope: &EnvelopeEdits,
) -> Result<(), indymilter::ActionError> {
    let bracketed = |a: &str| format!("<{}>", one_line(a.trim_matches(['<', '>'])));
    if let Some(sender) = &envelope.sender {
        actions
            .change_sender(bracketed(sender), None::<CString>)
            .await?;
    }
    for (from, to) in &envelope.recipients {
        actions.delete_recipient(bracketed(from)).await?;
        actions.add_recipient(bracketed(to)).await?;
    }
    for gone in &envelope.removed {
        actions.delete_recipient(bracketed(gone)).await?;
    }
    Ok(())
}

/// `body` with every bare CR or LF made CRLF, so that no bare line end (which an MTA or
/// the next hop could read as the end of the message) reaches the MTA through a milter edit
/// either; borrowed when there is none. One pass.
fn crlf_only(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| match body[i] {
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || body[i - 1] != b'\r',
        _ => false,
    };
    if !memchr::memchr2_iter(b'\r', b'\n', body).any(bare) {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// A header value as a milter hands it to the MTA: each fold (CRLF or LF, then a space or tab)
/// as LF and that white space; any other CR or LF a space, so that no edit starts a field.
fn milter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' if matches!(chars.peek(), Some(' ' | '\t')) => out.push('\n'),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Rebuilds one header field as it was on the wire: `Name: value` with CRLF line ends (the MTA
/// hands folded values over with bare LF).
/// One header field as the engine reads it, from the name and value the MTA hands over
/// (Postfix folds with a bare LF): always exactly one field, ending with CRLF, its folds CRLF
/// followed by a space or tab, no bare CR or LF.
pub fn header_line(name: &[u8], value: &[u8], leading_space: bool) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.len() + value.len() + 4);
    // A name is printable and has no colon; anything else would make another field.
    line.extend(name.iter().map(|&b| match b {
        b':' => b'-',
        33..=126 => b,
        _ => b'-',
    }));
    line.push(b':');
    if !leading_space {
        line.push(b' ');
    }
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            // CRLF or a bare LF: a fold, so CRLF and at least one space or tab after it.
            b'\r' if value.get(i + 1) == Some(&b'\n') => {}
            b'\n' => {
                line.extend_from_slice(b"\r\n");
                if !matches!(value.get(i + 1), Some(b' ' | b'\t')) {
                    line.push(b' ');
                }
            }
            // A bare CR is no line end.
            b'\r' => line.push(b' '),
            b => line.push(b),
        }
        i += 1;
    }
    line.extend_from_slice(b"\r\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_body_has_no_bare_line_ends() {
        assert!(matches!(
            crlf_only(b"a\r\nb\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            crlf_only(b"a\rb\nc\r\n\n\r").as_ref(),
            b"a\r\nb\r\nc\r\n\r\n\r\n"
        );
        assert_eq!(crlf_only(b"\n").as_ref(), b"\r\n");
    }

    #[test]
    fn header_lines_are_rebuilt_with_crlf() {
        assert_eq!(header_line(b"Subject", b" hi", true), b"Subject: hi\r\n");
        assert_eq!(header_line(b"Subject", b"hi", false), b"Subject: hi\r\n");
        assert_eq!(
            header_line(b"To", b" a,\n\tb", true),
            b"To: a,\r\n\tb\r\n".to_vec()
        );
        assert_eq!(
            header_line(b"To", b" a,\r\n b", true),
            b"To: a,\r\n b\r\n".to_vec()
        );
    }

    #[test]
    fn header_values_keep_their_folds_and_nothing_else() {
        assert_eq!(milter_value("a\r\n b\r\n\tc"), "a\n b\n\tc");
        assert_eq!(milter_value("a\r\nX-Injected: 1"), "a X-Injected: 1");
        assert_eq!(milter_value("a\rb\nc"), "a b c");
        assert_eq!(milter_value("a\n b"), "a\n b");
    }
}
