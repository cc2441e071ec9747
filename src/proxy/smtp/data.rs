//! DATA: reading the message within its timeouts, the engine's verdict at the end of the
//! message, and handing the message (as received or edited) on to the relay targets before the
//! client hears 250.

use std::time::Duration;

use tracing::{debug, info, warn};

use crate::engine::address::EnvelopeAddress;
use crate::engine::{BufferError, Edits, MessageBuffer, SmtpReply, Verdict};
use crate::proxy::connection::ReadError;
use crate::proxy::data_reader::{BareNewline, DataReader};
use crate::proxy::received::Hop;
use crate::relay::{Body, DataFailure, DeliveryError, TargetError, Upstream};

use super::{BROKEN_TRANSACTION, Conversation, Next};

/// The message as it is to be relayed: the client's bytes where no rule changed them (held in
/// memory or read from the spool piece by piece as they go out, never whole), or the edited
/// message.
enum Outgoing {
    Unchanged {
        message: Box<MessageBuffer>,
        spool: Option<std::fs::File>,
    },
    Edited(Vec<u8>),
}

impl Outgoing {
    async fn new(mut message: MessageBuffer, edits: &Edits) -> Result<Self, BufferError> {
        if edits.is_empty() {
            let spool = message.spool_handle().await?;
            return Ok(Self::Unchanged {
                message: Box::new(message),
                spool,
            });
        }
        let raw = message.contents().await?;
        drop(message);
        Ok(Self::Edited(edits.apply_to(&raw)))
    }

    fn body(&self) -> Body<'_> {
        match self {
            Self::Unchanged {
                message,
                spool: Some(file),
            } => Body::File {
                file,
                len: message.len(),
                eight_bit: message.is_eight_bit(),
            },
            Self::Unchanged { message, .. } => Body::Memory(message.in_memory().unwrap_or(&[])),
            Self::Edited(raw) => Body::Memory(raw),
        }
    }
}

impl Conversation {
    /// Waits until message input is buffered: at most `timeout` for each piece (`stress_timeout`
    /// once the proxy is under stress) and never past `deadline`.
    async fn data_wait(
        &mut self,
        timeout: Duration,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<(), ReadError> {
        let mut waited = Duration::ZERO;
        loop {
            let mut left = timeout.saturating_sub(waited);
            if let Some(d) = deadline {
                left = left.min(d.saturating_duration_since(tokio::time::Instant::now()));
            }
            let step = self.stress_step(left);
            // Woken up early when the relay target is due a NOOP.
            let tick = self.noop_due().filter(|due| *due < step);
            let wait = tick.unwrap_or(step);
            match self.conn.wait_input(wait).await {
                Err(ReadError::Timeout) if tick.is_some() => {
                    waited += wait;
                    self.keep_upstream_alive().await;
                }
                Err(ReadError::Timeout) if step < left && !self.shared.under_stress() => {
                    waited += step;
                }
                done => return done,
            }
        }
    }

    /// How long until the transaction's relay target is due a NOOP (`[delivery]
    /// noop_interval`), when one is open and NOOPs are sent.
    fn noop_due(&self) -> Option<Duration> {
        let tx = self.tx.as_ref().filter(|tx| !tx.noop_failed)?;
        let interval = tx.delivery.as_ref()?.noop_interval?;
        let upstream = tx.upstream.as_ref()?;
        Some(interval.saturating_sub(upstream.idle()))
    }

    /// A NOOP to the transaction's relay target when it is due, so that a target with an
    /// idle timeout keeps the transaction while a slow client uploads. A failure is logged
    /// and ends the NOOPs; the end of the message then reopens the target as before.
    async fn keep_upstream_alive(&mut self) {
        if self.noop_due() != Some(Duration::ZERO) {
            return;
        }
        let peer = self.peer;
        let Some(tx) = self.tx.as_mut() else {
            return;
        };
        let Some(upstream) = tx.upstream.as_mut() else {
            return;
        };
        match upstream.noop().await {
            Ok(_) => {
                debug!(client = %peer, relay_target = %upstream.target_name(), "NOOP to keep the relay target's transaction open")
            }
            Err(e) => {
                info!(client = %peer, relay_target = %upstream.target_name(), error = %e, "NOOP to the relay target failed; the connection is reopened at the end of the message");
                tx.noop_failed = true;
            }
        }
    }

    /// This hop's `Received:` field, when it is to be added.
    fn received_field(&self, recipients: &[EnvelopeAddress]) -> String {
        if !self.settings().received_header {
            return String::new();
        }
        let s = &self.session;
        Hop {
            helo: s.helo_name(),
            name: s.client().name.as_deref(),
            addr: self.peer.ip(),
            tls: s.tls().map(|t| (t.version.as_str(), t.cipher.as_str())),
            esmtp: self.esmtp,
            authenticated: s.authenticated_user().is_some(),
            hostname: &self.hostname,
            id: s.id(),
            recipient: match recipients {
                [one] => Some(one.as_str()),
                _ => None,
            },
        }
        .field(std::time::SystemTime::now())
    }

    pub(super) async fn data(&mut self) -> Next {
        let Some(tx) = self.tx.as_ref() else {
            self.say(503, "5.5.1 Error: need RCPT command");
            return Next::Continue;
        };
        if tx.broken {
            self.say(451, BROKEN_TRANSACTION);
            return Next::Continue;
        }
        if self.session.recipients().is_empty() {
            self.say(554, "5.5.1 Error: no valid recipients");
            return Next::Continue;
        }
        // Held until the message is handed on (or refused).
        let memory = self.session.policy().message_limits.memory_limit;
        let Some(_reservation) = self.shared.memory.reserve(memory) else {
            warn!(client = %self.peer, budget = self.settings().message_memory_budget, in_use = self.shared.memory.used(), "message_memory_budget exhausted, DATA deferred");
            self.say(
                452,
                "4.3.1 Error: insufficient system storage, try again later",
            );
            return Next::Continue;
        };
        let verdict = self.session.data().await;
        if let Some(next) = self.refused(&verdict) {
            self.reset().await;
            return next;
        }
        self.say(354, "End data with <CR><LF>.<CR><LF>");
        let mut reader = DataReader::default();
        let mut piece = Vec::new();
        let mut refusal: Option<Verdict> = None;
        let timeout = self.timeouts().data_payload;
        // A deadline for the whole message that a trickle cannot stretch: the payload timeout
        // plus the time its bytes take at min_data_rate (Postfix 3.7's
        // smtpd_per_request_deadline with smtpd_min_data_rate).
        let started = tokio::time::Instant::now();
        let min_rate = self.settings().min_data_rate;
        let mut received: u64 = 0;
        loop {
            self.keep_upstream_alive().await;
            let deadline = (min_rate > 0).then(|| {
                started + timeout + Duration::from_secs_f64(received as f64 / min_rate as f64)
            });
            let input = match self.data_wait(timeout, deadline).await {
                Ok(()) => self.conn.buffered(),
                Err(e) => {
                    info!(client = %self.peer, reason = %e, received, "message not finished");
                    if matches!(e, ReadError::Timeout) {
                        let mut text = format!("4.4.2 {} Error: timeout exceeded", self.hostname);
                        if min_rate > 0 {
                            text.push_str(&format!(
                                " (the message must arrive within {}s plus 1s per {min_rate} bytes)",
                                timeout.as_secs()
                            ));
                        }
                        self.say(421, &text);
                    }
                    return Next::Close;
                }
            };
            piece.clear();
            let end = reader.feed(input, &mut piece);
            let used = end.unwrap_or(input.len());
            self.conn.consume(used);
            received += used as u64;
            // Everything is read to its end even when refused, so that the next command is
            // found; only the first refusal counts and nothing more is kept.
            if refusal.is_none() && !piece.is_empty() {
                let verdict = self.session.message_data(&piece).await;
                if verdict != Verdict::Continue {
                    refusal = Some(verdict);
                }
            }
            if end.is_some() {
                break;
            }
        }
        if self.settings().bare_newline == BareNewline::Reject && reader.bare_newlines > 0 {
            info!(client = %self.peer, count = reader.bare_newlines, "message with bare CR or LF refused");
            self.say(
                550,
                "5.5.2 Error: bare CR or LF in message (use CRLF line ends)",
            );
            self.reset().await;
            return Next::Continue;
        }
        if reader.bare_newlines > 0 {
            info!(client = %self.peer, count = reader.bare_newlines, "bare CR or LF in message turned into CRLF");
        }
        let next = self.end_of_message(refusal).await;
        self.tx = None;
        self.junk_commands = 0;
        next
    }

    async fn end_of_message(&mut self, refusal: Option<Verdict>) -> Next {
        // What Postern delivers itself (a divert, another organization's version) records
        // this hop too.
        let field = self.received_field(&[]);
        self.session.set_trace_field(field);
        let (outcome, message) = self.session.end_of_message_with_content().await;
        let verdict = refusal.unwrap_or_else(|| outcome.verdict.clone());
        let upstream = self.tx.as_mut().and_then(|tx| tx.upstream.take());
        match &verdict {
            Verdict::Continue => {}
            Verdict::Discard => {
                if let Some(u) = upstream {
                    u.abort().await;
                }
                match &outcome.diverted {
                    // A divert rule delivered it elsewhere: that target's answer is the one.
                    Some(reply) => self.reply(reply),
                    None => {
                        info!(client = %self.peer, "message discarded by policy");
                        self.say(250, "2.7.0 Ok: discarded by policy");
                    }
                }
                return Next::Continue;
            }
            refused => {
                if let Some(u) = upstream {
                    u.abort().await;
                }
                return self.refused(refused).unwrap_or(Next::Continue);
            }
        }
        let Some(message) = message else {
            self.unreadable("the message was not kept");
            return Next::Continue;
        };
        let outgoing = match Outgoing::new(message, &outcome.edits).await {
            Ok(outgoing) => outgoing,
            Err(e) => {
                self.unreadable(&e.to_string());
                return Next::Continue;
            }
        };
        let recipients = outcome.relayed_recipients();
        // The edits (and the content-scan slot held for them) are no longer needed.
        drop((outcome.edits, outcome.scan_slot));
        let Some(upstream) = upstream else {
            let reply = SmtpReply::from_wire(
                451,
                "4.4.1 Error: no relay target is available, try again later",
            );
            self.reply(&reply);
            self.session.handed_on(None, &reply);
            return Next::Continue;
        };
        self.hand_on(upstream, &outgoing.body(), &recipients).await;
        Next::Continue
    }

    /// The message cannot be read back (a spool error): the scan failure action's answer, as
    /// the milter door gives; 451 where that action would let it through, since there is
    /// nothing left to relay.
    fn unreadable(&mut self, why: &str) {
        warn!(client = %self.peer, error = why, "cannot read the message back");
        let reply = match self.session.policy().scan_failure_action.verdict().reply() {
            Some(reply) => reply.clone(),
            None => SmtpReply::from_wire(
                451,
                "4.3.0 Error: message could not be held, try again later",
            ),
        };
        self.reply(&reply);
        // Reported with what the client heard (nothing went to a relay target).
        self.session.handed_on(None, &reply);
    }

    /// Sends the message through the transaction's upstream and answers the client: 250 only
    /// when a target took it for every recipient that heard 250, never to one that may
    /// already have it.
    async fn hand_on(
        &mut self,
        upstream: Upstream,
        body: &Body<'_>,
        recipients: &[EnvelopeAddress],
    ) {
        let tx = self.tx.as_ref().expect("in a transaction");
        let delivery = tx
            .delivery
            .clone()
            .unwrap_or_else(|| self.shared.delivery.load_full());
        let head = self.received_field(recipients);
        let first = upstream.target_index();
        let name = upstream.target_name().to_owned();
        // What the connection that took the message negotiated, when it was this one.
        let mut tls = upstream
            .tls()
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        // Why the first target could not carry the message, for the client when no other
        // target can either.
        let mut incapable = None;
        let reply = match upstream
            .data(head.as_bytes(), body, delivery.data_timeout)
            .await
        {
            Ok(reply) => Ok((name, reply)),
            Err(DataFailure::Refused(reply)) if reply.code() >= 500 => Ok((name, reply)),
            Err(DataFailure::Uncertain(e)) => Err(DeliveryError::Uncertain {
                target: name,
                why: e.to_string(),
            }),
            Err(DataFailure::Unreadable(why)) => Err(DeliveryError::Unavailable(vec![why])),
            Err(failure) => {
                // The target did not take the message. Nothing was sent: the connection broke
                // or was refused before DATA (it may have idled out while the client
                // uploaded), so the same target is tried again on a fresh connection. It
                // refused the message with 4xx, or cannot carry it: the next target. Either
                // way the whole envelope is replayed and every recipient that heard 250 must
                // be accepted again.
                let from = match &failure {
                    DataFailure::Refused(_) | DataFailure::NotSent(TargetError::Incapable(_)) => {
                        first + 1
                    }
                    _ => first,
                };
                if let DataFailure::NotSent(TargetError::Incapable(reply)) = &failure {
                    incapable = Some(reply.clone());
                }
                warn!(client = %self.peer, relay_target = %name, error = %failure, "relay target did not take the message, replaying the transaction");
                tls = "see the relay target's connection".to_owned();
                delivery
                    .send(&tx.envelope, recipients, head.as_bytes(), body, from)
                    .await
            }
        };
        let (target, reply) = match reply {
            Ok((target, reply)) | Err(DeliveryError::Refused { target, reply }) => {
                info!(client = %self.peer, relay_target = %target, %tls, recipients = recipients.len(), size = body.len(), %reply, "message handed on");
                (Some(target), reply)
            }
            Err(DeliveryError::Uncertain { target, why }) => {
                warn!(client = %self.peer, relay_target = %target, error = %why, "message may have been delivered; client keeps it and is not sent elsewhere");
                let reply = SmtpReply::from_wire(
                    451,
                    "4.4.1 Error: the relay target did not confirm the message, try again later",
                );
                (Some(target), reply)
            }
            Err(e) => {
                warn!(client = %self.peer, error = %e, "message not delivered; client keeps it");
                let reply = incapable.unwrap_or_else(|| {
                    SmtpReply::from_wire(
                        451,
                        "4.4.1 Error: no relay target accepted the message, try again later",
                    )
                });
                (None, reply)
            }
        };
        self.reply(&reply);
        self.session.handed_on(target.as_deref(), &reply);
    }
}
