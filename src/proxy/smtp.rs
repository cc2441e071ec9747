//! One SMTP conversation (RFC 5321) in the proxy door: reads commands, asks the engine
//! session at each stage, forwards accepted recipients to a relay target as they come (so the
//! target's answer for each recipient reaches the client) and hands the message on before
//! answering 250 to its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::auth::{ClientFailures, Verification, decode_line, decode_plain};
use super::command::Command;
use super::connection::{Connection, ReadError, Stream};
use super::data::{BareNewline, DataReader};
use super::{ClientTimeouts, ListenerKind, Shared};
use tokio_rustls::TlsAcceptor;

use super::received::Hop;
use crate::engine::{BufferError, Edits, MessageBuffer};
use crate::engine::{ClientInfo, Session, SmtpReply, Stage, TlsInfo, Verdict};
use crate::relay::{
    Body, DataFailure, DeliveryError, Envelope, ForwardedClient, TargetError, Upstream,
};

/// A client's answer to an AUTH challenge.
enum Response<T> {
    Given(T),
    /// `*` (RFC 4954): the client gave up; answered 501, not counted as a failure.
    Cancelled,
    /// The connection ended or timed out.
    Gone,
}

impl<T> Response<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Response<U> {
        match self {
            Response::Given(t) => Response::Given(f(t)),
            Response::Cancelled => Response::Cancelled,
            Response::Gone => Response::Gone,
        }
    }
}

/// What happens to the connection after a command.
enum Next {
    Continue,
    Close,
}

/// The transaction in progress.
#[derive(Default)]
struct Transaction {
    envelope: Envelope,
    /// The relay targets this transaction uses: those in force when it began (a reload
    /// in between does not move it).
    delivery: Option<Arc<crate::relay::Delivery>>,
    /// RCPT commands seen (accepted or not), bounded by max_recipients.
    rcpt_count: usize,
    upstream: Option<Upstream>,
    /// A relay target refused the sender: every recipient gets this answer.
    upstream_refusal: Option<SmtpReply>,
    /// The relay target broke after it had taken recipients the client heard 250 for: the
    /// rest of the transaction (RCPT, DATA) is answered 4xx, so that the client sends the
    /// whole message again, as Postfix's smtpd_proxy_filter does. Cleared by RSET or a new
    /// MAIL after the transaction ends.
    broken: bool,
}

/// The answer to every command of a transaction whose relay target broke after recipients
/// were accepted.
const BROKEN_TRANSACTION: &str = "4.4.1 Error: the relay target failed during this transaction; send the whole message again later";

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

struct Conversation {
    shared: Arc<Shared>,
    /// The settings in force when the conversation began.
    settings: Arc<super::ProxySettings>,
    conn: Connection,
    session: Session,
    peer: SocketAddr,
    kind: ListenerKind,
    hostname: String,
    /// EHLO (not HELO) was given since the last reset: PIPELINING and extensions apply.
    /// (HELO, TLS and authentication themselves are the session's facts.)
    esmtp: bool,
    auth_failures: u32,
    /// NOOP, RSET, HELP, VRFY, EXPN and ETRN since the last message (`junk_command_limit`).
    junk_commands: u32,
    tx: Option<Transaction>,
}

/// Serves one client from accept to close.
pub(super) async fn converse(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
) {
    let session = shared.engine.session(Stage::None);
    let hostname = session.policy().hostname.clone();
    let settings = shared.settings.load_full();
    let mut c = Conversation {
        conn: Connection::new(Stream::Plain(stream), settings.timeouts.protocol),
        settings,
        session,
        peer,
        kind,
        hostname,
        esmtp: false,
        auth_failures: 0,
        junk_commands: 0,
        tx: None,
        shared,
    };
    c.run().await;
    c.abort_upstream().await;
    c.session.close();
    c.conn.close().await;
}

/// Answers a client beyond max_inbound_connections and closes.
pub(super) async fn too_many(shared: &Shared, stream: TcpStream, peer: SocketAddr) {
    let hostname = shared.engine.policy().hostname.clone();
    warn!(client = %peer, limit = shared.max_inbound_connections, "too many connections, client refused");
    let mut conn = Connection::new(
        Stream::Plain(stream),
        shared.settings.load().timeouts.protocol,
    );
    conn.queue(
        format!("421 4.7.0 {hostname} Error: too many connections, try again later\r\n").as_bytes(),
    );
    conn.close().await;
}

impl Conversation {
    fn settings(&self) -> &super::ProxySettings {
        &self.settings
    }

    /// AUTH failures of this client over all its connections.
    fn client_failures(&self) -> ClientFailures<'_> {
        ClientFailures {
            store: self.shared.engine.ports().store.as_ref(),
            max: self.settings.max_auth_failures_per_client,
            window: self.settings.auth_failure_window,
        }
    }

    fn reply(&mut self, reply: &SmtpReply) {
        self.conn.queue(format!("{reply}\r\n").as_bytes());
    }

    /// A reply of the proxy's own: `text` starts with its enhanced status code, if any.
    fn say(&mut self, code: u16, text: &str) {
        self.conn.queue(format!("{code} {text}\r\n").as_bytes());
    }

    async fn run(&mut self) {
        if self.kind == ListenerKind::ImplicitTls && !self.start_tls().await {
            return;
        }
        // Early talkers: a client that speaks before the greeting does not follow SMTP.
        if self.conn.peek_input(self.settings().greet_pause).await {
            info!(client = %self.peer, "client talked before the greeting, refused");
            self.say(
                554,
                "5.5.0 Error: SMTP protocol synchronization (talked before the greeting)",
            );
            return;
        }
        let client = ClientInfo {
            addr: Some(self.peer.ip()),
            name: None,
        };
        match self.session.connect(client).await {
            Verdict::Continue | Verdict::Discard => {}
            refused => {
                let r = refused.reply().expect("refusals carry a reply");
                // At the greeting only 554 and 421 are allowed (RFC 5321 §3.1).
                let code = if r.is_transient() { 421 } else { 554 };
                self.reply(&r.clone().with_code(code));
                return;
            }
        }
        let banner = format!("{} {}", self.hostname, self.settings().banner);
        self.say(220, &banner);
        loop {
            let line = match self.next_line().await {
                Ok(line) => line,
                Err(ReadError::TooLong(limit)) => {
                    self.say(
                        500,
                        &format!("5.5.2 Error: line too long (limit {limit} bytes)"),
                    );
                    if self.invalid("line too long").await {
                        return;
                    }
                    continue;
                }
                Err(ReadError::Timeout) => {
                    info!(client = %self.peer, "client timed out");
                    let text = format!("4.4.2 {} Error: timeout exceeded", self.hostname);
                    self.say(421, &text);
                    return;
                }
                Err(e) => {
                    info!(client = %self.peer, reason = %e, "connection ended");
                    return;
                }
            };
            let command = Command::parse(&line);
            if self.conn.has_pending_input() && !self.may_pipeline(&command) {
                info!(client = %self.peer, command = %verb(&line), "improper command pipelining");
                self.say(
                    554,
                    "5.5.0 Error: SMTP protocol synchronization (commands sent before the reply; PIPELINING is offered after EHLO, and never after EHLO, HELO, DATA or AUTH)",
                );
                return;
            }
            match self.command(command).await {
                Next::Continue => {}
                Next::Close => return,
            }
        }
    }

    /// The client timeouts now: as configured, or at most `stress_timeout` while the
    /// connection slots are nearly all taken (`stress_threshold`), as Postfix's stress mode
    /// does, so that slow clients cannot hold every slot.
    fn timeouts(&self) -> ClientTimeouts {
        let settings = self.settings();
        let mut t = settings.timeouts.clone();
        if self.shared.under_stress() {
            let cap = |d: &mut Duration| *d = (*d).min(settings.stress_timeout);
            cap(&mut t.connection);
            cap(&mut t.protocol);
            cap(&mut t.data_command);
            cap(&mut t.data_payload);
            cap(&mut t.tls_negotiation);
        }
        t
    }

    /// The next command line, within the command timeout. The wait goes in steps of
    /// `stress_timeout`, so that a client that began waiting before the proxy came under
    /// stress is held no longer than a new one.
    async fn next_line(&mut self) -> Result<Vec<u8>, ReadError> {
        let limit = self.settings().line_limit;
        let mut waited = Duration::ZERO;
        loop {
            let timeout = self.command_timeout();
            // Replies to this command wait as long for a client that does not read.
            self.conn.set_write_timeout(self.timeouts().protocol);
            let step = self.stress_step(timeout.saturating_sub(waited));
            match self.conn.read_line(limit, step).await {
                Err(ReadError::Timeout)
                    if waited + step < timeout && !self.shared.under_stress() =>
                {
                    waited += step;
                }
                read => return read,
            }
        }
    }

    /// How long one wait may last before the stress state is looked at again.
    fn stress_step(&self, left: Duration) -> Duration {
        if self.settings().stress_threshold == 0 {
            left
        } else {
            left.min(self.settings().stress_timeout)
        }
    }

    /// How long to wait for the next command, by where the conversation is.
    fn command_timeout(&self) -> Duration {
        let t = self.timeouts();
        match &self.tx {
            None => t.connection,
            Some(_) if self.session.recipients().is_empty() => t.protocol,
            Some(_) => t.data_command,
        }
    }

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
            match self.conn.wait_input(step).await {
                Err(ReadError::Timeout) if step < left && !self.shared.under_stress() => {
                    waited += step;
                }
                done => return done,
            }
        }
    }

    /// Counts a junk command; true when the client is to be dropped. Beyond
    /// `junk_command_limit` since the last message, each one counts as an invalid command
    /// (Postfix's smtpd_junk_command_limit), so the invalid-command limit ends the session.
    async fn junk(&mut self, verb: &str) -> bool {
        self.junk_commands += 1;
        if self.junk_commands <= self.settings().junk_command_limit {
            return false;
        }
        info!(client = %self.peer, command = verb, count = self.junk_commands, "junk command limit exceeded");
        self.invalid(verb).await
    }

    /// RFC 2920: a client may send commands without waiting for replies only after EHLO
    /// offered PIPELINING, and EHLO, HELO, DATA and AUTH end a group. What follows STARTTLS
    /// is thrown away by STARTTLS itself.
    fn may_pipeline(&self, command: &Command) -> bool {
        matches!(command, Command::StartTls)
            || (self.esmtp
                && !matches!(
                    command,
                    Command::Ehlo(_) | Command::Helo(_) | Command::Data | Command::Auth { .. }
                ))
    }

    /// Counts an invalid command; true when the client is to be dropped.
    async fn invalid(&mut self, what: &str) -> bool {
        match self.session.unknown_command(what).await {
            Verdict::Drop(r) => {
                self.reply(&r);
                true
            }
            _ => false,
        }
    }

    /// Translates an engine refusal; `Some(Next)` when the verdict refused.
    fn refused(&mut self, verdict: &Verdict) -> Option<Next> {
        let r = verdict.reply()?;
        self.reply(r);
        Some(match verdict {
            Verdict::Drop(_) => Next::Close,
            _ => Next::Continue,
        })
    }

    async fn command(&mut self, command: Command) -> Next {
        match command {
            Command::Ehlo(name) => self.hello(name, true).await,
            Command::Helo(name) => self.hello(name, false).await,
            Command::Mail { sender, params } => self.mail(sender, params).await,
            Command::Rcpt { recipient, .. } => self.rcpt(recipient).await,
            Command::Data => self.data().await,
            Command::Rset => {
                self.reset().await;
                self.say(250, "2.0.0 Ok");
                self.after_junk("RSET").await
            }
            Command::Noop => {
                self.say(250, "2.0.0 Ok");
                self.after_junk("NOOP").await
            }
            Command::Quit => {
                self.say(221, "2.0.0 Bye");
                Next::Close
            }
            Command::Vrfy | Command::Expn => {
                self.say(502, "5.5.1 VRFY and EXPN are disabled");
                self.after_junk("VRFY").await
            }
            Command::Help => {
                self.say(214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS AUTH; see RFC 5321");
                self.after_junk("HELP").await
            }
            Command::StartTls => self.starttls().await,
            Command::Auth { mechanism, initial } => self.auth(&mechanism, initial).await,
            Command::Bdat => {
                self.say(
                    502,
                    "5.5.1 Error: BDAT is not offered (no CHUNKING); use DATA",
                );
                Next::Continue
            }
            Command::Invalid(text) => {
                self.say(501, text);
                if self.invalid("syntax error").await {
                    return Next::Close;
                }
                Next::Continue
            }
            Command::Unknown(verb) => {
                self.say(502, "5.5.2 Error: command not recognized");
                if self.invalid(&verb).await {
                    return Next::Close;
                }
                Next::Continue
            }
        }
    }

    async fn after_junk(&mut self, verb: &str) -> Next {
        if self.junk(verb).await {
            Next::Close
        } else {
            Next::Continue
        }
    }

    async fn hello(&mut self, name: String, esmtp: bool) -> Next {
        self.reset().await;
        let verdict = self.session.helo(&name).await;
        if let Some(next) = self.refused(&verdict) {
            return next;
        }
        self.esmtp = esmtp;
        if !esmtp {
            let text = self.hostname.clone();
            self.say(250, &text);
            return Next::Continue;
        }
        let mut lines = vec![
            self.hostname.clone(),
            "PIPELINING".to_owned(),
            format!(
                "SIZE {}",
                self.session.policy().message_limits.max_message_size
            ),
            "8BITMIME".to_owned(),
            "SMTPUTF8".to_owned(),
            "ENHANCEDSTATUSCODES".to_owned(),
        ];
        if self.session.tls().is_none() && self.shared.acceptor.load().is_some() {
            lines.push("STARTTLS".to_owned());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".to_owned());
        }
        let last = lines.len() - 1;
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            out.push_str(&format!(
                "250{}{line}\r\n",
                if i == last { ' ' } else { '-' }
            ));
        }
        self.conn.queue(out.as_bytes());
        Next::Continue
    }

    fn auth_offered(&self) -> bool {
        self.settings().auth_users.is_some()
            && self.session.authenticated_user().is_none()
            && (self.session.tls().is_some() || self.settings().auth_over_plaintext)
    }

    async fn mail(&mut self, sender: String, params: Vec<String>) -> Next {
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
        let mut passed = Vec::new();
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
                        passed.push(p.clone());
                    }
                    Err(_) => {
                        self.say(501, "5.5.4 Syntax: SIZE=number");
                        return Next::Continue;
                    }
                },
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {
                    passed.push(p.clone())
                }
                "SMTPUTF8" if value.is_empty() => passed.push(p.clone()),
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
        self.tx = Some(Transaction {
            envelope: Envelope {
                sender,
                params: passed,
                client: self.forwarded_client(),
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
            })
    }

    /// This hop's `Received:` field, when it is to be added.
    fn received_field(&self, recipients: &[String]) -> String {
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

    async fn rcpt(&mut self, recipient: String) -> Next {
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
        // The engine judges the message (content rules, a divert) by the recipients that were
        // really accepted, as it does behind an MTA: one the target refuses is withdrawn.
        if !self.relay_rcpt(&recipient).await {
            self.session.withdraw_recipient(&recipient);
        }
        Next::Continue
    }

    /// Hands an accepted recipient to the relay target (opened at the first one) and answers
    /// the client with the target's reply; whether the target took it.
    async fn relay_rcpt(&mut self, recipient: &str) -> bool {
        let tx = self.tx.as_mut().expect("in a transaction");
        if tx.broken {
            self.say(451, BROKEN_TRANSACTION);
            return false;
        }
        if let Some(refusal) = &tx.upstream_refusal {
            let reply = refusal.clone();
            self.reply(&reply);
            return false;
        }
        if tx.upstream.is_none() {
            let delivery = tx
                .delivery
                .get_or_insert_with(|| self.shared.delivery.load_full())
                .clone();
            match delivery.open(&tx.envelope, 0).await {
                Ok(upstream) => tx.upstream = Some(upstream),
                Err(DeliveryError::Refused { target, reply }) => {
                    info!(client = %self.peer, relay_target = %target, %reply, "relay target refused the sender");
                    tx.upstream_refusal = Some(reply.clone());
                    self.reply(&reply);
                    return false;
                }
                Err(e) => {
                    warn!(client = %self.peer, error = %e, "recipient deferred");
                    self.say(
                        451,
                        "4.4.1 Error: no relay target is available, try again later",
                    );
                    return false;
                }
            }
        }
        let upstream = tx.upstream.as_mut().expect("opened above");
        match upstream.rcpt(recipient).await {
            Ok(_) => {
                self.say(250, "2.1.5 Ok");
                true
            }
            Err(crate::relay::TargetError::Refused(reply)) => {
                // Counted as the milter door counts the MTA's refusals, 4xx and 5xx alike.
                let (enhanced, text) = refusal_parts(&reply);
                self.session.rcpt_refused_by_mta(&enhanced, text).await;
                self.reply(&reply);
                false
            }
            Err(e) => {
                warn!(client = %self.peer, relay_target = %upstream.target_name(), error = %e, "relay target failed at RCPT");
                if let Some(u) = tx.upstream.take() {
                    u.abort().await;
                }
                // The session counts this recipient until the caller withdraws it.
                if self.session.recipients().len() <= 1 {
                    // Nobody heard 250 yet: the next RCPT opens a new transaction upstream.
                    self.say(451, "4.4.1 Error: relay target failed, try again later");
                } else {
                    // The client heard 250 for recipients this target took and lost: none of
                    // them may be answered 250 at the end, so the transaction is failed.
                    tx.broken = true;
                    self.say(451, BROKEN_TRANSACTION);
                }
                false
            }
        }
    }

    async fn data(&mut self) -> Next {
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
        let (outcome, message) = self.session.end_of_message_with_content().await;
        let verdict = refusal.unwrap_or(outcome.verdict);
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
        // The edits (and the content-scan slot held for them) are no longer needed.
        drop((outcome.edits, outcome.scan_slot));
        let Some(upstream) = upstream else {
            self.say(
                451,
                "4.4.1 Error: no relay target is available, try again later",
            );
            return Next::Continue;
        };
        self.hand_on(upstream, &outgoing.body(), &outcome.recipients)
            .await;
        Next::Continue
    }

    /// The message cannot be read back (a spool error): the scan failure action's answer, as
    /// the milter door gives; 451 where that action would let it through, since there is
    /// nothing left to relay.
    fn unreadable(&mut self, why: &str) {
        warn!(client = %self.peer, error = why, "cannot read the message back");
        match self.session.policy().scan_failure_action.verdict().reply() {
            Some(reply) => {
                let reply = reply.clone();
                self.reply(&reply);
            }
            None => self.say(
                451,
                "4.3.0 Error: message could not be held, try again later",
            ),
        }
    }

    /// Sends the message through the transaction's upstream and answers the client: 250 only
    /// when a target took it for every recipient that heard 250, never to one that may
    /// already have it.
    async fn hand_on(&mut self, upstream: Upstream, body: &Body<'_>, recipients: &[String]) {
        let tx = self.tx.as_ref().expect("in a transaction");
        let delivery = tx
            .delivery
            .clone()
            .unwrap_or_else(|| self.shared.delivery.load_full());
        let head = self.received_field(recipients);
        let first = upstream.target_index();
        let name = upstream.target_name().to_owned();
        // Why the first target could not carry the message, for the client when no other
        // target can either.
        let mut incapable = None;
        let reply = match upstream
            .data(head.as_bytes(), body, delivery.data_timeout)
            .await
        {
            Ok(reply) => Ok(reply),
            Err(DataFailure::Refused(reply)) if reply.code() >= 500 => Ok(reply),
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
                delivery
                    .send(&tx.envelope, recipients, head.as_bytes(), body, from)
                    .await
                    .map(|(_, reply)| reply)
            }
        };
        match reply {
            Ok(reply) | Err(DeliveryError::Refused { reply, .. }) => {
                info!(client = %self.peer, recipients = recipients.len(), size = body.len(), %reply, "message handed on");
                self.reply(&reply);
            }
            Err(e @ DeliveryError::Uncertain { .. }) => {
                warn!(client = %self.peer, error = %e, "message may have been delivered; client keeps it and is not sent elsewhere");
                self.say(
                    451,
                    "4.4.1 Error: the relay target did not confirm the message, try again later",
                );
            }
            Err(e) => {
                warn!(client = %self.peer, error = %e, "message not delivered; client keeps it");
                match incapable {
                    Some(reply) => self.reply(&reply),
                    None => self.say(
                        451,
                        "4.4.1 Error: no relay target accepted the message, try again later",
                    ),
                }
            }
        }
    }

    async fn starttls(&mut self) -> Next {
        let acceptor = self.shared.acceptor.load_full();
        let Some(acceptor) = acceptor.filter(|_| self.session.tls().is_none()) else {
            self.say(502, "5.5.1 Error: STARTTLS is not offered here");
            return Next::Continue;
        };
        // Nothing the client sent in plaintext after STARTTLS counts: a man in the middle
        // could have added it.
        let dropped = self.conn.discard_pending_input();
        if dropped > 0 {
            warn!(client = %self.peer, bytes = dropped, "plaintext sent after STARTTLS discarded");
        }
        self.say(220, "2.0.0 Ready to start TLS");
        if let Err(e) = self.conn.flush().await {
            info!(client = %self.peer, error = %e, "connection ended before TLS");
            return Next::Close;
        }
        self.reset().await;
        let Some(info) = self.handshake(&acceptor).await else {
            return Next::Close;
        };
        self.session.restart_after_tls(info);
        self.esmtp = false;
        Next::Continue
    }

    /// The TLS handshake within tls_negotiation_timeout, logged either way.
    async fn handshake(&mut self, acceptor: &TlsAcceptor) -> Option<TlsInfo> {
        let timeout = self.timeouts().tls_negotiation;
        match self.conn.start_tls(acceptor, timeout).await {
            Ok(info) => {
                info!(client = %self.peer, version = %info.version, cipher = %info.cipher, client_certificate = info.cert_subject.is_some(), "TLS established");
                Some(info)
            }
            Err(e) => {
                info!(client = %self.peer, error = %e, "TLS failed");
                None
            }
        }
    }

    /// TLS from the first byte (implicit TLS listener). False when the handshake failed.
    async fn start_tls(&mut self) -> bool {
        let Some(acceptor) = self.shared.acceptor.load_full() else {
            warn!(client = %self.peer, "implicit TLS listener without a certificate");
            return false;
        };
        match self.handshake(&acceptor).await {
            Some(info) => {
                self.session.tls_established(info);
                true
            }
            None => false,
        }
    }

    async fn auth(&mut self, mechanism: &str, initial: Option<String>) -> Next {
        let Some(users) = self.settings().auth_users.clone() else {
            self.say(502, "5.5.1 Error: authentication is not offered here");
            return Next::Continue;
        };
        if self.session.helo_name().is_none() {
            self.say(503, "5.5.1 Error: send EHLO first");
            return Next::Continue;
        }
        if self.session.authenticated_user().is_some() {
            self.say(503, "5.5.1 Error: already authenticated");
            return Next::Continue;
        }
        if self.tx.is_some() {
            self.say(503, "5.5.1 Error: AUTH not allowed in a mail transaction");
            return Next::Continue;
        }
        if self.session.tls().is_none() && !self.settings().auth_over_plaintext {
            self.say(538, "5.7.11 Encryption required for requested authentication mechanism (use STARTTLS first)");
            return Next::Continue;
        }
        if !matches!(mechanism, "PLAIN" | "LOGIN") {
            self.say(
                504,
                "5.5.4 Error: unsupported authentication mechanism (use PLAIN or LOGIN)",
            );
            return Next::Continue;
        }
        // RFC 4954: "=" is an empty initial response, not a request for a challenge.
        let initial = initial.map(|r| if r == "=" { String::new() } else { r });
        let credentials = match mechanism {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => Response::Given(r),
                    None => self.challenge("").await,
                };
                response.map(|r| decode_plain(&r))
            }
            _ => {
                let user = match initial {
                    Some(r) => Response::Given(r),
                    None => self.challenge("VXNlcm5hbWU6").await,
                };
                match user.map(|u| decode_line(&u)) {
                    Response::Given(Some(user)) => self
                        .challenge("UGFzc3dvcmQ6")
                        .await
                        .map(|p| decode_line(&p).map(|p| (user, p))),
                    Response::Given(None) => Response::Given(None),
                    Response::Cancelled => Response::Cancelled,
                    Response::Gone => Response::Gone,
                }
            }
        };
        let credentials = match credentials {
            Response::Given(c) => c,
            Response::Cancelled => {
                self.say(501, "5.7.0 Authentication cancelled");
                return Next::Continue;
            }
            Response::Gone => return Next::Close,
        };
        // The attempt is counted before the check, so that parallel connections of one
        // client get no extra guesses; a success gives it back.
        if !self.client_failures().reserve(self.peer.ip()).await {
            info!(client = %self.peer, "AUTH refused: too many failures from this client");
            self.say(
                454,
                "4.7.0 Error: too many authentication failures from your address, try again later",
            );
            return Next::Continue;
        }
        let wait = self.timeouts().protocol;
        let verdict = match &credentials {
            Some((user, password)) => users.verify(user, password, wait).await,
            None => Verification::Invalid,
        };
        match verdict {
            Verification::Valid => {
                self.client_failures().succeeded(self.peer.ip()).await;
                let user = credentials.map(|c| c.0).unwrap_or_default();
                info!(client = %self.peer, user = %user.escape_debug(), "authenticated");
                self.session.authenticated(&user);
                self.say(235, "2.7.0 Authentication successful");
                return Next::Continue;
            }
            Verification::Busy => {
                self.client_failures().succeeded(self.peer.ip()).await;
                warn!(client = %self.peer, "AUTH deferred: every password check slot is busy (max_concurrent_password_checks)");
                self.say(
                    454,
                    "4.7.0 Error: temporary authentication failure, try again later",
                );
                return Next::Continue;
            }
            Verification::Invalid => {}
        }
        self.auth_failures += 1;
        info!(client = %self.peer, failures = self.auth_failures, "authentication failed");
        if self.auth_failures >= self.settings().max_auth_failures {
            let text = format!(
                "4.7.0 {} Error: too many authentication failures",
                self.hostname
            );
            self.say(421, &text);
            return Next::Close;
        }
        // A pause makes guessing slow without holding other clients up.
        tokio::time::sleep(self.settings().auth_failure_delay * self.auth_failures).await;
        self.say(535, "5.7.8 Error: authentication failed");
        Next::Continue
    }

    /// Sends a 334 challenge and reads the response.
    async fn challenge(&mut self, prompt: &str) -> Response<String> {
        self.conn.queue(format!("334 {prompt}\r\n").as_bytes());
        let timeout = self.timeouts().protocol;
        let limit = self.settings().line_limit;
        match self.conn.read_line(limit, timeout).await {
            Ok(line) if line.trim_ascii() == b"*" => Response::Cancelled,
            // Not UTF-8 (or too long): a response that decodes to nothing.
            Ok(line) => Response::Given(String::from_utf8(line).unwrap_or_default()),
            Err(ReadError::TooLong(_)) => Response::Given(String::new()),
            Err(_) => Response::Gone,
        }
    }

    /// Ends the transaction (RSET, EHLO, STARTTLS) in the engine and with the relay target.
    async fn reset(&mut self) {
        self.session.reset();
        self.abort_upstream().await;
        self.tx = None;
    }

    async fn abort_upstream(&mut self) {
        if let Some(u) = self.tx.as_mut().and_then(|tx| tx.upstream.take()) {
            u.abort().await;
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

/// The first word of a line, for logs: printable and short.
fn verb(line: &[u8]) -> String {
    let word = line.split(|&b| b == b' ').next().unwrap_or(b"");
    String::from_utf8_lossy(&word[..word.len().min(32)])
        .escape_debug()
        .to_string()
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
