//! The end-of-message steps of `[authentication]`: verify the message as it arrived, apply
//! DMARC as the operator chose, write the results field, and seal what leaves (ARC).

use mail_auth::{AuthenticatedMessage, AuthenticationResults};

use super::versions::MessageCopy;
use super::*;
use crate::engine::arc::SealError;
use crate::engine::authentication::{
    self, DmarcFailure, DmarcMode, Envelope, QuarantineAction, Verified,
};
use crate::engine::dkim::SignWhen;

/// The envelope facts verification reads, copied out of the transaction so that the results
/// can borrow them while the transaction changes.
pub(super) struct ArrivalFacts {
    helo: String,
    sender: EnvelopeAddress,
    spf: Option<SpfOutcome>,
    ip: Option<IpAddr>,
}

impl ArrivalFacts {
    pub(super) fn envelope(&self) -> Envelope<'_> {
        Envelope {
            ip: self.ip,
            helo: &self.helo,
            mail_from: &self.sender,
            spf: self.spf.as_ref(),
        }
    }
}

impl Session {
    /// The message as it arrived, when `[authentication]` verifies messages and this one is
    /// still to be judged; what the verification reads of the envelope.
    pub(super) async fn arrival(&self, tx: &mut Transaction) -> Option<(Vec<u8>, ArrivalFacts)> {
        if !self.policy.authentication.verifies()
            || self.holds_at(Stage::Data, &tx.recipients)
            || tx.failure.is_some()
        {
            return None;
        }
        let raw = match tx.received().await {
            Ok(raw) => raw,
            Err(e) => {
                self.note(Note::Unreadable {
                    purpose: "the message, to verify its signatures",
                    error: &e.to_string(),
                });
                return None;
            }
        };
        let facts = ArrivalFacts {
            helo: self.helo.clone().unwrap_or_default(),
            sender: tx.sender.clone(),
            spf: tx.spf.clone(),
            ip: self.client.addr,
        };
        Some((raw, facts))
    }

    /// Verifies the message within the time budget; `Err` with the scan failure action's
    /// verdict when it could not be verified and that action refuses.
    pub(super) async fn verify<'x>(
        &self,
        message: &'x AuthenticatedMessage<'x>,
        facts: &ArrivalFacts,
        tx: &mut Transaction,
    ) -> Result<Option<Verified<'x>>, Finding> {
        let settings = &self.policy.authentication;
        let Some(authenticator) = self.shared.ports.resolver.authenticator() else {
            return Ok(None);
        };
        let work = authentication::verify(settings, &authenticator, message, facts.envelope());
        match tokio::time::timeout(self.policy.scan_timeout, work).await {
            Ok(verified) => {
                let summary = verified.summary();
                self.note(Note::Verified {
                    results: &summary.words(),
                });
                tx.authentication = Some(summary);
                Ok(Some(verified))
            }
            Err(_) => {
                let error = format!(
                    "time budget of {:?} exceeded while verifying DKIM, ARC and DMARC",
                    self.policy.scan_timeout
                );
                self.scan_failed(ScanStep::Authentication, &error);
                match self.policy.scan_failure_action.verdict() {
                    Verdict::Continue => Ok(None),
                    verdict => Err((CheckId::ScanFailure, verdict)),
                }
            }
        }
    }

    /// What DMARC does with `verified`: a refusal when enforced and the author domain asks
    /// for reject (or quarantine with `tempfail`); a divert set on `tx` for quarantine with
    /// `divert`. Exempt clients and report mode only log.
    /// Whether DMARC failures are enforced on this transaction: `[authentication] dmarc`, or
    /// with organizations that set their own, enforced when it is for one recipient's
    /// organization (one transaction has one answer: the strictest wins).
    fn dmarc_mode(&self, tx: &Transaction) -> DmarcMode {
        let global = self.policy.authentication.dmarc;
        let orgs = &self.policy.organizations;
        if orgs.list.iter().all(|o| o.dmarc.is_none()) {
            return global;
        }
        let enforced = tx.recipients.iter().any(|r| {
            self.recipient_organization(tx, r)
                .and_then(|id| orgs.list[id].dmarc)
                .unwrap_or(global)
                == DmarcMode::Enforce
        });
        if enforced {
            DmarcMode::Enforce
        } else {
            DmarcMode::Report
        }
    }

    pub(super) fn dmarc_verdict(
        &self,
        verified: &Verified<'_>,
        tx: &mut Transaction,
    ) -> Option<Finding> {
        let settings = &self.policy.authentication;
        let failure = verified.dmarc_failure()?;
        let (domain, policy) = match &failure {
            DmarcFailure::Reject { domain } => (domain.as_str(), "reject"),
            DmarcFailure::Quarantine { domain } => (domain.as_str(), "quarantine"),
        };
        let exempt = if settings.exempt_authenticated && self.authenticated.is_some() {
            Some("an authenticated client")
        } else if self
            .client_profile()
            .is_some_and(|p| settings.exempt_connection_profiles.contains(&p.name))
        {
            Some("a client of an exempt connection profile")
        } else {
            None
        };
        if self.dmarc_mode(tx) != DmarcMode::Enforce || exempt.is_some() {
            self.note(Note::DmarcNotEnforced {
                domain,
                policy,
                why: exempt.unwrap_or(if self.policy.organizations.is_empty() {
                    "dmarc = \"report\""
                } else {
                    "dmarc = \"report\" for the organizations of every recipient"
                }),
            });
            return None;
        }
        let refusal = |code, enhanced, text: String| {
            let reply = SmtpReply::new(code, Some(enhanced), &text).expect("printable reply");
            let verdict = Verdict::refuse(self.with_help(reply));
            self.refused(CheckId::Dmarc, &verdict, SmtpStage::EndOfMessage, None);
            Some((CheckId::Dmarc, verdict))
        };
        // The author domain came with the message: only its printable ASCII goes into a reply.
        let shown = |domain: &str| crate::engine::reply::printable_only(domain, 255);
        match failure {
            DmarcFailure::Reject { domain } => refusal(
                550,
                "5.7.1",
                format!(
                    "Message refused: it fails the DMARC policy (p=reject) of its author domain {}",
                    shown(&domain)
                ),
            ),
            DmarcFailure::Quarantine { domain } => match &settings.quarantine {
                QuarantineAction::Accept => {
                    self.note(Note::DmarcQuarantineAccepted { domain: &domain });
                    None
                }
                QuarantineAction::Tempfail => refusal(
                    451,
                    "4.7.1",
                    format!(
                        "Message deferred: it fails the DMARC policy (p=quarantine) of its author domain {}",
                        shown(&domain)
                    ),
                ),
                QuarantineAction::Divert(via) => {
                    tx.divert = Some(Diversion {
                        via: via.clone(),
                        ruleset: "[authentication]".to_owned(),
                        rule: "dmarc_quarantine".to_owned(),
                    });
                    None
                }
            },
        }
    }

    /// The `Authentication-Results` field with the arrival results, first in the header.
    pub(super) fn results_header(&self, value: String, edits: &mut Edits) {
        edits.headers.push(HeaderEdit::Insert {
            index: 0,
            name: "Authentication-Results".to_owned(),
            value,
        });
    }

    /// Seals the message as it leaves (with `seal = "transformed"`, only one Postern
    /// changed), recording `results` and continuing the chain `verified` found on arrival.
    /// An error only when the seal could not be made for a reason of Postern's own.
    pub(super) async fn seal(
        &self,
        tx: &mut Transaction,
        edits: &mut Edits,
        verified: &Verified<'_>,
        results: &AuthenticationResults<'_>,
        transformed: bool,
        copy: &MessageCopy,
    ) -> Result<(), EngineError> {
        let orgs = &self.policy.organizations;
        // The version's own organization first, then the others it concerns.
        let names: Vec<&str> = copy
            .version
            .into_iter()
            .chain(copy.organizations.iter().copied())
            .map(|id| orgs.name(id))
            .collect();
        let sealer = self.policy.authentication.sealer_for(&names);
        let (Some(sealer), Some(arrived)) = (sealer, &verified.arc) else {
            return Ok(());
        };
        if sealer.seal == SignWhen::Transformed && !transformed {
            return Ok(());
        }
        let mut message = tx.leaving(edits).await?;
        if self.fit_lines(&message, edits) {
            message = tx.leaving(edits).await?;
        }
        let set = match sealer.seal(&message, results, arrived) {
            Ok(set) => set,
            Err(e @ SealError::Signing(_)) => return Err(EngineError::Signing(e.to_string())),
            Err(e) => {
                self.note(Note::NotSealed {
                    reason: &e.to_string(),
                });
                return Ok(());
            }
        };
        // Inserted first one by one, last field first: ARC-Seal ends up on top.
        for (name, value) in set.into_iter().rev() {
            edits.headers.push(HeaderEdit::Insert {
                index: 0,
                name,
                value,
            });
        }
        self.note(Note::Sealed {
            domain: &sealer.domain,
            selector: &sealer.selector,
        });
        Ok(())
    }
}
