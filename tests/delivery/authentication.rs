//! `[authentication]` end to end, in both doors: DKIM, ARC and DMARC verified on arrival and
//! recorded in one Authentication-Results field, DMARC enforced, and an ARC set after a
//! transform. Messages are signed and sealed upstream by an independent signer (dkimpy), the
//! keys and DMARC records come from a DNS server on loopback, and what leaves Postern is
//! checked by dkimpy's own DKIM and ARC verifiers (tests/support/dkim.rs).

use crate::support::dkim::DkimKeys;
use crate::support::proxy::ProxyEnv;
use crate::support::{MailEnv, Socket};

/// Card numbers masked in bodies: the transform that breaks a sender's signature.
const MASKING: &str = "\
[[ruleset]]
name = \"pci\"
[[ruleset.rule]]
name = \"cards\"
targets = [\"body\"]
detector = \"card_number\"
action = \"mask\"
";

/// Verification with DMARC `dmarc`, ARC sealing by signer.test's RSA key, masking.
fn policy(keys: &DkimKeys, dmarc: &str, extra: &str) -> String {
    format!(
        "hostname = \"gw.postern.test\"\n{extra}\n{MASKING}\n\
         [dns]\nnameservers = [\"127.0.0.1:{port}\"]\n\
         [authentication]\nverify_dkim = true\narc_verify = true\ndmarc = \"{dmarc}\"\n\
         [[arc_sealer]]\ndomain = \"signer.test\"\nselector = \"rsa\"\nkey_file = \"{key}\"\n",
        port = keys.port,
        key = keys.key("rsa").display()
    )
}

fn proxy(policy: &str) -> ProxyEnv {
    proxy_with(policy, "")
}

/// The proxy with more `[proxy]` keys.
fn proxy_with(policy: &str, proxy_keys: &str) -> ProxyEnv {
    let config = format!(
        "{policy}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n{proxy_keys}\
         [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n"
    );
    ProxyEnv::start(&config, &[&[]])
}

fn message(from: &str, subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Ann Lee <{from}>\r\nTo: bob@inside.example\r\nSubject: {subject}\r\n\
         Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@postern.test>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// The delivered message whose Subject is `subject`.
fn delivered(messages: Vec<Vec<u8>>, subject: &str) -> String {
    let needle = format!("Subject: {subject}");
    messages
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .find(|m| m.contains(&needle))
        .unwrap_or_else(|| panic!("no delivered message has {needle:?}"))
}

/// Sends `raw` from `from` to bob@inside.example through the proxy, which must accept it;
/// the message found by its `subject` once `n` have been delivered.
fn relayed(env: &ProxyEnv, from: &str, raw: &[u8], n: usize, subject: &str) -> String {
    let reply = env.smtp().send(from, "bob@inside.example", raw);
    assert!(reply.starts_with("250"), "{reply}");
    delivered(env.sinks[0].wait_delivered(n), subject)
}

/// The value of the first `name` field, unfolded.
fn field(message: &str, name: &str) -> String {
    let head = format!("{name}: ");
    let start = std::iter::once(0)
        .chain(message.match_indices('\n').map(|(i, _)| i + 1))
        .find(|&i| message[i..].starts_with(&head))
        .unwrap_or_else(|| panic!("no {name} in\n{message}"));
    let rest = &message[start + head.len()..];
    let mut value = String::new();
    for (i, line) in rest.split('\n').enumerate() {
        if i > 0 && !line.starts_with([' ', '\t']) {
            break;
        }
        value.push_str(line.trim_end_matches('\r').trim_start_matches([' ', '\t']));
        value.push(' ');
    }
    value
}

/// A sender-signed message whose card number Postern masks: the sender's signature breaks
/// (as dkimpy confirms), and what it was on arrival is recorded in Authentication-Results and
/// in an ARC set whose chain dkimpy verifies.
fn a_masked_signed_message_is_sealed(keys: &DkimKeys, got: &str) {
    assert!(got.contains("**** **** **** 1111"), "not masked:\n{got}");
    let results = field(got, "Authentication-Results");
    assert!(results.starts_with("gw.postern.test;"), "{results}");
    assert!(
        results.contains("dkim=pass header.i=@sender.test header.s=sel"),
        "{results}"
    );
    assert!(
        results.contains("dmarc=pass header.from=sender.test policy.dmarc=reject"),
        "{results}"
    );
    assert!(results.contains("arc=none"), "{results}");
    let (sender_ok, words) = keys.verify(got.as_bytes());
    assert!(!sender_ok, "the masked body still verified: {words}");
    let seal = field(got, "ARC-Seal");
    assert!(
        seal.contains("i=1;") && seal.contains("cv=none") && seal.contains("d=signer.test"),
        "{seal}"
    );
    let recorded = field(got, "ARC-Authentication-Results");
    assert!(
        recorded.starts_with("i=1; gw.postern.test;")
            && recorded.contains("dkim=pass header.i=@sender.test"),
        "{recorded}"
    );
    let (chain_ok, words) = keys.arc_verify(got.as_bytes());
    assert!(chain_ok, "{words}\n{got}");
    // The seal covers what left: a changed body breaks it.
    let tampered = got.replace("Pay ****", "Pay ####");
    assert!(
        !keys.arc_verify(tampered.as_bytes()).0,
        "a changed body kept the chain"
    );
}

#[test]
fn the_proxy_records_what_arrived_and_seals_what_it_changed() {
    let keys = DkimKeys::start();
    let env = proxy(&policy(&keys, "enforce", ""));
    let signed = keys.sign_as(
        "sender.test",
        &message("ann@sender.test", "masked", "Pay 4111 1111 1111 1111 now."),
    );
    let got = relayed(&env, "ann@sender.test", &signed, 1, "masked");
    a_masked_signed_message_is_sealed(&keys, &got);

    // A signature that does not hold (a signed field changed after signing) is recorded as
    // failing; untouched, the message is not sealed (seal = "transformed").
    let signed = keys.sign_as(
        "report.test",
        &message("ann@report.test", "forged", "Pay 10 EUR."),
    );
    let forged = String::from_utf8(signed)
        .unwrap()
        .replace("10:00:00 +0000", "11:00:00 +0000");
    let got = relayed(&env, "ann@report.test", forged.as_bytes(), 2, "forged");
    let results = field(&got, "Authentication-Results");
    assert!(
        results.contains("dkim=fail") && results.contains("header.i=@report.test"),
        "{results}"
    );
    assert!(
        results.contains("dmarc=fail")
            && results.contains("header.from=report.test policy.dmarc=none"),
        "{results}"
    );
    assert!(
        !got.contains("ARC-Seal"),
        "an untouched message was sealed:\n{got}"
    );

    // No signature at all, no DMARC record.
    let got = relayed(
        &env,
        "carl@nowhere.test",
        &message("carl@nowhere.test", "plain", "Hello."),
        3,
        "plain",
    );
    let results = field(&got, "Authentication-Results");
    assert!(
        results.contains("dkim=none") && results.contains("dmarc=none"),
        "{results}"
    );
}

/// DMARC's quarantine divert holds when a ruleset ran over the message and changed nothing
/// (the content stage used to clear the diversion): the message goes to the quarantine target
/// only.
#[test]
fn a_dmarc_quarantine_diverts_though_a_ruleset_ran() {
    let keys = DkimKeys::start();
    let config = policy(&keys, "enforce", "").replace(
        "dmarc = \"enforce\"\n",
        "dmarc = \"enforce\"\ndmarc_quarantine_action = \"divert\"\n\
         dmarc_quarantine_relay_targets = [\"quarantine\"]\n",
    );
    let env = ProxyEnv::start(
        &format!(
            "{config}\n[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
             [[relay_target]]\nname = \"sink\"\nhost = \"127.0.0.1\"\nport = {{sink0}}\n\
             [[relay_target]]\nname = \"quarantine\"\nhost = \"127.0.0.1\"\nport = {{sink1}}\n\
             divert_only = true\n"
        ),
        &[&[], &[]],
    );
    let from = "ann@quarantine.test";
    let reply = env.smtp().send(
        from,
        "bob@inside.example",
        &message(from, "quarantined", "Pay now."),
    );
    assert!(reply.starts_with("250"), "{reply}");
    delivered(env.sinks[1].wait_delivered(1), "quarantined");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        env.sinks[0].delivered().is_empty(),
        "not on its way as well"
    );
}

/// DMARC reported by default and enforced for one organization's recipients: a message
/// failing p=reject is refused for inside.example, accepted for lax.example.
#[test]
fn an_organization_enforces_dmarc_where_the_default_reports() {
    let keys = DkimKeys::start();
    let orgs = "[[organization]]\nname = \"inside\"\ndomains = [\"inside.example\"]\n\
                dmarc = \"enforce\"\n\
                [[organization]]\nname = \"lax\"\ndomains = [\"lax.example\"]\n";
    let env = proxy(&policy(&keys, "report", orgs));
    let unsigned = message("ann@sender.test", "spoofed", "Pay now.");
    let reply = env
        .smtp()
        .send("ann@sender.test", "bob@inside.example", &unsigned);
    assert!(
        reply.starts_with("550 5.7.1") && reply.contains("DMARC"),
        "{reply}"
    );
    let reply = env
        .smtp()
        .send("ann@sender.test", "carl@lax.example", &unsigned);
    assert!(reply.starts_with("250"), "reported only: {reply}");
    env.sinks[0].wait_delivered(1);
    env.wait_for_log("for the organizations of every recipient");
}

#[test]
fn the_proxy_enforces_dmarc_as_configured() {
    let keys = DkimKeys::start();
    let env = proxy(&policy(&keys, "enforce", ""));
    // From sender.test (p=reject), signed by nobody: refused, nothing delivered.
    let unsigned = message("ann@sender.test", "spoofed", "Pay now.");
    let reply = env
        .smtp()
        .send("ann@sender.test", "bob@inside.example", &unsigned);
    assert!(
        reply.starts_with("550 5.7.1") && reply.contains("DMARC") && reply.contains("sender.test"),
        "{reply}"
    );
    // p=quarantine with the default action: accepted, recorded.
    let got = relayed(
        &env,
        "ann@quarantine.test",
        &message("ann@quarantine.test", "quarantined", "Pay now."),
        1,
        "quarantined",
    );
    let results = field(&got, "Authentication-Results");
    assert!(
        results.contains("dmarc=fail")
            && results.contains("header.from=quarantine.test policy.dmarc=quarantine"),
        "{results}"
    );
    assert_eq!(
        env.sinks[0].wait_delivered(1).len(),
        1,
        "the spoofed one left"
    );
    env.wait_for_log("check=\"dmarc\"");
    drop(env);

    // The same spoofed message in report mode: delivered, and the tracking record says why.
    let env = proxy(&policy(
        &keys,
        "report",
        "[tracking]\nstore = \"sqlite\"\npath = \"{dir}/tracking.sqlite\"\n",
    ));
    let got = relayed(&env, "ann@sender.test", &unsigned, 1, "spoofed");
    let results = field(&got, "Authentication-Results");
    assert!(
        results.contains("dmarc=fail")
            && results.contains("header.from=sender.test policy.dmarc=reject"),
        "{results}"
    );
    let record = env.tracked("bob@inside.example");
    assert_eq!(
        record["authentication"], "dkim=none dmarc=fail arc=none",
        "{record}"
    );
    drop(env);

    // Enforced, but the client is an internal relay (an exempt connection profile).
    let env = proxy(
        &policy(
            &keys,
            "enforce",
            "[[connection_profile]]\nname = \"internal\"\nclient_hosts = [\"127.0.0.0/8\"]\n\
         relay_control = \"full\"\n",
        )
        .replace(
            "[authentication]\n",
            "[authentication]\nexempt_connection_profiles = [\"internal\"]\n",
        ),
    );
    let reply = env
        .smtp()
        .send("ann@sender.test", "bob@inside.example", &unsigned);
    assert!(reply.starts_with("250"), "{reply}");
    env.wait_for_log("why=\"a client of an exempt connection profile\"");
    drop(env);

    // Enforced, but the client authenticated (exempt_authenticated, the default).
    let users = tempfile::tempdir().unwrap();
    crate::support::proxy::users_file(users.path());
    let env = proxy_with(
        &policy(&keys, "enforce", ""),
        &format!(
            "auth_users_file = \"{}/users\"\nauth_over_plaintext = true\n",
            users.path().display()
        ),
    );
    let mut smtp = env.smtp();
    let ehlo = smtp.command("EHLO client.postern.test").unwrap();
    assert!(ehlo.starts_with("250"), "{ehlo}");
    // alice:secret
    let auth = smtp.command("AUTH PLAIN AGFsaWNlAHNlY3JldA==").unwrap();
    assert!(auth.starts_with("235"), "{auth}");
    let reply = smtp.transaction("ann@sender.test", "bob@inside.example", &unsigned);
    assert!(reply.starts_with("250"), "{reply}");
    env.wait_for_log("why=\"an authenticated client\"");
}

#[test]
fn the_proxy_continues_a_forwarders_chain() {
    let keys = DkimKeys::start();
    let env = proxy(&policy(&keys, "report", ""));
    let signed = keys.sign_as(
        "sender.test",
        &message(
            "ann@sender.test",
            "forwarded",
            "Pay 4111 1111 1111 1111 now.",
        ),
    );
    let mut with_results =
        b"Authentication-Results: mx.forwarder.test; dkim=pass header.d=sender.test\r\n".to_vec();
    with_results.extend_from_slice(&signed);
    let forwarded = keys.forwarded("mx.forwarder.test", &with_results);
    let got = relayed(&env, "list@forwarder.test", &forwarded, 1, "forwarded");
    assert!(got.contains("**** **** **** 1111"), "{got}");
    assert!(
        field(&got, "Authentication-Results").contains("arc=pass"),
        "{got}"
    );
    let seal = field(&got, "ARC-Seal");
    assert!(seal.contains("i=2;") && seal.contains("cv=pass"), "{seal}");
    let (ok, words) = keys.arc_verify(got.as_bytes());
    assert!(ok, "{words}\n{got}");
    assert!(words.contains("i=2"), "{words}");
}

#[test]
fn behind_postfix_what_arrived_is_recorded_and_sealed() {
    let keys = DkimKeys::start();
    let env = MailEnv::start(Socket::Unix, &policy(&keys, "enforce", ""));
    let signed = keys.sign_as(
        "sender.test",
        &message("ann@sender.test", "masked", "Pay 4111 1111 1111 1111 now."),
    );
    let reply = env
        .smtp()
        .send("ann@sender.test", "bob@inside.example", &signed);
    assert!(reply.starts_with("250"), "{reply}");
    let got = delivered(env.wait_delivered(1), "masked");
    a_masked_signed_message_is_sealed(&keys, &got);

    let reply = env.smtp().send(
        "ann@sender.test",
        "bob@inside.example",
        &message("ann@sender.test", "spoofed", "Pay now."),
    );
    assert!(
        reply.starts_with("550 5.7.1") && reply.contains("DMARC"),
        "{reply}"
    );
}
