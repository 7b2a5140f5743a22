//! Instances, license codes and their activations, and order lines: SQL written once,
//! expanded for each backend by `queries!`, with the two dialect differences (how a row
//! is locked for the transaction, and how a list of ids is bound) passed in.

/// 23 placeholders, one per column of `instance_columns!`.
const INSERT_INSTANCE: &str = concat!(
    "INSERT INTO instances (",
    super::rows::instance_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23) \
     ON CONFLICT DO NOTHING"
);
const UPDATE_INSTANCE: &str = "UPDATE instances SET product_id = $1, sku_code = $2, charging_mode = $3, \
     period_type = $4, period_number = $5, linear_value = $6, customer_id = $7, customer_name = $8, details = $9, \
     state = $10, app_info = $11, expire_ms = $12, last_order_id = $13, updated_ms = $14, released_ms = $15, \
     provisioning_error = $16, buyer_data = $17 WHERE instance_id = $18";

const INSERT_LICENSE_CODE: &str = concat!(
    "INSERT INTO license_codes (",
    super::rows::license_code_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"
);
const UPDATE_LICENSE_CODE: &str = "UPDATE license_codes SET order_id = $1, order_line_id = $2, product_id = $3, \
     state = $4, expire_ms = $5, last_order_id = $6, released_by_test = $7, updated_ms = $8, released_ms = $9 \
     WHERE license = $10";

/// An order line is remembered once: a second mention changes nothing.
const INSERT_ORDER_LINE: &str = concat!(
    "INSERT INTO order_lines (",
    super::rows::order_line_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
);
/// What 查询订单 answered replaces what was stored; the rest of the line is kept.
const UPSERT_ORDER_INFO: &str = concat!(
    "INSERT INTO order_lines (",
    super::rows::order_line_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id, order_line_id) \
     DO UPDATE SET order_info = excluded.order_info, fetched_ms = excluded.fetched_ms, \
     buyer_info = excluded.buyer_info"
);

/// Expands the queries for one backend: `$db` is its sqlx database, `$lock` what follows
/// a `SELECT` that locks the row for the transaction, and `$by_ids` the rest of the
/// `SELECT` of instances whose ids are bound as `$1` (by the module's `bind_ids`), in
/// the order of that list.
macro_rules! queries {
    ($db:ty, $lock:literal, $by_ids:literal) => {
        use crate::domain::instance::Instance;
        use crate::domain::license_code::LicenseCode;
        use crate::store::rows::{
            AtRest, InstanceRow, LicenseCodeRow, OrderLineRow, bind_instance, bind_license_code,
            instance_columns, license_code_columns, order_info_at_rest, order_line_columns,
        };
        use crate::store::seal::Sealer;
        use crate::store::{OrderLineRecord, StoreResult};
        use sqlx::Executor;

        type Db = $db;

        pub async fn insert_instance<'c>(
            conn: impl Executor<'c, Database = Db>,
            i: &Instance,
            sealer: &Sealer,
        ) -> StoreResult<bool> {
            let at_rest = AtRest::of(i, sealer);
            let done = bind_instance!(sqlx::query(super::INSERT_INSTANCE), i, at_rest, identity)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn update_instance<'c>(
            conn: impl Executor<'c, Database = Db>,
            i: &Instance,
            sealer: &Sealer,
        ) -> StoreResult<()> {
            let at_rest = AtRest::of(i, sealer);
            bind_instance!(sqlx::query(super::UPDATE_INSTANCE), i, at_rest)
                .bind(&i.id)
                .execute(conn)
                .await?;
            Ok(())
        }

        /// One instance; locked for the transaction when `lock`.
        pub async fn instance<'c>(
            conn: impl Executor<'c, Database = Db>,
            id: &str,
            lock: bool,
            sealer: &Sealer,
        ) -> StoreResult<Option<Instance>> {
            let sql = if lock {
                concat!(
                    "SELECT ",
                    instance_columns!(),
                    " FROM instances WHERE instance_id = $1",
                    $lock,
                )
            } else {
                concat!("SELECT ", instance_columns!(), " FROM instances WHERE instance_id = $1")
            };
            let row: Option<InstanceRow> = sqlx::query_as(sql).bind(id).fetch_optional(conn).await?;
            row.map(|r| r.into_instance(sealer)).transpose()
        }

        /// The SaaS 2.0 instance of an order line, locked for the transaction.
        pub async fn instance_for_order_line<'c>(
            conn: impl Executor<'c, Database = Db>,
            order_id: &str,
            order_line_id: &str,
            sealer: &Sealer,
        ) -> StoreResult<Option<Instance>> {
            let row: Option<InstanceRow> = sqlx::query_as(concat!(
                "SELECT ",
                instance_columns!(),
                " FROM instances WHERE order_id = $1 AND order_line_id = $2 AND family = 'saas_v2' \
                 ORDER BY created_ms LIMIT 1",
                $lock
            ))
            .bind(order_id)
            .bind(order_line_id)
            .fetch_optional(conn)
            .await?;
            row.map(|r| r.into_instance(sealer)).transpose()
        }

        pub async fn instances_for_order<'c>(
            conn: impl Executor<'c, Database = Db>,
            order_id: &str,
            sealer: &Sealer,
        ) -> StoreResult<Vec<Instance>> {
            let rows: Vec<InstanceRow> = sqlx::query_as(concat!(
                "SELECT ",
                instance_columns!(),
                " FROM instances WHERE order_id = $1 ORDER BY created_ms, instance_id"
            ))
            .bind(order_id)
            .fetch_all(conn)
            .await?;
            rows.into_iter().map(|r| r.into_instance(sealer)).collect()
        }

        /// The instances with these ids that exist, in the order asked.
        pub async fn instances<'c>(
            conn: impl Executor<'c, Database = Db>,
            ids: &[String],
            sealer: &Sealer,
        ) -> StoreResult<Vec<Instance>> {
            let rows: Vec<InstanceRow> =
                sqlx::query_as(concat!("SELECT ", instance_columns!(), " FROM instances ", $by_ids))
                    .bind(bind_ids(ids))
                    .fetch_all(conn)
                    .await?;
            rows.into_iter().map(|r| r.into_instance(sealer)).collect()
        }

        pub async fn insert_license_code<'c>(
            conn: impl Executor<'c, Database = Db>,
            code: &LicenseCode,
        ) -> StoreResult<bool> {
            let done = bind_license_code!(sqlx::query(super::INSERT_LICENSE_CODE), code, identity)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn update_license_code<'c>(
            conn: impl Executor<'c, Database = Db>,
            code: &LicenseCode,
        ) -> StoreResult<()> {
            bind_license_code!(sqlx::query(super::UPDATE_LICENSE_CODE), code)
                .bind(&code.license)
                .execute(conn)
                .await?;
            Ok(())
        }

        /// One license code; locked for the transaction when `lock`.
        pub async fn license_code<'c>(
            conn: impl Executor<'c, Database = Db>,
            license: &str,
            lock: bool,
        ) -> StoreResult<Option<LicenseCode>> {
            let sql = if lock {
                concat!(
                    "SELECT ",
                    license_code_columns!(),
                    " FROM license_codes WHERE license = $1",
                    $lock,
                )
            } else {
                concat!(
                    "SELECT ",
                    license_code_columns!(),
                    " FROM license_codes WHERE license = $1",
                )
            };
            let row: Option<LicenseCodeRow> =
                sqlx::query_as(sql).bind(license).fetch_optional(conn).await?;
            row.map(LicenseCodeRow::into_license_code).transpose()
        }

        pub async fn begin_license_activation<'c>(
            conn: impl Executor<'c, Database = Db>,
            license: &str,
            now_ms: i64,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO license_activations (license, started_ms, completed_ms) VALUES ($1, $2, NULL) \
                 ON CONFLICT (license) DO UPDATE SET started_ms = excluded.started_ms, completed_ms = NULL",
            )
            .bind(license)
            .bind(now_ms)
            .execute(conn)
            .await?;
            Ok(())
        }

        pub async fn complete_license_activation<'c>(
            conn: impl Executor<'c, Database = Db>,
            license: &str,
            now_ms: i64,
        ) -> StoreResult<()> {
            sqlx::query("UPDATE license_activations SET completed_ms = $1 WHERE license = $2")
                .bind(now_ms)
                .bind(license)
                .execute(conn)
                .await?;
            Ok(())
        }

        pub async fn unfinished_license_activations<'c>(
            conn: impl Executor<'c, Database = Db>,
        ) -> StoreResult<Vec<(String, i64)>> {
            Ok(sqlx::query_as(
                "SELECT license, started_ms FROM license_activations \
                 WHERE completed_ms IS NULL ORDER BY started_ms, license",
            )
            .fetch_all(conn)
            .await?)
        }

        pub async fn order_lines<'c>(
            conn: impl Executor<'c, Database = Db>,
            order_id: &str,
            sealer: &Sealer,
        ) -> StoreResult<Vec<OrderLineRecord>> {
            let rows: Vec<OrderLineRow> = sqlx::query_as(concat!(
                "SELECT ",
                order_line_columns!(),
                " FROM order_lines WHERE order_id = $1 ORDER BY order_line_id"
            ))
            .bind(order_id)
            .fetch_all(conn)
            .await?;
            rows.into_iter().map(|r| r.into_record(sealer)).collect()
        }

        /// Writes an order line with [`super::INSERT_ORDER_LINE`] (remember it) or
        /// [`super::UPSERT_ORDER_INFO`] (store what 查询订单 answered); whether a row
        /// was written.
        async fn write_order_line<'c>(
            conn: impl Executor<'c, Database = Db>,
            sql: &'static str,
            line: &OrderLineRecord,
            sealer: &Sealer,
        ) -> StoreResult<bool> {
            let (order_info, buyer_info) = order_info_at_rest(line, sealer);
            let done = sqlx::query(sql)
                .bind(&line.order_id)
                .bind(&line.order_line_id)
                .bind(line.test)
                .bind(&line.source)
                .bind(line.created_ms)
                .bind(order_info)
                .bind(line.fetched_ms)
                .bind(buyer_info)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn record_order_line<'c>(
            conn: impl Executor<'c, Database = Db>,
            line: &OrderLineRecord,
            sealer: &Sealer,
        ) -> StoreResult<bool> {
            write_order_line(conn, super::INSERT_ORDER_LINE, line, sealer).await
        }

        pub async fn store_order_info<'c>(
            conn: impl Executor<'c, Database = Db>,
            line: &OrderLineRecord,
            sealer: &Sealer,
        ) -> StoreResult<()> {
            write_order_line(conn, super::UPSERT_ORDER_INFO, line, sealer).await?;
            Ok(())
        }
    };
}

/// PostgreSQL: the row lock is taken explicitly; the ids go as one text array.
pub(super) mod pg {
    fn bind_ids(ids: &[String]) -> Vec<String> {
        ids.to_vec()
    }
    queries!(
        sqlx::Postgres,
        " FOR UPDATE",
        "WHERE instance_id = ANY($1) ORDER BY array_position($1, instance_id)"
    );
}

/// SQLite: a write transaction already holds the database's one write lock, so no row
/// lock is needed; the ids go as one JSON array, read with `json_each`.
pub(super) mod lite {
    #[expect(clippy::expect_used, reason = "a list of strings serialises")]
    fn bind_ids(ids: &[String]) -> String {
        serde_json::to_string(ids).expect("strings serialise")
    }
    queries!(
        sqlx::Sqlite,
        "",
        "JOIN json_each($1) AS wanted ON wanted.value = instance_id ORDER BY wanted.key"
    );
}
