//! The content stage over real messages: the MIME corpus in tests/data/mime (see its
//! SOURCES.txt for provenance and licences) and golden cases for each transform and encoding.

use std::path::PathBuf;

use mail_parser::{MessageParser, MimeHeaders, PartType};
use postern::config::Config;
use postern::engine::rules::mime::html_markup;
use postern::engine::rules::protect::Protector;
use postern::engine::rules::unprotect::unprotect_message;
use postern::engine::rules::{Rewrite, Ruleset, rewrite};
use postern::engine::{Edits, HeaderEdit};
use regex::Regex;

fn rulesets(toml: &str) -> Vec<Ruleset> {
    Config::parse(toml, "test.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .policy
        .content
        .rulesets
}

fn run(toml: &str, raw: &[u8]) -> Rewrite {
    let sets = rulesets(toml);
    let refs: Vec<&Ruleset> = sets.iter().collect();
    rewrite(raw, &refs).unwrap_or_else(|e| panic!("{e}"))
}

fn applied(r: &Rewrite, raw: &[u8]) -> Vec<u8> {
    Edits {
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
    .apply_to(raw)
}

fn corpus() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir("tests/data/mime").unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if matches!(f.extension().and_then(|e| e.to_str()), Some("eml" | "msg")) {
                files.push(f);
            }
        }
    }
    files.sort();
    assert!(files.len() > 100, "the corpus is in place");
    files
}

const NEVER: &str = r#"
[[ruleset]]
name = "never"
[[ruleset.rule]]
name = "nothing"
targets = ["subject", "header:from", "body", "attachment", "filename"]
regex = "QQ-NEVER-PRESENT-QQ"
action = "redact"
"#;

/// Four or more digits become '#', keeping the length: easy to check in the decoded text.
const DIGITS: &str = r##"
[[ruleset]]
name = "digits"
[[ruleset.rule]]
name = "runs"
targets = ["subject", "body", "attachment", "filename"]
regex = "[0-9]{4,}"
action = "mask"
keep_last = 0
mask_char = "#"
"##;

#[test]
fn a_message_no_rule_touches_is_left_as_it_came() {
    for file in corpus() {
        let raw = std::fs::read(&file).unwrap();
        let r = run(NEVER, &raw);
        assert!(
            r.headers.is_empty() && r.body.is_none() && r.hits.is_empty(),
            "{}: untouched message was rewritten",
            file.display()
        );
        assert_eq!(applied(&r, &raw), raw, "{}", file.display());
    }
}

fn mask_digits(text: &str, skip: &[std::ops::Range<usize>]) -> String {
    let re = Regex::new("[0-9]{4,}").unwrap();
    let mut out = String::new();
    let mut at = 0;
    for m in re.find_iter(text) {
        if skip.iter().any(|k| k.start < m.end() && m.start() < k.end) {
            continue;
        }
        out.push_str(&text[at..m.start()]);
        out.push_str(&"#".repeat(m.len()));
        at = m.end();
    }
    out.push_str(&text[at..]);
    out
}

fn text_of(part: &mail_parser::MessagePart<'_>) -> Option<String> {
    match &part.body {
        PartType::Text(t) | PartType::Html(t) => Some(t.to_string()),
        _ => None,
    }
}

#[test]
fn rewritten_corpus_messages_reparse_and_change_only_the_matches() {
    let (mut changed, mut parts_checked) = (0, 0);
    for file in corpus() {
        let raw = std::fs::read(&file).unwrap();
        let sets = rulesets(DIGITS);
        let refs: Vec<&Ruleset> = sets.iter().collect();
        let r = match rewrite(&raw, &refs) {
            Ok(r) => r,
            Err(e) => {
                // Only deliberately broken messages may be refused, and with a reason.
                assert!(
                    file.to_string_lossy().contains("malformed"),
                    "{}: {e}",
                    file.display()
                );
                continue;
            }
        };
        if r.hits.is_empty() {
            assert!(r.body.is_none() && r.headers.is_empty());
            continue;
        }
        changed += 1;
        let new_raw = applied(&r, &raw);
        let old = MessageParser::new().parse(&raw[..]).unwrap();
        let new = MessageParser::new()
            .parse(&new_raw[..])
            .unwrap_or_else(|| panic!("{}: result does not parse", file.display()));
        assert_eq!(
            old.parts.len(),
            new.parts.len(),
            "{}: structure changed",
            file.display()
        );
        for (i, (o, n)) in old.parts.iter().zip(&new.parts).enumerate() {
            if matches!(o.body, PartType::Multipart(_) | PartType::Message(_)) {
                continue;
            }
            let o_raw = &raw[o.offset_body as usize..o.offset_end as usize];
            let n_raw = &new_raw[n.offset_body as usize..n.offset_end as usize];
            match (text_of(o), text_of(n)) {
                (Some(ot), Some(nt)) if ot != nt => {
                    let skip = if o.is_content_type("text", "html") {
                        html_markup(&ot)
                    } else {
                        Vec::new()
                    };
                    assert_eq!(
                        nt,
                        mask_digits(&ot, &skip),
                        "{} part {i}: decoded text differs outside the matches",
                        file.display()
                    );
                    parts_checked += 1;
                }
                _ if i > 0 && o.attachment_name() == n.attachment_name() => {
                    assert_eq!(
                        o_raw,
                        n_raw,
                        "{} part {i}: an untransformed part changed",
                        file.display()
                    );
                }
                _ => {}
            }
        }
    }
    eprintln!("{changed} messages rewritten, {parts_checked} transformed parts compared");
    assert!(
        changed >= 20,
        "only {changed} corpus messages had digit runs"
    );
    assert!(parts_checked >= 20, "only {parts_checked} parts compared");
}

fn message(parts: &[&str]) -> Vec<u8> {
    parts.concat().replace('\n', "\r\n").into_bytes()
}

fn body_text(raw: &[u8], part: usize) -> String {
    let m = MessageParser::new().parse(raw).unwrap();
    text_of(&m.parts[part]).unwrap()
}

const CARDS_SSNS: &str = r#"
[[ruleset]]
name = "pci"
[[ruleset.rule]]
name = "cards"
targets = ["subject", "body", "attachment", "filename"]
detector = "card_number"
action = "mask"
[[ruleset.rule]]
name = "ssn"
targets = ["body", "attachment"]
detector = "us_ssn"
action = "redact"
text = "[ssn]"
"#;

#[test]
fn quoted_printable_soft_break_inside_a_match() {
    let raw = message(&[
        "Subject: qp\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n",
        "Content-Transfer-Encoding: quoted-printable\n\n",
        "Gr=C3=BC=C3=9Fe, SSN 123-4=\n5-6789 and a long line ",
        &"x".repeat(60),
        "=\n tail\n",
    ]);
    let r = run(CARDS_SSNS, &raw);
    let new = applied(&r, &raw);
    let text = body_text(&new, 0);
    assert_eq!(
        text,
        format!(
            "Grüße, SSN [ssn] and a long line {} tail\r\n",
            "x".repeat(60)
        )
    );
    let body = String::from_utf8(r.body.unwrap()).unwrap();
    assert!(body.contains("=C3=BC"), "still quoted-printable: {body}");
    assert!(body.split("\r\n").all(|l| l.len() <= 76), "{body}");
    assert_eq!(r.hits[0].target, "body");
}

#[test]
fn base64_csv_attachment_and_filename_with_a_card_number() {
    use base64::Engine as _;
    let csv = "name,card,ssn\r\nJane,4111 1111 1111 1111,123-45-6789\r\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(csv);
    let untouched = "--b\nContent-Type: text/plain\n\nplain note 2025\n";
    let raw = message(&[
        "Subject: report\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n",
        untouched,
        "--b\nContent-Type: text/csv; name=\"cards 4111111111111111.csv\"\n",
        "Content-Disposition: attachment; filename=\"cards 4111111111111111.csv\"\n",
        "Content-Transfer-Encoding: base64\n\n",
        &b64,
        "\n--b--\n",
    ]);
    let r = run(CARDS_SSNS, &raw);
    let new = applied(&r, &raw);
    let m = MessageParser::new().parse(&new[..]).unwrap();
    assert_eq!(m.parts.len(), 3);
    assert_eq!(
        m.parts[2].attachment_name(),
        Some("cards ************1111.csv")
    );
    let decoded = m.parts[2].contents();
    assert_eq!(
        std::str::from_utf8(decoded).unwrap(),
        "name,card,ssn\r\nJane,**** **** **** 1111,[ssn]\r\n"
    );
    let new_s = String::from_utf8_lossy(&new);
    assert!(
        new_s.contains(&untouched.replace('\n', "\r\n")),
        "untouched part kept"
    );
    let targets: Vec<&str> = r.hits.iter().map(|h| h.target.as_str()).collect();
    assert_eq!(targets, ["filename", "attachment", "attachment"]);
}

/// UTF-16 parts (with a byte order mark under charset=utf-16, or little-endian without one)
/// are masked and written back in UTF-16 in their own byte order, mark kept.
#[test]
fn utf16_parts_are_written_back_in_utf16() {
    use base64::Engine as _;
    let text = "Karte 4111 1111 1111 1111 \u{2013} grüß\r\n";
    let utf16 = |big_endian: bool, bom: bool| -> Vec<u8> {
        let units = bom.then_some(0xfeff).into_iter().chain(text.encode_utf16());
        units
            .flat_map(|u| {
                if big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    };
    for (charset, big_endian, bom) in [
        ("utf-16", true, true),
        ("utf-16", false, true),
        ("utf-16le", false, false),
        ("UTF-16BE", true, false),
    ] {
        let encoded = base64::engine::general_purpose::STANDARD.encode(utf16(big_endian, bom));
        let raw = message(&[
            &format!("Subject: u\nContent-Type: text/plain; charset={charset}\n"),
            "Content-Transfer-Encoding: base64\n\n",
            &encoded,
            "\n",
        ]);
        let r = run(CARDS_SSNS, &raw);
        let body = r
            .body
            .clone()
            .unwrap_or_else(|| panic!("{charset}: not masked"));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(String::from_utf8(body).unwrap().replace("\r\n", ""))
            .unwrap();
        let expected = text.replace("4111 1111 1111 1111", "**** **** **** 1111");
        let units: Vec<u16> = decoded
            .chunks(2)
            .map(|p| {
                if big_endian {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    u16::from_le_bytes([p[0], p[1]])
                }
            })
            .collect();
        let (mark, rest) = units.split_at(usize::from(bom));
        assert_eq!(
            mark,
            if bom { &[0xfeff][..] } else { &[] },
            "{charset}: mark kept"
        );
        assert_eq!(String::from_utf16(rest).unwrap(), expected, "{charset}");
    }
}

#[test]
fn utf8_and_latin1_subjects_are_decoded_and_reencoded() {
    for subject in [
        "=?UTF-8?B?S2FydGU6IDQxMTEgMTExMSAxMTExIDExMTEg4oCTIGdyw7zDnw==?=",
        "=?ISO-8859-1?Q?Karte:_4111_1111_1111_1111_=96_gr=FC=DF?=",
    ] {
        let raw = message(&[&format!("Subject: {subject}\nFrom: a@example.org\n\nhi\n")]);
        let r = run(CARDS_SSNS, &raw);
        assert!(r.body.is_none());
        let [HeaderEdit::Change { name, index, value }] = &r.headers[..] else {
            panic!("{:?}", r.headers)
        };
        assert_eq!((name.as_str(), *index), ("Subject", 1));
        let value = value.as_ref().unwrap();
        assert!(!value.contains(['\r', '\n']));
        // Written back in the charset it came in, under the same label.
        let label = &subject[..subject[2..].find('?').unwrap() + 3];
        assert!(value.starts_with(&format!("{label}B?")), "{value}");
        assert!(value.split(' ').all(|w| w.len() <= 75), "{value}");
        let new = applied(&r, &raw);
        let m = MessageParser::new().parse(&new[..]).unwrap();
        let decoded = m.subject().unwrap();
        assert!(
            decoded.starts_with("Karte: **** **** **** 1111 ") && decoded.ends_with(" grüß"),
            "{subject} -> {value} -> {decoded}"
        );
    }
    // New text the subject's charset cannot write goes back in UTF-8: a character outside
    // Latin-1, or any 8-bit character under a US-ASCII label.
    for (subject, redacted, decoded) in [
        (
            "=?ISO-8859-1?Q?Karte_4111_1111_1111_1111_gr=FC=DF?=",
            "\u{2713}",
            "Karte \u{2713} grüß",
        ),
        (
            "=?us-ascii?Q?Karte_4111_1111_1111_1111?=",
            "\u{a7}",
            "Karte \u{a7}",
        ),
    ] {
        let raw = message(&[&format!("Subject: {subject}\n\nhi\n")]);
        let r = run(
            &format!(
                "[[ruleset]]\nname = \"pci\"\n[[ruleset.rule]]\nname = \"cards\"\n\
                 targets = [\"subject\"]\ndetector = \"card_number\"\naction = \"redact\"\n\
                 text = \"{redacted}\"\n"
            ),
            &raw,
        );
        let [HeaderEdit::Change { value, .. }] = &r.headers[..] else {
            panic!("{:?}", r.headers)
        };
        let value = value.as_ref().unwrap();
        assert!(value.starts_with("=?UTF-8?B?"), "{subject}: {value}");
        let new = applied(&r, &raw);
        let m = MessageParser::new().parse(&new[..]).unwrap();
        assert_eq!(m.subject(), Some(decoded), "{subject}");
    }
}

#[test]
fn html_markup_is_never_transformed() {
    let raw = message(&[
        "Subject: h\nContent-Type: text/html; charset=utf-8\n\n",
        "<a href=\"https://pay.example/4111111111111111\">card 4111111111111111</a>\n",
    ]);
    let r = run(CARDS_SSNS, &raw);
    assert_eq!(
        String::from_utf8(r.body.unwrap()).unwrap(),
        "<a href=\"https://pay.example/4111111111111111\">card ************1111</a>\r\n"
    );
}

#[test]
fn nested_message_is_rewritten_inside_its_encoding() {
    use base64::Engine as _;
    let inner = "Subject: fwd 4111 1111 1111 1111\r\n\r\nssn 123-45-6789\r\n";
    let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
    for (encoding, body) in [("7bit", inner.replace("\r\n", "\n")), ("base64", b64)] {
        let raw = message(&[
            "Subject: outer\nContent-Type: multipart/mixed; boundary=b\n\n--b\n",
            "Content-Type: message/rfc822\nContent-Transfer-Encoding: ",
            encoding,
            "\n\n",
            &body,
            "\n--b--\n",
        ]);
        let r = run(CARDS_SSNS, &raw);
        let new = applied(&r, &raw);
        let m = MessageParser::new().parse(&new[..]).unwrap();
        let nested = m.parts[1].message().expect("still a message");
        assert_eq!(
            nested.subject(),
            Some("fwd **** **** **** 1111"),
            "{encoding}"
        );
        assert_eq!(nested.body_text(0).as_deref(), Some("ssn [ssn]\r\n"));
        assert_eq!(m.subject(), Some("outer"));
    }
}

#[test]
fn strip_and_reject_actions() {
    let raw = message(&[
        "Subject: s\nContent-Type: multipart/mixed; boundary=b\n\n--b\n\nhello\n",
        "--b\nContent-Type: application/octet-stream\n",
        "Content-Disposition: attachment; filename=\"run.exe\"\n",
        "Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n--b--\n",
    ]);
    let strip = r#"
[[ruleset]]
name = "attachments"
[[ruleset.rule]]
name = "executables"
targets = ["filename"]
regex = '(?i)\.(exe|scr|bat)$'
action = "strip_attachment"
"#;
    let r = run(strip, &raw);
    let new = String::from_utf8(applied(&r, &raw)).unwrap();
    assert!(!new.contains("run.exe") && !new.contains("TVqQ"), "{new}");
    assert!(new.contains("An attachment was removed"));
    assert!(new.contains("\r\nhello\r\n"));
    let reject = r#"
[[ruleset]]
name = "dlp"
[[ruleset.rule]]
name = "no ssn out"
targets = ["body"]
detector = "us_ssn"
action = "reject"
reply = "550 5.7.1 Social security numbers may not be mailed"
"#;
    let raw = message(&["Subject: s\n\nssn 123-45-6789\n"]);
    let r = run(reject, &raw);
    let (reply, ruleset, rule) = r.reject.expect("rejected");
    assert_eq!(
        reply.to_string(),
        "550 5.7.1 Social security numbers may not be mailed"
    );
    assert_eq!((ruleset.as_str(), rule.as_str()), ("dlp", "no ssn out"));
}

#[test]
fn tokenize_is_deterministic_and_protect_reverses_through_a_whole_message() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("protect.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let toml = format!(
        r#"
[[ruleset]]
name = "vault"
[[ruleset.rule]]
name = "cards"
targets = ["subject", "body", "attachment", "filename"]
detector = "card_number"
action = "protect"
key_file = "{key}"
[[ruleset.rule]]
name = "ssn"
targets = ["body"]
detector = "us_ssn"
action = "tokenize"
key_file = "{key}"
"#,
        key = key.display()
    );
    let raw = message(&[
        "Subject: =?UTF-8?Q?Zahlung_4111_1111_1111_1111?=\n",
        "Content-Type: multipart/mixed; boundary=b\n\n--b\n",
        "Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n",
        "F=FCr 5500-0000-0000-0004, ssn 123-45-6789 and again 123-45-6789\n",
        "--b\nContent-Type: text/csv\nContent-Disposition: attachment; filename=\"4111111111111111.csv\"\n\n",
        "card\n378282246310005\n--b--\n",
    ]);
    let r = run(&toml, &raw);
    let protected = applied(&r, &raw);
    let text = String::from_utf8_lossy(&protected);
    for clear in ["4111", "5500-0000", "378282246310005", "123-45-6789"] {
        assert!(!text.contains(clear), "{clear} leaked: {text}");
    }
    let body = body_text(&protected, 1);
    let tokens: Vec<&str> = Regex::new("tok_[0-9a-f]{16}")
        .unwrap()
        .find_iter(&body)
        .map(|m| m.as_str())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!(tokens[0], tokens[1], "same value, same token");

    let key_bytes = [0xabu8; 32];
    let protector = Protector::new(&key_bytes, "", "[p:", "]");
    let (restored, count) = unprotect_message(&protected, &protector).unwrap();
    assert_eq!(count, 4, "subject, body, filename, attachment");
    let before = MessageParser::new().parse(&raw[..]).unwrap();
    let after = MessageParser::new().parse(&restored[..]).unwrap();
    assert_eq!(after.subject(), before.subject());
    assert_eq!(
        after.parts[2].attachment_name(),
        before.parts[2].attachment_name()
    );
    assert_eq!(after.parts[2].contents(), before.parts[2].contents());
    assert!(body_text(&restored, 1).starts_with("Für 5500-0000-0000-0004, ssn tok_"));
}

#[test]
fn config_errors_name_the_rule_and_say_what_to_do() {
    let err = |toml: &str| Config::parse(toml, "t.toml").unwrap_err().to_string();
    let e = err(
        "[[ruleset]]\nname = \"a\"\n[[ruleset.rule]]\nname = \"r\"\ntargets = [\"body\"]\nregex = \"(\"\naction = \"mask\"\n",
    );
    assert!(
        e.starts_with("t.toml:6: key `ruleset[0].rule[0].regex`"),
        "{e}"
    );
    let e = err(
        "[[ruleset]]\nname = \"a\"\n[[ruleset.rule]]\nname = \"r\"\ntargets = [\"bdy\"]\ndetector = \"iban\"\naction = \"mask\"\n",
    );
    assert!(e.contains("\"bdy\" is not a target"), "{e}");
    let e = err(
        "[[ruleset]]\nname = \"a\"\n[[ruleset.rule]]\nname = \"r\"\ntargets = [\"body\"]\ndetector = \"iban\"\naction = \"protect\"\nkey_env = \"POSTERN_TEST_UNSET_KEY\"\n",
    );
    assert!(e.contains("POSTERN_TEST_UNSET_KEY is not set"), "{e}");
    let e = err(
        "[[ruleset]]\nname = \"a\"\n[[ruleset.rule]]\nname = \"r\"\ntargets = [\"body\"]\naction = \"mask\"\n",
    );
    assert!(e.contains("give one"), "{e}");
}

/// scan_timeout stops the work itself: a rewrite whose deadline has passed gives up at once
/// (the walk and the rule loops look at the clock), for a message with a header, a multipart
/// one and a headerless one alike.
#[test]
fn a_passed_deadline_stops_the_rewrite() {
    use postern::engine::rules::{ContentError, rewrite_within};
    let sets = rulesets(
        "[[ruleset]]\nname = \"r\"\n[[ruleset.rule]]\nname = \"digits\"\ntargets = [\"subject\", \"body\"]\n\
         regex = \"([0-9]+)\"\naction = \"mask\"\n",
    );
    let refs: Vec<&Ruleset> = sets.iter().collect();
    let past = std::time::Instant::now();
    for raw in [
        &b"Subject: 123\r\n\r\nbody 456\r\n"[..],
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n1\r\n--b\r\n\r\n2\r\n--b--\r\n",
        b"no header here 789\r\n",
    ] {
        assert!(
            matches!(
                rewrite_within(raw, &refs, &Default::default(), Some(past)),
                Err(ContentError::Deadline)
            ),
            "{}",
            String::from_utf8_lossy(raw)
        );
        // Without a deadline the same message is rewritten.
        assert!(
            !rewrite_within(raw, &refs, &Default::default(), None)
                .unwrap()
                .hits
                .is_empty()
        );
    }
}
