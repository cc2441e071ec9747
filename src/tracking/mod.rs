//! Message tracking (`[tracking]`): one record per message and recipient — who sent what to
//! whom, what became of each recipient (accepted, refused with its reply, relayed to which
//! target with its reply), the verdict, the rules that acted (names and actions, never a value)
//! — in SQLite or PostgreSQL, and `postern track` to read them back.
//!
//! [`Tracker`] is one more event sink: it gathers a session's events into [`Record`]s and
//! hands them to a bounded queue without waiting. A writer task drains the queue into the
//! store. When the store is down or the queue is full, records are dropped, told as events
//! (the metrics count them) and logged at most once a minute: tracking never delays or
//! refuses mail.

mod drops;
mod error;
mod limit;
mod postgres;
pub mod postgres_tls;
pub mod query;
pub(crate) mod record;
mod sink;
mod sqlite;
mod writer;

use std::fmt;
use std::path::PathBuf;

use rustls_pki_types::CertificateDer;

use postgres_tls::SslMode;

pub use error::TrackingError;
pub use record::{Outcome, Record, Retention, format_time, now_ms};
pub use sink::Tracker;

/// `retention_days` when unset.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// `queue_size` when unset.
pub const DEFAULT_QUEUE_SIZE: usize = 10_000;
/// Why a record can be dropped: the `reason` of `Event::TrackingDropped`.
pub const DROP_REASONS: [&str; 4] = [
    "queue_full",
    "store_unavailable",
    "writer_stopped",
    limit::REASON,
];

/// `max_records_per_client` when unset.
pub const DEFAULT_MAX_RECORDS_PER_CLIENT: u64 = 1_000;

/// The settings of `[tracking]`; no tracking without them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingSettings {
    pub store: StoreSettings,
    /// How long records are kept.
    pub retention: Retention,
    /// Also record connections refused or dropped before any message.
    pub track_dropped_connections: bool,
    /// Records waiting for the writer; beyond it they are dropped.
    pub queue_size: usize,
    /// Records one client (IPv4 address, IPv6 /64) may cause per minute; 0: no limit.
    pub max_records_per_client: u64,
}

/// Where the records are kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreSettings {
    /// A local database file (WAL mode), the embedded default.
    Sqlite { path: PathBuf },
    /// One database that a fleet of gateways shares.
    Postgres(PostgresSettings),
}

impl StoreSettings {
    /// For `check-config --connect`: a PostgreSQL store is connected to (a SQLite one has
    /// nothing to reach).
    pub async fn try_connect(&self) -> Result<(), TrackingError> {
        match self {
            Self::Sqlite { .. } => Ok(()),
            Self::Postgres(pg) => {
                let (config, connector) = pg.client_settings()?;
                postgres::try_connect(&config, connector).await
            }
        }
    }

    /// For check-config: whether the store can be written where it is configured — for
    /// SQLite, that the database's directory exists and this user may create files in it
    /// (the database and its `-wal` and `-shm` files). A PostgreSQL store is not tried here.
    pub fn check_writable(&self) -> Result<(), String> {
        let Self::Sqlite { path } = self else {
            return Ok(());
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        if !dir.is_dir() {
            return Err(format!(
                "[tracking] path {}: the directory {} does not exist; create it, writable by the user Postern runs as (under systemd, StateDirectory=postern makes /var/lib/postern)",
                path.display(),
                dir.display()
            ));
        }
        tempfile::Builder::new()
            .prefix(".postern-check")
            .tempfile_in(dir)
            .map(drop)
            .map_err(|e| {
                format!(
                    "[tracking] path {}: cannot create files in {} ({e}); make it writable by the user Postern runs as (under systemd, StateDirectory=postern makes /var/lib/postern)",
                    path.display(),
                    dir.display()
                )
            })
    }
}

impl fmt::Display for StoreSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite { path } => write!(f, "sqlite {}", path.display()),
            Self::Postgres(pg) => write!(f, "postgres {pg:?}"),
        }
    }
}

/// A PostgreSQL connection: the URL (or key=value string) as configured, without its
/// `sslmode`; the password from `password_file`; how TLS is used, and the CA certificates of
/// `ca_file`. No password is ever shown.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    url: String,
    password: Option<String>,
    /// The mode in force: `sslmode` as written, except that `prefer` (also when unset)
    /// becomes `require` for a host off this machine.
    ssl_mode: SslMode,
    ca: Vec<CertificateDer<'static>>,
}

impl PostgresSettings {
    /// Checks that `url` is a connection string tokio-postgres understands, with an
    /// `sslmode` Postern knows.
    pub fn new(
        url: String,
        password: Option<String>,
        ca: Vec<CertificateDer<'static>>,
    ) -> Result<Self, String> {
        let (url, written) = postgres_tls::take_sslmode(&url)?;
        let mut settings = Self {
            url,
            password,
            ssl_mode: written.unwrap_or(SslMode::Prefer),
            ca,
        };
        let config = settings.config()?;
        if config.get_hosts().is_empty() {
            return Err(
                "names no host: write e.g. \"postgresql://postern@127.0.0.1:5432/postern\"".into(),
            );
        }
        if settings.ssl_mode == SslMode::Prefer && !postgres_tls::all_local(&config) {
            // Addresses, HELOs and passwords would cross the network in plain text.
            settings.ssl_mode = SslMode::Require;
        }
        Ok(settings)
    }

    /// The mode in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The client configuration, with the password file's password.
    pub(crate) fn config(&self) -> Result<tokio_postgres::Config, String> {
        let mut config: tokio_postgres::Config = self.url.parse().map_err(|e| {
            format!("is not a PostgreSQL connection URL ({e}): write e.g. \"postgresql://postern@127.0.0.1:5432/postern\"")
        })?;
        if let Some(password) = &self.password {
            config.password(password.as_bytes());
        }
        config.ssl_mode(self.ssl_mode.for_client());
        config.connect_timeout(std::time::Duration::from_secs(5));
        config.application_name("postern");
        // The schema is created with IF NOT EXISTS at every connection: PostgreSQL's notices
        // that it already was are not news.
        if config.get_options().is_none() {
            config.options("-c client_min_messages=warning");
        }
        Ok(config)
    }

    /// The client configuration and TLS connector, for a store operation.
    pub(crate) fn client_settings(
        &self,
    ) -> Result<
        (
            tokio_postgres::Config,
            tokio_postgres_rustls::MakeRustlsConnect,
        ),
        TrackingError,
    > {
        let config = self.config().map_err(TrackingError::Settings)?;
        let connector = self.connector().map_err(TrackingError::Settings)?;
        Ok((config, connector))
    }

    /// The TLS connector for this mode.
    pub(crate) fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
        postgres_tls::connector(self.ssl_mode, &self.ca)
    }
}

impl fmt::Debug for PostgresSettings {
    /// The URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = match self.config() {
            Ok(c) => {
                let hosts: Vec<String> = c
                    .get_hosts()
                    .iter()
                    .map(|h| match h {
                        tokio_postgres::config::Host::Tcp(name) => name.clone(),
                        tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                    })
                    .collect();
                format!(
                    "{}@{}:{:?}/{} sslmode={}",
                    c.get_user().unwrap_or(""),
                    hosts.join(","),
                    c.get_ports(),
                    c.get_dbname().unwrap_or(""),
                    self.ssl_mode.name()
                )
            }
            Err(_) => "(invalid url)".to_owned(),
        };
        f.write_str(&shown)
    }
}
