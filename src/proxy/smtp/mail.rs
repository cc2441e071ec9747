//! MAIL FROM: the order of commands, AUTH first on the submission port, the parameters it
//! checks, passes on or takes (SIZE, BODY, SMTPUTF8, AUTH), the engine's verdict on the sender,
//! and what XFORWARD tells the relay targets about the client.

use crate::proxy::ListenerKind;
use crate::relay::{BodyType, Envelope, ForwardedClient, MailParameters};

use super::{Conversation, Next, Transaction, verb};

impl Conversation {
    pub(super) async fn mail(&mut self, sender: String, params: Vec<String>) -> Next {
        if self.session.helo_name().is_none() {
            self.say(503, "5.5.1 Error: send HELO/EHLO first");
            return Next::Continue;
        }
        if self.tx.is_some() {
            self.say(503, "5.5.1 Error: nested MAIL command");
            return Next::Continue;
        }
        if self.kind == ListenerKind::Submission && self.session.authenticated_user().is_none() {
            self.say(
                530,
                "5.7.0 Authentication required (this is a submission port)",
            );
            return Next::Continue;
        }
        let mut passed = MailParameters::default();
        for p in &params {
            let (key, value) = p.split_once('=').unwrap_or((p, ""));
            match key.to_ascii_uppercase().as_str() {
                "SIZE" => match value.parse::<u64>() {
                    Ok(n) => {
                        let limits = &self.session.policy().message_limits;
                        if let Some(reply) = limits.size_refusal(n) {
                            self.reply(&reply);
                            return Next::Continue;
                        }
                        passed.size = Some(n);
                    }
                    Err(_) => {
                        self.say(501, "5.5.4 Syntax: SIZE=number");
                        return Next::Continue;
                    }
                },
                "BODY" if value.eq_ignore_ascii_case("7BIT") => {
                    passed.body = Some(BodyType::SevenBit)
                }
                "BODY" if value.eq_ignore_ascii_case("8BITMIME") => {
                    passed.body = Some(BodyType::EightBitMime)
                }
                "SMTPUTF8" if value.is_empty() => passed.smtputf8 = true,
                // RFC 4954 AUTH=<mailbox>: accepted, not passed on.
                "AUTH" => {}
                _ if self.esmtp => {
                    self.say(
                        555,
                        &format!("5.5.4 Unsupported option: {}", verb(p.as_bytes())),
                    );
                    return Next::Continue;
                }
                _ => {
                    self.say(
                        501,
                        "5.5.4 Syntax: MAIL FROM:<address> (parameters need EHLO)",
                    );
                    return Next::Continue;
                }
            }
        }
        let verdict = self.session.mail(&sender).await;
        if let Some(next) = self.refused(&verdict) {
            return next;
        }
        // The target gets the sender the address transformation makes of it.
        let sender = self.session.relayed_sender().unwrap_or_default();
        self.tx = Some(Transaction {
            envelope: Envelope {
                sender,
                params: passed,
                client: self.forwarded_client(),
                tls: Vec::new(),
            },
            ..Transaction::default()
        });
        self.say(250, "2.1.0 Ok");
        Next::Continue
    }

    /// Who the client is, for XFORWARD, when the targets are to be told.
    fn forwarded_client(&self) -> Option<ForwardedClient> {
        self.shared
            .delivery
            .load()
            .xforward
            .then(|| ForwardedClient {
                name: self.session.client().name.clone(),
                addr: self.peer.ip(),
                port: self.peer.port(),
                proto: if self.esmtp { "ESMTP" } else { "SMTP" },
                helo: self.session.helo_name().map(str::to_owned),
                ident: Some(self.session.id().to_string()),
            })
    }
}
