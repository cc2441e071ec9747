//! The SQLite store: one database file in WAL mode (readers such as `postern track` never
//! wait for the writer), written by one connection off the async threads.

use super::TrackingError;
use super::record::{FromRow, column_error};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, params};

use super::query::{Param, Query};
use super::record::{
    ADDED_COLUMNS, Record, Row, TABLE, create_table, indexes, insert_statement, search_key,
};

/// How long a statement waits for a lock held by another connection (a reader's checkpoint).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer's connection.
pub(super) struct Store {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

/// Creates the database file when it is missing: readable by its owner only (0600), or also by
/// its group (0640) when its directory is open to its group (such as `/var/lib/postern`, 0750,
/// whose group may run `postern track`); never by every user. SQLite gives the `-wal` and
/// `-shm` files the database's mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let group = std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o050 == 0o050);
    let mode = if group { 0o640 } else { 0o600 };
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl Store {
    /// Opens (creating when missing) the database at `path` and its table.
    pub(super) fn open(path: &Path) -> anyhow::Result<Self> {
        let fail = |e: rusqlite::Error| {
            anyhow::anyhow!(
                "[tracking] path: cannot open the SQLite database {}: {e} (its directory must exist and be writable by Postern)",
                path.display()
            )
        };
        create_private(path).map_err(|e| {
            anyhow::anyhow!(
                "[tracking] path: cannot create the SQLite database {}: {e} (its directory must exist and be writable by Postern)",
                path.display()
            )
        })?;
        let connection = Connection::open(path).map_err(fail)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(fail)?;
        // WAL with synchronous=NORMAL stays consistent after a crash and does not fsync each
        // batch: a tracking record is worth less than the mail's time.
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(fail)?;
        connection
            .execute(&create_table("INTEGER PRIMARY KEY"), [])
            .map_err(fail)?;
        // A table made by an earlier version gets the columns added since.
        let existing: Vec<String> = connection
            .prepare(&format!("SELECT name FROM pragma_table_info('{TABLE}')"))
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(fail)?;
        for (column, kind) in ADDED_COLUMNS {
            if !existing.iter().any(|c| c == column) {
                connection
                    .execute(
                        &format!("ALTER TABLE {TABLE} ADD COLUMN {column} {kind}"),
                        [],
                    )
                    .map_err(fail)?;
            }
        }
        for statement in indexes() {
            connection.execute(&statement, []).map_err(fail)?;
        }
        Ok(Self {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Writes `batch` in one transaction, on a blocking thread.
    pub(super) async fn write(&self, batch: Vec<Record>) -> Result<(), TrackingError> {
        let connection = self.connection.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            insert(&mut connection, &batch).map_err(|source| TrackingError::Sqlite { path, source })
        })
        .await?
    }

    /// Runs one of the retention's deletions; how many records it deleted.
    pub(super) async fn purge(&self, purge: Query) -> Result<u64, TrackingError> {
        let connection = self.connection.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            connection
                .execute(&purge.sql, rusqlite::params_from_iter(values(&purge)))
                .map(|n| n as u64)
                .map_err(|source| TrackingError::Sqlite { path, source })
        })
        .await?
    }
}

/// A query's values as SQLite takes them.
fn values(query: &Query) -> Vec<Value> {
    query
        .params
        .iter()
        .map(|p| match p {
            Param::Text(s) => Value::Text(s.clone()),
            Param::Int(n) => Value::Integer(*n),
        })
        .collect()
}

fn insert(connection: &mut Connection, batch: &[Record]) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    {
        let mut statement = tx.prepare(&insert_statement(|n| format!("?{n}")))?;
        for r in batch {
            statement.execute(params![
                r.time_ms,
                r.door,
                r.session,
                r.queue_id,
                r.client_addr,
                r.client_name,
                r.helo,
                r.tls,
                r.auth_user,
                r.sender,
                r.recipient,
                r.outcome,
                r.reply,
                r.relay_target,
                r.message_id,
                r.size,
                r.verdict,
                r.reason,
                r.rules,
                r.dry_run,
                r.would,
                r.duration_ms,
                r.relayed_sender,
                r.relayed_recipient,
                r.authentication,
                r.sender_organization,
                r.organization,
                search_key(&r.sender),
                r.recipient.as_deref().map(search_key),
            ])?;
        }
    }
    tx.commit()
}

impl Row for rusqlite::Row<'_> {
    fn int(&self, i: usize) -> Result<Option<i64>, TrackingError> {
        self.get(i).map_err(|e| column_error(i)(&e))
    }
    fn text(&self, i: usize) -> Result<Option<String>, TrackingError> {
        self.get(i).map_err(|e| column_error(i)(&e))
    }
    fn boolean(&self, i: usize) -> Result<bool, TrackingError> {
        self.get(i).map_err(|e| column_error(i)(&e))
    }
}

/// The last read-only connection, kept for the next search of the same database (a
/// console asks often, and opening one reads the schema again).
static READER: Mutex<Option<(PathBuf, Connection)>> = Mutex::new(None);

/// Runs `query` against the database at `path`, read-only.
pub(super) fn find<T: FromRow>(path: &Path, query: &Query) -> Result<Vec<T>, TrackingError> {
    if !path.exists() {
        return Err(TrackingError::NoDatabase(path.to_owned()));
    }
    let db = |source| TrackingError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let mut reader = READER.lock().unwrap_or_else(|e| e.into_inner());
    let connection = match reader.take() {
        Some((kept, connection)) if kept == path => connection,
        _ => {
            let connection = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db)?;
            connection.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
            connection
        }
    };
    let records = (|| {
        let mut statement = connection.prepare(&query.sql).map_err(db)?;
        let mut rows = statement
            .query(rusqlite::params_from_iter(values(query)))
            .map_err(db)?;
        let mut records = Vec::new();
        while let Some(row) = rows.next().map_err(db)? {
            records.push(T::from_row(row)?);
        }
        Ok(records)
    })();
    // Kept only when it served: a failing one (a database replaced, say) is opened again.
    if records.is_ok() {
        *reader = Some((path.to_owned(), connection));
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::query::Filter;

    #[test]
    fn the_database_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("tracking.sqlite");
        let store = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o640, "a directory open to its group");
        assert_eq!(mode(&dir.path().join("tracking.sqlite-wal")), 0o640);
        drop(store);
        let private = dir.path().join("private");
        std::fs::create_dir(&private).unwrap();
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let path = private.join("tracking.sqlite");
        Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        // An existing file keeps the mode its owner gave it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).unwrap();
        Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o660);
    }

    fn record(time_ms: i64, recipient: &str) -> Record {
        Record {
            time_ms,
            ..crate::tracking::record::sample(recipient)
        }
    }

    /// The console's chart: records counted per minute and verdict by the store, within the
    /// filter's time and organization.
    #[tokio::test]
    async fn records_are_counted_per_minute_and_verdict() {
        use crate::tracking::record::MinuteCount;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let store = Store::open(&path).unwrap();
        let mut rejected = record(120_500, "c@x");
        rejected.verdict = "reject".into();
        let mut acme = record(125_000, "d@acme.test");
        acme.organization = Some("acme".into());
        store
            .write(vec![
                record(60_000, "a@x"),
                record(119_999, "b@x"),
                rejected,
                acme,
                record(1_000, "too-old@x"),
            ])
            .await
            .unwrap();
        let count = |filter: Filter| {
            let mut counts: Vec<MinuteCount> =
                find(&path, &Query::per_minute(&filter, |n| format!("?{n}"))).unwrap();
            counts.sort_by(|a, b| (a.minute, &a.verdict).cmp(&(b.minute, &b.verdict)));
            counts
                .into_iter()
                .map(|c| (c.minute, c.verdict, c.count))
                .collect::<Vec<_>>()
        };
        let since = Filter {
            since_ms: Some(60_000),
            ..Filter::default()
        };
        assert_eq!(
            count(since.clone()),
            [
                (1, "continue".into(), 2),
                (2, "continue".into(), 1),
                (2, "reject".into(), 1)
            ]
        );
        let acme = Filter {
            organization: Some("acme".into()),
            ..since
        };
        assert_eq!(count(acme), [(2, "continue".into(), 1)]);
    }

    /// A table made before the relayed_* columns existed gets them when the store opens it.
    #[tokio::test]
    async fn an_older_table_gets_the_added_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        drop(Store::open(&path).unwrap());
        let old = Connection::open(&path).unwrap();
        for (column, _) in ADDED_COLUMNS {
            old.execute(&format!("DROP INDEX IF EXISTS {TABLE}_{column}"), [])
                .unwrap();
            old.execute(&format!("ALTER TABLE {TABLE} DROP COLUMN {column}"), [])
                .unwrap();
        }
        // A row of the older form: no search keys.
        old.execute(
            &format!(
                "INSERT INTO {TABLE} (time_ms, door, session, sender, outcome, verdict, dry_run, duration_ms) \
                 VALUES (500, 'proxy', 1, 'Old@Example.ORG', 'relayed', 'continue', 0, 1)"
            ),
            [],
        )
        .unwrap();
        drop(old);
        let store = Store::open(&path).unwrap();
        let mut r = record(1_000, "bob@old.example");
        r.relayed_sender = Some("ann@example.com".into());
        r.relayed_recipient = Some("bob@new.example".into());
        store.write(vec![r.clone()]).await.unwrap();
        let query = Query::new(
            &Filter {
                limit: 10,
                ..Filter::default()
            },
            |n| format!("?{n}"),
        );
        assert_eq!(find::<Record>(&path, &query).unwrap()[0], r);
        // The older row is found by its address all the same.
        let query = Query::new(
            &Filter {
                sender: Some("old@example.org".into()),
                limit: 10,
                ..Filter::default()
            },
            |n| format!("?{n}"),
        );
        assert_eq!(find::<Record>(&path, &query).unwrap().len(), 1);
    }

    /// Addresses are found whatever their case, beyond ASCII too (SQLite's lower() knows
    /// ASCII only: before, `jürgen@bücher.example` did not find `Jürgen@BÜCHER.example`).
    #[tokio::test]
    async fn non_ascii_addresses_are_found_in_any_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let store = Store::open(&path).unwrap();
        let mut r = record(1_000, "ÄNNE@Zürich.example");
        r.sender = "Jürgen@BÜCHER.example".into();
        store.write(vec![r.clone()]).await.unwrap();
        let found = |sender: Option<&str>, recipient: Option<&str>| {
            let query = Query::new(
                &Filter {
                    sender: sender.map(str::to_owned),
                    recipient: recipient.map(str::to_owned),
                    limit: 10,
                    ..Filter::default()
                },
                |n| format!("?{n}"),
            );
            find::<Record>(&path, &query).unwrap().len()
        };
        assert_eq!(found(Some("jürgen@bücher.example"), None), 1);
        assert_eq!(found(Some("@Bücher.Example"), None), 1);
        assert_eq!(found(None, Some("änne@zürich.example")), 1);
        assert_eq!(found(None, Some("@ZÜRICH.example")), 1);
        assert_eq!(found(Some("jurgen@bucher.example"), None), 0);
    }

    #[tokio::test]
    async fn records_past_their_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sqlite");
        let store = Store::open(&path).unwrap();
        const DAY: i64 = 86_400_000;
        let of = |time_ms, recipient, organization: Option<&str>| Record {
            organization: organization.map(str::to_owned),
            ..record(time_ms, recipient)
        };
        let old = of(1_000, "old@d.example", None);
        let new = of(5_000, "new@d.example", None);
        // acme keeps its records 3 days, globex follows retention_days.
        let acme = of(1_000, "a@acme.test", Some("acme"));
        let acme_older = of(1_000 - 2 * DAY, "b@acme.test", Some("acme"));
        let globex = of(1_000, "g@globex.test", Some("globex"));
        let all = vec![old, new.clone(), acme.clone(), acme_older, globex];
        store.write(all).await.unwrap();
        let retention = crate::tracking::Retention {
            days: 1,
            organizations: vec![("acme".into(), 3)],
        };
        let mut deleted = 0;
        for purge in retention.purges(2_000 + DAY, |n| format!("?{n}")) {
            deleted += store.purge(purge).await.unwrap();
        }
        assert_eq!(deleted, 3, "old, globex's and acme's older than 3 days");
        let query = Query::new(
            &Filter {
                limit: 10,
                ..Filter::default()
            },
            |n| format!("?{n}"),
        );
        let mut left = find::<Record>(&path, &query).unwrap();
        left.sort_by_key(|r| r.recipient.clone());
        assert_eq!(left, vec![acme, new]);
        // Nothing is deleted without a retention.
        assert!(
            crate::tracking::Retention::default()
                .purges(0, |n| format!("?{n}"))
                .is_empty()
        );
        // Opening it again finds the table and keeps what is there.
        drop(store);
        Store::open(&path).unwrap();
        assert_eq!(find::<Record>(&path, &query).unwrap().len(), 2);
    }
}
