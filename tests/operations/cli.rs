//! The command line as an administrator meets it: where the configuration comes from when
//! none is given, and the forms check-config takes.

use std::process::Command;

use crate::support::POSTERN;

use crate::support::run_postern as run;

/// check-config takes the file as every other command does (`-c`, `--config`) and as it
/// always did (the first argument); two files are refused.
#[test]
fn check_config_takes_the_file_either_way() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postern.toml");
    std::fs::write(&file, "hostname = \"gw.postern.test\"\n").unwrap();
    let file = file.display().to_string();
    for args in [
        vec!["check-config", "-c", &file],
        vec!["check-config", "--config", &file],
        vec!["check-config", &file],
    ] {
        let (ok, out) = run(&args);
        assert!(
            ok && out.contains(": OK") && out.contains("gw.postern.test"),
            "{args:?}: {out}"
        );
    }
    let (ok, out) = run(&["check-config", &file, "-c", &file]);
    assert!(!ok, "{out}");
}

/// Without a file and without /etc/postern/postern.toml (a test machine has none), the
/// embedded default serves and the first log line says so.
#[test]
fn without_a_file_the_first_log_line_says_which_configuration_serves() {
    if std::path::Path::new("/etc/postern/postern.toml").exists() {
        eprintln!("skipped: this machine has /etc/postern/postern.toml");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = format!("unix:{}", dir.path().join("postern.sock").display());
    let mut child = Command::new(POSTERN)
        .args(["milter", "-l", &socket])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.contains("postern starting")
            && first.contains("<embedded default config> (no /etc/postern/postern.toml)"),
        "{first}"
    );
}

/// check-config fails when the tracking database could not be created where the file says
/// (a directory that does not exist), naming the directory.
#[test]
fn check_config_tests_the_tracking_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("postern.toml");
    let text = |path: &str| format!("[tracking]\nstore = \"sqlite\"\npath = \"{path}\"\n");
    let missing = dir.path().join("none/tracking.sqlite");
    std::fs::write(&file, text(&missing.display().to_string())).unwrap();
    let (ok, out) = run(&["check-config", "-c", &file.display().to_string()]);
    assert!(!ok && out.contains("does not exist"), "{out}");
    std::fs::write(&file, text("tracking.sqlite")).unwrap();
    let (ok, out) = run(&["check-config", "-c", &file.display().to_string()]);
    assert!(ok, "{out}");
}

/// `--help` lists each command on one short line; `help CMD` has the detail.
#[test]
fn help_lists_each_command_on_one_short_line() {
    let (ok, out) = run(&["--help"]);
    assert!(ok, "{out}");
    let commands: Vec<&str> = out
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(commands.len() >= 6, "{out}");
    for line in &commands {
        assert!(line.len() <= 80, "too long for a command list: {line:?}");
    }
    let (ok, detail) = run(&["help", "milter"]);
    assert!(
        ok && detail.contains("SIGHUP reloads the config"),
        "{detail}"
    );
}
