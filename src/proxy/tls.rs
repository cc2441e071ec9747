//! The proxy's TLS server side (rustls with ring): certificate chain and key from PEM files,
//! minimum version, cipher suites and client certificates (none, optional or
//! required, as `cert_reqs` in Python's ssl module). Built at
//! start and again on SIGHUP, so renewed certificates take effect without a restart.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::{CryptoProvider, ring};
use rustls::server::WebPkiClientVerifier;
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
    pub key_file: Option<PathBuf>,
    pub min_version: TlsVersion,
    /// rustls suite names (`TLS13_AES_256_GCM_SHA384`); empty: rustls's safe defaults.
    pub cipher_suites: Vec<String>,
    pub client_certificates: ClientCertificates,
    pub ca_certs: Option<PathBuf>,
}

impl TlsSettings {
    /// The acceptor for these settings; `None` when TLS is disabled or no certificate is
    /// configured. Errors name the file and what to do.
    pub fn acceptor(&self) -> Result<Option<TlsAcceptor>, String> {
        if self.support == TlsSupport::Disabled {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (&self.certificate_file, &self.key_file) else {
            return Ok(None);
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| {
                format!(
                    "{}: cannot read the certificate chain: {e}",
                    cert_file.display()
                )
            })?;
        if certs.is_empty() {
            return Err(format!(
                "{}: no PEM certificate found (expected -----BEGIN CERTIFICATE-----)",
                cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
            format!(
                "{}: cannot read the private key (PEM, PKCS#8, PKCS#1 or SEC1): {e}",
                key_file.display()
            )
        })?;
        let mut provider = ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let wanted = &self.cipher_suites;
            let known: Vec<String> = provider
                .cipher_suites
                .iter()
                .filter_map(|s| s.suite().as_str().map(str::to_owned))
                .collect();
            if let Some(bad) = wanted.iter().find(|w| !known.contains(w)) {
                return Err(format!(
                    "cipher suite {bad:?} is not known; choose from {}",
                    known.join(", ")
                ));
            }
            provider.cipher_suites.retain(|s| {
                s.suite()
                    .as_str()
                    .is_some_and(|n| wanted.iter().any(|w| w == n))
            });
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match self.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let provider = Arc::new(provider);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| format!("TLS versions and cipher suites do not fit together: {e}"))?;
        let builder = match self.client_certificates {
            ClientCertificates::None => builder.with_no_client_auth(),
            required => {
                let verifier = self.client_verifier(provider, required)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder.with_single_cert(certs, key).map_err(|e| {
            format!(
                "{}: the key does not fit the certificate: {e}",
                key_file.display()
            )
        })?;
        Ok(Some(TlsAcceptor::from(Arc::new(config))))
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
