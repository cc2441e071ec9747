//! The manual pages in man/ are what `postern manual` writes now: a change to the command
//! line or to config/postern.toml that forgot `cargo run -- manual man` fails here.

#[test]
fn the_checked_in_manual_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    let status = crate::support::proxy::postern()
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

/// The pages read as a Unix administrator expects: `mandoc -Tlint` finds nothing to warn
/// about, `lexgrog` reads a whatis line from each, and each page has the sections such pages
/// have.
#[test]
fn the_manual_pages_pass_lint_and_have_the_usual_sections() {
    crate::support::install_deps();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.sort();
    let lint = std::process::Command::new("mandoc")
        .args(["-Tlint", "-W", "warning"])
        .args(&pages)
        .output()
        .expect("mandoc runs (integration/install-deps installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    assert!(lint.status.success() && said.trim().is_empty(), "{said}");
    for page in &pages {
        let whatis = std::process::Command::new("lexgrog")
            .arg(page)
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&whatis.stdout);
        assert!(
            whatis.status.success() && line.contains(" - "),
            "{}: {line}",
            page.display()
        );
        let text = std::fs::read_to_string(page).unwrap();
        let sections: &[&str] = if page.extension().is_some_and(|e| e == "5") {
            &["NAME", "DESCRIPTION", "SEE ALSO"]
        } else {
            &[
                "NAME",
                "SYNOPSIS",
                "DESCRIPTION",
                "OPTIONS",
                "EXIT STATUS",
                "ENVIRONMENT",
                "FILES",
                "SEE ALSO",
            ]
        };
        for section in sections {
            assert!(
                text.contains(&format!(".SH {section}\n"))
                    || text.contains(&format!(".SH \"{section}\"\n")),
                "{}: no {section}",
                page.display()
            );
        }
    }
    let main = std::fs::read_to_string(dir.join("postern.8")).unwrap();
    assert!(
        main.contains(".SH SIGNALS") && main.contains(".EX\n"),
        "{main}"
    );
}
