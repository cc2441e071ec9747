//! The stages as the doors call them. Each asks the policy (the `judge_*` methods of the
//! stage files); in a dry run (`[scan] dry_run`, `--dry-run`) a refusal is reported as what
//! would have been answered and the conversation goes on as if it had passed, with the
//! session's facts kept as a pass would keep them.

use super::*;
use crate::engine::address::{AddressError, EnvelopeAddress};

impl Session {
    /// The client connected.
    pub async fn connect(&mut self, client: ClientInfo) -> Verdict {
        let verdict = self.judge_connect(client).await;
        self.answered(self.unless_dry_run(SmtpStage::Connect, verdict))
    }

    /// The client said HELO or EHLO. The name counts only when the greeting is accepted.
    pub async fn helo(&mut self, name: &str) -> Verdict {
        let verdict = self.judge_helo(name).await;
        let verdict = self.unless_dry_run(SmtpStage::Helo, verdict);
        if verdict == Verdict::Continue {
            self.helo.get_or_insert_with(|| name.to_owned());
        }
        self.answered(verdict)
    }

    /// STARTTLS, before the handshake: a refusal held until this stage (delayed rejection
    /// state `starttls`) is answered instead of 220.
    pub fn starttls(&mut self) -> Verdict {
        let verdict = self.held_at(Stage::StartTls).unwrap_or(Verdict::Continue);
        self.answered(self.unless_dry_run(SmtpStage::StartTls, verdict))
    }

    /// MAIL FROM: starts a transaction (ending any earlier one).
    /// The address is read here, once: past this point it is an [`EnvelopeAddress`].
    pub async fn mail(&mut self, sender: &str) -> Verdict {
        let sender = match EnvelopeAddress::parse(sender) {
            Ok(sender) => sender,
            Err(e) => {
                let refusal = syntax_refusal(e, "sender", "5.1.7");
                self.end_transaction();
                self.refused(CheckId::AddressSyntax, &refusal, SmtpStage::Mail, None);
                return refusal;
            }
        };
        let verdict = self.judge_mail(&sender).await;
        let verdict = self.unless_dry_run(SmtpStage::Mail, verdict);
        if verdict == Verdict::Continue && self.tx.is_none() {
            self.tx = Some(Transaction::new(sender));
        }
        self.answered(verdict)
    }

    /// RCPT TO.
    /// RCPT TO. The address is read here, once, as at MAIL.
    pub async fn rcpt(&mut self, given: &str) -> Verdict {
        let before = self.recipients().len();
        self.rcpt_refusal = None;
        let recipient = EnvelopeAddress::parse(given);
        let verdict = match &recipient {
            Err(e) => {
                let refusal = syntax_refusal(*e, "recipient", "5.1.3");
                self.refused(CheckId::AddressSyntax, &refusal, SmtpStage::Rcpt, None);
                self.rcpt_refusal = Some(CheckId::AddressSyntax);
                refusal
            }
            Ok(recipient) => {
                let verdict = self.judge_rcpt(recipient).await;
                self.unless_dry_run_for(SmtpStage::Rcpt, verdict, Some(recipient))
            }
        };
        if verdict == Verdict::Continue
            && self.recipients().len() == before
            && let (Some(tx), Ok(recipient)) = (self.tx.as_mut(), &recipient)
        {
            tx.recipients.push(recipient.clone());
        }
        if verdict == Verdict::Continue && self.recipients().len() > before {
            self.place_recipient();
        }
        if let (Some(reply), Some(tx)) = (verdict.reply(), self.tx.as_mut()) {
            tx.refused.push(RefusedRecipient {
                // Refused for its syntax, it is kept as given (sinks escape it).
                address: recipient.map_or_else(|_| given.to_owned(), |r| r.as_str().to_owned()),
                reply: reply.clone(),
                by: RefusedBy::Policy(self.rcpt_refusal.take()),
            });
        }
        self.answered(verdict)
    }

    /// DATA.
    pub async fn data(&mut self) -> Verdict {
        let verdict = self.judge_data().await;
        self.answered(self.unless_dry_run(SmtpStage::Data, verdict))
    }

    /// Raw message bytes (header and body as on the wire, CRLF line ends), in order. A
    /// refusal here (too big, cannot be held) is repeated for every later call and at end of
    /// message, so a door that cannot answer every call still delivers it. In a dry run the
    /// refusal is reported once; what could not be held stays unheld.
    pub async fn message_data(&mut self, bytes: &[u8]) -> Verdict {
        let already = self.tx.as_ref().is_some_and(|tx| tx.failure.is_some());
        let verdict = self.judge_message_data(bytes).await;
        if self.policy.dry_run && already {
            return Verdict::Continue;
        }
        self.answered(self.unless_dry_run(SmtpStage::Data, verdict))
    }

    /// A command the server does not know. Counted per connection; at the limit the client
    /// is dropped.
    pub async fn unknown_command(&mut self, command: &str) -> Verdict {
        let verdict = self.judge_unknown_command(command).await;
        self.answered(self.unless_dry_run(SmtpStage::UnknownCommand, verdict))
    }

    /// The verdict as the client hears it: with `[connection] report_rejections = false`, a
    /// policy refusal says only that it is one (the code and enhanced code stay, and the
    /// postmaster address when one is set); the reason is in the log and tracking, which were
    /// told before. Refusals about the protocol itself (syntax, a message too big) keep
    /// their text.
    pub(super) fn answered(&self, verdict: Verdict) -> Verdict {
        let answers = &self.policy.answers;
        if answers.report_rejections {
            return verdict;
        }
        verdict.map_reply(|reply| generic_refusal(reply, answers.postmaster.as_deref()))
    }

    /// `verdict`, or in a dry run, when it refuses, a pass (the refusal reported as what would
    /// have been answered).
    pub(super) fn unless_dry_run(&self, stage: SmtpStage, verdict: Verdict) -> Verdict {
        self.unless_dry_run_for(stage, verdict, None)
    }

    /// [`Session::unless_dry_run`] for a refusal that concerns one recipient.
    fn unless_dry_run_for(
        &self,
        stage: SmtpStage,
        verdict: Verdict,
        recipient: Option<&str>,
    ) -> Verdict {
        if !self.policy.dry_run || verdict == Verdict::Continue {
            return verdict;
        }
        self.emit(&Event::WouldRefuse {
            session: self.id,
            stage,
            verdict: &verdict,
            recipient,
        });
        Verdict::Continue
    }
}

/// A refusal's generic text (see [`Session::answered`]): protocol refusals (enhanced codes
/// X.5.x, X.1.3, X.1.7, X.3.4) kept as they are.
fn generic_refusal(reply: SmtpReply, postmaster: Option<&str>) -> SmtpReply {
    let enhanced = reply.enhanced().unwrap_or("");
    let detail = enhanced.split_once('.').map_or("", |(_, rest)| rest);
    if detail.starts_with("5.") || matches!(detail, "1.3" | "1.7" | "3.4") {
        return reply;
    }
    let what = match reply.code() {
        421 => "Service not available, closing the connection",
        c if c >= 500 => "Refused by this server's policy",
        _ => "Deferred by this server's policy, try again later",
    };
    let text = match postmaster {
        Some(address) => format!("{what}; contact <{address}>"),
        None => what.to_owned(),
    };
    SmtpReply::new(reply.code(), reply.enhanced(), &text).unwrap_or(reply)
}

/// The refusal of an envelope address holding a control character, in a dry run too: it is
/// not a policy decision but an address no MTA may pass on (the proxy's parser refuses it
/// already; behind an MTA it is defence in depth).
fn syntax_refusal(error: AddressError, what: &str, enhanced: &str) -> Verdict {
    let text = format!("Bad {what} address syntax: {error}; send the address without it");
    Verdict::refuse(SmtpReply::new(501, Some(enhanced), &text).expect("printable reply"))
}
