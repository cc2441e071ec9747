//! CONNECT: the client is counted (DoS protection), matched to a connection profile and
//! judged by the connection-stage checks, in order; a refusal is held until the door can show it.

use super::*;

impl Session {
    /// The client connected.
    pub async fn connect(&mut self, client: ClientInfo) -> Verdict {
        self.client = client;
        info!(
            session = self.id,
            client_addr = ?self.client.addr,
            client_name = self.client.name.as_deref().unwrap_or("unknown"),
            "connect"
        );
        let policy = self.policy.clone();
        self.profile = policy
            .profiles
            .for_client(self.client.addr, self.client.name.as_deref());
        if let Some(p) = self.client_profile() {
            info!(session = self.id, profile = %p.name, "connection profile");
        }
        // Counted first: a flooding client costs no lookups.
        let started = Instant::now();
        let checked = match self.count_connection() {
            Some(finding) => Some(finding),
            None => guarded(&policy, "connect", self.connection_checks()).await,
        };
        let result = checked.as_ref().map_or("pass".to_owned(), |(check, v)| {
            format!("{check}={}", v.name())
        });
        self.checks.push(format!(
            "connect:{result}:{}ms",
            started.elapsed().as_millis()
        ));
        match checked {
            Some((check, verdict)) if self.reply_stage != Stage::None => {
                info!(session = self.id, check, %verdict, until = %self.reply_stage, "verdict held");
                self.held = Some(Held { verdict, check });
                Verdict::Continue
            }
            Some((check, verdict)) => {
                info!(session = self.id, check, %verdict, stage = "connect", "refused");
                verdict
            }
            None => Verdict::Continue,
        }
    }

    /// DoS protection: counts this connection against its client's limits. Allowed relay
    /// sources are not limited.
    pub(super) fn count_connection(&mut self) -> Option<Finding> {
        let limits = self.policy.client_limits?;
        let ip = self.client.addr?;
        if self.policy.relay.is_relay_source(ip) {
            return None;
        }
        let (slot, refusal) = self.shared.clients.connect(ip, limits, Instant::now());
        self.slot = Some(slot);
        refusal.map(|reply| ("dos_protection", Verdict::refuse(self.with_help(reply))))
    }

    /// Runs the connection-stage checks in order; the first refusal wins.
    pub(super) async fn connection_checks(&self) -> Result<Option<Finding>, EngineError> {
        let Some(ip) = self.client.addr else {
            return Ok(None);
        };
        if let Some(reply) = self.policy.ip_address_rejection.check(ip) {
            return Ok(Some((
                "ip_address_rejection",
                Verdict::refuse(reply.clone()),
            )));
        }
        if self
            .client_profile()
            .is_some_and(|p| p.relay_control == RelayControl::Blocked)
        {
            let text = format!("Client host [{ip}] rejected: access denied");
            let reply = SmtpReply::new(554, Some("5.7.1"), &text).expect("printable reply");
            return Ok(Some((
                "connection_profile",
                Verdict::Reject(self.with_help(reply)),
            )));
        }
        let trusted = self.policy.skip_connection_tests_for_relay_sources
            && self.policy.relay.is_relay_source(ip);
        let rbl_applies = self.client_profile().is_none_or(|p| p.rbl);
        if let Some(rbl) = self.policy.rbl.as_ref().filter(|_| !trusted && rbl_applies) {
            let started = Instant::now();
            let result = rbl.check(ip).await;
            let verdict = rbl.verdict(ip, &result);
            info!(
                session = self.id,
                check = "rbl",
                client_addr = %ip,
                result = %result,
                verdict = verdict.as_ref().map_or("pass", Verdict::name),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "check"
            );
            if let Some(verdict) = verdict {
                self.learn(Event::RblHit);
                return Ok(Some(("rbl", verdict)));
            }
        }
        if let Some(reputation) = self.policy.reputation.as_ref().filter(|_| !trusted) {
            let started = Instant::now();
            let result = reputation.check(self.shared.reputation.as_ref(), ip).await;
            let verdict = reputation.verdict(ip, &result);
            info!(
                session = self.id,
                check = "reputation",
                client_addr = %ip,
                score = result.total(),
                local = result.local,
                zones = ?result.zones,
                failed = ?result.failed,
                verdict = verdict.as_ref().map_or("pass", Verdict::name),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "check"
            );
            if let Some(verdict) = verdict {
                return Ok(Some(("reputation", verdict)));
            }
        }
        Ok(None)
    }

    /// Lowers the client's local reputation for its behaviour (allowed relay sources aside).
    pub(super) fn learn(&self, event: Event) {
        if let (Some(reputation), Some(ip)) = (&self.policy.reputation, self.client.addr)
            && !self.policy.relay.is_relay_source(ip)
        {
            let penalty = reputation.penalty(event);
            self.shared
                .reputation
                .record(ip, penalty, reputation.half_life, Instant::now());
        }
    }
}
