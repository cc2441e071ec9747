//! Log setup: human-readable structured lines on stderr, level from `RUST_LOG` (default info),
//! and [`LogEvents`], the sink that writes the engine's events as log lines.
//!
//! indymilter reports why it ended an MTA connection (a malformed packet, an absurd length, a
//! peer that vanished) only at trace level, among much noise. [`MilterSessionErrors`] picks
//! out that one event and logs it as a warning, so an admin sees every connection that ended
//! abnormally and why.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Metadata, Subscriber, debug, info, warn};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::engine::{self, ports::Events};

/// The message indymilter logs when a session ends on an error.
const SESSION_ERROR: &str = "error in session while processing commands: ";

/// How log lines are written (`[log]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
    /// The default filter (`info`, `debug`, `postern=debug,info`, ...); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

/// `text`: one human-readable line per event; `json`: one JSON object per line, the same
/// fields at the top level (for a log pipeline).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Whether `level` is a filter the log understands.
pub fn valid_level(level: &str) -> Result<(), String> {
    EnvFilter::try_new(level).map(|_| ()).map_err(|e| {
        format!(
            "{level:?} is not a log level or filter (e.g. \"info\", \"postern=debug,info\"): {e}"
        )
    })
}

/// Installs the global subscriber.
pub fn init(settings: &LogSettings) {
    let env = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match settings.format {
        LogFormat::Text => layer
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(env)
            .boxed(),
        LogFormat::Json => layer.json().flatten_event(true).with_filter(env).boxed(),
    };
    let session_errors = MilterSessionErrors::layer();
    tracing_subscriber::registry()
        .with(fmt)
        .with(session_errors)
        .init();
}

/// Re-logs indymilter's "session ended on an error" trace events as warnings.
pub struct MilterSessionErrors;

impl MilterSessionErrors {
    /// The layer with its filter: only indymilter's session events that carry nothing but a
    /// message, which is how it reports the end of a session. The events it writes for every
    /// command, macro packet and state change carry fields beside the message and are left
    /// out by callsite (tracing asks once per callsite and remembers), so they are never built,
    /// instead of being built and formatted for every milter command only to be dropped here.
    pub fn layer<S>() -> impl Layer<S>
    where
        S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        Self.with_filter(filter_fn(session_end_event))
    }
}

/// An event of indymilter's session module with nothing but a message (see
/// [`MilterSessionErrors::layer`]).
fn session_end_event(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && meta.target().starts_with("indymilter::session")
        && meta.fields().iter().all(|f| f.name() == "message")
}

impl<S: Subscriber> Layer<S> for MilterSessionErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = MessageField(String::new());
        event.record(&mut message);
        let Some(error) = message.0.strip_prefix(SESSION_ERROR) else {
            return;
        };
        if error == "milter shut down" {
            return;
        }
        // A peer that hangs up (a health check, or the MTA giving up) is no protocol error;
        // one that does so mid-message is reported by the milter door's close callback.
        if error.ends_with("unexpected end of file") {
            debug!(target: "postern::milter", "MTA connection closed without QUIT");
            return;
        }
        let hint = if error.ends_with("invalid data") {
            " (a packet longer than 1 MiB, or not a milter packet at all)"
        } else {
            ""
        };
        warn!(
            target: "postern::milter",
            error = format_args!("{error}{hint}"),
            "MTA connection closed on a milter protocol error; the MTA applies milter_default_action to a message in progress"
        );
    }
}

struct MessageField(String);

impl Visit for MessageField {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// The log as an event sink: one line per connection, check, refusal, rule action and
/// message, with the fields the lines have always had. An unavailable state store is told
/// once a minute, with how many times it was since.
#[derive(Debug, Default)]
pub struct LogEvents {
    store_unavailable: std::sync::Mutex<Throttle>,
    tracking_dropped: std::sync::Mutex<Throttle>,
}

/// A line that repeats while a fault lasts: written at most once per interval, with how
/// many occurrences it stands for.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<std::time::Instant>,
    pending: u64,
}

impl Throttle {
    /// Counts `count` more occurrences; when the line is due (the first time, or `every`
    /// after the last one), returns how many occurrences it stands for, this one included.
    pub fn due(&mut self, every: std::time::Duration, count: u64) -> Option<u64> {
        self.pending += count;
        let now = std::time::Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < every) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

impl Events for LogEvents {
    fn emit(&self, event: &engine::Event<'_>) {
        use engine::Event as E;
        match event {
            E::Connected {
                session,
                client,
                profile,
            } => {
                info!(
                    session,
                    client_addr = client.addr.map(display),
                    client_name = client.name.as_deref().unwrap_or("unknown"),
                    "connect"
                );
                if let Some(profile) = profile {
                    info!(session, %profile, "connection profile");
                }
            }
            E::Checked {
                session,
                check,
                client,
                verdict,
                detail,
                elapsed,
                dry_run,
            } => info!(
                session,
                check = check.name(),
                dry_run,
                client_addr = client.map(display),
                result = %detail,
                verdict = verdict.map_or("pass", |v| v.name()),
                elapsed_ms = elapsed.as_millis() as u64,
                "check"
            ),
            E::Zone {
                session,
                check,
                zone,
                usable: Some(true),
                note,
            } => debug!(session, check = check.name(), zone, "{note}"),
            E::Zone {
                session,
                check,
                zone,
                usable,
                note,
            } => warn!(
                session,
                check = check.name(),
                zone,
                usable = usable.map_or("unknown", |u| if u { "yes" } else { "no" }),
                "{note}"
            ),
            E::WouldRefuse {
                session,
                stage,
                verdict,
                recipient,
            } => info!(
                session,
                stage = stage.name(),
                %verdict,
                recipient = recipient.map(|r| display(r.escape_debug())),
                "dry run: would have refused; went on"
            ),
            E::StoreUnavailable {
                session,
                what,
                error,
            } => {
                if let Some(times) = once_a_minute(&self.store_unavailable, 1) {
                    warn!(
                        session,
                        what,
                        error,
                        times_since_last_line = times,
                        "state store unavailable; decided without it (told once a minute; postern_state_store_unavailable_total counts each)"
                    );
                }
            }
            E::StoreBack {
                store,
                after,
                fallbacks,
            } => info!(
                store,
                after_ms = after.as_millis() as u64,
                decided_without_it = fallbacks,
                "state store answers again; state is shared again"
            ),
            E::Refused {
                session,
                check,
                verdict,
                stage,
                held_until: Some(until),
                ..
            } => {
                info!(session, check = check.name(), %verdict, stage = stage.name(), until = until.name(), "verdict held")
            }
            E::Refused {
                session,
                check,
                verdict,
                stage,
                held_until: None,
                dry_run,
                ..
            } => {
                if *dry_run {
                    // The "would have refused" line of the stage says it for the operator.
                    debug!(session, check = check.name(), %verdict, stage = stage.name(), "dry run: a check would have refused");
                } else {
                    info!(session, check = check.name(), %verdict, stage = stage.name(), "refused");
                }
            }
            E::ScanFailed {
                session,
                step,
                error,
                action,
            } => warn!(
                session,
                stage = step.name(),
                error,
                action,
                "scan failure: {}",
                step.failure()
            ),
            E::Noted { session, note } => log_note(*session, note),
            E::RuleActed {
                session,
                queue_id,
                ruleset,
                rule,
                target,
                count,
                ..
            } => info!(
                session,
                queue_id,
                %ruleset,
                %rule,
                // Attachment and archive entry names come from the sender.
                rule_target = %target.escape_debug(),
                count,
                "content rule acted"
            ),
            E::Diverted {
                session,
                queue_id,
                ruleset,
                rule,
                relay_target,
                reply,
            } => info!(
                session,
                queue_id,
                %ruleset,
                %rule,
                %relay_target,
                %reply,
                "message diverted"
            ),
            E::AttachmentUnread {
                session,
                queue_id,
                attachment,
                reason,
                detail,
                action,
            } => warn!(
                session,
                queue_id,
                attachment = %attachment.escape_debug(),
                reason,
                detail,
                action,
                "attachment not read to the end"
            ),
            E::Scanned { .. } => {}
            E::RelayAttempt {
                relay_target,
                outcome,
            } => debug!(relay_target, outcome = outcome.name(), "relay attempt"),
            E::TrackingDropped {
                reason,
                count,
                detail,
            } => {
                if let Some(dropped) = once_a_minute(&self.tracking_dropped, *count) {
                    warn!(
                        dropped,
                        reason,
                        error = detail,
                        "message tracking records dropped; mail is not affected (logged at most once a minute, counted in postern_tracking_dropped_total)"
                    );
                }
            }
            E::TransactionEnded { session, report } => info!(
                session,
                queue_id = report.queue_id,
                sender = %report.sender.escape_debug(),
                accepted = report.accepted.len(),
                refused = report.refused.len(),
                dry_run = report.dry_run,
                "transaction ended without a message"
            ),
            E::Message { session, report } => info!(
                session,
                queue_id = report.queue_id,
                sender = %report.sender.escape_debug(),
                recipients = report.recipients.len(),
                rewritten = %report.envelope,
                refused = report.refused.len(),
                size = report.size,
                spooled = report.spooled,
                spf = report.spf,
                authentication = report.authentication.map(|a| a.words()),
                organizations = (!report.owners.organizations.is_empty())
                    .then(|| report.owners.involved(report.recipients).join(",")),
                verdict = %report.verdict,
                reason = %report.reason,
                dry_run = report.dry_run,
                elapsed_ms = report.elapsed.as_millis() as u64,
                "message"
            ),
            E::Disconnected { session, report } => {
                let checks: Vec<String> = report.checks.iter().map(|c| c.to_string()).collect();
                info!(
                    session,
                    client_addr = report.client.addr.map(display),
                    helo = report.helo.unwrap_or(""),
                    tls = report.tls.map_or("none", |t| t.version.as_str()),
                    authenticated = report.authenticated.is_some(),
                    messages = report.messages,
                    checks = %checks.join(","),
                    invalid_commands = report.invalid_commands,
                    failed_recipients = report.failed_recipients,
                    unfinished_message = report.unfinished_message,
                    "disconnect"
                );
            }
        }
    }
}

/// Counts `count` occurrences of a repeating line: how many the line stands for when it is
/// due (at most once a minute).
fn once_a_minute(throttle: &std::sync::Mutex<Throttle>, count: u64) -> Option<u64> {
    throttle
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .due(std::time::Duration::from_secs(60), count)
}

/// One [`Note`](engine::events::Note) as a log line.
fn log_note(session: u64, note: &engine::events::Note<'_>) {
    use engine::events::Note as N;
    match note {
        N::TlsStarted { version, cipher } => info!(session, version, cipher, "TLS started"),
        N::TlsRequired { by, recipient } => info!(
            session,
            by,
            recipient = recipient.map(|r| display(r.escape_debug())),
            "TLS required, session is not encrypted"
        ),
        N::RelayDenied { recipient } => info!(
            session,
            recipient = %recipient.escape_debug(),
            "relay access denied"
        ),
        N::DictionaryAttackSuspected {
            client,
            failed_recipients,
        } => info!(
            session,
            client_addr = client.map(display),
            failed_recipients,
            "dictionary attack suspected: every further recipient gets the same answer"
        ),
        N::TooManyInvalidCommands { count, command } => info!(
            session,
            count,
            command = %command.escape_debug(),
            "too many invalid commands, dropping client"
        ),
        N::Unreadable { purpose, error } => {
            warn!(
                session,
                error, "cannot read {purpose}: that step is skipped"
            )
        }
        N::NothingToVerify => info!(session, "the message has no header to verify"),
        N::Verified { results } => {
            info!(session, results, "message verified (DKIM, ARC, DMARC)")
        }
        N::DmarcNotEnforced {
            domain,
            policy,
            why,
        } => info!(session, domain, policy, why, "DMARC fails, not enforced"),
        N::DmarcQuarantineAccepted { domain } => info!(
            session,
            domain,
            "DMARC fails with p=quarantine: accepted (dmarc_quarantine_action = \"accept\")"
        ),
        N::ForgedResultsRemoved { index } => info!(
            session,
            index, "removing forged Authentication-Results for this host"
        ),
        N::Sealed { domain, selector } => {
            info!(session, domain, selector, "message sealed (ARC)")
        }
        N::NotSealed { reason } => info!(session, reason, "not sealed (ARC)"),
        N::Signed { domain, selector } => {
            info!(session, domain, selector, "message signed (DKIM)")
        }
        N::NotSigned {
            domain,
            user,
            profile,
        } => info!(
            session,
            domain,
            user = %user.unwrap_or("-").escape_debug(),
            profile = profile.unwrap_or("-"),
            "not signed (DKIM): this client may not use the domain's signature (see the signer's users, connection_profiles and organization)"
        ),
        N::UnfoldableLine { field: None, limit } => warn!(
            session,
            "a header line is longer than {limit} octets and not UTF-8 text: it cannot be folded, and a hop that breaks it will break the DKIM signature"
        ),
        N::UnfoldableLine {
            field: Some(field),
            limit,
        } => warn!(
            session,
            field = %field.escape_debug(),
            "a header line is longer than {limit} octets with no white space to fold at: a hop that breaks it will break the DKIM signature"
        ),
        N::Retained {
            kind,
            outcome: Ok(path),
        } => info!(session, kind, path, "message copy retained"),
        N::Retained {
            kind,
            outcome: Err(error),
        } => warn!(session, kind, error, "message copy not retained"),
        N::PostmasterExempt { recipient } => info!(
            session,
            recipient = %recipient.escape_debug(),
            "postmaster accepted although the client is refused (postmaster_exempt)"
        ),
        N::RouteAlreadyTaken { route, recipients } => info!(
            session,
            route,
            recipients,
            "recipients already handed to this route on an earlier attempt of the message: not sent again"
        ),
    }
}

/// An error with its causes, `a: b: c`, so that a TLS name mismatch says so.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let cause = s.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use tracing::{Subscriber, trace};
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::filter_fn;
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::{MessageField, Throttle, session_end_event};

    /// Keeps the message of every event it sees.
    struct Messages(Arc<Mutex<Vec<String>>>);

    impl<S: Subscriber> Layer<S> for Messages {
        fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
            let mut message = MessageField(String::new());
            event.record(&mut message);
            self.0.lock().unwrap().push(message.0);
        }
    }

    #[test]
    fn only_the_session_end_events_reach_the_session_errors_layer() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(Messages(seen.clone()).with_filter(filter_fn(session_end_event)));
        tracing::subscriber::with_default(subscriber, || {
            let e = "invalid data";
            trace!(target: "indymilter::session", cmd = ?e, "got next command");
            trace!(target: "indymilter::session", state = ?e, "transitioned to next state");
            trace!(target: "indymilter::session", "error in session while processing commands: {e}");
            trace!(target: "indymilter::connection", "error in session while processing commands: {e}");
        });
        assert_eq!(
            *seen.lock().unwrap(),
            ["error in session while processing commands: invalid data"]
        );
    }

    #[test]
    fn a_throttled_line_stands_for_every_occurrence_held_back() {
        let mut throttle = Throttle::default();
        let minute = Duration::from_secs(60);
        assert_eq!(throttle.due(minute, 1), Some(1), "the first is written");
        assert_eq!(throttle.due(minute, 2), None);
        assert_eq!(throttle.due(minute, 1), None);
        // Due again once the interval has passed: it stands for the three held back and itself.
        assert_eq!(throttle.due(Duration::ZERO, 1), Some(4));
    }
}
