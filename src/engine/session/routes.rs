//! Where Postern delivers a message itself at the end of the message: the relay targets of a
//! `divert` rule, and behind an MTA the routes (`via`) of encryption rules, with the ledger
//! that keeps a retried message from reaching a route twice.

use super::*;
use crate::engine::address::EnvelopeAddress;
use crate::engine::checks::outbound_tls::TlsRequirement;
use crate::engine::events::Routed;
use crate::engine::ports::OutboundMessage;
use crate::engine::verdict::EnvelopeEdits;

impl Session {
    /// Delivers the message, with its edits applied, through the relay targets of a `divert`
    /// rule; the accepting target's answer.
    pub(super) async fn divert(
        &self,
        divert: &Diversion,
        tx: &mut Transaction,
        edits: &Edits,
        envelope: &EnvelopeEdits,
    ) -> Result<SmtpReply, EngineError> {
        let leaving = tx.leaving(edits).await?;
        let message = tx.traced(leaving);
        let outbound = OutboundMessage {
            sender: envelope.sender.as_ref().unwrap_or(&tx.sender),
            recipients: &tx
                .recipients
                .iter()
                .map(|r| envelope.recipient(r).clone())
                .collect::<Vec<_>>(),
            message: &message,
            tls: &[],
        };
        let delivered = self
            .shared
            .ports
            .outbound
            .deliver(&divert.via, outbound)
            .await
            .map_err(|source| EngineError::Divert {
                ruleset: divert.ruleset.clone(),
                rule: divert.rule.clone(),
                source,
            })?;
        self.emit(&Event::Diverted {
            session: self.id,
            queue_id: tx.queue_id.as_deref().unwrap_or(""),
            ruleset: &divert.ruleset,
            rule: &divert.rule,
            relay_target: &delivered.relay_target,
            reply: &delivered.reply,
        });
        Ok(delivered.reply)
    }

    /// Behind an MTA, delivers the recipients whose encryption rule gives a route (`via`)
    /// through it, with the edits applied, and marks them removed from the MTA's envelope;
    /// whether no recipient is left for the MTA. An error when a route took none. Recipients
    /// already delivered otherwise (an organization's version) are left alone.
    pub(super) async fn secure_routes(
        &self,
        tx: &mut Transaction,
        edits: &Edits,
        envelope: &mut EnvelopeEdits,
    ) -> Result<bool, EngineError> {
        let rules = &self.policy.encryption_rules;
        let left = tx
            .recipients
            .iter()
            .filter(|r| !envelope.removed.contains(r));
        let routes = self.by_route(left, |r| rules.secure_route(&tx.sender, r));
        if routes.is_empty() {
            return Ok(false);
        }
        let received = tx.received().await?;
        let identity = message_identity(tx, self.authenticated.as_deref(), &received);
        let message = edits.applied_to(received);
        let sender = envelope.sender.clone().unwrap_or_else(|| tx.sender.clone());
        for ((via, tls), recipients) in &routes {
            let route = Route {
                via,
                tls,
                by: ("encryption_rule", "via"),
            };
            self.take_route(
                tx,
                identity.as_ref(),
                &route,
                recipients,
                &message,
                &sender,
                envelope,
            )
            .await?;
        }
        Ok(envelope.removed.len() == tx.recipients.len())
    }

    /// Delivers `message` to `recipients` through `route`, unless the ledger says this message
    /// reached them that way before (an earlier attempt whose later route failed); either way
    /// they leave the carrier's envelope.
    ///
    /// Each delivery is remembered (in the state store, for `[state] via_memory_days`)
    /// against the message's `identity`: when a later route fails, the message is deferred
    /// and its sender sends it again, and then the routes that took it before are not used
    /// again, so nobody gets it twice. A message without a Message-ID has no identity
    /// (`None`): two such messages with the same text may be two messages, so each is
    /// delivered; a retry of one may then arrive twice, never not at all.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn take_route(
        &self,
        tx: &mut Transaction,
        identity: Option<&sha2::Sha256>,
        route: &Route<'_>,
        recipients: &[EnvelopeAddress],
        message: &[u8],
        sender: &EnvelopeAddress,
        envelope: &mut EnvelopeEdits,
    ) -> Result<Option<SmtpReply>, EngineError> {
        let store = &self.shared.ports.store;
        let handed = identity.map(|id| handed_digest(id.clone(), route.via, recipients));
        let before = match &handed {
            Some(handed) => match store.was_handed(handed).await {
                Ok(before) => before,
                Err(e) => {
                    self.store_unavailable("route deliveries of earlier attempts", &e);
                    false
                }
            },
            None => false,
        };
        if before {
            self.note(Note::RouteAlreadyTaken {
                route: &route.via.join(","),
                recipients: recipients.len(),
            });
            envelope.remove(recipients);
            return Ok(None);
        }
        let relayed: Vec<EnvelopeAddress> = recipients
            .iter()
            .map(|r| envelope.recipient(r).clone())
            .collect();
        let traced;
        let message = if tx.trace_field.is_empty() {
            message
        } else {
            traced = tx.traced(message.to_vec());
            &traced
        };
        let outbound = OutboundMessage {
            sender,
            recipients: &relayed,
            message,
            tls: route.tls,
        };
        let delivered = self
            .shared
            .ports
            .outbound
            .deliver(route.via, outbound)
            .await
            .map_err(|source| EngineError::Route {
                recipients: relayed.len(),
                via: route.via.to_vec(),
                source,
            })?;
        // Logged, counted and tracked as a divert by what chose the route.
        self.emit(&Event::Diverted {
            session: self.id,
            queue_id: tx.queue_id.as_deref().unwrap_or(""),
            ruleset: route.by.0,
            rule: route.by.1,
            relay_target: &delivered.relay_target,
            reply: &delivered.reply,
        });
        if let Some(handed) = &handed
            && let Err(e) = store.remember_handed(handed, self.policy.via_memory).await
        {
            self.store_unavailable("route deliveries of earlier attempts", &e);
        }
        envelope.remove(recipients);
        tx.routed.extend(recipients.iter().map(|r| Routed {
            recipient: r.clone(),
            relay_target: delivered.relay_target.clone(),
            reply: delivered.reply.clone(),
        }));
        Ok(Some(delivered.reply))
    }
}

impl Session {
    /// `recipients` grouped by the route `via` gives each (none: left out) and by what their
    /// connection must have negotiated.
    pub(super) fn by_route<'a, 'r>(
        &self,
        recipients: impl Iterator<Item = &'r EnvelopeAddress>,
        via: impl Fn(&EnvelopeAddress) -> Option<&'a [String]>,
    ) -> Vec<(RouteKey<'a>, Vec<EnvelopeAddress>)> {
        let mut routes: Vec<(RouteKey, Vec<EnvelopeAddress>)> = Vec::new();
        for r in recipients {
            let Some(via) = via(r) else {
                continue;
            };
            let key = (via, self.recipient_tls(r).into_iter().collect());
            match routes.iter_mut().find(|(known, _)| *known == key) {
                Some((_, list)) => list.push(r.clone()),
                None => routes.push((key, vec![r.clone()])),
            }
        }
        routes
    }
}

/// A route's relay targets and what its connection must have negotiated.
pub(super) type RouteKey<'a> = (&'a [String], Vec<TlsRequirement>);

/// Where Postern delivers some recipients itself: the relay targets, what the connection
/// must have negotiated, and what chose it (for the events: a ruleset and rule name).
pub(super) struct Route<'a> {
    pub via: &'a [String],
    pub tls: &'a [TlsRequirement],
    pub by: (&'a str, &'a str),
}

/// What names one message across its sender's attempts: the envelope sender, the client's
/// authenticated identity (none for an unauthenticated client, so that one cannot pre-empt an
/// authenticated sender's message by sending its copy first), every header field but
/// `Received` (each hop adds one, on every attempt) and the body, as received: raw bytes, so
/// that two messages differing only in bytes that are not UTF-8 are two messages. The client's
/// address is left out: large senders retry from other addresses. `None` for a message
/// without a Message-ID: what would tell two identical sends from one send retried is
/// missing.
pub(super) fn message_identity(
    tx: &Transaction,
    authenticated: Option<&str>,
    raw: &[u8],
) -> Option<sha2::Sha256> {
    tx.message_id
        .as_ref()
        .map(|_| identity_of(&tx.sender, authenticated, raw))
}

/// The identity of `raw` from `sender` (see [`message_identity`]).
fn identity_of(sender: &str, authenticated: Option<&str>, raw: &[u8]) -> sha2::Sha256 {
    use sha2::Digest as _;
    let mut identity = sha2::Sha256::new();
    identity.update(b"postern message identity 2\0");
    identity.update(sender.as_bytes());
    identity.update(b"\0");
    match authenticated {
        Some(user) => {
            identity.update(b"auth\0");
            identity.update(user.as_bytes());
        }
        None => identity.update(b"anonymous"),
    }
    identity.update(b"\0");
    let end = crate::engine::verdict::header_end(raw);
    for field in crate::engine::verdict::header_fields_raw(&raw[..end]) {
        if !crate::engine::verdict::field_name(&field).eq_ignore_ascii_case(b"Received") {
            identity.update((field.len() as u64).to_be_bytes());
            identity.update(&field);
        }
    }
    identity.update(b"\0");
    identity.update(&raw[end..]);
    identity
}

/// The message `identity` handed to the route `via` for `recipients`.
fn handed_digest(
    mut identity: sha2::Sha256,
    via: &[String],
    recipients: &[EnvelopeAddress],
) -> crate::engine::ports::Digest {
    use sha2::Digest as _;
    for name in via {
        identity.update(b"via\0");
        identity.update(name.as_bytes());
    }
    let mut recipients: Vec<&str> = recipients.iter().map(EnvelopeAddress::as_str).collect();
    recipients.sort();
    for r in recipients {
        identity.update(b"to\0");
        identity.update(r.as_bytes());
    }
    identity.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sender: &str, user: Option<&str>, raw: &[u8]) -> [u8; 32] {
        handed_digest(
            identity_of(sender, user, raw),
            &["r".into()],
            &["x@y".parse().unwrap()],
        )
    }

    #[test]
    fn a_message_is_named_by_its_raw_bytes_and_its_sender() {
        let raw = |subject: &[u8]| {
            let mut m = b"Received: from a\r\n\tby b\r\nSubject: ".to_vec();
            m.extend_from_slice(subject);
            m.extend_from_slice(b"\r\n\r\nbody\r\n");
            m
        };
        let a = id("s@x", None, &raw(b"caf\xff"));
        assert_ne!(a, id("s@x", None, &raw(b"caf\xfe")), "invalid bytes differ");
        assert_eq!(
            a,
            id(
                "s@x",
                None,
                &[b"Received: from c by d\r\n".as_slice(), &raw(b"caf\xff")].concat()
            ),
            "Received fields are left out"
        );
        assert_ne!(
            a,
            id("s@x", Some("alice"), &raw(b"caf\xff")),
            "authenticated"
        );
        assert_ne!(
            id("s@x", Some("alice"), &raw(b"x")),
            id("s@x", Some("bob"), &raw(b"x"))
        );
        assert_ne!(a, id("t@x", None, &raw(b"caf\xff")), "another sender");
        // The body counts.
        assert_ne!(
            id("s@x", None, b"Subject: a\r\n\r\nbody\r\n"),
            id("s@x", None, b"Subject: a\r\n\r\nbody.\r\n")
        );
    }
}
