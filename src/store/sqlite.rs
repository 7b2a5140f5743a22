//! The embedded default: one SQLite file in WAL mode. SQLite has one writer at a time,
//! so writers queue in-process on an async lock, first come first served, and each
//! callback transaction is `BEGIN IMMEDIATE`. Left to SQLite's busy handler alone,
//! waiting writers sleep and poll, which showed as a 100 ms+ latency tail under load;
//! the busy timeout still covers other processes (a `koogate migrate`, say).

use super::events::{self, Attempt, Cursor, InstanceFilter, NewEvent, Pause, StoredEvent};
use super::license_requests::{self, LicenseUpload};
use super::rows::{
    AtRest, CallbackRow, InstanceRow, LicenseCodeRow, OrderLineRow, bind_instance,
    bind_license_code, instance_columns, license_code_columns, order_info_at_rest,
    order_line_columns,
};
use super::seal::Sealer;
use super::usage::{self as usage, Carried, NewUsageRecord, PackageUsage, UsageTotal, UsageWindow};
use super::{
    CallbackRecord, Claim, Committed, IdempotencyKey, NewJob, OrderLineRecord, PoolOptions, Store,
    StoreError, StoreResult, StoredAnswer, Tx,
};
use crate::domain::instance::Instance;
use crate::domain::license_code::LicenseCode;
use crate::domain::license_request::LicenseRequest;
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    pub(super) writer: Arc<Mutex<()>>,
    sealer: Arc<Sealer>,
}

/// 23 placeholders, one per column of `instance_columns!`.
const INSERT_INSTANCE: &str = concat!(
    "INSERT INTO instances (",
    instance_columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
);
const UPDATE_INSTANCE: &str = "UPDATE instances SET product_id = ?, sku_code = ?, charging_mode = ?, period_type = ?, \
     period_number = ?, linear_value = ?, customer_id = ?, customer_name = ?, details = ?, state = ?, app_info = ?, \
     expire_ms = ?, last_order_id = ?, updated_ms = ?, released_ms = ?, provisioning_error = ?, buyer_data = ? WHERE instance_id = ?";

const INSERT_LICENSE_CODE: &str = concat!(
    "INSERT INTO license_codes (",
    license_code_columns!(),
    ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
);
const UPDATE_LICENSE_CODE: &str = "UPDATE license_codes SET order_id = ?, order_line_id = ?, product_id = ?, state = ?, expire_ms = ?, last_order_id = ?, released_by_test = ?, updated_ms = ?, released_ms = ? WHERE license = ?";

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

    async fn purge_buyer_data(&self, released_before_ms: i64, batch: u32) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        super::at_rest::lite::purge_buyer_data(&self.pool, released_before_ms, batch).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx {
            tx,
            sealer: self.sealer.clone(),
            enqueued: false,
            _turn: turn,
        }))
    }

    async fn record_callback(&self, record: &CallbackRecord) -> StoreResult<()> {
        let _turn = self.writer.lock().await;
        let mut conn = self.pool.acquire().await?;
        insert_callback(&mut conn, record).await
    }

    async fn record_callbacks(&self, records: &[CallbackRecord]) -> StoreResult<()> {
        // One turn of the writer and one commit for the whole batch.
        let _turn = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for record in records {
            insert_callback(&mut tx, record).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge_nonces(&self) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        let done = sqlx::query(concat!(
            "DELETE FROM nonces WHERE expires_ms < ",
            super::queue::lite_now!()
        ))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_callbacks(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        let done = sqlx::query(
            "DELETE FROM callbacks WHERE id IN \
             (SELECT id FROM callbacks WHERE received_ms < ? ORDER BY id LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn instance(&self, id: &str) -> StoreResult<Option<Instance>> {
        let row: Option<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE instance_id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| r.into_instance(&self.sealer)).transpose()
    }

    async fn instances_for_order(&self, order_id: &str) -> StoreResult<Vec<Instance>> {
        let rows: Vec<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE order_id = ? ORDER BY created_ms, instance_id"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| r.into_instance(&self.sealer))
            .collect()
    }

    async fn recent_callbacks(&self, limit: u32) -> StoreResult<Vec<CallbackRecord>> {
        let rows: Vec<CallbackRow> = sqlx::query_as(
            "SELECT request_id, received_ms, interface, activity, method, raw_query, raw_body, verdict, result_code, \
             http_status, response_body, duration_us, test, order_id, instance_id, response_sha256 \
             FROM callbacks ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(CallbackRecord::from).collect())
    }
    async fn begin_license_activation(&self, license: &str, now_ms: i64) -> StoreResult<()> {
        let _turn = self.writer.lock().await;
        sqlx::query(
            "INSERT INTO license_activations (license, started_ms, completed_ms) VALUES (?, ?, NULL) \
             ON CONFLICT (license) DO UPDATE SET started_ms = excluded.started_ms, completed_ms = NULL",
        )
        .bind(license)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn complete_license_activation(&self, license: &str, now_ms: i64) -> StoreResult<()> {
        let _turn = self.writer.lock().await;
        sqlx::query("UPDATE license_activations SET completed_ms = ? WHERE license = ?")
            .bind(now_ms)
            .bind(license)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unfinished_license_activations(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT license, started_ms FROM license_activations \
             WHERE completed_ms IS NULL ORDER BY started_ms, license",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows)
    }

    async fn insert_license_code(&self, code: &LicenseCode) -> StoreResult<bool> {
        let _turn = self.writer.lock().await;
        let done = bind_license_code!(sqlx::query(INSERT_LICENSE_CODE), code, identity)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn license_code(&self, license: &str) -> StoreResult<Option<LicenseCode>> {
        let row: Option<LicenseCodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            license_code_columns!(),
            " FROM license_codes WHERE license = ?"
        ))
        .bind(license)
        .fetch_optional(&self.pool)
        .await?;
        row.map(LicenseCodeRow::into_license_code).transpose()
    }

    async fn order_lines(&self, order_id: &str) -> StoreResult<Vec<OrderLineRecord>> {
        let rows: Vec<OrderLineRow> = sqlx::query_as(concat!(
            "SELECT ",
            order_line_columns!(),
            " FROM order_lines WHERE order_id = ? ORDER BY order_line_id"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| r.into_record(&self.sealer))
            .collect()
    }

    async fn events_after(&self, after: Cursor, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        events::lite::events_after(&self.pool, after, limit, &self.sealer).await
    }

    async fn event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        events::lite::event(&self.pool, event_id, &self.sealer).await
    }

    async fn events_of(&self, subject: &str) -> StoreResult<Vec<StoredEvent>> {
        events::lite::events_of(&self.pool, subject, &self.sealer).await
    }

    async fn event_attempts(&self, event_id: &str) -> StoreResult<Vec<Attempt>> {
        events::lite::attempts(&self.pool, event_id).await
    }

    async fn record_attempt(&self, attempt: &Attempt) -> StoreResult<()> {
        let _turn = self.writer.lock().await;
        events::lite::insert_attempt(&self.pool, attempt).await
    }

    async fn webhook_pause(&self) -> StoreResult<Option<Pause>> {
        events::lite::pause(&self.pool).await
    }

    async fn pause_webhook(&self, paused_ms: i64, reason: &str) -> StoreResult<()> {
        let _turn = self.writer.lock().await;
        events::lite::set_pause(&self.pool, paused_ms, reason).await
    }

    async fn resume_webhook(&self, kind: &str, now_ms: i64) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        events::lite::clear_pause(&mut *tx).await?;
        // Waiting ones first: the parked ones come back due on the database's clock,
        // which may be ahead of `now_ms`, and would be counted twice.
        let waiting = events::lite::due_now(&mut *tx, kind, now_ms).await?;
        let parked = super::queue::lite::requeue_failed(&mut *tx, Some(kind), now_ms).await?;
        tx.commit().await?;
        Ok(parked + waiting)
    }

    async fn purge_events(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        let _turn = self.writer.lock().await;
        events::lite::purge_events(&self.pool, before_ms, batch).await
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<Instance>> {
        events::lite::list_instances(&self.pool, filter, &self.sealer).await
    }

    async fn usage_windows(&self, instance_id: &str, limit: u32) -> StoreResult<Vec<UsageWindow>> {
        usage::lite::windows(&self.pool, instance_id, limit).await
    }

    async fn closed_usage_windows(&self, limit: u32) -> StoreResult<Vec<UsageWindow>> {
        usage::lite::closed(&self.pool, limit).await
    }

    async fn usage_carried(&self, instance_id: &str) -> StoreResult<Vec<Carried>> {
        usage::lite::carried(&self.pool, instance_id).await
    }

    async fn license_request(&self, event_id: &str) -> StoreResult<Option<LicenseRequest>> {
        license_requests::lite::get(&self.pool, event_id, false).await
    }

    async fn license_requests(
        &self,
        instance_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LicenseRequest>> {
        license_requests::lite::list(&self.pool, instance_id, limit).await
    }

    async fn license_uploads(&self, event_id: &str) -> StoreResult<Vec<LicenseUpload>> {
        license_requests::lite::uploads(&self.pool, event_id).await
    }

    async fn record_license_upload(&self, upload: &LicenseUpload) -> StoreResult<()> {
        let _turn = self.writer.lock().await;
        license_requests::lite::insert_upload(&self.pool, upload).await
    }

    async fn operations(&self, now_ms: i64) -> StoreResult<super::Operations> {
        super::ops::lite::operations(&self.pool, now_ms).await
    }

    async fn callbacks_of_order(&self, order_id: &str) -> StoreResult<Vec<super::StoredCallback>> {
        super::ops::lite::callbacks_of_order(&self.pool, order_id).await
    }

    async fn refused_callbacks(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<super::StoredCallback>> {
        super::ops::lite::refused_callbacks(&self.pool, since_ms, limit).await
    }

    async fn callback(&self, id: i64) -> StoreResult<Option<super::StoredCallback>> {
        super::ops::lite::callback(&self.pool, id).await
    }

    async fn callback_counts(&self, since_ms: i64) -> StoreResult<Vec<super::CallbackCount>> {
        super::ops::lite::callback_counts(&self.pool, since_ms).await
    }

    async fn failing_orders(&self, since_ms: i64) -> StoreResult<Vec<super::FailingOrder>> {
        super::ops::lite::failing_orders(&self.pool, since_ms).await
    }

    async fn search_instances(&self, search: &super::Search) -> StoreResult<Vec<Instance>> {
        super::ops::lite::search_instances(&self.pool, search, &self.sealer).await
    }

    async fn search_orders(&self, search: &super::Search) -> StoreResult<Vec<super::OrderSummary>> {
        super::ops::lite::search_orders(&self.pool, search).await
    }

    async fn code_activations(&self, order_id: &str) -> StoreResult<Vec<super::CodeActivation>> {
        super::ops::lite::code_activations(&self.pool, order_id).await
    }
}

/// A write transaction and this process's turn to write. Fields drop in order: the
/// transaction rolls back (when not committed) before the turn passes on.
struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    sealer: Arc<Sealer>,
    /// Whether it enqueued a job.
    enqueued: bool,
    _turn: OwnedMutexGuard<()>,
}

#[async_trait]
impl Tx for SqliteTx {
    async fn claim_nonce(&mut self, nonce: &str, expires_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO nonces (nonce, expires_ms) VALUES (?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_idempotency(&mut self, key: &IdempotencyKey, now_ms: i64) -> StoreResult<Claim> {
        let done = sqlx::query("INSERT INTO idempotency (scope, key, created_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(key.scope)
            .bind(&key.key)
            .bind(now_ms)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let (result_code, instance_id, body): (Option<String>, Option<String>, Option<Vec<u8>>) =
            sqlx::query_as("SELECT result_code, instance_id, body FROM idempotency WHERE scope = ? AND key = ?")
                .bind(key.scope)
                .bind(&key.key)
                .fetch_one(&mut *self.tx)
                .await?;
        super::answered(key, result_code, instance_id, body, &self.sealer)
    }

    async fn complete_idempotency(
        &mut self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE idempotency SET result_code = ?, instance_id = ?, body = ? WHERE scope = ? AND key = ?")
            .bind(&answer.result_code)
            .bind(&answer.instance_id)
            .bind(super::seal_answer(key, &answer.body, &self.sealer))
            .bind(key.scope)
            .bind(&key.key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn abandon_idempotency(&mut self, key: &IdempotencyKey) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency WHERE scope = ? AND key = ?")
            .bind(key.scope)
            .bind(&key.key)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn insert_instance(&mut self, i: &Instance) -> StoreResult<bool> {
        let at_rest = AtRest::of(i, &self.sealer);
        let done = bind_instance!(sqlx::query(INSERT_INSTANCE), i, at_rest, identity)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn instance_for_update(&mut self, id: &str) -> StoreResult<Option<Instance>> {
        // The IMMEDIATE transaction already holds the write lock: no row lock needed.
        let row: Option<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE instance_id = ?"
        ))
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.into_instance(&self.sealer)).transpose()
    }

    async fn instance_for_order_line(
        &mut self,
        order_id: &str,
        order_line_id: &str,
    ) -> StoreResult<Option<Instance>> {
        let row: Option<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE order_id = ? AND order_line_id = ? AND family = 'saas_v2' \
             ORDER BY created_ms LIMIT 1"
        ))
        .bind(order_id)
        .bind(order_line_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.into_instance(&self.sealer)).transpose()
    }

    #[expect(clippy::expect_used, reason = "a list of strings serialises")]
    async fn instances(&mut self, ids: &[String]) -> StoreResult<Vec<Instance>> {
        let ids_json = serde_json::to_string(ids).expect("strings serialise");
        let rows: Vec<InstanceRow> = sqlx::query_as(concat!("SELECT ", instance_columns!(), " FROM instances JOIN json_each(?) AS wanted ON wanted.value = instance_id ORDER BY wanted.key"))
            .bind(ids_json)
            .fetch_all(&mut *self.tx)
            .await?;
        rows.into_iter()
            .map(|r| r.into_instance(&self.sealer))
            .collect()
    }

    async fn update_instance(&mut self, i: &Instance) -> StoreResult<()> {
        let at_rest = AtRest::of(i, &self.sealer);
        bind_instance!(sqlx::query(UPDATE_INSTANCE), i, at_rest)
            .bind(&i.id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn license_code_for_update(&mut self, license: &str) -> StoreResult<Option<LicenseCode>> {
        let row: Option<LicenseCodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            license_code_columns!(),
            " FROM license_codes WHERE license = ?"
        ))
        .bind(license)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(LicenseCodeRow::into_license_code).transpose()
    }

    async fn update_license_code(&mut self, code: &LicenseCode) -> StoreResult<()> {
        bind_license_code!(sqlx::query(UPDATE_LICENSE_CODE), code)
            .bind(&code.license)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    async fn record_callback(&mut self, record: &CallbackRecord) -> StoreResult<()> {
        insert_callback(&mut self.tx, record).await
    }

    async fn record_order_line(&mut self, line: &OrderLineRecord) -> StoreResult<bool> {
        let (order_info, buyer_info) = order_info_at_rest(line, &self.sealer);
        let done = sqlx::query(concat!(
            "INSERT INTO order_lines (",
            order_line_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        ))
        .bind(&line.order_id)
        .bind(&line.order_line_id)
        .bind(line.test)
        .bind(&line.source)
        .bind(line.created_ms)
        .bind(order_info)
        .bind(line.fetched_ms)
        .bind(buyer_info)
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn store_order_info(&mut self, line: &OrderLineRecord) -> StoreResult<()> {
        let (order_info, buyer_info) = order_info_at_rest(line, &self.sealer);
        sqlx::query(concat!(
            "INSERT INTO order_lines (",
            order_line_columns!(),
            ") VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id, order_line_id) \
             DO UPDATE SET order_info = excluded.order_info, fetched_ms = excluded.fetched_ms, \
             buyer_info = excluded.buyer_info"
        ))
        .bind(&line.order_id)
        .bind(&line.order_line_id)
        .bind(line.test)
        .bind(&line.source)
        .bind(line.created_ms)
        .bind(order_info)
        .bind(line.fetched_ms)
        .bind(buyer_info)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn enqueue_job(&mut self, job: &NewJob) -> StoreResult<bool> {
        let enqueued = super::queue::lite::enqueue(&mut *self.tx, job).await?;
        self.enqueued |= enqueued;
        Ok(enqueued)
    }

    async fn record_attempt(&mut self, attempt: &Attempt) -> StoreResult<()> {
        events::lite::insert_attempt(&mut *self.tx, attempt).await
    }

    async fn record_event(&mut self, event: &NewEvent) -> StoreResult<i64> {
        events::lite::insert_event(&mut *self.tx, event, &self.sealer).await
    }

    async fn license_request_for_update(
        &mut self,
        event_id: &str,
    ) -> StoreResult<Option<LicenseRequest>> {
        license_requests::lite::get(&mut *self.tx, event_id, true).await
    }

    async fn insert_license_request(&mut self, request: &LicenseRequest) -> StoreResult<bool> {
        license_requests::lite::insert(&mut *self.tx, request).await
    }

    async fn update_license_request(&mut self, request: &LicenseRequest) -> StoreResult<()> {
        license_requests::lite::update(&mut *self.tx, request).await
    }

    async fn finish_job(&mut self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool> {
        super::queue::lite::finish(&mut *self.tx, id, token, now_ms).await
    }

    async fn claim_usage_record(
        &mut self,
        record: &NewUsageRecord<'_>,
    ) -> StoreResult<Option<i64>> {
        usage::lite::claim_record(&mut self.tx, record).await
    }

    async fn add_usage(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        usage::lite::add(&mut *self.tx, window).await
    }

    async fn carry_usage_record(
        &mut self,
        instance_id: &str,
        record_id: &str,
        window_begin_ms: i64,
    ) -> StoreResult<()> {
        usage::lite::carry(&mut *self.tx, instance_id, record_id, window_begin_ms).await
    }

    async fn ended_usage_windows(&mut self, ended_by_ms: i64) -> StoreResult<Vec<UsageWindow>> {
        usage::lite::ended(&mut *self.tx, ended_by_ms).await
    }

    async fn close_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        usage::lite::close(&mut *self.tx, window).await
    }

    async fn settle_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        usage::lite::settle(&mut *self.tx, window).await
    }

    async fn unpark_usage(&mut self, instance_id: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        usage::lite::unpark(&mut *self.tx, instance_id, now_ms).await
    }

    async fn usage_totals(&mut self, ids: &[String]) -> StoreResult<Vec<UsageTotal>> {
        usage::lite::totals(&mut *self.tx, ids).await
    }

    async fn replace_package_usage(
        &mut self,
        instance_id: &str,
        entries: &[PackageUsage],
    ) -> StoreResult<()> {
        usage::lite::replace_package(&mut self.tx, instance_id, entries).await
    }

    async fn package_usage(&mut self, ids: &[String]) -> StoreResult<Vec<PackageUsage>> {
        usage::lite::package(&mut *self.tx, ids).await
    }

    async fn commit(self: Box<Self>) -> StoreResult<Committed> {
        self.tx.commit().await?;
        Ok(Committed {
            enqueued: self.enqueued,
        })
    }
}

async fn insert_callback(conn: &mut sqlx::SqliteConnection, r: &CallbackRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO callbacks (request_id, received_ms, interface, activity, method, raw_query, raw_body, verdict, \
         result_code, http_status, response_body, duration_us, test, order_id, instance_id, response_sha256) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&r.request_id)
    .bind(r.received_ms)
    .bind(&r.interface)
    .bind(&r.activity)
    .bind(&r.method)
    .bind(&r.raw_query)
    .bind(&r.raw_body)
    .bind(&r.verdict)
    .bind(&r.result_code)
    .bind(i64::from(r.http_status))
    .bind(&r.response_body)
    .bind(r.duration_us)
    .bind(r.test)
    .bind(&r.order_id)
    .bind(&r.instance_id)
    .bind(&r.response_sha256)
    .execute(conn)
    .await?;
    Ok(())
}
