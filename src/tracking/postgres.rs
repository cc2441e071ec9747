//! The PostgreSQL store, for a fleet that shares one database: one connection, opened when
//! first needed and opened again after it broke, at most every few seconds while the server
//! is down (records that come meanwhile are dropped, never waited for).

use super::TrackingError;
use super::record::{FromRow, column_error};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::{info, warn};

use super::query::{Param, Query};
use super::record::{
    ADDED_COLUMNS, Record, Row, TABLE, create_table, indexes, insert_statement, search_key,
};

/// The wait after a failed connection before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The writer's connection.
pub(super) struct Store {
    config: Config,
    tls: MakeRustlsConnect,
    client: Option<Client>,
    /// No new connection is tried before this.
    retry_at: Option<Instant>,
    /// Why the last connection failed: told again until the next try.
    last_error: String,
}

impl Store {
    pub(super) fn new(config: Config, tls: MakeRustlsConnect) -> Self {
        Self {
            config,
            tls,
            client: None,
            retry_at: None,
            last_error: String::new(),
        }
    }

    /// The connection, opened (with the table) when there is none or it broke.
    async fn client(&mut self) -> Result<&mut Client, TrackingError> {
        if self.client.as_ref().is_some_and(Client::is_closed) {
            warn!("message tracking: the PostgreSQL connection was lost");
            self.client = None;
        }
        if self.client.is_none() {
            if let Some(at) = self.retry_at
                && Instant::now() < at
            {
                return Err(TrackingError::Retrying(self.last_error.clone()));
            }
            match connect(&self.config, self.tls.clone()).await {
                Ok(client) => {
                    info!("message tracking: connected to PostgreSQL");
                    self.client = Some(client);
                    self.retry_at = None;
                }
                Err(e) => {
                    self.retry_at = Some(Instant::now() + RETRY_AFTER);
                    self.last_error = e.to_string();
                    return Err(e);
                }
            }
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Writes `batch` in one transaction. On an error the connection is given up, so that
    /// the next batch starts on a fresh one.
    pub(super) async fn write(&mut self, batch: &[Record]) -> Result<(), TrackingError> {
        let client = self.client().await?;
        let result = insert(client, batch).await;
        if result.is_err() {
            self.client = None;
        }
        result.map_err(TrackingError::postgres("PostgreSQL"))
    }

    /// Runs one of the retention's deletions; how many records it deleted.
    pub(super) async fn purge(&mut self, purge: &Query) -> Result<u64, TrackingError> {
        let client = self.client().await?;
        let params = values(purge);
        client
            .execute(&purge.sql, &refs(&params))
            .await
            .map_err(TrackingError::postgres("PostgreSQL"))
    }
}

/// A query's values as tokio-postgres takes them.
fn values(query: &Query) -> Vec<Box<dyn ToSql + Sync + Send>> {
    query
        .params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Text(s) => Box::new(s.clone()),
                Param::Int(n) => Box::new(*n),
            }
        })
        .collect()
}

fn refs(values: &[Box<dyn ToSql + Sync + Send>]) -> Vec<&(dyn ToSql + Sync)> {
    values
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect()
}

/// A new connection, its driver running on its own task, and the table.
async fn connect(config: &Config, tls: MakeRustlsConnect) -> Result<Client, TrackingError> {
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(TrackingError::postgres("cannot connect to PostgreSQL"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "message tracking: PostgreSQL connection ended");
        }
    });
    let added = ADDED_COLUMNS.iter().map(|(column, kind)| {
        format!("ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS {column} {kind}")
    });
    let statements = std::iter::once(create_table("BIGSERIAL PRIMARY KEY"))
        .chain(added)
        .chain(indexes());
    for statement in statements {
        client
            .batch_execute(&statement)
            .await
            .map_err(TrackingError::postgres(
                "cannot create the tracking table in PostgreSQL",
            ))?;
    }
    Ok(client)
}

async fn insert(client: &mut Client, batch: &[Record]) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let statement = tx.prepare(&insert_statement(|n| format!("${n}"))).await?;
    for r in batch {
        tx.execute(
            &statement,
            &[
                &r.time_ms,
                &r.door,
                &r.session,
                &r.queue_id,
                &r.client_addr,
                &r.client_name,
                &r.helo,
                &r.tls,
                &r.auth_user,
                &r.sender,
                &r.recipient,
                &r.outcome,
                &r.reply,
                &r.relay_target,
                &r.message_id,
                &r.size,
                &r.verdict,
                &r.reason,
                &r.rules,
                &r.dry_run,
                &r.would,
                &r.duration_ms,
                &r.relayed_sender,
                &r.relayed_recipient,
                &r.authentication,
                &r.sender_organization,
                &r.organization,
                &search_key(&r.sender),
                &r.recipient.as_deref().map(search_key),
            ],
        )
        .await?;
    }
    tx.commit().await
}

impl Row for tokio_postgres::Row {
    fn int(&self, i: usize) -> Result<Option<i64>, TrackingError> {
        self.try_get(i).map_err(|e| column_error(i)(&e))
    }
    fn text(&self, i: usize) -> Result<Option<String>, TrackingError> {
        self.try_get(i).map_err(|e| column_error(i)(&e))
    }
    fn boolean(&self, i: usize) -> Result<bool, TrackingError> {
        self.try_get(i).map_err(|e| column_error(i)(&e))
    }
}

/// For `check-config --connect`: connects as the writer would and asks `SELECT 1`.
pub(super) async fn try_connect(
    config: &Config,
    tls: MakeRustlsConnect,
) -> Result<(), TrackingError> {
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(TrackingError::postgres("cannot connect to PostgreSQL"))?;
    let driver = tokio::spawn(connection);
    let answer = client
        .simple_query("SELECT 1")
        .await
        .map_err(TrackingError::postgres(
            "PostgreSQL did not answer SELECT 1",
        ));
    drop(client);
    let _ = driver.await;
    answer.map(drop)
}

/// Runs `query` on a connection of its own.
pub(super) async fn find<T: FromRow>(
    config: &Config,
    tls: MakeRustlsConnect,
    query: &Query,
) -> Result<Vec<T>, TrackingError> {
    let (client, connection) = config.connect(tls).await.map_err(TrackingError::postgres(
        "cannot connect to the tracking database (PostgreSQL)",
    ))?;
    let driver = tokio::spawn(connection);
    let params = values(query);
    let rows = client
        .query(&query.sql, &refs(&params))
        .await
        .map_err(|source| {
            let hint = if source.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
                " (no record was written yet: Postern creates the table when it first writes)"
            } else {
                ""
            };
            TrackingError::Postgres {
                doing: "tracking database (PostgreSQL)",
                source,
                hint,
            }
        })?;
    drop(client);
    let _ = driver.await;
    rows.iter().map(T::from_row).collect()
}
