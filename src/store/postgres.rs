//! PostgreSQL, for production and for several replicas behind a load balancer. The
//! unique keys of the nonce and idempotency tables make concurrent duplicates wait for
//! the first transaction and then see its result (READ COMMITTED); instance changes
//! take a row lock.

use super::rows::{CallbackRow, InstanceRow, app_info_json};
use super::{
    CallbackRecord, Claim, IdempotencyKey, PoolOptions, Store, StoreResult, StoredAnswer, Tx,
};
use crate::domain::instance::Instance;
use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

pub struct PgStore {
    pool: PgPool,
}

const INSTANCE_COLUMNS: &str = "instance_id, family, order_id, order_line_id, product_id, test, state, app_info, \
     expire_ms, last_order_id, created_ms, updated_ms, released_ms";

impl PgStore {
    /// Connects lazily: the server starts (and says so on `/readyz`) while the database
    /// is still down, and every pool use waits at most the acquire timeout.
    pub async fn connect(url: &str, options: &PoolOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_lazy(url)?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(PgTx(self.pool.begin().await?)))
    }

    async fn record_callback(&self, record: &CallbackRecord) -> StoreResult<()> {
        let mut conn = self.pool.acquire().await?;
        insert_callback(&mut conn, record).await
    }

    async fn purge_nonces(&self, now_ms: i64) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM nonces WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn instance(&self, id: &str) -> StoreResult<Option<Instance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = $1");
        let row: Option<InstanceRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(InstanceRow::into_instance).transpose()
    }

    async fn instances_for_order(&self, order_id: &str) -> StoreResult<Vec<Instance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE order_id = $1 ORDER BY created_ms, instance_id"
        );
        let rows: Vec<InstanceRow> = sqlx::query_as(&sql)
            .bind(order_id)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(InstanceRow::into_instance).collect()
    }

    async fn recent_callbacks(&self, limit: u32) -> StoreResult<Vec<CallbackRecord>> {
        let rows: Vec<CallbackRow> = sqlx::query_as(
            "SELECT request_id, received_ms, interface, activity, method, raw_query, raw_body, verdict, result_code, \
             http_status, response_body, duration_us, test, order_id, instance_id \
             FROM callbacks ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(CallbackRecord::from).collect())
    }
}

struct PgTx(Transaction<'static, Postgres>);

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
        super::answered(key, result_code, instance_id, body)
    }

    async fn complete_idempotency(
        &mut self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE idempotency SET result_code = $1, instance_id = $2, body = $3 WHERE scope = $4 AND key = $5")
            .bind(&answer.result_code)
            .bind(&answer.instance_id)
            .bind(&answer.body)
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
        let sql = format!(
            "INSERT INTO instances ({INSTANCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT DO NOTHING"
        );
        let done = sqlx::query(&sql)
            .bind(&i.id)
            .bind(i.family.as_str())
            .bind(&i.order_id)
            .bind(&i.order_line_id)
            .bind(&i.product_id)
            .bind(i.test)
            .bind(i.state.as_str())
            .bind(app_info_json(i))
            .bind(i.expire_ms)
            .bind(&i.last_order_id)
            .bind(i.created_ms)
            .bind(i.updated_ms)
            .bind(i.released_ms)
            .execute(&mut *self.0)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn instance_for_update(&mut self, id: &str) -> StoreResult<Option<Instance>> {
        let sql =
            format!("SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = $1 FOR UPDATE");
        let row: Option<InstanceRow> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&mut *self.0)
            .await?;
        row.map(InstanceRow::into_instance).transpose()
    }

    async fn instances(&mut self, ids: &[String]) -> StoreResult<Vec<Instance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} FROM instances WHERE instance_id = ANY($1) ORDER BY array_position($2, instance_id)"
        );
        let rows: Vec<InstanceRow> = sqlx::query_as(&sql)
            .bind(ids)
            .bind(ids)
            .fetch_all(&mut *self.0)
            .await?;
        rows.into_iter().map(InstanceRow::into_instance).collect()
    }

    async fn update_instance(&mut self, i: &Instance) -> StoreResult<()> {
        sqlx::query(
            "UPDATE instances SET product_id = $1, state = $2, app_info = $3, expire_ms = $4, last_order_id = $5, \
             updated_ms = $6, released_ms = $7 WHERE instance_id = $8",
        )
        .bind(&i.product_id)
        .bind(i.state.as_str())
        .bind(app_info_json(i))
        .bind(i.expire_ms)
        .bind(&i.last_order_id)
        .bind(i.updated_ms)
        .bind(i.released_ms)
        .bind(&i.id)
        .execute(&mut *self.0)
        .await?;
        Ok(())
    }

    async fn record_callback(&mut self, record: &CallbackRecord) -> StoreResult<()> {
        insert_callback(&mut self.0, record).await
    }

    async fn commit(self: Box<Self>) -> StoreResult<()> {
        self.0.commit().await?;
        Ok(())
    }
}

async fn insert_callback(conn: &mut sqlx::PgConnection, r: &CallbackRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO callbacks (request_id, received_ms, interface, activity, method, raw_query, raw_body, verdict, \
         result_code, http_status, response_body, duration_us, test, order_id, instance_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
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
    .execute(conn)
    .await?;
    Ok(())
}
