//! Delivery to relay targets (lettre): the proxy door hands every accepted message on here, in
//! priority order, before it says 250 to its client, so that a 250 always means
//! a target has the message. A target that cannot be
//! reached, refuses with 4xx or breaks mid-way is skipped for the next; when every target
//! fails the caller gets an error and answers 4xx, so the client keeps the message. The engine
//! delivers here too, for `divert` rules, through the targets a rule names.

mod body;
mod outbound;
mod pool;
mod stream;
mod target;
pub mod tls;

use std::borrow::Cow;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::FutureExt;

use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use tracing::{debug, error, info, warn};

use crate::engine::SmtpReply;
use crate::engine::address::control_character;
use crate::engine::checks::outbound_tls::TlsRequirement;
pub use pool::ConnectionCache;
use pool::{Pool, quit_later};

pub use body::Body;
pub use outbound::{RelayOutbound, SharedDelivery};
pub use target::{Capabilities, RelayAuth, RelayTarget, Security, TargetError};

use target::Link;

/// A reply read from a relay target: each line of a multi-line reply joined by spaces,
/// cleaned for passing on to the client (`550 5.1.1 <x@example.org>: Recipient address
/// rejected`).
fn reply_of(r: &Response) -> SmtpReply {
    let code: u16 = r.code().to_string().parse().unwrap_or(451);
    SmtpReply::from_wire(code, &r.message().collect::<Vec<_>>().join(" "))
}

/// The target's reply inside a lettre error, if the error is one.
fn reply_in(e: &lettre::transport::smtp::Error) -> Option<SmtpReply> {
    let code: u16 = e.status()?.to_string().parse().ok()?;
    let text = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    Some(SmtpReply::from_wire(code, &text))
}

/// A reply of Postern's own about a target, for the client.
fn own_reply(code: u16, enhanced: &str, text: &str) -> SmtpReply {
    SmtpReply::new(code, Some(enhanced), text).expect("static reply is valid")
}

/// Refuses to write an address holding a control character into a command (CR LF would end
/// the command and start another at the target). The engine refuses such addresses in both
/// doors first; this holds whatever reaches the relay code.
fn unwritable(address: &str, what: &str) -> Result<(), TargetError> {
    let enhanced = if what == "sender" { "5.1.7" } else { "5.1.3" };
    match control_character(address) {
        None => Ok(()),
        Some(c) => Err(TargetError::Refused(SmtpReply::new(501, Some(enhanced), &format!(
            "Error: the {what} address holds the control character {c:?}; Postern does not write it to a relay target"
        )).expect("printable reply"))),
    }
}

/// Why a transaction that must be encrypted cannot go through a target: it did not negotiate
/// TLS (security `none`, or `auto` without STARTTLS offered).
fn tls_required() -> SmtpReply {
    own_reply(
        451,
        "4.7.5",
        "Error: a recipient requires encryption and no relay target negotiated TLS with a valid certificate, try again later",
    )
}

/// Why a transaction cannot go through a target whose TLS does not meet a recipient's
/// requirement (`why`, also logged).
fn tls_refusal(why: &str) -> SmtpReply {
    SmtpReply::new(
        451,
        Some("4.7.5"),
        &format!("Error: {why}, try again later"),
    )
    .unwrap_or_else(|_| tls_required())
}

/// Whether `reply` is one of Postern's own refusals for lack of the TLS a recipient needs.
pub fn is_tls_refusal(reply: &SmtpReply) -> bool {
    reply.code() == 451 && reply.enhanced() == Some("4.7.5")
}

/// Outbound settings (`[delivery]`) and the relay targets (`[[relay_target]]`), by priority.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Highest priority (1) first; equal priorities in configuration order.
    pub targets: Vec<RelayTarget>,
    /// Name Postern gives in EHLO.
    pub helo_name: String,
    /// "Server connection timeout": TCP connect, TLS and greeting.
    pub connection_timeout: Duration,
    /// "Server protocol timeout": each command's reply.
    pub protocol_timeout: Duration,
    /// "Server DATA timeout": the reply to the end of the message (plus one second per
    /// megabyte sent, so that a large message on a slow link is not cut off).
    pub data_timeout: Duration,
    /// Tell targets that offer XFORWARD who the client was (`xforward`, on by default).
    pub xforward: bool,
    /// Idle connections kept for the next message (`connection_cache_time`).
    pool: Arc<Pool>,
    /// Told of every attempt's outcome (metrics), when set.
    pub observer: Option<Arc<dyn RelayObserver>>,
}

/// What became of one attempt with one relay target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The target took the message.
    Delivered,
    /// It refused the sender or the message permanently (5xx).
    Refused,
    /// It refused for now (4xx), or cannot carry this transaction.
    Deferred,
    /// It could not be reached or broke before it had the message.
    Unavailable,
    /// It was sent the message and gave no answer.
    Uncertain,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Self; 5] = [
        Self::Delivered,
        Self::Refused,
        Self::Deferred,
        Self::Unavailable,
        Self::Uncertain,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Refused => "refused",
            Self::Deferred => "deferred",
            Self::Unavailable => "unavailable",
            Self::Uncertain => "uncertain",
        }
    }

    fn of_error(e: &TargetError) -> Self {
        match e {
            TargetError::Refused(reply) if !reply.is_transient() => Self::Refused,
            TargetError::Refused(_) | TargetError::Incapable(_) => Self::Deferred,
            _ => Self::Unavailable,
        }
    }
}

/// Told of the outcome of each attempt with a relay target.
pub trait RelayObserver: Send + Sync + fmt::Debug {
    fn attempt(&self, target: &str, outcome: Outcome);
}

fn observe(observer: &Option<Arc<dyn RelayObserver>>, target: &str, outcome: Outcome) {
    if let Some(o) = observer {
        o.attempt(target, outcome);
    }
}

/// Why a transaction could not be opened or a message not delivered.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A target answered the sender with a permanent refusal; the client should see it.
    #[error("relay target {target} refused: {reply}")]
    Refused { target: String, reply: SmtpReply },
    /// No target could take the transaction; each one's reason, in order.
    #[error("no relay target is available: {}", .0.join("; "))]
    Unavailable(Vec<String>),
    /// A target was sent the whole message and then gave no answer: it may have taken it, so
    /// no other target may be tried (that could deliver it twice).
    #[error("relay target {target} gave no answer to the end of the message: {why}")]
    Uncertain { target: String, why: String },
}

/// How handing a message to one target failed; which kind decides whether another target may
/// be tried with it.
#[derive(Debug, thiserror::Error)]
pub enum DataFailure {
    /// Nothing of the message was sent: the connection broke or the target refused up to and
    /// including the DATA command. Another target (or a fresh connection) may take it.
    #[error("before the message was sent: {0}")]
    NotSent(TargetError),
    /// The target answered the end of the message with 4xx or 5xx: it did not take it.
    #[error("refused the message: {0}")]
    Refused(SmtpReply),
    /// The message (or part of it) was sent and no answer came: the target may have
    /// committed it. Sending it anywhere else could deliver it twice.
    #[error("no answer after the message was sent: {0}")]
    Uncertain(TargetError),
    /// The message could not be read back from the spool; the target was not sent its end
    /// and has nothing. No other target can be sent it either.
    #[error("{0}")]
    Unreadable(String),
}

/// The MAIL FROM parameters Postern passes on, read once from the client's command (or from
/// the message Postern sends itself) and written for each target as its EHLO allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailParameters {
    /// `SIZE=n`, passed where the target offers SIZE.
    pub size: Option<u64>,
    /// `BODY=7BIT` or `BODY=8BITMIME`, passed where the target offers 8BITMIME.
    pub body: Option<BodyType>,
    /// `SMTPUTF8`, passed where the target offers it.
    pub smtputf8: bool,
}

/// The `BODY=` of MAIL FROM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyType {
    SevenBit,
    EightBitMime,
}

impl MailParameters {
    /// The parameters a target with `caps` is given, each with its leading space.
    fn for_target(&self, caps: &Capabilities) -> String {
        let mut out = String::new();
        if let Some(size) = self.size.filter(|_| caps.size) {
            out.push_str(&format!(" SIZE={size}"));
        }
        match self.body.filter(|_| caps.eight_bit_mime) {
            Some(BodyType::SevenBit) => out.push_str(" BODY=7BIT"),
            Some(BodyType::EightBitMime) => out.push_str(" BODY=8BITMIME"),
            None => {}
        }
        if self.smtputf8 && caps.smtputf8 {
            out.push_str(" SMTPUTF8");
        }
        out
    }
}

/// The sender and MAIL parameters of one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Envelope {
    pub sender: String,
    pub params: MailParameters,
    /// The client the message came from, passed with XFORWARD to targets that offer it, so
    /// that their own checks and logs see the client rather than Postern.
    pub client: Option<ForwardedClient>,
    /// What the connection that carries this transaction must have negotiated: TLS with a
    /// validated certificate, and each requirement's version, cipher strength and names
    /// (encryption rules and outbound TLS policies of its recipients). Empty: as configured.
    pub tls: Vec<TlsRequirement>,
}

/// What XFORWARD tells a target about the client (Postfix's XFORWARD_README).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForwardedClient {
    /// Verified host name, if any.
    pub name: Option<String>,
    pub addr: std::net::IpAddr,
    pub port: u16,
    /// `SMTP` or `ESMTP`.
    pub proto: &'static str,
    pub helo: Option<String>,
    /// Postern's id for the session (the `id` of its Received field, its logs and tracking),
    /// so that the target's log names it (Postfix: `orig_queue_id`).
    pub ident: Option<String>,
}

impl ForwardedClient {
    /// XFORWARD commands carrying the attributes the target offers, each line at most 512
    /// octets (RFC 5321's command limit); values xtext-encoded.
    fn commands(&self, offered: &[String]) -> Vec<String> {
        const UNAVAILABLE: &str = "[UNAVAILABLE]";
        let addr = match self.addr {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
        };
        let attributes = [
            (
                "NAME",
                self.name.clone().unwrap_or_else(|| UNAVAILABLE.into()),
            ),
            ("ADDR", addr),
            ("PORT", self.port.to_string()),
            ("PROTO", self.proto.to_owned()),
            (
                "HELO",
                self.helo.clone().unwrap_or_else(|| UNAVAILABLE.into()),
            ),
            ("SOURCE", "REMOTE".to_owned()),
            (
                "IDENT",
                self.ident.clone().unwrap_or_else(|| UNAVAILABLE.into()),
            ),
        ];
        let mut commands = Vec::new();
        let mut line = String::new();
        for (key, value) in attributes {
            if !offered.iter().any(|o| o == key) {
                continue;
            }
            let mut value = xtext(&value);
            value.truncate(255);
            let attribute = format!(" {key}={value}");
            if !line.is_empty() && line.len() + attribute.len() + 2 > 512 {
                commands.push(format!("{line}\r\n"));
                line.clear();
            }
            if line.is_empty() {
                line.push_str("XFORWARD");
            }
            line.push_str(&attribute);
        }
        if !line.is_empty() {
            commands.push(format!("{line}\r\n"));
        }
        commands
    }
}

/// RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII as `+HH`.
fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

impl Envelope {
    /// The envelope for a whole message sent on by Postern itself: `BODY=8BITMIME` when the
    /// message has 8-bit bytes, `SMTPUTF8` when an address is not ASCII, and its `SIZE`.
    pub fn for_message(sender: &str, recipients: &[String], message: &[u8]) -> Self {
        let params = MailParameters {
            size: Some(message.len() as u64),
            body: (!message.is_ascii()).then_some(BodyType::EightBitMime),
            smtputf8: !sender.is_ascii() || recipients.iter().any(|r| !r.is_ascii()),
        };
        Self {
            sender: sender.to_owned(),
            params,
            client: None,
            tls: Vec::new(),
        }
    }
}

/// A relay target's answer to RCPT TO: its reply (a refusal is a [`TargetError::Refused`]).
pub type RcptAnswer = Result<SmtpReply, TargetError>;

/// An open transaction with one relay target: MAIL has been accepted.
pub struct Upstream {
    link: Link,
    /// Index of the target in [`Delivery::targets`].
    target: usize,
    name: String,
    protocol_timeout: Duration,
    pool: Arc<Pool>,
    /// Whether the connection came from the cache (for the log).
    reused: bool,
    /// Whether it may go back to the cache: not for implicit TLS, whose socket lettre opens
    /// without TCP_NODELAY (see [`RelayTarget::connect`]).
    cacheable: bool,
    line_limit: usize,
    observer: Option<Arc<dyn RelayObserver>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("target", &self.name)
            .finish()
    }
}

impl Delivery {
    /// Relay targets (sorted here by priority, equal priorities in the given order) and the
    /// outbound settings; connections stay open as `cache` says after a message for the next
    /// one.
    pub fn new(
        mut targets: Vec<RelayTarget>,
        helo_name: String,
        connection_timeout: Duration,
        protocol_timeout: Duration,
        data_timeout: Duration,
        cache: ConnectionCache,
    ) -> Self {
        targets.sort_by_key(|t| t.priority);
        Self {
            targets,
            helo_name,
            connection_timeout,
            protocol_timeout,
            data_timeout,
            xforward: true,
            pool: Pool::new(cache, protocol_timeout),
            observer: None,
        }
    }

    /// Opens a transaction with the first target, from `first` on, that accepts the sender.
    pub async fn open(&self, envelope: &Envelope, first: usize) -> Result<Upstream, DeliveryError> {
        self.open_for(envelope, first, None)
            .await
            .map(|(upstream, _)| upstream)
    }

    /// [`Delivery::open`], and RCPT TO for `recipient` in the same write as MAIL where the
    /// target offers PIPELINING: then also the target's answer to it, which is the recipient's
    /// (a target that accepts the sender keeps the transaction whatever it answers the
    /// recipient; after a refused sender the answer to RCPT is read and dropped, and the next
    /// target is tried as before). `None` in its place: the recipient was not sent,
    /// [`Upstream::rcpt`] sends it.
    pub async fn open_for(
        &self,
        envelope: &Envelope,
        first: usize,
        recipient: Option<&str>,
    ) -> Result<(Upstream, Option<RcptAnswer>), DeliveryError> {
        let mut failures = Vec::new();
        let mut incapable = None;
        let targets = self.targets.iter().enumerate().skip(first);
        for (index, target) in targets.filter(|(_, t)| !t.divert_only) {
            if !envelope.tls.is_empty() && target.security == Security::None {
                incapable.get_or_insert((target.name.clone(), tls_required()));
                continue;
            }
            let opened = self.open_one(index, target, envelope, recipient).await;
            if let Err(e) = &opened {
                observe(&self.observer, &target.name, Outcome::of_error(e));
            }
            match opened {
                Ok((link, reused, answer)) => {
                    let upstream = Upstream {
                        link,
                        target: index,
                        name: target.name.clone(),
                        protocol_timeout: self.protocol_timeout,
                        pool: self.pool.clone(),
                        reused,
                        cacheable: target.security != Security::Ssl,
                        line_limit: target.line_limit,
                        observer: self.observer.clone(),
                    };
                    return Ok((upstream, answer));
                }
                Err(TargetError::Refused(reply)) if reply.code() >= 500 => {
                    return Err(DeliveryError::Refused {
                        target: target.name.clone(),
                        reply,
                    });
                }
                Err(TargetError::Incapable(reply)) => {
                    warn!(relay_target = %target.name, reason = %reply, "relay target cannot take this transaction, trying the next");
                    incapable.get_or_insert((target.name.clone(), reply));
                }
                Err(e) => {
                    warn!(relay_target = %target.name, error = %e, "relay target unavailable, trying the next");
                    failures.push(format!("{}: {e}", target.name));
                }
            }
        }
        // Every target lacks what the transaction needs: the client hears why.
        if failures.is_empty()
            && let Some((target, reply)) = incapable
        {
            return Err(DeliveryError::Refused { target, reply });
        }
        if failures.is_empty() {
            failures.push("no [[relay_target]] relays ordinary mail".to_owned());
        }
        Err(DeliveryError::Unavailable(failures))
    }

    /// The same outbound settings with only the named targets, in priority order, each usable
    /// whether or not it is `divert_only`: where a `divert` rule sends messages.
    pub fn through(&self, names: &[String]) -> Result<Delivery, String> {
        let mut targets = Vec::new();
        for name in names {
            let Some(target) = self.targets.iter().find(|t| t.name == *name) else {
                return Err(format!("no [[relay_target]] is named {name:?}"));
            };
            targets.push(RelayTarget {
                divert_only: false,
                ..target.clone()
            });
        }
        if targets.is_empty() {
            return Err("name at least one relay target".into());
        }
        Ok(Delivery {
            xforward: self.xforward,
            observer: self.observer.clone(),
            ..Delivery::new(
                targets,
                self.helo_name.clone(),
                self.connection_timeout,
                self.protocol_timeout,
                self.data_timeout,
                self.pool.settings(),
            )
        })
    }

    /// Whether any target relays ordinary mail (is not `divert_only`).
    pub fn relays(&self) -> bool {
        self.targets.iter().any(|t| !t.divert_only)
    }

    /// A connection to the target with MAIL accepted: a cached one if it still works (then
    /// `true`), else a fresh one; and the answer to `recipient` if it went with MAIL.
    async fn open_one(
        &self,
        index: usize,
        target: &RelayTarget,
        envelope: &Envelope,
        recipient: Option<&str>,
    ) -> Result<(Link, bool, Option<RcptAnswer>), TargetError> {
        if let Some(mut link) = self.pool.take(index) {
            match self.mail(&mut link, envelope, recipient).await {
                Ok(answer) => return Ok((link, true, answer)),
                Err(e @ TargetError::Incapable(_)) => {
                    self.pool.put(index, link, target.security != Security::Ssl);
                    return Err(e);
                }
                Err(e) => {
                    debug!(relay_target = %target.name, error = %e, "cached connection no longer usable, opening a new one");
                    quit_later(link.conn, self.protocol_timeout);
                }
            }
        }
        let helo = ClientId::Domain(self.helo_name.clone());
        let mut link = tokio::time::timeout(
            self.connection_timeout,
            target.connect(&helo, self.protocol_timeout),
        )
        .await
        .map_err(|_| TargetError::Timeout("connecting"))??;
        match self.mail(&mut link, envelope, recipient).await {
            Ok(answer) => Ok((link, false, answer)),
            Err(e) => {
                link.conn.abort().await;
                Err(e)
            }
        }
    }

    /// XFORWARD (when the target offers it) and MAIL FROM, with the parameters the target
    /// supports: SIZE only where offered; SMTPUTF8 only where offered, and a non-ASCII sender
    /// is refused where it is not (5.6.7, as Postfix does); BODY only with 8BITMIME (the
    /// message itself is checked at DATA). RCPT TO for `recipient` goes in the same write
    /// where the target offers PIPELINING (and the address needs no SMTPUTF8 it lacks); its
    /// answer is then given back.
    async fn mail(
        &self,
        link: &mut Link,
        envelope: &Envelope,
        recipient: Option<&str>,
    ) -> Result<Option<RcptAnswer>, TargetError> {
        for requirement in &envelope.tls {
            match &link.tls {
                None => return Err(TargetError::Incapable(tls_required())),
                Some(facts) => {
                    if let Some(why) = facts.unmet(requirement) {
                        return Err(TargetError::Incapable(tls_refusal(&why)));
                    }
                }
            }
        }
        unwritable(&envelope.sender, "sender")?;
        if let Some(recipient) = recipient {
            unwritable(recipient, "recipient")?;
        }
        let caps = &link.caps;
        if !envelope.sender.is_ascii() && !caps.smtputf8 {
            return Err(TargetError::Incapable(own_reply(
                553,
                "5.6.7",
                "Error: the sender address is not ASCII and the relay target does not offer SMTPUTF8",
            )));
        }
        let command = format!(
            "MAIL FROM:<{}>{}\r\n",
            envelope.sender,
            envelope.params.for_target(caps)
        );
        let xforward = match &envelope.client {
            Some(client) if !caps.xforward.is_empty() => client.commands(&caps.xforward),
            _ => Vec::new(),
        };
        let rcpt = recipient
            .filter(|r| caps.pipelining && (r.is_ascii() || caps.smtputf8))
            .map(|r| format!("RCPT TO:<{r}>\r\n"));
        if caps.pipelining && (!xforward.is_empty() || rcpt.is_some()) {
            // RFC 2920: the XFORWARD commands, MAIL and the first RCPT in one write (as
            // Postfix's own client sends them), then their replies in order; the first refusal
            // before RCPT is the answer, and the connection is not kept after one.
            let batch = xforward.concat() + &command + rcpt.as_deref().unwrap_or("");
            let mut answer = command_reply(&mut link.conn, &batch, self.protocol_timeout)
                .await
                .map(|_| ());
            for n in 1..=xforward.len() {
                if matches!(answer, Err(ref e) if !matches!(e, TargetError::Refused(_))) {
                    break;
                }
                let verb = if n < xforward.len() {
                    "XFORWARD"
                } else {
                    "MAIL"
                };
                let next = next_reply(&mut link.conn, verb, self.protocol_timeout).await;
                if answer.is_ok() {
                    answer = next.map(|_| ());
                }
            }
            let rcpt_answer = match (&rcpt, &answer) {
                (None, _) => None,
                // The connection broke: no answer will come.
                (Some(_), Err(e)) if !matches!(e, TargetError::Refused(_)) => None,
                (Some(_), _) => {
                    let read = next_reply(&mut link.conn, "RCPT", self.protocol_timeout).await;
                    answer.is_ok().then_some(read)
                }
            };
            return answer.map(|()| rcpt_answer);
        }
        for xforward in xforward {
            command_reply(&mut link.conn, &xforward, self.protocol_timeout).await?;
        }
        command_reply(&mut link.conn, &command, self.protocol_timeout)
            .await
            .map(|_| None)
    }

    /// Delivers a whole message through the targets from `first` on: each must accept the
    /// sender, every recipient and the message, or it is skipped. A permanent refusal of the
    /// message ends the attempt with that answer; a target that was sent the message and did
    /// not answer ends it too, never tried elsewhere (it could arrive twice). Used when the target that
    /// took the recipients breaks before DATA, and for diverted messages.
    pub async fn send(
        &self,
        envelope: &Envelope,
        recipients: &[String],
        head: &[u8],
        message: &Body<'_>,
        first: usize,
    ) -> Result<(String, SmtpReply), DeliveryError> {
        let mut failures = Vec::new();
        let mut next = first;
        while next < self.targets.len() {
            let mut upstream = match self.open(envelope, next).await {
                Ok(u) => u,
                Err(DeliveryError::Unavailable(f)) => {
                    failures.extend(f);
                    break;
                }
                Err(refused) => return Err(refused),
            };
            next = upstream.target + 1;
            let mut refused = None;
            for rcpt in recipients {
                if let Err(e) = upstream.rcpt(rcpt).await {
                    refused = Some(format!("{}: recipient <{rcpt}>: {e}", upstream.name));
                    break;
                }
            }
            if let Some(why) = refused {
                warn!(relay_target = %upstream.name, reason = %why, "relay target skipped");
                failures.push(why);
                upstream.abort().await;
                continue;
            }
            let name = upstream.name.clone();
            match upstream.data(head, message, self.data_timeout).await {
                Ok(reply) => return Ok((name, reply)),
                Err(DataFailure::Refused(reply)) if reply.code() >= 500 => {
                    return Err(DeliveryError::Refused {
                        target: name,
                        reply,
                    });
                }
                Err(DataFailure::Uncertain(e)) => {
                    return Err(DeliveryError::Uncertain {
                        target: name,
                        why: e.to_string(),
                    });
                }
                Err(DataFailure::Unreadable(why)) => {
                    return Err(DeliveryError::Unavailable(vec![why]));
                }
                Err(e) => {
                    warn!(relay_target = %name, error = %e, "relay target failed at DATA, trying the next");
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        Err(DeliveryError::Unavailable(failures))
    }
}

impl Upstream {
    /// The relay target's name.
    pub fn target_name(&self) -> &str {
        &self.name
    }

    /// Index of the target, so that a failover can start after it.
    pub fn target_index(&self) -> usize {
        self.target
    }

    /// Why the connection does not meet `requirement` (no TLS, or not the version, cipher
    /// or certificate it asks for); `None` when it does.
    pub fn unmet(&self, requirement: &TlsRequirement) -> Option<String> {
        match &self.link.tls {
            None => Some(format!(
                "{}: the connection is not encrypted",
                requirement.by
            )),
            Some(facts) => facts.unmet(requirement),
        }
    }

    /// What TLS the connection negotiated, if any.
    pub fn tls(&self) -> Option<&tls::TlsFacts> {
        self.link.tls.as_ref()
    }

    /// RCPT TO; a refusal carries the target's reply for the client. A non-ASCII address
    /// is refused here (5.6.7) when the target does not offer SMTPUTF8.
    pub async fn rcpt(&mut self, recipient: &str) -> Result<SmtpReply, TargetError> {
        unwritable(recipient, "recipient")?;
        if !recipient.is_ascii() && !self.link.caps.smtputf8 {
            return Err(TargetError::Refused(own_reply(
                553,
                "5.6.7",
                "Error: the recipient address is not ASCII and the relay target does not offer SMTPUTF8",
            )));
        }
        command_reply(
            &mut self.link.conn,
            &format!("RCPT TO:<{recipient}>\r\n"),
            self.protocol_timeout,
        )
        .await
    }

    /// DATA and the message (CRLF line ends, as received; dot-stuffing is added here), after
    /// `head`: header fields Postern adds in front (its `Received:`), or nothing. The message
    /// goes out in pieces of whole lines, never copied whole. The reply is the target's answer
    /// to the end of the message; the connection goes back to the cache after a reply, or is
    /// closed in the background after a failure.
    pub async fn data(
        mut self,
        head: &[u8],
        message: &Body<'_>,
        data_timeout: Duration,
    ) -> Result<SmtpReply, DataFailure> {
        if !self.link.caps.eight_bit_mime && (message.is_eight_bit() || !head.is_ascii()) {
            // Postern does not downgrade 8-bit content to quoted-printable.
            observe(&self.observer, &self.name, Outcome::Deferred);
            self.abort().await;
            return Err(DataFailure::NotSent(TargetError::Incapable(own_reply(
                451,
                "4.6.3",
                "Error: the message has 8-bit content and no relay target offers 8BITMIME, try again later",
            ))));
        }
        if let Err(e) = command_reply(&mut self.link.conn, "DATA\r\n", self.protocol_timeout).await
        {
            quit_later(self.link.conn, self.protocol_timeout);
            return Err(DataFailure::NotSent(e));
        }
        let breaks = AtomicUsize::new(0);
        let budget = data_timeout + Duration::from_secs(message.len() >> 20);
        // lettre ends the message with CRLF.CRLF itself: the pieces leave out the message's
        // own final line end, so that the target receives exactly the bytes the client sent.
        // Each piece is written on its own; the stream sends them together (stream.rs).
        let pieces = std::iter::once(Cow::Borrowed(head))
            .chain(message.pieces(self.line_limit, &breaks))
            .filter(|p| !p.is_empty());
        let sending = AssertUnwindSafe(self.link.conn.message_iter(pieces)).catch_unwind();
        let reply = match tokio::time::timeout(budget, sending).await {
            Err(_) => Err(DataFailure::Uncertain(TargetError::Timeout(
                "the end of the message",
            ))),
            Ok(Err(panic)) => {
                // The spool could not be read (Body::pieces): the end of data was not sent,
                // so the target has nothing; the connection is dropped mid-message.
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "reading the message failed".to_owned());
                error!(relay_target = %self.name, error = %why, "message not sent");
                return Err(DataFailure::Unreadable(why));
            }
            Ok(Ok(Ok(r))) => Ok(reply_of(&r)),
            Ok(Ok(Err(e))) => Err(match TargetError::from_smtp(e) {
                TargetError::Refused(reply) => DataFailure::Refused(reply),
                broken => DataFailure::Uncertain(broken),
            }),
        };
        if breaks.load(Ordering::Relaxed) > 0 {
            info!(relay_target = %self.name, line_limit = self.line_limit, breaks = breaks.load(Ordering::Relaxed), "long lines broken for the relay target");
        }
        let outcome = match &reply {
            Ok(_) => Outcome::Delivered,
            Err(DataFailure::Refused(r)) if !r.is_transient() => Outcome::Refused,
            Err(DataFailure::Refused(_)) => Outcome::Deferred,
            Err(DataFailure::Uncertain(_)) => Outcome::Uncertain,
            Err(DataFailure::NotSent(e)) => Outcome::of_error(e),
            Err(DataFailure::Unreadable(_)) => Outcome::Unavailable,
        };
        observe(&self.observer, &self.name, outcome);
        match &reply {
            Ok(r) => {
                info!(relay_target = %self.name, reused_connection = self.reused, reply = %r, "delivered to relay target");
                self.pool.put(self.target, self.link, self.cacheable);
            }
            Err(DataFailure::Uncertain(e)) => {
                warn!(relay_target = %self.name, error = %e, "no answer to the end of the message: it may have been delivered, so it is not sent elsewhere");
                quit_later(self.link.conn, self.protocol_timeout);
            }
            // The target's answer is final: the client need not wait for QUIT as well.
            Err(_) => quit_later(self.link.conn, self.protocol_timeout),
        }
        reply
    }

    /// Ends the transaction without delivering (QUIT).
    pub async fn abort(mut self) {
        let _ = tokio::time::timeout(self.protocol_timeout, self.link.conn.abort()).await;
    }
}

async fn command_reply(
    conn: &mut lettre::transport::smtp::client::AsyncSmtpConnection,
    command: &str,
    timeout: Duration,
) -> Result<SmtpReply, TargetError> {
    let verb = command.split([' ', '\r']).next().unwrap_or("");
    answer_to(
        verb,
        tokio::time::timeout(timeout, conn.command(command)).await,
    )
}

/// The reply to a command already sent (pipelined after another).
async fn next_reply(
    conn: &mut lettre::transport::smtp::client::AsyncSmtpConnection,
    verb: &str,
    timeout: Duration,
) -> Result<SmtpReply, TargetError> {
    answer_to(
        verb,
        tokio::time::timeout(timeout, conn.read_response()).await,
    )
}

fn answer_to(
    verb: &str,
    read: Result<Result<Response, lettre::transport::smtp::Error>, tokio::time::error::Elapsed>,
) -> Result<SmtpReply, TargetError> {
    match read {
        Err(_) => Err(TargetError::Timeout("a reply")),
        Ok(Ok(r)) => Ok(reply_of(&r)),
        Ok(Err(e)) => Err(match TargetError::from_smtp(e) {
            TargetError::Smtp(why) => TargetError::Smtp(format!("{verb}: {why}")),
            other => other,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_go_only_where_offered() {
        let params = MailParameters {
            size: Some(120),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
        };
        let all = Capabilities::from_ehlo(["mx", "SIZE 1000", "8BITMIME", "SMTPUTF8"]);
        assert_eq!(params.for_target(&all), " SIZE=120 BODY=8BITMIME SMTPUTF8");
        let none = Capabilities::from_ehlo(["mx"]);
        assert_eq!(params.for_target(&none), "");
        let seven = MailParameters {
            body: Some(BodyType::SevenBit),
            ..MailParameters::default()
        };
        assert_eq!(seven.for_target(&all), " BODY=7BIT");
        let message = Envelope::for_message("s@x.test", &["r@y.test".into()], "é\r\n".as_bytes());
        assert_eq!(
            message.params,
            MailParameters {
                size: Some(4),
                body: Some(BodyType::EightBitMime),
                smtputf8: false,
            }
        );
    }
}
