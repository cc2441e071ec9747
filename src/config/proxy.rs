//! `[proxy]`, `[delivery]` and `[[relay_target]]`: the proxy door's listeners, TLS, limits and
//! AUTH, and where accepted messages go.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters, TlsVersion as LettreTlsVersion};
use serde::Deserialize;
use toml::Spanned;

use super::rulesets::Invalid;
use crate::engine::rules::protect::Secret;
use crate::proxy::auth::Users;
use crate::proxy::data::BareNewline;
use crate::proxy::tls::{ClientCertificates, TlsSettings, TlsSupport, TlsVersion};
use crate::proxy::{ClientTimeouts, ProxySettings};
use crate::relay::{Delivery, RelayAuth, RelayTarget, Security};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ProxySection {
    listen: Vec<SocketAddr>,
    listen_tls: Vec<SocketAddr>,
    submission_listen: Vec<SocketAddr>,
    tls_support: TlsSupport,
    certificate_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    min_tls_version: TlsVersion,
    cipher_suites: Vec<String>,
    client_certificates: ClientCertificates,
    ca_certs: Option<PathBuf>,
    banner: String,
    max_inbound_connections: NonZeroUsize,
    line_limit: NonZeroUsize,
    max_recipients: NonZeroUsize,
    client_connection_timeout: NonZeroU64,
    client_protocol_timeout: NonZeroU64,
    client_data_command_timeout: NonZeroU64,
    client_data_payload_timeout: NonZeroU64,
    tls_negotiation_timeout: NonZeroU64,
    greet_pause_ms: u64,
    bare_newline: BareNewline,
    auth_users_file: Option<PathBuf>,
    auth_over_plaintext: bool,
    max_auth_failures: NonZeroU32,
    max_auth_failures_per_client: u32,
    auth_failure_window: NonZeroU64,
    shutdown_timeout: u64,
    received_header: bool,
    message_memory_budget: NonZeroUsize,
    junk_command_limit: u32,
    min_data_rate: u64,
    stress_threshold: u8,
    stress_timeout: NonZeroU64,
    max_concurrent_password_checks: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        let nz = |n| NonZeroU64::new(n).expect("nonzero");
        Self {
            listen: vec!["127.0.0.1:2525".parse().expect("valid address")],
            listen_tls: Vec::new(),
            submission_listen: Vec::new(),
            tls_support: TlsSupport::Enabled,
            certificate_file: None,
            key_file: None,
            min_tls_version: TlsVersion::Tls12,
            cipher_suites: Vec::new(),
            client_certificates: ClientCertificates::None,
            ca_certs: None,
            banner: "ESMTP Postern".to_owned(),
            max_inbound_connections: NonZeroUsize::new(256).expect("nonzero"),
            line_limit: NonZeroUsize::new(1000).expect("nonzero"),
            max_recipients: NonZeroUsize::new(1000).expect("nonzero"),
            client_connection_timeout: nz(15),
            client_protocol_timeout: nz(5),
            client_data_command_timeout: nz(10),
            client_data_payload_timeout: nz(10),
            tls_negotiation_timeout: nz(15),
            greet_pause_ms: 0,
            bare_newline: BareNewline::Normalize,
            auth_users_file: None,
            auth_over_plaintext: false,
            max_auth_failures: NonZeroU32::new(3).expect("nonzero"),
            max_auth_failures_per_client: 10,
            auth_failure_window: nz(600),
            shutdown_timeout: 30,
            received_header: true,
            message_memory_budget: NonZeroUsize::new(256 << 20).expect("nonzero"),
            junk_command_limit: 100,
            min_data_rate: 500,
            stress_threshold: 80,
            stress_timeout: nz(10),
            max_concurrent_password_checks: 0,
        }
    }
}

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

fn relative(path: PathBuf, config_dir: Option<&Path>) -> PathBuf {
    match config_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

pub(super) fn compile_proxy(
    p: ProxySection,
    config_dir: Option<&Path>,
) -> Result<ProxySettings, Invalid> {
    let err = |key: &str, message: String| (0..0, format!("proxy.{key}"), message);
    if p.certificate_file.is_some() != p.key_file.is_some() {
        return Err(err(
            "certificate_file",
            "give both certificate_file and key_file, or neither".into(),
        ));
    }
    if !p.banner.bytes().all(|b| (0x20..0x7f).contains(&b)) || p.banner.len() > 400 {
        return Err(err(
            "banner",
            "the banner must be printable ASCII, at most 400 characters".into(),
        ));
    }
    let auth_users = match p.auth_users_file {
        Some(f) => {
            let checks = match p.max_concurrent_password_checks {
                0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
                n => n,
            };
            Some(
                Users::load(&relative(f, config_dir), checks)
                    .map_err(|m| err("auth_users_file", m))?,
            )
        }
        None if !p.submission_listen.is_empty() => {
            return Err(err(
                "submission_listen",
                "a submission listener requires AUTH: set auth_users_file".into(),
            ));
        }
        None => None,
    };
    let tls = TlsSettings {
        support: p.tls_support,
        certificate_file: p.certificate_file.map(|f| relative(f, config_dir)),
        key_file: p.key_file.map(|f| relative(f, config_dir)),
        min_version: p.min_tls_version,
        cipher_suites: p.cipher_suites,
        client_certificates: p.client_certificates,
        ca_certs: p.ca_certs.map(|f| relative(f, config_dir)),
    };
    // Certificates are read now so that check-config and a reload report them.
    tls.acceptor().map_err(|m| err("certificate_file", m))?;
    if p.stress_threshold > 100 {
        return Err(err(
            "stress_threshold",
            format!(
                "{} is not a percentage: give 1 to 100 (percent of max_inbound_connections in use), or 0 for never",
                p.stress_threshold
            ),
        ));
    }
    let secs = |n: NonZeroU64| Duration::from_secs(n.get());
    Ok(ProxySettings {
        listen: p.listen,
        listen_tls: p.listen_tls,
        submission_listen: p.submission_listen,
        tls,
        banner: p.banner,
        max_inbound_connections: p.max_inbound_connections.get(),
        line_limit: p.line_limit.get(),
        max_recipients: p.max_recipients.get(),
        timeouts: ClientTimeouts {
            connection: secs(p.client_connection_timeout),
            protocol: secs(p.client_protocol_timeout),
            data_command: secs(p.client_data_command_timeout),
            data_payload: secs(p.client_data_payload_timeout),
            tls_negotiation: secs(p.tls_negotiation_timeout),
        },
        greet_pause: Duration::from_millis(p.greet_pause_ms),
        bare_newline: p.bare_newline,
        auth_users,
        auth_over_plaintext: p.auth_over_plaintext,
        max_auth_failures: p.max_auth_failures.get(),
        max_auth_failures_per_client: p.max_auth_failures_per_client,
        auth_failure_window: Duration::from_secs(p.auth_failure_window.get()),
        shutdown_timeout: Duration::from_secs(p.shutdown_timeout),
        received_header: p.received_header,
        message_memory_budget: p.message_memory_budget.get(),
        junk_command_limit: p.junk_command_limit,
        min_data_rate: p.min_data_rate,
        stress_threshold: p.stress_threshold,
        stress_timeout: secs(p.stress_timeout),
    })
}

pub(super) fn compile_delivery(
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
