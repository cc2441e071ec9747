//! The relay targets in priority order: a connection with MAIL accepted from the first that
//! takes it, failover past those that cannot, and the targets a divert rule names.

use std::sync::Arc;
use std::time::Duration;

use lettre::transport::smtp::extension::ClientId;
use tracing::{debug, warn};

use super::outcome::{self, observe};
use super::pool::{Pool, quit_later};
use super::replies::*;
use super::target::Link;
use super::*;
use crate::engine::SmtpReply;
use crate::engine::address::EnvelopeAddress;
use crate::engine::ports::Events;

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
    /// NOOP to the target of a transaction this often while the client is still uploading
    /// (`noop_interval`; `None`: never).
    pub noop_interval: Option<Duration>,
    /// Idle connections kept for the next message (`connection_cache_time`).
    pub(super) pool: Arc<Pool>,
    /// Told of every attempt's outcome (the metrics count them), when set.
    pub events: Option<Arc<dyn Events>>,
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
            noop_interval: None,
            pool: Pool::new(cache, protocol_timeout),
            events: None,
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
        recipient: Option<&EnvelopeAddress>,
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
                observe(&self.events, &target.name, outcome::of_error(e));
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
                        events: self.events.clone(),
                        last_command: tokio::time::Instant::now(),
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
    pub fn through(&self, names: &[String]) -> Result<Delivery, RouteError> {
        let mut targets = Vec::new();
        for name in names {
            let Some(target) = self.targets.iter().find(|t| t.name == *name) else {
                return Err(RouteError::NoSuchTarget(name.clone()));
            };
            targets.push(RelayTarget {
                divert_only: false,
                ..target.clone()
            });
        }
        if targets.is_empty() {
            return Err(RouteError::Empty);
        }
        Ok(Delivery {
            xforward: self.xforward,
            noop_interval: self.noop_interval,
            events: self.events.clone(),
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

    /// For `check-config --connect`: connects to each target as a delivery would (TLS and
    /// AUTH included) and says goodbye; each target's name and what came of it.
    pub async fn try_each(&self) -> Vec<(String, Result<String, String>)> {
        let helo = ClientId::Domain(self.helo_name.clone());
        let mut results = Vec::new();
        for target in &self.targets {
            let tried = tokio::time::timeout(
                self.connection_timeout,
                target.connect(&helo, self.protocol_timeout),
            )
            .await;
            let result = match tried {
                Err(_) => Err(format!(
                    "no connection within {} s",
                    self.connection_timeout.as_secs()
                )),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(mut link)) => {
                    let secured = match &link.tls {
                        Some(tls) => format!("{} {}", tls.version, tls.cipher),
                        None => "no TLS".to_owned(),
                    };
                    let authenticated = if target.auth == RelayAuth::None {
                        ""
                    } else {
                        ", AUTH accepted"
                    };
                    link.conn.quit().await.ok();
                    Ok(format!("reachable ({secured}{authenticated})"))
                }
            };
            results.push((target.name.clone(), result));
        }
        results
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
        recipient: Option<&EnvelopeAddress>,
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
        recipient: Option<&EnvelopeAddress>,
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
        recipients: &[EnvelopeAddress],
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
