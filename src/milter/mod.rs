//! The milter door: speaks the sendmail milter protocol (through indymilter) with Postfix or
//! Sendmail and turns each stage into a call on an engine [`Session`](crate::engine::Session).
//! No policy lives here.
//!
//! This file: what is negotiated, and the server's run and shutdown. `settings.rs` `[milter]`
//! and what a reload may change; `in_flight.rs` the messages shutdown waits for; `stages.rs`
//! the callbacks, one thin call into the engine each; `edits.rs` the engine's edits as milter
//! actions, and header and body bytes made safe for them; `socket.rs` the listening socket.

mod edits;
mod in_flight;
mod settings;
pub mod socket;
mod stages;

use std::future::Future;
use std::sync::Arc;

use indymilter::{Actions, MacroStage, ProtoOpts};
use tracing::{info, warn};

use crate::engine::attention::{Attention, Need};
use crate::engine::{Engine, Stage};
pub use edits::header_line;
use in_flight::InFlight;
pub use settings::MilterSettings;
use socket::{ListenSocket, MilterListener, StopListening};
use stages::callbacks;

/// Macros Postern asks the MTA for, by stage: the ones it reads (stages.rs), no more, since
/// the MTA sends each one with every message. The queue id `i` is asked for from MAIL on:
/// Sendmail knows it at MAIL, Postfix once the first recipient is accepted
/// (`smtpd_delay_open_until_valid_rcpt`).
/// Public, with [`ACTIONS`] and [`requested_options`], so that the no-op reference milter of the
/// benchmark (examples/noop-milter.rs) negotiates as Postern does.
pub const MACROS: &[(MacroStage, &str)] = &[
    (MacroStage::Connect, "{client_addr}"),
    (MacroStage::Helo, "{tls_version} {cipher} {cert_subject}"),
    (MacroStage::Mail, "{auth_authen} i"),
    (MacroStage::Rcpt, "{rcpt_mailer} {rcpt_host} {rcpt_addr} i"),
    (MacroStage::Data, "i"),
    (MacroStage::Eom, "i"),
];

/// Postfix answers a milter's refusal at connect with its own "554 ... not accepting
/// connections" (or 421), dropping the milter's text; from HELO on it passes the text through.
/// Connect-stage refusals are therefore delivered at HELO (or the first later stage).
const FIRST_REPLY_STAGE: Stage = Stage::Helo;

/// Stages at which the MTA never has to wait for Postern's answer, whatever the policy:
/// the engine never refuses at connect in this door (see [`FIRST_REPLY_STAGE`]), and a
/// refusal reached in the header or body stays pending in the engine and is given at end of
/// message.
const ALWAYS_NOREPLY: ProtoOpts = ProtoOpts::NOREPLY_CONNECT
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_EOH)
    .union(ProtoOpts::NOREPLY_BODY);

/// What Postern asks of an MTA that `offered` these protocol options, for a policy with this
/// [`Attention`]: not to wait for an answer at every stage where the policy never refuses (each
/// one saves a round trip per message), header values with their leading space, and the
/// recipients the MTA refused. Returns the options to request; those of them that are
/// no-reply stages are the ones the door must not answer.
pub fn requested_options(offered: ProtoOpts, attention: &Attention) -> ProtoOpts {
    let mut noreply = ALWAYS_NOREPLY;
    for (need, stage) in [
        (attention.helo, ProtoOpts::NOREPLY_HELO),
        (attention.data, ProtoOpts::NOREPLY_DATA),
        (attention.unknown_command, ProtoOpts::NOREPLY_UNKNOWN),
    ] {
        if need == Need::Hear {
            noreply |= stage;
        }
    }
    offered & (noreply | ProtoOpts::LEADING_SPACE | ProtoOpts::REJECTED_RCPT)
}

/// Every no-reply stage option, to tell them from the other options.
pub const NOREPLY_STAGES: ProtoOpts = ALWAYS_NOREPLY
    .union(ProtoOpts::NOREPLY_HELO)
    .union(ProtoOpts::NOREPLY_MAIL)
    .union(ProtoOpts::NOREPLY_RCPT)
    .union(ProtoOpts::NOREPLY_DATA)
    .union(ProtoOpts::NOREPLY_UNKNOWN);

/// Runs the milter until `shutdown` resolves, then stops accepting, lets messages in flight
/// finish (up to `shutdown_timeout`) and returns.
pub async fn run(
    engine: Arc<Engine>,
    settings: &MilterSettings,
    listen: &ListenSocket,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let (listener, stop) = MilterListener::bind(listen, settings.socket_mode)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    crate::notify::ready();
    serve(engine, settings, listener, stop, shutdown).await
}

/// The message changes Postern asks the MTA for: header fields and the body (content rules,
/// DKIM), the envelope sender and recipients (address transformation, encryption routes).
pub const ACTIONS: Actions = Actions::ADD_HEADER
    .union(Actions::CHANGE_HEADER)
    .union(Actions::REPLACE_BODY)
    .union(Actions::CHANGE_SENDER)
    .union(Actions::ADD_RCPT)
    .union(Actions::DELETE_RCPT);

/// The envelope changes of the address transformation.
const ENVELOPE_ACTIONS: Actions = Actions::CHANGE_SENDER
    .union(Actions::ADD_RCPT)
    .union(Actions::DELETE_RCPT);

/// Serves an already bound listener (tests bind port 0 and read the address first).
pub async fn serve(
    engine: Arc<Engine>,
    settings: &MilterSettings,
    listener: MilterListener,
    stop_listening: StopListening,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let in_flight = Arc::new(InFlight::default());
    let config = indymilter::Config {
        max_connections: settings.max_inbound_connections,
        actions: ACTIONS,
        connection_timeout: settings.connection_timeout,
    };
    let grace = settings.shutdown_timeout;
    let waiting = in_flight.clone();
    let drained = async move {
        shutdown.await;
        stop_listening.stop();
        info!(
            messages = waiting.count(),
            timeout_s = grace.as_secs(),
            "shutting down: letting messages in flight finish"
        );
        if tokio::time::timeout(grace, waiting.wait_idle())
            .await
            .is_err()
        {
            warn!(
                messages = waiting.count(),
                "shutdown timeout reached; the MTA applies milter_default_action to unfinished messages"
            );
        }
    };
    indymilter::run(listener, callbacks(engine, in_flight), config, drained).await?;
    info!("milter stopped");
    Ok(())
}
