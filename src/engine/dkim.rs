//! DKIM signing (`[[dkim_signer]]`): a gateway that changes a message breaks the signature its
//! sender made, so it signs what it sends itself. The signature is made last, over the message
//! exactly as it leaves: after the content stage, the address transformation and every other
//! header edit. Relaxed canonicalization for header and body, so that an MTA re-folding a header
//! or re-ending a line does not break it.

use std::fmt;

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner as Signer, Done};

/// The header fields signed when the configuration names none. `From` is listed twice: the
/// second, absent instance is signed too ("oversigned"), so that nobody can add a second From.
/// Fields absent from a message are signed as absent, for the same reason.
pub const DEFAULT_HEADERS: [&str; 12] = [
    "From",
    "To",
    "Cc",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// Which messages a signer signs.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SignWhen {
    /// Only messages Postern changed (content rules, a rewritten From/To/Cc): the sender's own
    /// signature is broken on those. Untouched messages leave byte for byte as they came.
    Transformed,
    /// Every outbound message from the domain.
    #[default]
    All,
}

impl SignWhen {
    pub fn name(self) -> &'static str {
        match self {
            Self::Transformed => "transformed",
            Self::All => "all",
        }
    }
}

/// A private key as read from a key file, before it is given to a signer or a sealer: RSA
/// (2048 bits or more, rsa-sha256) or Ed25519 (ed25519-sha256), with the DNS record that
/// publishes its public half.
pub enum PrivateKey {
    Rsa(RsaKey<Sha256>, String),
    Ed25519(Ed25519Key, String),
}

impl PrivateKey {
    /// Reads a PKCS#1 or PKCS#8 private key in DER; what is wrong when it is neither an RSA
    /// key ring accepts for signing nor an Ed25519 key.
    pub fn from_der(der: rustls_pki_types::PrivateKeyDer<'_>) -> Result<Self, String> {
        let rsa = RsaKey::<Sha256>::from_key_der(der.clone_key());
        let key = match (rsa, &der) {
            (Ok(key), _) => {
                let record = record("rsa", &rsa_public_key_info(&key.public_key()));
                return Ok(Self::Rsa(key, record));
            }
            (Err(rsa_error), rustls_pki_types::PrivateKeyDer::Pkcs8(pkcs8)) => {
                Ed25519Key::from_pkcs8_maybe_unchecked_der(pkcs8.secret_pkcs8_der())
                    .map_err(|_| rsa_error.to_string())?
            }
            (Err(e), _) => return Err(e.to_string()),
        };
        // RFC 8463: an Ed25519 record holds the bare 32-byte key.
        let record = record("ed25519", &key.public_key());
        Ok(Self::Ed25519(key, record))
    }

    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Rsa(..) => "rsa-sha256",
            Self::Ed25519(..) => "ed25519-sha256",
        }
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn record(&self) -> &str {
        match self {
            Self::Rsa(_, record) | Self::Ed25519(_, record) => record,
        }
    }
}

/// A DKIM signer's key, ready to sign for its domain and selector.
pub struct SigningKey {
    kind: KeyKind,
    algorithm: &'static str,
    record: String,
}

enum KeyKind {
    Rsa(Signer<RsaKey<Sha256>, Done>),
    Ed25519(Signer<Ed25519Key, Done>),
}

impl SigningKey {
    /// Whether a signature costs enough CPU (RSA: a millisecond or more) to be made off the
    /// connection's thread.
    pub fn is_costly(&self) -> bool {
        matches!(self.kind, KeyKind::Rsa(_))
    }

    pub fn new(key: PrivateKey, domain: &str, selector: &str, headers: &[String]) -> Self {
        let algorithm = key.algorithm();
        let (kind, record) = match key {
            PrivateKey::Rsa(key, record) => (
                KeyKind::Rsa(build(Signer::from_key(key), domain, selector, headers)),
                record,
            ),
            PrivateKey::Ed25519(key, record) => (
                KeyKind::Ed25519(build(Signer::from_key(key), domain, selector, headers)),
                record,
            ),
        };
        Self {
            kind,
            algorithm,
            record,
        }
    }

    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn record(&self) -> &str {
        &self.record
    }
}

fn record(kind: &str, public_key: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        "v=DKIM1; k={kind}; p={}",
        base64::engine::general_purpose::STANDARD.encode(public_key)
    )
}

/// An RSA public key (PKCS#1 `RSAPublicKey`) as the SubjectPublicKeyInfo DKIM records carry,
/// as `openssl pkey -pubout` writes it.
fn rsa_public_key_info(pkcs1: &[u8]) -> Vec<u8> {
    fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = value.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(value);
        out
    }
    // rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
    let algorithm = tlv(
        0x30,
        &[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
        ],
    );
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut info = algorithm;
    info.extend(tlv(0x03, &bits));
    tlv(0x30, &info)
}

fn build<T: mail_auth::common::crypto::SigningKey>(
    signer: mail_auth::dkim::DkimSigner<T, mail_auth::dkim::NeedDomain>,
    domain: &str,
    selector: &str,
    headers: &[String],
) -> Signer<T, Done> {
    signer
        .domain(domain)
        .selector(selector)
        .headers(headers.iter().cloned())
        .header_canonicalization(Canonicalization::Relaxed)
        .body_canonicalization(Canonicalization::Relaxed)
}

/// One signer: the domain it signs for (`d=`, also its sub-domains' mail), the selector
/// (`s=`), its key, and which clients may have its signature.
pub struct DkimSigner {
    pub domain: String,
    pub selector: String,
    pub key_file: String,
    pub headers: Vec<String>,
    pub sign: SignWhen,
    pub key: SigningKey,
    pub clients: SignerClients,
}

/// Which outbound clients a signer signs for, beyond writing its domain in From: without this,
/// any client that may relay could obtain any hosted domain's signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignerClients {
    /// Authenticated users (`users`): a name, `@domain` (users named by an address in that
    /// domain or a sub-domain of it), or `*` (every authenticated user).
    pub users: Vec<String>,
    /// Connection profiles whose clients, unauthenticated, may have the signature
    /// (`connection_profiles`); `None`: every unauthenticated outbound client (allowed relay
    /// sources, internal profiles, local submission).
    pub connection_profiles: Option<Vec<String>>,
    /// `organization`: only senders of this organization may have the signature, whoever
    /// else the lists above let in.
    pub organization: Option<String>,
}

/// The client a message comes from, as a signer asks about it.
#[derive(Clone, Copy, Debug)]
pub struct SigningClient<'a> {
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// The client's connection profile, if any.
    pub profile: Option<&'a str>,
    /// The sender's organization, if any.
    pub organization: Option<&'a str>,
}

impl SignerClients {
    /// Whether `client` may have the signature.
    pub fn permit(&self, client: SigningClient<'_>) -> bool {
        if self
            .organization
            .as_deref()
            .is_some_and(|o| client.organization != Some(o))
        {
            return false;
        }
        match client.user {
            Some(user) => self.users.iter().any(|u| user_matches(u, user)),
            None => match &self.connection_profiles {
                None => true,
                Some(names) => client.profile.is_some_and(|p| names.iter().any(|n| n == p)),
            },
        }
    }
}

/// Whether the `users` entry `entry` covers the user `user`.
fn user_matches(entry: &str, user: &str) -> bool {
    if entry == "*" {
        return true;
    }
    match entry.strip_prefix('@') {
        Some(domain) => user.rsplit_once('@').is_some_and(|(_, d)| {
            let (d, domain) = (d.to_ascii_lowercase(), domain.to_ascii_lowercase());
            d == domain || d.ends_with(&format!(".{domain}"))
        }),
        None => entry == user,
    }
}

impl fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("key_file", &self.key_file)
            .field("algorithm", &self.key.algorithm())
            .field("sign", &self.sign)
            .finish()
    }
}

impl DkimSigner {
    /// The `DKIM-Signature` field's value over `message` (header and body, as it leaves), on
    /// one line.
    pub fn sign(&self, message: &[u8]) -> Result<String, String> {
        let signature = match &self.key.kind {
            KeyKind::Rsa(s) => s.sign(message),
            KeyKind::Ed25519(s) => s.sign(message),
        }
        .map_err(|e| e.to_string())?;
        let field = signature.to_header();
        let value = field
            .split_once(':')
            .map_or(field.as_str(), |(_, v)| v)
            .replace("\r\n", "")
            .replace('\t', " ");
        Ok(value.trim().to_owned())
    }
}

/// The signers, in configuration order.
#[derive(Debug, Default)]
pub struct DkimSigners(pub Vec<DkimSigner>);

impl DkimSigners {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first signer for the domain of the message's author (its From address: its own
    /// domain or a parent of it, so that `d=` aligns with From for DMARC) that `client` may
    /// use; `Err` with the first such signer's domain when there are signers for the domain
    /// but the client may use none of them.
    pub fn for_author(
        &self,
        from_domain: &str,
        client: SigningClient<'_>,
    ) -> Result<Option<&DkimSigner>, &str> {
        let from = from_domain.trim_end_matches('.').to_ascii_lowercase();
        let mut for_domain = self.0.iter().filter(|s| {
            let d = s.domain.to_ascii_lowercase();
            from == d || from.ends_with(&format!(".{d}"))
        });
        let Some(first) = for_domain.next() else {
            return Ok(None);
        };
        std::iter::once(first)
            .chain(for_domain)
            .find(|s| s.clients.permit(client))
            .map(Some)
            .ok_or(first.domain.as_str())
    }
}

/// The headers a signer signs: `From` first and oversigned, then the others as given.
pub fn signed_headers(configured: Option<Vec<String>>) -> Result<Vec<String>, String> {
    let list: Vec<String> = match configured {
        Some(list) => list,
        None => DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
    };
    if let Some(bad) = list
        .iter()
        .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':'))
    {
        return Err(format!("{bad:?} is not a header field name"));
    }
    if !list.iter().any(|h| h.eq_ignore_ascii_case("From")) {
        return Err("the signed headers must include From (RFC 6376 §5.4)".into());
    }
    let mut headers = vec!["From".to_owned(), "From".to_owned()];
    headers.extend(list.into_iter().filter(|h| !h.eq_ignore_ascii_case("From")));
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signer_signs_only_for_the_clients_it_names() {
        let user = |u| SigningClient {
            user: Some(u),
            profile: None,
            organization: None,
        };
        let default = SignerClients {
            users: vec!["@acme.test".into()],
            connection_profiles: None,
            organization: None,
        };
        assert!(default.permit(user("ann@acme.test")));
        assert!(default.permit(user("ann@Mail.ACME.test")));
        assert!(!default.permit(user("eve@evil.test")));
        assert!(!default.permit(user("eve@notacme.test")));
        assert!(!default.permit(user("ann")));
        let unauthenticated = SigningClient {
            user: None,
            profile: None,
            organization: None,
        };
        assert!(default.permit(unauthenticated), "relay sources, local");
        let named = SignerClients {
            users: vec!["ann".into(), "*".into()],
            connection_profiles: Some(vec!["acme-servers".into()]),
            organization: None,
        };
        assert!(named.permit(user("anyone")));
        assert!(!named.permit(unauthenticated));
        assert!(named.permit(SigningClient {
            user: None,
            profile: Some("acme-servers"),
            organization: None,
        }));
        assert!(!named.permit(SigningClient {
            user: None,
            profile: Some("other"),
            organization: None,
        }));
    }

    #[test]
    fn an_organizations_signer_signs_only_its_senders_mail() {
        let globex = SignerClients {
            users: vec!["*".into()],
            connection_profiles: None,
            organization: Some("globex".into()),
        };
        let client = |organization| SigningClient {
            user: Some("alice"),
            profile: None,
            organization,
        };
        assert!(globex.permit(client(Some("globex"))));
        assert!(!globex.permit(client(Some("acme"))), "acme's user");
        assert!(!globex.permit(client(None)));
    }

    #[test]
    fn from_is_required_and_oversigned() {
        let h = signed_headers(None).unwrap();
        assert_eq!(&h[..3], ["From", "From", "To"]);
        assert_eq!(h.iter().filter(|h| *h == "From").count(), 2);
        assert!(signed_headers(Some(vec!["Subject".into()])).is_err());
        assert!(signed_headers(Some(vec!["Fr om".into()])).is_err());
        assert_eq!(
            signed_headers(Some(vec!["subject".into(), "from".into()])).unwrap(),
            ["From", "From", "subject"]
        );
    }
}
