//! The proxy door: Postern's own SMTP listener, in front of a mail server. Each conversation
//! is judged by the same engine [`Session`](crate::engine::Session) as in the milter door, and
//! an accepted message is handed to the relay targets before the client hears 250 (a
//! before-queue proxy, like Postfix's `smtpd_proxy_filter`: mail that is not accepted stays
//! the client's responsibility).
//!
//! `connection.rs` frames bytes (lines, DATA, TLS upgrade), `command.rs` parses commands,
//! `data_reader.rs` finds the end of a message, `smtp/` is the conversation (`smtp/mod.rs` the
//! command loop, one file per SMTP stage beside it), `tls.rs` and `users.rs` hold TLS and AUTH
//! settings.

mod budget;
pub mod command;
pub mod connection;
pub mod data_reader;
mod received;
mod smtp;
pub mod tls;
pub mod users;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{error, info, warn};

use crate::engine::Engine;
pub use crate::relay::SharedDelivery;
use connection::SharedAcceptor;
use data_reader::BareNewline;
use tls::{TlsSettings, TlsSupport};
use users::Users;

/// How long the proxy waits for a client, by where the conversation is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTimeouts {
    /// Waiting for a command outside a mail transaction (and for the first one).
    pub connection: Duration,
    /// Waiting for the next command inside a transaction (after MAIL).
    pub protocol: Duration,
    /// Waiting for DATA (or more RCPTs) once a recipient is accepted.
    pub data_command: Duration,
    /// Waiting for the next piece of the message after 354.
    pub data_payload: Duration,
    /// The TLS handshake.
    pub tls_negotiation: Duration,
    /// After a failed STARTTLS handshake: how long the client, told so in plain text, has to
    /// go before the connection is closed ("TLS fail recovery timeout").
    pub tls_fail_recovery: Duration,
}

/// Settings of the proxy door (`[proxy]`). Listeners take effect at start; certificates are
/// reloaded on SIGHUP.
/// Custom EHLO responses (`ehlo_discard_keywords`, `ehlo_add_keywords`), as Postfix's
/// smtpd_discard_ehlo_keywords: a withheld extension is not offered (its command is still
/// understood); an added line is offered as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EhloKeywords {
    /// Keywords, upper case.
    pub discard: Vec<String>,
    pub add: Vec<String>,
}

impl EhloKeywords {
    /// The EHLO lines after the host name: `offered` without the withheld keywords, then the
    /// added lines.
    pub fn applied_to(&self, offered: Vec<String>) -> Vec<String> {
        let keyword = |line: &str| {
            line.split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase()
        };
        let mut lines: Vec<String> = offered
            .into_iter()
            .filter(|line| !self.discard.contains(&keyword(line)))
            .collect();
        for line in &self.add {
            if !lines.iter().any(|l| keyword(l) == keyword(line)) {
                lines.push(line.clone());
            }
        }
        lines
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    /// Plain SMTP listeners (STARTTLS offered when TLS is enabled).
    pub listen: Vec<SocketAddr>,
    /// Implicit TLS listeners (port 465).
    pub listen_tls: Vec<SocketAddr>,
    /// Submission listeners: AUTH required before MAIL.
    pub submission_listen: Vec<SocketAddr>,
    pub tls: TlsSettings,
    /// Text of the 220 greeting after the host name.
    pub banner: String,
    /// EHLO keywords withheld from clients and lines added to the list.
    pub ehlo: EhloKeywords,
    pub max_inbound_connections: usize,
    /// Connections served at once on the implicit TLS listeners, counted apart from the
    /// plain and submission ones (each listener kind has its limit, as in the seed).
    pub max_inbound_tls_connections: usize,
    /// Longest command line, in bytes without CRLF.
    pub line_limit: usize,
    pub max_recipients: usize,
    pub timeouts: ClientTimeouts,
    /// How long to watch for a client that talks before the greeting.
    pub greet_pause: Duration,
    pub bare_newline: BareNewline,
    pub auth_users: Option<Users>,
    /// Connection profiles with users of their own (`auth_users_file` of the profile): their
    /// clients authenticate against those instead of `auth_users`.
    pub profile_users: Vec<(String, Users)>,
    /// Offer AUTH on unencrypted sessions too (default: only after TLS).
    pub auth_over_plaintext: bool,
    /// Failed AUTH attempts in one connection before it is closed.
    pub max_auth_failures: u32,
    /// Failed AUTH attempts from one client (IPv6: one /64) within `auth_failure_window`,
    /// over all its connections, before AUTH is refused it; 0 for no such limit.
    pub max_auth_failures_per_client: u32,
    pub auth_failure_window: Duration,
    /// The pause before a failed AUTH is answered, times the connection's failures so far
    /// (`auth_failure_delay_ms`): guessing gets slower without holding other clients up.
    pub auth_failure_delay: Duration,
    pub shutdown_timeout: Duration,
    /// Add a `Received:` field for this hop to every relayed message (`received_header`).
    pub received_header: bool,
    /// Bytes of messages held in memory at once, over all conversations (see `budget.rs`).
    pub message_memory_budget: usize,
    /// NOOP, RSET, HELP, VRFY and EXPN a client may send between messages before each one
    /// counts as an invalid command (Postfix's smtpd_junk_command_limit).
    pub junk_command_limit: u32,
    /// Bytes per second a message must at least arrive at: the DATA phase has
    /// `client_data_payload_timeout` plus its size at this rate (0: only the per-read timeout).
    pub min_data_rate: u64,
    /// Percent of `max_inbound_connections` in use from which every client timeout is at most
    /// `stress_timeout` (0: never).
    pub stress_threshold: u8,
    pub stress_timeout: Duration,
}

/// What kind of listener a client came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    Smtp,
    ImplicitTls,
    Submission,
}

impl ListenerKind {
    /// The kind as the log names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Smtp => "smtp",
            Self::ImplicitTls => "implicit_tls",
            Self::Submission => "submission",
        }
    }
}

/// The proxy door as the composition root builds it: the engine, and what a reload swaps
/// (settings, relay targets, certificates). A conversation keeps the settings it began with;
/// a transaction keeps its relay targets.
#[derive(Clone)]
pub struct ProxyDoor {
    engine: Arc<Engine>,
    settings: Arc<ArcSwap<ProxySettings>>,
    delivery: SharedDelivery,
    acceptor: SharedAcceptor,
}

impl ProxyDoor {
    pub fn new(
        engine: Arc<Engine>,
        settings: ProxySettings,
        delivery: SharedDelivery,
    ) -> anyhow::Result<Self> {
        let acceptor = acceptor(&settings)?;
        Ok(Self {
            engine,
            settings: Arc::new(ArcSwap::from_pointee(settings)),
            delivery,
            acceptor,
        })
    }

    /// Checks that the proxy can take `new` (its certificates load): the TLS acceptor to use.
    pub fn prepare_reload(&self, new: &ProxySettings) -> Result<Option<TlsAcceptor>, String> {
        new.tls.acceptor()
    }

    /// Puts `new` in force for the next conversation (certificates at once); the keys that
    /// need a restart are the app's to tell ([`crate::config::FixedAtStart`]).
    pub fn reload(&self, new: ProxySettings, acceptor: Option<TlsAcceptor>) {
        self.acceptor.store(acceptor.map(Arc::new));
        self.settings.store(Arc::new(new));
    }
}

impl ProxySettings {
    /// The users a client of `profile` authenticates as: its profile's own, else
    /// `auth_users_file`'s.
    pub fn users_for(&self, profile: Option<&str>) -> Option<&Users> {
        profile
            .and_then(|name| self.profile_users.iter().find(|(p, _)| p == name))
            .map(|(_, users)| users)
            .or(self.auth_users.as_ref())
    }
}

/// What every connection shares.
struct Shared {
    engine: Arc<Engine>,
    /// The settings in force; a conversation takes the ones current when it begins.
    settings: Arc<ArcSwap<ProxySettings>>,
    /// The relay targets in force: replaced whole on reload; a transaction keeps the one it
    /// began with.
    delivery: SharedDelivery,
    acceptor: SharedAcceptor,
    memory: Arc<budget::MemoryBudget>,
    /// One permit per connection slot (`max_inbound_connections` at start).
    slots: Arc<Semaphore>,
    max_inbound_connections: usize,
}

impl Shared {
    /// True while at least `stress_threshold` percent of the connection slots are taken.
    fn under_stress(&self) -> bool {
        let s = self.settings.load();
        let max = self.max_inbound_connections;
        let taken = max.saturating_sub(self.slots.available_permits());
        s.stress_threshold > 0 && taken * 100 >= max * usize::from(s.stress_threshold)
    }
}

/// The proxy's listeners, bound (tests bind port 0 and read the addresses).
pub struct Listeners {
    bound: Vec<(TcpListener, ListenerKind)>,
}

impl Listeners {
    /// Binds every configured listener allowed by `tls_support`.
    pub async fn bind(settings: &ProxySettings) -> anyhow::Result<Self> {
        let mut wanted = Vec::new();
        let plain = settings.listen.len() + settings.submission_listen.len();
        if settings.tls.support == TlsSupport::Required && plain > 0 {
            warn!(
                listeners = plain,
                "tls_support = \"required\": the plain listeners (listen, submission_listen) are not opened; only listen_tls serves"
            );
        }
        if settings.tls.support != TlsSupport::Required {
            wanted.extend(settings.listen.iter().map(|a| (*a, ListenerKind::Smtp)));
            wanted.extend(
                settings
                    .submission_listen
                    .iter()
                    .map(|a| (*a, ListenerKind::Submission)),
            );
        }
        if settings.tls.support != TlsSupport::Disabled {
            wanted.extend(
                settings
                    .listen_tls
                    .iter()
                    .map(|a| (*a, ListenerKind::ImplicitTls)),
            );
        }
        if wanted.is_empty() {
            anyhow::bail!(
                "the proxy has no listener: set [proxy] listen (or listen_tls with tls_support = \"required\")"
            );
        }
        let mut bound = Vec::new();
        for (addr, kind) in wanted {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
            bound.push((listener, kind));
        }
        Ok(Self { bound })
    }
}

/// Builds the TLS acceptor for `settings`, checking that what the listeners need is there.
pub fn acceptor(settings: &ProxySettings) -> anyhow::Result<SharedAcceptor> {
    let acceptor = settings.tls.acceptor().map_err(anyhow::Error::msg)?;
    let needs_tls = settings.tls.support == TlsSupport::Required
        || (settings.tls.support == TlsSupport::Enabled && !settings.listen_tls.is_empty());
    if acceptor.is_none() && needs_tls {
        anyhow::bail!(
            "implicit TLS listeners need [proxy] certificate_file and key_file (or set tls_support = \"disabled\")"
        );
    }
    if acceptor.is_none() && settings.tls.support == TlsSupport::Enabled {
        warn!("no [proxy] certificate_file: STARTTLS is not offered");
    }
    Ok(Arc::new(arc_swap::ArcSwapOption::new(
        acceptor.map(Arc::new),
    )))
}

/// Serves the listeners until `shutdown` resolves; then stops accepting and gives
/// conversations in progress up to `shutdown_timeout` to finish.
pub async fn serve(
    door: ProxyDoor,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = door.settings.load_full();
    let slots = Arc::new(Semaphore::new(settings.max_inbound_connections));
    let tls_slots = Arc::new(Semaphore::new(settings.max_inbound_tls_connections));
    let memory = budget::MemoryBudget::new(settings.message_memory_budget);
    let shared = Arc::new(Shared {
        engine: door.engine,
        settings: door.settings,
        delivery: door.delivery,
        acceptor: door.acceptor,
        memory,
        slots: slots.clone(),
        max_inbound_connections: settings.max_inbound_connections,
    });
    let (conn_tx, mut conn_rx) =
        tokio::sync::mpsc::channel::<(TcpStream, SocketAddr, ListenerKind)>(64);
    let mut accepting = JoinSet::new();
    for (listener, kind) in listeners.bound {
        info!(listen = %listener.local_addr()?, kind = kind.name(), "proxy listening");
        let tx = conn_tx.clone();
        accepting.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if tx.send((stream, peer, kind)).await.is_err() {
                            return;
                        }
                    }
                    // Out of file descriptors and the like: wait, do not spin.
                    Err(e) => {
                        error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }
    drop(conn_tx);
    let mut clients = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some((stream, peer, kind)) = conn_rx.recv() => {
                let shared = shared.clone();
                let kind_slots = if kind == ListenerKind::ImplicitTls { &tls_slots } else { &slots };
                match kind_slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        clients.spawn(async move {
                            smtp::converse(shared, stream, peer, kind).await;
                            drop(permit);
                        });
                    }
                    Err(_) if kind == ListenerKind::ImplicitTls => {
                        // A reply in plain text means nothing to a client that starts with
                        // TLS; closing at once costs no handshake.
                        warn!(client = %peer, limit = settings.max_inbound_tls_connections, "too many implicit TLS connections, client closed");
                        drop(stream);
                    }
                    Err(_) => {
                        clients.spawn(async move { smtp::too_many(&shared, stream, peer).await });
                    }
                }
            }
            Some(_) = clients.join_next(), if !clients.is_empty() => {}
        }
    }
    accepting.abort_all();
    let grace = shared.settings.load().shutdown_timeout;
    info!(
        connections = clients.len(),
        timeout_s = grace.as_secs(),
        "shutting down: letting conversations in progress finish"
    );
    if tokio::time::timeout(grace, async {
        while clients.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!(
            connections = clients.len(),
            "shutdown timeout reached; unfinished messages were not accepted, their clients retry"
        );
    }
    info!("proxy stopped");
    Ok(())
}

/// Binds and serves: `postern proxy`.
pub async fn run(door: ProxyDoor, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&door.settings.load()).await?;
    crate::notify::ready();
    serve(door, listeners, shutdown).await
}
