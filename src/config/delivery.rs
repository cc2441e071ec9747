//! `[delivery]` and `[[relay_target]]`: the servers the proxy door relays accepted messages
//! to, how it authenticates and encrypts toward them, and its timeouts.

use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters, TlsVersion as LettreTlsVersion};
use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative};
use crate::engine::rules::protect::Secret;
use crate::proxy::tls::TlsVersion;
use crate::relay::{Delivery, RelayAuth, RelayTarget, Security};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct DeliverySection {
    helo_name: Option<String>,
    connection_timeout: NonZeroU64,
    protocol_timeout: NonZeroU64,
    data_timeout: NonZeroU64,
    connection_cache_time: u64,
    xforward: bool,
}

impl Default for DeliverySection {
    fn default() -> Self {
        let nz = |n| NonZeroU64::new(n).expect("nonzero");
        Self {
            helo_name: None,
            connection_timeout: nz(60),
            protocol_timeout: nz(60),
            data_timeout: nz(600),
            connection_cache_time: 2,
            xforward: true,
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
    #[serde(default = "highest")]
    priority: u32,
    #[serde(default)]
    security: Security,
    #[serde(default)]
    auth: RelayAuth,
    #[serde(default)]
    username: String,
    password_file: Option<PathBuf>,
    password_env: Option<String>,
    /// Extra CA certificates (PEM) trusted for this target, beside the system's.
    ca_file: Option<PathBuf>,
    #[serde(default)]
    min_tls_version: TlsVersion,
    #[serde(default)]
    divert_only: bool,
    #[serde(default = "rfc5321_line")]
    line_limit: usize,
    /// Allow AUTH toward a target without TLS (a password in the clear on the network).
    #[serde(default)]
    auth_over_plaintext: bool,
}

fn rfc5321_line() -> usize {
    1000
}

fn smtp_port() -> u16 {
    25
}

fn highest() -> u32 {
    1
}

pub(super) fn compile(
    d: DeliverySection,
    targets: Vec<RelayTargetSection>,
    hostname: &str,
    config_dir: Option<&Path>,
) -> Result<Delivery, Invalid> {
    let mut compiled: Vec<RelayTarget> = Vec::new();
    for (i, t) in targets.into_iter().enumerate() {
        let key = |k: &str| format!("relay_target[{i}].{k}");
        let span = t.name.span();
        let name = t.name.into_inner();
        if compiled.iter().any(|c| c.name == name) {
            return Err((
                span,
                key("name"),
                format!("relay target {name:?} is defined twice"),
            ));
        }
        if t.line_limit != 0 && t.line_limit < 80 {
            return Err((
                span,
                key("line_limit"),
                format!(
                    "{} octets is too short for mail; give at least 80, or 0 for no limit",
                    t.line_limit
                ),
            ));
        }
        if t.priority == 0 {
            return Err((
                span,
                key("priority"),
                "priority starts at 1 (highest)".into(),
            ));
        }
        if t.auth != RelayAuth::None && t.security == Security::None && !t.auth_over_plaintext {
            return Err((
                span,
                key("auth"),
                format!(
                    "relay target {name:?} would send its password in plaintext (security = \"none\"); use security = \"tls\" or \"ssl\", or set auth_over_plaintext = true if the network is trusted"
                ),
            ));
        }
        let credentials = match t.auth {
            RelayAuth::None => None,
            _ => {
                if t.username.is_empty() {
                    return Err((span, key("username"), "auth needs a username".into()));
                }
                let file = t.password_file.map(|f| relative(f, config_dir));
                let secret =
                    Secret::load(file.as_deref(), t.password_env.as_deref()).map_err(|m| {
                        (
                            span.clone(),
                            key("password_file"),
                            m.replace("key", "password"),
                        )
                    })?;
                let password = String::from_utf8(secret.as_bytes().to_vec()).map_err(|_| {
                    (
                        span.clone(),
                        key("password_file"),
                        "the password is not UTF-8".into(),
                    )
                })?;
                Some(Credentials::new(t.username.clone(), password))
            }
        };
        let tls = match t.security {
            Security::None => None,
            _ => {
                let mut b = TlsParameters::builder(t.host.clone()).set_min_tls_version(
                    match t.min_tls_version {
                        TlsVersion::Tls12 => LettreTlsVersion::Tlsv12,
                        TlsVersion::Tls13 => LettreTlsVersion::Tlsv13,
                    },
                );
                if let Some(ca) = t.ca_file {
                    let ca = relative(ca, config_dir);
                    let pem = std::fs::read(&ca).map_err(|e| {
                        (
                            span.clone(),
                            key("ca_file"),
                            format!("cannot read {}: {e}", ca.display()),
                        )
                    })?;
                    let cert = Certificate::from_pem(&pem).map_err(|e| {
                        (
                            span.clone(),
                            key("ca_file"),
                            format!("{}: not a PEM certificate: {e}", ca.display()),
                        )
                    })?;
                    b = b.add_root_certificate(cert);
                }
                Some(b.build_rustls().map_err(|e| {
                    (
                        span.clone(),
                        key("security"),
                        format!("cannot set up TLS for {}: {e}", t.host),
                    )
                })?)
            }
        };
        compiled.push(RelayTarget {
            name,
            host: t.host,
            port: t.port,
            priority: t.priority,
            security: t.security,
            auth: t.auth,
            credentials,
            tls,
            divert_only: t.divert_only,
            line_limit: t.line_limit,
            auth_over_plaintext: t.auth_over_plaintext,
        });
    }
    let secs = |n: NonZeroU64| Duration::from_secs(n.get());
    let mut delivery = Delivery::new(
        compiled,
        d.helo_name.unwrap_or_else(|| hostname.to_owned()),
        secs(d.connection_timeout),
        secs(d.protocol_timeout),
        secs(d.data_timeout),
        Duration::from_secs(d.connection_cache_time),
    );
    delivery.xforward = d.xforward;
    Ok(delivery)
}
