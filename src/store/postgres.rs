//! PostgreSQL, for production and for several replicas behind a load balancer. The
//! unique keys of the nonce and idempotency tables make concurrent duplicates wait for
//! the first transaction and then see its result (READ COMMITTED); instance changes
//! take a row lock.

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
    StoreResult, StoredAnswer, Tx,
};
use crate::domain::instance::Instance;
use crate::domain::license_code::LicenseCode;
use crate::domain::license_request::LicenseRequest;
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::sync::Arc;

pub struct PgStore {
    pub(super) pool: PgPool,
    sealer: Arc<Sealer>,
}

/// 23 placeholders, one per column of `instance_columns!`.
const INSERT_INSTANCE: &str = concat!(
    "INSERT INTO instances (",
    instance_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
     ON CONFLICT DO NOTHING"
);
const UPDATE_INSTANCE: &str = "UPDATE instances SET product_id = $1, sku_code = $2, charging_mode = $3, \
     period_type = $4, period_number = $5, linear_value = $6, customer_id = $7, customer_name = $8, details = $9, \
     state = $10, app_info = $11, expire_ms = $12, last_order_id = $13, updated_ms = $14, released_ms = $15, \
     provisioning_error = $16, buyer_data = $17 WHERE instance_id = $18";

const INSERT_LICENSE_CODE: &str = concat!(
    "INSERT INTO license_codes (",
    license_code_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"
);
const UPDATE_LICENSE_CODE: &str = "UPDATE license_codes SET order_id = $1, order_line_id = $2, product_id = $3, state = $4, expire_ms = $5, last_order_id = $6, released_by_test = $7, updated_ms = $8, released_ms = $9 WHERE license = $10";

impl PgStore {
    /// Connects lazily: the server starts (and says so on `/readyz`) while the database
    /// is still down, and every pool use waits at most the acquire timeout.
    /// What is kept encrypted is sealed with `sealer`.
    pub async fn connect(url: &str, options: &PoolOptions, sealer: Sealer) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy(url)?;
        Ok(Self {
            pool,
            sealer: Arc::new(sealer),
        })
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

    async fn purge_buyer_data(&self, released_before_ms: i64, batch: u32) -> StoreResult<u64> {
        super::at_rest::pg::purge_buyer_data(&self.pool, released_before_ms, batch).await
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(PgTx(
            self.pool.begin().await?,
            self.sealer.clone(),
            false,
        )))
    }

    async fn record_callback(&self, record: &CallbackRecord) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_callback(&mut conn, record).await
    }

    async fn record_callbacks(&self, records: &[CallbackRecord]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        for record in records {
            insert_callback(&mut tx, record).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn purge_nonces(&self) -> StoreResult<u64> {
        let done = sqlx::query(concat!(
            "DELETE FROM nonces WHERE expires_ms < ",
            super::queue::pg_now!()
        ))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn purge_callbacks(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        let done = sqlx::query(
            "DELETE FROM callbacks WHERE id IN \
             (SELECT id FROM callbacks WHERE received_ms < $1 ORDER BY id LIMIT $2)",
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
            " FROM instances WHERE instance_id = $1"
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
            " FROM instances WHERE order_id = $1 ORDER BY created_ms, instance_id"
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
             FROM callbacks ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(CallbackRecord::from).collect())
    }
    async fn begin_license_activation(&self, license: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO license_activations (license, started_ms, completed_ms) VALUES ($1, $2, NULL) \
             ON CONFLICT (license) DO UPDATE SET started_ms = excluded.started_ms, completed_ms = NULL",
        )
        .bind(license)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn complete_license_activation(&self, license: &str, now_ms: i64) -> StoreResult<()> {
        sqlx::query("UPDATE license_activations SET completed_ms = $1 WHERE license = $2")
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
        let done = bind_license_code!(sqlx::query(INSERT_LICENSE_CODE), code, identity)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn license_code(&self, license: &str) -> StoreResult<Option<LicenseCode>> {
        let row: Option<LicenseCodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            license_code_columns!(),
            " FROM license_codes WHERE license = $1"
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
            " FROM order_lines WHERE order_id = $1 ORDER BY order_line_id"
        ))
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| r.into_record(&self.sealer))
            .collect()
    }

    async fn events_after(&self, after: Cursor, limit: u32) -> StoreResult<Vec<StoredEvent>> {
        events::pg::events_after(&self.pool, after, limit, &self.sealer).await
    }

    async fn event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>> {
        events::pg::event(&self.pool, event_id, &self.sealer).await
    }

    async fn events_of(&self, subject: &str) -> StoreResult<Vec<StoredEvent>> {
        events::pg::events_of(&self.pool, subject, &self.sealer).await
    }

    async fn event_attempts(&self, event_id: &str) -> StoreResult<Vec<Attempt>> {
        events::pg::attempts(&self.pool, event_id).await
    }

    async fn record_attempt(&self, attempt: &Attempt) -> StoreResult<()> {
        events::pg::insert_attempt(&self.pool, attempt).await
    }

    async fn webhook_pause(&self) -> StoreResult<Option<Pause>> {
        events::pg::pause(&self.pool).await
    }

    async fn pause_webhook(&self, paused_ms: i64, reason: &str) -> StoreResult<()> {
        events::pg::set_pause(&self.pool, paused_ms, reason).await
    }

    async fn resume_webhook(&self, kind: &str, now_ms: i64) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        events::pg::clear_pause(&mut *tx).await?;
        // Waiting ones first: the parked ones come back due on the database's clock,
        // which may be ahead of `now_ms`, and would be counted twice.
        let waiting = events::pg::due_now(&mut *tx, kind, now_ms).await?;
        let parked = super::queue::pg::requeue_failed(&mut *tx, Some(kind), now_ms).await?;
        tx.commit().await?;
        Ok(parked + waiting)
    }

    async fn purge_events(&self, before_ms: i64, batch: u32) -> StoreResult<u64> {
        events::pg::purge_events(&self.pool, before_ms, batch).await
    }

    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<Instance>> {
        events::pg::list_instances(&self.pool, filter, &self.sealer).await
    }

    async fn usage_windows(&self, instance_id: &str, limit: u32) -> StoreResult<Vec<UsageWindow>> {
        usage::pg::windows(&self.pool, instance_id, limit).await
    }

    async fn closed_usage_windows(&self, limit: u32) -> StoreResult<Vec<UsageWindow>> {
        usage::pg::closed(&self.pool, limit).await
    }

    async fn usage_carried(&self, instance_id: &str) -> StoreResult<Vec<Carried>> {
        usage::pg::carried(&self.pool, instance_id).await
    }

    async fn license_request(&self, event_id: &str) -> StoreResult<Option<LicenseRequest>> {
        license_requests::pg::get(&self.pool, event_id, false).await
    }

    async fn license_requests(
        &self,
        instance_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LicenseRequest>> {
        license_requests::pg::list(&self.pool, instance_id, limit).await
    }

    async fn license_uploads(&self, event_id: &str) -> StoreResult<Vec<LicenseUpload>> {
        license_requests::pg::uploads(&self.pool, event_id).await
    }

    async fn record_license_upload(&self, upload: &LicenseUpload) -> StoreResult<()> {
        license_requests::pg::insert_upload(&self.pool, upload).await
    }

    async fn operations(&self, now_ms: i64) -> StoreResult<super::Operations> {
        super::ops::pg::operations(&self.pool, now_ms).await
    }

    async fn callbacks_of_order(&self, order_id: &str) -> StoreResult<Vec<super::StoredCallback>> {
        super::ops::pg::callbacks_of_order(&self.pool, order_id).await
    }

    async fn refused_callbacks(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<super::StoredCallback>> {
        super::ops::pg::refused_callbacks(&self.pool, since_ms, limit).await
    }

    async fn callback(&self, id: i64) -> StoreResult<Option<super::StoredCallback>> {
        super::ops::pg::callback(&self.pool, id).await
    }

    async fn callback_counts(&self, since_ms: i64) -> StoreResult<Vec<super::CallbackCount>> {
        super::ops::pg::callback_counts(&self.pool, since_ms).await
    }

    async fn failing_orders(&self, since_ms: i64) -> StoreResult<Vec<super::FailingOrder>> {
        super::ops::pg::failing_orders(&self.pool, since_ms).await
    }

    async fn search_instances(&self, search: &super::Search) -> StoreResult<Vec<Instance>> {
        super::ops::pg::search_instances(&self.pool, search, &self.sealer).await
    }

    async fn search_orders(&self, search: &super::Search) -> StoreResult<Vec<super::OrderSummary>> {
        super::ops::pg::search_orders(&self.pool, search).await
    }

    async fn code_activations(&self, order_id: &str) -> StoreResult<Vec<super::CodeActivation>> {
        super::ops::pg::code_activations(&self.pool, order_id).await
    }
}

/// A transaction, the sealer of what it writes encrypted, and whether it enqueued a job.
struct PgTx(Transaction<'static, Postgres>, Arc<Sealer>, bool);

#[async_trait]
impl Tx for PgTx {
    async fn claim_nonce(&mut self, nonce: &str, expires_ms: i64) -> StoreResult<bool> {
        let done = sqlx::query(
            "INSERT INTO nonces (nonce, expires_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(nonce)
        .bind(expires_ms)
        .execute(&mut *self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn claim_idempotency(&mut self, key: &IdempotencyKey, now_ms: i64) -> StoreResult<Claim> {
        let done = sqlx::query("INSERT INTO idempotency (scope, key, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(key.scope)
            .bind(&key.key)
            .bind(now_ms)
            .execute(&mut *self.0)
            .await?;
        if done.rows_affected() == 1 {
            return Ok(Claim::Claimed);
        }
        let (result_code, instance_id, body): (Option<String>, Option<String>, Option<Vec<u8>>) =
            sqlx::query_as("SELECT result_code, instance_id, body FROM idempotency WHERE scope = $1 AND key = $2")
                .bind(key.scope)
                .bind(&key.key)
                .fetch_one(&mut *self.0)
                .await?;
        super::answered(key, result_code, instance_id, body, &self.1)
    }

    async fn complete_idempotency(
        &mut self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE idempotency SET result_code = $1, instance_id = $2, body = $3 WHERE scope = $4 AND key = $5")
            .bind(&answer.result_code)
            .bind(&answer.instance_id)
            .bind(super::seal_answer(key, &answer.body, &self.1))
            .bind(key.scope)
            .bind(&key.key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn abandon_idempotency(&mut self, key: &IdempotencyKey) -> StoreResult<()> {
        sqlx::query("DELETE FROM idempotency WHERE scope = $1 AND key = $2")
            .bind(key.scope)
            .bind(&key.key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn insert_instance(&mut self, i: &Instance) -> StoreResult<bool> {
        let at_rest = AtRest::of(i, &self.1);
        let done = bind_instance!(sqlx::query(INSERT_INSTANCE), i, at_rest, identity)
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn instance_for_update(&mut self, id: &str) -> StoreResult<Option<Instance>> {
        let row: Option<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE instance_id = $1 FOR UPDATE"
        ))
        .bind(id)
        .fetch_optional(&mut *self.0)
        .await?;
        row.map(|r| r.into_instance(&self.1)).transpose()
    }

    async fn instance_for_order_line(
        &mut self,
        order_id: &str,
        order_line_id: &str,
    ) -> StoreResult<Option<Instance>> {
        let row: Option<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE order_id = $1 AND order_line_id = $2 AND family = 'saas_v2' \
             ORDER BY created_ms LIMIT 1 FOR UPDATE"
        ))
        .bind(order_id)
        .bind(order_line_id)
        .fetch_optional(&mut *self.0)
        .await?;
        row.map(|r| r.into_instance(&self.1)).transpose()
    }

    async fn instances(&mut self, ids: &[String]) -> StoreResult<Vec<Instance>> {
        let rows: Vec<InstanceRow> = sqlx::query_as(concat!(
            "SELECT ",
            instance_columns!(),
            " FROM instances WHERE instance_id = ANY($1) ORDER BY array_position($2, instance_id)"
        ))
        .bind(ids)
        .bind(ids)
        .fetch_all(&mut *self.0)
        .await?;
        rows.into_iter().map(|r| r.into_instance(&self.1)).collect()
    }

    async fn update_instance(&mut self, i: &Instance) -> StoreResult<()> {
        let at_rest = AtRest::of(i, &self.1);
        bind_instance!(sqlx::query(UPDATE_INSTANCE), i, at_rest)
            .bind(&i.id)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn license_code_for_update(&mut self, license: &str) -> StoreResult<Option<LicenseCode>> {
        let row: Option<LicenseCodeRow> = sqlx::query_as(concat!(
            "SELECT ",
            license_code_columns!(),
            " FROM license_codes WHERE license = $1 FOR UPDATE"
        ))
        .bind(license)
        .fetch_optional(&mut *self.0)
        .await?;
        row.map(LicenseCodeRow::into_license_code).transpose()
    }

    async fn update_license_code(&mut self, code: &LicenseCode) -> StoreResult<()> {
        bind_license_code!(sqlx::query(UPDATE_LICENSE_CODE), code)
            .bind(&code.license)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn record_callback(&mut self, record: &CallbackRecord) -> StoreResult<()> {
        insert_callback(&mut self.0, record).await
    }

    async fn record_order_line(&mut self, line: &OrderLineRecord) -> StoreResult<bool> {
        let (order_info, buyer_info) = order_info_at_rest(line, &self.1);
        let done = sqlx::query(concat!(
            "INSERT INTO order_lines (",
            order_line_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
        ))
        .bind(&line.order_id)
        .bind(&line.order_line_id)
        .bind(line.test)
        .bind(&line.source)
        .bind(line.created_ms)
        .bind(order_info)
        .bind(line.fetched_ms)
        .bind(buyer_info)
        .execute(&mut *self.0)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn store_order_info(&mut self, line: &OrderLineRecord) -> StoreResult<()> {
        let (order_info, buyer_info) = order_info_at_rest(line, &self.1);
        sqlx::query(concat!(
            "INSERT INTO order_lines (",
            order_line_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id, order_line_id) \
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
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn enqueue_job(&mut self, job: &NewJob) -> StoreResult<bool> {
        let enqueued = super::queue::pg::enqueue(&mut *self.0, job).await?;
        self.2 |= enqueued;
        Ok(enqueued)
    }

    async fn record_attempt(&mut self, attempt: &Attempt) -> StoreResult<()> {
        events::pg::insert_attempt(&mut *self.0, attempt).await
    }

    async fn record_event(&mut self, event: &NewEvent) -> StoreResult<i64> {
        events::pg::insert_event(&mut *self.0, event, &self.1).await
    }

    async fn license_request_for_update(
        &mut self,
        event_id: &str,
    ) -> StoreResult<Option<LicenseRequest>> {
        license_requests::pg::get(&mut *self.0, event_id, true).await
    }

    async fn insert_license_request(&mut self, request: &LicenseRequest) -> StoreResult<bool> {
        license_requests::pg::insert(&mut *self.0, request).await
    }

    async fn update_license_request(&mut self, request: &LicenseRequest) -> StoreResult<()> {
        license_requests::pg::update(&mut *self.0, request).await
    }

    async fn finish_job(&mut self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool> {
        super::queue::pg::finish(&mut *self.0, id, token, now_ms).await
    }

    async fn claim_usage_record(
        &mut self,
        record: &NewUsageRecord<'_>,
    ) -> StoreResult<Option<i64>> {
        usage::pg::claim_record(&mut self.0, record).await
    }

    async fn add_usage(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        usage::pg::add(&mut *self.0, window).await
    }

    async fn carry_usage_record(
        &mut self,
        instance_id: &str,
        record_id: &str,
        window_begin_ms: i64,
    ) -> StoreResult<()> {
        usage::pg::carry(&mut *self.0, instance_id, record_id, window_begin_ms).await
    }

    async fn ended_usage_windows(&mut self, ended_by_ms: i64) -> StoreResult<Vec<UsageWindow>> {
        usage::pg::ended(&mut *self.0, ended_by_ms).await
    }

    async fn close_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        usage::pg::close(&mut *self.0, window).await
    }

    async fn settle_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool> {
        usage::pg::settle(&mut *self.0, window).await
    }

    async fn unpark_usage(&mut self, instance_id: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        usage::pg::unpark(&mut *self.0, instance_id, now_ms).await
    }

    async fn usage_totals(&mut self, ids: &[String]) -> StoreResult<Vec<UsageTotal>> {
        usage::pg::totals(&mut *self.0, ids).await
    }

    async fn replace_package_usage(
        &mut self,
        instance_id: &str,
        entries: &[PackageUsage],
    ) -> StoreResult<()> {
        usage::pg::replace_package(&mut self.0, instance_id, entries).await
    }

    async fn package_usage(&mut self, ids: &[String]) -> StoreResult<Vec<PackageUsage>> {
        usage::pg::package(&mut *self.0, ids).await
    }

    async fn commit(self: Box<Self>) -> StoreResult<Committed> {
        self.0.commit().await?;
        Ok(Committed { enqueued: self.2 })
    }
}

async fn insert_callback(conn: &mut sqlx::PgConnection, r: &CallbackRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO callbacks (request_id, received_ms, interface, activity, method, raw_query, raw_body, verdict, \
         result_code, http_status, response_body, duration_us, test, order_id, instance_id, response_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
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
