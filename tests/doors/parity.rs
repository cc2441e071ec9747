//! One engine, two doors: the same conversations behind a real Postfix (milter door) and in
//! front of an smtp-sink (proxy door) get the same replies, and what reaches the sink is the
//! same message (Received fields and the sink's own trace aside). Each behaviour here was
//! tested through one door only before: the trace header, a masked card with the ruleset
//! header, a message a ruleset rejects, a recipient relay restriction refuses, a header line
//! longer than SMTP allows.

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

/// The conversations, and what each door delivered, in order.
fn run(
    smtp: &dyn Fn() -> Smtp,
    delivered: &dyn Fn(usize) -> Vec<Vec<u8>>,
) -> (Vec<Heard>, Vec<String>) {
    let long_subject = vec!["word"; 300].join(" ");
    let conversations: Vec<(Vec<&str>, Vec<u8>)> = vec![
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
            message(&long_subject, "a long subject"),
        ),
    ];
    let mut heard = Vec::new();
    let mut expected = 0;
    for (recipients, message) in &conversations {
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

#[test]
fn both_doors_answer_and_deliver_the_same() {
    let milter = MailEnv::start(Socket::Unix, POLICY);
    let (milter_heard, milter_delivered) = run(&|| milter.smtp(), &|n| milter.wait_delivered(n));
    drop(milter);

    let proxy = ProxyEnv::start(
        &format!(
            "{POLICY}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
        ),
        &[&[]],
    );
    let (proxy_heard, proxy_delivered) = run(&|| proxy.smtp(), &|n| {
        crate::support::wait_for_messages(n, || {
            crate::support::sink_files(&proxy.sinks[0].dir.join("mail"))
                .iter()
                .map(|p| std::fs::read(p).unwrap())
                .collect()
        })
    });

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
