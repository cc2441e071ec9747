//! Address transformation and DKIM signing end to end, in both doors: through the proxy to a
//! real smtp-sink, and behind a real Postfix and a real Sendmail. Signatures are checked by an independent
//! verifier (dkimpy) that reads the keys from a DNS server on loopback (tests/support/dkim.rs).

use crate::support::dkim::DkimKeys;
use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, Mta, Socket, sink_files};

/// Outbound from internal.corp to the world: the domain becomes signer.test in the envelope
/// sender and From; one partner address moved; card numbers masked in bodies.
const POLICY: &str = "\
[[address_transformation]]
name = \"public domain\"
direction = \"outbound\"
applies_to = [\"sender\", \"from\"]
match = \"@internal.corp\"
replace = \"@signer.test\"

[[address_transformation]]
name = \"partner moved\"
applies_to = [\"recipients\", \"to\"]
regex = '^(.+)@old-partner\\.example$'
replace = \"$1@new-partner.example\"

[[ruleset]]
name = \"pci\"
[[ruleset.rule]]
name = \"cards\"
targets = [\"body\"]
detector = \"card_number\"
action = \"mask\"
";

fn signer(keys: &DkimKeys, kind: &str, sign: &str) -> String {
    format!(
        "[[dkim_signer]]\ndomain = \"signer.test\"\nselector = \"{kind}\"\nkey_file = \"{}\"\nsign = \"{sign}\"\n",
        keys.key(kind).display()
    )
}

fn proxy(policy: &str) -> ProxyEnv {
    let config = format!(
        "hostname = \"gw.postern.test\"\n{policy}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
    );
    ProxyEnv::start(&config, &[&[]])
}

/// The raw files a sink holds (its X-Mail-Args/X-Rcpt-Args lines show the envelope).
fn raw(dir: &std::path::Path, n: usize) -> Vec<String> {
    let files = crate::support::wait_for_messages(n, || {
        sink_files(dir)
            .iter()
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    });
    files
        .into_iter()
        .map(|f| String::from_utf8(f).unwrap())
        .collect()
}

const MASKED: &[u8] = b"From: Ann Lee <ann@internal.corp>\r\nTo: Bob <bob@old-partner.example>\r\n\
Subject: the order\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@internal.corp>\r\n\r\n\
Please charge 4111 1111 1111 1111 for the order.\r\n";

#[test]
fn the_proxy_rewrites_addresses_and_signs_what_it_changed() {
    let keys = DkimKeys::start();
    let env = proxy(&format!(
        "{POLICY}{}[tracking]\nstore = \"sqlite\"\npath = \"{{dir}}/tracking.sqlite\"\n",
        signer(&keys, "rsa", "transformed")
    ));
    let reply = env
        .smtp()
        .send("ann@internal.corp", "bob@old-partner.example", MASKED);
    assert!(reply.starts_with("250"), "{reply}");
    let got = raw(&env.sinks[0].dir.join("mail"), 1).remove(0);
    // The envelope the target got, and the header fields.
    assert!(got.contains("X-Mail-Args: <ann@signer.test>"), "{got}");
    assert!(
        got.contains("X-Rcpt-Args: <bob@new-partner.example>"),
        "{got}"
    );
    assert!(got.contains("\nFrom: Ann Lee <ann@signer.test>\n"), "{got}");
    assert!(
        got.contains("\nTo: Bob <bob@new-partner.example>\n"),
        "{got}"
    );
    assert!(got.contains("**** **** **** 1111"), "{got}");
    assert!(got.contains("DKIM-Signature: v=1; a=rsa-sha256;"), "{got}");
    assert!(
        got.contains("d=signer.test;") && got.contains("s=rsa;"),
        "{got}"
    );
    let (ok, words) = keys.verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
    // The log records both forms.
    env.wait_for_log("rewritten=sender -> <ann@signer.test>, <bob@old-partner.example> -> <bob@new-partner.example>");

    // Tracking keeps both forms: the addresses the client gave and those relayed.
    let record = env.tracked("bob@old-partner.example");
    assert_eq!(record["sender"], "ann@internal.corp", "{record}");
    assert_eq!(record["relayed_sender"], "ann@signer.test", "{record}");
    assert_eq!(
        record["relayed_recipient"], "bob@new-partner.example",
        "{record}"
    );
    assert_eq!(record["outcome"], "relayed", "{record}");

    // Changed after signing: the verifier notices (the test can fail).
    let tampered = got.replace("for the order", "for the other");
    assert!(
        !keys.verify(tampered.as_bytes()).0,
        "a changed body still verified"
    );

    // Nothing to change: with sign = "transformed" it leaves as it came, unsigned.
    let untouched =
        b"From: carl@signer.test\r\nTo: dora@else.example\r\nSubject: hi\r\n\r\nhello\r\n";
    let reply = env
        .smtp()
        .send("carl@signer.test", "dora@else.example", untouched);
    assert!(reply.starts_with("250"), "{reply}");
    // Both may arrive within one second: the sink's file names do not order them.
    let delivered = env.sinks[0]
        .wait_delivered(2)
        .into_iter()
        .find(|m| m.windows(11).any(|w| w == b"Subject: hi"))
        .expect("the second message");
    assert_eq!(
        delivered,
        crate::support::proxy::as_stored(untouched),
        "an untouched message changed"
    );
}

#[test]
fn the_proxy_signs_every_outbound_message_with_ed25519_and_no_inbound_one() {
    let keys = DkimKeys::start();
    let env = proxy(&signer(&keys, "ed25519", "all"));
    let message =
        b"From: carl@mail.signer.test\r\nTo: dora@else.example\r\nSubject: hi\r\n\r\nhello\r\n";
    let reply = env
        .smtp()
        .send("carl@mail.signer.test", "dora@else.example", message);
    assert!(reply.starts_with("250"), "{reply}");
    let got = raw(&env.sinks[0].dir.join("mail"), 1).remove(0);
    assert!(got.contains("a=ed25519-sha256;"), "{got}");
    assert!(got.contains(":From:From:"), "From is not oversigned: {got}");
    let (ok, words) = keys.verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
    drop(env);

    // The same message from a client outside allowed_relay_sources is inbound: never signed
    // (signing it would vouch for a forged From).
    let env = proxy(&format!(
        "[relay]\nallowed_relay_sources = []\n{}",
        signer(&keys, "ed25519", "all")
    ));
    let reply = env
        .smtp()
        .send("carl@mail.signer.test", "dora@else.example", message);
    assert!(reply.starts_with("250"), "{reply}");
    let got = raw(&env.sinks[0].dir.join("mail"), 1).remove(0);
    assert!(!got.contains("DKIM-Signature"), "{got}");
}

/// Behind an MTA: CHGFROM, DELRCPT + ADDRCPT and CHGHEADER carry the rewritten addresses, and
/// the signature made over the edited message holds after the MTA applied the edits.
fn behind_an_mta_the_envelope_changes_and_the_signature_holds(mta: Mta) {
    let keys = DkimKeys::start();
    let config = format!("{POLICY}{}", signer(&keys, "rsa", "transformed"));
    let env = match mta {
        Mta::Postfix => MailEnv::start(Socket::Unix, &config),
        Mta::Sendmail => MailEnv::sendmail(Socket::Unix, &config),
    };
    let reply = env
        .smtp()
        .send("ann@internal.corp", "bob@old-partner.example", MASKED);
    assert!(reply.starts_with("250"), "{reply}");
    let got = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(got.contains("X-Mail-Args: <ann@signer.test>"), "{got}");
    assert!(
        got.contains("X-Rcpt-Args: <bob@new-partner.example>"),
        "{got}"
    );
    // Only the MTA's own Received field, written before the milter ran, may name the address
    // the client gave.
    assert!(got.matches("old-partner").count() <= 1, "{got}");
    assert!(got.contains("To: Bob <bob@new-partner.example>"), "{got}");
    assert!(got.contains("From: Ann Lee <ann@signer.test>"), "{got}");
    assert!(got.contains("**** **** **** 1111"), "{got}");
    let (ok, words) = keys.verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
}

#[test]
fn behind_postfix_the_envelope_changes_and_the_signature_holds() {
    behind_an_mta_the_envelope_changes_and_the_signature_holds(Mta::Postfix);
}

#[test]
fn behind_sendmail_the_envelope_changes_and_the_signature_holds() {
    behind_an_mta_the_envelope_changes_and_the_signature_holds(Mta::Sendmail);
}

#[test]
fn check_config_refuses_a_replacement_that_makes_no_address() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[address_transformation]]\nmatch = \"@internal.corp\"\nreplace = \"${local}\"\n",
    )
    .unwrap();
    let out = crate::support::proxy::postern()
        .args(["check-config", &file.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("address_transformation[0].replace")
            && text.contains("does not make an address"),
        "{text}"
    );
}

/// check-config prints the record to publish for each signer and for the ARC sealer, the same
/// as openssl makes of the key (integration/dkim publishes what openssl makes).
#[test]
fn check_config_prints_the_record_to_publish() {
    let keys = DkimKeys::start();
    let published = std::fs::read_to_string(keys.dir.path().join("dnsmasq.conf")).unwrap();
    let record = |name: &str| -> String {
        let line = published
            .lines()
            .find(|l| l.starts_with(&format!("txt-record={name},")))
            .unwrap();
        let pieces = line.split_once(',').unwrap().1;
        pieces.split("\",\"").collect::<String>().replace('"', "")
    };
    let file = keys.dir.path().join("postern.toml");
    std::fs::write(
        &file,
        format!(
            "{}{}[[arc_sealer]]\ndomain = \"sender.test\"\nselector = \"sel\"\nkey_file = \"{}\"\n",
            signer(&keys, "rsa", "all"),
            signer(&keys, "ed25519", "all"),
            keys.key("sender").display()
        ),
    )
    .unwrap();
    let out = crate::support::proxy::postern()
        .args(["check-config", &file.display().to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for name in [
        "rsa._domainkey.signer.test",
        "ed25519._domainkey.signer.test",
        "sel._domainkey.sender.test",
    ] {
        let line = format!("publish as TXT at {name}: {}", record(name));
        assert!(text.contains(&line), "{line}\n{text}");
    }
    assert!(
        text.contains(
            "arc sealer:              d=sender.test s=sel rsa-sha256 (transformed messages"
        ),
        "{text}"
    );
}

/// A body line longer than SMTP allows is broken on the way; the signature is made over the
/// broken lines, so it still verifies where the message arrives.
#[test]
fn a_long_body_line_is_broken_before_signing() {
    let keys = DkimKeys::start();
    let env = proxy(&signer(&keys, "ed25519", "all"));
    let long = "x".repeat(2500);
    let message = format!(
        "From: carl@signer.test\r\nTo: dora@else.example\r\nSubject: long\r\n\r\n{long}\r\nend\r\n"
    );
    let reply = env
        .smtp()
        .send("carl@signer.test", "dora@else.example", message.as_bytes());
    assert!(reply.starts_with("250"), "{reply}");
    let got = raw(&env.sinks[0].dir.join("mail"), 1).remove(0);
    assert!(
        got.lines().all(|l| l.len() <= 998),
        "a line too long arrived"
    );
    let (ok, words) = keys.verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
}

/// A signer signs only for the clients it names: an authenticated user may not obtain the
/// signature of a domain it does not belong to by writing that domain in From (before, any
/// outbound client got the signature of whichever domain its From named).
#[test]
fn a_signature_goes_only_to_the_users_its_signer_names() {
    let keys = DkimKeys::start();
    let users = tempfile::tempdir().unwrap();
    let file = crate::support::proxy::users_file(users.path());
    let hash = std::fs::read_to_string(&file).unwrap();
    // Three users with the password "secret".
    let hash = hash.trim().trim_start_matches("alice:");
    std::fs::write(
        &file,
        format!(
            "alice:{hash}
ann@signer.test:{hash}
mallory@other.test:{hash}
"
        ),
    )
    .unwrap();
    let config = |users: &str| {
        format!(
            "hostname = \"gw.postern.test\"\n[relay]\nallowed_relay_sources = []\n{}{users}\n\
             [proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\nauth_users_file = \"{}\"\nauth_over_plaintext = true\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n",
            signer(&keys, "ed25519", "all"),
            file.display()
        )
    };
    // base64 of "\0user\0secret".
    let plain = |user: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0secret"))
    };
    // Sends a message as `user` (the n-th the sink gets); whether it arrived signed, with a
    // signature that holds.
    let send_as = |env: &ProxyEnv, user: &str, n: usize| {
        use std::io::Write as _;
        let mut smtp = env.smtp();
        smtp.command("EHLO client.postern.test").unwrap();
        let r = smtp
            .command(&format!("AUTH PLAIN {}", plain(user)))
            .unwrap();
        assert!(r.starts_with("235"), "{user}: {r}");
        for command in [
            "MAIL FROM:<carl@signer.test>",
            "RCPT TO:<dora@else.example>",
        ] {
            let r = smtp.command(command).unwrap();
            assert!(r.starts_with("250"), "{command}: {r}");
        }
        assert!(smtp.command("DATA").unwrap().starts_with("354"));
        let subject = format!("from {user}");
        let message = format!(
            "From: carl@signer.test\r\nTo: dora@else.example\r\nSubject: {subject}\r\n\r\nhello\r\n.\r\n"
        );
        smtp.writer_mut().write_all(message.as_bytes()).unwrap();
        let r = smtp.read_reply().unwrap();
        assert!(r.starts_with("250"), "{r}");
        // Found by its subject: files written within one second have no order.
        let got = raw(&env.sinks[0].dir.join("mail"), n)
            .into_iter()
            .find(|m| {
                m.lines()
                    .any(|l| l.trim_end() == format!("Subject: {subject}"))
            })
            .expect("the message arrived");
        let signed = got.contains("DKIM-Signature");
        if signed {
            let (ok, words) = keys.verify(got.as_bytes());
            assert!(ok, "{words}\n{got}");
        }
        signed
    };
    // By default: the users named by an address in the signer's domain.
    let env = ProxyEnv::start(&config(""), &[&[]]);
    assert!(send_as(&env, "ann@signer.test", 1), "ann is of signer.test");
    assert!(!send_as(&env, "mallory@other.test", 2), "mallory is not");
    assert!(!send_as(&env, "alice", 3), "a bare name is of no domain");
    env.wait_for_log("not signed (DKIM): this client may not use the domain's signature");
    drop(env);
    // Named users.
    let env = ProxyEnv::start(&config("users = [\"alice\"]\n"), &[&[]]);
    assert!(send_as(&env, "alice", 1));
    assert!(!send_as(&env, "ann@signer.test", 2), "not named");
}

/// A message with a 1,100-character Subject, a longer header field and a body line over the
/// limit, as each door signs it.
fn long_lined() -> String {
    let words = |n: usize, w: &str| vec![w; n].join(" ");
    format!(
        "From: carl@signer.test\r\nTo: dora@else.example\r\nSubject: {}\r\nX-Note: {}\r\n\r\n{}\r\nend\r\n",
        words(220, "long"),
        words(260, "note"),
        "y".repeat(1200)
    )
}

/// Lines longer than a hop lets through are folded (header, before white space) and broken
/// (body) before signing, to the limit of what carries the message: a relay target's lower
/// line_limit in the proxy door (before, it broke lines after signing; a header line over
/// 998 octets stopped the body's breaking, and a long Subject was broken after signing).
#[test]
fn the_proxy_signs_what_fits_its_targets_line_limit() {
    let keys = DkimKeys::start();
    let config = format!(
        "hostname = \"gw.postern.test\"\n{}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\nline_limit = 500\n",
        signer(&keys, "ed25519", "all")
    );
    let env = ProxyEnv::start(&config, &[&[]]);
    let reply = env.smtp().send(
        "carl@signer.test",
        "dora@else.example",
        long_lined().as_bytes(),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = raw(&env.sinks[0].dir.join("mail"), 1).remove(0);
    assert!(
        got.lines().all(|l| l.len() <= 498),
        "a line too long arrived"
    );
    let (ok, words) = keys.verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
    assert!(got.contains("Subject: long long"), "{got}");
}

/// The same behind Postfix: folds go back to the MTA as it handed them over (LF and white
/// space), and the signature holds where Postfix delivers.
#[test]
fn behind_postfix_long_lines_are_folded_before_signing() {
    let keys = DkimKeys::start();
    let env = MailEnv::start(Socket::Unix, &signer(&keys, "rsa", "all"));
    let reply = env.smtp().send(
        "carl@signer.test",
        "dora@else.example",
        long_lined().as_bytes(),
    );
    assert!(reply.starts_with("250"), "{reply}");
    let got = String::from_utf8(env.wait_delivered(1).remove(0)).unwrap();
    assert!(
        got.lines().all(|l| l.len() <= 998),
        "a line too long arrived"
    );
    let (ok, words) = keys.verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
}
