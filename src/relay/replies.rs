//! Replies read from relay targets, Postern's own replies about them, and the wire helpers
//! that send a command and read its answer.

use std::time::Duration;

use lettre::transport::smtp::response::Response;

use super::TargetError;
use crate::engine::SmtpReply;

/// A reply read from a relay target: each line of a multi-line reply joined by spaces,
/// cleaned for passing on to the client (`550 5.1.1 <x@example.org>: Recipient address
/// rejected`).
pub(super) fn reply_of(r: &Response) -> SmtpReply {
    let code: u16 = r.code().to_string().parse().unwrap_or(451);
    SmtpReply::from_wire(code, &r.message().collect::<Vec<_>>().join(" "))
}

/// The target's reply inside a lettre error, if the error is one.
pub(super) fn reply_in(e: &lettre::transport::smtp::Error) -> Option<SmtpReply> {
    let code: u16 = e.status()?.to_string().parse().ok()?;
    let text = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    Some(SmtpReply::from_wire(code, &text))
}

/// A reply of Postern's own about a target, for the client.
pub(super) fn own_reply(code: u16, enhanced: &str, text: &str) -> SmtpReply {
    SmtpReply::new(code, Some(enhanced), text).expect("static reply is valid")
}

/// Why a transaction that must be encrypted cannot go through a target: it did not negotiate
/// TLS (security `none`, or `auto` without STARTTLS offered).
pub(super) fn tls_required() -> SmtpReply {
    own_reply(
        451,
        "4.7.5",
        "Error: a recipient requires encryption and no relay target negotiated TLS with a valid certificate, try again later",
    )
}

/// Why a transaction cannot go through a target whose TLS does not meet a recipient's
/// requirement (`why`, also logged).
pub(super) fn tls_refusal(why: &str) -> SmtpReply {
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

pub(super) async fn command_reply(
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
pub(super) async fn next_reply(
    conn: &mut lettre::transport::smtp::client::AsyncSmtpConnection,
    verb: &str,
    timeout: Duration,
) -> Result<SmtpReply, TargetError> {
    answer_to(
        verb,
        tokio::time::timeout(timeout, conn.read_response()).await,
    )
}

pub(super) fn answer_to(
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
