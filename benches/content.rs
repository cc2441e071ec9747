//! Extract + transform with 20 patterns over two messages of about 10 MB, against `grep -cE`
//! and ripgrep (`rg -c`) with the same patterns, measured in the same run:
//! - a plain text message: the tools read the same bytes Postern decodes and scans;
//! - a multipart message with a base64 text part, a quoted-printable text part and a
//!   quoted-printable HTML part, so that the decoders are measured too. Neither tool decodes
//!   base64 or quoted-printable, so they are given the parts' decoded text (what they would have
//!   to read to find the same values): their figure leaves decoding out, Postern's includes it,
//!   and re-encoding the changed parts as well.
//!
//! Postern and the tools are timed in interleaved rounds (Postern, grep, rg, again), each
//! figure the median of its rounds, so that a change of load falls on all sides alike.
//!
//! Run with `cargo bench --bench content`; it prints each throughput and the ratios. ripgrep is
//! skipped, with a message, when `rg` is not installed (Debian: `apt-get install ripgrep`).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;

use criterion::{Criterion, Throughput};
use postern::engine::rules::{Ruleset, rewrite};

mod common;
use common::{PATTERNS, median, rulesets};

/// About 10 MB of plain text, one sensitive value every few lines.
fn corpus() -> Vec<u8> {
    let filler =
        "The quarterly figures were discussed at length and the team agreed on next steps.";
    let samples = [
        "card 4111 1111 1111 1111 on file",
        "ssn 123-45-6789 noted",
        "write to jane.doe@example.org",
        "this is confidential",
        "password: hunter2 again",
        "account 1234567890 closed",
    ];
    let mut text = String::with_capacity(10 << 20);
    let mut i = 0;
    while text.len() < 10 << 20 {
        text.push_str(filler);
        if i % 4 == 0 {
            text.push(' ');
            text.push_str(samples[i / 4 % samples.len()]);
        }
        text.push_str("\r\n");
        i += 1;
    }
    text.into_bytes()
}

/// About 10 MB of multipart/alternative-like mail: the plain corpus's lines, a third in a base64
/// text part, a third in a quoted-printable text part (with some UTF-8, so that the decoder sees
/// escapes and soft line breaks), a third as an HTML part, also quoted-printable. Returns the
/// message and the parts' decoded text, one after the other.
fn multipart() -> (Vec<u8>, Vec<u8>) {
    let corpus = corpus();
    // Cut at line ends so that every part holds whole lines.
    let line_end = |text: &[u8], at: usize| {
        at + text[at..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or(0)
            + 2
    };
    // Base64, quoted-printable and the HTML tags make the message about a quarter larger than
    // its text: 79% of the plain corpus makes a message of about the same size.
    let text = &corpus[..line_end(&corpus, corpus.len() * 79 / 100)];
    let third = text.len() / 3;
    let (a, b) = (line_end(text, third), line_end(text, 2 * third));
    let b64_text = &text[..a];
    let qp_text: Vec<u8> = String::from_utf8_lossy(&text[a..b])
        .replace("next steps.", "next steps. Grüße, Jörg")
        .into_bytes();
    let mut html = b"<html><body>\r\n".to_vec();
    for line in text[b..].split(|&c| c == b'\n').filter(|l| l.len() > 1) {
        html.extend_from_slice(b"<p>");
        html.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        html.extend_from_slice(b"</p>\r\n");
    }
    html.extend_from_slice(b"</body></html>\r\n");

    let mut m = b"From: a@example.org\r\nSubject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\nThis is a multipart message.\r\n".to_vec();
    m.extend_from_slice(b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n");
    let encoded = base64::engine::general_purpose::STANDARD.encode(b64_text);
    for line in encoded.as_bytes().chunks(76) {
        m.extend_from_slice(line);
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    m.extend_from_slice(&quoted_printable(&qp_text));
    m.extend_from_slice(b"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n");
    m.extend_from_slice(&quoted_printable(&html));
    m.extend_from_slice(b"--b1--\r\n");

    let mut decoded = b64_text.to_vec();
    decoded.extend_from_slice(&qp_text);
    decoded.extend_from_slice(&html);
    (m, decoded)
}

/// Quoted-printable (RFC 2045) of CRLF text: `=` and non-ASCII escaped, lines soft-broken
/// before 76 characters.
fn quoted_printable(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 20);
    for line in text.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut width = 0;
        for &c in line {
            let escaped = c == b'=' || !(32..127).contains(&c);
            let len = if escaped { 3 } else { 1 };
            if width + len > 75 {
                out.extend_from_slice(b"=\r\n");
                width = 0;
            }
            if escaped {
                out.extend_from_slice(format!("={c:02X}").as_bytes());
            } else {
                out.push(c);
            }
            width += len;
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// How many rounds each figure's median is taken over.
const ROUNDS: usize = 9;

/// One timed run of `f`.
fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// `grep -cE` (C locale) over `file` with the patterns.
fn grep(file: &Path) -> Command {
    let mut command = Command::new("grep");
    command.arg("-cE").env("LC_ALL", "C");
    for p in PATTERNS {
        command.arg("-e").arg(p.replace("\\+", "[+]"));
    }
    command.arg(file);
    command
}

/// `rg -c` over `file` with the patterns, or `None` when ripgrep is not installed.
fn ripgrep(file: &Path) -> Option<Command> {
    Command::new("rg").arg("--version").output().ok()?;
    let mut command = Command::new("rg");
    command.args(["--no-config", "-c"]);
    for p in PATTERNS {
        command.arg("-e").arg(p);
    }
    command.arg(file);
    Some(command)
}

/// Runs a tool once, checking that it found the patterns.
fn run(command: &mut Command) {
    let out = command.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{:?} found the patterns: {}",
        command.get_program(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tools' input in a file of its own.
fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(bytes).expect("write corpus");
    file
}

/// One corpus's figures: Postern's time (`postern` runs it once), and grep's and rg's over
/// `tool_input`, taken in interleaved rounds (Postern, grep, rg, then again) so that a change of
/// load on the machine falls on all three alike; each figure is the median of its rounds. Rates
/// are MB of `tool_input` per second.
fn report(title: &str, mut postern: impl FnMut(), tool_input: &[u8], tools_read: &str) {
    let file = temp_file(tool_input);
    let mut grep = grep(file.path());
    let mut rg = ripgrep(file.path());
    let (mut ours, mut greps, mut rgs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        ours.push(time(&mut postern));
        greps.push(time(|| run(&mut grep)));
        if let Some(rg) = &mut rg {
            rgs.push(time(|| run(rg)));
        }
    }
    let (postern, grep) = (median(ours), median(greps));
    let rg = (!rgs.is_empty()).then(|| median(rgs));
    let mb = tool_input.len() as f64 / 1e6;
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!("{title}");
    println!(
        "  postern (decode + extract + transform + re-encode): {:.0} MB/s",
        rate(postern)
    );
    println!("  grep -cE ({tools_read}): {:.0} MB/s", rate(grep));
    match rg {
        Some(rg) => println!("  rg -c ({tools_read}): {:.0} MB/s", rate(rg)),
        None => println!("  rg -c: skipped, ripgrep is not installed (apt-get install ripgrep)"),
    }
    println!(
        "  ratio postern/grep: {:.2}x",
        grep.as_secs_f64() / postern.as_secs_f64()
    );
    if let Some(rg) = rg {
        println!(
            "  ratio postern/rg:   {:.2}x",
            rg.as_secs_f64() / postern.as_secs_f64()
        );
    }
    println!("  (medians of {ROUNDS} interleaved rounds)");
}

fn main() {
    let body = corpus();
    let mut message = b"From: a@example.org\r\nSubject: report\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    message.extend_from_slice(&body);
    let (mime, mime_text) = multipart();
    let sets = rulesets("body");
    let refs: Vec<&Ruleset> = sets.iter().collect();

    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let mut group = criterion.benchmark_group("content");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function("postern_extract_transform_10MB_20_patterns", |b| {
        b.iter(|| rewrite(&message, &refs).expect("rewrite"))
    });
    group.throughput(Throughput::Bytes(mime.len() as u64));
    group.bench_function("postern_multipart_base64_qp_html_10MB_20_patterns", |b| {
        b.iter(|| rewrite(&mime, &refs).expect("rewrite"))
    });
    group.finish();

    // The same measurement for every side, in this run.
    let postern = |m: &[u8]| {
        let r = rewrite(m, &refs).expect("rewrite");
        assert!(r.body.is_some(), "the rules matched");
    };
    // A message at the header bound (max_header_fields = 1000) against one with a tenth of
    // its fields: linear cost makes the ratio about 10.
    let fields = |n: usize| {
        let mut m = Vec::new();
        for i in 0..n {
            m.extend_from_slice(format!("X-Field-{i:04}: value {i}\r\n").as_bytes());
        }
        m.extend_from_slice(b"Subject: bound\r\n\r\ncard 4111 1111 1111 1111\r\n");
        m
    };
    let per_message = |m: &[u8]| {
        median(
            (0..21)
                .map(|_| {
                    let t = Instant::now();
                    rewrite(m, &refs).expect("rewrite");
                    t.elapsed()
                })
                .collect(),
        )
    };
    let (small, bound) = (per_message(&fields(100)), per_message(&fields(1000)));
    println!(
        "header fields: 100 fields {:.0} us, 1000 fields (the bound) {:.0} us, ratio {:.1} (10 is linear)",
        small.as_secs_f64() * 1e6,
        bound.as_secs_f64() * 1e6,
        bound.as_secs_f64() / small.as_secs_f64()
    );
    report(
        &format!(
            "content, plain text: {:.1} MB, 20 patterns (MB/s of the text)",
            body.len() as f64 / 1e6
        ),
        || postern(&message),
        &body,
        "the same text, count matching lines",
    );
    report(
        &format!(
            "content, multipart: {:.1} MB message (base64 text, quoted-printable text, quoted-printable HTML), {:.1} MB decoded, 20 patterns (MB/s of the decoded text)",
            mime.len() as f64 / 1e6,
            mime_text.len() as f64 / 1e6
        ),
        || postern(&mime),
        &mime_text,
        "the parts decoded, no decoding timed",
    );
}
