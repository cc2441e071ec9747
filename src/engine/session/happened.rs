//! What a session's events said so far that its reports carry: the rules that acted, a
//! diversion, a dry run's would-be refusals, the last refusal. The session is the one owner of
//! these facts; it notes each event as it emits it, and hands them over with the report that
//! tells them, so that no sink keeps a copy of session state.

use super::super::events::{ActedRule, Event, Refusal, SmtpStage, WouldRefusal};
use super::super::reply::SmtpReply;

/// The facts noted since the last report that told them.
#[derive(Debug, Default)]
pub(super) struct Happened {
    /// Content rules that acted on the message in progress.
    pub rules: Vec<ActedRule>,
    /// The relay target a divert (or an encryption rule's route) took the message in
    /// progress to, and its reply.
    pub diverted: Option<(String, SmtpReply)>,
    /// A dry run: refusals in the transaction in progress (MAIL, RCPT, DATA).
    pub would: Vec<WouldRefusal>,
    /// A dry run: refusals of the connection (connect, HELO, unknown commands).
    pub would_connection: Vec<WouldRefusal>,
    /// The last refusal answered.
    pub refusal: Option<Refusal>,
    /// A message or transaction report was emitted.
    pub reported: bool,
}

impl Happened {
    /// Notes what `event` tells that a later report carries.
    pub fn note(&mut self, event: &Event<'_>) {
        match event {
            Event::RuleActed {
                ruleset,
                rule,
                action,
                dry_run,
                ..
            } => self.rules.push(ActedRule {
                ruleset: (*ruleset).to_owned(),
                rule: (*rule).to_owned(),
                action,
                dry_run: *dry_run,
            }),
            Event::Diverted {
                relay_target,
                reply,
                ..
            } => self.diverted = Some(((*relay_target).to_owned(), (*reply).clone())),
            Event::WouldRefuse {
                stage,
                verdict,
                recipient,
                ..
            } => {
                let would = WouldRefusal {
                    stage: *stage,
                    verdict: (*verdict).clone(),
                    recipient: recipient.map(str::to_owned),
                };
                match stage {
                    // The message report tells it by its verdict.
                    SmtpStage::EndOfMessage => {}
                    s if s.is_connection() && recipient.is_none() => {
                        self.would_connection.push(would)
                    }
                    _ => self.would.push(would),
                }
            }
            Event::Refused {
                check,
                verdict,
                stage,
                held_until: None,
                dry_run: false,
                ..
            } => {
                self.refusal = Some(Refusal {
                    stage: *stage,
                    check: *check,
                    verdict: (*verdict).clone(),
                })
            }
            _ => {}
        }
    }
}
