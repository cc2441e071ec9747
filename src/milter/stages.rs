//! The indymilter callbacks: each stage a thin translation into the engine session, in the
//! session's span, answered as the engine decides.

use std::ffi::{CStr, CString};
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use indymilter::{
    Actions, Callbacks, Context, EomContext, Macros, NegotiateContext, ProtoOpts, SetErrorReply,
    SmtpReply as MilterReply, SocketInfo, Status,
};
use tracing::warn;

use super::edits::{apply_edits, apply_envelope, header_line};
use super::in_flight::InFlight;
use super::{
    ALWAYS_NOREPLY, ENVELOPE_ACTIONS, FIRST_REPLY_STAGE, MACROS, NOREPLY_STAGES, requested_options,
};
use crate::engine::events::RefusedBy;
use crate::engine::{ClientInfo, Engine, Session, SmtpReply, TlsInfo, Verdict};

/// What the door keeps per MTA connection.
pub(super) struct Conn {
    session: Session,
    in_flight: Arc<InFlight>,
    in_message: bool,
    /// The MTA sends header values with their leading space (SMFIP_HDR_LEADSPC), so the
    /// header can be rebuilt exactly as it came.
    leading_space: bool,
    /// Stages at which the MTA does not wait for an answer (see [`requested_options`]).
    noreply: ProtoOpts,
    /// A refusal reached at a stage the MTA did not wait for, answered at the next stage it
    /// waits for (end of message at the latest). The policy's [`Attention`] says it cannot
    /// happen; if it did, the refusal comes late rather than never.
    ///
    /// [`Attention`]: crate::engine::attention::Attention
    owed: Option<Verdict>,
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

    /// Answers a stage before the message, or stays silent when the MTA does not wait for an
    /// answer there (see [`requested_options`]: nothing is refused at connect, and the other no-reply
    /// stages are those where the policy refuses nothing).
    fn answer(&mut self, reply: &mut MilterReply, verdict: Verdict, stage: ProtoOpts) -> Status {
        let refuses = verdict.reply().is_some() || verdict == Verdict::Discard;
        if self.noreply.contains(stage) {
            if refuses && !ALWAYS_NOREPLY.contains(stage) && self.owed.is_none() {
                warn!(
                    stage = stage.bits(),
                    "a refusal was reached where the MTA was told no answer would come; it is given at the next stage the MTA waits for"
                );
                self.owed = Some(verdict);
            }
            return Status::Noreply;
        }
        let verdict = match self.owed.take() {
            Some(owed) if !refuses => owed,
            _ => verdict,
        };
        answer(reply, verdict)
    }

    /// Answers a stage within the message (header fields, end of header, body), or stays
    /// silent when the MTA does not wait for an answer there: the engine repeats a refusal
    /// reached inside the message at its end.
    fn answer_in_message(
        &mut self,
        reply: &mut MilterReply,
        verdict: Verdict,
        stage: ProtoOpts,
    ) -> Status {
        if self.noreply.contains(stage) {
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
pub(super) fn callbacks(engine: Arc<Engine>, in_flight: Arc<InFlight>) -> Callbacks<Conn> {
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
    // Negotiated per connection, from the policy this session is judged by: after a reload
    // the next connection asks for what the new policy needs.
    let session = engine.session(FIRST_REPLY_STAGE);
    let requested = requested_options(opts, &session.policy().attention(FIRST_REPLY_STAGE));
    cx.requested_opts |= requested;
    for (stage, names) in MACROS {
        cx.requested_macros
            .insert(*stage, CString::new(*names).expect("no NUL in macro list"));
    }
    cx.data = Some(Conn {
        span: tracing::info_span!("session", id = session.id()),
        session,
        in_flight,
        in_message: false,
        leading_space,
        noreply: requested & NOREPLY_STAGES,
        owed: None,
        granted,
    });
    Status::Continue
}

/// Runs a stage (`$stage`: its no-reply option) against the session, or continues when there
/// is no session (the MTA skipped negotiation, which indymilter does not allow, so this is
/// defensive only).
macro_rules! with_session {
    ($cx:expr, $stage:expr, |$conn:ident| $body:expr) => {{
        let Some($conn) = $cx.data.as_mut() else {
            return Status::Continue;
        };
        let verdict = $body;
        // A refusal ends the transaction in the engine; stop counting it as in flight.
        if !$conn.session.in_transaction() {
            $conn.end_message();
        }
        $conn.answer(&mut $cx.reply, verdict, $stage)
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
    with_session!(cx, ProtoOpts::NOREPLY_HELO, |conn| {
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
    with_session!(cx, ProtoOpts::NOREPLY_MAIL, |conn| {
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
    with_session!(cx, ProtoOpts::NOREPLY_RCPT, |conn| conn
        .session
        .rcpt(&recipient)
        .await)
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
    with_session!(cx, ProtoOpts::NOREPLY_DATA, |conn| {
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
    conn.answer_in_message(&mut cx.reply, verdict, ProtoOpts::NOREPLY_HEADER)
}

async fn eoh(cx: &mut Context<Conn>) -> Status {
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let verdict = conn.session.message_data(b"\r\n").await;
    conn.answer_in_message(&mut cx.reply, verdict, ProtoOpts::NOREPLY_EOH)
}

async fn body(cx: &mut Context<Conn>, chunk: Bytes) -> Status {
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    let verdict = conn.session.message_data(&chunk).await;
    conn.answer_in_message(&mut cx.reply, verdict, ProtoOpts::NOREPLY_BODY)
}

async fn eom(cx: &mut EomContext<Conn>) -> Status {
    let queue_id = macro_str(&cx.macros, c"i");
    let Some(conn) = cx.data.as_mut() else {
        return Status::Continue;
    };
    if let Some(id) = queue_id {
        conn.session.set_queue_id(&id);
    }
    if let Some(owed) = conn.owed.take() {
        conn.session.reset();
        conn.end_message();
        return answer(&mut cx.reply, owed);
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
        // A refusal owed to the transaction ends with it (one of the connection's own, held
        // from connect, the engine repeats at every later stage).
        conn.owed = None;
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
    with_session!(cx, ProtoOpts::NOREPLY_UNKNOWN, |conn| conn
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
    fn sender_brackets_are_stripped() {
        assert_eq!(
            first_arg(&[CString::new("<a@b.example>").unwrap()]),
            "a@b.example"
        );
        assert_eq!(first_arg(&[CString::new("<>").unwrap()]), "");
        assert_eq!(first_arg(&[]), "");
    }
}
