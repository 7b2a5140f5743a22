//! The durable job queue: enqueueing, claiming under a lease, finishing, failing, and the
//! operators' reads and requeues. SQL written once, expanded for each backend by
//! `queries!`, with the dialect differences passed in: how the database tells the time,
//! and how a claim steps over rows another replica is claiming.
//!
//! Whether a job is due, whether its lease has ended and when a new lease ends are the
//! database's call, on the database's clock: replicas whose clocks disagree can then
//! neither take a job whose lease still holds nor hold one past its end. The caller
//! gives durations (the lease, the wait before a retry); the instants they start from
//! are the database's. A new job's `run_at_ms` is the caller's (a job enqueued "now" is
//! due at once unless the caller's clock runs ahead of the database's), and the caller's
//! clock still stamps `updated_ms`, which only records when a person or replica last
//! touched the job.

use super::{Job, JobFailure, Lease, StoreResult};
use async_trait::async_trait;

/// The queue's side of the store.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Takes up to `limit` due jobs — pending jobs whose time has come and running ones
    /// whose lease has ended, those due longest first — in one statement, marks them
    /// running under `lease` (ending `lease.duration_ms` after the database's now),
    /// counts the attempt, and returns them. A job whose lane holds an earlier unfinished
    /// job waits (enqueued as [`JobState::Waiting`](super::JobState::Waiting), made
    /// pending when the job before it is done), so a batch has at most one job of a
    /// lane. No two callers get the same job while its lease holds.
    async fn claim_jobs(&self, lease: &Lease, limit: u32) -> StoreResult<Vec<Job>>;
    /// [`Queue::claim_jobs`] for one job.
    async fn claim_job(&self, lease: &Lease) -> StoreResult<Option<Job>> {
        Ok(self.claim_jobs(lease, 1).await?.pop())
    }
    /// Marks a job done; `false` when the lease was lost (another worker took it over).
    async fn finish_job(&self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool>;
    /// Records a failed attempt: the job is due again `retry_in_ms` after the database's
    /// now, or parked as failed when that is `None`. `false` when the lease was lost.
    async fn fail_job(&self, failure: &JobFailure<'_>) -> StoreResult<bool>;
    /// The jobs about a subject (an order id), oldest first.
    async fn jobs_about(&self, subject: &str) -> StoreResult<Vec<Job>>;
    /// One job.
    async fn job(&self, id: i64) -> StoreResult<Option<Job>>;
    /// Jobs parked as failed, oldest first.
    async fn failed_jobs(&self, limit: u32) -> StoreResult<Vec<Job>>;
    /// Puts a parked job back in the queue, due now, with a fresh count of attempts (its
    /// last error is kept until the next attempt); `false` if it is not parked.
    async fn requeue_job(&self, id: i64, now_ms: i64) -> StoreResult<bool>;
    /// Every parked job (of `kind`, or of every kind) back in the queue, as
    /// [`Queue::requeue_job`] does, in one statement; returns how many.
    async fn requeue_failed(&self, kind: Option<&str>, now_ms: i64) -> StoreResult<u64>;
    /// The job of a kind with this dedup key.
    async fn job_by_key(&self, kind: &str, key: &str) -> StoreResult<Option<Job>>;
    /// Deletes at most `batch` jobs finished before `before_ms`; returns how many.
    async fn purge_jobs(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;
    /// Makes pending the waiting jobs that nothing unfinished in their lane holds back
    /// any more (the release at a finish lost to a crash between its two statements);
    /// returns how many. Run by the maintenance once a minute.
    async fn release_waiting(&self, now_ms: i64) -> StoreResult<u64>;
}

/// The claim's statement on PostgreSQL, whose plan the tests read. Its parameters are
/// the limit, the lease token, the caller's now and the lease's duration.
pub const PG_CLAIM: &str = pg::CLAIM;
/// The same on SQLite.
pub const SQLITE_CLAIM: &str = lite::CLAIM;

/// The planner settings of PostgreSQL's claim connections. The claim is right only when
/// it walks `jobs_pending_due` and `jobs_running_lease` in order and stops after its
/// limit; the only rows it may sort are those at most twice-limit candidates. Before
/// the jobs table has statistics (a new database, until autovacuum first analyzes it),
/// the planner thinks it holds a handful of pending rows and prefers a bitmap scan with
/// a sort of every due row, which the connection then keeps as its cached plan: in a
/// benchmark on a new database, 1.8 ms a claim over 20,000 due jobs instead of 0.15.
/// With sorting ruled out where an index gives the order, the plan cannot depend on
/// statistics at all. A plan's one unavoidable sort still counts the penalty of a sort
/// ruled out (10^10), so JIT compilation, which PostgreSQL starts above a cost, is off
/// too: it would compile the claim anew at every execution (265 ms).
///
/// The claim is also planned only once per connection (`force_generic_plan`). Left to
/// choose, PostgreSQL planned it afresh at almost every execution once autovacuum had
/// analyzed the table (the generic plan, costed for any `LIMIT $1`, looked dearer):
/// 0.3 ms of planning a claim, twice its execution, in a benchmark that drained 20,000
/// jobs. A plan made once is made whenever the connection first claims, perhaps on an
/// empty table, so nothing in it may depend on the table's size: sequential scans are
/// ruled out, the lane probe can only use `jobs_lane` (see [`pg`]), and the update
/// takes its rows through the primary key from an array ([`claim_sql!`]). Such a plan
/// made on an empty table and run over 20,000 due jobs used to join every row of the
/// table, 27 ms a claim.
pub const PG_CLAIM_SETTINGS: [(&str, &str); 4] = [
    ("enable_sort", "off"),
    ("enable_seqscan", "off"),
    ("jit", "off"),
    ("plan_cache_mode", "force_generic_plan"),
];

/// What a committed transaction did that others may wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Committed {
    /// It enqueued at least one job.
    pub enqueued: bool,
}

impl Committed {
    /// Wakes the worker waiting on `wake` when there is new work for it; a commit that
    /// enqueued nothing leaves it asleep (it still polls, for the jobs of other replicas).
    pub fn wake(self, wake: &tokio::sync::Notify) {
        if self.enqueued {
            wake.notify_one();
        }
    }
}

/// The state of a new job whose lane is `$lane` (SQL): waiting while an earlier job of
/// its lane is unfinished, else pending. `$share` locks the unfinished job found
/// (PostgreSQL's ` FOR SHARE`) until the enqueue commits: finishing that job, which
/// releases the next waiting one of its lane, then waits for the commit and so sees the
/// new job. Without the lock, a job enqueued while the one before it finished would be
/// seen by no finish and wait for the minute's sweep ([`Queue::release_waiting`]); on
/// SQLite, with one writer at a time, that cannot happen. A job written in the same
/// statement as an earlier one of its lane is not seen here: the caller marks it.
macro_rules! new_state {
    ($lane:literal, $share:literal) => {
        concat!(
            "CASE WHEN ",
            $lane,
            " IS NOT NULL AND EXISTS (SELECT 1 FROM jobs e WHERE e.lane = ",
            $lane,
            " AND e.state <> 'done'",
            $share,
            ") THEN 'waiting' ELSE 'pending' END"
        )
    };
}
pub(super) use new_state;

/// Binds a new job to the enqueue's values (a macro: one list for every query type).
macro_rules! bind_job {
    ($query:expr, $job:expr) => {
        $query
            .bind(&$job.kind)
            .bind(&$job.payload)
            .bind(&$job.dedup_key)
            .bind(&$job.subject)
            .bind(&$job.lane)
            .bind($job.run_at_ms)
            .bind($job.created_ms)
            .bind($job.created_ms)
    };
}
pub(super) use bind_job;

/// A job may run when no earlier job of its lane is unfinished (pending, running or
/// parked); `jobs_lane` answers that with one index probe. `$earlier` says that `e` is
/// earlier in the lane than `j` (see the backends below).
macro_rules! lane_free {
    ($earlier:literal) => {
        concat!(
            "(j.lane IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e WHERE e.lane = j.lane AND ",
            $earlier,
            " AND e.state <> 'done'))"
        )
    };
}

/// The claim, with `$now` the database's now in Unix milliseconds and `$lock` what makes
/// concurrent claims step over each other's rows. Due pending jobs and running jobs whose
/// lease has ended are found by two ordered scans of their own partial indexes
/// (`jobs_pending_due`, `jobs_running_lease`), each stopping after `limit` rows, and the
/// batch is the `limit` due longest of those: at most twice `limit` rows are sorted,
/// never every due row. $1 is the limit, $2 the token, $3 the caller's now (for
/// `updated_ms`), $4 the lease's duration. `$batch` opens the set of the batch's ids
/// that the update takes (closed by `$end`): on PostgreSQL an array made once, which the
/// update looks up in the primary key whatever the planner knows of the table.
/// `$earlier` is the lane order of [`lane_free!`].
macro_rules! claim_sql {
    ($now:ident, $lock:literal, $batch:literal, $end:literal, $earlier:literal) => {
        concat!(
            "WITH pending AS (SELECT id, run_at_ms AS due_ms FROM jobs j WHERE state = 'pending' \
             AND run_at_ms <= ",
            $now!(),
            " AND ",
            lane_free!($earlier),
            " ORDER BY run_at_ms, id LIMIT $1 ",
            $lock,
            "), expired AS (SELECT id, lease_until_ms AS due_ms FROM jobs j WHERE state = 'running' \
             AND lease_until_ms < ",
            $now!(),
            " AND ",
            lane_free!($earlier),
            " ORDER BY lease_until_ms, id LIMIT $1 ",
            $lock,
            ") UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_token = $2, \
             updated_ms = $3, lease_until_ms = ",
            $now!(),
            " + $4 WHERE id ",
            $batch,
            "SELECT id FROM (SELECT id, due_ms FROM pending UNION ALL \
             SELECT id, due_ms FROM expired) d ORDER BY due_ms, id LIMIT $1",
            $end,
            " RETURNING ",
            job_columns!()
        )
    };
}

/// Expands the queue's queries for one backend: `$now` is the SQL of the database's now
/// in Unix milliseconds, `$lock` the locking clause of the claim's scans, `$share` that
/// of an enqueue's look at its lane (see [`new_state!`]), `$batch` and `$end` what
/// encloses the claimed ids (see [`claim_sql!`]), `$earlier` the lane order (see
/// [`lane_free!`]).
macro_rules! queries {
    (
        $db:ty,
        $now:ident,
        $lock:literal,
        $share:literal,
        $batch:literal,
        $end:literal,
        $earlier:literal
    ) => {
        use crate::store::rows::{JobRow, job_columns};
        use crate::store::{Job, JobFailure, JobState, Lease, NewJob, StoreResult};
        use sqlx::Executor;

        type Db = $db;

        pub const CLAIM: &str = claim_sql!($now, $lock, $batch, $end, $earlier);

        /// A new job, pending or waiting behind its lane; a second with the same kind
        /// and dedup key is left out. Its values in the order of
        /// [`bind_job!`](crate::store::queue::bind_job).
        const ENQUEUE: &str = concat!(
            "INSERT INTO jobs (kind, payload, dedup_key, subject, lane, state, attempts, \
             run_at_ms, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, ",
            new_state!("$5", $share),
            ", 0, $6, $7, $8) ON CONFLICT DO NOTHING"
        );

        pub async fn claim<'c>(
            conn: impl Executor<'c, Database = Db>,
            lease: &Lease,
            limit: u32,
        ) -> StoreResult<Vec<Job>> {
            let rows: Vec<JobRow> = sqlx::query_as(CLAIM)
                .bind(i64::from(limit))
                .bind(&lease.token)
                .bind(lease.now_ms)
                .bind(lease.duration_ms)
                .fetch_all(conn)
                .await?;
            let mut jobs = rows
                .into_iter()
                .map(JobRow::into_job)
                .collect::<StoreResult<Vec<Job>>>()?;
            // RETURNING gives no order: ids make it a stable one.
            jobs.sort_by_key(|job| job.id);
            Ok(jobs)
        }

        pub async fn enqueue<'c>(
            conn: impl Executor<'c, Database = Db>,
            job: &NewJob,
        ) -> StoreResult<bool> {
            let done = crate::store::queue::bind_job!(sqlx::query(ENQUEUE), job)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Marks the job done and makes the next job waiting in its lane, if any,
        /// pending. Two statements: should the second never run (a crash between them),
        /// [`release_waiting`] makes that job pending within a minute.
        pub async fn finish(
            conn: &mut <Db as sqlx::Database>::Connection,
            id: i64,
            token: &str,
            now_ms: i64,
        ) -> StoreResult<bool> {
            let done: Option<(Option<String>,)> = sqlx::query_as(
                "UPDATE jobs SET state = 'done', lease_token = NULL, lease_until_ms = NULL, updated_ms = $1 \
                 WHERE id = $2 AND lease_token = $3 AND state = 'running' RETURNING lane",
            )
            .bind(now_ms)
            .bind(id)
            .bind(token)
            .fetch_optional(&mut *conn)
            .await?;
            let Some((lane,)) = done else {
                return Ok(false);
            };
            if let Some(lane) = lane {
                sqlx::query(
                    "UPDATE jobs SET state = 'pending', updated_ms = $1 WHERE id = \
                     (SELECT MIN(id) FROM jobs WHERE lane = $2 AND state = 'waiting')",
                )
                .bind(now_ms)
                .bind(&lane)
                .execute(&mut *conn)
                .await?;
            }
            Ok(true)
        }

        /// Makes pending every waiting job that no unfinished job of its lane is before,
        /// one whose release by [`finish`] was lost to a crash between its statements:
        /// of each lane with waiting jobs, the first unfinished job, if it waits.
        pub async fn release_waiting<'c>(
            conn: impl Executor<'c, Database = Db>,
            now_ms: i64,
        ) -> StoreResult<u64> {
            let done = sqlx::query(
                "UPDATE jobs SET state = 'pending', updated_ms = $1 WHERE state = 'waiting' \
                 AND id IN (SELECT MIN(id) FROM jobs WHERE state <> 'done' AND lane IN \
                 (SELECT lane FROM jobs WHERE state = 'waiting') GROUP BY lane)",
            )
            .bind(now_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

        pub async fn fail<'c>(
            conn: impl Executor<'c, Database = Db>,
            failure: &JobFailure<'_>,
        ) -> StoreResult<bool> {
            let state = match failure.retry_in_ms {
                Some(_) => JobState::Pending,
                None => JobState::Failed,
            };
            let done = sqlx::query(concat!(
                "UPDATE jobs SET state = $1, run_at_ms = COALESCE(",
                $now!(),
                " + $2, run_at_ms), last_error = $3, lease_token = NULL, lease_until_ms = NULL, \
                 updated_ms = $4, attempts = attempts - $5 WHERE id = $6 AND lease_token = $7 \
                 AND state = 'running'"
            ))
            .bind(state.as_str())
            .bind(failure.retry_in_ms)
            .bind(failure.error)
            .bind(failure.now_ms)
            .bind(i64::from(failure.uncounted))
            .bind(failure.id)
            .bind(failure.token)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn about<'c>(
            conn: impl Executor<'c, Database = Db>,
            subject: &str,
        ) -> StoreResult<Vec<Job>> {
            let rows: Vec<JobRow> = sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE subject = $1 ORDER BY id"
            ))
            .bind(subject)
            .fetch_all(conn)
            .await?;
            rows.into_iter().map(JobRow::into_job).collect()
        }

        pub async fn get<'c>(
            conn: impl Executor<'c, Database = Db>,
            id: i64,
        ) -> StoreResult<Option<Job>> {
            let row: Option<JobRow> = sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(conn)
            .await?;
            row.map(JobRow::into_job).transpose()
        }

        pub async fn failed<'c>(
            conn: impl Executor<'c, Database = Db>,
            limit: u32,
        ) -> StoreResult<Vec<Job>> {
            let rows: Vec<JobRow> = sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE state = 'failed' ORDER BY id LIMIT $1"
            ))
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await?;
            rows.into_iter().map(JobRow::into_job).collect()
        }

        pub async fn requeue<'c>(
            conn: impl Executor<'c, Database = Db>,
            id: i64,
            now_ms: i64,
        ) -> StoreResult<bool> {
            let done = sqlx::query(concat!(
                "UPDATE jobs SET state = 'pending', attempts = 0, run_at_ms = ",
                $now!(),
                ", updated_ms = $1 WHERE id = $2 AND state = 'failed'"
            ))
            .bind(now_ms)
            .bind(id)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// One statement, whatever the number of parked jobs.
        pub async fn requeue_failed<'c>(
            conn: impl Executor<'c, Database = Db>,
            kind: Option<&str>,
            now_ms: i64,
        ) -> StoreResult<u64> {
            let done = sqlx::query(concat!(
                "UPDATE jobs SET state = 'pending', attempts = 0, run_at_ms = ",
                $now!(),
                ", updated_ms = $1 WHERE state = 'failed' AND (CAST($2 AS TEXT) IS NULL OR kind = $2)"
            ))
            .bind(now_ms)
            .bind(kind)
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

        pub async fn by_key<'c>(
            conn: impl Executor<'c, Database = Db>,
            kind: &str,
            key: &str,
        ) -> StoreResult<Option<Job>> {
            let row: Option<JobRow> = sqlx::query_as(concat!(
                "SELECT ",
                job_columns!(),
                " FROM jobs WHERE kind = $1 AND dedup_key = $2"
            ))
            .bind(kind)
            .bind(key)
            .fetch_optional(conn)
            .await?;
            row.map(JobRow::into_job).transpose()
        }

        pub async fn purge<'c>(
            conn: impl Executor<'c, Database = Db>,
            before_ms: i64,
            batch: u32,
        ) -> StoreResult<u64> {
            let done = sqlx::query(
                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE state = 'done' \
                 AND updated_ms < $1 ORDER BY updated_ms LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(batch))
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

    };
}

/// The database's now in Unix milliseconds, on PostgreSQL: `now()` is the start of the
/// statement's transaction, one instant for the whole statement, and stable, so that the
/// partial indexes can be searched by it.
macro_rules! pg_now {
    () => {
        "(extract(epoch FROM now()) * 1000)::bigint"
    };
}
pub(super) use pg_now;

/// The database's now in Unix milliseconds, on SQLite: one instant for the whole statement.
macro_rules! lite_now {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}
pub(super) use lite_now;

/// PostgreSQL: replicas claim side by side, a row another replica is claiming being skipped, and
/// once claimed it is no longer due until its lease ends. "Earlier in its lane" is a
/// comparison of (lane, id) pairs, which only `jobs_lane` can search: with `e.id < j.id`,
/// a claim planned once on an emptied table whose statistics still described jobs without
/// lanes probed the primary key instead, stepping over every older job, the whole finished
/// history, at each probe.
pub(super) mod pg {
    queries!(
        sqlx::Postgres,
        pg_now,
        "FOR UPDATE SKIP LOCKED",
        " FOR SHARE",
        "= ANY (ARRAY(",
        "))",
        "(e.lane, e.id) < (j.lane, j.id)"
    );
}

/// SQLite: one writer at a time (this process's writer turn, and SQLite's lock across processes), so two claims
/// never overlap and need no row locks.
pub(super) mod lite {
    // SQLite plans each statement as it is prepared, and searches `jobs_lane` by lane and
    // id only with the plain comparison.
    queries!(sqlx::Sqlite, lite_now, "", "", "IN (", ")", "e.id < j.id");
}
