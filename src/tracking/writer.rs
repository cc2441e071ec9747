//! The writer: one task that drains the queue into the store in batches and deletes records
//! past their retention. A batch the store refuses is dropped (and counted): records are
//! never retried at the cost of newer ones, and mail never waits for them.

use super::TrackingError;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::drops::Drops;
use super::record::{Record, Retention, now_ms};
use super::{postgres, sqlite};

/// Records written in one transaction at most.
const MAX_BATCH: usize = 500;
/// How long the writer lets records gather after the first of a batch: one transaction per
/// tenth of a second rather than per message keeps the store's writes (a WAL frame per index
/// page touched, per commit) from competing with the MTA's own disk work.
const GATHER: Duration = Duration::from_millis(100);
/// How often records past their retention are deleted (and once at start).
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// The store the writer writes to.
pub(super) enum Backend {
    Sqlite(sqlite::Store),
    Postgres(Box<postgres::Store>),
}

impl Backend {
    async fn write(&mut self, batch: Vec<Record>) -> Result<(), TrackingError> {
        match self {
            Self::Sqlite(store) => store.write(batch).await,
            Self::Postgres(store) => store.write(&batch).await,
        }
    }

    /// Deletes what is past its retention now; how many records.
    async fn purge(&mut self, retention: &Retention) -> Result<u64, TrackingError> {
        let mut deleted = 0;
        match self {
            Self::Sqlite(store) => {
                for purge in retention.purges(now_ms(), |n| format!("?{n}")) {
                    deleted += store.purge(purge).await?;
                }
            }
            Self::Postgres(store) => {
                for purge in retention.purges(now_ms(), |n| format!("${n}")) {
                    deleted += store.purge(&purge).await?;
                }
            }
        }
        Ok(deleted)
    }
}

/// The running writer.
#[derive(Debug)]
pub(super) struct Writer {
    stop: oneshot::Sender<()>,
    done: JoinHandle<()>,
}

impl Writer {
    pub(super) fn spawn(
        backend: Backend,
        records: mpsc::Receiver<Record>,
        drops: Arc<Drops>,
        retention: Retention,
    ) -> Self {
        let (stop, stopped) = oneshot::channel();
        let done = tokio::spawn(run(backend, records, drops, retention, stopped));
        Self { stop, done }
    }

    /// Stores what is queued, for at most `within`, and ends.
    pub(super) async fn finish(self, within: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(within, self.done).await.is_err() {
            warn!(
                "message tracking: the store did not take the last records in time; they are lost"
            );
        }
    }
}

async fn run(
    mut backend: Backend,
    mut records: mpsc::Receiver<Record>,
    drops: Arc<Drops>,
    retention: Retention,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut purge = tokio::time::interval(PURGE_INTERVAL);
    purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return drain(&mut backend, records, None, &drops).await,
            first = records.recv() => {
                let Some(first) = first else { return };
                if records.len() < MAX_BATCH {
                    tokio::select! {
                        biased;
                        _ = &mut stopped => {
                            return drain(&mut backend, records, Some(first), &drops).await;
                        }
                        _ = tokio::time::sleep(GATHER) => {}
                    }
                }
                let batch = next_batch(&mut records, Some(first));
                write(&mut backend, batch, &drops).await;
            }
            _ = purge.tick(), if retention.deletes() => {
                match backend.purge(&retention).await {
                    Ok(0) => {}
                    Ok(n) => info!(deleted = n, retention_days = retention.days, "message tracking: old records deleted"),
                    Err(e) => warn!(error = %e, "message tracking: cannot delete old records; will try again in an hour"),
                }
            }
        }
    }
}

/// At shutdown: writes `first` and everything queued, taking no more.
async fn drain(
    backend: &mut Backend,
    mut records: mpsc::Receiver<Record>,
    first: Option<Record>,
    drops: &Drops,
) {
    records.close();
    let mut first = first;
    while first.is_some() || !records.is_empty() {
        let batch = next_batch(&mut records, first.take());
        write(backend, batch, drops).await;
    }
}

/// `first` and what else is queued, up to a batch.
fn next_batch(records: &mut mpsc::Receiver<Record>, first: Option<Record>) -> Vec<Record> {
    let mut batch: Vec<Record> = first.into_iter().collect();
    while batch.len() < MAX_BATCH {
        match records.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
    batch
}

async fn write(backend: &mut Backend, batch: Vec<Record>, drops: &Drops) {
    let n = batch.len() as u64;
    match backend.write(batch).await {
        Ok(()) => debug!(records = n, "message tracking: records written"),
        Err(e) => drops.dropped("store_unavailable", n, &e.to_string()),
    }
}
