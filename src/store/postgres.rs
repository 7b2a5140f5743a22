//! PostgreSQL, for production and for several replicas behind a load balancer. The
//! unique keys of the nonce and idempotency tables make concurrent duplicates wait for
//! the first transaction and then see its result (READ COMMITTED); instance changes
//! take a row lock.

use super::events;
use super::rows::{JobRow, job_columns};
use super::seal::Sealer;
use super::{Job, JobFailure, JobState, Lease, NewJob, PoolOptions, Store, StoreResult, Tx};
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::sync::Arc;

pub struct PgStore {
    pool: PgPool,
    sealer: Arc<Sealer>,
}

/// Takes the job due longest: a pending one whose time has come, else a running one whose
/// lease has ended, each through its own partial index; a job whose lane holds an earlier
/// unfinished job waits. `FOR UPDATE SKIP LOCKED` lets replicas claim side by side: a row
/// another replica is claiming is skipped, and once claimed it is no longer due until its
/// lease ends.
const CLAIM_JOB: &str = concat!(
    "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = $1, updated_ms = $2, \
     lease_until_ms = $3 WHERE id = COALESCE(\
     (SELECT id FROM jobs j WHERE state = 'pending' AND run_at_ms <= $4 AND (lane IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e WHERE e.lane = j.lane AND e.id < j.id AND e.state <> 'done')) \
     ORDER BY run_at_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED), \
     (SELECT id FROM jobs j WHERE state = 'running' AND lease_until_ms < $5 AND (lane IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e WHERE e.lane = j.lane AND e.id < j.id AND e.state <> 'done')) \
     ORDER BY lease_until_ms, id LIMIT 1 FOR UPDATE SKIP LOCKED)) RETURNING ",
    job_columns!()
);
const FINISH_JOB: &str = "UPDATE jobs SET state = 'done', lease_token = NULL, lease_until_ms = NULL, updated_ms = $1 \
     WHERE id = $2 AND lease_token = $3 AND state = 'running'";
const FAIL_JOB: &str = "UPDATE jobs SET state = $1, run_at_ms = COALESCE($2, run_at_ms), last_error = $3, \
     lease_token = NULL, lease_until_ms = NULL, updated_ms = $4, attempts = attempts - $7 \
     WHERE id = $5 AND lease_token = $6 AND state = 'running'";

impl PgStore {
    /// Connects lazily: the server starts (and says so on `/readyz`) while the database
    /// is still down, and every pool use waits at most the acquire timeout.
    /// What is kept encrypted is sealed with `sealer`.
    pub async fn connect(url: &str, options: &PoolOptions, sealer: Sealer) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // No ping before each use: it would be a round trip on every callback. A
            // connection the server dropped fails its next statement instead (answered
            // `000005`) and is not given out again.
            .test_before_acquire(false)
            .connect_lazy(url)?;
        Ok(Self {
            pool,
            sealer: Arc::new(sealer),
        })
    }

    /// A transaction for a batch of writes outside a callback.
    async fn write_tx(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        self.seal_at_rest(chrono::Utc::now().timestamp_millis())
            .await?;
        Ok(())
    }

    async fn seal_at_rest(&self, now_ms: i64) -> StoreResult<super::Sealed> {
        super::at_rest::pg::seal_all(&self.pool, None, &self.sealer, now_ms).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(
            PgTx::begin(&self.pool, self.sealer.clone()).await?,
        ))
    }

    async fn begin_callback(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(super::deferred::DeferredTx::new(
            self.pool.clone(),
            self.sealer.clone(),
        )))
    }

    async fn claim_job(&self, lease: &Lease) -> StoreResult<Option<Job>> {
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
        let done = sqlx::query(FAIL_JOB)
            .bind(state.as_str())
            .bind(run_at)
            .bind(failure.error)
            .bind(failure.now_ms)
            .bind(failure.id)
            .bind(failure.token)
            .bind(i64::from(failure.uncounted))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn jobs_about(&self, subject: &str) -> StoreResult<Vec<Job>> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE subject = $1 ORDER BY id"
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
            " FROM jobs WHERE id = $1"
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
            " FROM jobs WHERE state = 'failed' ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(JobRow::into_job).collect()
    }

    async fn requeue_job(&self, id: i64, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET state = 'pending', attempts = 0, run_at_ms = $1, updated_ms = $2 \
             WHERE id = $3 AND state = 'failed'",
        )
        .bind(now_ms)
        .bind(now_ms)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_failed(&self, kind: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        events::pg::requeue_failed(&self.pool, kind, now_ms).await
    }

    async fn job_by_key(&self, kind: &str, key: &str) -> StoreResult<Option<Job>> {
        events::pg::job_by_key(&self.pool, kind, key).await
    }

    async fn purge_jobs(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        events::pg::purge_jobs(&self.pool, before_ms, batch).await
    }
}

/// A transaction, and the sealer of what it writes encrypted.
pub(super) struct PgTx(Transaction<'static, Postgres>, Arc<Sealer>);

impl PgTx {
    pub(super) async fn begin(pool: &PgPool, sealer: Arc<Sealer>) -> StoreResult<Self> {
        Ok(Self(pool.begin().await?, sealer))
    }

    /// The transaction's connection, for statements of its own.
    pub(super) fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }
}

// The subtraits and the transaction's methods shared with the other backend; the job
// queue's writes in a transaction and the commit are this backend's own.
super::backend::shared_impls! {
    store: PgStore,
    writer: [],
    tx: PgTx { conn: 0, sealer: 1 },
    dialect: pg,
    own: {
    async fn enqueue_job(&mut self, job: &NewJob) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO jobs (kind, payload, dedup_key, subject, lane, state, attempts, run_at_ms, created_ms, updated_ms) \
             VALUES ($1, $2, $3, $4, $5, 'pending', 0, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(&job.dedup_key)
        .bind(&job.subject)
        .bind(&job.lane)
        .bind(job.run_at_ms)
        .bind(job.created_ms)
        .bind(job.created_ms)
        .execute(&mut *self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_job(&mut self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(FINISH_JOB)
            .bind(now_ms)
            .bind(id)
            .bind(token)
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await?;
        Ok(())
    }
    }
}
