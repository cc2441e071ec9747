//! TLS toward the PostgreSQL tracking database, as libpq's `sslmode` asks for it: `disable`,
//! `prefer` (TLS when the server offers it), `require` (TLS, the certificate not checked — or
//! checked against `ca_file` when one is given, as libpq does with a root certificate),
//! `verify-ca` (a certificate from a trusted CA) and `verify-full` (that, for the host's
//! name). A fleet sends addresses, HELOs and client addresses to this database, and with
//! password authentication the password: a host off this machine is never spoken to in plain
//! text unless `sslmode=disable` is written.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err("sslmode=allow is not supported (it tries plain text first): use prefer, require, verify-ca or verify-full".into());
            }
            other => {
                return Err(format!(
                    "sslmode={other} is not a mode: use disable, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: it knows only whether TLS is off, tried or required.
    pub(super) fn for_client(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Pg;
        match self {
            Self::Disable => Pg::Disable,
            Self::Prefer => Pg::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Pg::Require,
        }
    }
}

/// The connection string without its `sslmode` (which tokio-postgres would refuse for
/// `verify-ca` and `verify-full`), and the mode it gave, in either form: a URL
/// (`postgresql://...?sslmode=verify-full`) or `key=value` words.
pub fn take_sslmode(url: &str) -> Result<(String, Option<SslMode>), String> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let mut mode = None;
    if is_url {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            match pair.strip_prefix("sslmode=") {
                Some(value) => mode = Some(SslMode::parse(value)?),
                None => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, mode));
    }
    let mut kept = Vec::new();
    for word in url.split_whitespace() {
        match word.strip_prefix("sslmode=") {
            Some(value) => mode = Some(SslMode::parse(value.trim_matches('\''))?),
            None => kept.push(word),
        }
    }
    Ok((kept.join(" "), mode))
}

/// Whether every host of `config` is this machine (a loopback address, `localhost`, or a
/// unix socket).
pub fn all_local(config: &tokio_postgres::Config) -> bool {
    config.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// The TLS connector for `mode`, trusting the system's roots and `ca`.
pub fn connector(
    mode: SslMode,
    ca: &[CertificateDer<'static>],
) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for cert in ca {
        roots
            .add(cert.clone())
            .map_err(|e| format!("a CA certificate of ca_file is not usable: {e}"))?;
    }
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let webpki = || {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
            .build()
            .map_err(|e| format!("cannot verify certificates: {e}"))
    };
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        SslMode::VerifyFull => webpki()?,
        SslMode::VerifyCa => Arc::new(AnyName(webpki()?)),
        // libpq checks the chain of a `require` connection when it has a root certificate.
        SslMode::Require | SslMode::Prefer if !ca.is_empty() => Arc::new(AnyName(webpki()?)),
        SslMode::Require | SslMode::Prefer | SslMode::Disable => Arc::new(Unchecked(provider)),
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// `verify-ca`: the chain must lead to a trusted root; the name is not compared.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `require` (and `prefer`) without a CA: encrypted, the certificate not checked (libpq's
/// meaning); the handshake's signatures are still verified.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_from_either_form() {
        assert_eq!(
            take_sslmode("postgresql://u@db.example:5432/p?sslmode=verify-full&application_name=x")
                .unwrap(),
            (
                "postgresql://u@db.example:5432/p?application_name=x".to_owned(),
                Some(SslMode::VerifyFull)
            )
        );
        assert_eq!(
            take_sslmode("postgresql://u@h/p?sslmode=disable").unwrap(),
            ("postgresql://u@h/p".to_owned(), Some(SslMode::Disable))
        );
        assert_eq!(
            take_sslmode("host=db.example user=u sslmode=verify-ca dbname=p").unwrap(),
            (
                "host=db.example user=u dbname=p".to_owned(),
                Some(SslMode::VerifyCa)
            )
        );
        assert_eq!(
            take_sslmode("postgresql://u@h/p").unwrap(),
            ("postgresql://u@h/p".to_owned(), None)
        );
        assert!(
            take_sslmode("postgresql://h/p?sslmode=allow")
                .unwrap_err()
                .contains("allow")
        );
        assert!(
            take_sslmode("host=h sslmode=strict")
                .unwrap_err()
                .contains("verify-full")
        );
    }

    #[test]
    fn loopback_and_sockets_are_local() {
        let local = |s: &str| all_local(&s.parse().unwrap());
        assert!(local("postgresql://u@127.0.0.1/p"));
        assert!(local("postgresql://u@localhost/p"));
        assert!(local("postgresql://u@[::1]:5432/p"));
        assert!(local("host=/run/postgresql user=u"));
        assert!(!local("postgresql://u@db.example/p"));
        assert!(!local("postgresql://u@192.0.2.5/p"));
        assert!(!local("host=127.0.0.1,db.example user=u"));
    }
}
