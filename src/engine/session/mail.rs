//! MAIL FROM: a new transaction, inbound mandatory TLS and SPF.

use super::*;

impl Session {
    pub(super) async fn judge_mail(&mut self, sender: &EnvelopeAddress) -> Verdict {
        self.end_transaction();
        if let Some(v) = self.held_at(Stage::Mail) {
            return v;
        }
        let mut tx = Transaction::new(sender.clone());
        let policy = self.policy.clone();
        // Inbound mandatory TLS, from the client's profile or else the sender domain's.
        let tls_profile = self
            .profile
            .or_else(|| policy.profiles.for_sender(sender))
            .map(|i| policy.profiles.get(i));
        if let Some(p) = tls_profile
            && p.require_tls
            && self.tls.is_none()
        {
            self.note(Note::TlsRequired {
                by: "connection profile",
                recipient: None,
            });
            let verdict = Verdict::refuse(
                self.with_help(
                    SmtpReply::new(530, Some("5.7.0"), "Must issue a STARTTLS command first")
                        .expect("static reply is valid"),
                ),
            );
            self.refused(CheckId::ConnectionProfile, &verdict, SmtpStage::Mail, None);
            return verdict;
        }
        if let Some(reply) = policy
            .encryption_rules
            .check_mail(sender, self.tls.is_some())
        {
            self.note(Note::TlsRequired {
                by: "encryption rule",
                recipient: None,
            });
            let verdict = Verdict::refuse(self.with_help(reply));
            self.refused(CheckId::EncryptionRule, &verdict, SmtpStage::Mail, None);
            return verdict;
        }
        if let Some(verdict) = self.spoofing(
            Spoofed::EnvelopeSender,
            sender.domain(),
            &mut tx,
            SmtpStage::Mail,
        ) {
            return verdict;
        }
        if let (Some(spf), Some(ip)) = (&policy.spf, self.client.addr)
            && self.authenticated.is_none()
            && !policy.relay.is_relay_source(ip)
            && self.client_profile().is_none_or(|p| p.spf)
        {
            let helo = self.helo.clone().unwrap_or_default();
            let started = Instant::now();
            let resolver = self.shared.ports.resolver.as_ref();
            let checked = self
                .guarded(ScanStep::Mail, async {
                    let outcome = spf
                        .check(resolver, &policy.hostname, ip, &helo, sender)
                        .await;
                    let verdict = spf.verdict(ip, &outcome);
                    let detail = format!(
                        "{} for {} {:?}",
                        outcome.name(),
                        outcome.identity,
                        outcome.checked.escape_debug().to_string()
                    );
                    self.checked(CheckId::Spf, verdict.as_ref(), detail, started);
                    tx.spf = Some(outcome);
                    // With organizations of their own SPF actions, each recipient is judged
                    // by its organization's, at RCPT.
                    if policy.organizations.judge_spf() {
                        return Ok(None);
                    }
                    Ok(verdict.map(|v| (CheckId::Spf, v)))
                })
                .await;
            if let Some((check, verdict)) = checked {
                self.refused(check, &verdict, SmtpStage::Mail, None);
                return verdict;
            }
        }
        self.tx = Some(tx);
        Verdict::Continue
    }
}
