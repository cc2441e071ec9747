//! Documents: extract + transform with the 20 patterns of benches/content.rs over Word and
//! Excel files of two sizes (made by python-docx and openpyxl through
//! `integration/documents bench`), each attached to a message, against `unzip -p FILE | rg -c`
//! with the same patterns — the reference reads every entry's decompressed bytes as they are,
//! markup and all, without base64, without putting split runs together and without writing
//! anything back; Postern's figure includes decoding the attachment, reading each XML part into
//! paragraphs, the rules, writing the changed parts and the archive back, and encoding it.
//!
//! Postern and the reference are timed in interleaved rounds, each figure the median of its
//! rounds. The rate is MB of decompressed entries per second, on both sides. The larger file
//! of each kind holds 8 times the content of the smaller: the time ratio between them shows
//! whether the cost grows in proportion (8.0). A zip bomb's cost is printed last.
//!
//! Run with `cargo bench --bench documents` (after integration/install-deps: python-docx,
//! openpyxl, unzip, ripgrep).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use postern::engine::rules::{Ruleset, rewrite};

mod common;
use common::{PATTERNS, median, rulesets};

const ROUNDS: usize = 7;

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// A message with `file` attached, base64.
fn message(name: &str, bytes: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain\r\n\r\nattached\r\n--b\r\n\
         Content-Type: application/octet-stream; name=\"{name}\"\r\n\
         Content-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    for line in encoded.as_bytes().chunks(76) {
        m.push_str(std::str::from_utf8(line).expect("base64"));
        m.push_str("\r\n");
    }
    m.push_str("--b--\r\n");
    m.into_bytes()
}

/// The decompressed size of every entry of a ZIP.
fn expanded(bytes: &[u8]) -> u64 {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("a ZIP");
    (0..archive.len())
        .map(|i| {
            let mut data = Vec::new();
            archive
                .by_index(i)
                .expect("entry")
                .read_to_end(&mut data)
                .expect("read");
            data.len() as u64
        })
        .sum()
}

/// `unzip -p FILE | rg -c PATTERNS`.
fn reference(file: &Path) -> Command {
    let mut script = format!("unzip -p '{}' | rg --no-config -c", file.display());
    for p in PATTERNS {
        script.push_str(&format!(" -e '{p}'"));
    }
    let mut command = Command::new("sh");
    command.arg("-c").arg(script);
    command
}

/// The median time of Postern and the reference over one file, interleaved.
fn measure(file: &Path, refs: &[&Ruleset]) -> (Duration, Duration, u64) {
    let bytes = std::fs::read(file).expect("the document");
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let m = message(&name, &bytes);
    let mut reference = reference(file);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(time(|| {
            let r = rewrite(&m, refs).expect("rewrite");
            assert!(r.body.is_some(), "the rules matched in {name}");
        }));
        theirs.push(time(|| {
            let out = reference.output().expect("unzip | rg runs");
            assert!(out.status.success(), "rg found the patterns in {name}");
        }));
    }
    (median(ours), median(theirs), expanded(&bytes))
}

fn main() {
    // Cargo passes --bench; no other arguments are read.
    let dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/documents");
    for n in ["2", "16"] {
        let status = Command::new(&script)
            .args(["bench"])
            .arg(dir.path())
            .arg(n)
            .status()
            .expect("integration/documents runs");
        assert!(status.success(), "integration/documents bench {n}");
    }
    let sets = rulesets("attachment");
    let refs: Vec<&Ruleset> = sets.iter().collect();
    for kind in ["doc", "sheet"] {
        let ext = if kind == "doc" { "docx" } else { "xlsx" };
        let files: Vec<PathBuf> = ["2", "16"]
            .iter()
            .map(|n| dir.path().join(format!("{kind}-{n}.{ext}")))
            .collect();
        let mut times = Vec::new();
        for file in &files {
            let (ours, theirs, size) = measure(file, &refs);
            let mb = size as f64 / 1e6;
            println!(
                "{}: {:.1} MB decompressed ({} KB file)",
                file.file_name().unwrap().to_string_lossy(),
                mb,
                std::fs::metadata(file).unwrap().len() / 1024
            );
            println!(
                "  postern (base64 + unzip + paragraphs + 20 patterns + rewrite + zip + base64): {:.0} MB/s ({:.1} ms)",
                mb / ours.as_secs_f64(),
                ours.as_secs_f64() * 1e3
            );
            println!(
                "  unzip -p | rg -c (20 patterns): {:.0} MB/s ({:.1} ms)",
                mb / theirs.as_secs_f64(),
                theirs.as_secs_f64() * 1e3
            );
            println!(
                "  ratio postern/reference: {:.2}x",
                theirs.as_secs_f64() / ours.as_secs_f64()
            );
            times.push((ours, size));
        }
        let (small, large) = (times[0], times[1]);
        println!(
            "{ext}: 8 times the content takes {:.1} times as long ({:.1} times the bytes; 8.0 is linear in the content)",
            large.0.as_secs_f64() / small.0.as_secs_f64(),
            large.1 as f64 / small.1 as f64
        );
    }
    // A bomb: 200 MB of zeros in 200 KB, stopped by max_compression_ratio before expanding.
    let cases = dir.path().join("cases");
    let status = Command::new(&script)
        .arg("make")
        .arg(&cases)
        .status()
        .expect("integration/documents runs");
    assert!(status.success());
    let bomb = message("bomb.zip", &std::fs::read(cases.join("bomb.zip")).unwrap());
    let t = median(
        (0..ROUNDS)
            .map(|_| time(|| assert!(rewrite(&bomb, &refs).is_err(), "the bomb is refused")))
            .collect(),
    );
    println!(
        "bomb.zip (200 MB of zeros in 200 KB): refused in {:.2} ms (medians of {ROUNDS} interleaved rounds)",
        t.as_secs_f64() * 1e3
    );
}
