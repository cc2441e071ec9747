//! MAIL FROM: a new transaction, inbound mandatory TLS and SPF.

use super::*;

impl Session {
    /// MAIL FROM: starts a transaction (ending any earlier one).
    pub async fn mail(&mut self, sender: &str) -> Verdict {
        self.tx = None;
        if let Some(v) = self.held_at(Stage::Mail) {
            return v;
        }
        let mut tx = Transaction::new(sender);
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
            info!(session = self.id, check = "connection_profile", profile = %p.name, "TLS required, session is not encrypted");
            return Verdict::refuse(
                self.with_help(
                    SmtpReply::new(530, Some("5.7.0"), "Must issue a STARTTLS command first")
                        .expect("static reply is valid"),
                ),
            );
        }
        if let (Some(spf), Some(ip)) = (&policy.spf, self.client.addr)
            && self.authenticated.is_none()
            && !policy.relay.is_relay_source(ip)
            && self.client_profile().is_none_or(|p| p.spf)
        {
            let helo = self.helo.clone().unwrap_or_default();
            let started = Instant::now();
            let checked = guarded(&policy, "mail", async {
                let outcome = spf.check(&policy.hostname, ip, &helo, sender).await;
                info!(
                    session = self.id,
                    check = "spf",
                    identity = %outcome.identity,
                    checked = %outcome.checked.escape_debug(),
                    result = outcome.name(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "check"
                );
                let verdict = spf.verdict(ip, &outcome);
                tx.spf = Some(outcome);
                Ok(verdict.map(|v| ("spf", v)))
            })
            .await;
            if let Some((check, verdict)) = checked {
                info!(session = self.id, check, %verdict, stage = "mail", "refused");
                return verdict;
            }
        }
        self.tx = Some(tx);
        Verdict::Continue
    }
}
