//! Delivery semantics of the proxy door under upstream faults (invariant 1): a recipient that
//! heard 250 at RCPT, in a transaction that heard 250 at its end, reaches the relay targets
//! exactly once; every other outcome is a 4xx or 5xx the client saw. Each fault runs against
//! one target and against two targets in priority order (the faulty one first), through a
//! scriptable target (`crate::support::faulty`) that counts what it took.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use crate::support::faulty::{Faults, FaultyTarget};
use crate::support::proxy::ProxyEnv;

const RECIPIENTS: [&str; 3] = ["a@dest.test", "b@dest.test", "c@dest.test"];

const MESSAGE: &str = "From: s@sender.test\r\nTo: a@dest.test\r\nSubject: delivery\r\n\r\nbody\r\n";

/// The proxy in front of `targets` (by priority), with short outbound timeouts so that a stall
/// shows within the test.
fn start(targets: &[&FaultyTarget]) -> ProxyEnv {
    start_with(targets, "", "")
}

/// The same, with extra `[proxy]` and `[delivery]` keys.
fn start_with(targets: &[&FaultyTarget], proxy: &str, delivery: &str) -> ProxyEnv {
    let mut config = format!(
        "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         client_connection_timeout = 20\nclient_protocol_timeout = 20\n\
         client_data_command_timeout = 20\nclient_data_payload_timeout = 20\n{proxy}\n\
         [delivery]\nconnection_timeout = 5\nprotocol_timeout = 2\ndata_timeout = 2\n{delivery}\n",
    );
    for (i, t) in targets.iter().enumerate() {
        config.push_str(&format!(
            "[[relay_target]]\nname = \"t{i}\"\nhost = \"127.0.0.1\"\nport = {}\npriority = {}\n",
            t.port,
            i + 1
        ));
    }
    ProxyEnv::start(&config, &[])
}

/// What the client heard.
#[derive(Debug, Default)]
struct Outcome {
    rcpt: Vec<(&'static str, String)>,
    data: String,
    end: Option<String>,
}

impl Outcome {
    fn accepted(&self) -> Vec<&'static str> {
        self.rcpt
            .iter()
            .filter(|(_, r)| r.starts_with("250"))
            .map(|(a, _)| *a)
            .collect()
    }

    fn end_ok(&self) -> bool {
        self.end.as_deref().is_some_and(|r| r.starts_with("250"))
    }
}

/// One transaction to every recipient of `RECIPIENTS`; the client pauses `upload_pause` in
/// the middle of the message.
fn transaction(env: &ProxyEnv, upload_pause: Duration) -> Outcome {
    let mut smtp = env.smtp();
    assert!(smtp.command("EHLO c.test").unwrap().starts_with("250"));
    let r = smtp.command("MAIL FROM:<s@sender.test>").unwrap();
    assert!(r.starts_with("250"), "MAIL: {r}");
    let mut outcome = Outcome::default();
    for rcpt in RECIPIENTS {
        let reply = smtp.command(&format!("RCPT TO:<{rcpt}>")).unwrap();
        outcome.rcpt.push((rcpt, reply));
    }
    outcome.data = smtp.command("DATA").unwrap();
    if !outcome.data.starts_with("354") {
        return outcome;
    }
    let (head, tail) = MESSAGE.split_at(MESSAGE.len() / 2);
    smtp.writer_mut().write_all(head.as_bytes()).unwrap();
    std::thread::sleep(upload_pause);
    smtp.writer_mut().write_all(tail.as_bytes()).unwrap();
    smtp.writer_mut().write_all(b".\r\n").unwrap();
    outcome.end = smtp.read_reply();
    outcome
}

/// The invariant, over everything the targets took: no recipient twice; after a 250 at the
/// end, exactly the recipients that heard 250; otherwise the client heard 4xx or 5xx.
fn assert_delivered_as_promised(outcome: &Outcome, targets: &[&FaultyTarget]) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for t in targets {
        for m in t.taken() {
            for r in m.recipients {
                *count.entry(r).or_default() += 1;
            }
        }
    }
    for (r, n) in &count {
        assert_eq!(*n, 1, "{r} delivered {n} times; client heard {outcome:?}");
    }
    if outcome.end_ok() {
        let accepted = outcome.accepted();
        assert!(!accepted.is_empty(), "250 without a recipient: {outcome:?}");
        for r in &accepted {
            assert!(
                count.contains_key(*r),
                "{r} heard 250 but was not delivered; client heard {outcome:?}"
            );
        }
        assert_eq!(count.len(), accepted.len(), "{count:?} vs {outcome:?}");
    } else {
        let last = outcome.end.as_deref().unwrap_or(&outcome.data);
        assert!(
            last.starts_with('4') || last.starts_with('5'),
            "the client must hear 4xx or 5xx: {outcome:?}"
        );
    }
}

/// Runs one fault against one target and against two (the faulty one first); `check` sees the
/// outcome, the targets and whether a healthy second target was there.
fn each_arrangement(
    faults: Faults,
    upload_pause: Duration,
    check: impl Fn(&Outcome, &[&FaultyTarget], bool),
) {
    for with_backup in [false, true] {
        let faulty = FaultyTarget::start(faults.clone());
        let healthy = FaultyTarget::start(Faults::default());
        let targets: Vec<&FaultyTarget> = if with_backup {
            vec![&faulty, &healthy]
        } else {
            vec![&faulty]
        };
        let env = start(&targets);
        let outcome = transaction(&env, upload_pause);
        assert_delivered_as_promised(&outcome, &targets);
        check(&outcome, &targets, with_backup);
    }
}

fn no_pause() -> Duration {
    Duration::ZERO
}

/// The case: the target closes when the second RCPT arrives. The client heard 250 for
/// a, so nothing of this transaction may end in 250: it is failed as a whole.
#[test]
fn a_target_closing_at_a_later_rcpt_fails_the_whole_transaction() {
    let faults = Faults {
        close_at_rcpt: Some(2),
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), |outcome, targets, _| {
        assert!(outcome.rcpt[0].1.starts_with("250"), "{outcome:?}");
        assert!(outcome.rcpt[1].1.starts_with("451 4.4.1"), "{outcome:?}");
        assert!(outcome.rcpt[2].1.starts_with("451 4.4.1"), "{outcome:?}");
        assert!(outcome.data.starts_with("451 4.4.1"), "{outcome:?}");
        assert!(targets.iter().all(|t| t.taken().is_empty()));
    });
}

/// A target that stalls past protocol_timeout (2 s) at the second RCPT is a broken one. It
/// stalls 5 s, so that a loaded machine cannot blur the two.
#[test]
fn a_target_stalling_at_a_later_rcpt_fails_the_whole_transaction() {
    let faults = Faults {
        stall_at_rcpt: Some((2, Duration::from_secs(5))),
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), |outcome, targets, _| {
        assert!(outcome.rcpt[0].1.starts_with("250"), "{outcome:?}");
        assert!(outcome.rcpt[1].1.starts_with("451"), "{outcome:?}");
        assert!(outcome.data.starts_with("451"), "{outcome:?}");
        assert!(targets.iter().all(|t| t.taken().is_empty()));
    });
}

/// The target's own refusals reach the client; the rest is delivered once.
#[test]
fn recipients_the_target_refuses_are_answered_with_its_reply() {
    let faults = Faults {
        rcpt_replies: vec![
            (
                "b@dest.test",
                "550 5.1.1 <b@dest.test>: Recipient address rejected",
            ),
            ("c@dest.test", "450 4.2.0 <c@dest.test>: greylisted"),
        ],
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), |outcome, targets, _| {
        assert!(outcome.rcpt[1].1.starts_with("550 5.1.1"), "{outcome:?}");
        assert!(outcome.rcpt[2].1.starts_with("450 4.2.0"), "{outcome:?}");
        assert!(outcome.end_ok(), "{outcome:?}");
        assert_eq!(targets[0].taken()[0].recipients, ["a@dest.test"]);
    });
}

/// After the dot the first target took the message and gave no answer: the client heard 451
/// and no other target saw the message.
fn deferred_and_never_sent_elsewhere(outcome: &Outcome, targets: &[&FaultyTarget], _: bool) {
    let end = outcome.end.as_deref().unwrap_or("");
    assert!(end.starts_with("451 4.4.1"), "{outcome:?}");
    assert_eq!(targets[0].taken().len(), 1);
    assert!(targets[1..].iter().all(|t| t.taken().is_empty()));
}

/// The target takes the message and closes without answering: it may have committed it, so
/// the client hears 451 and the second target never sees the message.
#[test]
fn no_answer_after_the_dot_is_451_and_never_a_second_delivery() {
    let faults = Faults {
        close_after_dot: true,
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), deferred_and_never_sent_elsewhere);
}

/// The answer to the dot comes after data_timeout: the same as no answer.
#[test]
fn a_late_answer_after_the_dot_is_451_and_never_a_second_delivery() {
    let faults = Faults {
        end_reply_delay: Some(Duration::from_secs(4)),
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), deferred_and_never_sent_elsewhere);
}

/// A target that breaks at the DATA command has nothing of the message: the next target gets
/// the whole envelope replayed and the message once; with no other target, 451.
#[test]
fn a_target_breaking_at_data_fails_over_with_the_whole_envelope() {
    let faults = Faults {
        close_at_data: true,
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), |outcome, targets, with_backup| {
        assert_eq!(outcome.accepted().len(), 3, "{outcome:?}");
        assert_eq!(outcome.end_ok(), with_backup, "{outcome:?}");
        if with_backup {
            assert_eq!(targets[1].taken()[0].recipients, RECIPIENTS);
        }
    });
}

/// A target that answers the message with 4xx did not take it: the next one may.
#[test]
fn a_target_deferring_the_message_fails_over() {
    let faults = Faults {
        end_reply: Some("451 4.3.0 Error: queue file write error"),
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), |outcome, targets, with_backup| {
        assert_eq!(outcome.end_ok(), with_backup, "{outcome:?}");
        assert!(targets[0].taken().is_empty());
        if !with_backup {
            let end = outcome.end.as_deref().unwrap_or("");
            assert!(end.starts_with("451"), "{outcome:?}");
        }
    });
}

/// A target that rejects the message for good: its answer reaches the client, no failover.
#[test]
fn a_target_rejecting_the_message_is_final() {
    let faults = Faults {
        end_reply: Some("554 5.7.1 Error: message content rejected"),
        ..Faults::default()
    };
    each_arrangement(faults, no_pause(), |outcome, targets, _| {
        let end = outcome.end.as_deref().unwrap_or("");
        assert!(end.starts_with("554 5.7.1"), "{outcome:?}");
        assert!(targets.iter().all(|t| t.taken().is_empty()));
    });
}

/// The upstream opened at the first RCPT idles out while the client uploads slowly: the
/// connection is opened again and the envelope replayed, and the message is delivered once to
/// every recipient.
#[test]
fn an_upstream_that_idles_out_during_the_upload_is_reopened() {
    let faults = Faults {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Faults::default()
    };
    each_arrangement(
        faults,
        Duration::from_millis(2500),
        |outcome, targets, _| {
            assert!(outcome.end_ok(), "{outcome:?}");
            let taken = targets[0].taken();
            assert_eq!(taken.len(), 1, "the first target is healthy again");
            assert_eq!(taken[0].recipients, RECIPIENTS);
            assert!(
                String::from_utf8_lossy(&taken[0].message).contains("Subject: delivery"),
                "{taken:?}"
            );
        },
    );
}

/// `[delivery] noop_interval`: while the client pauses in its upload longer than the
/// target's idle timeout, NOOPs keep the target's transaction open, so the message goes over
/// the connection that took the recipients; with NOOPs off the target closes and the
/// connection is reopened.
#[test]
fn noops_keep_the_target_open_while_the_client_uploads() {
    for (interval, connections) in [(1, 1), (0, 2)] {
        let target = FaultyTarget::start(Faults {
            idle_timeout: Some(Duration::from_secs(3)),
            ..Faults::default()
        });
        let env = start_with(&[&target], "", &format!("noop_interval = {interval}"));
        let outcome = transaction(&env, Duration::from_secs(5));
        assert!(outcome.end_ok(), "noop_interval = {interval}: {outcome:?}");
        assert_eq!(target.taken().len(), 1);
        assert_eq!(
            target.connections(),
            connections,
            "noop_interval = {interval}"
        );
    }
}

/// A target offering none of SIZE, 8BITMIME, SMTPUTF8.
fn plain_target() -> FaultyTarget {
    FaultyTarget::start(Faults {
        extensions: vec!["PIPELINING", "ENHANCEDSTATUSCODES"],
        ..Faults::default()
    })
}

/// MAIL parameters go on only where the target offers their extension.
#[test]
fn size_and_body_go_only_to_targets_that_offer_them() {
    for (target, offered) in [
        (FaultyTarget::start(Faults::default()), true),
        (plain_target(), false),
    ] {
        let env = start(&[&target]);
        let mut smtp = env.smtp();
        smtp.command("EHLO c.test").unwrap();
        let r = smtp
            .command("MAIL FROM:<s@sender.test> SIZE=120 BODY=8BITMIME")
            .unwrap();
        assert!(r.starts_with("250"), "{r}");
        let r = smtp.command("RCPT TO:<a@dest.test>").unwrap();
        assert!(r.starts_with("250"), "{r}");
        assert!(smtp.command("DATA").unwrap().starts_with("354"));
        smtp.writer_mut()
            .write_all(format!("{MESSAGE}.\r\n").as_bytes())
            .unwrap();
        let end = smtp.read_reply().unwrap();
        assert!(end.starts_with("250"), "{end}");
        let mail = target.taken().remove(0).mail;
        assert_eq!(mail.contains("SIZE=120"), offered, "{mail}");
        assert_eq!(mail.contains("BODY=8BITMIME"), offered, "{mail}");
    }
}

/// Without SMTPUTF8 at the target a non-ASCII recipient is refused with 5.6.7; without
/// 8BITMIME an 8-bit message is deferred with a reply that says why, never passed raw.
#[test]
fn what_a_target_cannot_carry_is_refused_with_a_reason() {
    let target = plain_target();
    let env = start(&[&target]);
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    let r = smtp.command("MAIL FROM:<s@sender.test> SMTPUTF8").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let r = smtp.command("RCPT TO:<jürgen@dest.test>").unwrap();
    assert!(r.starts_with("553 5.6.7"), "{r}");
    let r = smtp.command("RCPT TO:<a@dest.test>").unwrap();
    assert!(r.starts_with("250"), "{r}");
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all("Subject: caf\u{e9}\r\n\r\n8-bit body \u{e9}\r\n.\r\n".as_bytes())
        .unwrap();
    let end = smtp.read_reply().unwrap();
    assert!(end.starts_with("451 4.6.3"), "{end}");
    assert!(target.taken().is_empty());
    // The same message to a target that offers 8BITMIME goes through.
    let good = FaultyTarget::start(Faults::default());
    let env = start(&[&target, &good]);
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    smtp.command("MAIL FROM:<s@sender.test> BODY=8BITMIME")
        .unwrap();
    assert!(
        smtp.command("RCPT TO:<a@dest.test>")
            .unwrap()
            .starts_with("250")
    );
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    smtp.writer_mut()
        .write_all("Subject: caf\u{e9}\r\n\r\n8-bit body \u{e9}\r\n.\r\n".as_bytes())
        .unwrap();
    let end = smtp.read_reply().unwrap();
    assert!(end.starts_with("250"), "{end}");
    assert!(target.taken().is_empty());
    assert_eq!(good.taken().len(), 1);
}

/// The MTA behind the proxy learns the real client: XFORWARD where offered, and a Received
/// field for the hop; each can be turned off.
#[test]
fn the_target_sees_the_real_client() {
    let target = FaultyTarget::start(Faults {
        extensions: vec![
            "PIPELINING",
            "8BITMIME",
            "XFORWARD NAME ADDR PORT PROTO HELO SOURCE IDENT",
        ],
        ..Faults::default()
    });
    let env = start(&[&target]);
    let outcome = transaction(&env, no_pause());
    assert!(outcome.end_ok(), "{outcome:?}");
    let taken = target.taken().remove(0);
    let xforward = taken.xforward.join("\n");
    for attribute in [
        "NAME=[UNAVAILABLE]",
        "ADDR=127.0.0.1",
        "PROTO=ESMTP",
        "HELO=c.test",
        "SOURCE=REMOTE",
        "PORT=",
        "IDENT=",
    ] {
        assert!(
            xforward.contains(attribute),
            "{attribute} missing: {xforward}"
        );
    }
    let text = String::from_utf8(taken.message).unwrap();
    assert!(text.starts_with("Received: from c.test (unknown [127.0.0.1])\r\n\tby gw.postern.test (Postern) with ESMTP id "), "{text}");
    // One id for the session in Received and XFORWARD, and not one a restart would give again:
    // the first is the start time in microseconds.
    let ident: u64 = xforward
        .split("IDENT=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("IDENT is a number: {xforward}"));
    assert!(text.contains(&format!(" id {ident}")), "{text}");
    assert!(ident > 1_700_000_000_000_000, "{ident}");
    assert!(
        text.ends_with(MESSAGE),
        "the message follows unchanged: {text}"
    );

    let env = start_with(&[&target], "received_header = false", "xforward = false");
    let outcome = transaction(&env, no_pause());
    assert!(outcome.end_ok(), "{outcome:?}");
    let taken = target.taken().remove(1);
    assert!(taken.xforward.is_empty(), "{taken:?}");
    assert_eq!(taken.message, MESSAGE.as_bytes());
}

/// XFORWARD and MAIL go to a PIPELINING target in one write, and each reply is read in its
/// place: a transient refusal of either moves on to the next target, which delivers the
/// message once; a permanent one is the client's answer, as without pipelining.
#[test]
fn refusals_of_a_pipelined_xforward_or_mail_are_read_in_their_place() {
    for (xforward_reply, mail_reply, moves_on) in [
        (Some("451 4.3.0 Error: XFORWARD failed"), None, true),
        (None, Some("451 4.3.0 Error: queue file write error"), true),
        (None, Some("550 5.1.8 Error: sender rejected"), false),
    ] {
        let refusing = FaultyTarget::start(Faults {
            extensions: vec!["PIPELINING", "XFORWARD NAME ADDR PROTO HELO"],
            xforward_reply,
            mail_reply,
            ..Faults::default()
        });
        let good = FaultyTarget::start(Faults::default());
        let env = start(&[&refusing, &good]);
        let outcome = transaction(&env, no_pause());
        assert!(refusing.taken().is_empty());
        if moves_on {
            assert_eq!(outcome.accepted(), RECIPIENTS, "{outcome:?}");
            assert!(outcome.end_ok(), "{outcome:?}");
            assert_eq!(good.taken().len(), 1);
        } else {
            assert!(
                outcome.rcpt.iter().all(|(_, r)| r.starts_with("550 5.1.8")),
                "{outcome:?}"
            );
            assert!(good.taken().is_empty());
        }
    }
}

/// The first RCPT goes in one write with XFORWARD and MAIL to a target that offers PIPELINING:
/// its refusal is the first recipient's alone, the target keeps the transaction, and the
/// other recipients and the message go to it.
#[test]
fn a_refusal_of_the_rcpt_pipelined_with_mail_is_that_recipients() {
    let target = FaultyTarget::start(Faults {
        extensions: vec!["PIPELINING", "XFORWARD NAME ADDR PROTO HELO"],
        rcpt_replies: vec![("a@dest.test", "550 5.1.1 Error: no such user a")],
        ..Faults::default()
    });
    let other = FaultyTarget::start(Faults::default());
    let env = start(&[&target, &other]);
    let outcome = transaction(&env, no_pause());
    assert_eq!(
        outcome.rcpt[0].1.trim_end(),
        "550 5.1.1 Error: no such user a",
        "{outcome:?}"
    );
    assert_eq!(outcome.accepted(), ["b@dest.test", "c@dest.test"]);
    assert!(outcome.end_ok(), "{outcome:?}");
    let taken = target.taken();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].recipients, ["b@dest.test", "c@dest.test"]);
    assert_eq!(taken[0].xforward.len(), 1, "{:?}", taken[0].xforward);
    assert!(taken[0].rcpt_with_mail, "RCPT came in the write with MAIL");
    assert!(other.taken().is_empty());
}

/// Messages in flight share `message_memory_budget`: with room for one, a second DATA while
/// the first is uploading gets 452 4.3.1, and goes through once the first is handed on.
#[test]
fn data_beyond_the_memory_budget_is_deferred() {
    let target = FaultyTarget::start(Faults::default());
    let env = start_with(
        &[&target],
        "message_memory_budget = 1048576\n[scan]\nmessage_memory_limit = 1048576",
        "",
    );
    let open = |smtp: &mut crate::support::Smtp| {
        smtp.command("EHLO c.test").unwrap();
        smtp.command("MAIL FROM:<s@sender.test>").unwrap();
        let r = smtp.command("RCPT TO:<a@dest.test>").unwrap();
        assert!(r.starts_with("250"), "{r}");
        smtp.command("DATA").unwrap()
    };
    let mut first = env.smtp();
    assert!(open(&mut first).starts_with("354"));
    let mut second = env.smtp();
    let r = open(&mut second);
    assert!(r.starts_with("452 4.3.1"), "{r}");
    first
        .writer_mut()
        .write_all(format!("{MESSAGE}.\r\n").as_bytes())
        .unwrap();
    assert!(first.read_reply().unwrap().starts_with("250"));
    let r = second.command("DATA").unwrap();
    assert!(r.starts_with("354"), "{r}");
    second
        .writer_mut()
        .write_all(format!("{MESSAGE}.\r\n").as_bytes())
        .unwrap();
    assert!(second.read_reply().unwrap().starts_with("250"));
    assert_eq!(target.taken().len(), 2);
}

/// A message larger than message_memory_limit is relayed from the spool, in pieces, exactly.
#[test]
fn a_spooled_message_is_relayed_exactly() {
    let target = FaultyTarget::start(Faults::default());
    let env = start_with(&[&target], "[scan]\nmessage_memory_limit = 65536", "");
    let mut message = String::from("Subject: big\r\n\r\n");
    for i in 0..20_000 {
        message.push_str(&format!(
            "line {i:05} of a message that is spooled to disk\r\n"
        ));
    }
    message.push_str(".starts with a dot\r\n");
    assert!(message.len() > 10 * 65536, "the message is spooled");
    let mut smtp = env.smtp();
    let reply = smtp.send("s@sender.test", "a@dest.test", message.as_bytes());
    assert!(reply.starts_with("250"), "{reply}");
    let taken = target.taken().remove(0).message;
    let relayed = crate::support::proxy::without_postern_received(&taken);
    assert_eq!(relayed.len(), message.len());
    assert!(relayed == message.as_bytes(), "the relayed message differs");
}

/// Address hiding through the proxy: the target's refusals (4xx and 5xx) count; after
/// max_failed_addresses (3) every recipient, a valid one too, hears a temporary refusal with
/// the same text, which names only its own address.
#[test]
fn hidden_recipients_get_a_temporary_answer_that_names_nobody_else() {
    let target = FaultyTarget::start(Faults {
        rcpt_replies: vec![
            (
                "nosuch1@dest.test",
                "550 5.1.1 <nosuch1@dest.test>: Recipient address rejected: User unknown",
            ),
            (
                "nosuch2@dest.test",
                "450 4.2.1 <nosuch2@dest.test>: mailbox busy",
            ),
            (
                "nosuch3@dest.test",
                "550 5.1.1 <nosuch3@dest.test>: Recipient address rejected: User unknown",
            ),
        ],
        ..Faults::default()
    });
    let env = start(&[&target]);
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    smtp.command("MAIL FROM:<s@sender.test>").unwrap();
    for n in 1..=3 {
        let r = smtp
            .command(&format!("RCPT TO:<nosuch{n}@dest.test>"))
            .unwrap();
        assert!(!r.starts_with("250"), "{r}");
    }
    let hidden = smtp.command("RCPT TO:<valid@dest.test>").unwrap();
    assert_eq!(
        hidden.trim_end(),
        "450 4.1.1 <valid@dest.test>: Recipient address rejected: User unknown"
    );
}

/// A reload replaces the relay targets for ordinary mail (as it does for diverts): the next
/// message goes to the new target.
#[test]
fn a_reload_moves_ordinary_mail_to_the_new_targets() {
    let old = FaultyTarget::start(Faults::default());
    let new = FaultyTarget::start(Faults::default());
    let env = start(&[&old]);
    let send = || {
        env.smtp()
            .send("s@sender.test", "a@dest.test", MESSAGE.as_bytes())
    };
    assert!(send().starts_with("250"));
    let config = std::fs::read_to_string(env.dir.path().join("postern.toml"))
        .unwrap()
        .replace(
            &format!("port = {}\n", old.port),
            &format!("port = {}\n", new.port),
        );
    env.reload(&config);
    assert!(send().starts_with("250"));
    assert_eq!((old.taken().len(), new.taken().len()), (1, 1));
}

/// A reload applies to a running proxy everything but its listeners: the next conversation
/// uses the new relay targets, the new users file and the new timeouts.
#[test]
fn a_reload_applies_relay_targets_users_and_timeouts() {
    let old = FaultyTarget::start(Faults::default());
    let new = FaultyTarget::start(Faults::default());
    let users = tempfile::tempdir().unwrap();
    let alice = crate::support::proxy::users_file(users.path());
    // bob has alice's password ("secret"), in a second file.
    let hash = std::fs::read_to_string(&alice)
        .unwrap()
        .replace("alice:", "bob:");
    let bob = users.path().join("bob");
    std::fs::write(&bob, hash).unwrap();
    let env = start_with(
        &[&old],
        &format!(
            "auth_users_file = \"{}\"\nauth_over_plaintext = true\n",
            alice.display()
        ),
        "",
    );
    let auth = |plain: &str| {
        let mut smtp = env.smtp();
        smtp.command("EHLO client.postern.test").unwrap();
        smtp.command(&format!("AUTH PLAIN {plain}")).unwrap()
    };
    const ALICE: &str = "AGFsaWNlAHNlY3JldA=="; // \0alice\0secret
    const BOB: &str = "AGJvYgBzZWNyZXQ="; // \0bob\0secret
    assert!(auth(ALICE).starts_with("235"));
    assert!(auth(BOB).starts_with("535"));

    let config = std::fs::read_to_string(env.dir.path().join("postern.toml"))
        .unwrap()
        .replace(
            &format!("port = {}\n", old.port),
            &format!("port = {}\n", new.port),
        )
        .replace(&alice.display().to_string(), &bob.display().to_string())
        .replace(
            "client_connection_timeout = 20",
            "client_connection_timeout = 1",
        );
    env.reload(&config);

    assert!(auth(BOB).starts_with("235"), "the new users file");
    assert!(auth(ALICE).starts_with("535"), "the old users file is gone");
    let r = env
        .smtp()
        .send("s@sender.test", "a@dest.test", MESSAGE.as_bytes());
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(
        (old.taken().len(), new.taken().len()),
        (0, 1),
        "the new relay target"
    );
    let mut idle = env.smtp();
    let started = std::time::Instant::now();
    let r = idle.read_reply().unwrap();
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the new connection timeout (1 s, was 20 s): {:?}",
        started.elapsed()
    );
}

/// A target that refuses Postern's own credentials is Postern's fault, not the sender's: the
/// client hears 451 4.4.1 (before, the target's 535 5.7.8 reached it, a permanent refusal of
/// valid mail), and the log has the target's real answer.
#[test]
fn a_target_refusing_posterns_credentials_defers() {
    let target = FaultyTarget::start(Faults {
        extensions: vec!["PIPELINING", "AUTH PLAIN LOGIN"],
        auth_reply: Some("535 5.7.8 Error: authentication failed: bad credentials"),
        ..Faults::default()
    });
    let secrets = tempfile::tempdir().unwrap();
    let password = secrets.path().join("relay.password");
    std::fs::write(&password, "not-the-password\n").unwrap();
    let config = format!(
        "hostname = \"gw.postern.test\"\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         [delivery]\nconnection_timeout = 5\nprotocol_timeout = 2\n\
         [[relay_target]]\nname = \"auth\"\nhost = \"127.0.0.1\"\nport = {}\nauth = \"plain\"\n\
         username = \"postern\"\npassword_file = \"{}\"\nauth_over_plaintext = true\n",
        target.port,
        password.display()
    );
    let env = ProxyEnv::start(&config, &[]);
    let mut smtp = env.smtp();
    smtp.command("EHLO c.test").unwrap();
    assert!(
        smtp.command("MAIL FROM:<s@sender.test>")
            .unwrap()
            .starts_with("250")
    );
    let r = smtp.command("RCPT TO:<a@dest.test>").unwrap();
    assert!(r.starts_with("451 4.4.1"), "{r}");
    assert!(!r.contains("535") && !r.contains("credentials"), "{r}");
    env.wait_for_log("refused Postern's credentials (535 5.7.8");
    assert!(target.taken().is_empty());
}

/// `check-config --connect` connects to each relay target as a delivery would, AUTH
/// included: a target that takes Postern's credentials is reachable, one that refuses them
/// fails the check with its answer.
#[test]
fn check_config_connects_to_each_relay_target() {
    let good = FaultyTarget::start(Faults {
        extensions: vec!["PIPELINING", "AUTH PLAIN LOGIN"],
        ..Faults::default()
    });
    let refusing = FaultyTarget::start(Faults {
        extensions: vec!["PIPELINING", "AUTH PLAIN LOGIN"],
        auth_reply: Some("535 5.7.8 Error: authentication failed"),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("relay.password");
    std::fs::write(&password, "secret\n").unwrap();
    let file = dir.path().join("postern.toml");
    let check = |port: u16| {
        std::fs::write(
            &file,
            format!(
                "[delivery]\nconnection_timeout = 5\nprotocol_timeout = 2\n\
                 [[relay_target]]\nname = \"t\"\nhost = \"127.0.0.1\"\nport = {port}\nauth = \"plain\"\n\
                 username = \"postern\"\npassword_file = \"{}\"\nauth_over_plaintext = true\n",
                password.display()
            ),
        )
        .unwrap();
        crate::support::run_postern(&[
            "check-config",
            "--connect",
            "-c",
            &file.display().to_string(),
        ])
    };
    let (ok, out) = check(good.port);
    assert!(
        ok && out.contains("reachable (no TLS, AUTH accepted)"),
        "{out}"
    );
    let (ok, out) = check(refusing.port);
    assert!(
        !ok && out.contains("refused Postern's credentials (535 5.7.8"),
        "{out}"
    );
}
