//! Why the tracking store could not be written or read, in kinds the writer and
//! `postern track` tell apart.

use std::path::PathBuf;

use crate::logging::error_chain;

/// Why the tracking store could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum TrackingError {
    /// The `[tracking]` settings cannot be used (the URL, `ca_file`): what to write instead.
    #[error("{0}")]
    Settings(String),
    /// The filter of `postern track` cannot select anything (`--since` after `--until`, ...).
    #[error("{0}")]
    Filter(String),
    /// There is no SQLite database yet.
    #[error(
        "there is no tracking database at {} yet: Postern creates it when it starts with this [tracking] configuration",
        .0.display()
    )]
    NoDatabase(PathBuf),
    /// The SQLite database could not be opened, read or written.
    #[error("tracking database {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    /// PostgreSQL refused, failed or could not be reached while `doing` something; its words
    /// and, where it helps, what to do.
    #[error("{doing}: {}{hint}", postgres_words(source))]
    Postgres {
        doing: &'static str,
        source: tokio_postgres::Error,
        hint: &'static str,
    },
    /// The last connection attempt failed a moment ago; the next is not due yet.
    #[error("{0} (the connection is tried again every 5 s)")]
    Retrying(String),
    /// A stored row did not read as a record.
    #[error("column {column}: {message}")]
    Column {
        column: &'static str,
        message: String,
    },
    /// The store's blocking thread stopped.
    #[error("the tracking store's thread stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl TrackingError {
    /// PostgreSQL failed while `doing` something.
    pub(super) fn postgres(doing: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Self {
        move |source| Self::Postgres {
            doing,
            source,
            hint: "",
        }
    }
}

/// An error as PostgreSQL said it (`FATAL: password authentication failed for user
/// "postern"`), or with its causes when it did not come from the server.
fn postgres_words(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut text = format!("{}: {}", db.severity(), db.message());
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" ({hint})"));
            }
            text
        }
        None => error_chain(e),
    }
}
