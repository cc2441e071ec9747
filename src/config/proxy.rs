//! `[proxy]`: the proxy door's listeners, TLS, limits, timeouts and AUTH.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Invalid, relative};
use crate::proxy::EhloKeywords;
use crate::proxy::data_reader::BareNewline;
use crate::proxy::tls::{ClientCertificates, TlsSettings, TlsSupport, TlsVersion, ciphers};
use crate::proxy::users::Users;
use crate::proxy::{ClientTimeouts, ProxySettings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct ProxySection {
    listen: Vec<SocketAddr>,
    listen_tls: Vec<SocketAddr>,
    submission_listen: Vec<Spanned<SocketAddr>>,
    tls_support: TlsSupport,
    certificate_file: Option<Spanned<PathBuf>>,
    chain_file: Option<Spanned<PathBuf>>,
    key_file: Option<Spanned<PathBuf>>,
    key_passphrase_file: Option<Spanned<PathBuf>>,
    min_tls_version: TlsVersion,
    /// Unset: rustls's defaults.
    cipher_suites: Option<Spanned<CipherList>>,
    client_certificates: ClientCertificates,
    ca_certs: Option<Spanned<PathBuf>>,
    /// Unset: [`BANNER`].
    banner: Option<Spanned<String>>,
    ehlo_discard_keywords: Vec<Spanned<String>>,
    ehlo_add_keywords: Vec<Spanned<String>>,
    max_inbound_connections: NonZeroUsize,
    max_inbound_tls_connections: NonZeroUsize,
    line_limit: NonZeroUsize,
    max_recipients: NonZeroUsize,
    client_connection_timeout: NonZeroU64,
    client_protocol_timeout: NonZeroU64,
    client_data_command_timeout: NonZeroU64,
    client_data_payload_timeout: NonZeroU64,
    tls_negotiation_timeout: NonZeroU64,
    tls_fail_recovery_timeout: u64,
    greet_pause_ms: u64,
    bare_newline: BareNewline,
    auth_users_file: Option<Spanned<PathBuf>>,
    auth_over_plaintext: bool,
    max_auth_failures: NonZeroU32,
    max_auth_failures_per_client: u32,
    auth_failure_window: NonZeroU64,
    auth_failure_delay_ms: u64,
    shutdown_timeout: u64,
    received_header: bool,
    message_memory_budget: NonZeroUsize,
    junk_command_limit: u32,
    min_data_rate: u64,
    /// Unset: [`STRESS_THRESHOLD`].
    stress_threshold: Option<Spanned<u8>>,
    stress_timeout: NonZeroU64,
    max_concurrent_password_checks: usize,
}

/// `cipher_suites`: a list of names, or one string of names separated as OpenSSL's are.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a list of cipher suite names, or one string of them separated by ':'"
)]
enum CipherList {
    One(String),
    Many(Vec<String>),
}

/// The greeting's text after the host name when `banner` is not set.
const BANNER: &str = "ESMTP Postern";

/// Percent of `max_inbound_connections` in use from which timeouts shorten, when
/// `stress_threshold` is not set.
const STRESS_THRESHOLD: u8 = 80;

impl Default for ProxySection {
    fn default() -> Self {
        let nz = |n| NonZeroU64::new(n).expect("nonzero");
        Self {
            listen: vec!["127.0.0.1:2525".parse().expect("valid address")],
            listen_tls: Vec::new(),
            submission_listen: Vec::new(),
            tls_support: TlsSupport::Enabled,
            certificate_file: None,
            chain_file: None,
            key_file: None,
            key_passphrase_file: None,
            min_tls_version: TlsVersion::Tls12,
            cipher_suites: None,
            client_certificates: ClientCertificates::None,
            ca_certs: None,
            banner: None,
            ehlo_discard_keywords: Vec::new(),
            ehlo_add_keywords: Vec::new(),
            max_inbound_connections: NonZeroUsize::new(256).expect("nonzero"),
            max_inbound_tls_connections: NonZeroUsize::new(256).expect("nonzero"),
            line_limit: NonZeroUsize::new(1000).expect("nonzero"),
            max_recipients: NonZeroUsize::new(1000).expect("nonzero"),
            client_connection_timeout: nz(15),
            client_protocol_timeout: nz(5),
            client_data_command_timeout: nz(10),
            client_data_payload_timeout: nz(10),
            tls_negotiation_timeout: nz(15),
            tls_fail_recovery_timeout: 2,
            greet_pause_ms: 0,
            bare_newline: BareNewline::Normalize,
            auth_users_file: None,
            auth_over_plaintext: false,
            max_auth_failures: NonZeroU32::new(3).expect("nonzero"),
            max_auth_failures_per_client: 10,
            auth_failure_window: nz(600),
            auth_failure_delay_ms: 500,
            shutdown_timeout: 30,
            received_header: true,
            message_memory_budget: NonZeroUsize::new(256 << 20).expect("nonzero"),
            junk_command_limit: 100,
            min_data_rate: 500,
            stress_threshold: None,
            stress_timeout: nz(10),
            max_concurrent_password_checks: 0,
        }
    }
}

pub(super) fn compile(
    p: ProxySection,
    config_dir: Option<&Path>,
    profile_users_files: Vec<super::connection::ProfileUsersFile>,
    organization_users_files: Vec<(String, Spanned<PathBuf>)>,
) -> Result<(ProxySettings, HashMap<String, String>), Invalid> {
    let err =
        |span: Range<usize>, key: &str, message: String| (span, format!("proxy.{key}"), message);
    // Either key alone is refused at its own line.
    let certificate_span = match (&p.certificate_file, &p.key_file) {
        (Some(cert), Some(_)) => Some(cert.span()),
        (Some(alone), None) | (None, Some(alone)) => {
            return Err(err(
                alone.span(),
                "certificate_file",
                "give both certificate_file and key_file, or neither".into(),
            ));
        }
        (None, None) => None,
    };
    let banner = match p.banner {
        Some(banner)
            if !banner.get_ref().bytes().all(|c| (b' '..=b'~').contains(&c))
                || banner.get_ref().len() > 400 =>
        {
            return Err(err(
                banner.span(),
                "banner",
                "the banner must be printable ASCII, at most 400 characters".into(),
            ));
        }
        Some(banner) => banner.into_inner(),
        None => BANNER.to_owned(),
    };
    let keyword_list = |list: Vec<Spanned<String>>, key: &'static str| {
        list.into_iter()
            .map(|k| {
                let word = k.get_ref().split_whitespace().next().unwrap_or("");
                let valid = !word.is_empty()
                    && k.get_ref().len() <= 200
                    && word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && k.get_ref().bytes().all(|b| (b' '..=b'~').contains(&b));
                if valid {
                    Ok(k.into_inner())
                } else {
                    Err(err(
                        k.span(),
                        key,
                        format!(
                            "{:?} is not an EHLO keyword line: a keyword of letters, digits and '-', then printable ASCII parameters, at most 200 characters",
                            k.get_ref()
                        ),
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let ehlo = EhloKeywords {
        discard: keyword_list(p.ehlo_discard_keywords, "ehlo_discard_keywords")?
            .into_iter()
            .map(|k| k.to_ascii_uppercase())
            .collect(),
        add: keyword_list(p.ehlo_add_keywords, "ehlo_add_keywords")?,
    };
    let checks = match p.max_concurrent_password_checks {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    // One pool of password checks for every users file.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(checks.max(1)));
    let mut profile_users: Vec<(String, Users)> = Vec::new();
    for (profile, file) in profile_users_files {
        let span = file.span();
        let key = format!("connection_profile {profile:?} auth_users_file");
        let users = Users::load(&relative(file.into_inner(), config_dir), slots.clone())
            .map_err(|m| (span.clone(), key.clone(), m))?;
        if let Some((other, user)) = profile_users
            .iter()
            .find_map(|(other, known)| users.shared_name(known).map(|u| (other, u)))
        {
            return Err((
                span,
                key,
                format!(
                    "user {user:?} is also a user of profile {other:?}: a user name belongs to one profile (an AUTH user decides the profile's rules)"
                ),
            ));
        }
        profile_users.push((profile, users));
    }
    // The organizations' users authenticate as auth_users_file's do; each name is of one
    // organization, which the engine reads from it.
    let mut organization_users: Option<Users> = None;
    let mut user_organizations = HashMap::new();
    for (organization, file) in organization_users_files {
        let span = file.span();
        let key = format!("organization {organization:?} auth_users_file");
        let users = Users::load(file.get_ref(), slots.clone())
            .map_err(|m| (span.clone(), key.clone(), m))?;
        let shared = profile_users
            .iter()
            .find_map(|(profile, known)| {
                users
                    .shared_name(known)
                    .map(|u| format!("connection profile {profile:?}'s user {u:?}"))
            })
            .or_else(|| {
                organization_users.as_ref().and_then(|known| {
                    users.shared_name(known).map(|u| {
                        format!(
                            "organization {:?}'s user {u:?}",
                            user_organizations.get(u).map_or("", String::as_str)
                        )
                    })
                })
            });
        if let Some(shared) = shared {
            return Err((
                span,
                key,
                format!("{shared} is in this file too: a user name belongs to one organization"),
            ));
        }
        for name in users.names() {
            user_organizations.insert(name.to_owned(), organization.clone());
        }
        organization_users = Some(match organization_users {
            Some(known) => known.merged(&users),
            None => users,
        });
    }
    let auth_users = match p.auth_users_file {
        Some(f) => {
            let span = f.span();
            let users = Users::load(&relative(f.into_inner(), config_dir), slots.clone())
                .map_err(|m| err(span.clone(), "auth_users_file", m))?;
            if let Some((profile, user)) = profile_users
                .iter()
                .find_map(|(profile, known)| users.shared_name(known).map(|u| (profile, u)))
            {
                return Err(err(
                    span,
                    "auth_users_file",
                    format!(
                        "user {user:?} is also a user of connection profile {profile:?}: a user name belongs to one place"
                    ),
                ));
            }
            if let Some(user) = organization_users
                .as_ref()
                .and_then(|known| users.shared_name(known))
            {
                return Err(err(
                    span,
                    "auth_users_file",
                    format!(
                        "user {user:?} is also a user of organization {:?}: a user name belongs to one place",
                        user_organizations.get(user).map_or("", String::as_str)
                    ),
                ));
            }
            Some(match &organization_users {
                Some(known) => users.merged(known),
                None => users,
            })
        }
        None if organization_users.is_some() => organization_users,
        None => match p.submission_listen.first() {
            Some(listener) => {
                return Err(err(
                    listener.span(),
                    "submission_listen",
                    "a submission listener requires AUTH: set auth_users_file".into(),
                ));
            }
            None => None,
        },
    };
    // Each alone is meaningless: refused at its own line.
    if let (Some(chain), None) = (&p.chain_file, &p.certificate_file) {
        return Err(err(
            chain.span(),
            "chain_file",
            "chain_file holds the intermediate certificates sent after certificate_file: set certificate_file and key_file too".into(),
        ));
    }
    if let (Some(phrase), None) = (&p.key_passphrase_file, &p.key_file) {
        return Err(err(
            phrase.span(),
            "key_passphrase_file",
            "key_passphrase_file holds the pass phrase of key_file: set certificate_file and key_file too".into(),
        ));
    }
    let (cipher_suites, cipher_span) = match p.cipher_suites {
        Some(list) => {
            let span = list.span();
            let entries = match list.into_inner() {
                CipherList::One(s) => vec![s],
                CipherList::Many(v) => v,
            };
            let suites =
                ciphers::parse(&entries).map_err(|m| err(span.clone(), "cipher_suites", m))?;
            (suites, Some(span))
        }
        None => (Vec::new(), None),
    };
    let path = |f: Option<Spanned<PathBuf>>| f.map(|f| relative(f.into_inner(), config_dir));
    let spans = [
        (
            "certificate_file",
            p.certificate_file.as_ref().map(Spanned::span),
        ),
        ("chain_file", p.chain_file.as_ref().map(Spanned::span)),
        ("key_file", p.key_file.as_ref().map(Spanned::span)),
        (
            "key_passphrase_file",
            p.key_passphrase_file.as_ref().map(Spanned::span),
        ),
        ("ca_certs", p.ca_certs.as_ref().map(Spanned::span)),
        ("cipher_suites", cipher_span),
    ];
    let tls = TlsSettings {
        support: p.tls_support,
        certificate_file: path(p.certificate_file),
        chain_file: path(p.chain_file),
        key_file: path(p.key_file),
        key_passphrase_file: path(p.key_passphrase_file),
        min_version: p.min_tls_version,
        cipher_suites,
        client_certificates: p.client_certificates,
        ca_certs: path(p.ca_certs),
    };
    // Certificates are read now so that check-config and a reload report them, at the line
    // of the key at fault. Without them there is nothing to read: the acceptor is `None`.
    if let Some(certificate_span) = certificate_span {
        tls.build().map_err(|e| {
            let span = spans
                .iter()
                .find(|(key, _)| *key == e.key)
                .and_then(|(_, span)| span.clone())
                .unwrap_or(certificate_span);
            err(span, e.key, e.message)
        })?;
    }
    let stress_threshold = match p.stress_threshold {
        Some(t) if *t.get_ref() > 100 => {
            return Err(err(
                t.span(),
                "stress_threshold",
                format!(
                    "{} is not a percentage: give 1 to 100 (percent of max_inbound_connections in use), or 0 for never",
                    t.get_ref()
                ),
            ));
        }
        Some(t) => t.into_inner(),
        None => STRESS_THRESHOLD,
    };
    let secs = |n: NonZeroU64| Duration::from_secs(n.get());
    let settings = ProxySettings {
        listen: p.listen,
        listen_tls: p.listen_tls,
        submission_listen: p
            .submission_listen
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        tls,
        banner,
        ehlo,
        max_inbound_connections: p.max_inbound_connections.get(),
        max_inbound_tls_connections: p.max_inbound_tls_connections.get(),
        line_limit: p.line_limit.get(),
        max_recipients: p.max_recipients.get(),
        timeouts: ClientTimeouts {
            connection: secs(p.client_connection_timeout),
            protocol: secs(p.client_protocol_timeout),
            data_command: secs(p.client_data_command_timeout),
            data_payload: secs(p.client_data_payload_timeout),
            tls_negotiation: secs(p.tls_negotiation_timeout),
            tls_fail_recovery: Duration::from_secs(p.tls_fail_recovery_timeout),
        },
        greet_pause: Duration::from_millis(p.greet_pause_ms),
        bare_newline: p.bare_newline,
        auth_users,
        profile_users,
        auth_over_plaintext: p.auth_over_plaintext,
        max_auth_failures: p.max_auth_failures.get(),
        max_auth_failures_per_client: p.max_auth_failures_per_client,
        auth_failure_window: Duration::from_secs(p.auth_failure_window.get()),
        auth_failure_delay: Duration::from_millis(p.auth_failure_delay_ms),
        shutdown_timeout: Duration::from_secs(p.shutdown_timeout),
        received_header: p.received_header,
        message_memory_budget: p.message_memory_budget.get(),
        junk_command_limit: p.junk_command_limit,
        min_data_rate: p.min_data_rate,
        stress_threshold,
        stress_timeout: secs(p.stress_timeout),
    };
    Ok((settings, user_organizations))
}
