//! The manual pages in man/ are what `postern manual` writes now: a change to the command
//! line or to config/postern.toml that forgot `cargo run -- manual man` fails here.

mod support;

#[test]
fn the_checked_in_manual_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let status = support::proxy::postern()
        .arg("manual")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let checked_in = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    written.sort();
    let mut kept: Vec<_> = std::fs::read_dir(&checked_in)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    kept.sort();
    assert_eq!(
        written, kept,
        "the pages in man/ (run: cargo run -- manual man)"
    );
    for name in written {
        let now = std::fs::read_to_string(dir.path().join(&name)).unwrap();
        let kept = std::fs::read_to_string(checked_in.join(&name)).unwrap();
        assert!(
            now == kept,
            "man/{} is out of date: run `cargo run -- manual man`",
            name.to_string_lossy()
        );
    }
}
