//! Extract + transform over a 10 MB text message with 20 patterns, against `grep -cE` over the
//! same bytes with the same patterns, measured in the same run. Run with
//! `cargo bench --bench content`; it prints both throughputs and the ratio.

use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use postern::config::Config;
use postern::engine::rules::{Ruleset, rewrite};

/// Twenty patterns of the kind a DLP policy holds; POSIX ERE and Rust regex read them alike.
const PATTERNS: [&str; 20] = [
    "[0-9]{4} [0-9]{4} [0-9]{4} [0-9]{4}",
    "[0-9]{3}-[0-9]{2}-[0-9]{4}",
    "DE[0-9]{2} [0-9]{4} [0-9]{4} [0-9]{4} [0-9]{4} [0-9]{2}",
    "[A-Za-z0-9._%+-]+@example\\.org",
    "\\+49 [0-9]{2} [0-9]{7}",
    "passport [A-Z][0-9]{8}",
    "account [0-9]{10}",
    "policy number [0-9]{6}",
    "employee id E[0-9]{5}",
    "PIN [0-9]{4}",
    "confidential",
    "secret project [A-Z][a-z]+",
    "password: [^ ]+",
    "api[_-]key=[A-Za-z0-9]{20}",
    "BIC [A-Z]{6}[A-Z0-9]{2}",
    "date of birth [0-9]{2}/[0-9]{2}/[0-9]{4}",
    "tax id [0-9]{2}/[0-9]{3}/[0-9]{5}",
    "license plate [A-Z]{1,3}-[A-Z]{1,2} [0-9]{1,4}",
    "medical record MR[0-9]{7}",
    "salary [0-9]{2,3}\\.[0-9]{3} EUR",
];

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

fn rulesets() -> Vec<Ruleset> {
    let mut toml = String::from("[[ruleset]]\nname = \"bench\"\n");
    for (i, p) in PATTERNS.iter().enumerate() {
        toml.push_str(&format!(
            "[[ruleset.rule]]\nname = \"p{i}\"\ntargets = [\"body\"]\nregex = '{p}'\naction = \"redact\"\n"
        ));
    }
    Config::parse(&toml, "bench.toml")
        .expect("bench config")
        .policy
        .content
        .rulesets
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs[runs.len() / 2]
}

fn main() {
    let body = corpus();
    let mut message = b"From: a@example.org\r\nSubject: report\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".to_vec();
    message.extend_from_slice(&body);
    let sets = rulesets();
    let refs: Vec<&Ruleset> = sets.iter().collect();
    let mb = body.len() as f64 / 1e6;

    let mut criterion = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .configure_from_args();
    let mut group = criterion.benchmark_group("content");
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function("postern_extract_transform_10MB_20_patterns", |b| {
        b.iter(|| rewrite(&message, &refs).expect("rewrite"))
    });
    group.finish();

    // The same measurement for both sides, in this run: median of 5.
    let postern = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let r = rewrite(&message, &refs).expect("rewrite");
                assert!(r.body.is_some(), "the rules matched");
                t.elapsed()
            })
            .collect(),
    );
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&body).expect("write corpus");
    let mut args = vec!["-cE".to_owned()];
    for p in PATTERNS {
        args.push("-e".into());
        args.push(p.replace("\\+", "[+]"));
    }
    let grep = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let out = std::process::Command::new("grep")
                    .args(&args)
                    .arg(file.path())
                    .env("LC_ALL", "C")
                    .output()
                    .expect("grep runs");
                assert!(out.status.success(), "grep found the patterns");
                t.elapsed()
            })
            .collect(),
    );
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
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!(
        "content: {mb:.1} MB, 20 patterns\n  postern (decode + extract + transform + re-encode): {:.0} MB/s\n  grep -cE (count matching lines only):                {:.0} MB/s\n  ratio postern/grep: {:.2}x",
        rate(postern),
        rate(grep),
        grep.as_secs_f64() / postern.as_secs_f64()
    );
}
