//! One SMTP conversation (RFC 5321) in the proxy door: reads commands, asks the engine
//! session at each stage, forwards accepted recipients to a relay target as they come (so the
//! target's answer for each recipient reaches the client) and hands the message on before
//! answering 250 to its end.
//!
//! This file holds the conversation's state and its command loop: reading and pipelining,
//! timeouts, counting junk and invalid commands, replies and resets. Each SMTP stage has its
//! own file over the same [`Conversation`]: `ehlo.rs`, `mail.rs`, `rcpt.rs`, `data.rs`,
//! `auth.rs` (the AUTH command; passwords are checked in `proxy/users.rs`) and `starttls.rs`.

mod auth;
mod data;
mod ehlo;
mod mail;
mod rcpt;
mod starttls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use super::command::Command;
use super::connection::{Connection, ReadError, Stream};
use super::{ClientTimeouts, ListenerKind, Shared};
use crate::engine::{ClientInfo, Session, SmtpReply, Stage, Verdict};
use crate::relay::{Envelope, Upstream};

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
    /// A relay target (by name) refused the sender: every recipient gets this answer.
    upstream_refusal: Option<(String, SmtpReply)>,
    /// The relay target broke after it had taken recipients the client heard 250 for: the
    /// rest of the transaction (RCPT, DATA) is answered 4xx, so that the client sends the
    /// whole message again, as Postfix's smtpd_proxy_filter does. Cleared by RSET or a new
    /// MAIL after the transaction ends.
    broken: bool,
    /// A NOOP to the upstream failed: no more are sent (the end of the message finds the
    /// connection gone and reopens it).
    noop_failed: bool,
}

/// The answer to every command of a transaction whose relay target broke after recipients
/// were accepted.
const BROKEN_TRANSACTION: &str = "4.4.1 Error: the relay target failed during this transaction; send the whole message again later";

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

/// Serves one client from accept to close, every log line of it (the relay's too) within a
/// `session` span that names the session.
pub(super) async fn converse(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
) {
    let session = shared.engine.session(Stage::None);
    let span = tracing::info_span!("session", id = session.id());
    tracing::Instrument::instrument(serve(shared, stream, peer, kind, session), span).await;
}

async fn serve(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: ListenerKind,
    session: crate::engine::session::Session,
) {
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
    Box::pin(c.abort_upstream()).await;
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

    fn reply(&mut self, reply: &SmtpReply) {
        self.conn.queue(format!("{reply}\r\n").as_bytes());
    }

    /// A reply of the proxy's own: `text` starts with its enhanced status code, if any.
    fn say(&mut self, code: u16, text: &str) {
        self.conn.queue(format!("{code} {text}\r\n").as_bytes());
    }

    async fn run(&mut self) {
        if self.kind == ListenerKind::ImplicitTls && !Box::pin(self.start_tls()).await {
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
        // No MTA in front tells the proxy the client's verified name: it looks it up itself
        // when a connection profile needs one.
        let addr = self.peer.ip();
        let name = self.session.verified_client_name(addr).await;
        let client = ClientInfo {
            addr: Some(addr),
            name,
        };
        match Box::pin(self.session.connect(client)).await {
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
                    if Box::pin(self.invalid("line too long")).await {
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

    /// Counts a junk command; true when the client is to be dropped. Beyond
    /// `junk_command_limit` since the last message, each one counts as an invalid command
    /// (Postfix's smtpd_junk_command_limit), so the invalid-command limit ends the session.
    async fn junk(&mut self, verb: &str) -> bool {
        self.junk_commands += 1;
        if self.junk_commands <= self.settings().junk_command_limit {
            return false;
        }
        info!(client = %self.peer, command = verb, count = self.junk_commands, "junk command limit exceeded");
        Box::pin(self.invalid(verb)).await
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

    /// Runs one command. The larger commands' futures are boxed: held only while they run,
    /// they would otherwise size every connection's task, idle ones included.
    async fn command(&mut self, command: Command) -> Next {
        match command {
            Command::Ehlo(name) => Box::pin(self.hello(name, true)).await,
            Command::Helo(name) => Box::pin(self.hello(name, false)).await,
            Command::Mail { sender, params } => Box::pin(self.mail(sender, params)).await,
            Command::Rcpt { recipient, .. } => Box::pin(self.rcpt(recipient)).await,
            Command::Data => Box::pin(self.data()).await,
            Command::Rset => {
                Box::pin(self.reset()).await;
                self.say(250, "2.0.0 Ok");
                Box::pin(self.after_junk("RSET")).await
            }
            Command::Noop => {
                self.say(250, "2.0.0 Ok");
                Box::pin(self.after_junk("NOOP")).await
            }
            Command::Quit => {
                self.say(221, "2.0.0 Bye");
                Next::Close
            }
            Command::Vrfy | Command::Expn => {
                self.say(502, "5.5.1 VRFY and EXPN are disabled");
                Box::pin(self.after_junk("VRFY")).await
            }
            Command::Help => {
                self.say(214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS AUTH; see RFC 5321");
                Box::pin(self.after_junk("HELP")).await
            }
            Command::StartTls => Box::pin(self.starttls()).await,
            Command::Auth { mechanism, initial } => Box::pin(self.auth(&mechanism, initial)).await,
            Command::Bdat => {
                self.say(
                    502,
                    "5.5.1 Error: BDAT is not offered (no CHUNKING); use DATA",
                );
                Next::Continue
            }
            Command::Invalid(text) => {
                self.say(501, text);
                if Box::pin(self.invalid("syntax error")).await {
                    return Next::Close;
                }
                Next::Continue
            }
            Command::Unknown(verb) => {
                self.say(502, "5.5.2 Error: command not recognized");
                if Box::pin(self.invalid(&verb)).await {
                    return Next::Close;
                }
                Next::Continue
            }
        }
    }

    async fn after_junk(&mut self, verb: &str) -> Next {
        if Box::pin(self.junk(verb)).await {
            Next::Close
        } else {
            Next::Continue
        }
    }

    /// Ends the transaction (RSET, EHLO, STARTTLS) in the engine and with the relay target.
    async fn reset(&mut self) {
        self.session.reset();
        Box::pin(self.abort_upstream()).await;
        self.tx = None;
    }

    async fn abort_upstream(&mut self) {
        if let Some(u) = self.tx.as_mut().and_then(|tx| tx.upstream.take()) {
            u.abort().await;
        }
    }
}

/// The first word of a line, for logs: printable and short.
fn verb(line: &[u8]) -> String {
    let word = line.split(|&b| b == b' ').next().unwrap_or(b"");
    String::from_utf8_lossy(&word[..word.len().min(32)])
        .escape_debug()
        .to_string()
}
