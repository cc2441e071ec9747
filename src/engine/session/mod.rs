//! One SMTP conversation as the policy sees it: one async call per stage, each answered with a
//! [`Verdict`]. Doors (milter, proxy) call these and translate the answers. Each stage that
//! judges has its own file; this one holds the session's state and what the stages share.

mod authentication;
mod connect;
mod content;
mod data;
mod happened;
mod mail;
mod outgoing;
mod rcpt;
mod routes;
mod spoof;
mod stages;
mod versions;

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::SharedState;
use super::address::EnvelopeAddress;
use super::authentication::AuthSummary;
use super::checks::auth_results::names_host;
use super::checks::dos::ConnectionSlot;
use super::checks::exploit_detection::{HidingReply, RecipientRefusal, default_refusal};
use super::checks::profiles::{ConnectionProfile, RelayControl};
use super::checks::reputation::Behaviour;
use super::checks::spf::{Spf, SpfHeader, SpfOutcome};
use super::checks::spoof::{SpoofAction, Spoofed};
use super::events::{
    CheckId, CheckRecord, ConnectionReport, Event, HandedOn, MessageReport, Note, Reason,
    RefusedBy, RefusedRecipient, ScanStep, SessionFacts, SmtpStage, TransactionReport,
    WouldRefusal,
};
use super::message::{BufferError, MessageBuffer, first_header_field, header_fields};
use super::policy::{Policy, Stage};
use super::ports::OutboundError;
use super::reply::SmtpReply;
use super::rules::Diversion;
use super::verdict::{Edits, HeaderEdit, MessageOutcome, ScanSlot, Verdict};
use happened::Happened;

/// What a door knows about the client when it connects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's IP address; `None` for local submissions (e.g. a unix socket).
    pub addr: Option<IpAddr>,
    /// The client's verified host name, if the MTA has one.
    pub name: Option<String>,
}

/// TLS facts of the session, once the client has negotiated TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    pub version: String,
    pub cipher: String,
    pub cert_subject: Option<String>,
}

/// Why the engine could not judge something; turned into the scan failure action.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("cannot rewrite the message: {0}")]
    Content(#[from] crate::engine::rules::ContentError),
    #[error("the content scan stopped unexpectedly: {0}")]
    Task(String),
    /// The message was not kept (refused while it arrived), so there is nothing to read.
    #[error("the message was not kept")]
    NotKept,
    #[error("{0}")]
    Signing(String),
    #[error("rule {ruleset}/{rule}: {source}")]
    Divert {
        ruleset: String,
        rule: String,
        source: OutboundError,
    },
    #[error("{recipients} recipient(s) through {via:?}: {source}")]
    Route {
        recipients: usize,
        via: Vec<String>,
        source: OutboundError,
    },
}

/// Session ids are unique over time, not only within one process (as Postfix's long queue ids
/// are): the first is the process's start time in microseconds since the Unix epoch and each
/// next one is one more, so a restarted process starts past every id given before (unless
/// more than a million sessions a second were opened) and Received fields, logs and tracking
/// records never repeat one.
static NEXT_SESSION: std::sync::LazyLock<AtomicU64> = std::sync::LazyLock::new(|| {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    AtomicU64::new(micros)
});

/// A verdict reached early and held until the configured stage (option "Delayed rejection
/// state"), so that the MTA records the sender and recipients first.
#[derive(Debug)]
struct Held {
    verdict: Verdict,
    check: CheckId,
}

/// One mail transaction (MAIL FROM to end of message or reset).
#[derive(Debug)]
struct Transaction {
    started: Instant,
    sender: EnvelopeAddress,
    recipients: Vec<EnvelopeAddress>,
    /// Recipients refused in this transaction, by anyone, with their replies.
    refused: Vec<RefusedRecipient>,
    queue_id: Option<String>,
    /// The message's `Message-ID`, read at its end.
    message_id: Option<String>,
    message: Option<MessageBuffer>,
    /// Set when the message could not be held (too big, spool failure): its final verdict.
    failure: Option<Verdict>,
    /// The SPF outcome for this transaction, recorded in a header at its end.
    spf: Option<SpfOutcome>,
    /// Set by the content stage when a `divert` rule matched (or by DMARC's quarantine).
    divert: Option<Diversion>,
    /// The DKIM, ARC and DMARC results on arrival, when verified.
    authentication: Option<AuthSummary>,
    /// The content-scan slot, kept while a rewritten body exists.
    scan_slot: ScanSlot,
    /// Addresses that claimed a local domain from outside, tagged (`spoof_detection =
    /// "tag"`), with the domain.
    spoofed: Vec<(Spoofed, String)>,
    /// With organizations: the version the door's own transaction carries (the first
    /// accepted recipient's whose organization has no route of its own).
    carried: Option<Option<super::organizations::OrgId>>,
    /// The sender's organization, found once (its user, profile and address do not change
    /// within a transaction).
    sender_organization: std::sync::OnceLock<Option<super::organizations::OrgId>>,
    /// Recipients Postern delivered itself, with the targets' replies.
    routed: Vec<super::events::Routed>,
    /// The door's own trace field (the proxy's `Received:`), put first in what Postern
    /// delivers itself (a divert, an organization's version); empty behind an MTA.
    trace_field: String,
}

impl Transaction {
    /// The message as it leaves: as received, with `edits` applied.
    async fn leaving(&mut self, edits: &Edits) -> Result<Vec<u8>, EngineError> {
        Ok(edits.applied_to(self.received().await?))
    }

    /// `message` with the door's trace field first, when it has one.
    fn traced(&self, message: Vec<u8>) -> Vec<u8> {
        if self.trace_field.is_empty() {
            return message;
        }
        [self.trace_field.as_bytes(), &message].concat()
    }

    /// The message as it was received.
    async fn received(&mut self) -> Result<Vec<u8>, EngineError> {
        let buffer = self.message.as_mut().ok_or(EngineError::NotKept)?;
        Ok(buffer.contents().await?)
    }

    fn new(sender: EnvelopeAddress) -> Self {
        Self {
            started: Instant::now(),
            sender,
            recipients: Vec::new(),
            refused: Vec::new(),
            queue_id: None,
            message_id: None,
            message: None,
            failure: None,
            spf: None,
            divert: None,
            authentication: None,
            scan_slot: ScanSlot::default(),
            spoofed: Vec::new(),
            carried: None,
            sender_organization: std::sync::OnceLock::new(),
            routed: Vec::new(),
            trace_field: String::new(),
        }
    }
}

/// The policy's view of one connection.
#[derive(Debug)]
pub struct Session {
    id: u64,
    started: Instant,
    policy: Arc<Policy>,
    client: ClientInfo,
    helo: Option<String>,
    tls: Option<TlsInfo>,
    authenticated: Option<String>,
    /// Where a refusal reached at connect is delivered: the configured delayed rejection
    /// state, or later when the door cannot show a reply earlier.
    reply_stage: Stage,
    held: Option<Held>,
    /// With organizations of their own DNSBL hit actions: the listing's refusal, given (or
    /// not) to each recipient at RCPT by its organization's action.
    rbl_hit: Option<Verdict>,
    /// Each stage's check result and timing for this connection, for its closing report.
    checks: Vec<CheckRecord>,
    /// The connection profile chosen by the client's address or host name.
    profile: Option<usize>,
    /// What all sessions share (the ports, connections per client), and this connection's
    /// place among the client's connections.
    shared: SharedState,
    slot: Option<ConnectionSlot>,
    invalid_commands: u32,
    /// Recipients refused in this connection (by Postern or the MTA), and how the last was.
    failed_recipients: u32,
    last_refusal: Option<RecipientRefusal>,
    /// What refused the recipient being judged, for the transaction's report.
    rcpt_refusal: Option<CheckId>,
    messages: u32,
    tx: Option<Transaction>,
    /// What the events said so far that the next reports carry (behind a lock only because
    /// events are emitted through `&self`; never held across an await).
    happened: Mutex<Happened>,
    /// A message the door relays itself, reported once the door says where it went.
    unreported: Option<data::Finished>,
}

impl Session {
    /// A new session judged by `policy` for its whole life, even across reloads.
    /// `first_reply_stage` is the earliest stage at which the door can show the client a reply
    /// of the policy's own (a milter's connect-stage reply is replaced by the MTA's).
    pub fn new(policy: Arc<Policy>, first_reply_stage: Stage, shared: SharedState) -> Self {
        Self {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            started: Instant::now(),
            reply_stage: policy.delayed_rejection_state.max(first_reply_stage),
            policy,
            client: ClientInfo::default(),
            helo: None,
            tls: None,
            authenticated: None,
            held: None,
            rbl_hit: None,
            checks: Vec::new(),
            profile: None,
            shared,
            slot: None,
            invalid_commands: 0,
            failed_recipients: 0,
            last_refusal: None,
            rcpt_refusal: None,
            messages: 0,
            tx: None,
            happened: Mutex::new(Happened::default()),
            unreported: None,
        }
    }

    /// The policy this session is judged by.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The client as the door reported it at connect.
    pub fn client(&self) -> &ClientInfo {
        &self.client
    }

    /// The name the client gave in HELO or EHLO, since the last TLS start.
    pub fn helo_name(&self) -> Option<&str> {
        self.helo.as_deref()
    }

    /// The TLS session in use, if any.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_ref()
    }

    /// The user the client authenticated as, if any.
    pub fn authenticated_user(&self) -> Option<&str> {
        self.authenticated.as_deref()
    }

    /// This session's number, as the logs give it.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The recipients accepted so far in this transaction (by the policy and, where the
    /// door delivers itself, by its relay target).
    pub fn recipients(&self) -> &[EnvelopeAddress] {
        self.tx.as_ref().map_or(&[], |tx| tx.recipients.as_slice())
    }

    /// The sender of the transaction in progress, as a relay target is given it (rewritten by
    /// the address transformation where a rule says so).
    pub fn relayed_sender(&self) -> Option<EnvelopeAddress> {
        let tx = self.tx.as_ref()?;
        Some(self.relayed_address(super::address_transformation::Place::Sender, &tx.sender))
    }

    /// The recipient the last RCPT accepted (after [`Session::rcpt`] answered continue).
    pub fn accepted_recipient(&self) -> Option<&EnvelopeAddress> {
        self.recipients().last()
    }

    /// True between MAIL FROM and the end (or abort) of that message.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    async fn judge_helo(&mut self, name: &str) -> Verdict {
        let verdict = self.held_at(Stage::Helo).unwrap_or(Verdict::Continue);
        if verdict == Verdict::Continue {
            self.helo = Some(name.to_owned());
        }
        verdict
    }

    /// TLS was negotiated (in milter mode, learned from the `{tls_version}` macro).
    pub fn tls_established(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
    }

    /// TLS started on this connection (STARTTLS): what was learned before it is forgotten
    /// (HELO, authentication and any transaction), since a man in the middle could have
    /// said it in the plaintext part.
    pub fn restart_after_tls(&mut self, tls: TlsInfo) {
        self.note(Note::TlsStarted {
            version: &tls.version,
            cipher: &tls.cipher,
        });
        self.end_transaction();
        self.helo = None;
        self.authenticated = None;
        self.tls = Some(tls);
    }

    /// The client authenticated as `user`.
    pub fn authenticated(&mut self, user: &str) {
        self.authenticated = Some(user.to_owned());
    }

    /// The name of the connection profile chosen for the client, if any.
    pub fn profile_name(&self) -> Option<&str> {
        self.client_profile().map(|p| p.name.as_str())
    }

    fn client_profile(&self) -> Option<&ConnectionProfile> {
        self.profile.map(|i| self.policy.profiles.get(i))
    }

    /// RSET, or the MTA aborted the message.
    pub fn reset(&mut self) {
        self.end_transaction();
    }

    /// What the session knows of the client now, for a report; `would` are the connection's
    /// would-be refusals, taken from [`Happened`].
    fn facts<'a>(&'a self, would: &'a [WouldRefusal]) -> SessionFacts<'a> {
        SessionFacts {
            client: &self.client,
            helo: self.helo.as_deref(),
            tls: self.tls.as_ref(),
            authenticated: self.authenticated.as_deref(),
            would,
        }
    }

    /// Ends a transaction that did not reach the end of its message, reporting it when it had
    /// recipients (accepted or refused).
    fn end_transaction(&mut self) {
        if let Some(finished) = self.unreported.take() {
            // The door did not say where it went.
            self.report_message(&finished, None);
        }
        let Some(tx) = self.tx.take() else {
            return;
        };
        if tx.recipients.is_empty() && tx.refused.is_empty() {
            return;
        }
        let (would, would_connection, refusal) = {
            let mut happened = self.happened();
            happened.rules.clear();
            happened.diverted = None;
            happened.reported = true;
            (
                std::mem::take(&mut happened.would),
                happened.would_connection.clone(),
                happened.refusal.take(),
            )
        };
        self.emit(&Event::TransactionEnded {
            session: self.id,
            report: TransactionReport {
                queue_id: tx.queue_id.as_deref().unwrap_or(""),
                sender: &tx.sender,
                accepted: &tx.recipients,
                refused: &tx.refused,
                facts: self.facts(&would_connection),
                elapsed: tx.started.elapsed(),
                dry_run: self.policy.dry_run,
                refused_at_data: refusal.as_ref().filter(|r| r.stage == SmtpStage::Data),
                would: &would,
                owners: super::organizations::Owners {
                    organizations: &self.policy.organizations,
                    sender: self.sender_organization(&tx),
                },
            },
        });
    }

    /// The door handed the last message on itself (the proxy, to its relay targets): which
    /// target answered (`None`: none could take it) and the reply the client heard. The
    /// message is reported now.
    pub fn handed_on(&mut self, relay_target: Option<&str>, reply: &SmtpReply) {
        if let Some(finished) = self.unreported.take() {
            let handed_on = HandedOn {
                relay_target,
                reply,
            };
            self.report_message(&finished, Some(handed_on));
        }
    }

    async fn judge_unknown_command(&mut self, command: &str) -> Verdict {
        self.invalid_commands += 1;
        self.learn(Behaviour::InvalidCommand).await;
        let verb = command.split_whitespace().next().unwrap_or("");
        let verb: String = verb.chars().take(32).collect();
        match self
            .policy
            .exploit_detection
            .invalid_command(self.invalid_commands)
        {
            Some(reply) => {
                self.note(Note::TooManyInvalidCommands {
                    count: self.invalid_commands,
                    command: &verb,
                });
                Verdict::Drop(reply)
            }
            None => Verdict::Continue,
        }
    }

    /// The connection ended.
    pub fn close(&mut self) {
        let unfinished_message = self.tx.is_some();
        self.end_transaction();
        let happened = std::mem::take(&mut *self.happened());
        let mut would = happened.would_connection;
        would.extend(happened.would);
        self.emit(&Event::Disconnected {
            session: self.id,
            report: ConnectionReport {
                client: &self.client,
                helo: self.helo.as_deref(),
                tls: self.tls.as_ref(),
                authenticated: self.authenticated.as_deref(),
                messages: self.messages,
                checks: &self.checks,
                invalid_commands: self.invalid_commands,
                failed_recipients: self.failed_recipients,
                unfinished_message,
                elapsed: self.started.elapsed(),
                refusal: happened.refusal.as_ref(),
                would: &would,
                reported: happened.reported,
            },
        });
    }

    /// Reports an event to the sinks, noting what a later report carries.
    fn emit(&self, event: &Event<'_>) {
        self.happened().note(event);
        self.shared.ports.events.emit(event);
    }

    /// Reports a [`Note`].
    fn note(&self, note: Note<'_>) {
        self.emit(&Event::Noted {
            session: self.id,
            note,
        });
    }

    fn happened(&self) -> std::sync::MutexGuard<'_, Happened> {
        self.happened.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports a refusal answered now (`held_until` `None`) or held for a later stage.
    fn refused(
        &self,
        check: CheckId,
        verdict: &Verdict,
        stage: SmtpStage,
        held_until: Option<SmtpStage>,
    ) {
        self.emit(&Event::Refused {
            session: self.id,
            check,
            verdict,
            stage,
            held_until,
            late: false,
            dry_run: self.policy.dry_run,
        });
    }

    /// A refusal by one of Postern's own rules, with where to get help ([connection] help_url).
    fn with_help(&self, reply: SmtpReply) -> SmtpReply {
        let Some(url) = &self.policy.help_url else {
            return reply;
        };
        let text = format!("{}; see {url}", reply.text());
        SmtpReply::new(reply.code(), reply.enhanced(), &text).unwrap_or(reply)
    }

    /// Whether a held verdict is delivered at `stage` to a transaction of `recipients`
    /// (nothing is reported).
    fn holds_at(&self, stage: Stage, recipients: &[EnvelopeAddress]) -> bool {
        self.held.is_some()
            && stage >= self.reply_stage
            && !(stage >= Stage::Data && self.postmaster_only(recipients))
    }

    /// The held verdict, if the conversation has reached the stage where it is delivered.
    fn held_at(&self, stage: Stage) -> Option<Verdict> {
        self.held_for(stage, self.recipients())
    }

    /// [`Session::held_at`] for a transaction of `recipients` (at its end, when it is no
    /// longer the session's).
    fn held_for(&self, stage: Stage, recipients: &[EnvelopeAddress]) -> Option<Verdict> {
        let held = self
            .held
            .as_ref()
            .filter(|_| self.holds_at(stage, recipients))?;
        self.emit(&Event::Refused {
            session: self.id,
            check: held.check,
            verdict: &held.verdict,
            stage: SmtpStage::of(stage),
            held_until: None,
            late: true,
            dry_run: self.policy.dry_run,
        });
        Some(held.verdict.clone())
    }
}

/// The check that objected and the verdict it reached.
type Finding = (CheckId, Verdict);

impl Session {
    /// Runs one piece of engine work within the policy's time budget. `None` means "no
    /// objection"; an error or a timeout is reported and becomes the scan failure action.
    async fn guarded(
        &self,
        step: ScanStep,
        work: impl Future<Output = Result<Option<Finding>, EngineError>>,
    ) -> Option<Finding> {
        let policy = &self.policy;
        let failure = match tokio::time::timeout(policy.scan_timeout, work).await {
            Ok(Ok(found)) => return found,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("time budget of {:?} exceeded", policy.scan_timeout),
        };
        self.scan_failed(step, &failure);
        match policy.scan_failure_action.verdict() {
            Verdict::Continue => None,
            verdict => Some((CheckId::ScanFailure, verdict)),
        }
    }

    /// Reports that the engine could not do `step`.
    fn scan_failed(&self, step: ScanStep, error: &str) {
        self.emit(&Event::ScanFailed {
            session: self.id,
            step,
            error,
            action: self.policy.scan_failure_action.name(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::engine::ScanFailureAction;

    fn session(config: &str, first_reply_stage: Stage) -> Session {
        let config = Config::parse(config, "test.toml").unwrap();
        let (app, _, _) =
            crate::app::App::new(config, crate::engine::events::DoorKind::Milter).unwrap();
        app.engine.session(first_reply_stage)
    }

    fn listed() -> ClientInfo {
        ClientInfo {
            addr: Some("192.0.2.10".parse().unwrap()),
            name: None,
        }
    }

    const LISTED: &str = "[connection]\nip_address_rejection = [\"192.0.2.0/24\"]\n";

    #[tokio::test]
    async fn refusal_at_connect_when_the_door_can_show_it() {
        let mut s = session(LISTED, Stage::None);
        assert!(matches!(s.connect(listed()).await, Verdict::Reject(_)));
    }

    #[tokio::test]
    async fn refusal_waits_for_the_first_stage_the_door_can_show() {
        let mut s = session(LISTED, Stage::Helo);
        assert_eq!(s.connect(listed()).await, Verdict::Continue);
        assert!(matches!(s.helo("x").await, Verdict::Reject(_)));

        // A client that never says HELO is refused at MAIL.
        let mut s = session(LISTED, Stage::Helo);
        assert_eq!(s.connect(listed()).await, Verdict::Continue);
        assert!(matches!(s.mail("a@b.example").await, Verdict::Reject(_)));
        assert!(!s.in_transaction());
    }

    #[tokio::test]
    async fn delayed_rejection_state_data() {
        let mut s = session(
            &format!("{LISTED}delayed_rejection_state = \"data\"\n"),
            Stage::Helo,
        );
        assert_eq!(s.connect(listed()).await, Verdict::Continue);
        assert_eq!(s.helo("x").await, Verdict::Continue);
        assert_eq!(s.mail("a@b.example").await, Verdict::Continue);
        assert_eq!(s.rcpt("c@d.example").await, Verdict::Continue);
        assert_eq!(s.rcpt("e@d.example").await, Verdict::Continue);
        assert!(matches!(s.data().await, Verdict::Reject(_)));
    }

    #[tokio::test]
    async fn after_three_failed_recipients_every_recipient_gets_the_same_answer() {
        let mut s = session("", Stage::Helo);
        s.connect(listed()).await;
        assert_eq!(s.mail("a@b.example").await, Verdict::Continue);
        for n in 1..=3 {
            s.rcpt_refused_by_mta("5.1.1", "Recipient address rejected: User unknown")
                .await;
            assert_eq!(s.failed_recipients, n);
        }
        let hidden = s.rcpt("valid@local.example").await;
        assert_eq!(
            hidden.reply().unwrap().to_string(),
            "450 4.1.1 <valid@local.example>: Recipient address rejected: User unknown"
        );
        // Off: valid recipients pass whatever failed before.
        let mut s = session(
            "[exploit_detection]\naddress_hiding_on_dictionary_attack = false\n",
            Stage::Helo,
        );
        s.connect(listed()).await;
        s.mail("a@b.example").await;
        for _ in 0..5 {
            s.rcpt_refused_by_mta("5.1.1", "User unknown").await;
        }
        assert_eq!(s.rcpt("valid@local.example").await, Verdict::Continue);
    }

    #[tokio::test]
    async fn own_refusals_say_where_to_get_help() {
        let mut s = session(
            "[connection]\nhelp_url = \"https://postmaster.example/help\"\n\
             [relay]\nrestrict_relaying = true\nlocal_domains = [\"local.example\"]\n",
            Stage::Helo,
        );
        s.connect(listed()).await;
        s.mail("a@b.example").await;
        let refused = s.rcpt("x@other.example").await;
        assert_eq!(
            refused.reply().unwrap().to_string(),
            "554 5.7.1 <x@other.example>: Relay access denied; see https://postmaster.example/help"
        );
    }

    #[tokio::test]
    async fn a_message_waits_for_a_scan_slot_within_its_budget() {
        let config = "[scan]\nmax_concurrent_scans = 1\nscan_timeout = 1\n\
                      [[ruleset]]\nname = \"r\"\n[[ruleset.rule]]\nname = \"ssn\"\n\
                      targets = [\"body\"]\ndetector = \"us_ssn\"\naction = \"mask\"\n";
        async fn message(s: &mut Session) -> MessageOutcome {
            s.mail("a@b.example").await;
            s.rcpt("c@d.example").await;
            s.data().await;
            s.message_data(b"Subject: s\r\n\r\nssn 078-05-1121\r\n")
                .await;
            s.end_of_message().await
        }
        let mut s = session(config, Stage::Helo);
        s.connect(ClientInfo::default()).await;
        assert_eq!(s.policy.scan_slots.available_permits(), 1);
        let outcome = message(&mut s).await;
        assert_eq!(outcome.verdict, Verdict::Continue);
        assert!(outcome.edits.body.is_some(), "scanned and masked");
        // The outcome holds the slot while its new body exists.
        assert_eq!(s.policy.scan_slots.available_permits(), 0);
        drop(outcome);
        assert_eq!(s.policy.scan_slots.available_permits(), 1);

        // Every slot busy for longer than the budget: the scan failure action (451).
        let policy = s.policy.clone();
        let _busy = policy.scan_slots.acquire().await.unwrap();
        let outcome = message(&mut s).await;
        assert_eq!(outcome.verdict, ScanFailureAction::Delay.verdict());
    }

    #[tokio::test]
    async fn unlisted_client_passes_every_stage() {
        let mut s = session(LISTED, Stage::Helo);
        let ok = ClientInfo {
            addr: Some("198.51.100.1".parse().unwrap()),
            name: None,
        };
        assert_eq!(s.connect(ok).await, Verdict::Continue);
        assert_eq!(s.helo("x").await, Verdict::Continue);
        assert_eq!(s.mail("a@b.example").await, Verdict::Continue);
        assert_eq!(s.rcpt("c@d.example").await, Verdict::Continue);
        assert_eq!(s.data().await, Verdict::Continue);
        assert_eq!(
            s.message_data(b"Subject: x\r\n\r\nbody\r\n").await,
            Verdict::Continue
        );
        let outcome = s.end_of_message().await;
        assert_eq!(outcome.verdict, Verdict::Continue);
        assert!(outcome.edits.is_empty());
    }
}
