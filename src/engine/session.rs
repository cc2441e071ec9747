//! One SMTP conversation as the policy sees it: one async call per stage, each answered with a
//! [`Verdict`]. Doors (milter, proxy) call these and translate the answers.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tracing::{info, warn};

use super::SharedState;
use super::checks::dos::ConnectionSlot;
use super::checks::exploit_detection::{RecipientRefusal, default_refusal};
use super::checks::profiles::{ConnectionProfile, RelayControl};
use super::checks::reputation::Event;
use super::checks::spf::{Spf, SpfHeader, SpfOutcome, authserv_id};
use super::message::{BufferError, MessageBuffer, header_fields};
use super::policy::{Policy, Stage};
use super::reply::SmtpReply;
use super::verdict::{Edits, HeaderEdit, MessageOutcome, Verdict};

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
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// A verdict reached early and held until the configured stage (seed: "Delayed rejection
/// state"), so that the MTA records the sender and recipients first.
#[derive(Debug)]
struct Held {
    verdict: Verdict,
    check: &'static str,
}

/// One mail transaction (MAIL FROM to end of message or reset).
#[derive(Debug)]
struct Transaction {
    started: Instant,
    sender: String,
    recipients: Vec<String>,
    queue_id: Option<String>,
    message: Option<MessageBuffer>,
    /// Set when the message could not be held (too big, spool failure): its final verdict.
    failure: Option<Verdict>,
    /// The SPF outcome for this transaction, recorded in a header at its end.
    spf: Option<SpfOutcome>,
}

impl Transaction {
    fn new(sender: &str) -> Self {
        Self {
            started: Instant::now(),
            sender: sender.to_owned(),
            recipients: Vec::new(),
            queue_id: None,
            message: None,
            failure: None,
            spf: None,
        }
    }
}

/// The policy's view of one connection.
#[derive(Debug)]
pub struct Session {
    id: u64,
    policy: Arc<Policy>,
    client: ClientInfo,
    helo: Option<String>,
    tls: Option<TlsInfo>,
    authenticated: Option<String>,
    /// Where a refusal reached at connect is delivered: the configured delayed rejection
    /// state, or later when the door cannot show a reply earlier.
    reply_stage: Stage,
    held: Option<Held>,
    /// Each check's result and timing for this connection, for its log line:
    /// `rbl:pass:2ms`.
    checks: Vec<String>,
    /// The connection profile chosen by the client's address or host name.
    profile: Option<usize>,
    /// State shared by all sessions (connections per client, local reputations), and this
    /// connection's place among the client's connections.
    shared: SharedState,
    slot: Option<ConnectionSlot>,
    invalid_commands: u32,
    /// Recipients refused in this connection (by Postern or the MTA), and how the last was.
    failed_recipients: u32,
    last_refusal: Option<RecipientRefusal>,
    messages: u32,
    tx: Option<Transaction>,
}

impl Session {
    /// A new session judged by `policy` for its whole life, even across reloads.
    /// `first_reply_stage` is the earliest stage at which the door can show the client a reply
    /// of the policy's own (a milter's connect-stage reply is replaced by the MTA's).
    pub fn new(policy: Arc<Policy>, first_reply_stage: Stage, shared: SharedState) -> Self {
        Self {
            id: NEXT_SESSION.fetch_add(1, Ordering::Relaxed),
            reply_stage: policy.delayed_rejection_state.max(first_reply_stage),
            policy,
            client: ClientInfo::default(),
            helo: None,
            tls: None,
            authenticated: None,
            held: None,
            checks: Vec::new(),
            profile: None,
            shared,
            slot: None,
            invalid_commands: 0,
            failed_recipients: 0,
            last_refusal: None,
            messages: 0,
            tx: None,
        }
    }

    /// The policy this session is judged by.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// True between MAIL FROM and the end (or abort) of that message.
    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// The client connected.
    pub async fn connect(&mut self, client: ClientInfo) -> Verdict {
        self.client = client;
        info!(
            session = self.id,
            client_addr = ?self.client.addr,
            client_name = self.client.name.as_deref().unwrap_or("unknown"),
            "connect"
        );
        let policy = self.policy.clone();
        self.profile = policy
            .profiles
            .for_client(self.client.addr, self.client.name.as_deref());
        if let Some(p) = self.client_profile() {
            info!(session = self.id, profile = %p.name, "connection profile");
        }
        // Counted first: a flooding client costs no lookups.
        let started = Instant::now();
        let checked = match self.count_connection() {
            Some(finding) => Some(finding),
            None => guarded(&policy, "connect", self.connection_checks()).await,
        };
        let result = checked.as_ref().map_or("pass".to_owned(), |(check, v)| {
            format!("{check}={}", v.name())
        });
        self.checks.push(format!(
            "connect:{result}:{}ms",
            started.elapsed().as_millis()
        ));
        match checked {
            Some((check, verdict)) if self.reply_stage != Stage::None => {
                info!(session = self.id, check, %verdict, until = %self.reply_stage, "verdict held");
                self.held = Some(Held { verdict, check });
                Verdict::Continue
            }
            Some((check, verdict)) => {
                info!(session = self.id, check, %verdict, stage = "connect", "refused");
                verdict
            }
            None => Verdict::Continue,
        }
    }

    /// The client said HELO or EHLO.
    pub async fn helo(&mut self, name: &str) -> Verdict {
        self.helo = Some(name.to_owned());
        self.held_at(Stage::Helo).unwrap_or(Verdict::Continue)
    }

    /// TLS was negotiated (in milter mode, learned from the `{tls_version}` macro).
    pub fn tls_established(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
    }

    /// The client authenticated as `user`.
    pub fn authenticated(&mut self, user: &str) {
        self.authenticated = Some(user.to_owned());
    }

    /// MAIL FROM: starts a transaction (ending any earlier one).
    pub async fn mail(&mut self, sender: &str) -> Verdict {
        self.tx = None;
        if let Some(v) = self.held_at(Stage::Mail) {
            return v;
        }
        let mut tx = Transaction::new(sender);
        let policy = self.policy.clone();
        // Inbound mandatory TLS, from the client's profile or else the sender domain's.
        let tls_profile = self
            .profile
            .or_else(|| policy.profiles.for_sender(sender))
            .map(|i| policy.profiles.get(i));
        if let Some(p) = tls_profile
            && p.require_tls
            && self.tls.is_none()
        {
            info!(session = self.id, check = "connection_profile", profile = %p.name, "TLS required, session is not encrypted");
            return Verdict::refuse(
                self.with_help(
                    SmtpReply::new(530, Some("5.7.0"), "Must issue a STARTTLS command first")
                        .expect("static reply is valid"),
                ),
            );
        }
        if let (Some(spf), Some(ip)) = (&policy.spf, self.client.addr)
            && self.authenticated.is_none()
            && !policy.relay.is_relay_source(ip)
            && self.client_profile().is_none_or(|p| p.spf)
        {
            let helo = self.helo.clone().unwrap_or_default();
            let started = Instant::now();
            let checked = guarded(&policy, "mail", async {
                let outcome = spf.check(&policy.hostname, ip, &helo, sender).await;
                info!(
                    session = self.id,
                    check = "spf",
                    identity = %outcome.identity,
                    checked = %outcome.checked.escape_debug(),
                    result = outcome.name(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "check"
                );
                let verdict = spf.verdict(ip, &outcome);
                tx.spf = Some(outcome);
                Ok(verdict.map(|v| ("spf", v)))
            })
            .await;
            if let Some((check, verdict)) = checked {
                info!(session = self.id, check, %verdict, stage = "mail", "refused");
                return verdict;
            }
        }
        self.tx = Some(tx);
        Verdict::Continue
    }

    /// RCPT TO.
    pub async fn rcpt(&mut self, recipient: &str) -> Verdict {
        if let Some(v) = self.held_at(Stage::Rcpt) {
            return v;
        }
        if let Some(max) = self.policy.exploit_detection.max_failed_addresses
            && self.failed_recipients >= max
        {
            let refusal = self.last_refusal.clone().unwrap_or_else(default_refusal);
            self.failed_recipients += 1;
            return Verdict::refuse(refusal.reply_for(recipient));
        }
        if !self.may_relay()
            && let Some(reply) = self.policy.relay.check(recipient)
        {
            info!(session = self.id, check = "relay", recipient = %recipient.escape_debug(), "relay access denied");
            let reply = self.with_help(reply);
            self.recipient_failed(RecipientRefusal::from_reply(&reply));
            return Verdict::refuse(reply);
        }
        let sender = self.tx.as_ref().map_or("", |tx| tx.sender.as_str());
        if let Some(reply) =
            self.policy
                .encryption_rules
                .check(sender, recipient, self.tls.is_some())
        {
            info!(session = self.id, check = "encryption_rule", recipient = %recipient.escape_debug(), "sender encryption required, session is not encrypted");
            return Verdict::refuse(self.with_help(reply));
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(recipient.to_owned());
        }
        Verdict::Continue
    }

    /// Whether this client may send to any domain: by its connection profile's relay control,
    /// else by the global relay restriction.
    fn may_relay(&self) -> bool {
        let relay = &self.policy.relay;
        let authenticated = self.authenticated.is_some();
        match self.client_profile().map(|p| p.relay_control) {
            Some(RelayControl::Full) => true,
            Some(RelayControl::RestrictedExternal | RelayControl::RestrictedInternal) => {
                authenticated && relay.allow_relay_if_authenticated
            }
            _ => !self.policy.restrict_relaying || relay.may_relay(self.client.addr, authenticated),
        }
    }

    fn client_profile(&self) -> Option<&ConnectionProfile> {
        self.profile.map(|i| self.policy.profiles.get(i))
    }

    /// The MTA refused a recipient itself (reported by the milter door: Postfix's
    /// `{rcpt_mailer}` is `error`), with this enhanced status code and text.
    pub fn rcpt_refused_by_mta(&mut self, enhanced: &str, text: &str) {
        self.recipient_failed(RecipientRefusal::from_mta(enhanced, text));
    }

    fn recipient_failed(&mut self, refusal: RecipientRefusal) {
        self.failed_recipients += 1;
        self.last_refusal = Some(refusal);
        self.learn(Event::RefusedRecipient);
        if self.policy.exploit_detection.max_failed_addresses == Some(self.failed_recipients) {
            self.learn(Event::DictionaryAttack);
            info!(
                session = self.id,
                client_addr = ?self.client.addr,
                failed_recipients = self.failed_recipients,
                "dictionary attack suspected: every further recipient gets the same answer"
            );
        }
    }

    /// The queue id the MTA gave the message, for logs.
    pub fn set_queue_id(&mut self, id: &str) {
        if let Some(tx) = self.tx.as_mut() {
            tx.queue_id.get_or_insert_with(|| id.to_owned());
        }
    }

    /// DATA.
    pub async fn data(&mut self) -> Verdict {
        if let Some(v) = self.held_at(Stage::Data) {
            return v;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.message = Some(MessageBuffer::new(self.policy.message_limits.clone()));
        }
        Verdict::Continue
    }

    /// Raw message bytes (header and body as on the wire, CRLF line ends), in order. A
    /// refusal here (too big, cannot be held) is repeated for every later call and at end of
    /// message, so a door that cannot answer every call still delivers it.
    pub async fn message_data(&mut self, bytes: &[u8]) -> Verdict {
        let limits = &self.policy.message_limits;
        let tx = self.tx.get_or_insert_with(|| Transaction::new(""));
        if let Some(failed) = &tx.failure {
            return failed.clone();
        }
        let buffer = tx
            .message
            .get_or_insert_with(|| MessageBuffer::new(limits.clone()));
        let (reason, verdict) = match buffer.append(bytes).await {
            Ok(()) => return Verdict::Continue,
            Err(BufferError::TooBig { limit }) => (
                "max_message_size",
                Verdict::Reject(
                    SmtpReply::new(
                        552,
                        Some("5.3.4"),
                        &format!("Message size exceeds fixed limit of {limit} bytes"),
                    )
                    .expect("static reply is valid"),
                ),
            ),
            Err(e) => {
                warn!(session = self.id, error = %e, action = ?self.policy.scan_failure_action, "scan failure");
                ("scan_failure", self.policy.scan_failure_action.verdict())
            }
        };
        tx.failure = Some(verdict.clone());
        // Nothing more is kept of this message; the verdict stands until its end.
        tx.message = None;
        if verdict != Verdict::Continue {
            info!(session = self.id, reason, %verdict, "message refused before its end");
        }
        verdict
    }

    /// End of message: the verdict and the edits to apply before the message goes on.
    pub async fn end_of_message(&mut self) -> MessageOutcome {
        let policy = self.policy.clone();
        let Some(mut tx) = self.tx.take() else {
            return MessageOutcome {
                verdict: Verdict::Continue,
                edits: Edits::default(),
            };
        };
        self.messages += 1;
        let (reason, verdict) = match (self.held_at(Stage::Data), tx.failure.take()) {
            (Some(held), _) => ("held", held),
            (None, Some(failed)) => ("refused_before_end", failed),
            (None, None) => guarded(&policy, "message", async { Ok(None) })
                .await
                .unwrap_or(("end_of_message", Verdict::Continue)),
        };
        let mut edits = Edits::default();
        if matches!(verdict, Verdict::Continue | Verdict::Accept)
            && let (Some(spf), Some(outcome), Some(ip)) =
                (&policy.spf, tx.spf.clone(), self.client.addr)
        {
            self.spf_headers(spf, &outcome, ip, &mut tx, &mut edits)
                .await;
        }
        if let Some(trace) = &policy.trace_header
            && matches!(verdict, Verdict::Continue | Verdict::Accept)
        {
            edits.headers.push(HeaderEdit::Add {
                name: trace.name.clone(),
                value: format!("{}; by {}", verdict.name(), policy.hostname),
            });
        }
        self.log_message(&tx, &verdict, reason);
        MessageOutcome { verdict, edits }
    }

    /// The SPF result header, first in the message; with Authentication-Results, forged
    /// results that claim to come from this host are removed (RFC 8601 §5).
    async fn spf_headers(
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
        if spf.header == SpfHeader::AuthenticationResults
            && let Some(buffer) = tx.message.as_mut()
            && let Ok(raw) = buffer.contents().await
        {
            let ours: Vec<u32> = header_fields(&raw)
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(&name))
                .zip(1..)
                .filter(|((_, v), _)| authserv_id(v).eq_ignore_ascii_case(hostname))
                .map(|(_, index)| index)
                .collect();
            // Highest index first: each deletion shifts the ones after it.
            for index in ours.into_iter().rev() {
                info!(
                    session = self.id,
                    index, "removing forged Authentication-Results for this host"
                );
                edits.headers.push(HeaderEdit::Change {
                    name: name.clone(),
                    index,
                    value: None,
                });
            }
        }
        edits.headers.push(HeaderEdit::Insert {
            index: 0,
            name,
            value,
        });
    }

    /// RSET, or the MTA aborted the message.
    pub fn reset(&mut self) {
        self.tx = None;
    }

    /// A command the server does not know. Counted per connection; at the limit the client
    /// is dropped.
    pub async fn unknown_command(&mut self, command: &str) -> Verdict {
        self.invalid_commands += 1;
        self.learn(Event::InvalidCommand);
        let verb = command.split_whitespace().next().unwrap_or("");
        let verb: String = verb.chars().take(32).collect();
        match self
            .policy
            .exploit_detection
            .invalid_command(self.invalid_commands)
        {
            Some(reply) => {
                info!(session = self.id, count = self.invalid_commands, command = %verb.escape_debug(), "too many invalid commands, dropping client");
                Verdict::Drop(reply)
            }
            None => Verdict::Continue,
        }
    }

    /// The connection ended.
    pub fn close(&mut self) {
        info!(
            session = self.id,
            client_addr = ?self.client.addr,
            helo = self.helo.as_deref().unwrap_or(""),
            tls = self.tls.as_ref().map(|t| t.version.as_str()).unwrap_or("none"),
            authenticated = self.authenticated.is_some(),
            messages = self.messages,
            checks = %self.checks.join(","),
            invalid_commands = self.invalid_commands,
            failed_recipients = self.failed_recipients,
            unfinished_message = self.tx.is_some(),
            "disconnect"
        );
        self.tx = None;
    }

    /// DoS protection: counts this connection against its client's limits. Allowed relay
    /// sources are not limited.
    fn count_connection(&mut self) -> Option<Finding> {
        let limits = self.policy.client_limits?;
        let ip = self.client.addr?;
        if self.policy.relay.is_relay_source(ip) {
            return None;
        }
        let (slot, refusal) = self.shared.clients.connect(ip, limits, Instant::now());
        self.slot = Some(slot);
        refusal.map(|reply| ("dos_protection", Verdict::refuse(self.with_help(reply))))
    }

    /// Runs the connection-stage checks in order; the first refusal wins.
    async fn connection_checks(&self) -> Result<Option<Finding>, EngineError> {
        let Some(ip) = self.client.addr else {
            return Ok(None);
        };
        if let Some(reply) = self.policy.ip_address_rejection.check(ip) {
            return Ok(Some((
                "ip_address_rejection",
                Verdict::refuse(reply.clone()),
            )));
        }
        if self
            .client_profile()
            .is_some_and(|p| p.relay_control == RelayControl::Blocked)
        {
            let text = format!("Client host [{ip}] rejected: access denied");
            let reply = SmtpReply::new(554, Some("5.7.1"), &text).expect("printable reply");
            return Ok(Some((
                "connection_profile",
                Verdict::Reject(self.with_help(reply)),
            )));
        }
        let trusted = self.policy.skip_connection_tests_for_relay_sources
            && self.policy.relay.is_relay_source(ip);
        let rbl_applies = self.client_profile().is_none_or(|p| p.rbl);
        if let Some(rbl) = self.policy.rbl.as_ref().filter(|_| !trusted && rbl_applies) {
            let started = Instant::now();
            let result = rbl.check(ip).await;
            let verdict = rbl.verdict(ip, &result);
            info!(
                session = self.id,
                check = "rbl",
                client_addr = %ip,
                result = %result,
                verdict = verdict.as_ref().map_or("pass", Verdict::name),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "check"
            );
            if let Some(verdict) = verdict {
                self.learn(Event::RblHit);
                return Ok(Some(("rbl", verdict)));
            }
        }
        if let Some(reputation) = self.policy.reputation.as_ref().filter(|_| !trusted) {
            let started = Instant::now();
            let result = reputation.check(self.shared.reputation.as_ref(), ip).await;
            let verdict = reputation.verdict(ip, &result);
            info!(
                session = self.id,
                check = "reputation",
                client_addr = %ip,
                score = result.total(),
                local = result.local,
                zones = ?result.zones,
                failed = ?result.failed,
                verdict = verdict.as_ref().map_or("pass", Verdict::name),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "check"
            );
            if let Some(verdict) = verdict {
                return Ok(Some(("reputation", verdict)));
            }
        }
        Ok(None)
    }

    /// A refusal by one of Postern's own rules, with where to get help ([connection] help_url).
    fn with_help(&self, reply: SmtpReply) -> SmtpReply {
        let Some(url) = &self.policy.help_url else {
            return reply;
        };
        let text = format!("{}; see {url}", reply.text());
        SmtpReply::new(reply.code(), reply.enhanced(), &text).unwrap_or(reply)
    }

    /// Lowers the client's local reputation for its behaviour (allowed relay sources aside).
    fn learn(&self, event: Event) {
        if let (Some(reputation), Some(ip)) = (&self.policy.reputation, self.client.addr)
            && !self.policy.relay.is_relay_source(ip)
        {
            let penalty = reputation.penalty(event);
            self.shared
                .reputation
                .record(ip, penalty, reputation.half_life, Instant::now());
        }
    }

    /// The held verdict, if the conversation has reached the stage where it is delivered.
    fn held_at(&self, stage: Stage) -> Option<Verdict> {
        let held = self.held.as_ref()?;
        (stage >= self.reply_stage).then(|| {
            info!(session = self.id, check = held.check, verdict = %held.verdict, %stage, "refused (delayed)");
            held.verdict.clone()
        })
    }

    fn log_message(&self, tx: &Transaction, verdict: &Verdict, reason: &str) {
        info!(
            session = self.id,
            queue_id = tx.queue_id.as_deref().unwrap_or(""),
            sender = %tx.sender,
            recipients = tx.recipients.len(),
            size = tx.message.as_ref().map_or(0, MessageBuffer::len),
            spooled = tx.message.as_ref().is_some_and(MessageBuffer::is_spooled),
            spf = tx.spf.as_ref().map_or("-", SpfOutcome::name),
            %verdict,
            reason,
            elapsed_ms = tx.started.elapsed().as_millis() as u64,
            "message"
        );
    }
}

/// A check's name and the verdict it reached.
type Finding = (&'static str, Verdict);

/// Runs one piece of engine work within the policy's time budget. `None` means "no
/// objection"; an error or a timeout is logged and becomes the scan failure action.
async fn guarded(
    policy: &Policy,
    stage: &'static str,
    work: impl Future<Output = Result<Option<Finding>, EngineError>>,
) -> Option<Finding> {
    let failure = match tokio::time::timeout(policy.scan_timeout, work).await {
        Ok(Ok(found)) => return found,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("time budget of {:?} exceeded", policy.scan_timeout),
    };
    warn!(stage, error = %failure, action = ?policy.scan_failure_action, "scan failure");
    match policy.scan_failure_action.verdict() {
        Verdict::Continue => None,
        verdict => Some(("scan_failure", verdict)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn session(config: &str, first_reply_stage: Stage) -> Session {
        let policy = Config::parse(config, "test.toml").unwrap().policy;
        Session::new(Arc::new(policy), first_reply_stage, SharedState::default())
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
            s.rcpt_refused_by_mta("5.1.1", "Recipient address rejected: User unknown");
            assert_eq!(s.failed_recipients, n);
        }
        let hidden = s.rcpt("valid@local.example").await;
        assert_eq!(
            hidden.reply().unwrap().to_string(),
            "550 5.1.1 <valid@local.example>: Recipient address rejected: User unknown"
        );
        // Off: valid recipients pass whatever failed before.
        let mut s = session(
            "[exploit_detection]\naddress_hiding_on_dictionary_attack = false\n",
            Stage::Helo,
        );
        s.connect(listed()).await;
        s.mail("a@b.example").await;
        for _ in 0..5 {
            s.rcpt_refused_by_mta("5.1.1", "User unknown");
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
