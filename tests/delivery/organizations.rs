//! Several organizations on one gateway: acme masks card numbers, globex redacts them and
//! has its own relay target; a recipient of neither gets the message as it came. One message
//! to all three arrives differently at each, through both doors, and never crosses; a route
//! that fails defers the message and the retry delivers only what is missing; an acme user
//! cannot get globex's signature; tracking and metrics name the organizations.

use crate::support::faulty::{Faults, FaultyTarget, Taken};
use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, Smtp, Socket, free_port, get};

const CARD: &str = "4111 1111 1111 1111";

/// The organizations, their rulesets and globex's route (`globex-mx` on `globex_port`).
fn organizations(globex_port: u16) -> String {
    format!(
        r#"
[[relay_target]]
name = "globex-mx"
host = "127.0.0.1"
port = {globex_port}
divert_only = true

[[organization]]
name = "acme"
domains = ["acme.test"]

[[organization]]
name = "globex"
domains = ["globex.test", "*.globex.test"]
relay_targets = ["globex-mx"]

[[ruleset]]
name = "acme-cards"
organizations = ["acme"]
[[ruleset.rule]]
name = "mask cards"
targets = ["subject", "body"]
detector = "card_number"
action = "mask"

[[ruleset]]
name = "globex-cards"
organizations = ["globex"]
[[ruleset.rule]]
name = "redact cards"
targets = ["subject", "body"]
detector = "card_number"
action = "redact"
"#
    )
}

/// The proxy in front of `mx` (the ordinary target) with the organizations; `extra` goes
/// first in the file.
fn proxy(mx: u16, globex: u16, extra: &str) -> String {
    format!(
        "hostname = \"gw.postern.test\"\n{extra}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         auth_over_plaintext = true\n\
         [[relay_target]]\nname = \"mx\"\nhost = \"127.0.0.1\"\nport = {mx}\n{}",
        organizations(globex)
    )
}

fn message(id: &str) -> Vec<u8> {
    format!(
        "From: a@sender.example\r\nTo: x@acme.test, y@eu.globex.test, z@example.test\r\n\
         Message-ID: <{id}@sender.example>\r\nDate: Sun, 6 Dec 2026 08:00:00 +0000\r\n\
         Subject: order\r\n\r\nplease charge {CARD} today\r\n"
    )
    .into_bytes()
}

/// One transaction from a@sender.example to `recipients`, every command accepted; the reply
/// to the end of data.
fn send(mut smtp: Smtp, recipients: &[&str], message: &[u8]) -> String {
    smtp.send_to("a@sender.example", recipients, message)
}

/// The one transaction of `taken` for `recipient`, as text.
fn version_for(taken: &[Taken], recipient: &str) -> String {
    let mut found = taken
        .iter()
        .filter(|t| t.recipients.iter().any(|r| r == recipient));
    let t = found
        .next()
        .unwrap_or_else(|| panic!("nothing for {recipient}"));
    assert!(found.next().is_none(), "{recipient} got the message twice");
    assert_eq!(t.recipients, [recipient], "one organization per version");
    String::from_utf8_lossy(&t.message).into_owned()
}

fn assert_acme(text: &str) {
    assert!(text.contains("**** **** **** 1111"), "acme masks:\n{text}");
    assert!(
        !text.contains(CARD) && !text.contains("[redacted]"),
        "{text}"
    );
    assert!(text.contains("X-Postern-Rulesets: acme-cards"), "{text}");
}

fn assert_globex(text: &str) {
    assert!(text.contains("please charge [redacted] today"), "{text}");
    assert!(!text.contains(CARD) && !text.contains("1111"), "{text}");
    assert!(text.contains("X-Postern-Rulesets: globex-cards"), "{text}");
}

fn assert_untouched(text: &str) {
    assert!(
        text.contains(&format!("please charge {CARD} today")),
        "{text}"
    );
    assert!(!text.contains("X-Postern-Rulesets"), "{text}");
}

/// Proxy door: one message to acme, globex and an outside recipient leaves as three
/// transactions, each with its organization's version; tracking and metrics name each
/// recipient's organization.
#[test]
fn proxy_each_organization_receives_its_own_version() {
    let mx = FaultyTarget::start(Faults::default());
    let globex = FaultyTarget::start(Faults::default());
    let metrics = free_port();
    let extra = format!(
        "[tracking]\nstore = \"sqlite\"\npath = \"tracking.sqlite\"\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
    );
    let env = ProxyEnv::start(&proxy(mx.port, globex.port, &extra), &[]);
    let recipients = ["x@acme.test", "y@eu.globex.test", "z@example.test"];
    let reply = send(env.smtp(), &recipients, &message("split"));
    assert!(reply.starts_with("250"), "{reply}");

    let taken = mx.taken();
    assert_eq!(
        taken.len(),
        2,
        "acme's and the outside recipient's versions"
    );
    assert_acme(&version_for(&taken, "x@acme.test"));
    assert_untouched(&version_for(&taken, "z@example.test"));
    let taken = globex.taken();
    assert_eq!(taken.len(), 1, "globex's version only through its route");
    let theirs = version_for(&taken, "y@eu.globex.test");
    assert_globex(&theirs);
    assert!(
        theirs.starts_with("Received: from client.postern.test")
            && theirs.contains("by gw.postern.test"),
        "the proxy's hop is recorded in what Postern delivers itself too:\n{theirs}"
    );

    // Tracking: each recipient's organization; --organization finds globex's record only.
    let record = env.tracked("y@eu.globex.test");
    assert_eq!(record["organization"], "globex", "{record}");
    assert_eq!(record["outcome"], "relayed", "{record}");
    assert_eq!(record["relay_target"], "globex-mx", "{record}");
    assert_eq!(env.tracked("x@acme.test")["organization"], "acme");
    assert!(env.tracked("z@example.test")["organization"].is_null());
    let out = crate::support::proxy::postern()
        .args(["track", "--config", &env.path("postern.toml")])
        .args(["--format", "json", "--organization", "globex"])
        .output()
        .unwrap();
    let records: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: Vec<&str> = records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(found, ["y@eu.globex.test"]);

    let text = get(metrics, "/metrics", None);
    for line in [
        "postern_organization_messages_total{organization=\"acme\",verdict=\"continue\"} 1",
        "postern_organization_messages_total{organization=\"globex\",verdict=\"continue\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    env.wait_for_log("organizations=\"acme,globex\"");

    // Only globex's recipient: nothing for the proxy's own transaction; the client hears
    // globex's target.
    let reply = send(env.smtp(), &["w@globex.test"], &message("globex-only"));
    assert!(reply.starts_with("250"), "{reply}");
    assert_eq!(
        mx.taken().len(),
        2,
        "nothing more through the ordinary target"
    );
    assert_globex(&version_for(&globex.taken(), "w@globex.test"));

    // Two identical messages without a Message-ID may be two messages: each reaches globex
    // (the ledger of routes names a message by its Message-ID and text).
    let twin = b"From: a@sender.example\r\nSubject: twin\r\n\r\nsame\r\n";
    for _ in 0..2 {
        let reply = send(env.smtp(), &["x@acme.test", "y@eu.globex.test"], twin);
        assert!(reply.starts_with("250"), "{reply}");
    }
    assert_eq!(globex.taken().len(), 4, "each twin reached globex");
}

/// Proxy door: globex's version is delivered, then the ordinary target defers acme's: the
/// client hears 451. Sent again once the target is fixed, acme gets its version and globex
/// is not sent its version a second time (the ledger of routes).
#[test]
fn proxy_a_failed_version_is_retried_without_doubling_the_others() {
    let deferring = FaultyTarget::start(Faults {
        end_reply: Some("451 4.3.0 Error: try again later"),
        ..Faults::default()
    });
    let mx = FaultyTarget::start(Faults::default());
    let globex = FaultyTarget::start(Faults::default());
    let env = ProxyEnv::start(&proxy(deferring.port, globex.port, ""), &[]);
    let recipients = ["x@acme.test", "y@eu.globex.test"];
    let first = send(env.smtp(), &recipients, &message("retry"));
    assert!(first.starts_with("451"), "{first}");
    assert_eq!(globex.taken().len(), 1, "globex's version went first");

    env.reload(&proxy(mx.port, globex.port, ""));
    let again = send(env.smtp(), &recipients, &message("retry"));
    assert!(again.starts_with("250"), "{again}");
    assert_acme(&version_for(&mx.taken(), "x@acme.test"));
    assert_globex(&version_for(&globex.taken(), "y@eu.globex.test"));
    env.wait_for_log("already handed to this route on an earlier attempt");

    // globex's target refuses its version for good: the client hears it at once (not a 451
    // retried for days), and acme's version is not sent either.
    let strict = FaultyTarget::start(Faults {
        end_reply: Some("554 5.7.1 content refused here"),
        ..Faults::default()
    });
    env.reload(&proxy(mx.port, strict.port, ""));
    let refused = send(env.smtp(), &recipients, &message("refused"));
    assert!(
        refused.starts_with("554 5.7.1") && refused.contains("content refused here"),
        "{refused}"
    );
    assert_eq!(
        mx.taken().len(),
        1,
        "acme's version of the refused message was not sent"
    );

    // acme's own size limit refuses what globex's recipients could have had.
    let limited = proxy(mx.port, globex.port, "").replace(
        "domains = [\"acme.test\"]\n",
        "domains = [\"acme.test\"]\nmax_message_size = 100\n",
    );
    env.reload(&limited);
    let big = send(env.smtp(), &recipients, &message("big"));
    assert!(
        big.starts_with("552 5.3.4") && big.contains("of organization acme"),
        "{big}"
    );
    assert_eq!(
        globex.taken().len(),
        1,
        "nothing of the refused message left"
    );
}

/// Proxy door: the users of acme's users file authenticate; such a user gets acme's
/// signature and never globex's, even with a globex address in From.
#[test]
fn proxy_an_organizations_user_cannot_get_another_organizations_signature() {
    let keys = crate::support::dkim::DkimKeys::start();
    let users = tempfile::tempdir().unwrap();
    crate::support::proxy::users_file(users.path());
    let mx = FaultyTarget::start(Faults::default());
    let globex = FaultyTarget::start(Faults::default());
    let signers = format!(
        "[[dkim_signer]]\ndomain = \"acme.test\"\nselector = \"s\"\nkey_file = \"{key}\"\n\
         users = [\"*\"]\norganization = \"acme\"\n\
         [[dkim_signer]]\ndomain = \"globex.test\"\nselector = \"s\"\nkey_file = \"{key}\"\n\
         users = [\"*\"]\norganization = \"globex\"\n",
        key = keys.key("ed25519").display()
    );
    let config = proxy(mx.port, globex.port, &signers).replace(
        "domains = [\"acme.test\"]\n",
        &format!(
            "domains = [\"acme.test\"]\nauth_users_file = \"{}/users\"\n",
            users.path().display()
        ),
    );
    let env = ProxyEnv::start(&config, &[]);
    let from = |author: &str| {
        let mut smtp = env.smtp();
        smtp.command("EHLO client.postern.test").unwrap();
        let r = smtp.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
        assert!(r.starts_with("235"), "{r}");
        let m = format!("From: {author}\r\nSubject: hello\r\n\r\nhi\r\n");
        let reply = smtp.transaction("a@sender.example", "b@example.test", m.as_bytes());
        assert!(reply.starts_with("250"), "{reply}");
    };
    from("alice@globex.test");
    from("alice@acme.test");
    let taken = mx.taken();
    assert_eq!(taken.len(), 2);
    let text: Vec<String> = taken
        .iter()
        .map(|t| String::from_utf8_lossy(&t.message).into_owned())
        .collect();
    assert!(!text[0].contains("DKIM-Signature"), "{}", text[0]);
    assert!(text[1].contains("d=acme.test"), "{}", text[1]);
    env.wait_for_log("not signed");
}

/// Proxy door: each version is ARC-sealed by its organization's sealer; what no organization's
/// sealer covers, by the sealer without organization (here: nothing, as the outside
/// recipient's version is not transformed and sealers seal only what Postern changed).
#[test]
fn proxy_each_version_is_sealed_by_its_organizations_sealer() {
    let keys = crate::support::dkim::DkimKeys::start();
    let mx = FaultyTarget::start(Faults::default());
    let globex = FaultyTarget::start(Faults::default());
    let sealer = |domain: &str, organization: &str| {
        format!(
            "[[arc_sealer]]\ndomain = \"{domain}\"\nselector = \"s\"\nkey_file = \"{}\"\n{organization}",
            keys.key("ed25519").display()
        )
    };
    let extra = format!(
        "[dns]\nnameservers = [\"127.0.0.1:{}\"]\n[authentication]\narc_verify = true\n{}{}{}",
        keys.port,
        sealer("gw.test", ""),
        sealer("acme.test", "organization = \"acme\"\n"),
        sealer("globex.test", "organization = \"globex\"\n"),
    );
    let env = ProxyEnv::start(&proxy(mx.port, globex.port, &extra), &[]);
    let recipients = ["x@acme.test", "y@eu.globex.test", "z@example.test"];
    let reply = send(env.smtp(), &recipients, &message("sealed"));
    assert!(reply.starts_with("250"), "{reply}");
    let sealed_by = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("ARC-Seal:"))
            .and_then(|l| l.split("d=").nth(1))
            .map(|d| d.split(';').next().unwrap().trim().to_owned())
    };
    let taken = mx.taken();
    let acme = version_for(&taken, "x@acme.test");
    assert_acme(&acme);
    assert_eq!(sealed_by(&acme).as_deref(), Some("acme.test"), "{acme}");
    let outside = version_for(&taken, "z@example.test");
    assert_eq!(sealed_by(&outside), None, "{outside}");
    let theirs = version_for(&globex.taken(), "y@eu.globex.test");
    assert_globex(&theirs);
    assert_eq!(
        sealed_by(&theirs).as_deref(),
        Some("globex.test"),
        "{theirs}"
    );
}

/// Behind Postfix: Postfix queues acme's version; globex's recipient leaves Postfix's
/// envelope and gets globex's version through globex's route. While globex's route refuses,
/// the client hears 4xx and nothing is delivered.
#[test]
fn behind_postfix_the_mta_carries_one_version_and_postern_the_other() {
    let refusing = FaultyTarget::start(Faults {
        mail_reply: Some("451 4.3.0 Error: try again later"),
        ..Faults::default()
    });
    let globex = FaultyTarget::start(Faults::default());
    let env = MailEnv::start(Socket::Unix, &organizations(refusing.port));
    let recipients = ["x@acme.test", "y@eu.globex.test"];
    let reply = send(env.smtp(), &recipients, &message("milter"));
    assert!(reply.starts_with("451"), "{reply}");
    env.assert_nothing_delivered();

    env.write_config(&organizations(globex.port));
    env.hup_postern();
    env.wait_for_log("configuration reloaded");
    let reply = send(env.smtp(), &recipients, &message("milter"));
    assert!(reply.starts_with("250"), "{reply}");
    let got = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(got.contains("X-Rcpt-Args: <x@acme.test>"), "{got}");
    assert!(!got.contains("globex.test>"), "{got}");
    assert_acme(&got);
    assert_globex(&version_for(&globex.taken(), "y@eu.globex.test"));
    env.wait_for_log("ruleset=organization rule=globex relay_target=globex-mx");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        env.delivered().len(),
        1,
        "Postfix delivered globex's recipient"
    );
}

/// check-config refuses a domain two organizations claim, naming both.
#[test]
fn a_domain_belongs_to_one_organization() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        "[[organization]]\nname = \"acme\"\ndomains = [\"acme.test\"]\n\
         [[organization]]\nname = \"globex\"\ndomains = [\"globex.test\", \"ACME.test\"]\n",
    )
    .unwrap();
    let (ok, out) =
        crate::support::run_postern(&["check-config", "--config", &config.display().to_string()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(":6:") && out.contains("organization[1].domains"),
        "{out}"
    );
    assert!(
        out.contains("acme.test is claimed by organization \"acme\" too"),
        "{out}"
    );
}
