//! PostgreSQL's callback transaction in as few round trips as the callback allows: reads
//! go out when they are asked, writes wait and go out together at commit as one
//! statement (data-modifying CTEs), which PostgreSQL runs atomically on its own — no
//! BEGIN, no COMMIT. A fresh `newInstance` costs two round trips (the idempotency read,
//! then everything it writes), a duplicate two (the read, then its nonce and record).
//!
//! Nothing is given up for that. The writes that guard the callback are plain inserts
//! under unique keys, so a concurrent twin makes the statement fail as a whole rather
//! than act twice: a taken nonce fails it as [`StoreError::ReplayedNonce`], a taken
//! idempotency key or instance id as [`StoreError::Conflict`], and the pipeline then runs
//! the callback again in an ordinary transaction, which sees the twin's answer. Anything
//! that needs a lock or an answer only the database has now (a lifecycle change, a
//! usage record) opens that ordinary transaction at once, sends what was held back
//! first, and goes on in it.

use super::postgres::{PgTx, stale, tries};
use super::rows::{AtRest, bind_instance, instance_columns};
use super::seal::Sealer;
use super::usage::{self, NewUsageRecord, PackageUsage, UsageTotal, UsageWindow};
use super::{
    Attempt, CallbackRecord, Claim, Committed, IdempotencyKey, NewEvent, NewJob, OrderLineRecord,
    StoreError, StoreResult, StoredAnswer, Tx,
};
use crate::domain::instance::Instance;
use crate::domain::license_code::LicenseCode;
use crate::domain::license_request::LicenseRequest;
use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgPool};
use sqlx::{Arguments, Postgres};
use std::sync::Arc;

/// Runs a read (`$read`, a future of a `StoreResult` over `$conn`) on the transaction's
/// connection; one the server dropped while idle is replaced and the read made again, at
/// most once per connection idle in the pool, so a read never fails on a connection it
/// could not have known was gone. Only reads: a write may have been done before its
/// connection broke.
macro_rules! read {
    ($self:ident, |$conn:ident| $read:expr) => {{
        let mut tries = tries(&$self.pool);
        loop {
            let $conn = $self.conn().await?;
            match $read.await {
                Err(StoreError::Database(error)) if tries > 1 && stale(&error) => {
                    tries -= 1;
                    $self.conn = None;
                }
                result => break result,
            }
        }
    }};
}

/// The callback transaction of [`super::PgStore::begin_callback`].
pub(super) struct DeferredTx {
    pool: PgPool,
    sealer: Arc<Sealer>,
    batch: Batch,
    /// The connection of the reads, kept for the commit: one acquire per callback.
    conn: Option<PoolConnection<Postgres>>,
    /// Keys read and found free: their answer goes out with the batch, or nothing does.
    claims: Vec<(IdempotencyKey, i64)>,
    /// The ordinary transaction, once something needed one.
    open: Option<PgTx>,
    /// Whether a job is held back (a duplicate of a queued one wakes the worker for
    /// nothing, which costs it one look).
    enqueued: bool,
}

impl DeferredTx {
    pub(super) fn new(pool: PgPool, sealer: Arc<Sealer>) -> Self {
        Self {
            pool,
            sealer,
            batch: Batch::default(),
            conn: None,
            claims: Vec::new(),
            open: None,
            enqueued: false,
        }
    }

    /// The ordinary transaction, begun now if need be, with what was held back sent
    /// first and the free keys claimed in it.
    async fn open(&mut self) -> StoreResult<&mut PgTx> {
        let tx = match &mut self.open {
            Some(tx) => tx,
            slot @ None => {
                // The transaction takes a connection of its own; this one goes back.
                self.conn = None;
                let mut tx = PgTx::begin(&self.pool, self.sealer.clone()).await?;
                std::mem::take(&mut self.batch)
                    .send(tx.connection())
                    .await?;
                for (key, now_ms) in self.claims.drain(..) {
                    // Completed by a twin since it was read: run again, and replay it.
                    if tx.claim_idempotency(&key, now_ms).await? != Claim::Claimed {
                        return Err(StoreError::Conflict(format!(
                            "idempotency key {}/{} answered meanwhile",
                            key.scope, key.key
                        )));
                    }
                }
                slot.insert(tx)
            }
        };
        Ok(tx)
    }

    /// The connection for statements outside a transaction, acquired once.
    async fn conn(&mut self) -> StoreResult<&mut sqlx::PgConnection> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            slot @ None => slot.insert(self.pool.acquire().await?),
        };
        Ok(conn)
    }

    /// Whether an unlocked read may go out on its own: nothing it could need to see is
    /// held back (a nonce is never read).
    fn reads_alone(&self) -> bool {
        self.open.is_none() && self.batch.only_nonces
    }
}

/// Writes held back, as one statement: its parts, and the values of all of them in
/// placeholder order.
struct Batch {
    parts: Vec<String>,
    args: PgArguments,
    placeholders: usize,
    /// The first value that could not be encoded (a bug, reported at send).
    error: Option<String>,
    /// Events and jobs, each table's rows sent as one insert at the end (see
    /// [`Batch::rows`]), the events' snapshots already sealed.
    events: Vec<NewEvent>,
    jobs: Vec<NewJob>,
    only_nonces: bool,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            parts: Vec::new(),
            args: PgArguments::default(),
            placeholders: 0,
            error: None,
            events: Vec::new(),
            jobs: Vec::new(),
            only_nonces: true,
        }
    }
}

impl Batch {
    /// Adds a statement written with placeholders `$1`, `$2` …, as it would be sent on
    /// its own; they are renumbered after those already held. `bind` gives their values
    /// in order.
    fn push(&mut self, statement: &str, bind: impl FnOnce(Binder<'_>) -> Binder<'_>) {
        let offset = self.placeholders;
        let mut sql = String::with_capacity(statement.len() + 32);
        let mut highest = 0;
        let mut chars = statement.chars().peekable();
        while let Some(c) = chars.next() {
            sql.push(c);
            if c != '$' {
                continue;
            }
            let mut number = 0;
            while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
                number = number * 10 + digit as usize;
                chars.next();
            }
            highest = highest.max(number);
            sql.push_str(&(number + offset).to_string());
        }
        self.placeholders += highest;
        let bound = bind(Binder {
            args: &mut self.args,
            count: 0,
            error: &mut self.error,
        })
        .count;
        if bound != highest && self.error.is_none() {
            self.error = Some(format!(
                "{bound} values for {highest} placeholders in {statement}"
            ));
        }
        self.parts.push(sql);
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty() && self.events.is_empty() && self.jobs.is_empty()
    }

    fn nonce(&mut self, nonce: &str, expires_ms: i64) {
        // A plain insert: a nonce already taken fails the whole statement (a replay).
        self.push(
            "INSERT INTO nonces (nonce, expires_ms) VALUES ($1, $2)",
            |b| b.bind(nonce).bind(expires_ms),
        );
    }

    fn other(&mut self, template: &str, bind: impl FnOnce(Binder<'_>) -> Binder<'_>) {
        self.only_nonces = false;
        self.push(template, bind);
    }

    fn event(&mut self, event: &NewEvent, sealer: &Sealer) {
        self.only_nonces = false;
        let mut event = event.clone();
        event.snapshot = super::events::seal_snapshot(sealer, &event.event_id, &event.snapshot);
        self.events.push(event);
    }

    fn job(&mut self, job: &NewJob) {
        self.only_nonces = false;
        self.jobs.push(job.clone());
    }

    /// The events and the jobs, each table's in one insert whose rows go in in the order
    /// they were made: the parts of one statement run in no set order, and the feed
    /// (events by id) and the lanes (jobs by id) need that order.
    ///
    /// An event's sequence is the next after its subject's last committed one plus its
    /// rank among this batch's events of that subject (the rows all see the same
    /// snapshot). A concurrent writer to the subject fails the statement on the unique
    /// (subject, sequence).
    fn rows(&mut self) {
        let events = std::mem::take(&mut self.events);
        if !events.is_empty() {
            let sql = format!(
                "INSERT INTO events (event_id, type, subject, sequence, test, snapshot, created_ms) \
                 SELECT v.event_id, v.type, v.subject, COALESCE((SELECT MAX(e.sequence) FROM events e \
                 WHERE e.subject = v.subject), 0) + v.rank, v.test, v.snapshot, v.created_ms \
                 FROM (VALUES {}) AS v (n, event_id, type, subject, rank, test, snapshot, created_ms) \
                 ORDER BY v.n",
                values(events.len(), 8)
            );
            self.push(&sql, |mut b| {
                for (n, event) in events.iter().enumerate() {
                    let rank = 1 + events
                        .iter()
                        .take(n)
                        .filter(|e| e.subject == event.subject)
                        .count();
                    b = b
                        .bind(i64::try_from(n).unwrap_or(i64::MAX))
                        .bind(&event.event_id)
                        .bind(event.kind)
                        .bind(&event.subject)
                        .bind(i64::try_from(rank).unwrap_or(i64::MAX))
                        .bind(event.test)
                        .bind(&event.snapshot)
                        .bind(event.created_ms);
                }
                b
            });
        }
        let jobs = std::mem::take(&mut self.jobs);
        if !jobs.is_empty() {
            // A job behind an earlier one of its lane in this same statement waits too
            // (`held`): the statement does not see its own rows.
            let sql = format!(
                "INSERT INTO jobs (kind, payload, dedup_key, subject, lane, state, attempts, run_at_ms, \
                 created_ms, updated_ms) SELECT v.kind, v.payload, v.dedup_key, v.subject, v.lane, \
                 CASE WHEN v.held THEN 'waiting' ELSE {} END, 0, v.run_at_ms, v.created_ms, \
                 v.updated_ms FROM (VALUES {}) AS v (n, held, kind, payload, dedup_key, subject, \
                 lane, run_at_ms, created_ms, updated_ms) ORDER BY v.n ON CONFLICT DO NOTHING",
                super::queue::new_state!("v.lane", " FOR SHARE"),
                values(jobs.len(), 10)
            );
            self.push(&sql, |mut b| {
                for (n, job) in jobs.iter().enumerate() {
                    let held = job.lane.is_some()
                        && jobs.iter().take(n).any(|earlier| earlier.lane == job.lane);
                    b = b.bind(i64::try_from(n).unwrap_or(i64::MAX)).bind(held);
                    b = super::queue::bind_job!(b, job);
                }
                b
            });
        }
    }

    /// Sends the statement; nothing when nothing was held back.
    async fn send(mut self, conn: &mut sqlx::PgConnection) -> StoreResult<()> {
        self.rows();
        if let Some(error) = self.error {
            return Err(StoreError::Corrupt(error));
        }
        let Some((last, rest)) = self.parts.split_last() else {
            return Ok(());
        };
        let sql = if rest.is_empty() {
            last.clone()
        } else {
            let mut sql = String::from("WITH ");
            for (n, part) in rest.iter().enumerate() {
                if n > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("w{n} AS ({part})"));
            }
            sql.push(' ');
            sql.push_str(last);
            sql
        };
        sqlx::query_with(&sql, self.args)
            .execute(conn)
            .await
            .map_err(conflict)?;
        Ok(())
    }
}

/// `rows` rows of `columns` placeholders each, numbered from `$1`: `($1, $2), ($3, $4)`.
fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|row| {
            let cells: Vec<String> = (1..=columns)
                .map(|column| format!("${}", row * columns + column))
                .collect();
            format!("({})", cells.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a unique key that refused the statement means.
fn conflict(error: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &error
        && db.code().as_deref() == Some("23505")
    {
        return match db.constraint() {
            Some("nonces_pkey") => StoreError::ReplayedNonce,
            other => StoreError::Conflict(format!("{} taken", other.unwrap_or("a unique key"))),
        };
    }
    error.into()
}

/// Binds values the way a sqlx query does (`.bind(v)`), so that the column lists of
/// `rows` serve here too.
struct Binder<'a> {
    args: &'a mut PgArguments,
    count: usize,
    error: &'a mut Option<String>,
}

impl Binder<'_> {
    fn bind<'q, T>(mut self, value: T) -> Self
    where
        T: 'q + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
    {
        if let Err(error) = self.args.add(value)
            && self.error.is_none()
        {
            *self.error = Some(error.to_string());
        }
        self.count += 1;
        self
    }
}

#[async_trait]
impl Tx for DeferredTx {
    async fn claim_nonce(&mut self, nonce: &str, expires_ms: i64) -> StoreResult<bool> {
        match &mut self.open {
            Some(tx) => tx.claim_nonce(nonce, expires_ms).await,
            None => {
                self.batch.nonce(nonce, expires_ms);
                Ok(true)
            }
        }
    }

    async fn claim_idempotency(&mut self, key: &IdempotencyKey, now_ms: i64) -> StoreResult<Claim> {
        if let Some(tx) = &mut self.open {
            return tx.claim_idempotency(key, now_ms).await;
        }
        let row: Option<(Option<String>, Option<String>, Option<Vec<u8>>)> = read!(self, |conn| {
            async {
                sqlx::query_as(
                    "SELECT result_code, instance_id, body FROM idempotency WHERE scope = $1 AND key = $2",
                )
                .bind(key.scope)
                .bind(&key.key)
                .fetch_optional(conn)
                .await
                .map_err(StoreError::from)
            }
        })?;
        match row {
            Some((result_code, instance_id, body)) => {
                super::answered(key, result_code, instance_id, body, &self.sealer)
            }
            None => {
                self.claims.push((key.clone(), now_ms));
                Ok(Claim::Claimed)
            }
        }
    }

    async fn complete_idempotency(
        &mut self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> StoreResult<()> {
        let Some(at) = self.claims.iter().position(|(k, _)| k == key) else {
            return self.open().await?.complete_idempotency(key, answer).await;
        };
        let (key, now_ms) = self.claims.swap_remove(at);
        let body = super::seal_answer(&key, &answer.body, &self.sealer);
        // The key goes in with its final answer; a twin that took it meanwhile fails the
        // statement, and the callback runs again to replay the twin's answer.
        self.batch.other(
            "INSERT INTO idempotency (scope, key, created_ms, result_code, instance_id, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            |b| {
                b.bind(key.scope)
                    .bind(&key.key)
                    .bind(now_ms)
                    .bind(&answer.result_code)
                    .bind(&answer.instance_id)
                    .bind(body)
            },
        );
        Ok(())
    }

    async fn abandon_idempotency(&mut self, key: &IdempotencyKey) -> StoreResult<()> {
        match self.claims.iter().position(|(k, _)| k == key) {
            // Never written: giving it up writes nothing.
            Some(at) => {
                self.claims.swap_remove(at);
                Ok(())
            }
            None => self.open().await?.abandon_idempotency(key).await,
        }
    }

    /// Held back: `true` unless the id turns out to be taken at commit, which fails the
    /// statement as a conflict (the callback then runs again in an ordinary transaction,
    /// where a taken id is seen at once).
    async fn insert_instance(&mut self, i: &Instance) -> StoreResult<bool> {
        if let Some(tx) = &mut self.open {
            return tx.insert_instance(i).await;
        }
        let at_rest = AtRest::of(i, &self.sealer);
        self.batch.other(
            concat!(
                "INSERT INTO instances (",
                instance_columns!(),
                ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 $17, $18, $19, $20, $21, $22, $23)"
            ),
            |b| bind_instance!(b, i, at_rest, identity),
        );
        Ok(true)
    }

    async fn instance_for_update(&mut self, id: &str) -> StoreResult<Option<Instance>> {
        self.open().await?.instance_for_update(id).await
    }

    async fn instance_for_order_line(
        &mut self,
        order_id: &str,
        order_line_id: &str,
    ) -> StoreResult<Option<Instance>> {
        self.open()
            .await?
            .instance_for_order_line(order_id, order_line_id)
            .await
    }

    async fn instances(&mut self, ids: &[String]) -> StoreResult<Vec<Instance>> {
        if !self.reads_alone() {
            return self.open().await?.instances(ids).await;
        }
        let sealer = self.sealer.clone();
        read!(self, |conn| super::records::pg::instances(
            conn, ids, &sealer
        ))
    }

    async fn update_instance(&mut self, instance: &Instance) -> StoreResult<()> {
        self.open().await?.update_instance(instance).await
    }

    async fn license_code_for_update(&mut self, license: &str) -> StoreResult<Option<LicenseCode>> {
        self.open().await?.license_code_for_update(license).await
    }

    async fn update_license_code(&mut self, code: &LicenseCode) -> StoreResult<()> {
        self.open().await?.update_license_code(code).await
    }

    async fn record_callback(&mut self, r: &CallbackRecord) -> StoreResult<()> {
        if let Some(tx) = &mut self.open {
            return tx.record_callback(r).await;
        }
        self.batch.other(super::audit::INSERT_CALLBACK, |b| {
            super::audit::bind_callback!(b, r)
        });
        Ok(())
    }

    async fn record_order_line(&mut self, line: &OrderLineRecord) -> StoreResult<bool> {
        self.open().await?.record_order_line(line).await
    }

    async fn store_order_info(&mut self, line: &OrderLineRecord) -> StoreResult<()> {
        self.open().await?.store_order_info(line).await
    }

    /// Held back: `true` unless a job with the same kind and key exists at commit, when
    /// this one is left out (as an ordinary transaction would).
    async fn enqueue_job(&mut self, job: &NewJob) -> StoreResult<bool> {
        if let Some(tx) = &mut self.open {
            return tx.enqueue_job(job).await;
        }
        self.batch.job(job);
        self.enqueued = true;
        Ok(true)
    }

    async fn record_event(&mut self, event: &NewEvent) -> StoreResult<()> {
        if let Some(tx) = &mut self.open {
            return tx.record_event(event).await;
        }
        self.batch.event(event, &self.sealer);
        Ok(())
    }

    async fn record_attempt(&mut self, attempt: &Attempt) -> StoreResult<()> {
        self.open().await?.record_attempt(attempt).await
    }

    async fn finish_job(&mut self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool> {
        self.open().await?.finish_job(id, token, now_ms).await
    }

    async fn claim_usage_record(
        &mut self,
        record: &NewUsageRecord<'_>,
    ) -> StoreResult<Option<i64>> {
        self.open().await?.claim_usage_record(record).await
    }

    async fn add_usage(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        self.open().await?.add_usage(window).await
    }

    async fn carry_usage_record(
        &mut self,
        instance_id: &str,
        record_id: &str,
        window_begin_ms: i64,
    ) -> StoreResult<()> {
        self.open()
            .await?
            .carry_usage_record(instance_id, record_id, window_begin_ms)
            .await
    }

    async fn ended_usage_windows(&mut self, ended_by_ms: i64) -> StoreResult<Vec<UsageWindow>> {
        self.open().await?.ended_usage_windows(ended_by_ms).await
    }

    async fn close_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        self.open().await?.close_usage_window(window).await
    }

    async fn settle_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        self.open().await?.settle_usage_window(window).await
    }

    async fn unpark_usage(&mut self, instance_id: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        self.open().await?.unpark_usage(instance_id, now_ms).await
    }

    async fn usage_totals(&mut self, ids: &[String]) -> StoreResult<Vec<UsageTotal>> {
        if !self.reads_alone() {
            return self.open().await?.usage_totals(ids).await;
        }
        read!(self, |conn| usage::pg::totals(conn, ids))
    }

    async fn replace_package_usage(
        &mut self,
        instance_id: &str,
        entries: &[PackageUsage],
    ) -> StoreResult<()> {
        self.open()
            .await?
            .replace_package_usage(instance_id, entries)
            .await
    }

    async fn package_usage(&mut self, ids: &[String]) -> StoreResult<Vec<PackageUsage>> {
        if !self.reads_alone() {
            return self.open().await?.package_usage(ids).await;
        }
        read!(self, |conn| usage::pg::package(conn, ids))
    }

    async fn license_request_for_update(
        &mut self,
        event_id: &str,
    ) -> StoreResult<Option<LicenseRequest>> {
        self.open()
            .await?
            .license_request_for_update(event_id)
            .await
    }

    async fn insert_license_request(&mut self, request: &LicenseRequest) -> StoreResult<bool> {
        self.open().await?.insert_license_request(request).await
    }

    async fn update_license_request(&mut self, request: &LicenseRequest) -> StoreResult<()> {
        self.open().await?.update_license_request(request).await
    }

    async fn commit(mut self: Box<Self>) -> StoreResult<Committed> {
        let batch = std::mem::take(&mut self.batch);
        let held = Committed {
            enqueued: self.enqueued,
        };
        match self.open.take() {
            Some(mut tx) => {
                batch.send(tx.connection()).await?;
                let committed = Box::new(tx).commit().await?;
                Ok(Committed {
                    enqueued: held.enqueued || committed.enqueued,
                })
            }
            None => {
                if !batch.is_empty() {
                    batch.send(self.conn().await?).await?;
                }
                Ok(held)
            }
        }
    }
}
