//! The audit record of callbacks, the nonces that refuse replays and the idempotency
//! keys that replay answers: SQL written once, expanded for each backend by `queries!`,
//! with the one dialect difference (how to say the database's now) passed in.

/// One callback record; its values in the order of [`bind_callback!`].
pub(super) const INSERT_CALLBACK: &str = "INSERT INTO callbacks (request_id, received_ms, interface, \
     activity, method, raw_query, raw_body, verdict, result_code, http_status, response_body, duration_us, \
     test, order_id, instance_id, response_sha256) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)";

/// Binds a callback record to [`INSERT_CALLBACK`]: a macro, so that one list serves every
/// query type (both backends', and the batch of a held-back transaction).
macro_rules! bind_callback {
    ($query:expr, $r:expr) => {
        $query
            .bind(&$r.request_id)
            .bind($r.received_ms)
            .bind(&$r.interface)
            .bind(&$r.activity)
            .bind(&$r.method)
            .bind(&$r.raw_query)
            .bind(&$r.raw_body)
            .bind(&$r.verdict)
            .bind(&$r.result_code)
            .bind(i64::from($r.http_status))
            .bind(&$r.response_body)
            .bind($r.duration_us)
            .bind($r.test)
            .bind(&$r.order_id)
            .bind(&$r.instance_id)
            .bind(&$r.response_sha256)
    };
}
pub(super) use bind_callback;

/// Expands the queries for one backend: `$db` is its sqlx database, `$now` the macro
/// that writes the database's clock in SQL.
macro_rules! queries {
    ($db:ty, $now:ident) => {
        use crate::store::rows::CallbackRow;
        use crate::store::seal::Sealer;
        use crate::store::{
            CallbackRecord, Claim, IdempotencyKey, StoreResult, StoredAnswer, answered,
            seal_answer,
        };
        use sqlx::Executor;

        type Db = $db;

        pub async fn insert_callback<'c>(
            conn: impl Executor<'c, Database = Db>,
            r: &CallbackRecord,
        ) -> StoreResult<()> {
            crate::store::audit::bind_callback!(sqlx::query(super::INSERT_CALLBACK), r)
            .execute(conn)
            .await?;
            Ok(())
        }

        pub async fn recent_callbacks<'c>(
            conn: impl Executor<'c, Database = Db>,
            limit: u32,
        ) -> StoreResult<Vec<CallbackRecord>> {
            let rows: Vec<CallbackRow> = sqlx::query_as(
                "SELECT request_id, received_ms, interface, activity, method, raw_query, raw_body, verdict, result_code, \
                 http_status, response_body, duration_us, test, order_id, instance_id, response_sha256 \
                 FROM callbacks ORDER BY id DESC LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(conn)
            .await?;
            Ok(rows.into_iter().map(CallbackRecord::from).collect())
        }

        pub async fn purge_callbacks<'c>(
            conn: impl Executor<'c, Database = Db>,
            before_ms: i64,
            batch: u32,
        ) -> StoreResult<u64> {
            // Ordered by the indexed time, so that the search is a range of its index: ordered
            // by id, a purge with nothing to delete read the whole table, every minute.
            let done = sqlx::query(
                "DELETE FROM callbacks WHERE id IN \
                 (SELECT id FROM callbacks WHERE received_ms < $1 ORDER BY received_ms, id LIMIT $2)",
            )
            .bind(before_ms)
            .bind(i64::from(batch))
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

        pub async fn claim_nonce<'c>(
            conn: impl Executor<'c, Database = Db>,
            nonce: &str,
            expires_ms: i64,
        ) -> StoreResult<bool> {
            let done = sqlx::query(
                "INSERT INTO nonces (nonce, expires_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(nonce)
            .bind(expires_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// On the database's clock, as the queue's leases are: replicas' clocks may
        /// disagree, and one running behind must not reopen a replay window.
        pub async fn purge_nonces<'c>(
            conn: impl Executor<'c, Database = Db>,
        ) -> StoreResult<u64> {
            let done = sqlx::query(concat!("DELETE FROM nonces WHERE expires_ms < ", $now!()))
                .execute(conn)
                .await?;
            Ok(done.rows_affected())
        }

        /// Claims the key, or reads the answer of the transaction that claimed it first
        /// (a concurrent claim waits on the unique key until that one ends).
        pub async fn claim_idempotency(
            conn: &mut <Db as sqlx::Database>::Connection,
            key: &IdempotencyKey,
            now_ms: i64,
            sealer: &Sealer,
        ) -> StoreResult<Claim> {
            let done = sqlx::query(
                "INSERT INTO idempotency (scope, key, created_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            )
            .bind(key.scope)
            .bind(&key.key)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(Claim::Claimed);
            }
            let (result_code, instance_id, body): (Option<String>, Option<String>, Option<Vec<u8>>) =
                sqlx::query_as(
                    "SELECT result_code, instance_id, body FROM idempotency WHERE scope = $1 AND key = $2",
                )
                .bind(key.scope)
                .bind(&key.key)
                .fetch_one(&mut *conn)
                .await?;
            answered(key, result_code, instance_id, body, sealer)
        }

        pub async fn complete_idempotency<'c>(
            conn: impl Executor<'c, Database = Db>,
            key: &IdempotencyKey,
            answer: &StoredAnswer,
            sealer: &Sealer,
        ) -> StoreResult<()> {
            sqlx::query(
                "UPDATE idempotency SET result_code = $1, instance_id = $2, body = $3 WHERE scope = $4 AND key = $5",
            )
            .bind(&answer.result_code)
            .bind(&answer.instance_id)
            .bind(seal_answer(key, &answer.body, sealer))
            .bind(key.scope)
            .bind(&key.key)
            .execute(conn)
            .await?;
            Ok(())
        }

        pub async fn abandon_idempotency<'c>(
            conn: impl Executor<'c, Database = Db>,
            key: &IdempotencyKey,
        ) -> StoreResult<()> {
            sqlx::query("DELETE FROM idempotency WHERE scope = $1 AND key = $2")
                .bind(key.scope)
                .bind(&key.key)
                .execute(conn)
                .await?;
            Ok(())
        }
    };
}

pub(super) mod pg {
    use crate::store::queue::pg_now;
    queries!(sqlx::Postgres, pg_now);
}

pub(super) mod lite {
    use crate::store::queue::lite_now;
    queries!(sqlx::Sqlite, lite_now);
}
