//! The embedded default: one SQLite file in WAL mode. SQLite has one writer at a time,
//! so writers queue in-process on an async lock, first come first served, and each
//! callback transaction is `BEGIN IMMEDIATE`. Left to SQLite's busy handler alone,
//! waiting writers sleep and poll, which showed as a 100 ms+ latency tail under load;
//! the busy timeout still covers other processes (a `koogate migrate`, say).

use super::events;
use super::rows::{JobRow, job_columns};
use super::seal::Sealer;
use super::{
    Job, JobFailure, JobState, Lease, NewJob, PoolOptions, Store, StoreError, StoreResult, Tx,
};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Arc<Mutex<()>>,
    sealer: Arc<Sealer>,
}

/// Takes the oldest due job. A single statement, under this process's writer turn and
/// SQLite's one writer lock, so two workers (even in two processes on one file) never
/// take the same job.
const CLAIM_JOB: &str = concat!(
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = ?, updated_ms = ?, \
     lease_until_ms = ? WHERE id = COALESCE(\
     (SELECT id FROM jobs j WHERE state = 'pending' AND run_at_ms <= ? AND (lane IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e WHERE e.lane = j.lane AND e.id < j.id AND e.state <> 'done')) \
     ORDER BY run_at_ms, id LIMIT 1), \
     (SELECT id FROM jobs j WHERE state = 'running' AND lease_until_ms < ? AND (lane IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e WHERE e.lane = j.lane AND e.id < j.id AND e.state <> 'done')) \
     ORDER BY lease_until_ms, id LIMIT 1)) RETURNING ",
    job_columns!()
);
const FINISH_JOB: &str = "UPDATE jobs SET state = 'done', lease_token = NULL, lease_until_ms = NULL, updated_ms = ? \
     WHERE id = ? AND lease_token = ? AND state = 'running'";
const FAIL_JOB: &str = "UPDATE jobs SET state = ?, run_at_ms = COALESCE(?, run_at_ms), last_error = ?, \
     lease_token = NULL, lease_until_ms = NULL, updated_ms = ?, attempts = attempts - ? \
     WHERE id = ? AND lease_token = ? AND state = 'running'";

impl SqliteStore {
    /// Opens (creating when missing) the database file and its folder; what is kept
    /// encrypted is sealed with `sealer`.
    pub async fn connect(url: &str, options: &PoolOptions, sealer: Sealer) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed answer survives a power cut, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            // Rewritten and deleted rows are zeroed, not left in free space: the start-up
            // pass that encrypts an older release's plain text, and the purges of buyer
            // data and old records, must not leave what they replaced readable in the file.
            .pragma("secure_delete", "on")
            .busy_timeout(options.acquire_timeout);
        let file = connect.get_filename().to_owned();
        if let Some(folder) = file.parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(|e| {
                StoreError::SqliteFile(format!(
                    "cannot create the folder {} of the database file: {e}",
                    folder.display()
                ))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                StoreError::SqliteFile(format!(
                    "cannot open the database file {}: {e}",
                    file.display()
                ))
            })?;
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(())),
            sealer: Arc::new(sealer),
        })
    }

    /// A transaction for a batch of writes outside a callback, `IMMEDIATE` like every
    /// write transaction here: it takes the write lock as it begins. The caller holds
    /// the writers' turn.
    async fn write_tx(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        self.seal_at_rest(chrono::Utc::now().timestamp_millis())
            .await?;
        Ok(())
    }

    async fn seal_at_rest(&self, now_ms: i64) -> StoreResult<super::Sealed> {
        let sealed =
            super::at_rest::lite::seal_all(&self.pool, Some(&*self.writer), &self.sealer, now_ms)
                .await?;
        if sealed.ran {
            // The zeroed pages reach the database file at the next checkpoint: take it
            // now, so the replaced plain text is gone from the file, not only from the WAL.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(sealed)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin_callback(&self) -> StoreResult<Box<dyn Tx>> {
        // One writer at a time already: an ordinary transaction is as short as it gets.
        self.begin().await
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx {
            tx,
            sealer: self.sealer.clone(),
            _turn: turn,
        }))
    }

    async fn claim_job(&self, lease: &Lease) -> StoreResult<Option<Job>> {
        let _turn = self.writer.lock().await;
        let row: Option<JobRow> = sqlx::query_as(CLAIM_JOB)
            .bind(&lease.token)
            .bind(lease.now_ms)
            .bind(lease.now_ms.saturating_add(lease.duration_ms))
            .bind(lease.now_ms)
            .bind(lease.now_ms)
            .fetch_optional(&self.pool)
            .await?;
        row.map(JobRow::into_job).transpose()
    }

    async fn finish_job(&self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool> {
        let _turn = self.writer.lock().await;
        let done = sqlx::query(FINISH_JOB)
            .bind(now_ms)
            .bind(id)
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn fail_job(&self, failure: &JobFailure<'_>) -> StoreResult<bool> {
        let (state, run_at) = match failure.retry_at_ms {
            Some(at) => (JobState::Pending, Some(at)),
            None => (JobState::Failed, None),
        };
        let _turn = self.writer.lock().await;
        let done = sqlx::query(FAIL_JOB)
            .bind(state.as_str())
            .bind(run_at)
            .bind(failure.error)
            .bind(failure.now_ms)
            .bind(i64::from(failure.uncounted))
            .bind(failure.id)
            .bind(failure.token)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn jobs_about(&self, subject: &str) -> StoreResult<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE subject = ? ORDER BY id"
        ))
        .bind(subject)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    async fn job(&self, id: i64) -> StoreResult<Option<Job>> {
        let row: Option<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(JobRow::into_job).transpose()
    }

    async fn failed_jobs(&self, limit: u32) -> StoreResult<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE state = 'failed' ORDER BY id LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    async fn requeue_job(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        let _turn = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts = 0, run_at_ms = ?, updated_ms = ? \
             WHERE id = ? AND state = 'failed'",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_failed(&self, kind: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        events::lite::requeue_failed(&self.pool, kind, now_ms).await
    }

    async fn job_by_key(&self, kind: &str, key: &str) -> StoreResult<Option<Job>> {
        events::lite::job_by_key(&self.pool, kind, key).await
    }

    async fn purge_jobs(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        events::lite::purge_jobs(&self.pool, before_ms, batch).await
    }
}

/// A write transaction and this process's turn to write. Fields drop in order: the
/// transaction rolls back (when not committed) before the turn passes on.
struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    sealer: Arc<Sealer>,
    _turn: OwnedMutexGuard<()>,
}

// The subtraits and the transaction's methods shared with the other backend; the job
// queue's writes in a transaction and the commit are this backend's own.
super::backend::shared_impls! {
    store: SqliteStore,
    writer: [writer],
    tx: SqliteTx { conn: tx, sealer: sealer },
    dialect: lite,
    own: {
    async fn enqueue_job(&mut self, job: &NewJob) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO jobs (kind, payload, dedup_key, subject, lane, state, attempts, run_at_ms, created_ms, updated_ms) \
             VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(&job.dedup_key)
        .bind(&job.subject)
        .bind(&job.lane)
        .bind(job.run_at_ms)
        .bind(job.created_ms)
        .bind(job.created_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_job(&mut self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(FINISH_JOB)
            .bind(now_ms)
            .bind(id)
            .bind(token)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.tx.commit().await?;
        Ok(())
    }
    }
}
