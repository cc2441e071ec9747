//! The content stage at end of message: choose the rulesets that apply to this transaction,
//! run them over the message off the async threads, and turn their result into a verdict and
//! edits. Each transform is logged with ruleset, rule, target and count — never a value.

use super::versions::MessageCopy;
use super::*;
use crate::engine::rules::{self, MessageContext, Rewrite};

impl Session {
    /// Runs the rulesets that apply to `copy` (the whole transaction without organizations);
    /// a refusal, or `None` with `edits` extended.
    pub(super) async fn content_stage(
        &self,
        tx: &mut Transaction,
        edits: &mut Edits,
        copy: &MessageCopy,
    ) -> Option<Finding> {
        let policy = self.policy.clone();
        let organizations: Vec<&str> = copy
            .organizations
            .iter()
            .map(|&id| policy.organizations.name(id))
            .collect();
        let ctx = MessageContext {
            profile: self.client_profile().map(|p| p.name.as_str()),
            authenticated: self.authenticated.is_some(),
            sender: &tx.sender,
            recipients: &copy.recipients,
            organizations: &organizations,
        };
        let active: Vec<usize> = (0..policy.content.rulesets.len())
            .filter(|&i| policy.content.rulesets[i].conditions.hold(&ctx))
            .collect();
        if active.is_empty() {
            return None;
        }
        let queue_id = tx.queue_id.clone().unwrap_or_default();
        let buffer = tx.message.as_mut()?;
        let mut divert = None;
        let mut slot = None;
        let started = std::time::Instant::now();
        let work = async {
            // A slot first: the message, its parse and its new body are held in memory only
            // while one is.
            let held = policy
                .scan_slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| EngineError::Task(e.to_string()))?;
            let raw = buffer.contents().await?;
            let scan_policy = policy.clone();
            let deadline = started + policy.scan_timeout;
            // Parsing and transforming a large message is CPU work: keep it off the threads
            // that serve the other sessions. The slot goes with the work and comes back only
            // when it has really ended (at the latest soon after the deadline), so that no
            // more than max_concurrent_scans blocking threads ever scan at once, even when
            // scan_timeout gave up waiting for them.
            let (rewrite, held) = tokio::task::spawn_blocking(move || {
                let rulesets: Vec<_> = active
                    .iter()
                    .map(|&i| &scan_policy.content.rulesets[i])
                    .collect();
                (
                    rules::rewrite_within(
                        &raw,
                        &rulesets,
                        &scan_policy.content.documents,
                        Some(deadline),
                    ),
                    held,
                )
            })
            .await
            .map_err(|e| EngineError::Task(e.to_string()))?;
            slot = Some(held);
            let rewrite = rewrite?;
            divert = rewrite.divert.clone();
            Ok(self.take_rewrite(rewrite, &queue_id, edits))
        };
        let found = self.guarded(ScanStep::Content, work).await;
        self.emit(&Event::Scanned {
            session: self.id,
            elapsed: started.elapsed(),
        });
        if found.is_none() {
            // A version without a divert rule leaves another version's diversion alone.
            if divert.is_some() {
                tx.divert = divert;
            }
            if edits.body.is_some() && tx.scan_slot.0.is_none() {
                tx.scan_slot = ScanSlot(slot.map(Arc::new));
            }
        }
        found
    }

    /// Logs what the rules did and turns it into a refusal or edits.
    fn take_rewrite(&self, rewrite: Rewrite, queue_id: &str, edits: &mut Edits) -> Option<Finding> {
        for note in &rewrite.unread {
            self.emit(&Event::AttachmentUnread {
                session: self.id,
                queue_id,
                attachment: &note.attachment,
                reason: note.why.name(),
                detail: &note.why.to_string(),
                action: note.action.name(),
            });
        }
        for hit in &rewrite.hits {
            self.emit(&Event::RuleActed {
                session: self.id,
                queue_id,
                ruleset: &hit.ruleset,
                rule: &hit.rule,
                target: &hit.target,
                action: hit.action,
                count: hit.count,
                dry_run: self.policy.dry_run,
            });
        }
        if let Some((reply, ruleset, rule)) = rewrite.reject {
            // Reported as the other actions are, for the metrics and the tracking records.
            self.emit(&Event::RuleActed {
                session: self.id,
                queue_id,
                ruleset: &ruleset,
                rule: &rule,
                target: "message",
                action: "reject",
                count: 1,
                dry_run: self.policy.dry_run,
            });
            return Some((CheckId::Content, Verdict::Reject(reply)));
        }
        if rewrite.hits.is_empty() {
            return None;
        }
        if let Some(name) = &self.policy.content.ruleset_header {
            edits.headers.push(HeaderEdit::Add {
                name: name.clone(),
                value: rewrite.rulesets().join(", "),
            });
        }
        edits.headers.extend(rewrite.headers);
        edits.body = rewrite.body;
        None
    }
}
