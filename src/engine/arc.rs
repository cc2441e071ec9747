//! ARC sealing (`[[arc_sealer]]`, RFC 8617): a gateway that changes a message breaks its
//! sender's DKIM signature; an ARC set records the authentication results as they were on
//! arrival (ARC-Authentication-Results), signs the message as it leaves
//! (ARC-Message-Signature) and seals the chain so far (ARC-Seal, `cv=`), so that a downstream
//! that trusts the sealer's domain can still rely on the results. Made after every other edit
//! but the DKIM signature, over the same bytes.

use std::fmt;

use mail_auth::arc::ArcSealer as Sealer;
use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, Done};
use mail_auth::{ArcOutput, AuthenticatedMessage, AuthenticationResults};

use super::dkim::{DEFAULT_HEADERS, PrivateKey, SignWhen};

/// The sealer: its domain (`d=`), selector (`s=`), key and which messages it seals.
pub struct ArcSealer {
    pub domain: String,
    pub selector: String,
    pub key_file: String,
    pub seal: SignWhen,
    /// `organization`: the sealer of this organization's versions of messages.
    pub organization: Option<String>,
    algorithm: &'static str,
    record: String,
    key: SealKey,
}

enum SealKey {
    Rsa(Sealer<RsaKey<Sha256>, Done>),
    Ed25519(Sealer<Ed25519Key, Done>),
}

impl fmt::Debug for ArcSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArcSealer")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key_file", &self.key_file)
            .field("algorithm", &self.algorithm)
            .field("seal", &self.seal)
            .finish()
    }
}

/// Why a message was not sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the leaving message cannot be parsed")]
    Unparsable,
    #[error(
        "the arriving ARC chain was already broken (a seal with cv=fail): a new seal would vouch for nothing"
    )]
    ChainFailed,
    #[error("{0}")]
    Signing(String),
}

impl ArcSealer {
    pub fn new(
        key: PrivateKey,
        domain: String,
        selector: String,
        key_file: String,
        seal: SignWhen,
    ) -> Self {
        let algorithm = key.algorithm();
        let record = key.record().to_owned();
        fn build<T: mail_auth::common::crypto::SigningKey<Hasher = Sha256>>(
            key: T,
            domain: &str,
            selector: &str,
        ) -> Sealer<T, Done> {
            Sealer::from_key(key)
                .domain(domain)
                .selector(selector)
                .headers(DEFAULT_HEADERS)
                .header_canonicalization(Canonicalization::Relaxed)
                .body_canonicalization(Canonicalization::Relaxed)
        }
        let key = match key {
            PrivateKey::Rsa(k, _) => SealKey::Rsa(build(k, &domain, &selector)),
            PrivateKey::Ed25519(k, _) => SealKey::Ed25519(build(k, &domain, &selector)),
        };
        Self {
            domain,
            selector,
            key_file,
            seal,
            organization: None,
            algorithm,
            record,
            key,
        }
    }

    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn record(&self) -> &str {
        &self.record
    }

    /// The ARC set for `leaving` (the message as it leaves), recording `results` and
    /// continuing the chain `arrived` verified on arrival: the three fields, ARC-Seal first,
    /// as (name, value) with folds as CRLF and a tab.
    pub fn seal(
        &self,
        leaving: &[u8],
        results: &AuthenticationResults<'_>,
        arrived: &ArcOutput<'_>,
    ) -> Result<Vec<(String, String)>, SealError> {
        if !arrived.can_be_sealed() {
            return Err(SealError::ChainFailed);
        }
        let message = AuthenticatedMessage::parse(leaving).ok_or(SealError::Unparsable)?;
        let text = match &self.key {
            SealKey::Rsa(s) => s
                .seal(&message, results, arrived)
                .map(|set| set.to_header()),
            SealKey::Ed25519(s) => s
                .seal(&message, results, arrived)
                .map(|set| set.to_header()),
        }
        .map_err(|e| SealError::Signing(e.to_string()))?;
        Ok(fields(&text))
    }
}

/// The fields of a header block (`Name: value` CRLF, continuation lines starting with white
/// space), as (name, value) with the value's folds kept and its leading space dropped.
fn fields(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive("\r\n") {
        match (line.starts_with([' ', '\t']), out.last_mut()) {
            (true, Some((_, value))) => value.push_str(line),
            _ => {
                let (name, value) = line.split_once(':').unwrap_or((line, ""));
                out.push((name.to_owned(), value.trim_start().to_owned()));
            }
        }
    }
    for (_, value) in &mut out {
        let kept = value.trim_end_matches("\r\n").len();
        value.truncate(kept);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_block_splits_into_its_fields_with_folds_kept() {
        let text = "ARC-Seal: i=1; a=rsa-sha256;\r\n\tb=abc\r\nARC-Message-Signature: i=1;\r\n\th=From\r\nARC-Authentication-Results: i=1; gw; dkim=pass\r\n";
        assert_eq!(
            fields(text),
            [
                (
                    "ARC-Seal".to_owned(),
                    "i=1; a=rsa-sha256;\r\n\tb=abc".to_owned()
                ),
                (
                    "ARC-Message-Signature".to_owned(),
                    "i=1;\r\n\th=From".to_owned()
                ),
                (
                    "ARC-Authentication-Results".to_owned(),
                    "i=1; gw; dkim=pass".to_owned()
                ),
            ]
        );
    }
}
