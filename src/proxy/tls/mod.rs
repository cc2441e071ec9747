//! The proxy's TLS server side (rustls with ring): certificate, chain and key from PEM files
//! (the key possibly encrypted, see [`key`]), minimum version, cipher suites (OpenSSL or
//! rustls names, see [`ciphers`]) and client certificates (none, optional or required, as
//! `cert_reqs` in Python's ssl module). Built at start and again on SIGHUP, so renewed
//! certificates take effect without a restart.

pub mod ciphers;
mod key;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::{CryptoProvider, ring};
use rustls::server::WebPkiClientVerifier;
use rustls::{CipherSuite, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio_rustls::TlsAcceptor;

/// Whether the proxy offers TLS: not at all, alongside plaintext, or only.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsSupport {
    /// Plain SMTP only, no STARTTLS, no implicit TLS listener.
    Disabled,
    /// STARTTLS on the plain listeners and implicit TLS on `listen_tls`.
    #[default]
    Enabled,
    /// Implicit TLS listeners only.
    Required,
}

/// Whether clients must show a certificate.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    #[default]
    None,
    /// Asked for; a certificate that is shown must verify against `ca_certs`.
    Optional,
    /// The handshake fails without a certificate that verifies against `ca_certs`.
    Required,
}

/// Minimum TLS version.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS settings of the proxy, as configured (`[proxy]`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub support: TlsSupport,
    pub certificate_file: Option<PathBuf>,
    /// Intermediate certificates, sent after those of `certificate_file`.
    pub chain_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// The pass phrase of an encrypted `key_file`, on the file's first line.
    pub key_passphrase_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// The suites offered, in this order; empty: rustls's safe defaults.
    pub cipher_suites: Vec<CipherSuite>,
    pub client_certificates: ClientCertificates,
    pub ca_certs: Option<PathBuf>,
}

/// Why the TLS settings cannot be used: the `[proxy]` key at fault and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError {
    pub key: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(key: &'static str, message: String) -> Self {
        Self { key, message }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[proxy] {}: {}", self.key, self.message)
    }
}

/// The certificates of a PEM file, at least one.
fn certificates(file: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            TlsError::new(
                key,
                format!("{}: cannot read the certificates: {e}", file.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            key,
            format!(
                "{}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
                file.display()
            ),
        ));
    }
    Ok(certs)
}

impl TlsSettings {
    /// The acceptor for these settings; `None` when TLS is disabled or no certificate is
    /// configured. Errors name the key, the file and what to do.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, String> {
        self.build().map_err(|e| e.to_string())
    }

    /// As [`acceptor`](Self::acceptor), with the key at fault apart.
    pub fn build(&self) -> Result<Option<TlsAcceptor>, TlsError> {
        if self.support == TlsSupport::Disabled {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (&self.certificate_file, &self.key_file) else {
            return Ok(None);
        };
        let mut certs = certificates(cert_file, "certificate_file")?;
        if let Some(chain) = &self.chain_file {
            certs.extend(certificates(chain, "chain_file")?);
        }
        let key = key::load(key_file, self.key_passphrase_file.as_deref())?;
        let mut provider = ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let offered = std::mem::take(&mut provider.cipher_suites);
            provider.cipher_suites = self
                .cipher_suites
                .iter()
                .filter_map(|wanted| offered.iter().find(|s| s.suite() == *wanted).copied())
                .collect();
            if self.min_version == TlsVersion::Tls13
                && !provider.cipher_suites.iter().any(|s| s.tls13().is_some())
            {
                return Err(TlsError::new(
                    "cipher_suites",
                    "min_tls_version = \"1.3\" allows TLS 1.3 only, and cipher_suites names no TLS 1.3 suite: add one (TLS_AES_256_GCM_SHA384, TLS_AES_128_GCM_SHA256, TLS_CHACHA20_POLY1305_SHA256) or set min_tls_version = \"1.2\"".to_owned(),
                ));
            }
        }
        if self.min_version == TlsVersion::Tls12 && !self.cipher_suites.is_empty() {
            self.tls12_suites_fit(&provider, &key, key_file)?;
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| {
                TlsError::new(
                    "cipher_suites",
                    format!("no suite of cipher_suites is usable with min_tls_version: {e}; add a suite of that version"),
                )
            })?;
        let builder = match self.client_certificates {
            ClientCertificates::None => builder.with_no_client_auth(),
            required => {
                let verifier = self
                    .client_verifier(provider, required)
                    .map_err(|m| TlsError::new("ca_certs", m))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| {
            TlsError::new(
                "key_file",
                format!(
                    "{}: the key does not fit the certificate of {}: {e}",
                    key_file.display(),
                    cert_file.display()
                ),
            )
        })?;
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
    }

    /// TLS 1.2 suites name the key type they sign with (ECDHE-ECDSA, ECDHE-RSA): when
    /// `cipher_suites` names TLS 1.2 suites, one of them must fit the key, or every TLS 1.2
    /// client fails its handshake while the configuration looks right.
    fn tls12_suites_fit(
        &self,
        provider: &CryptoProvider,
        key: &PrivateKeyDer<'static>,
        key_file: &Path,
    ) -> Result<(), TlsError> {
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter_map(|s| match s {
                SupportedCipherSuite::Tls12(s) => Some(*s),
                SupportedCipherSuite::Tls13(_) => None,
            })
            .collect();
        if tls12.is_empty() {
            return Ok(());
        }
        let signing = provider
            .key_provider
            .load_private_key(key.clone_key())
            .map_err(|e| {
                TlsError::new(
                    "key_file",
                    format!("{}: the key cannot sign: {e}", key_file.display()),
                )
            })?;
        if tls12
            .iter()
            .any(|s| signing.choose_scheme(s.sign).is_some())
        {
            return Ok(());
        }
        let kind = format!("{:?}", signing.algorithm());
        Err(TlsError::new(
            "cipher_suites",
            format!(
                "the key of {} is {kind}, and no TLS 1.2 suite of cipher_suites signs with it: TLS 1.2 clients could not connect; add suites for the key (ECDHE-ECDSA-... for an ECDSA or Ed25519 key, ECDHE-RSA-... for an RSA key), or set min_tls_version = \"1.3\"",
                key_file.display()
            ),
        ))
    }

    fn client_verifier(
        &self,
        provider: Arc<CryptoProvider>,
        reqs: ClientCertificates,
    ) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
        let Some(ca) = &self.ca_certs else {
            return Err(
                "client_certificates needs ca_certs: the CA certificates (PEM) that client certificates must chain to"
                    .to_owned(),
            );
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("{}: cannot read CA certificates: {e}", ca.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: unusable CA certificate: {e}", ca.display()))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if reqs == ClientCertificates::Optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map_err(|e| format!("{}: {e}", ca.display()))
    }
}
