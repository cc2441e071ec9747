//! What each fuzz target asserts, shared by the fuzz binaries (`fuzz_targets/`) and by the
//! ordinary test that replays the corpus and every crash found (`tests/content/fuzz_corpus.rs`), so
//! that what a fuzzer once found stays fixed.

use postern::proxy::command::Command;
use postern::proxy::data_reader::DataReader;

/// Any command line parses to some command without panicking, and an address it returns
/// holds no control character, space or angle bracket.
pub fn command(line: &[u8]) {
    match Command::parse(line) {
        Command::Mail { sender: a, .. } | Command::Rcpt { recipient: a, .. } => {
            assert!(!a.chars().any(|c| c.is_control() || c == ' ' || c == '<'));
        }
        _ => {}
    }
}

fn read(input: &[u8], cut: usize) -> (Vec<u8>, Option<usize>) {
    let mut reader = DataReader::default();
    let mut out = Vec::new();
    let mut offset = 0;
    for piece in input.chunks(cut.max(1)) {
        if let Some(n) = reader.feed(piece, &mut out) {
            return (out, Some(offset + n));
        }
        offset += piece.len();
    }
    (out, None)
}

/// The DATA reader on any input, cut into pieces anywhere (the first byte says where): the
/// same message and end however the input is cut, no bare CR or LF in the output, and the end
/// only right after CRLF.CRLF.
pub fn data_reader(data: &[u8]) {
    let Some((&cut, input)) = data.split_first() else {
        return;
    };
    let whole = read(input, input.len());
    assert_eq!(whole, read(input, cut as usize));
    let (out, end) = whole;
    assert_crlf_only(&out);
    if let Some(end) = end {
        assert!(end >= 3 && &input[end - 3..end] == b".\r\n");
        assert!(end == 3 || (end >= 5 && &input[end - 5..end - 3] == b"\r\n"));
    }
}

fn assert_crlf_only(out: &[u8]) {
    for (i, &b) in out.iter().enumerate() {
        match b {
            b'\n' => assert!(i > 0 && out[i - 1] == b'\r', "bare LF in output"),
            b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR in output"),
            _ => {}
        }
    }
}

/// A header as the milter door gets it from the MTA (name, value and the leading-space flag
/// from the first bytes): always exactly one field line, folds only as CRLF + space or tab.
pub fn milter_header(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (name, value) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let line = postern::milter::header_line(name, value, flags & 1 == 1);
    assert!(line.ends_with(b"\r\n"));
    assert_crlf_only(&line);
    let body = &line[..line.len() - 2];
    for fold in body.windows(3).filter(|w| w.starts_with(b"\r\n")) {
        assert!(matches!(fold[2], b' ' | b'\t'), "a line that is not a fold");
    }
    let colon = line.iter().position(|&b| b == b':').expect("a colon");
    assert_eq!(colon, name.len(), "the name has no colon of its own");
}

/// The content stage on any message with a masking rule: no panic; a message no rule changes
/// gets no edit (it leaves byte-identical); and the edits applied re-parse.
pub fn rewrite(data: &[u8]) {
    use postern::engine::Edits;
    use postern::engine::rules::{Ruleset, rewrite};
    use std::sync::OnceLock;
    static RULES: OnceLock<Vec<Ruleset>> = OnceLock::new();
    let sets = RULES.get_or_init(|| {
        postern::config::Config::parse(
            "[[ruleset]]\nname = \"fuzz\"\n[[ruleset.rule]]\nname = \"digits\"\n\
             targets = [\"subject\", \"body\", \"attachment\", \"filename\"]\n\
             regex = \"([0-9]{4,})\"\naction = \"mask\"\n",
            "fuzz.toml",
        )
        .expect("the fuzz ruleset compiles")
        .policy
        .content
        .rulesets
    });
    let refs: Vec<&Ruleset> = sets.iter().collect();
    let Ok(r) = rewrite(data, &refs) else {
        return;
    };
    if r.hits.is_empty() {
        assert!(
            r.body.is_none() && r.headers.is_empty(),
            "edits without a hit"
        );
        return;
    }
    let edited = Edits {
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
    .apply_to(data);
    let parser = mail_parser::MessageParser::default();
    if parser.parse(data).is_some() {
        assert!(
            parser.parse(&edited).is_some(),
            "the edited message no longer parses"
        );
    }
}

/// AUTH responses: no panic on any text; a PLAIN response that decodes gives back exactly the
/// user and password it was made of.
pub fn auth(data: &[u8]) {
    use postern::proxy::users::{decode_line, decode_plain};
    let text = String::from_utf8_lossy(data);
    let _ = decode_line(&text);
    if let Some((user, password)) = decode_plain(&text) {
        assert!(!user.contains('\0') && !password.contains('\0'));
        use base64::Engine as _;
        let again =
            base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        assert_eq!(decode_plain(&again), Some((user, password)));
    }
}
