//! The message as it leaves: which way it goes, the address transformation of its envelope and
//! From/To/Cc, and its DKIM signature, made last over exactly the bytes that leave.

use super::*;
use crate::engine::address_transformation::{Direction, Place};
use crate::engine::dkim::{SignWhen, SigningClient};
use crate::engine::lines::break_long_lines;
use crate::engine::verdict::{EnvelopeEdits, field_name, header_fields_raw};

impl Session {
    /// Which way this session's mail goes: outbound from an authenticated client, a local
    /// submission (no client address), a client of a connection profile for internal hosts
    /// (`full`, `restricted-internal`) or an allowed relay source; inbound from anyone else.
    pub fn direction(&self) -> Direction {
        let internal = self.client_profile().is_some_and(|p| {
            matches!(
                p.relay_control,
                RelayControl::Full | RelayControl::RestrictedInternal
            )
        });
        let relay_source = self
            .client
            .addr
            .is_some_and(|ip| self.policy.relay.is_relay_source(ip));
        if self.authenticated.is_some() || self.client.addr.is_none() || internal || relay_source {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    /// The address a relay target is given for the envelope `address` in `place` (sender or
    /// recipients): rewritten by the address transformation, or as the client gave it. The
    /// policy itself always judges the address as given. Nothing is rewritten in a dry run.
    pub fn relayed_address(&self, place: Place, address: &EnvelopeAddress) -> EnvelopeAddress {
        let rules = &self.policy.address_transformations;
        if self.policy.dry_run || rules.is_empty() {
            return address.clone();
        }
        rules
            .rewrite_address(self.direction(), place, address)
            .unwrap_or_else(|| address.clone())
    }

    /// The envelope changes of the address transformation for this transaction, and the
    /// changes to From/To/Cc added to `edits`; whether a header field was rewritten.
    pub(super) async fn transform_addresses(
        &self,
        tx: &mut Transaction,
        edits: &mut Edits,
    ) -> (EnvelopeEdits, bool) {
        let rules = &self.policy.address_transformations;
        if rules.is_empty() {
            return (EnvelopeEdits::default(), false);
        }
        let direction = self.direction();
        let sender = rules.rewrite_address(direction, Place::Sender, &tx.sender);
        let recipients = tx
            .recipients
            .iter()
            .filter_map(|r| {
                rules
                    .rewrite_address(direction, Place::Recipients, r)
                    .map(|new| (r.clone(), new))
            })
            .collect();
        let envelope = EnvelopeEdits {
            sender,
            recipients,
            removed: Vec::new(),
        };
        let places = rules.header_places(direction);
        let Some(buffer) = tx.message.as_mut().filter(|_| !places.is_empty()) else {
            return (envelope, false);
        };
        let header = match buffer.header_section().await {
            Ok(header) => header,
            Err(e) => {
                self.note(Note::Unreadable {
                    purpose: "the header, to rewrite its addresses",
                    error: &e.to_string(),
                });
                return (envelope, false);
            }
        };
        let fields = header_fields(&header);
        let mut changed = false;
        for place in places {
            let name = place.field().expect("header places name a field");
            let same_name = fields.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name));
            for ((_, value), index) in same_name.zip(1..) {
                if let Some(new) = rules.rewrite_field(direction, place, value.trim()) {
                    edits.headers.push(HeaderEdit::Change {
                        name: name.to_owned(),
                        index,
                        value: Some(new),
                    });
                    changed = true;
                }
            }
        }
        (envelope, changed)
    }

    /// Signs an outbound message whose author's domain has a signer (and, with `sign =
    /// "transformed"`, only when Postern changed it): the signature covers the message with
    /// every edit applied and is put first in the header. An error when it cannot be made.
    pub(super) async fn sign(
        &self,
        tx: &mut Transaction,
        edits: &mut Edits,
        transformed: bool,
    ) -> Result<(), EngineError> {
        let signers = &self.policy.dkim;
        if signers.is_empty() || self.direction() != Direction::Outbound {
            return Ok(());
        }
        // An untouched message that no signer would sign is not read back at all.
        if !transformed && signers.0.iter().all(|s| s.sign == SignWhen::Transformed) {
            return Ok(());
        }
        if tx.message.is_none() {
            return Ok(());
        }
        let mut message = tx.leaving(edits).await?;
        let header_end = memchr::memmem::find(&message, b"\r\n\r\n")
            .or_else(|| memchr::memmem::find(&message, b"\n\n"))
            .unwrap_or(message.len());
        let author = first_header_field(&message[..header_end], "From");
        let Some(domain) = author.as_deref().and_then(author_domain) else {
            return Ok(());
        };
        let organization = self.sender_organization(tx);
        let client = SigningClient {
            user: self.authenticated.as_deref(),
            profile: self.client_profile().map(|p| p.name.as_str()),
            organization: organization.map(|id| self.policy.organizations.name(id)),
        };
        let signer = match signers.for_author(domain, client) {
            Ok(Some(signer)) => signer,
            Ok(None) => return Ok(()),
            Err(signed_domain) => {
                self.note(Note::NotSigned {
                    domain: signed_domain,
                    user: client.user,
                    profile: client.profile,
                });
                return Ok(());
            }
        };
        if signer.sign == SignWhen::Transformed && !transformed {
            return Ok(());
        }
        // Lines longer than a hop lets through are broken on the way (by the MTA, by a relay
        // target's line_limit): fold and break them now, so that the signature covers the
        // lines that leave.
        if self.fit_lines(&message, edits) {
            message = tx.leaving(edits).await?;
        }
        let value = if signer.key.is_costly() {
            let index = signers
                .0
                .iter()
                .position(|s| std::ptr::eq(s, signer))
                .expect("the signer is one of the policy's");
            self.sign_off_thread(index, message).await?
        } else {
            signer.sign(&message).map_err(EngineError::Signing)?
        };
        self.note(Note::Signed {
            domain: &signer.domain,
            selector: &signer.selector,
        });
        edits.headers.push(HeaderEdit::Insert {
            index: 0,
            name: "DKIM-Signature".to_owned(),
            value,
        });
        Ok(())
    }
}

impl Session {
    /// Signs `message` with the policy's signer `index` on the blocking pool, one signature
    /// per core at once: the doors run on one thread, which an RSA signature (a millisecond
    /// or more of CPU) would hold from every other conversation, and the other cores would
    /// idle.
    async fn sign_off_thread(&self, index: usize, message: Vec<u8>) -> Result<String, EngineError> {
        let _slot = self
            .policy
            .signing_slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| EngineError::Task(e.to_string()))?;
        let policy = self.policy.clone();
        tokio::task::spawn_blocking(move || policy.dkim.0[index].sign(&message))
            .await
            .map_err(|e| EngineError::Task(e.to_string()))?
            .map_err(EngineError::Signing)
    }

    /// Adds to `edits` what makes every line of the leaving `message` fit the policy's
    /// `line_limit`: header fields with a longer line refolded before white space (the same
    /// field for DKIM's relaxed canonicalization), body lines broken with CRLF and a space.
    /// Whether anything was added.
    pub(super) fn fit_lines(&self, message: &[u8], edits: &mut Edits) -> bool {
        let limit = self.policy.line_limit;
        let body_start = crate::engine::verdict::header_end(message);
        let mut changed = false;
        let mut seen: Vec<(Vec<u8>, u32)> = Vec::new();
        for field in header_fields_raw(&message[..body_start]) {
            let name = field_name(&field).to_ascii_lowercase();
            let index = match seen.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count
                }
                None => {
                    seen.push((name, 1));
                    1
                }
            };
            if field.split(|&b| b == b'\n').all(|l| l.len() < limit) {
                continue;
            }
            let text = std::str::from_utf8(&field).ok();
            let Some((name, value)) = text
                .and_then(|t| t.split_once(':'))
                .map(|(n, v)| (n.trim(), v))
            else {
                self.note(Note::UnfoldableLine { field: None, limit });
                continue;
            };
            let value = value
                .trim_start_matches([' ', '\t'])
                .trim_end_matches(['\r', '\n']);
            let Some((folded, fits)) = crate::engine::lines::fold_value(name, value, limit) else {
                continue;
            };
            if !fits {
                self.note(Note::UnfoldableLine {
                    field: Some(name),
                    limit,
                });
            }
            edits.headers.push(HeaderEdit::Change {
                name: name.to_owned(),
                index,
                value: Some(folded),
            });
            changed = true;
        }
        let (broken, breaks) = break_long_lines(&message[body_start..], limit);
        if breaks > 0 {
            edits.body = Some(broken.into_owned());
            changed = true;
        }
        changed
    }
}

/// The domain of the first address in a From field's value.
pub(super) fn author_domain(from: &str) -> Option<&str> {
    let address = crate::engine::address_transformation::first_address(from)?;
    Some(crate::engine::address::Address::parse(address).domain).filter(|d| !d.is_empty())
}
