//! Hostile input against both doors: header floods get a clear refusal at the named bound, in
//! time proportional to their size, and the connection stays usable.

mod support;

use support::proxy::ProxyEnv;
use support::{MailEnv, Socket};

/// A ruleset, so that the content stage would walk the header if the message got that far.
const RULESET: &str = "[[ruleset]]\nname = \"pci\"\n[[ruleset.rule]]\nname = \"cards\"\n\
                       targets = [\"subject\", \"body\"]\ndetector = \"card_number\"\naction = \"mask\"\n";

fn header_flood(fields: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(fields * 24);
    for i in 0..fields {
        m.extend_from_slice(format!("X-Flood-{i:06}: v\r\n").as_bytes());
    }
    m.extend_from_slice(b"Subject: flood\r\n\r\nbody\r\n");
    m
}

#[test]
fn a_header_flood_is_refused_at_max_header_fields_by_the_proxy() {
    let config = format!(
        "hostname = \"gw.postern.test\"\n{RULESET}[proxy]\nlisten = [\"127.0.0.1:{{port}}\"]\n\
         client_data_payload_timeout = 30\n[[relay_target]]\nname = \"sink\"\n\
         host = \"127.0.0.1\"\nport = {{sink0}}\n"
    );
    let env = ProxyEnv::start(&config, &[&[]]);
    let mut smtp = env.smtp();
    let reply = smtp.send("a@sender.test", "b@rcpt.test", &header_flood(150_000));
    assert!(
        reply.starts_with("552 5.3.4 Error: message header has more than max_header_fields (1000) fields"),
        "{reply}"
    );
    // The connection goes on: a normal message after it is delivered.
    for line in ["RSET", "MAIL FROM:<a@sender.test>", "RCPT TO:<b@rcpt.test>"] {
        let r = smtp.command(line).unwrap();
        assert!(r.starts_with("250"), "{line}: {r}");
    }
    assert!(smtp.command("DATA").unwrap().starts_with("354"));
    let r = smtp.command("Subject: fine\r\n\r\nbody\r\n.").unwrap();
    assert!(r.starts_with("250"), "{r}");
    let delivered = env.sinks[0].wait_delivered(1);
    assert_eq!(delivered.len(), 1);
    assert!(String::from_utf8_lossy(&delivered[0]).contains("Subject: fine"));
}

#[test]
fn a_header_flood_is_refused_through_postfix() {
    let env = MailEnv::start(
        Socket::Unix,
        &format!("hostname = \"mx.postern.test\"\n[scan]\nmax_header_fields = 500\n{RULESET}"),
    );
    let reply = env
        .smtp()
        .send("a@sender.test", "b@rcpt.test", &header_flood(2000));
    assert!(reply.starts_with("552 5.3.4"), "{reply}");
    assert!(
        reply.contains("max_header_fields (500)"),
        "the reply says which bound: {reply}"
    );
    env.assert_nothing_delivered();
}
