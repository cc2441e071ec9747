//! The content stage over real documents and archives: Word, Excel and OpenDocument files made
//! by python-docx, openpyxl and odfpy, PDFs made by LibreOffice, ZIPs by Python and zip(1)
//! (integration/documents makes them all). What Postern writes back is read again by the same
//! libraries and by LibreOffice, independently of Postern's own reading.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders};
use postern::config::Config;
use postern::engine::Edits;
use postern::engine::rules::{ContentError, Rewrite, Ruleset, rewrite_within};

const SSN: &str = "078-05-1121";

/// The cases, made once per test binary under Cargo's scratch directory for tests.
fn cases() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        crate::support::install_deps();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("documents");
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(crate::support::script("documents"))
            .arg("make")
            .arg(&dir)
            .output()
            .expect("integration/documents runs");
        assert!(out.status.success(), "{}", crate::support::outcome(&out).1);
        dir
    })
}

fn case(name: &str) -> Vec<u8> {
    std::fs::read(cases().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A message with a short text body and `attachments` (name, declared type, bytes), base64.
fn message(attachments: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut m = String::from(
        "From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: papers\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"sep\"\r\n\r\n--sep\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n",
    );
    for (name, ctype, bytes) in attachments {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        m.push_str(&format!(
            "--sep\r\nContent-Type: {ctype}; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        for line in encoded.as_bytes().chunks(76) {
            m.push_str(std::str::from_utf8(line).unwrap());
            m.push_str("\r\n");
        }
    }
    m.push_str("--sep--\r\n");
    m.into_bytes()
}

const RULES: &str = r#"
[[ruleset]]
name = "pci"
[[ruleset.rule]]
name = "cards"
targets = ["body", "attachment"]
detector = "card_number"
action = "mask"
[[ruleset.rule]]
name = "ssn"
targets = ["attachment"]
detector = "us_ssn"
action = "redact"
text = "[ssn]"
[[ruleset.rule]]
name = "iban"
targets = ["attachment"]
detector = "iban"
action = "mask"
"#;

fn rulesets(
    toml: &str,
) -> (
    Vec<Ruleset>,
    postern::engine::rules::documents::DocumentLimits,
) {
    let content = Config::parse(toml, "test.toml")
        .unwrap_or_else(|e| panic!("{e}"))
        .policy
        .content
        .clone();
    (content.rulesets, content.documents)
}

fn scan(toml: &str, raw: &[u8]) -> Result<Rewrite, ContentError> {
    let (sets, limits) = rulesets(toml);
    let refs: Vec<&Ruleset> = sets.iter().collect();
    rewrite_within(raw, &refs, &limits, None)
}

/// The scan of `raw` fails with a limit reached, its message holding every one of `words`.
fn assert_limit(toml: &str, raw: &[u8], words: &[&str]) {
    match scan(toml, raw) {
        Err(ContentError::Document(e)) => {
            let e = e.to_string();
            assert!(words.iter().all(|w| e.contains(w)), "{words:?} in {e}");
        }
        other => panic!("a limit reached, not {other:?}"),
    }
}

fn applied(r: &Rewrite, raw: &[u8]) -> Vec<u8> {
    Edits {
        headers: r.headers.clone(),
        body: r.body.clone(),
    }
    .apply_to(raw)
}

/// The attachments of a message (name and decoded bytes), nested messages' included.
fn attachments(raw: &[u8]) -> Vec<(String, Vec<u8>)> {
    fn walk(message: &mail_parser::Message<'_>, found: &mut Vec<(String, Vec<u8>)>) {
        for part in &message.parts {
            if let mail_parser::PartType::Message(inner) = &part.body {
                walk(inner, found);
            } else if let Some(name) = part.attachment_name() {
                found.push((name.to_owned(), part.contents().to_vec()));
            }
        }
    }
    let message = MessageParser::new().parse(raw).expect("the message parses");
    let mut found = Vec::new();
    walk(&message, &mut found);
    found
}

/// What the independent readers make of a document: python-docx/openpyxl/odfpy, and
/// LibreOffice.
fn read_back(name: &str, bytes: &[u8]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let run = |how: &str| {
        let out = Command::new(crate::support::script("documents"))
            .arg(how)
            .arg(&path)
            .output()
            .expect("integration/documents runs");
        let (ok, text) = crate::support::outcome(&out);
        assert!(ok, "documents {how} {name}: {text}");
        text
    };
    (run("text"), run("office"))
}

/// The entries of a ZIP: name, and compressed bytes as stored.
fn raw_entries(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a readable ZIP");
    (0..archive.len())
        .map(|i| {
            let mut entry = archive.by_index_raw(i).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (entry.name().unwrap().into_owned(), data)
        })
        .collect()
}

#[test]
fn a_word_letter_is_masked_across_runs_in_its_body_table_header_and_title() {
    let letter = case("letter.docx");
    // Declared as anything: the type is read from the content.
    let raw = message(&[("letter.docx", "application/octet-stream", &letter)]);
    let rewrite = scan(RULES, &raw).unwrap();
    let targets: Vec<(&str, &str)> = rewrite
        .hits
        .iter()
        .map(|h| (h.rule.as_str(), h.target.as_str()))
        .collect();
    for expected in [
        ("cards", "attachment:letter.docx/word/document.xml"),
        ("ssn", "attachment:letter.docx/word/document.xml"),
        ("iban", "attachment:letter.docx/word/header1.xml"),
        ("cards", "attachment:letter.docx/docProps/core.xml"),
    ] {
        assert!(targets.contains(&expected), "{expected:?} in {targets:?}");
    }
    let out = applied(&rewrite, &raw);
    let (name, new) = attachments(&out).remove(0);
    assert_eq!(name, "letter.docx");
    let (python, office) = read_back("letter.docx", &new);
    for text in [&python, &office] {
        assert!(
            text.contains("Your card **** **** **** 1111 was charged."),
            "{text}"
        );
        assert!(!text.contains(SSN) && !text.contains("4111 1111"), "{text}");
    }
    assert!(
        python.contains("Statement for card **** **** **** 1111"),
        "{python}"
    );
    assert!(
        python.contains("[ssn]") && python.contains("Account ****"),
        "{python}"
    );
    // Only the parts that held the values changed; the bold run is still bold.
    let (before, after) = (raw_entries(&letter), raw_entries(&new));
    assert_eq!(
        before.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        after.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        "same entries, same order"
    );
    let mut changed: Vec<&str> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b.1 != a.1)
        .map(|(b, _)| b.0.as_str())
        .collect();
    changed.sort_unstable();
    assert_eq!(
        changed,
        ["docProps/core.xml", "word/document.xml", "word/header1.xml"]
    );
    let mut document = String::new();
    zip::ZipArchive::new(Cursor::new(&new))
        .unwrap()
        .by_name("word/document.xml")
        .unwrap()
        .read_to_string(&mut document)
        .unwrap();
    assert!(
        document.contains("<w:b/></w:rPr><w:t></w:t>"),
        "the bold run is kept, emptied"
    );
}

#[test]
fn a_spreadsheet_and_an_opendocument_text_are_masked() {
    let raw = message(&[
        (
            "cards.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            &case("cards.xlsx"),
        ),
        ("notes.odt", "application/octet-stream", &case("notes.odt")),
    ]);
    let out = applied(&scan(RULES, &raw).unwrap(), &raw);
    let found = attachments(&out);
    let (python, office) = read_back("cards.xlsx", &found[0].1);
    // LibreOffice writes the first sheet only as CSV.
    for text in [&python, &office] {
        assert!(text.contains("Jane Roe,**** **** **** 1111"), "{text}");
    }
    assert!(python.contains("John Doe,**** **** **** 0004"), "{python}");
    assert!(
        !python.contains("5500") && !python.contains("4111"),
        "{python}"
    );
    let (python, office) = read_back("notes.odt", &found[1].1);
    for text in [&python, &office] {
        assert!(text.contains("Card on file: **** **** **** 1111"), "{text}");
    }
}

#[test]
fn a_clean_document_arrives_byte_identical() {
    let raw = message(&[
        ("clean.docx", "application/msword", &case("clean.docx")),
        ("clean.pdf", "application/pdf", &case("clean.pdf")),
    ]);
    let rewrite = scan(RULES, &raw).unwrap();
    assert!(rewrite.hits.is_empty(), "{:?}", rewrite.hits);
    assert!(rewrite.body.is_none() && rewrite.reject.is_none());
    assert_eq!(applied(&rewrite, &raw), raw);
}

#[test]
fn a_pdf_that_would_need_a_change_takes_the_rules_unchangeable_action() {
    let raw = message(&[("statement.pdf", "application/pdf", &case("statement.pdf"))]);
    let rewrite = scan(RULES, &raw).unwrap();
    let (reply, ruleset, rule) = rewrite.reject.clone().expect("refused by default");
    assert_eq!((reply.code(), ruleset.as_str()), (550, "pci"));
    assert!(["cards", "ssn", "iban"].contains(&rule.as_str()), "{rule}");
    assert!(
        reply.text().contains("cannot be protected in place"),
        "{reply}"
    );

    // LibreOffice's PDF draws the card number's two runs apart, so the SSN and the IBAN are
    // what its text shows.
    let strip = RULES
        .replace(
            "[[ruleset.rule]]\nname = \"ssn\"",
            "unchangeable = \"strip_attachment\"\n[[ruleset.rule]]\nname = \"ssn\"",
        )
        .replace(
            "text = \"[ssn]\"",
            "text = \"[ssn]\"\nunchangeable = \"strip_attachment\"",
        )
        .replace(
            "detector = \"iban\"\naction = \"mask\"",
            "detector = \"iban\"\naction = \"mask\"\nunchangeable = \"strip_attachment\"",
        );
    let rewrite = scan(&strip, &raw).unwrap();
    assert!(rewrite.reject.is_none(), "{:?}", rewrite.reject);
    let out = String::from_utf8(applied(&rewrite, &raw)).unwrap();
    assert!(out.contains("An attachment was removed"), "{out}");
    assert!(!out.contains("statement.pdf"));
    let hit = &rewrite.hits[0];
    assert_eq!(
        (hit.action, hit.target.as_str()),
        ("strip_attachment", "attachment:statement.pdf")
    );
}

#[test]
fn a_csv_and_a_docx_in_a_zip_in_a_forwarded_message_are_rewritten_in_place() {
    let inner = message(&[("export.zip", "application/zip", &case("export.zip"))]);
    let raw = format!(
        "From: c@sender.example\r\nTo: d@rcpt.example\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n--outer\r\n\
         Content-Type: text/plain\r\n\r\nForwarded.\r\n--outer\r\n\
         Content-Type: message/rfc822\r\n\r\n{}\r\n--outer--\r\n",
        String::from_utf8(inner).unwrap()
    )
    .into_bytes();
    let rewrite = scan(RULES, &raw).unwrap();
    let out = applied(&rewrite, &raw);
    let (name, zip) = attachments(&out)
        .into_iter()
        .find(|(n, _)| n == "export.zip")
        .expect("the archive is still there");
    assert_eq!(name, "export.zip");
    let mut archive = zip::ZipArchive::new(Cursor::new(&zip)).unwrap();
    let mut csv = String::new();
    archive
        .by_name("export/export.csv")
        .unwrap()
        .read_to_string(&mut csv)
        .unwrap();
    assert_eq!(csv, "name,ssn\r\nJane Roe,[ssn]\r\n");
    let mut letter = Vec::new();
    archive
        .by_name("export/letter.docx")
        .unwrap()
        .read_to_end(&mut letter)
        .unwrap();
    let (python, _) = read_back("letter.docx", &letter);
    assert!(
        python.contains("Your card **** **** **** 1111 was charged."),
        "{python}"
    );
    assert!(
        rewrite
            .hits
            .iter()
            .any(|h| h.target == "attachment:export.zip/export/letter.docx/word/document.xml"),
        "{:?}",
        rewrite.hits
    );
}

/// A gzip file: the CSV inside redacted, the file compressed again under its name, which
/// gzip(1) reads back.
#[test]
fn a_gzip_file_is_read_and_written_back() {
    let raw = message(&[("export.csv.gz", "application/gzip", &case("export.csv.gz"))]);
    let rewrite = scan(RULES, &raw).unwrap();
    assert_eq!(rewrite.hits.len(), 1, "{:?}", rewrite.hits);
    assert_eq!(
        rewrite.hits[0].target,
        "attachment:export.csv.gz/export.csv"
    );
    let (_, gz) = attachments(&applied(&rewrite, &raw)).remove(0);
    let mut child = Command::new("gzip")
        .args(["-dc", "-N"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip runs");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &gz).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "name,ssn\r\nJane Roe,[ssn]\r\n"
    );
    let listed = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.gz");
        std::fs::write(&path, &gz).unwrap();
        let out = Command::new("gzip")
            .args(["-lN"])
            .arg(&path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(listed.contains("export.csv"), "the name is kept: {listed}");
}

#[test]
fn a_bomb_an_over_deep_nesting_and_an_encrypted_archive_are_named_outcomes() {
    // 200 MB of zeros in 200 KB: the ratio stops it before anything is expanded.
    let bomb = message(&[("bomb.zip", "application/zip", &case("bomb.zip"))]);
    assert_limit(
        RULES,
        &bomb,
        &["bomb.zip/zeros.bin", "max_compression_ratio"],
    );
    // A gzip bomb is stopped as it expands, once past the ratio.
    let mut zeros = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    for _ in 0..64 {
        std::io::Write::write_all(&mut zeros, &[0u8; 1 << 20]).unwrap();
    }
    let gz = message(&[("zeros.gz", "application/gzip", &zeros.finish().unwrap())]);
    assert_limit(RULES, &gz, &["max_compression_ratio"]);
    let strip = format!("[content]\narchive_limit_action = \"strip_attachment\"\n{RULES}");
    let rewrite = scan(&strip, &bomb).unwrap();
    assert_eq!(rewrite.unread.len(), 1);
    assert_eq!(rewrite.unread[0].why.name(), "max_compression_ratio");
    assert!(
        String::from_utf8(applied(&rewrite, &bomb))
            .unwrap()
            .contains("An attachment was removed")
    );
    // Within a lower budget the entry's size alone stops it.
    let small =
        format!("[content]\nmax_compression_ratio = 100000\nmax_expanded_size = 1000000\n{RULES}");
    assert_limit(&small, &bomb, &["max_expanded_size"]);

    let deep = message(&[("deep.zip", "application/zip", &case("deep.zip"))]);
    assert_limit(RULES, &deep, &["max_nesting_depth"]);
    // One level more allowed, and the SSN at the bottom is found and redacted.
    let deeper = format!("[content]\nmax_nesting_depth = 4\n{RULES}");
    let rewrite = scan(&deeper, &deep).unwrap();
    assert_eq!(rewrite.hits.len(), 1, "{:?}", rewrite.hits);
    assert_eq!(
        rewrite.hits[0].target,
        "attachment:deep.zip/level2.zip/level1.zip/level0.zip/export.csv"
    );

    let secret = message(&[("secret.zip", "application/zip", &case("secret.zip"))]);
    let rewrite = scan(RULES, &secret).unwrap();
    assert_eq!(rewrite.unread.len(), 1, "passed unread by default");
    assert_eq!(rewrite.unread[0].why.name(), "encrypted");
    assert!(rewrite.reject.is_none() && rewrite.body.is_none());
    let refuse = format!("[content]\nencrypted_action = \"reject\"\n{RULES}");
    let rewrite = scan(&refuse, &secret).unwrap();
    assert_eq!(rewrite.reject.expect("refused").0.code(), 550);
    // A password-protected PDF (LibreOffice's export with an open password) alike.
    let locked = message(&[("locked.pdf", "application/pdf", &case("locked.pdf"))]);
    let rewrite = scan(RULES, &locked).unwrap();
    assert_eq!(rewrite.unread.len(), 1, "{:?}", rewrite.unread);
    assert_eq!(rewrite.unread[0].why.name(), "encrypted");
    let strip = format!("[content]\nencrypted_action = \"strip_attachment\"\n{RULES}");
    let rewrite = scan(&strip, &locked).unwrap();
    assert!(
        String::from_utf8(applied(&rewrite, &locked))
            .unwrap()
            .contains("An attachment was removed")
    );
}

#[test]
fn rules_see_the_true_type_and_the_names_inside_archives() {
    let rules = r#"
[[ruleset]]
name = "executables"
[[ruleset.rule]]
name = "programs"
targets = ["attachment"]
content_types = ["application/vnd.microsoft.portable-executable"]
action = "strip_attachment"
[[ruleset.rule]]
name = "scripts"
targets = ["filename"]
regex = '(?i)\.js$'
action = "strip_attachment"
"#;
    // A program sent as a PDF: its bytes say what it is.
    let mut program = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff".to_vec();
    program.resize(512, 0);
    let raw = message(&[("invoice.pdf", "application/pdf", &program)]);
    let rewrite = scan(rules, &raw).unwrap();
    assert_eq!(rewrite.hits.len(), 1, "{:?}", rewrite.hits);
    assert_eq!(rewrite.hits[0].rule, "programs");

    let raw = message(&[("invoice.zip", "application/zip", &case("scripts.zip"))]);
    let rewrite = scan(rules, &raw).unwrap();
    assert_eq!(rewrite.hits.len(), 1, "{:?}", rewrite.hits);
    assert_eq!(
        (
            rewrite.hits[0].rule.as_str(),
            rewrite.hits[0].target.as_str()
        ),
        ("scripts", "filename:invoice.zip/invoice/invoice.js")
    );
    let out = String::from_utf8(applied(&rewrite, &raw)).unwrap();
    assert!(out.contains("An attachment was removed") && !out.contains("invoice.zip"));
}

/// The documents of a message, masked, read back from what the sink stored.
fn assert_masked_documents(stored: &[u8]) {
    let found = attachments(stored);
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["letter.docx", "cards.xlsx"], "{names:?}");
    let (python, office) = read_back("letter.docx", &found[0].1);
    for text in [&python, &office] {
        assert!(
            text.contains("Your card **** **** **** 1111 was charged."),
            "{text}"
        );
        assert!(text.contains("[ssn]") && !text.contains(SSN), "{text}");
    }
    let (python, _) = read_back("cards.xlsx", &found[1].1);
    assert!(python.contains("Jane Roe,**** **** **** 1111"), "{python}");
    assert!(python.contains("John Doe,**** **** **** 0004"), "{python}");
}

fn documents_message() -> Vec<u8> {
    message(&[
        (
            "letter.docx",
            "application/octet-stream",
            &case("letter.docx"),
        ),
        (
            "cards.xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            &case("cards.xlsx"),
        ),
    ])
}

/// Through the proxy, signed after the rewrite: the signature covers the new documents
/// (dkimpy verifies it), the header names the ruleset and the log the attachment and rule.
#[test]
fn through_the_proxy_documents_arrive_masked_and_signed() {
    let keys = crate::support::dkim::DkimKeys::start();
    let config = format!(
        "{RULES}[[dkim_signer]]\ndomain = \"signer.test\"\nselector = \"rsa\"\n\
         key_file = \"{}\"\nsign = \"transformed\"\n\
         [proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n",
        keys.key("rsa").display()
    );
    let env = crate::support::proxy::ProxyEnv::start(&config, &[&[]]);
    let sent = String::from_utf8(documents_message())
        .unwrap()
        .replace("From: a@sender.example", "From: a@mail.signer.test");
    let reply = env
        .smtp()
        .send("a@mail.signer.test", "b@rcpt.example", sent.as_bytes());
    assert!(reply.starts_with("250"), "{reply}");
    let stored = env.sinks[0].wait_delivered(1).remove(0);
    assert_masked_documents(&stored);
    let text = String::from_utf8_lossy(&stored);
    assert!(text.contains("X-Postern-Rulesets: pci"), "{text}");
    let (ok, verified) = keys.verify(crate::support::proxy::without_postern_received(&stored));
    assert!(ok, "{verified}");
    let log = env.log();
    assert!(
        log.contains("rule_target=attachment:letter.docx/word/document.xml"),
        "{log}"
    );
    assert!(
        !log.contains("4111 1111") && !log.contains(SSN),
        "the log leaks:\n{log}"
    );
}

/// Behind a real Postfix: the milter replaces the body with the rewritten documents.
#[test]
fn behind_postfix_documents_arrive_masked() {
    let env = crate::support::MailEnv::start(crate::support::Socket::Unix, RULES);
    let reply = env
        .smtp()
        .send("a@sender.example", "b@rcpt.example", &documents_message());
    assert!(reply.starts_with("250"), "{reply}");
    let stored = env.wait_delivered(1).remove(0);
    assert_masked_documents(&stored);
}

/// A limit reached behind Postfix: the scan failure action (here reject) answers the client,
/// and the log says which attachment and which limit.
#[test]
fn behind_postfix_a_bomb_gets_the_scan_failure_action() {
    let config = format!("[scan]\nscan_failure_action = \"reject\"\n{RULES}");
    let env = crate::support::MailEnv::start(crate::support::Socket::Unix, &config);
    let bomb = message(&[("bomb.zip", "application/zip", &case("bomb.zip"))]);
    let reply = env.smtp().send("a@sender.example", "b@rcpt.example", &bomb);
    assert!(reply.starts_with("5"), "{reply}");
    env.wait_for_log("max_compression_ratio");
    let log = env.postern_log();
    assert!(log.contains("bomb.zip/zeros.bin"), "{log}");
}

/// A document cut short (as a mail client with a full disk might send it): by default it goes
/// on unread, noted; `damaged_action` can refuse it instead.
#[test]
fn a_damaged_document_takes_the_damaged_action() {
    let letter = case("letter.docx");
    let cut = &letter[..letter.len() / 2];
    let raw = message(&[("letter.docx", "application/octet-stream", cut)]);
    let rewrite = scan(RULES, &raw).unwrap();
    assert_eq!(rewrite.unread.len(), 1, "{:?}", rewrite.unread);
    assert_eq!(rewrite.unread[0].why.name(), "damaged");
    assert_eq!(rewrite.unread[0].attachment, "letter.docx");
    assert!(rewrite.body.is_none() && rewrite.reject.is_none());
    let refuse = format!("[content]\ndamaged_action = \"reject\"\n{RULES}");
    let reply = scan(&refuse, &raw).unwrap().reject.expect("refused").0;
    assert!(reply.text().contains("cannot be read (damaged)"), "{reply}");
}

#[test]
fn slides_are_masked_in_powerpoint_and_opendocument() {
    let raw = message(&[
        ("deck.pptx", "application/octet-stream", &case("deck.pptx")),
        ("deck.odp", "application/octet-stream", &case("deck.odp")),
    ]);
    let rewrite = scan(RULES, &raw).unwrap();
    let targets: Vec<&str> = rewrite.hits.iter().map(|h| h.target.as_str()).collect();
    assert!(
        targets.contains(&"attachment:deck.pptx/ppt/slides/slide1.xml")
            && targets.contains(&"attachment:deck.odp/content.xml"),
        "{targets:?}"
    );
    let found = attachments(&applied(&rewrite, &raw));
    for (name, bytes) in &found {
        let (python, office) = read_back(name, bytes);
        for text in [&python, &office] {
            assert!(
                text.contains("Card on slide: **** **** **** 1111"),
                "{name}: {text}"
            );
        }
    }
}

/// Duplicate entry names (readers differ on which one they show): the archive is either read
/// in full or refused, never let through with what the rules would change unchanged.
#[test]
fn an_archive_with_duplicate_names_does_not_slip_through() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dup.zip");
    let made = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import zipfile, warnings\nwarnings.simplefilter('ignore')\n\
             with zipfile.ZipFile({path:?}, 'w') as z:\n\
             \x20   z.writestr('a.csv', 'name,ssn\\r\\nJane,{SSN}\\r\\n')\n\
             \x20   z.writestr('a.csv', 'nothing here\\r\\n')\n",
            path = path.display().to_string()
        ))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        crate::support::outcome(&made).1
    );
    let raw = message(&[("dup.zip", "application/zip", &std::fs::read(&path).unwrap())]);
    match scan(RULES, &raw) {
        Err(ContentError::Document(e)) => {
            let e = e.to_string();
            assert!(e.contains("dup.zip"), "{e}");
        }
        Ok(rewrite) => {
            assert!(
                rewrite.reject.is_some() || rewrite.body.is_some(),
                "{rewrite:?}"
            );
            let out = String::from_utf8_lossy(&applied(&rewrite, &raw)).into_owned();
            for (_, bytes) in attachments(out.as_bytes()) {
                let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
                for i in 0..archive.len() {
                    let mut text = String::new();
                    archive
                        .by_index(i)
                        .unwrap()
                        .read_to_string(&mut text)
                        .unwrap();
                    assert!(!text.contains(SSN), "{text}");
                }
            }
        }
        Err(other) => panic!("{other:?}"),
    }
}
