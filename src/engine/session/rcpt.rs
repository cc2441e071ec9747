//! RCPT TO: relay restriction, encryption rules and dictionary-attack hiding.

use super::*;
use crate::engine::checks::outbound_tls::TlsRequirement;
use crate::engine::organizations::RblHitAction;

impl Session {
    pub(super) async fn judge_rcpt(&mut self, recipient: &EnvelopeAddress) -> Verdict {
        if self.is_exempt_postmaster(recipient) {
            self.note(Note::PostmasterExempt { recipient });
        } else if let Some(v) = self.held_at(Stage::Rcpt) {
            self.rcpt_refusal = self.held.as_ref().map(|h| h.check);
            return v;
        }
        if let Some(max) = self.policy.exploit_detection.max_failed_addresses
            && self.failed_recipients >= max
        {
            // Temporary: a list server with a few stale addresses retries, and its valid
            // recipients are delivered then; a prober learns nothing either way.
            let refusal = self.last_refusal.clone().unwrap_or_else(default_refusal);
            self.failed_recipients += 1;
            let refusal = match self.policy.exploit_detection.hiding_reply {
                HidingReply::Temporary => refusal.temporary(),
                HidingReply::Same => refusal,
            };
            self.rcpt_refusal = Some(CheckId::AddressHiding);
            return Verdict::refuse(refusal.reply_for(recipient));
        }
        if !self.may_relay()
            && let Some(reply) = self.policy.relay.check(recipient)
        {
            self.note(Note::RelayDenied { recipient });
            let reply = self.with_help(reply);
            self.recipient_failed(RecipientRefusal::from_reply(&reply))
                .await;
            let verdict = Verdict::refuse(reply);
            self.refused(CheckId::RelayRestriction, &verdict, SmtpStage::Rcpt, None);
            self.rcpt_refusal = Some(CheckId::RelayRestriction);
            return verdict;
        }
        let sender = self.tx.as_ref().map_or("", |tx| tx.sender.as_str());
        if let Some(reply) =
            self.policy
                .encryption_rules
                .check(sender, recipient, self.tls.is_some())
        {
            self.note(Note::TlsRequired {
                by: "encryption rule",
                recipient: Some(recipient),
            });
            let verdict = Verdict::refuse(self.with_help(reply));
            self.refused(CheckId::EncryptionRule, &verdict, SmtpStage::Rcpt, None);
            self.rcpt_refusal = Some(CheckId::EncryptionRule);
            return verdict;
        }
        if let Some(verdict) = self.rbl_for_recipient(recipient) {
            self.refused(CheckId::Rbl, &verdict, SmtpStage::Rcpt, None);
            self.rcpt_refusal = Some(CheckId::Rbl);
            return verdict;
        }
        if let Some(verdict) = self.spf_for_recipient(recipient) {
            self.refused(CheckId::Spf, &verdict, SmtpStage::Rcpt, None);
            self.rcpt_refusal = Some(CheckId::Spf);
            return verdict;
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(recipient.clone());
        }
        Verdict::Continue
    }

    /// With organizations of their own DNSBL hit actions: what the client's listing does to
    /// `recipient`, by its organization's action or else `[rbl] hit_action`'s.
    fn rbl_for_recipient(&self, recipient: &EnvelopeAddress) -> Option<Verdict> {
        let hit = self.rbl_hit.as_ref()?;
        if self.is_exempt_postmaster(recipient) {
            return None;
        }
        let orgs = &self.policy.organizations;
        let action = self
            .tx
            .as_ref()
            .and_then(|tx| self.recipient_organization(tx, recipient))
            .and_then(|id| orgs.list[id].rbl_hit_action);
        let reply = hit.reply()?;
        let as_given = |code, enhanced| {
            SmtpReply::new(code, Some(enhanced), reply.text())
                .ok()
                .map(Verdict::refuse)
        };
        match action {
            None => Some(hit.clone()),
            Some(RblHitAction::Accept) => None,
            Some(RblHitAction::Delay) => as_given(421, "4.7.1"),
            Some(RblHitAction::Reject) => as_given(554, "5.7.1"),
        }
    }

    /// With organizations of their own SPF actions: what the SPF result of MAIL does to
    /// `recipient`, by its organization's actions or else `[spf]`'s (a postmaster exempt from
    /// refusals is exempt here too).
    fn spf_for_recipient(&self, recipient: &EnvelopeAddress) -> Option<Verdict> {
        let orgs = &self.policy.organizations;
        if !orgs.judge_spf() || self.is_exempt_postmaster(recipient) {
            return None;
        }
        let (Some(spf), Some(ip), Some(tx)) = (&self.policy.spf, self.client.addr, &self.tx) else {
            return None;
        };
        let outcome = tx.spf.as_ref()?;
        let org = self
            .recipient_organization(tx, recipient)
            .map(|id| &orgs.list[id]);
        let actions = (
            org.and_then(|o| o.spf_fail_action)
                .unwrap_or(spf.fail_action),
            org.and_then(|o| o.spf_softfail_action)
                .unwrap_or(spf.softfail_action),
        );
        spf.verdict_with(ip, outcome, actions)
    }

    /// What the connection that relays `recipient` must have negotiated, if anything: the
    /// outbound TLS policy covering it (by its domain or the client's connection profile), else
    /// TLS with a validated certificate when its encryption rule requires it. For a door that
    /// relays.
    pub fn recipient_tls(&self, recipient: &EnvelopeAddress) -> Option<TlsRequirement> {
        let profile = self.client_profile().map(|p| p.name.as_str());
        if let Some(policy) = self.policy.outbound_tls.for_recipient(recipient, profile) {
            return Some(policy);
        }
        let sender = self.tx.as_ref().map_or("", |tx| tx.sender.as_str());
        self.policy
            .encryption_rules
            .recipient_needs_tls(sender, recipient, self.tls.is_some())
            .then(|| TlsRequirement::encrypted("encryption rule"))
    }

    /// Whether this client may send to any domain: by its connection profile's relay control,
    /// else by the global relay restriction.
    pub(super) fn may_relay(&self) -> bool {
        let relay = &self.policy.relay;
        let authenticated = self.authenticated.is_some();
        match self.client_profile().map(|p| p.relay_control) {
            Some(RelayControl::Full) => true,
            Some(RelayControl::RestrictedExternal | RelayControl::RestrictedInternal) => {
                authenticated && relay.allow_relay_if_authenticated
            }
            _ => !self.policy.restrict_relaying || relay.may_relay(self.client.addr, authenticated),
        }
    }

    /// A recipient was refused after the policy let it through (the door's relay target or
    /// the MTA refused it, or no relay target could take it), with the reply the client heard:
    /// it no longer counts for the message, and is reported with the transaction.
    pub fn recipient_refused(&mut self, recipient: &str, reply: SmtpReply, by: RefusedBy) {
        if let Some(tx) = self.tx.as_mut() {
            if let Some(at) = tx.recipients.iter().rposition(|r| r == recipient) {
                tx.recipients.remove(at);
            }
            tx.refused.push(RefusedRecipient {
                address: recipient.to_owned(),
                reply,
                by,
            });
        }
    }

    /// The MTA refused a recipient itself (reported by the milter door: Postfix's
    /// `{rcpt_mailer}` is `error`), with this enhanced status code and text.
    pub async fn rcpt_refused_by_mta(&mut self, enhanced: &str, text: &str) {
        self.recipient_failed(RecipientRefusal::from_mta(enhanced, text))
            .await;
    }

    pub(super) async fn recipient_failed(&mut self, refusal: RecipientRefusal) {
        self.failed_recipients += 1;
        self.last_refusal = Some(refusal);
        self.learn(Behaviour::RefusedRecipient).await;
        if self.policy.exploit_detection.max_failed_addresses == Some(self.failed_recipients) {
            self.learn(Behaviour::DictionaryAttack).await;
            self.note(Note::DictionaryAttackSuspected {
                client: self.client.addr,
                failed_recipients: self.failed_recipients,
            });
        }
    }

    /// Whether `recipient` is the postmaster, whom a DNSBL or reputation refusal held until
    /// RCPT or later does not keep mail from (`postmaster_exempt`, RFC 5321 4.5.1): `postmaster`
    /// or `postmaster@` a local domain, any case.
    pub(super) fn is_exempt_postmaster(&self, recipient: &EnvelopeAddress) -> bool {
        self.policy.answers.postmaster_exempt
            && self
                .held
                .as_ref()
                .is_some_and(|h| matches!(h.check, CheckId::Rbl | CheckId::Reputation))
            && recipient.local().eq_ignore_ascii_case("postmaster")
            && (recipient.domain().is_empty() || self.policy.relay.is_local(recipient.domain()))
    }

    /// Every one of `recipients` is the exempt postmaster.
    pub(super) fn postmaster_only(&self, recipients: &[EnvelopeAddress]) -> bool {
        !recipients.is_empty() && recipients.iter().all(|r| self.is_exempt_postmaster(r))
    }
}
