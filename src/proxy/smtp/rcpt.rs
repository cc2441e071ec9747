//! RCPT TO: the recipient limit, the engine's verdict, and each accepted recipient handed to the
//! relay target (opened at the first one), whose answer is the one the client hears.

use tracing::{info, warn};

use crate::engine::SmtpReply;
use crate::engine::address::EnvelopeAddress;
use crate::engine::address_transformation::Place;
use crate::engine::events::RefusedBy;
use crate::relay::DeliveryError;

use super::{BROKEN_TRANSACTION, Conversation, Next};

impl Conversation {
    pub(super) async fn rcpt(&mut self, recipient: String) -> Next {
        let max = self.settings().max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            self.say(503, "5.5.1 Error: need MAIL command");
            return Next::Continue;
        };
        tx.rcpt_count += 1;
        if tx.rcpt_count > max {
            self.say(
                452,
                &format!("4.5.3 Error: too many recipients (limit {max})"),
            );
            return Next::Continue;
        }
        let verdict = self.session.rcpt(&recipient).await;
        if let Some(next) = self.refused(&verdict) {
            return next;
        }
        let recipient = self
            .session
            .accepted_recipient()
            .expect("an accepted recipient is kept")
            .clone();
        // Another organization's version: Postern delivers it through that organization's
        // route at the end of the message, not through this transaction's relay target.
        if self.session.carried_apart(&recipient) {
            self.say(250, "2.1.5 Ok");
            return Next::Continue;
        }
        // The engine judges the message (content rules, a divert) by the recipients that were
        // really accepted, as it does behind an MTA: one the target refuses is withdrawn.
        if let Err((reply, by)) = self.relay_rcpt(&recipient).await {
            self.reply(&reply);
            self.session.recipient_refused(&recipient, reply, by);
        }
        Next::Continue
    }

    /// Hands an accepted recipient to the relay target (opened at the first one) and answers
    /// the client with the target's reply when it took it; otherwise the reply the client is to
    /// hear, and who refused.
    async fn relay_rcpt(
        &mut self,
        recipient: &EnvelopeAddress,
    ) -> Result<(), (SmtpReply, RefusedBy)> {
        let tx = self.tx.as_mut().expect("in a transaction");
        let unavailable = |text: &str| (SmtpReply::from_wire(451, text), RefusedBy::NoRelayTarget);
        if tx.broken {
            return Err(unavailable(BROKEN_TRANSACTION));
        }
        if let Some((target, refusal)) = &tx.upstream_refusal {
            return Err((refusal.clone(), RefusedBy::RelayTarget(target.clone())));
        }
        let needs_tls = self.session.recipient_tls(recipient);
        if let (Some(upstream), Some(requirement)) = (&tx.upstream, &needs_tls)
            && let Some(why) = upstream.unmet(requirement)
        {
            // Its encryption rule or TLS policy wants more than this transaction's target
            // connection has. The client sends it again in a transaction of its own (RFC 5321
            // 4.5.3.1.10), which is then opened as it needs.
            info!(client = %self.peer, relay_target = %upstream.target_name(), reason = %why, "recipient needs other TLS than the open target connection has: deferred to another transaction");
            return Err((
                SmtpReply::from_wire(
                    452,
                    "4.5.3 Error: this recipient requires an encrypted route, send it in a separate transaction",
                ),
                RefusedBy::NoRelayTarget,
            ));
        }
        let relayed = self.session.relayed_address(Place::Recipients, recipient);
        // The answer to RCPT when it went in one write with MAIL, as the target was opened.
        let mut answered = None;
        if tx.upstream.is_none() {
            let delivery = tx
                .delivery
                .get_or_insert_with(|| self.shared.delivery.load_full())
                .clone();
            tx.envelope.tls = needs_tls.iter().cloned().collect();
            let opened = delivery.open_for(&tx.envelope, 0, Some(&relayed)).await;
            if opened.is_err() {
                // What only this recipient needed does not bind the next one.
                tx.envelope.tls.clear();
            }
            match opened {
                Ok((upstream, answer)) => {
                    tx.upstream = Some(upstream);
                    answered = answer;
                }
                Err(DeliveryError::Refused { reply, .. })
                    if needs_tls.is_some() && crate::relay::is_tls_refusal(&reply) =>
                {
                    // Only this recipient needs what no target offers: the next may still
                    // go over a plain connection.
                    warn!(client = %self.peer, "recipient requires encryption and no relay target negotiated TLS: deferred");
                    return Err((reply, RefusedBy::NoRelayTarget));
                }
                Err(DeliveryError::Refused { target, reply }) => {
                    info!(client = %self.peer, relay_target = %target, %reply, "relay target refused the sender");
                    tx.upstream_refusal = Some((target.clone(), reply.clone()));
                    return Err((reply, RefusedBy::RelayTarget(target)));
                }
                Err(e) => {
                    warn!(client = %self.peer, error = %e, "recipient deferred");
                    return Err(unavailable(
                        "4.4.1 Error: no relay target is available, try again later",
                    ));
                }
            }
        }
        let upstream = tx.upstream.as_mut().expect("opened above");
        let answer = match answered {
            Some(answer) => answer,
            None => upstream.rcpt(&relayed).await,
        };
        match answer {
            Ok(_) => {
                // A failover at the end of the data must meet what this recipient needs too.
                if let Some(requirement) = needs_tls
                    && !tx.envelope.tls.contains(&requirement)
                {
                    tx.envelope.tls.push(requirement);
                }
                self.say(250, "2.1.5 Ok");
                Ok(())
            }
            Err(crate::relay::TargetError::Refused(reply)) => {
                let target = upstream.target_name().to_owned();
                // Counted as the milter door counts the MTA's refusals, 4xx and 5xx alike.
                let (enhanced, text) = refusal_parts(&reply);
                self.session.rcpt_refused_by_mta(&enhanced, text).await;
                Err((reply, RefusedBy::RelayTarget(target)))
            }
            Err(e) => {
                warn!(client = %self.peer, relay_target = %upstream.target_name(), error = %e, "relay target failed at RCPT");
                if let Some(u) = tx.upstream.take() {
                    u.abort().await;
                }
                // The session counts this recipient until the caller withdraws it.
                if self.session.recipients().len() <= 1 {
                    // Nobody heard 250 yet: the next RCPT opens a new transaction upstream.
                    Err(unavailable(
                        "4.4.1 Error: relay target failed, try again later",
                    ))
                } else {
                    // The client heard 250 for recipients this target took and lost: none of
                    // them may be answered 250 at the end, so the transaction is failed.
                    tx.broken = true;
                    Err(unavailable(BROKEN_TRANSACTION))
                }
            }
        }
    }
}

/// A target's refusal of a recipient as the engine takes it: the enhanced status code, and
/// the text without that code and without the `<address>: ` it starts with (the engine puts
/// each recipient's own address there; the refused one must not leak to the next).
fn refusal_parts(reply: &SmtpReply) -> (String, &str) {
    let default = if reply.is_transient() {
        "4.1.1"
    } else {
        "5.1.1"
    };
    let enhanced = reply.enhanced().unwrap_or(default).to_owned();
    let mut text = reply.text();
    if text.starts_with('<')
        && let Some((_, rest)) = text.split_once(">: ")
    {
        text = rest;
    }
    (enhanced, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_targets_refusal_loses_its_code_and_address() {
        let r = SmtpReply::from_wire(
            550,
            "5.1.1 <nosuch@x.test>: Recipient address rejected: User unknown",
        );
        assert_eq!(
            refusal_parts(&r),
            (
                "5.1.1".to_owned(),
                "Recipient address rejected: User unknown"
            )
        );
        let r = SmtpReply::from_wire(450, "greylisted, try later");
        assert_eq!(
            refusal_parts(&r),
            ("4.1.1".to_owned(), "greylisted, try later")
        );
    }
}
