//! The `divert` action through both doors: a message a divert rule matches goes, transformed,
//! to the named relay target (an smtp-sink standing in for a quarantine) and not on its way;
//! the door lets go of it only after that target accepted. Behind a real Postfix (milter
//! door) and in front of smtp-sinks (proxy door) the same conversation has the same outcome.

use std::time::Duration;

use crate::support::proxy::{ProxyEnv, Sink};
use crate::support::{MailEnv, Smtp, Socket};

const CLEAN: &[u8] = b"From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: hello\r\n\r\n\
nothing sensitive here\r\n";
const CARD: &[u8] = b"From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: order\r\n\r\n\
please charge 4111 1111 1111 1111 today\r\n";

/// Cards divert the message to `quarantine` and are masked in what is diverted.
fn rules(quarantine_port: &str) -> String {
    format!(
        r#"
[[relay_target]]
name = "quarantine"
host = "127.0.0.1"
port = {quarantine_port}
divert_only = true

[[ruleset]]
name = "pci"
[[ruleset.rule]]
name = "cards to quarantine"
targets = ["subject", "body"]
detector = "card_number"
action = "divert"
relay_targets = ["quarantine"]
[[ruleset.rule]]
name = "mask cards"
targets = ["subject", "body"]
detector = "card_number"
action = "mask"
"#
    )
}

/// One conversation, whatever the door: `send` gives the reply to the end of the message,
/// `ordinary` what reached the ordinary destination.
fn conversation(
    send: &dyn Fn(&[u8]) -> String,
    ordinary: &dyn Fn() -> Vec<Vec<u8>>,
    quarantine: &Sink,
) {
    let reply = send(CLEAN);
    assert!(reply.starts_with("250"), "clean message: {reply}");
    crate::support::wait_for_messages(1, ordinary);

    let reply = send(CARD);
    assert!(reply.starts_with("250"), "card message: {reply}");
    let diverted = quarantine.wait_delivered(1).remove(0);
    let text = String::from_utf8_lossy(&diverted);
    assert!(text.contains("please charge"), "{text}");
    assert!(
        !text.contains("4111 1111 1111 1111"),
        "the diverted copy is transformed too:\n{text}"
    );
    assert!(text.contains("X-Postern-Rulesets: pci"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ordinary().len(), 1, "a diverted message also went its way");

    // The divert target is down: the client keeps the message (scan failure action, 451).
    quarantine.stop();
    let reply = send(CARD);
    assert!(reply.starts_with("451"), "divert target down: {reply}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ordinary().len(), 1, "an undiverted message went its way");
    assert_eq!(quarantine.delivered().len(), 1);
}

#[test]
fn divert_through_the_milter_door() {
    let holder = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        holder.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let quarantine = Sink::start(holder.path().join("quarantine"), &[]);
    let env = MailEnv::start(Socket::Unix, &rules(&quarantine.port.to_string()));
    let send = |m: &[u8]| env.smtp().send("a@sender.example", "b@rcpt.example", m);
    conversation(&send, &|| env.delivered(), &quarantine);
    let log = env.postern_log();
    assert!(log.contains("message diverted"), "{log}");
    assert!(log.contains("message could not be diverted"), "{log}");
}

#[test]
fn divert_through_the_proxy_door() {
    let config = format!(
        "[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         [[relay_target]]\nname = \"mta\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n{}",
        rules("{sink1}")
    );
    let env = ProxyEnv::start(&config, &[&[], &[]]);
    let send = |m: &[u8]| Smtp::connect(env.port).send("a@sender.example", "b@rcpt.example", m);
    conversation(&send, &|| env.sinks[0].delivered(), &env.sinks[1]);
    let log = env.log();
    assert!(log.contains("message diverted"), "{log}");
}
