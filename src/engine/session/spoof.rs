//! Spoof detection (`spoof_detection`): a client from outside claiming a local domain in its
//! envelope sender (judged at MAIL) or its From (at the end of the message) is refused or
//! tagged; what is tagged gets its header field at the end of the message.

use super::*;
use crate::engine::verdict::HeaderEdit;

impl Session {
    /// What spoof detection does for this client: nothing for mail that goes outbound (an
    /// authenticated or internal client), else its profile's setting or `[relay]`'s.
    pub(super) fn spoof_action(&self) -> SpoofAction {
        if self.direction() != crate::engine::address_transformation::Direction::Inbound {
            return SpoofAction::Off;
        }
        self.client_profile()
            .and_then(|p| p.spoof_detection)
            .unwrap_or(self.policy.spoof_detection)
    }

    /// What to do about `domain` claimed by `what` (the envelope sender, From): `None` when
    /// it is not a local domain or nothing is checked; else the refusal or, when tagging, `Ok`
    /// after noting it on `tx`.
    pub(super) fn spoofing(
        &self,
        what: Spoofed,
        domain: &str,
        tx: &mut Transaction,
        stage: SmtpStage,
    ) -> Option<Verdict> {
        let action = self.spoof_action();
        if action == SpoofAction::Off || domain.is_empty() || !self.policy.relay.is_local(domain) {
            return None;
        }
        if action == SpoofAction::Tag {
            tx.spoofed.push((what, domain.to_owned()));
            return None;
        }
        let verdict = Verdict::refuse(self.with_help(what.refusal(domain)));
        self.refused(CheckId::Spoof, &verdict, stage, None);
        Some(verdict)
    }

    /// At the end of the message: the refusal when its From claims a local domain from
    /// outside (`reject`), else the tag fields of every address that did (`tag`; the envelope
    /// sender's noted at MAIL).
    pub(super) async fn spoof_step(
        &self,
        tx: &mut Transaction,
    ) -> Result<Vec<HeaderEdit>, Verdict> {
        if self.spoof_action() == SpoofAction::Off {
            return Ok(Vec::new());
        }
        let from = match tx.message.as_mut() {
            Some(buffer) => match buffer.header_section().await {
                Ok(header) => first_header_field(&header, "From"),
                Err(_) => None,
            },
            None => None,
        };
        let domain = from.as_deref().and_then(super::outgoing::author_domain);
        if let Some(domain) = domain.map(str::to_owned)
            && let Some(verdict) =
                self.spoofing(Spoofed::From, &domain, tx, SmtpStage::EndOfMessage)
        {
            return Err(verdict);
        }
        Ok(tx
            .spoofed
            .iter()
            .map(|(what, domain)| HeaderEdit::Insert {
                index: 0,
                name: crate::engine::checks::spoof::TAG_FIELD.to_owned(),
                value: what.tag(domain),
            })
            .collect())
    }
}
