//! DATA and the message: bounded buffering, the end of message as steps (verdict and edits;
//! routes and divert in routes.rs), the per-message log line.

use mail_auth::AuthenticatedMessage;

use super::versions::MessageCopy;
use super::*;
use crate::engine::retain::Retain;
use crate::engine::verdict::EnvelopeEdits;

impl Session {
    /// The door's `Received:` field for this message (the proxy adds its own hop): what
    /// Postern delivers itself through a divert or an organization's route carries it first,
    /// as what the door relays does.
    pub fn set_trace_field(&mut self, field: String) {
        if let Some(tx) = self.tx.as_mut() {
            tx.trace_field = field;
        }
    }

    /// The queue id the MTA gave the message, for logs.
    pub fn set_queue_id(&mut self, id: &str) {
        if let Some(tx) = self.tx.as_mut() {
            tx.queue_id.get_or_insert_with(|| id.to_owned());
        }
    }

    pub(super) async fn judge_data(&mut self) -> Verdict {
        if let Some(v) = self.held_at(Stage::Data) {
            return v;
        }
        let (sender, recipients) = self.tx.as_ref().map_or(("", &[][..]), |tx| {
            (tx.sender.as_str(), tx.recipients.as_slice())
        });
        if let Some(reply) =
            self.policy
                .encryption_rules
                .check_data(sender, recipients, self.tls.is_some())
        {
            self.note(Note::TlsRequired {
                by: "encryption rule",
                recipient: None,
            });
            let verdict = Verdict::refuse(self.with_help(reply));
            self.refused(CheckId::EncryptionRule, &verdict, SmtpStage::Data, None);
            return verdict;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.message = Some(MessageBuffer::new(self.policy.message_limits.clone()));
        }
        Verdict::Continue
    }

    pub(super) async fn judge_message_data(&mut self, bytes: &[u8]) -> Verdict {
        let limits = &self.policy.message_limits;
        let tx = self
            .tx
            .get_or_insert_with(|| Transaction::new(EnvelopeAddress::default()));
        if let Some(failed) = &tx.failure {
            return failed.clone();
        }
        let buffer = tx
            .message
            .get_or_insert_with(|| MessageBuffer::new(limits.clone()));
        let (check, verdict, failure) = match buffer.append(bytes).await {
            Ok(()) => return Verdict::Continue,
            Err(BufferError::TooBig { .. }) => (
                CheckId::MessageSize,
                Verdict::Reject(
                    limits
                        .size_refusal(limits.max_message_size + 1)
                        .expect("larger than the limit"),
                ),
                None,
            ),
            Err(
                e @ (BufferError::TooManyHeaderFields { .. } | BufferError::HeaderTooBig { .. }),
            ) => (
                CheckId::HeaderLimit,
                Verdict::Reject(
                    SmtpReply::new(
                        552,
                        Some("5.3.4"),
                        &format!("Error: {e}; send fewer or shorter header fields"),
                    )
                    .expect("the error text is printable"),
                ),
                None,
            ),
            Err(e) => (
                CheckId::ScanFailure,
                self.policy.scan_failure_action.verdict(),
                Some(e.to_string()),
            ),
        };
        tx.failure = Some(verdict.clone());
        // Nothing more is kept of this message; the verdict stands until its end.
        tx.message = None;
        if let Some(error) = failure {
            self.scan_failed(ScanStep::Data, &error);
        }
        if verdict != Verdict::Continue {
            self.refused(check, &verdict, SmtpStage::Data, None);
        }
        verdict
    }

    /// End of message behind an MTA: the verdict and the edits to apply before the MTA
    /// delivers the message. Recipients an encryption rule routes through Postern (`via`) are
    /// delivered here and taken out of the MTA's envelope.
    pub async fn end_of_message(&mut self) -> MessageOutcome {
        self.finish_message(Carrier::Mta).await.0
    }

    /// End of message, also handing back the message as received, for a door that delivers
    /// it itself (the proxy). `None` when nothing was kept (refused before its end).
    pub async fn end_of_message_with_content(&mut self) -> (MessageOutcome, Option<MessageBuffer>) {
        self.finish_message(Carrier::Postern).await
    }

    /// The end of message as steps, each run only while the message still goes on: the
    /// content stage (or a verdict held or reached earlier), the address transformation and
    /// forged results removed, the result and trace headers, the DKIM signature, the
    /// encryption routes (behind an MTA), a divert. What is decided is logged; in a dry run it
    /// is only reported.
    async fn finish_message(
        &mut self,
        carrier: Carrier,
    ) -> (MessageOutcome, Option<MessageBuffer>) {
        let policy = self.policy.clone();
        let Some(mut tx) = self.tx.take() else {
            let outcome = MessageOutcome {
                verdict: Verdict::Continue,
                edits: Edits::default(),
                recipients: Vec::new(),
                envelope: EnvelopeEdits::default(),
                diverted: None,
                scan_slot: ScanSlot::default(),
            };
            return (outcome, None);
        };
        self.messages += 1;
        if let Some(buffer) = tx.message.as_mut()
            && let Ok(header) = buffer.header_section().await
        {
            tx.message_id = first_header_field(&header, "Message-ID");
        }
        // The message as it arrived is verified before any rule runs; the results borrow it.
        let arrival = self.arrival(&mut tx).await;
        let parsed = arrival.as_ref().and_then(|(raw, _)| {
            let parsed = AuthenticatedMessage::parse(raw);
            if parsed.is_none() {
                self.note(Note::NothingToVerify);
            }
            parsed
        });
        let (mut verified, mut found, mut results) = (None, None, None);
        if let (Some(message), Some((_, facts))) = (&parsed, &arrival) {
            match self.verify(message, facts, &mut tx).await {
                Ok(Some(v)) => {
                    found = self.dmarc_verdict(&v, &mut tx);
                    let from = message.from.first().map_or("", String::as_str);
                    results = Some(v.results(&policy.hostname, facts.envelope(), from));
                    verified = Some(v);
                }
                Ok(None) => {}
                Err(finding) => found = Some(finding),
            }
        }
        let results_field = verified
            .as_ref()
            .zip(results.as_ref())
            .filter(|_| policy.authentication.results_header)
            .map(|(v, r)| v.results_value(r));
        if found.is_none() {
            found = self.organization_size_refusal(&tx);
        }
        let (primary, others) = self.copies(&tx);
        let mut d = self.first_decision(&mut tx, found, &primary).await;
        // The other versions' content (with organizations whose rulesets differ).
        let content_end = d.edits.headers.len();
        let mut other_edits = Vec::with_capacity(others.len());
        for copy in &others {
            if !d.goes_on() {
                break;
            }
            let mut edits = Edits::default();
            match self.content_stage(&mut tx, &mut edits, copy).await {
                Some((check, verdict)) => d.decide(Reason::Check(check), verdict),
                None => other_edits.push(edits),
            }
        }
        let mut header_changed = false;
        if d.goes_on() {
            match self.spoof_step(&mut tx).await {
                Ok(tags) => d.edits.headers.extend(tags),
                Err(refusal) => d.decide(Reason::Check(CheckId::Spoof), refusal),
            }
        }
        if d.goes_on() {
            let (envelope, changed) = self.transform_addresses(&mut tx, &mut d.edits).await;
            d.envelope = envelope;
            d.transformed |= changed;
            header_changed = changed;
            self.remove_forged_results(&mut tx, &mut d.edits).await;
        }
        if d.goes_on() {
            self.result_headers(&mut tx, &mut d.edits, results_field)
                .await;
        }
        // Every version's edits: its content's, then what every version gets (tags, the
        // address transformation, result and trace headers), then its own seal and signature.
        let common: Vec<HeaderEdit> = if others.is_empty() {
            Vec::new()
        } else {
            d.edits
                .headers
                .get(content_end..)
                .unwrap_or_default()
                .to_vec()
        };
        let mut versions: Vec<(&MessageCopy, Edits)> = Vec::new();
        for (copy, content) in others.iter().zip(other_edits) {
            if !d.goes_on() || policy.dry_run {
                break;
            }
            let transformed = header_changed || !content.is_empty();
            let mut edits = Edits {
                headers: [content.headers, common.clone()].concat(),
                body: content.body,
            };
            if let (Some(v), Some(r)) = (&verified, &results)
                && let Err(e) = self
                    .seal(&mut tx, &mut edits, v, r, transformed, copy)
                    .await
            {
                self.scan_failed(ScanStep::Arc, &e.to_string());
                d.decide(Reason::SealingFailed, policy.scan_failure_action.verdict());
            } else if let Err(e) = self.sign(&mut tx, &mut edits, transformed).await {
                self.scan_failed(ScanStep::Dkim, &e.to_string());
                d.decide(Reason::SigningFailed, policy.scan_failure_action.verdict());
            }
            versions.push((copy, edits));
        }
        if d.goes_on()
            && !policy.dry_run
            && let (Some(v), Some(r)) = (&verified, &results)
            && let Err(e) = self
                .seal(&mut tx, &mut d.edits, v, r, d.transformed, &primary)
                .await
        {
            self.scan_failed(ScanStep::Arc, &e.to_string());
            d.decide(Reason::SealingFailed, policy.scan_failure_action.verdict());
        }
        if d.goes_on()
            && !policy.dry_run
            && let Err(e) = self.sign(&mut tx, &mut d.edits, d.transformed).await
        {
            self.scan_failed(ScanStep::Dkim, &e.to_string());
            d.decide(Reason::SigningFailed, policy.scan_failure_action.verdict());
        }
        if d.goes_on()
            && !policy.dry_run
            && tx.divert.is_none()
            && (!others.is_empty() || !primary.carried)
        {
            let mut all = vec![(&primary, &d.edits)];
            all.extend(versions.iter().map(|(c, e)| (*c, e)));
            match self.deliver_versions(&mut tx, &all, &mut d.envelope).await {
                Ok(None) => {}
                Ok(Some(reply)) => {
                    d.decide(Reason::OrganizationRoutes, Verdict::Discard);
                    d.diverted = Some(reply);
                }
                Err(e) => {
                    self.scan_failed(ScanStep::OrganizationRoute, &e.to_string());
                    d.decide(Reason::OrganizationRouteFailed, route_failed(&e));
                }
            }
        }
        if d.goes_on() && carrier == Carrier::Mta && !policy.dry_run && tx.divert.is_none() {
            match self.secure_routes(&mut tx, &d.edits, &mut d.envelope).await {
                Ok(true) => d.decide(Reason::SecureRoute, Verdict::Discard),
                Ok(false) => {}
                Err(e) => {
                    self.scan_failed(ScanStep::SecureRoute, &e.to_string());
                    d.decide(
                        Reason::SecureRouteFailed,
                        policy.scan_failure_action.verdict(),
                    );
                }
            }
        }
        if let Some(divert) = tx.divert.take()
            && d.goes_on()
        {
            if policy.dry_run {
                d.decide(Reason::Divert, Verdict::Discard);
            } else {
                match self.divert(&divert, &mut tx, &d.edits, &d.envelope).await {
                    Ok(reply) => {
                        d.decide(Reason::Divert, Verdict::Discard);
                        d.diverted = Some(reply);
                    }
                    Err(e) => {
                        self.scan_failed(ScanStep::Divert, &e.to_string());
                        d.decide(Reason::DivertFailed, policy.scan_failure_action.verdict());
                    }
                }
            }
        }
        if let Some(retain) = &policy.retain {
            self.retain(retain, &mut tx, &d).await;
        }
        let finished = self.finished(&tx, &d);
        // The proxy relays what goes on: reported once it says where it went.
        let goes_on = policy.dry_run || d.goes_on();
        if carrier == Carrier::Postern && goes_on {
            self.unreported = Some(finished);
        } else {
            self.report_message(&finished, None);
        }
        if policy.dry_run {
            // What would have been done is reported above; the message goes on unchanged.
            let verdict = self.unless_dry_run(SmtpStage::EndOfMessage, d.verdict.clone());
            d.decide(d.reason, verdict);
            d.edits = Edits::default();
            d.envelope = EnvelopeEdits::default();
        }
        // Without a new body there is nothing large left to hold the slot for.
        let scan_slot = if d.edits.body.is_some() {
            std::mem::take(&mut tx.scan_slot)
        } else {
            ScanSlot::default()
        };
        let outcome = MessageOutcome {
            verdict: self.answered(d.verdict),
            edits: d.edits,
            recipients: std::mem::take(&mut tx.recipients),
            envelope: d.envelope,
            diverted: d.diverted,
            scan_slot,
        };
        (outcome, tx.message)
    }

    /// The first step: a verdict held until DATA, a refusal while the message arrived, what
    /// the verification `found` (DMARC), or the content stage's verdict and edits.
    async fn first_decision(
        &mut self,
        tx: &mut Transaction,
        found: Option<Finding>,
        copy: &MessageCopy,
    ) -> Decision {
        let mut edits = Edits::default();
        let held = self.held_for(Stage::Data, &tx.recipients);
        let (reason, verdict) = match (held, tx.failure.take(), found) {
            (Some(held), _, _) => (Reason::Held, held),
            (None, Some(failed), _) => (Reason::RefusedBeforeEnd, failed),
            (None, None, Some((check, verdict))) => (Reason::Check(check), verdict),
            (None, None, None) => match self.content_stage(tx, &mut edits, copy).await {
                Some((check, verdict)) => (Reason::Check(check), verdict),
                None => (Reason::EndOfMessage, Verdict::Continue),
            },
        };
        // Changed by the content stage: the sender's own signature no longer holds.
        let transformed = !edits.is_empty();
        let mut d = Decision {
            reason,
            verdict: Verdict::Continue,
            edits,
            envelope: EnvelopeEdits::default(),
            transformed,
            diverted: None,
        };
        d.decide(reason, verdict);
        d
    }

    /// Copies of the message for support: as it arrived, and as it leaves when it goes on.
    async fn retain(&self, retain: &Retain, tx: &mut Transaction, d: &Decision) {
        // A message over the bound is not read back at all.
        if tx.message.as_ref().map_or(0, MessageBuffer::len) > retain.max_size {
            return;
        }
        let name = format!("{}-{}", self.id, self.messages);
        let mut copies = Vec::new();
        if retain.raw {
            copies.push(("raw", tx.received().await));
        }
        if retain.decoded && d.goes_on() {
            copies.push(("decoded", tx.leaving(&d.edits).await));
        }
        for (kind, message) in copies {
            let outcome = match message {
                Ok(message) => retain.keep(&name, kind, message).await,
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(Some(path)) => self.note(Note::Retained {
                    kind,
                    outcome: Ok(&path.display().to_string()),
                }),
                Ok(None) => {}
                Err(e) => self.note(Note::Retained {
                    kind,
                    outcome: Err(&e),
                }),
            }
        }
    }

    /// The result headers (SPF's own unless the one `Authentication-Results` field of
    /// `[authentication]` carries it) and the trace header, for a message that goes on.
    async fn result_headers(
        &self,
        tx: &mut Transaction,
        edits: &mut Edits,
        results_field: Option<String>,
    ) {
        let policy = &self.policy;
        let merged = results_field.is_some();
        if let (Some(spf), Some(outcome), Some(ip)) =
            (&policy.spf, tx.spf.clone(), self.client.addr)
            && !(merged && spf.header == SpfHeader::AuthenticationResults)
        {
            self.spf_headers(spf, &outcome, ip, tx, edits).await;
        }
        if let Some(value) = results_field {
            self.results_header(value, edits);
        }
        if let Some(trace) = &policy.trace_header {
            edits.headers.push(HeaderEdit::Add {
                name: trace.name.clone(),
                value: format!("{}; by {}", Verdict::Continue.name(), policy.hostname),
            });
        }
    }

    /// `Authentication-Results` fields in the message that name this host as their
    /// authserv-id were not written by it: they are removed from every message, whatever
    /// checks ran, so that nothing downstream trusts a forged result (RFC 8601 §5). Deleted by
    /// per-name index, as a milter's CHGHEADER does, highest first.
    pub(super) async fn remove_forged_results(&self, tx: &mut Transaction, edits: &mut Edits) {
        const NAME: &str = "Authentication-Results";
        let hostname = &self.policy.hostname;
        let Some(buffer) = tx.message.as_mut() else {
            return;
        };
        let header = match buffer.header_section().await {
            Ok(header) => header,
            Err(e) => {
                self.note(Note::Unreadable {
                    purpose: "the header, to look for forged Authentication-Results",
                    error: &e.to_string(),
                });
                return;
            }
        };
        let forged: Vec<u32> = header_fields(&header)
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(NAME))
            .zip(1..)
            .filter(|((_, v), _)| names_host(v, hostname))
            .map(|(_, index)| index)
            .collect();
        // Highest index first: each deletion shifts the ones after it.
        for index in forged.into_iter().rev() {
            self.note(Note::ForgedResultsRemoved { index });
            edits.headers.push(HeaderEdit::Change {
                name: NAME.to_owned(),
                index,
                value: None,
            });
        }
    }

    /// The SPF result header, first in the message.
    pub(super) async fn spf_headers(
        &self,
        spf: &Spf,
        outcome: &SpfOutcome,
        ip: IpAddr,
        tx: &mut Transaction,
        edits: &mut Edits,
    ) {
        let hostname = &self.policy.hostname;
        let helo = self.helo.as_deref().unwrap_or("");
        let Some((name, value)) = spf.header(hostname, ip, helo, &tx.sender, outcome) else {
            return;
        };
        edits.headers.push(HeaderEdit::Insert {
            index: 0,
            name,
            value,
        });
    }

    /// What `tx` became, as its report tells it.
    fn finished(&self, tx: &Transaction, d: &Decision) -> Finished {
        let (rules, diverted, would) = {
            let mut happened = self.happened();
            happened.reported = true;
            happened.refusal = None;
            (
                std::mem::take(&mut happened.rules),
                happened.diverted.take(),
                std::mem::take(&mut happened.would),
            )
        };
        Finished {
            queue_id: tx.queue_id.clone().unwrap_or_default(),
            sender: tx.sender.clone(),
            recipients: tx.recipients.clone(),
            envelope: d.envelope.clone(),
            refused: tx.refused.clone(),
            message_id: tx.message_id.clone(),
            size: tx.message.as_ref().map_or(0, MessageBuffer::len),
            spooled: tx.message.as_ref().is_some_and(MessageBuffer::is_spooled),
            spf: tx.spf.as_ref().map_or("-", SpfOutcome::name),
            authentication: tx.authentication,
            verdict: d.verdict.clone(),
            reason: d.reason,
            elapsed: tx.started.elapsed(),
            rules,
            diverted,
            would,
            sender_organization: self.sender_organization(tx),
            routed: tx.routed.clone(),
        }
    }

    /// Emits the report of a finished message; `handed_on` where the proxy took it.
    pub(super) fn report_message(&self, finished: &Finished, handed_on: Option<HandedOn<'_>>) {
        let would_connection = self.happened().would_connection.clone();
        self.emit(&Event::Message {
            session: self.id,
            report: MessageReport {
                queue_id: &finished.queue_id,
                sender: &finished.sender,
                recipients: &finished.recipients,
                envelope: &finished.envelope,
                refused: &finished.refused,
                message_id: finished.message_id.as_deref(),
                facts: self.facts(&would_connection),
                size: finished.size,
                spooled: finished.spooled,
                spf: finished.spf,
                authentication: finished.authentication,
                verdict: &finished.verdict,
                reason: finished.reason,
                elapsed: finished.elapsed,
                dry_run: self.policy.dry_run,
                rules: &finished.rules,
                diverted: finished.diverted.as_ref().map(|(t, r)| (t.as_str(), r)),
                would: &finished.would,
                handed_on,
                owners: crate::engine::organizations::Owners {
                    organizations: &self.policy.organizations,
                    sender: finished.sender_organization,
                },
                routed: &finished.routed,
            },
        });
    }
}

/// A message at its end, as its report tells it: kept until the door says where it went
/// when the door relays it itself.
#[derive(Debug)]
pub(super) struct Finished {
    queue_id: String,
    sender: EnvelopeAddress,
    recipients: Vec<EnvelopeAddress>,
    envelope: EnvelopeEdits,
    refused: Vec<RefusedRecipient>,
    message_id: Option<String>,
    size: u64,
    spooled: bool,
    spf: &'static str,
    authentication: Option<AuthSummary>,
    verdict: Verdict,
    reason: Reason,
    elapsed: std::time::Duration,
    rules: Vec<super::super::events::ActedRule>,
    diverted: Option<(String, SmtpReply)>,
    would: Vec<WouldRefusal>,
    sender_organization: Option<crate::engine::organizations::OrgId>,
    routed: Vec<crate::engine::events::Routed>,
}

/// The answer when an organization's route did not take its version: the client keeps the
/// message and sends it again (the versions delivered before are not sent twice). A route
/// that refused the message itself for good (5xx at its end) is told as it is, so that the
/// sender hears it at once rather than after days of retries; a recipient the route's
/// targets refuse leaves them all tried and is answered 451.
fn route_failed(error: &EngineError) -> Verdict {
    if let EngineError::Route {
        source: OutboundError::Refused { reply, .. },
        ..
    } = error
        && !reply.is_transient()
    {
        let text = crate::engine::reply::printable(
            &format!(
                "Error: the route of one of its recipients' organizations refused the message: {}",
                reply.text()
            ),
            400,
        );
        if let Ok(reply) = SmtpReply::new(reply.code(), reply.enhanced(), &text) {
            return Verdict::Reject(reply);
        }
    }
    Verdict::Tempfail(
        SmtpReply::new(
            451,
            Some("4.4.1"),
            "Error: a version of the message for one of its recipients' organizations was not delivered, try again later",
        )
        .expect("static reply is valid"),
    )
}

/// Who carries an accepted message on: the MTA the milter sits beside (then Postern delivers
/// the recipients an encryption rule routes through it, before the MTA gets the rest), or
/// Postern itself (the proxy relays it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Carrier {
    Mta,
    Postern,
}

/// The end of message as it is being decided. A decision other than continue drops every
/// edit and envelope change, here and nowhere else.
struct Decision {
    reason: Reason,
    verdict: Verdict,
    edits: Edits,
    envelope: EnvelopeEdits,
    /// Postern changed the message (content rules, a rewritten From/To/Cc).
    transformed: bool,
    /// The divert target's answer, when a divert took the message.
    diverted: Option<SmtpReply>,
}

impl Decision {
    fn goes_on(&self) -> bool {
        self.verdict == Verdict::Continue
    }

    fn decide(&mut self, reason: Reason, verdict: Verdict) {
        self.reason = reason;
        if verdict != Verdict::Continue {
            self.edits = Edits::default();
            self.envelope = EnvelopeEdits::default();
        }
        self.verdict = verdict;
    }
}
