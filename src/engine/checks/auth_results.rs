//! Writing and reading authentication result fields safely: values that came from the client
//! (HELO, the MAIL FROM address) are written so that they can never end a result and start
//! another (RFC 8601 §2.2 `pvalue`, RFC 7208 §9.1 `key-value-pair`), and the authserv-id of an
//! `Authentication-Results` field is read as RFC 8601 §2.2 defines it, so that a forged field
//! naming this host is recognised however it is spelled.

/// RFC 2045 `tspecials`: never inside a token.
const TSPECIALS: &[u8] = b"()<>@,;:\\\"/[]?=";

/// RFC 5322 `atext` besides letters and digits.
const ATEXT: &[u8] = b"!#$%&'*+-/=?^_`{|}~";

/// A client-given value for a result property (`smtp.helo=`, `smtp.mailfrom=`, `helo=`): as
/// it is when it is a token or `local-part@domain` of plain atoms, else a quoted-string with
/// `\` and `"` escaped and anything but printable ASCII made `?`; at most `max` characters
/// of the value are kept.
pub fn property_value(value: &str, max: usize) -> String {
    let value: String = value.chars().take(max).collect();
    if is_token(&value) || is_addr_spec(&value) {
        return value;
    }
    quoted(&value)
}

/// `"…"` with `\` and `"` escaped and every character but printable ASCII made `?`.
pub fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// Text safe inside a comment: no parenthesis or backslash (which would end the comment or
/// escape), printable ASCII only.
pub fn comment_text(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| match c {
            '(' | ')' | '\\' => '?',
            ' '..='~' => c,
            _ => '?',
        })
        .collect()
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !TSPECIALS.contains(&b))
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|atom| {
            !atom.is_empty()
                && atom
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || ATEXT.contains(&b))
        })
}

fn is_domain(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn is_addr_spec(s: &str) -> bool {
    s.rsplit_once('@').is_some_and(|(local, domain)| {
        (local.is_empty() || is_dot_atom(local)) && is_domain(domain)
    })
}

/// The authserv-id of an `Authentication-Results` value (RFC 8601 §2.2): after any comments
/// and whitespace, a token or a quoted-string (unquoted here). `None` when there is none.
pub fn authserv_id(value: &str) -> Option<String> {
    let rest = skip_cfws(value);
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut id = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(id),
                '\\' => id.push(chars.next()?),
                _ => id.push(c),
            }
        }
        return None;
    }
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == ';' || c == '(')
        .unwrap_or(rest.len());
    let id = &rest[..end];
    (!id.is_empty()).then(|| id.to_owned())
}

/// `s` after leading whitespace and comments (nested, with quoted-pairs).
fn skip_cfws(s: &str) -> &str {
    let mut rest = s;
    loop {
        rest = rest.trim_start();
        if !rest.starts_with('(') {
            return rest;
        }
        let mut depth = 0usize;
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            if escaped {
                escaped = false;
                continue;
            }
            match c {
                '\\' => escaped = true,
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i + 1);
                        break;
                    }
                }
                _ => {}
            }
        }
        match end {
            Some(e) => rest = &rest[e..],
            // An unclosed comment: nothing follows it.
            None => return "",
        }
    }
}

/// True when the value of an `Authentication-Results` field names `hostname` as its
/// authserv-id (case-insensitive, as domain names compare).
pub fn names_host(value: &str, hostname: &str) -> bool {
    authserv_id(value).is_some_and(|id| id.eq_ignore_ascii_case(hostname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authserv_id_skips_comments_and_whitespace() {
        assert_eq!(
            authserv_id(" mx.example.org; spf=pass").unwrap(),
            "mx.example.org"
        );
        assert_eq!(
            authserv_id("mx.example.org 1; dkim=pass").unwrap(),
            "mx.example.org"
        );
        assert_eq!(
            authserv_id("(c) mx.example.org; dkim=pass").unwrap(),
            "mx.example.org"
        );
        assert_eq!(
            authserv_id(" (a (nested) \\) comment)\r\n\t(two) mx.example.org;").unwrap(),
            "mx.example.org"
        );
        assert_eq!(
            authserv_id("\"mx.example.org\"; x=y").unwrap(),
            "mx.example.org"
        );
        assert_eq!(authserv_id("mx.example.org(c);").unwrap(), "mx.example.org");
        assert_eq!(authserv_id(""), None);
        assert_eq!(authserv_id("(unclosed mx.example.org;"), None);
        assert!(names_host(
            "(c) MX.Example.ORG; dkim=pass",
            "mx.example.org"
        ));
        assert!(!names_host("other.example; dkim=pass", "mx.example.org"));
    }

    #[test]
    fn client_values_cannot_start_a_new_result() {
        assert_eq!(property_value("client.example", 255), "client.example");
        assert_eq!(property_value("user@example.org", 255), "user@example.org");
        assert_eq!(property_value("@example.org", 255), "@example.org");
        assert_eq!(
            property_value("x;dkim=pass;header.d=paypal.com", 255),
            "\"x;dkim=pass;header.d=paypal.com\""
        );
        assert_eq!(property_value("a b\"c\\", 255), "\"a b\\\"c\\\\\"");
        assert_eq!(property_value("[192.0.2.1]", 255), "\"[192.0.2.1]\"");
        assert_eq!(property_value("caf\u{e9}", 255), "\"caf?\"");
        assert_eq!(comment_text("x) spf=pass (y", 100), "x? spf=pass ?y");
    }
}
