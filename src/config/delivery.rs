//! `[delivery]` and `[[relay_target]]`: the servers the proxy door relays accepted messages
//! to, how it authenticates and encrypts toward them, and its timeouts.

use std::num::NonZeroU64;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;

use crate::relay::tls::ClientTls;
use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative};
use crate::proxy::tls::TlsVersion;
use crate::relay::{ConnectionCache, Delivery, RelayAuth, RelayTarget, Security};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DeliverySection {
    helo_name: Option<String>,
    /// The local address connections to relay targets come from; unset, the system's choice.
    source_address: Option<std::net::IpAddr>,
    connection_timeout: NonZeroU64,
    protocol_timeout: NonZeroU64,
    data_timeout: NonZeroU64,
    connection_cache_time: u64,
    max_idle_connections: usize,
    xforward: bool,
    noop_interval: u64,
}

impl Default for DeliverySection {
    fn default() -> Self {
        let nz = |n| NonZeroU64::new(n).expect("nonzero");
        Self {
            helo_name: None,
            source_address: None,
            connection_timeout: nz(60),
            protocol_timeout: nz(60),
            data_timeout: nz(600),
            connection_cache_time: 2,
            max_idle_connections: 64,
            xforward: true,
            noop_interval: 60,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RelayTargetSection {
    name: Spanned<String>,
    host: String,
    #[serde(default = "smtp_port")]
    port: u16,
    // A key an error can be about keeps its line; unset, it takes the default noted.
    /// Unset: [`HIGHEST`].
    priority: Option<Spanned<u32>>,
    /// Unset: `none`.
    security: Option<Spanned<Security>>,
    /// Unset: `none`.
    auth: Option<Spanned<RelayAuth>>,
    /// Unset: empty.
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    password_env: Option<Spanned<String>>,
    /// Extra CA certificates (PEM) trusted for this target, beside the system's.
    ca_file: Option<Spanned<PathBuf>>,
    /// A certificate (PEM, with its chain) and key Postern shows the target, when it asks.
    client_certificate_file: Option<Spanned<PathBuf>>,
    client_key_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    min_tls_version: TlsVersion,
    #[serde(default)]
    divert_only: bool,
    /// Unset: [`RFC5321_LINE`].
    line_limit: Option<Spanned<usize>>,
    /// Allow AUTH toward a target without TLS (a password in the clear on the network).
    #[serde(default)]
    auth_over_plaintext: bool,
}

/// The default `line_limit`: RFC 5321's, CRLF included.
pub(super) const RFC5321_LINE: usize = 1000;

/// The default `priority`.
const HIGHEST: u32 = 1;

fn smtp_port() -> u16 {
    25
}

pub(super) fn compile(
    d: DeliverySection,
    targets: Vec<RelayTargetSection>,
    hostname: &str,
    config_dir: Option<&Path>,
) -> Result<Delivery, Invalid> {
    let mut compiled: Vec<RelayTarget> = Vec::new();
    for (i, t) in targets.into_iter().enumerate() {
        let key = format!("relay_target[{i}]");
        let name = t.name.get_ref().clone();
        if compiled.iter().any(|c| c.name == name) {
            return Err((
                t.name.span(),
                format!("{key}.name"),
                format!("relay target {name:?} is defined twice"),
            ));
        }
        let line_limit = match &t.line_limit {
            Some(l) if *l.get_ref() != 0 && *l.get_ref() < 80 => {
                return Err((
                    l.span(),
                    format!("{key}.line_limit"),
                    format!(
                        "{} octets is too short for mail; give at least 80, or 0 for no limit",
                        l.get_ref()
                    ),
                ));
            }
            Some(l) => *l.get_ref(),
            None => RFC5321_LINE,
        };
        let priority = match &t.priority {
            Some(p) if *p.get_ref() == 0 => {
                return Err((
                    p.span(),
                    format!("{key}.priority"),
                    "priority starts at 1 (highest)".into(),
                ));
            }
            Some(p) => *p.get_ref(),
            None => HIGHEST,
        };
        let credentials = match &t.auth {
            Some(auth) if *auth.get_ref() != RelayAuth::None => {
                Some(credentials(&t, auth.span(), &key, config_dir)?)
            }
            _ => None,
        };
        let tls = match &t.security {
            Some(security) if *security.get_ref() != Security::None => {
                Some(tls(&t, security.span(), &key, config_dir)?)
            }
            _ => {
                if let Some(file) = t
                    .client_certificate_file
                    .as_ref()
                    .or(t.client_key_file.as_ref())
                {
                    return Err((
                        file.span(),
                        format!("{key}.client_certificate_file"),
                        "a client certificate is shown only over TLS: set security = \"tls\", \"ssl\" or \"auto\"".into(),
                    ));
                }
                None
            }
        };
        compiled.push(RelayTarget {
            name,
            host: t.host,
            port: t.port,
            priority,
            security: t
                .security
                .map_or_else(Security::default, Spanned::into_inner),
            auth: t.auth.map_or_else(RelayAuth::default, Spanned::into_inner),
            credentials,
            tls,
            divert_only: t.divert_only,
            line_limit,
            auth_over_plaintext: t.auth_over_plaintext,
            source_address: d.source_address,
        });
    }
    let secs = |n: NonZeroU64| Duration::from_secs(n.get());
    let mut delivery = Delivery::new(
        compiled,
        d.helo_name.unwrap_or_else(|| hostname.to_owned()),
        secs(d.connection_timeout),
        secs(d.protocol_timeout),
        secs(d.data_timeout),
        ConnectionCache {
            keep: Duration::from_secs(d.connection_cache_time),
            max_idle: d.max_idle_connections,
        },
    );
    delivery.xforward = d.xforward;
    delivery.noop_interval = (d.noop_interval > 0).then(|| Duration::from_secs(d.noop_interval));
    Ok(delivery)
}

/// AUTH toward a target: its username, and its password read now. `auth` is where the file
/// sets `auth`, named when the key at fault is missing.
fn credentials(
    t: &RelayTargetSection,
    auth: Range<usize>,
    key: &str,
    config_dir: Option<&Path>,
) -> Result<Credentials, Invalid> {
    let plain = t
        .security
        .as_ref()
        .is_none_or(|s| *s.get_ref() == Security::None);
    if plain && !t.auth_over_plaintext {
        return Err((
            auth,
            format!("{key}.auth"),
            format!(
                "relay target {:?} would send its password in plaintext (security = \"none\"); use security = \"tls\" or \"ssl\", or set auth_over_plaintext = true if the network is trusted",
                t.name.get_ref()
            ),
        ));
    }
    let username = t.username.as_ref().map_or("", |u| u.get_ref().as_str());
    if username.is_empty() {
        let at = t.username.as_ref().map_or(auth, Spanned::span);
        return Err((
            at,
            format!("{key}.username"),
            "auth needs a username".into(),
        ));
    }
    // A password that cannot be read is reported where it was to come from.
    let at = t
        .password_file
        .as_ref()
        .map(Spanned::span)
        .or_else(|| t.password_env.as_ref().map(Spanned::span))
        .unwrap_or(auth);
    let file = t
        .password_file
        .as_ref()
        .map(|f| relative(f.get_ref().clone(), config_dir));
    let env = t.password_env.as_ref().map(|e| e.get_ref().as_str());
    let secret = crate::secret_file::load_secret(file.as_deref(), env, "relay password")
        .map_err(|m| (at.clone(), format!("{key}.password_file"), m.to_string()))?;
    let password = String::from_utf8(secret.as_bytes().to_vec()).map_err(|_| {
        (
            at,
            format!("{key}.password_file"),
            "the password is not UTF-8".into(),
        )
    })?;
    Ok(Credentials::new(username.to_owned(), password))
}

/// TLS toward a target, with its extra CA certificates read now. `security` is where the
/// file sets `security`.
fn tls(
    t: &RelayTargetSection,
    security: Range<usize>,
    key: &str,
    config_dir: Option<&Path>,
) -> Result<ClientTls, Invalid> {
    let extra = match &t.ca_file {
        Some(ca) => super::ca_certificates(&relative(ca.get_ref().clone(), config_dir))
            .map_err(|e| (ca.span(), format!("{key}.ca_file"), e))?,
        None => Vec::new(),
    };
    let client = match (&t.client_certificate_file, &t.client_key_file) {
        (Some(cert), Some(private)) => {
            let chain = super::ca_certificates(&relative(cert.get_ref().clone(), config_dir))
                .map_err(|e| (cert.span(), format!("{key}.client_certificate_file"), e))?;
            let path = relative(private.get_ref().clone(), config_dir);
            let pem = crate::secret_file::read(&path, "client key").map_err(|e| {
                (
                    private.span(),
                    format!("{key}.client_key_file"),
                    e.to_string(),
                )
            })?;
            use rustls_pki_types::pem::PemObject;
            let private_key =
                rustls_pki_types::PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
                    (
                        private.span(),
                        format!("{key}.client_key_file"),
                        format!("{}: not a PEM private key: {e}", path.display()),
                    )
                })?;
            Some((chain, private_key))
        }
        (Some(one), None) | (None, Some(one)) => {
            return Err((
                one.span(),
                format!("{key}.client_certificate_file"),
                "give both client_certificate_file and client_key_file".into(),
            ));
        }
        (None, None) => None,
    };
    ClientTls::new(
        &t.host,
        extra,
        t.min_tls_version == TlsVersion::Tls13,
        client,
    )
    .map_err(|e| {
        (
            security,
            format!("{key}.security"),
            format!("cannot set up TLS for {}: {e}", t.host),
        )
    })
}
