//! The message as it leaves: which way it goes, the address transformation of its envelope and
//! From/To/Cc, and its DKIM signature, made last over exactly the bytes that leave.

use super::*;
use crate::engine::addressing::{Direction, Place};
use crate::engine::dkim::{SignWhen, SigningClient};
use crate::engine::lines::break_long_lines;
use crate::engine::verdict::EnvelopeEdits;

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
    pub fn relayed_address(&self, place: Place, address: &str) -> String {
        let rules = &self.policy.address_transformations;
        if self.policy.dry_run || rules.is_empty() {
            return address.to_owned();
        }
        rules
            .rewrite(self.direction(), place, address)
            .unwrap_or_else(|| address.to_owned())
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
        let sender = rules.rewrite(direction, Place::Sender, &tx.sender);
        let recipients = tx
            .recipients
            .iter()
            .filter_map(|r| {
                rules
                    .rewrite(direction, Place::Recipients, r)
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
                warn!(session = self.id, error = %e, "cannot read the header to rewrite its addresses");
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
    ) -> Result<(), String> {
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
        let client = SigningClient {
            user: self.authenticated.as_deref(),
            profile: self.client_profile().map(|p| p.name.as_str()),
        };
        let signer = match signers.for_author(domain, client) {
            Ok(Some(signer)) => signer,
            Ok(None) => return Ok(()),
            Err(signed_domain) => {
                info!(
                    session = self.id,
                    domain = %signed_domain,
                    user = %client.user.unwrap_or("-").escape_debug(),
                    profile = client.profile.unwrap_or("-"),
                    "not signed (DKIM): this client may not use the domain's signature (see the signer's users and connection_profiles)"
                );
                return Ok(());
            }
        };
        if signer.sign == SignWhen::Transformed && !transformed {
            return Ok(());
        }
        // A body line longer than SMTP allows is broken on the way (by the proxy's relay
        // targets, by the MTA): break it now, so that the signature covers the lines that leave.
        let (broken, breaks) = break_long_lines(&message, 1000);
        if breaks > 0 {
            let broken = broken.into_owned();
            let body_start = memchr::memmem::find(&broken, b"\r\n\r\n")
                .map(|i| i + 4)
                .unwrap_or(broken.len());
            if broken[..body_start] == message[..body_start] {
                edits.body = Some(broken[body_start..].to_vec());
                message = broken;
            }
        }
        let value = signer.sign(&message)?;
        info!(session = self.id, domain = %signer.domain, selector = %signer.selector, "message signed (DKIM)");
        edits.headers.push(HeaderEdit::Insert {
            index: 0,
            name: "DKIM-Signature".to_owned(),
            value,
        });
        Ok(())
    }
}

/// The domain of the first address in a From field's value.
fn author_domain(from: &str) -> Option<&str> {
    let address = crate::engine::addressing::first_address(from)?;
    Some(crate::engine::address::Address::parse(address).domain).filter(|d| !d.is_empty())
}
