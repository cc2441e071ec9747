//! The fuzz targets' checks (`fuzz/checks.rs`) over their corpus in `fuzz/corpus/TARGET/` and
//! every crash a fuzzer found in `fuzz/crashes/TARGET/` (each fixed since): what a fuzzer once
//! found stays fixed, in the ordinary test suite. `integration/fuzz` runs the fuzzers.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// Runs `check` over every file of the target's corpus and crash directories; returns how
/// many inputs it ran.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "crashes"] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn command() {
    assert!(
        replay("command", checks::command) > 0,
        "a corpus is committed"
    );
}

#[test]
fn data_reader() {
    assert!(
        replay("data_reader", checks::data_reader) > 0,
        "a corpus is committed"
    );
}

#[test]
fn milter_header() {
    assert!(
        replay("milter_header", checks::milter_header) > 0,
        "a corpus is committed"
    );
}

#[test]
fn rewrite() {
    assert!(
        replay("rewrite", checks::rewrite) > 0,
        "a corpus is committed"
    );
}

#[test]
fn auth() {
    assert!(replay("auth", checks::auth) > 0, "a corpus is committed");
}
