//! The milter door: speaks the sendmail milter protocol (through indymilter) with Postfix or
//! Sendmail and turns each stage into a call on an engine [`Session`]. No policy lives here.

pub mod socket;

use std::ffi::{CStr, CString};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, Macros, NegotiateContext,
    ProtoOpts, SetErrorReply, SmtpReply as MilterReply, SocketInfo, Status,
};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::engine::events::RefusedBy;
use crate::engine::{
    ClientInfo, Edits, Engine, EnvelopeEdits, HeaderEdit, Session, SmtpReply, Stage, TlsInfo,
    Verdict,
};
use socket::{ListenSocket, MilterListener, StopListening};

/// Settings of the milter door (`[milter]`). They take effect at start; a reload keeps the
/// listener as it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MilterSettings {
    pub listen: ListenSocket,
    pub socket_mode: u32,
    pub max_inbound_connections: usize,
    pub connection_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl MilterSettings {
    /// Keys that differ in `new`: all need a restart (the listener and its limits are set
    /// up once).
    pub fn changed_keys(&self, new: &Self) -> Vec<&'static str> {
        [
            ("listen", self.listen != new.listen),
            ("socket_mode", self.socket_mode != new.socket_mode),
            (
                "max_inbound_connections",
                self.max_inbound_connections != new.max_inbound_connections,
            ),
            (
                "connection_timeout",
                self.connection_timeout != new.connection_timeout,
            ),
            (
                "shutdown_timeout",
                self.shutdown_timeout != new.shutdown_timeout,
            ),
        ]
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
    }
}

/// Macros Postern asks the MTA for, by stage. Postfix sends only what is asked for.
/// Public, with [`ACTIONS`] and [`requested_opts`], so that the no-op reference milter of the
/// benchmark (examples/noop-milter.rs) negotiates exactly what Postern does.
pub const MACROS: &[(MacroStage, &str)] = &[
    (
        MacroStage::Connect,
        "{client_addr} {client_name} {daemon_name} j",
    ),
    (
        MacroStage::Helo,
        "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
    ),
    (MacroStage::Mail, "{auth_type} {auth_authen} {mail_addr} i"),
    (MacroStage::Rcpt, "{rcpt_mailer} {rcpt_host} {rcpt_addr} i"),
    (MacroStage::Data, "i"),
    (MacroStage::Eom, "i"),
];

/// Postfix answers a milter's refusal at connect with its own "554 ... not accepting
/// connections" (or 421), dropping the milter's text; from HELO on it passes the text through.
/// Connect-stage refusals are therefore delivered at HELO (or the first later stage).
const FIRST_REPLY_STAGE: Stage = Stage::Helo;

/// Stages at which Postern asks the MTA not to wait for an answer, when the MTA offers it:
/// each one saves a round trip per message. Nothing is lost: the engine never refuses at
/// connect in this door (see [`FIRST_REPLY_STAGE`]), and a refusal reached in the header or
/// body stays pending in the engine and is given at end of message.
pub const NOREPLY: ProtoOpts = ProtoOpts::NOREPLY_CONNECT
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_EOH)
    .union(ProtoOpts::NOREPLY_BODY);

/// The protocol options Postern asks for out of those the MTA `offered`: the no-reply stages
/// of [`NOREPLY`], header values with their leading space, and the recipients the MTA refused.
pub fn requested_opts(offered: ProtoOpts) -> ProtoOpts {
    offered & (NOREPLY | ProtoOpts::LEADING_SPACE | ProtoOpts::REJECTED_RCPT)
}

/// Counts messages in progress, so that shutdown can wait for them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

impl InFlight {
    /// Messages between MAIL FROM and end of message, over all connections.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    fn begin(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    fn end(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Resolves when no message is in progress.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What the door keeps per MTA connection.
struct Conn {
    session: Session,
    in_flight: Arc<InFlight>,
    in_message: bool,
    /// The MTA sends header values with their leading space (SMFIP_HDR_LEADSPC), so the
    /// header can be rebuilt exactly as it came.
    leading_space: bool,
    /// Stages at which the MTA does not wait for an answer (see [`NOREPLY`]).
    noreply: ProtoOpts,
    /// The message changes the MTA grants this connection.
    granted: Actions,
    /// Every callback runs in it, so that each log line of the session (the relay's too)
    /// names it.
    span: tracing::Span,
}

impl Conn {
    fn begin_message(&mut self) {
        if !self.in_message {
            self.in_message = true;
            self.in_flight.begin();
        }
    }

    /// Answers a stage, or stays silent when the MTA does not wait for an answer there (see
    /// [`NOREPLY`]: nothing is refused at connect, and the engine repeats a refusal reached
    /// inside the message at its end).
    fn answer(&mut self, reply: &mut MilterReply, verdict: Verdict, noreply: ProtoOpts) -> Status {
        if self.noreply.contains(noreply) {
            return Status::Noreply;
        }
        self.end_if_refused(&verdict);
        answer(reply, verdict)
    }

    /// After a refusal at DATA, end of header or body the MTA drops the message and the
    /// milter protocol sends no abort for it: the transaction ends here.
    fn end_if_refused(&mut self, verdict: &Verdict) {
        if verdict.reply().is_some() || *verdict == Verdict::Discard {
            self.session.reset();
            self.end_message();
        }
    }

    fn end_message(&mut self) {
        if self.in_message {
            self.in_message = false;
            self.in_flight.end();
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.end_message();
    }
}

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

/// A callback's future, run in its session's span.
macro_rules! in_span {
    ($cx:ident, $call:expr) => {{
        let span = $cx
            .data
            .as_ref()
            .map_or_else(tracing::Span::none, |c| c.span.clone());
        Box::pin(tracing::Instrument::instrument($call, span))
    }};
}

/// The indymilter callbacks: each one a thin translation into the engine session.
fn callbacks(engine: Arc<Engine>, in_flight: Arc<InFlight>) -> Callbacks<Conn> {
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            Box::pin(negotiate(
                cx,
                actions,
                opts,
                engine.clone(),
                in_flight.clone(),
            ))
        })
        .on_connect(|cx, host, socket| in_span!(cx, connect(cx, host, socket)))
        .on_helo(|cx, name| in_span!(cx, helo(cx, name)))
        .on_mail(|cx, args| in_span!(cx, mail(cx, args)))
        .on_rcpt(|cx, args| in_span!(cx, rcpt(cx, args)))
        .on_data(|cx| in_span!(cx, data(cx)))
        .on_header(|cx, name, value| in_span!(cx, header(cx, name, value)))
        .on_eoh(|cx| in_span!(cx, eoh(cx)))
        .on_body(|cx, chunk| in_span!(cx, body(cx, chunk)))
        .on_eom(|cx| in_span!(cx, eom(cx)))
        .on_abort(|cx| in_span!(cx, abort(cx)))
        .on_close(|cx| in_span!(cx, close(cx)))
        .on_unknown(|cx, cmd| in_span!(cx, unknown(cx, cmd)))
}

async fn negotiate(
    cx: &mut NegotiateContext<Conn>,
    actions: Actions,
    opts: ProtoOpts,
    engine: Arc<Engine>,
    in_flight: Arc<InFlight>,
) -> Status {
    cx.requested_actions &= actions;
    let granted = cx.requested_actions;
    let leading_space = opts.contains(ProtoOpts::LEADING_SPACE);
    let noreply = opts & NOREPLY;
    cx.requested_opts |= requested_opts(opts);
    for (stage, names) in MACROS {
        cx.requested_macros
            .insert(*stage, CString::new(*names).expect("no NUL in macro list"));
    }
    let session = engine.session(FIRST_REPLY_STAGE);
    cx.data = Some(Conn {
        span: tracing::info_span!("session", id = session.id()),
        session,
        in_flight,
        in_message: false,
        leading_space,
        noreply,
        granted,
    });
    Status::Continue
}

/// Runs a stage against the session, or continues when there is no session (the MTA skipped
/// negotiation, which indymilter does not allow, so this is defensive only).
macro_rules! with_session {
    ($cx:expr, |$conn:ident| $body:expr) => {{
        let Some($conn) = $cx.data.as_mut() else {
            return Status::Continue;
        };
        let verdict = $body;
        // A refusal ends the transaction in the engine; stop counting it as in flight.
        if !$conn.session.in_transaction() {
            $conn.end_message();
        }
        answer(&mut $cx.reply, verdict)
    }};
}

async fn connect(cx: &mut Context<Conn>, host: CString, socket: SocketInfo) -> Status {
    let addr = match socket {
        SocketInfo::Inet(sa) => Some(sa.ip()),
        _ => macro_str(&cx.macros, c"{client_addr}").and_then(|a| a.parse::<IpAddr>().ok()),
    };
    let name = host
        .to_str()
        .ok()
        .filter(|h| !h.is_empty() && *h != "unknown" && !h.starts_with('['))
        .map(str::to_owned);
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let verdict = conn.session.connect(ClientInfo { addr, name }).await;
    conn.answer(&mut cx.reply, verdict, ProtoOpts::NOREPLY_CONNECT)
}

async fn helo(cx: &mut Context<Conn>, name: CString) -> Status {
    let tls = macro_str(&cx.macros, c"{tls_version}").map(|version| TlsInfo {
        version,
        cipher: macro_str(&cx.macros, c"{cipher}").unwrap_or_default(),
        cert_subject: macro_str(&cx.macros, c"{cert_subject}"),
    });
    with_session!(cx, |conn| {
        if let Some(tls) = tls {
            conn.session.tls_established(tls);
        }
        conn.session.helo(&name.to_string_lossy()).await
    })
}

async fn mail(cx: &mut Context<Conn>, args: Vec<CString>) -> Status {
    let sender = first_arg(&args);
    let auth = macro_str(&cx.macros, c"{auth_authen}");
    let queue_id = macro_str(&cx.macros, c"i");
    with_session!(cx, |conn| {
        if let Some(user) = auth {
            conn.session.authenticated(&user);
        }
        conn.begin_message();
        let verdict = conn.session.mail(&sender).await;
        if let Some(id) = queue_id {
            conn.session.set_queue_id(&id);
        }
        verdict
    })
}

async fn rcpt(cx: &mut Context<Conn>, args: Vec<CString>) -> Status {
    let recipient = first_arg(&args);
    // With SMFIP_RCPT_REJ, Postfix also reports recipients it refused itself: mailer "error",
    // the enhanced status code in {rcpt_host} and the reply text in {rcpt_addr}.
    if macro_str(&cx.macros, c"{rcpt_mailer}").as_deref() == Some("error") {
        let enhanced = macro_str(&cx.macros, c"{rcpt_host}").unwrap_or_default();
        let text = macro_str(&cx.macros, c"{rcpt_addr}").unwrap_or_default();
        if let Some(conn) = cx.data.as_mut() {
            conn.session.rcpt_refused_by_mta(&enhanced, &text).await;
            conn.session
                .recipient_refused(&recipient, mta_reply(&enhanced, &text), RefusedBy::Mta);
        }
        return Status::Continue;
    }
    with_session!(cx, |conn| conn.session.rcpt(&recipient).await)
}

/// The MTA's refusal of a recipient as the client heard it, from its enhanced status code
/// (`{rcpt_host}`) and text (`{rcpt_addr}`): Postfix gives no reply code, so 450 or 550 by
/// the status class.
fn mta_reply(enhanced: &str, text: &str) -> SmtpReply {
    let code = if enhanced.starts_with('4') { 450 } else { 550 };
    SmtpReply::from_wire(code, format!("{enhanced} {text}").trim())
}

async fn data(cx: &mut Context<Conn>) -> Status {
    let queue_id = macro_str(&cx.macros, c"i");
    with_session!(cx, |conn| {
        if let Some(id) = queue_id {
            conn.session.set_queue_id(&id);
        }
        let verdict = conn.session.data().await;
        conn.end_if_refused(&verdict);
        verdict
    })
}

async fn header(cx: &mut Context<Conn>, name: CString, value: CString) -> Status {
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let line = header_line(name.as_bytes(), value.as_bytes(), conn.leading_space);
    let verdict = conn.session.message_data(&line).await;
    conn.answer(&mut cx.reply, verdict, ProtoOpts::NOREPLY_HEADER)
}

async fn eoh(cx: &mut Context<Conn>) -> Status {
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let verdict = conn.session.message_data(b"\r\n").await;
    conn.answer(&mut cx.reply, verdict, ProtoOpts::NOREPLY_EOH)
}

async fn body(cx: &mut Context<Conn>, chunk: Bytes) -> Status {
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let verdict = conn.session.message_data(&chunk).await;
    conn.answer(&mut cx.reply, verdict, ProtoOpts::NOREPLY_BODY)
}

async fn eom(cx: &mut EomContext<Conn>) -> Status {
    let queue_id = macro_str(&cx.macros, c"i");
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    if let Some(id) = queue_id {
        conn.session.set_queue_id(&id);
    }
    let outcome = conn.session.end_of_message().await;
    conn.end_message();
    if !outcome.envelope.is_empty() && !conn.granted.contains(ENVELOPE_ACTIONS) {
        warn!(
            session = conn.session.id(),
            granted_actions = conn.granted.bits(),
            "address transformation needs the MTA to let milters change the sender and recipients (SMFIF_CHGFROM, SMFIF_ADDRCPT, SMFIF_DELRCPT: Postfix 2.6 or later, Sendmail 8.14 or later); the scan failure action applies"
        );
        let verdict = conn.session.policy().scan_failure_action.verdict();
        return answer(&mut cx.reply, verdict);
    }
    let edited = async {
        apply_envelope(&cx.actions, &outcome.envelope).await?;
        apply_edits(&cx.actions, &outcome.edits, conn.leading_space).await
    };
    let verdict = match edited.await {
        Ok(()) => outcome.verdict,
        Err(e) => {
            warn!(error = %e, "cannot send message edits to the MTA");
            conn.session.policy().scan_failure_action.verdict()
        }
    };
    answer(&mut cx.reply, verdict)
}

async fn abort(cx: &mut Context<Conn>) -> Status {
    if let Some(conn) = cx.data.as_mut() {
        conn.session.reset();
        conn.end_message();
    }
    Status::Continue
}

async fn close(cx: &mut Context<Conn>) -> Status {
    if let Some(conn) = cx.data.as_mut() {
        if conn.in_message {
            warn!(
                "MTA closed the milter connection in the middle of a message; the MTA decides its fate (milter_default_action)"
            );
        }
        conn.session.close();
        conn.end_message();
    }
    Status::Continue
}

async fn unknown(cx: &mut Context<Conn>, command: CString) -> Status {
    with_session!(cx, |conn| conn
        .session
        .unknown_command(&command.to_string_lossy())
        .await)
}

/// Translates a verdict into a milter status and reply.
fn answer(reply: &mut MilterReply, verdict: Verdict) -> Status {
    let status = match &verdict {
        Verdict::Continue => return Status::Continue,
        Verdict::Discard => return Status::Discard,
        Verdict::Reject(_) => Status::Reject,
        // Postfix and Sendmail end the SMTP session after a 421 reply from a milter.
        Verdict::Tempfail(_) | Verdict::Drop(_) => Status::Tempfail,
    };
    let r = verdict.reply().expect("refusing verdicts carry a reply");
    let text = (!r.text().is_empty()).then_some(r.text());
    if let Err(e) = reply.set_error_reply(&r.code().to_string(), r.enhanced(), text) {
        // Replies are validated when the policy is compiled, so this is a bug; the MTA then
        // uses its default reply for the status.
        warn!(reply = %r, error = %e, "reply refused by the milter library");
    }
    status
}

/// Sends the engine's edits to the MTA. A header value's folds (CRLF and white space) go as
/// the MTA hands them over itself, LF and the white space; no other CR or LF is passed. With
/// SMFIP_HDR_LEADSPC negotiated the MTA takes values verbatim, so they get their leading space
/// here (`Name: value`, not `Name:value`).
async fn apply_edits(
    actions: &impl ContextActions,
    edits: &Edits,
    leading_space: bool,
) -> Result<(), indymilter::ActionError> {
    let value = |v: &str| {
        let v = milter_value(v);
        if leading_space { format!(" {v}") } else { v }
    };
    for edit in &edits.headers {
        match edit {
            HeaderEdit::Add { name, value: v } => {
                actions.add_header(name.as_str(), value(v)).await?
            }
            HeaderEdit::Insert {
                index,
                name,
                value: v,
            } => {
                let index = i32::try_from(*index).unwrap_or(i32::MAX);
                actions
                    .insert_header(index, name.as_str(), value(v))
                    .await?
            }
            HeaderEdit::Change {
                name,
                index,
                value: v,
            } => {
                let index = i32::try_from(*index).unwrap_or(i32::MAX);
                actions
                    .change_header(name.as_str(), index, v.as_deref().map(value))
                    .await?
            }
        }
    }
    if let Some(body) = &edits.body {
        actions.replace_body(&crlf_only(body)).await?;
    }
    Ok(())
}

/// Sends the envelope changes: the address transformation's new sender, each rewritten
/// recipient removed and its new address added, and the recipients Postern delivered itself
/// removed.
async fn apply_envelope(
    actions: &impl ContextActions,
    envelope: &EnvelopeEdits,
) -> Result<(), indymilter::ActionError> {
    let bracketed = |a: &str| format!("<{}>", one_line(a.trim_matches(['<', '>'])));
    if let Some(sender) = &envelope.sender {
        actions
            .change_sender(bracketed(sender), None::<CString>)
            .await?;
    }
    for (from, to) in &envelope.recipients {
        actions.delete_recipient(bracketed(from)).await?;
        actions.add_recipient(bracketed(to)).await?;
    }
    for gone in &envelope.removed {
        actions.delete_recipient(bracketed(gone)).await?;
    }
    Ok(())
}

/// `body` with every bare CR or LF made CRLF, so that no bare line end (which an MTA or
/// the next hop could read as the end of the message) reaches the MTA through a milter edit
/// either; borrowed when there is none. One pass.
fn crlf_only(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| match body[i] {
        b'\r' => body.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || body[i - 1] != b'\r',
        _ => false,
    };
    if !memchr::memchr2_iter(b'\r', b'\n', body).any(bare) {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            b'\r' if body.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 2;
                continue;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn one_line(value: &str) -> String {
    value.replace(['\r', '\n'], " ")
}

/// A header value as a milter hands it to the MTA: each fold (CRLF or LF, then a space or tab)
/// as LF and that white space; any other CR or LF a space, so that no edit starts a field.
fn milter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' if matches!(chars.peek(), Some(' ' | '\t')) => out.push('\n'),
            '\r' | '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Rebuilds one header field as it was on the wire: `Name: value` with CRLF line ends (the MTA
/// hands folded values over with bare LF).
/// One header field as the engine reads it, from the name and value the MTA hands over
/// (Postfix folds with a bare LF): always exactly one field, ending with CRLF, its folds CRLF
/// followed by a space or tab, no bare CR or LF.
pub fn header_line(name: &[u8], value: &[u8], leading_space: bool) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.len() + value.len() + 4);
    // A name is printable and has no colon; anything else would make another field.
    line.extend(name.iter().map(|&b| match b {
        b':' => b'-',
        33..=126 => b,
        _ => b'-',
    }));
    line.push(b':');
    if !leading_space {
        line.push(b' ');
    }
    let mut i = 0;
    while i < value.len() {
        match value[i] {
            // CRLF or a bare LF: a fold, so CRLF and at least one space or tab after it.
            b'\r' if value.get(i + 1) == Some(&b'\n') => {}
            b'\n' => {
                line.extend_from_slice(b"\r\n");
                if !matches!(value.get(i + 1), Some(b' ' | b'\t')) {
                    line.push(b' ');
                }
            }
            // A bare CR is no line end.
            b'\r' => line.push(b' '),
            b => line.push(b),
        }
        i += 1;
    }
    line.extend_from_slice(b"\r\n");
    line
}

fn macro_str(macros: &Macros, name: &CStr) -> Option<String> {
    macros
        .get(name)
        .map(|v| v.to_string_lossy().into_owned())
        .filter(|v| !v.is_empty())
}

fn first_arg(args: &[CString]) -> String {
    let arg = args
        .first()
        .map(|a| a.to_string_lossy())
        .unwrap_or_default();
    arg.trim_start_matches('<').trim_end_matches('>').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_body_has_no_bare_line_ends() {
        assert!(matches!(
            crlf_only(b"a\r\nb\r\n"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(
            crlf_only(b"a\rb\nc\r\n\n\r").as_ref(),
            b"a\r\nb\r\nc\r\n\r\n\r\n"
        );
        assert_eq!(crlf_only(b"\n").as_ref(), b"\r\n");
    }

    #[test]
    fn header_lines_are_rebuilt_with_crlf() {
        assert_eq!(header_line(b"Subject", b" hi", true), b"Subject: hi\r\n");
        assert_eq!(header_line(b"Subject", b"hi", false), b"Subject: hi\r\n");
        assert_eq!(
            header_line(b"To", b" a,\n\tb", true),
            b"To: a,\r\n\tb\r\n".to_vec()
        );
        assert_eq!(
            header_line(b"To", b" a,\r\n b", true),
            b"To: a,\r\n b\r\n".to_vec()
        );
    }

    #[test]
    fn header_values_keep_their_folds_and_nothing_else() {
        assert_eq!(milter_value("a\r\n b\r\n\tc"), "a\n b\n\tc");
        assert_eq!(milter_value("a\r\nX-Injected: 1"), "a X-Injected: 1");
        assert_eq!(milter_value("a\rb\nc"), "a b c");
        assert_eq!(milter_value("a\n b"), "a\n b");
    }

    #[test]
    fn sender_brackets_are_stripped() {
        assert_eq!(
            first_arg(&[CString::new("<a@b.example>").unwrap()]),
            "a@b.example"
        );
        assert_eq!(first_arg(&[CString::new("<>").unwrap()]), "");
        assert_eq!(first_arg(&[]), "");
    }
}
