//! End-to-end tests through a real Postfix with Postern as its milter (see tests/support).
//! They need root (Postfix runs as a private instance) and install Postfix and swaks when
//! missing, through integration/install-deps.

use std::process::Command;

use crate::support::{MailEnv, POSTERN, Socket, assert_arrived_unchanged};

const CLEAN: &[u8] = include_bytes!("../data/clean-multipart.eml");

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn clean_message_arrives_unchanged(socket: Socket) {
    let env = MailEnv::start(socket, "");
    let reply = env.smtp().send("a@sender.example", "b@rcpt.example", CLEAN);
    assert!(reply.starts_with("250"), "end of data: {reply}");
    let stored = env.wait_delivered(1);
    assert_arrived_unchanged(&stored[0], CLEAN);
    assert!(
        env.postern_log().contains("verdict=continue"),
        "Postern saw the message"
    );
    assert!(
        !env.postern_log().contains("WARN"),
        "a clean conversation logs no warning:\n{}",
        env.postern_log()
    );
}

#[test]
fn clean_message_arrives_byte_identical_over_unix_socket() {
    clean_message_arrives_unchanged(Socket::Unix);
}

#[test]
fn clean_message_arrives_byte_identical_over_tcp() {
    clean_message_arrives_unchanged(Socket::Inet);
}

#[test]
fn rejected_ip_gets_the_configured_reply() {
    let env = MailEnv::start(
        Socket::Unix,
        "[connection]\nip_address_rejection = [\"192.0.2.0/24\"]\nip_address_rejection_reply = \"550 5.7.1 Rejected by test policy\"\n",
    );
    let (ok, text) = env.send_from("192.0.2.10");
    assert!(!ok, "{text}");
    assert!(text.contains("550 5.7.1 Rejected by test policy"), "{text}");
    env.assert_nothing_delivered();

    // A client outside the list gets through the same Postfix.
    let (ok, text) = env.send_from("198.51.100.20");
    assert!(ok, "{text}");
    env.wait_delivered(1);
}

#[test]
fn delayed_rejection_is_delivered_at_rcpt() {
    let env = MailEnv::start(
        Socket::Unix,
        "[connection]\ndelayed_rejection_state = \"rcpt\"\nip_address_rejection = [\"192.0.2.10\"]\n",
    );
    let (_, text) = env.send_from("192.0.2.10");
    let mail = text
        .lines()
        .skip_while(|l| !l.contains("MAIL FROM"))
        .nth(1)
        .unwrap_or("");
    assert!(
        mail.contains("250"),
        "MAIL FROM accepted before the held verdict:\n{text}"
    );
    let rcpt = text
        .lines()
        .skip_while(|l| !l.contains("RCPT TO"))
        .nth(1)
        .unwrap_or("");
    assert!(
        rcpt.contains("554 5.7.1 Client host rejected"),
        "refused at RCPT:\n{text}"
    );
    env.assert_nothing_delivered();
}

#[test]
fn invalid_command_limit_drops_the_client() {
    let env = MailEnv::start(
        Socket::Unix,
        "[exploit_detection]\nmax_invalid_commands = 3\n",
    );
    let mut smtp = env.smtp();
    assert!(
        smtp.command("EHLO client.postern.test")
            .unwrap()
            .starts_with("250")
    );
    for cmd in ["FOO", "BAR baz"] {
        let r = smtp.command(cmd).unwrap();
        assert!(
            r.starts_with("500 5.5.2"),
            "{cmd}: Postfix answers unknown commands itself: {r}"
        );
    }
    let r = smtp.command("QUUX").unwrap();
    assert!(r.starts_with("421 4.7.0"), "third invalid command: {r}");
    assert!(
        smtp.is_closed(),
        "Postfix ended the connection after the 421"
    );
}

#[test]
fn postern_stopped_gives_milter_default_action() {
    let mut env = MailEnv::start(Socket::Unix, "");
    env.stop_postern();
    let o = env.swaks(&["-f", "a@sender.example", "-t", "b@rcpt.example"]);
    let text = out(&o);
    assert!(
        text.contains("451 4.7.1"),
        "milter_default_action = tempfail:\n{text}"
    );
    env.assert_nothing_delivered();
}

#[test]
fn engine_failure_gives_the_scan_failure_action() {
    let env = MailEnv::start(Socket::Unix, "");
    // Large messages spool to a directory that disappears under the running milter.
    let spool = env.dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::write(
        &env.config,
        format!(
            "[scan]\nmessage_memory_limit = 100\nspool_directory = {:?}\n",
            spool
        ),
    )
    .unwrap();
    env.hup_postern();
    env.wait_for_log("configuration reloaded");
    std::fs::remove_dir(&spool).unwrap();
    let reply = env.smtp().send("a@sender.example", "b@rcpt.example", CLEAN);
    assert!(
        reply.starts_with("451 4.3.0 Message could not be scanned"),
        "{reply}"
    );
    assert!(env.postern_log().contains("scan failure"), "reason logged");
    env.assert_nothing_delivered();
}

#[test]
fn bad_config_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[milter]\nlisten = \"inet:127.0.0.1:7357\"\n\n[scan]\nscan_failure_action = \"bounce\"\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", bad.to_str().unwrap()],
        vec!["milter", "--config", bad.to_str().unwrap()],
    ] {
        let o = Command::new(POSTERN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} must fail");
        assert!(
            err.contains(&format!(
                "{}:5: key `scan.scan_failure_action`",
                bad.display()
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("delay"), "names the allowed values: {err}");
    }
    let o = Command::new(POSTERN)
        .args(["check-config", "config/postern.toml"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "documented config is valid: {}",
        out(&o)
    );
}

#[test]
fn sighup_with_a_bad_file_keeps_the_old_policy() {
    let reject = "[connection]\nip_address_rejection = [\"192.0.2.0/24\"]\n";
    let env = MailEnv::start(Socket::Unix, reject);
    let from_listed = || env.send_from("192.0.2.10").1;
    assert!(from_listed().contains("554 5.7.1"));

    std::fs::write(
        &env.config,
        "[connection]\nip_address_rejection = [\"not-an-ip\"]\n",
    )
    .unwrap();
    env.hup_postern();
    env.wait_for_log("configuration not reloaded");
    assert!(
        env.postern_log()
            .contains("postern.toml:2: key `connection.ip_address_rejection[0]`")
    );
    assert!(
        from_listed().contains("554 5.7.1"),
        "old policy still in force"
    );

    // A good file does take effect.
    env.write_config("");
    env.hup_postern();
    env.wait_for_log("configuration reloaded");
    let text = from_listed();
    assert!(text.contains("250 2.0.0 Ok: queued"), "{text}");
    env.wait_delivered(1);
}

#[test]
fn trace_header_arrives_well_formed() {
    let env = MailEnv::start(
        Socket::Unix,
        "hostname = \"mx.postern.test\"\n[scan]\ntrace_header = true\n",
    );
    let reply = env.smtp().send("a@sender.example", "b@rcpt.example", CLEAN);
    assert!(reply.starts_with("250"), "{reply}");
    let stored = String::from_utf8_lossy(&env.wait_delivered(1)[0]).into_owned();
    assert!(
        stored.contains("\nX-Postern-Verdict: continue; by mx.postern.test\n"),
        "{stored}"
    );
}
