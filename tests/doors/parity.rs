//! One engine, two doors: the same conversations behind a real Postfix (milter door) and in
//! front of an smtp-sink (proxy door) get the same replies, and what reaches the sink is the
//! same message (Received fields and the sink's own trace aside). Each behaviour here was
//! tested through one door only before: the trace header, a masked card with the ruleset
//! header, a message a ruleset rejects, a recipient relay restriction refuses, a header line
//! longer than SMTP allows; a dry run; an IP address refusal delayed until RCPT; values
//! protected with format-preserving encryption (the same ciphertext from both).

use std::io::Write;

use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, Smtp, Socket};

const POLICY: &str = r#"
[scan]
trace_header = true
[relay]
restrict_relaying = true
local_domains = ["rcpt.example"]
allowed_relay_sources = []

[[ruleset]]
name = "block"
[[ruleset.rule]]
name = "no ssn"
targets = ["body"]
detector = "us_ssn"
action = "reject"

[[ruleset]]
name = "pci"
[[ruleset.rule]]
name = "cards"
targets = ["subject", "body"]
detector = "card_number"
action = "mask"
"#;

/// A message with the fields Postfix would otherwise add itself.
fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: a@sender.example\r\nTo: b@rcpt.example\r\nSubject: {subject}\r\n\
         Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{}@sender.example>\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

/// What a client heard in one conversation: each recipient's reply and the end of data's
/// (or "-" when no recipient was accepted), code and enhanced status code only where the
/// text is the MTA's own.
#[derive(Debug, PartialEq, Eq)]
struct Heard {
    rcpt: Vec<String>,
    end: String,
}

fn converse(mut smtp: Smtp, recipients: &[&str], message: &[u8]) -> Heard {
    smtp.begin("a@sender.example");
    let code = |reply: &str| {
        reply
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rcpt: Vec<String> = recipients
        .iter()
        .map(|r| code(&smtp.command(&format!("RCPT TO:<{r}>")).unwrap()))
        .collect();
    if !rcpt.iter().any(|r| r.starts_with("250")) {
        return Heard {
            rcpt,
            end: "-".into(),
        };
    }
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut().write_all(message).unwrap();
    smtp.writer_mut().write_all(b".\r\n").unwrap();
    let end = smtp.read_reply().unwrap();
    // A refusal of Postern's own carries its text in both doors.
    let end = if end.starts_with('5') {
        end
    } else {
        code(&end)
    };
    Heard { rcpt, end }
}

/// A delivered message as the client sent it and the policy changed it: the sink's trace
/// lines and every Received field at the top left out, LF line ends.
fn normalized(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).replace("\r\n", "\n");
    let mut lines = text.lines().peekable();
    let mut out = Vec::new();
    let mut top = true;
    while let Some(line) = lines.next() {
        if top && (line.starts_with("X-") && line.contains(": ") && !line.starts_with("X-Postern"))
        {
            continue;
        }
        if top && line.starts_with("Received: ") {
            while lines.peek().is_some_and(|l| l.starts_with([' ', '\t'])) {
                lines.next();
            }
            continue;
        }
        top = false;
        out.push(line);
    }
    out.join("\n").trim_end().to_owned()
}

/// One conversation: its recipients and its message.
type Conversation<'a> = (Vec<&'a str>, Vec<u8>);

/// What the client heard in each conversation, and what reached the sink.
type Outcome = (Vec<Heard>, Vec<String>);

/// The conversations, and what each door delivered, in order.
fn run(
    smtp: &dyn Fn() -> Smtp,
    delivered: &dyn Fn(usize) -> Vec<Vec<u8>>,
    conversations: &[Conversation<'_>],
) -> Outcome {
    let mut heard = Vec::new();
    let mut expected = 0;
    for (recipients, message) in conversations {
        let h = converse(smtp(), recipients, message);
        if h.end.starts_with("250") {
            expected += 1;
            delivered(expected);
        }
        heard.push(h);
    }
    // Sink files written within one second have no order.
    let mut messages: Vec<String> = delivered(expected).iter().map(|m| normalized(m)).collect();
    messages.sort();
    (heard, messages)
}

/// The conversations behind Postfix with `policy`, then in front of an smtp-sink with the
/// same policy: what each door's client heard and what each delivered.
fn through_both(policy: &str, conversations: &[Conversation<'_>]) -> (Outcome, Outcome) {
    let milter = MailEnv::start(Socket::Unix, policy);
    let behind_postfix = run(
        &|| milter.smtp(),
        &|n| milter.wait_delivered(n),
        conversations,
    );
    drop(milter);

    let proxy = ProxyEnv::start(
        &format!(
            "{policy}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
        ),
        &[&[]],
    );
    let in_front = run(
        &|| proxy.smtp(),
        &|n| {
            crate::support::wait_for_messages(n, || {
                crate::support::sink_files(&proxy.sinks[0].dir.join("mail"))
                    .iter()
                    .map(|p| std::fs::read(p).unwrap())
                    .collect()
            })
        },
        conversations,
    );
    (behind_postfix, in_front)
}

/// The six conversations of the first test.
fn conversations(long_subject: &str) -> Vec<Conversation<'static>> {
    vec![
        (
            vec!["b@rcpt.example"],
            message("hello", "nothing sensitive here"),
        ),
        (
            vec!["b@rcpt.example"],
            message("order", "please charge 4111 1111 1111 1111 today"),
        ),
        (
            vec!["b@rcpt.example"],
            message("ssn", "my ssn is 078-05-1121"),
        ),
        (
            vec!["x@other.example", "b@rcpt.example"],
            message("two", "one recipient is not ours"),
        ),
        (
            vec!["x@other.example"],
            message("none", "no recipient is ours"),
        ),
        (
            vec!["b@rcpt.example"],
            message(long_subject, "a long subject"),
        ),
    ]
}

#[test]
fn both_doors_answer_and_deliver_the_same() {
    let long_subject = vec!["word"; 300].join(" ");
    let ((milter_heard, milter_delivered), (proxy_heard, proxy_delivered)) =
        through_both(POLICY, &conversations(&long_subject));

    assert_eq!(milter_heard, proxy_heard, "what the client heard");
    assert_eq!(milter_delivered.len(), 4, "{milter_heard:#?}");
    assert_eq!(milter_delivered, proxy_delivered, "what was delivered");
    // What the policy did, in both.
    let card = proxy_delivered
        .iter()
        .find(|m| m.contains("Subject: order"))
        .expect("the card message was delivered");
    assert!(
        card.contains("**** **** **** 1111") && card.contains("X-Postern-Rulesets: pci"),
        "{card}"
    );
    assert!(
        proxy_delivered
            .iter()
            .all(|m| m.contains("X-Postern-Verdict: continue")),
        "{proxy_delivered:#?}"
    );
    assert!(proxy_heard[2].end.starts_with("5"), "{proxy_heard:#?}");
    assert!(
        proxy_heard[3].rcpt[0].starts_with("554 5.7.1"),
        "{proxy_heard:#?}"
    );
}

/// In a dry run both doors let everything through unchanged, saying what they would have
/// done only in the log and the trace header's verdict.
#[test]
fn a_dry_run_lets_the_same_through_both_doors() {
    let long_subject = vec!["word"; 300].join(" ");
    let policy = POLICY.replace("[scan]\n", "[scan]\ndry_run = true\n");
    let ((milter_heard, milter_delivered), (proxy_heard, proxy_delivered)) =
        through_both(&policy, &conversations(&long_subject));
    assert_eq!(milter_heard, proxy_heard, "what the client heard");
    assert_eq!(milter_delivered, proxy_delivered, "what was delivered");
    assert!(
        proxy_heard.iter().all(|h| h.end.starts_with("250")),
        "{proxy_heard:#?}"
    );
    assert_eq!(proxy_delivered.len(), 6, "{proxy_heard:#?}");
    let card = proxy_delivered
        .iter()
        .find(|m| m.contains("Subject: order"))
        .expect("the card message was delivered");
    assert!(
        card.contains("4111 1111 1111 1111") && !card.contains("X-Postern-Rulesets"),
        "{card}"
    );
}

/// The client (127.0.0.1 in both doors) is in a refused network, and the refusal is delayed
/// until RCPT: both doors let HELO and MAIL through and refuse every recipient the same way.
/// Values protected with format-preserving encryption come out the same from both doors.
#[test]
fn a_delayed_ip_refusal_and_protected_values_are_the_same_in_both_doors() {
    let refused = "[connection]\nip_address_rejection = [\"127.0.0.0/8\"]\n\
                   delayed_rejection_state = \"rcpt\"\n";
    let one = vec![(vec!["b@rcpt.example"], message("hello", "hi"))];
    let ((milter_heard, milter_delivered), (proxy_heard, proxy_delivered)) =
        through_both(refused, &one);
    assert_eq!(milter_heard, proxy_heard);
    assert!(
        proxy_heard[0].rcpt[0].starts_with("554 5.7.1") && proxy_heard[0].end == "-",
        "{proxy_heard:#?}"
    );
    assert!(milter_delivered.is_empty() && proxy_delivered.is_empty());

    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("protect.key");
    std::fs::write(&key, format!("{}\n", "5e".repeat(32))).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let protect = format!(
        "[[ruleset]]\nname = \"pci\"\n[[ruleset.rule]]\nname = \"cards\"\n\
         targets = [\"subject\", \"body\"]\ndetector = \"card_number\"\naction = \"protect\"\n\
         key_file = \"{}\"\n",
        key.display()
    );
    let card = vec![(
        vec!["b@rcpt.example"],
        message("order", "please charge 4111 1111 1111 1111 today"),
    )];
    let ((milter_heard, milter_delivered), (proxy_heard, proxy_delivered)) =
        through_both(&protect, &card);
    assert_eq!(milter_heard, proxy_heard);
    assert_eq!(milter_delivered, proxy_delivered, "the same ciphertext");
    let delivered = &proxy_delivered[0];
    assert!(
        !delivered.contains("4111 1111 1111 1111") && delivered.contains("X-Postern-Rulesets: pci"),
        "{delivered}"
    );
}
