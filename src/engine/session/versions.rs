//! One message, several organizations: the copies of a transaction whose recipients belong to
//! organizations with rulesets or routes of their own. The carrier (the MTA's queue behind
//! the milter, the proxy's transaction with its relay target) takes one version; Postern
//! delivers each other version through its organization's route, with the ledger of
//! routes.rs, before the client hears that the message was accepted.

use super::routes::{Route, message_identity};
use super::*;
use crate::engine::address_transformation::Direction;
use crate::engine::organizations::{OrgId, Versions};
use crate::engine::verdict::EnvelopeEdits;

/// One version of the message: its recipients and the organizations it concerns (theirs and,
/// outbound, the sender's), which choose its rulesets.
#[derive(Clone, Debug, Default)]
pub(super) struct MessageCopy {
    pub version: Option<OrgId>,
    pub recipients: Vec<EnvelopeAddress>,
    pub organizations: Vec<OrgId>,
    /// The carrier takes it (else Postern delivers it through its route).
    pub carried: bool,
}

impl Session {
    /// The sender's organization in `tx`.
    pub(super) fn sender_organization(&self, tx: &Transaction) -> Option<OrgId> {
        let orgs = &self.policy.organizations;
        if orgs.is_empty() {
            return None;
        }
        *tx.sender_organization.get_or_init(|| {
            orgs.of_sender(
                self.direction() == Direction::Outbound,
                self.authenticated.as_deref(),
                self.client_profile().map(|p| p.name.as_str()),
                &tx.sender,
            )
        })
    }

    /// A recipient's organization: `None` without organizations (or when nobody owns it).
    pub(super) fn recipient_organization(
        &self,
        tx: &Transaction,
        recipient: &EnvelopeAddress,
    ) -> Option<OrgId> {
        let orgs = &self.policy.organizations;
        orgs.of_recipient(recipient, self.sender_organization(tx))
    }

    /// After a RCPT was accepted: the carrier's version is the first recipient's whose
    /// organization has no route of its own.
    pub(super) fn place_recipient(&mut self) {
        let orgs = &self.policy.organizations;
        let Some(tx) = self.tx.as_ref().filter(|tx| tx.carried.is_none()) else {
            return;
        };
        if orgs.is_empty() {
            return;
        }
        let Some(recipient) = tx.recipients.last() else {
            return;
        };
        let org = self.recipient_organization(tx, recipient);
        if !orgs.routed_apart(org) {
            let version = orgs.version_of(org);
            if let Some(tx) = self.tx.as_mut() {
                tx.carried = Some(version);
            }
        }
    }

    /// Whether the accepted `recipient` receives a version the door's own transaction does
    /// not carry: the proxy does not hand it to its relay target, Postern delivers it at the
    /// end of the message. Never in a dry run (nothing is split then).
    pub fn carried_apart(&self, recipient: &EnvelopeAddress) -> bool {
        let orgs = &self.policy.organizations;
        let Some(tx) = self.tx.as_ref() else {
            return false;
        };
        if orgs.is_empty() || self.policy.dry_run {
            return false;
        }
        let org = self.recipient_organization(tx, recipient);
        orgs.routed_apart(org) || tx.carried != Some(orgs.version_of(org))
    }

    /// The versions of `tx`: the carrier's (or, when every recipient goes apart, the first)
    /// and the others.
    pub(super) fn copies(&self, tx: &Transaction) -> (MessageCopy, Vec<MessageCopy>) {
        let orgs = &self.policy.organizations;
        if orgs.is_empty() {
            let all = MessageCopy {
                recipients: tx.recipients.clone(),
                carried: true,
                ..MessageCopy::default()
            };
            return (all, Vec::new());
        }
        let sender = self.sender_organization(tx);
        let mut versions = Versions {
            carried: tx.carried,
            groups: Vec::new(),
        };
        for r in &tx.recipients {
            let org = orgs.of_recipient(r, sender);
            versions.add(orgs.version_of(org), orgs.routed_apart(org), r.clone());
        }
        let mut copies: Vec<MessageCopy> = versions
            .groups
            .into_iter()
            .map(|(version, recipients)| {
                let mut organizations: Vec<OrgId> = recipients
                    .iter()
                    .filter_map(|r| orgs.of_recipient(r, sender))
                    .chain(sender)
                    .collect();
                organizations.sort_unstable();
                organizations.dedup();
                MessageCopy {
                    carried: versions.carried == Some(version),
                    version,
                    recipients,
                    organizations,
                }
            })
            .collect();
        if copies.is_empty() {
            // No recipient: nothing to split, nothing to deliver apart.
            let none = MessageCopy {
                carried: true,
                ..MessageCopy::default()
            };
            return (none, Vec::new());
        }
        let first = copies.iter().position(|c| c.carried).unwrap_or(0);
        let primary = copies.remove(first);
        (primary, copies)
    }

    /// A message larger than the `max_message_size` of an organization it concerns (one of its
    /// recipients', its sender's) is refused, with the smallest limit it exceeds.
    pub(super) fn organization_size_refusal(&self, tx: &Transaction) -> Option<Finding> {
        let orgs = &self.policy.organizations;
        if orgs.list.iter().all(|o| o.max_message_size.is_none()) {
            return None;
        }
        let size = tx.message.as_ref().map_or(0, MessageBuffer::len);
        let sender = self.sender_organization(tx);
        let (id, max) = tx
            .recipients
            .iter()
            .filter_map(|r| orgs.of_recipient(r, sender))
            .chain(sender)
            .filter_map(|id| orgs.list[id].max_message_size.map(|max| (id, max)))
            .filter(|(_, max)| size > *max)
            .min_by_key(|(_, max)| *max)?;
        let reply = SmtpReply::new(
            552,
            Some("5.3.4"),
            &format!(
                "Message size exceeds the limit of {max} bytes of organization {}",
                orgs.name(id)
            ),
        )
        .expect("the reply is valid");
        Some((CheckId::MessageSize, Verdict::Reject(reply)))
    }

    /// Delivers the versions the carrier does not take, each through its organization's route
    /// (an encryption rule's route where one gives it), and takes their recipients out of the
    /// carrier's envelope. `Some` with the last route's answer when no recipient is left for
    /// the carrier.
    pub(super) async fn deliver_versions(
        &self,
        tx: &mut Transaction,
        versions: &[(&MessageCopy, &Edits)],
        envelope: &mut EnvelopeEdits,
    ) -> Result<Option<SmtpReply>, EngineError> {
        let orgs = &self.policy.organizations;
        let received = tx.received().await?;
        let identity = message_identity(tx, self.authenticated.as_deref(), &received);
        let sender = envelope.sender.clone().unwrap_or_else(|| tx.sender.clone());
        let mut last = None;
        for (copy, edits) in versions.iter().filter(|(c, _)| !c.carried) {
            let message = edits.applied_to(received.clone());
            let name = copy.version.map_or("shared", |id| orgs.name(id));
            let rules = &self.policy.encryption_rules;
            let routes = self.by_route(copy.recipients.iter(), |r| {
                Some(
                    rules
                        .secure_route(&tx.sender, r)
                        .unwrap_or_else(|| orgs.route(copy.version)),
                )
            });
            for ((via, tls), recipients) in &routes {
                if via.is_empty() {
                    return Err(EngineError::Route {
                        recipients: recipients.len(),
                        via: Vec::new(),
                        source: OutboundError::Route(format!(
                            "the {name} version of the message needs a relay target: give the organization relay_targets, or configure a [[relay_target]] that is not divert_only"
                        )),
                    });
                }
                let route = Route {
                    via,
                    tls,
                    by: ("organization", name),
                };
                if let Some(reply) = self
                    .take_route(
                        tx,
                        identity.as_ref(),
                        &route,
                        recipients,
                        &message,
                        &sender,
                        envelope,
                    )
                    .await?
                {
                    last = Some(reply);
                }
            }
        }
        if envelope.removed.len() < tx.recipients.len() {
            return Ok(None);
        }
        Ok(Some(last.unwrap_or_else(|| {
            SmtpReply::new(250, Some("2.0.0"), "Ok: delivered before")
                .expect("static reply is valid")
        })))
    }
}
