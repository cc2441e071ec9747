//! Log setup: human-readable structured lines on stderr, level from `RUST_LOG` (default info).
//!
//! indymilter reports why it ended an MTA connection (a malformed packet, an absurd length, a
//! peer that vanished) only at trace level, among much noise. [`MilterSessionErrors`] picks
//! out that one event and logs it as a warning, so an admin sees every connection that ended
//! abnormally and why.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, debug, warn};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The message indymilter logs when a session ends on an error.
const SESSION_ERROR: &str = "error in session while processing commands: ";

/// Installs the global subscriber.
pub fn init() {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(env);
    let session_errors = MilterSessionErrors
        .with_filter(Targets::new().with_target("indymilter::session", Level::TRACE));
    tracing_subscriber::registry()
        .with(fmt)
        .with(session_errors)
        .init();
}

/// Re-logs indymilter's "session ended on an error" trace events as warnings.
pub struct MilterSessionErrors;

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
