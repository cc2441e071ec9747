//! CONNECT: the client is counted (DoS protection), matched to a connection profile and
//! judged by the connection-stage checks, in order; a refusal is held until the door can show it.

use super::*;
use crate::engine::checks::client_name;
use crate::engine::checks::dos::RATE_WINDOW;
use crate::engine::ports::{ClientKey, Counter, StoreError};

impl Session {
    pub(super) async fn judge_connect(&mut self, mut client: ClientInfo) -> Verdict {
        let policy = self.policy.clone();
        if let Some(ip) = policy.client_ip_override {
            // Diagnostic ([connection] client_ip_override, warned about at start).
            client.addr = Some(ip);
        }
        self.client = client;
        self.profile = policy
            .profiles
            .for_client(self.client.addr, self.client.name.as_deref());
        self.emit(&Event::Connected {
            session: self.id,
            client: &self.client,
            profile: self.client_profile().map(|p| p.name.as_str()),
        });
        // Counted first: a flooding client costs no lookups.
        let started = Instant::now();
        let checked = match self.count_connection().await {
            Some(finding) => Some(finding),
            None => {
                self.guarded(ScanStep::Connect, self.connection_checks())
                    .await
            }
        };
        self.checks.push(CheckRecord {
            stage: SmtpStage::Connect,
            found: checked.as_ref().map(|(check, v)| (*check, v.name())),
            elapsed: started.elapsed(),
        });
        match checked {
            // A listing (not a lookup failure) is judged per recipient by its organization.
            Some((CheckId::Rbl, verdict))
                if policy.organizations.judge_rbl()
                    && verdict
                        .reply()
                        .is_some_and(|r| matches!(r.code(), 421 | 554)) =>
            {
                self.refused(
                    CheckId::Rbl,
                    &verdict,
                    SmtpStage::Connect,
                    Some(SmtpStage::Rcpt),
                );
                self.rbl_hit = Some(verdict);
                Verdict::Continue
            }
            Some((check, verdict)) if self.reply_stage != Stage::None => {
                self.refused(
                    check,
                    &verdict,
                    SmtpStage::Connect,
                    Some(SmtpStage::of(self.reply_stage)),
                );
                self.held = Some(Held { verdict, check });
                Verdict::Continue
            }
            Some((check, verdict)) => {
                self.refused(check, &verdict, SmtpStage::Connect, None);
                verdict
            }
            None => Verdict::Continue,
        }
    }

    /// The client's host name by forward-confirmed reverse DNS, for a door that has no MTA to
    /// give it a verified one (the proxy). Looked up only when some connection profile names
    /// a host: otherwise a client costs no DNS lookup for its name.
    pub async fn verified_client_name(&self, ip: IpAddr) -> Option<String> {
        if !self.policy.profiles.names_hosts() {
            return None;
        }
        let started = Instant::now();
        let found = client_name::forward_confirmed(&*self.shared.ports.resolver, ip).await;
        self.emit(&Event::Checked {
            session: self.id,
            check: CheckId::ConnectionProfile,
            client: Some(ip),
            verdict: None,
            detail: found.detail,
            elapsed: started.elapsed(),
            dry_run: self.policy.dry_run,
        });
        found.name
    }

    /// DoS protection: counts this connection against its client's limits, open connections
    /// here and new ones per minute in the store. Allowed relay sources are not limited. A
    /// store that cannot answer limits nothing.
    pub(super) async fn count_connection(&mut self) -> Option<Finding> {
        let limits = self.policy.client_limits?;
        let ip = self.client.addr?;
        if self.policy.relay.is_relay_source(ip) {
            return None;
        }
        let (slot, active) = self.shared.clients.connect(ip);
        self.slot = Some(slot);
        let recent = match limits.max_connection_rate {
            Some(max) => {
                let key = ClientKey::of(ip);
                match self
                    .shared
                    .ports
                    .store
                    .hit(Counter::Connections, key, RATE_WINDOW, max + 1)
                    .await
                {
                    Ok(n) => Some(n),
                    Err(e) => {
                        self.store_unavailable("connection rate", &e);
                        None
                    }
                }
            }
            None => None,
        };
        let reply = limits.refusal(ip, active, recent)?;
        Some((
            CheckId::DosProtection,
            Verdict::refuse(self.with_help(reply)),
        ))
    }

    /// Runs the connection-stage checks in order; the first refusal wins.
    pub(super) async fn connection_checks(&self) -> Result<Option<Finding>, EngineError> {
        let Some(ip) = self.client.addr else {
            return Ok(None);
        };
        if let Some(reply) = self.policy.ip_address_rejection.check(ip) {
            return Ok(Some((
                CheckId::IpAddressRejection,
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
                CheckId::ConnectionProfile,
                Verdict::Reject(self.with_help(reply)),
            )));
        }
        let trusted = self.policy.skip_connection_tests_for_relay_sources
            && self.policy.relay.is_relay_source(ip);
        let rbl_applies = self.client_profile().is_none_or(|p| p.rbl);
        let resolver = &self.shared.ports.resolver;
        if let Some(rbl) = self.policy.rbl.as_ref().filter(|_| !trusted && rbl_applies) {
            let started = Instant::now();
            let result = rbl.check(resolver, ip).await;
            for test in &result.self_tests {
                self.emit(&Event::Zone {
                    session: self.id,
                    check: CheckId::Rbl,
                    zone: &test.zone,
                    usable: test.usable,
                    note: &test.note,
                });
            }
            let verdict = rbl.verdict(ip, &result);
            self.checked(CheckId::Rbl, verdict.as_ref(), result.to_string(), started);
            if let Some(verdict) = verdict {
                self.learn(Behaviour::RblHit).await;
                return Ok(Some((CheckId::Rbl, verdict)));
            }
        }
        if let Some(reputation) = self.policy.reputation.as_ref().filter(|_| !trusted) {
            let started = Instant::now();
            let local = match self
                .shared
                .ports
                .store
                .reputation(ClientKey::of(ip), reputation.half_life)
                .await
            {
                Ok(score) => score,
                Err(e) => {
                    self.store_unavailable("learned reputation (read as neutral)", &e);
                    0.0
                }
            };
            let result = reputation.check(resolver, local, ip).await;
            for (zone, why) in &result.left_out {
                self.emit(&Event::Zone {
                    session: self.id,
                    check: CheckId::Reputation,
                    zone,
                    usable: None,
                    note: &format!("reputation zone left out: {why}"),
                });
            }
            let verdict = reputation.verdict(ip, &result);
            let detail = format!(
                "score {} (local {}, zones {:?}, failed {:?})",
                result.total(),
                result.local,
                result.zones,
                result.failed
            );
            self.checked(CheckId::Reputation, verdict.as_ref(), detail, started);
            if let Some(verdict) = verdict {
                return Ok(Some((CheckId::Reputation, verdict)));
            }
        }
        Ok(None)
    }

    /// Reports that the store could not answer for `what`.
    pub(super) fn store_unavailable(&self, what: &'static str, error: &StoreError) {
        self.emit(&Event::StoreUnavailable {
            session: Some(self.id),
            what,
            error: &error.to_string(),
        });
    }

    /// Reports a check's result.
    pub(super) fn checked(
        &self,
        check: CheckId,
        verdict: Option<&Verdict>,
        detail: String,
        started: Instant,
    ) {
        self.emit(&Event::Checked {
            session: self.id,
            check,
            client: self.client.addr,
            verdict,
            detail,
            elapsed: started.elapsed(),
            dry_run: self.policy.dry_run,
        });
    }

    /// Lowers the client's learned reputation for its behaviour (allowed relay sources
    /// aside). A store that cannot take it is logged and otherwise ignored.
    pub(super) async fn learn(&self, behaviour: Behaviour) {
        if let (Some(reputation), Some(ip)) = (&self.policy.reputation, self.client.addr)
            && !self.policy.relay.is_relay_source(ip)
        {
            let penalty = reputation.penalty(behaviour);
            if let Err(e) = self
                .shared
                .ports
                .store
                .add_reputation(ClientKey::of(ip), penalty, reputation.half_life)
                .await
            {
                self.store_unavailable("learned reputation (not recorded)", &e);
            }
        }
    }
}
