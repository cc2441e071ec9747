//! `[[dkim_signer]]`: the domains Postern signs outbound mail for, and their keys
//! (src/engine/dkim.rs).

use std::path::{Path, PathBuf};

use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative, valid_hostname};
use crate::engine::dkim::{
    DkimSigner, DkimSigners, PrivateKey, SignWhen, SignerClients, SigningKey, signed_headers,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DkimSignerSection {
    domain: Spanned<String>,
    selector: Spanned<String>,
    key_file: Spanned<PathBuf>,
    headers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    sign: SignWhen,
    /// Unset: users named by an address in the signer's domain.
    users: Option<Spanned<Vec<String>>>,
    /// Unset: every unauthenticated outbound client.
    connection_profiles: Option<Spanned<Vec<String>>>,
    /// Signs only the mail of this organization's senders.
    organization: Option<Spanned<String>>,
}

pub(super) fn compile(
    sections: Vec<DkimSignerSection>,
    profile_names: &[String],
    organization_names: &[String],
    config_dir: Option<&Path>,
) -> Result<DkimSigners, Invalid> {
    let mut signers = Vec::with_capacity(sections.len());
    for (i, s) in sections.into_iter().enumerate() {
        let key = |k: &str| format!("dkim_signer[{i}].{k}");
        let (domain, selector) = domain_and_selector(&s.domain, &s.selector, key)?;
        let (headers_span, headers) = match s.headers {
            Some(h) => (h.span(), Some(h.into_inner())),
            None => (s.domain.span(), None),
        };
        let headers = signed_headers(headers).map_err(|e| (headers_span, key("headers"), e))?;
        let span = s.key_file.span();
        let path = relative(s.key_file.into_inner(), config_dir);
        let signing_key = load_key(&path, "DKIM private key")
            .map(|k| SigningKey::new(k, &domain, &selector, &headers))
            .map_err(|e| (span, key("key_file"), e))?;
        let users = match s.users {
            Some(users) => {
                if let Some(bad) = users.get_ref().iter().find(|u| u.trim().is_empty()) {
                    return Err((
                        users.span(),
                        key("users"),
                        format!("{bad:?} is not a user: write a user name, @domain or *"),
                    ));
                }
                users.into_inner()
            }
            None => vec![format!("@{domain}")],
        };
        let connection_profiles = match s.connection_profiles {
            Some(names) => {
                if let Some(unknown) = names.get_ref().iter().find(|n| !profile_names.contains(n)) {
                    return Err((
                        names.span(),
                        key("connection_profiles"),
                        format!(
                            "no [[connection_profile]] is named {unknown:?} (known: {})",
                            profile_names.join(", ")
                        ),
                    ));
                }
                Some(names.into_inner())
            }
            None => None,
        };
        let organization =
            super::organizations::named(s.organization, organization_names, key("organization"))?;
        signers.push(DkimSigner {
            clients: SignerClients {
                users,
                connection_profiles,
                organization,
            },
            domain,
            selector,
            key_file: path.display().to_string(),
            headers,
            sign: s.sign,
            key: signing_key,
        });
    }
    Ok(DkimSigners(signers))
}

/// A signer's or sealer's `domain` (lower case, no final dot) and `selector`, checked; `key`
/// names a key of its section.
pub(super) fn domain_and_selector(
    domain: &Spanned<String>,
    selector: &Spanned<String>,
    key: impl Fn(&str) -> String,
) -> Result<(String, String), Invalid> {
    let name = domain.get_ref().trim_end_matches('.').to_ascii_lowercase();
    if !valid_hostname(&name) || !name.contains('.') {
        return Err((
            domain.span(),
            key("domain"),
            format!("{:?} is not a domain name", domain.get_ref()),
        ));
    }
    let label = selector.get_ref().clone();
    if !valid_hostname(&label) {
        return Err((
            selector.span(),
            key("selector"),
            format!(
                "{label:?} is not a selector (letters, digits, '-' and '.'; the key is published at <selector>._domainkey.{name})"
            ),
        ));
    }
    Ok((name, label))
}

/// Reads a PEM private key (RSA of 2048 bits or more, PKCS#1 or PKCS#8; or Ed25519, PKCS#8),
/// a signer's or a sealer's (`what` names it in errors).
pub(super) fn load_key(path: &Path, what: &str) -> Result<PrivateKey, String> {
    let pem = crate::secret_file::read(path, what).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{} holds no PEM private key ({e}); make one with `openssl genpkey -algorithm ed25519` or `openssl genrsa 2048`",
            path.display()
        )
    })?;
    PrivateKey::from_der(der).map_err(|e| {
        format!(
            "{}: not an RSA key of 2048 to 8192 bits nor an Ed25519 key ({e})",
            path.display()
        )
    })
}
