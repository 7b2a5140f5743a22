//! Pay-per-use usage (merchant-api.md §6): the records the app sent (their dedupe key), the
//! window totals, and each window's push. SQL written once for both backends by
//! `queries!`; the dialects differ only in how a list of ids is bound.

use crate::domain::usage::Window;

/// A usage record to claim: its id is the dedupe key per instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUsageRecord<'a> {
    pub instance_id: &'a str,
    pub record_id: &'a str,
    /// Units of 1/10000.
    pub quantity: i64,
    pub occurred_ms: i64,
    /// The window the record belongs to by its time.
    pub origin_begin_ms: i64,
    pub received_ms: i64,
}

/// Where a window is: taking usage, fixed for its push, accepted, or refused.
pub mod window_state {
    pub const OPEN: &str = "open";
    pub const CLOSED: &str = "closed";
    pub const PUSHED: &str = "pushed";
    pub const PARKED: &str = "parked";
}

/// One instance's usage in one window, and its push.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageWindow {
    pub instance_id: String,
    pub begin_ms: i64,
    pub end_ms: i64,
    /// Units of 1/10000.
    pub total: i64,
    pub records: i64,
    /// One of [`window_state`].
    pub state: String,
    pub metering_sn: Option<String>,
    pub push_begin_ms: Option<i64>,
    pub push_end_ms: Option<i64>,
    pub record_ms: Option<i64>,
    pub pushed_ms: Option<i64>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub updated_ms: i64,
}

impl UsageWindow {
    /// A window taking usage, with nothing in it yet.
    pub fn open(instance_id: &str, window: Window, now_ms: i64) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            begin_ms: window.begin_ms,
            end_ms: window.end_ms,
            total: 0,
            records: 0,
            state: window_state::OPEN.to_owned(),
            metering_sn: None,
            push_begin_ms: None,
            push_end_ms: None,
            record_ms: None,
            pushed_ms: None,
            code: None,
            reason: None,
            updated_ms: now_ms,
        }
    }

    pub fn window(&self) -> Window {
        Window {
            begin_ms: self.begin_ms,
            end_ms: self.end_ms,
        }
    }
}

/// Late usage counted in a later window: how much came from which earlier one.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Carried {
    pub window_begin_ms: i64,
    pub origin_begin_ms: i64,
    pub total: i64,
    pub records: i64,
}

/// An instance's usage so far, for `queryInstance`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageTotal {
    pub instance_id: String,
    pub total: i64,
    /// When the total last changed.
    pub updated_ms: i64,
}

/// One fee item of a pay-per-use package instance as the app last reported it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PackageUsage {
    pub instance_id: String,
    /// The pay-per-use instance the consumption belongs to (`relatedInstanceId`).
    pub related_instance_id: String,
    /// What the package has consumed for it, in units of 1/10000.
    pub usage_value: i64,
    /// When the app counted it (`statisticalTime`).
    pub statistical_ms: i64,
    /// When the app reported it.
    pub updated_ms: i64,
}

const WINDOW_COLUMNS: &str = "instance_id, begin_ms, end_ms, total, records, state, metering_sn, push_begin_ms, \
     push_end_ms, record_ms, pushed_ms, code, reason, updated_ms";

/// Expands the usage queries for one backend; `$ids` is the SQL condition that matches
/// `instance_id` against the list of ids bound as `$1`.
macro_rules! queries {
    ($db:ty, $ids:expr) => {
        use super::{Carried, NewUsageRecord, PackageUsage, UsageTotal, UsageWindow, window_state};
        use crate::store::StoreResult;
        use sqlx::Executor;

        type Db = $db;

        /// Claims a record's id; `None` when it is new, else the quantity stored first.
        pub async fn claim_record(
            conn: &mut <Db as sqlx::Database>::Connection,
            r: &NewUsageRecord<'_>,
        ) -> StoreResult<Option<i64>> {
            let done = sqlx::query(
                "INSERT INTO usage_records (instance_id, record_id, quantity, occurred_ms, origin_begin_ms, \
                 window_begin_ms, received_ms) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (instance_id, record_id) DO NOTHING",
            )
            .bind(r.instance_id)
            .bind(r.record_id)
            .bind(r.quantity)
            .bind(r.occurred_ms)
            .bind(r.origin_begin_ms)
            .bind(r.origin_begin_ms)
            .bind(r.received_ms)
            .execute(&mut *conn)
            .await?;
            if done.rows_affected() == 1 {
                return Ok(None);
            }
            let (kept,): (i64,) = sqlx::query_as(
                "SELECT quantity FROM usage_records WHERE instance_id = $1 AND record_id = $2",
            )
            .bind(r.instance_id)
            .bind(r.record_id)
            .fetch_one(&mut *conn)
            .await?;
            Ok(Some(kept))
        }

        /// Adds `w.total` and `w.records` to the window, creating it; `false` (and
        /// nothing changed) when the window is no longer open.
        pub async fn add<'c>(conn: impl Executor<'c, Database = Db>, w: &UsageWindow) -> StoreResult<bool> {
            let done = sqlx::query(
                "INSERT INTO usage_windows (instance_id, begin_ms, end_ms, total, records, state, updated_ms) \
                 VALUES ($1, $2, $3, $4, $5, 'open', $6) ON CONFLICT (instance_id, begin_ms) DO UPDATE \
                 SET total = usage_windows.total + excluded.total, records = usage_windows.records + excluded.records, \
                 updated_ms = excluded.updated_ms WHERE usage_windows.state = 'open'",
            )
            .bind(&w.instance_id)
            .bind(w.begin_ms)
            .bind(w.end_ms)
            .bind(w.total)
            .bind(w.records)
            .bind(w.updated_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        pub async fn carry<'c>(
            conn: impl Executor<'c, Database = Db>,
            instance_id: &str,
            record_id: &str,
            window_begin_ms: i64,
        ) -> StoreResult<()> {
            sqlx::query(
                "UPDATE usage_records SET window_begin_ms = $1 WHERE instance_id = $2 AND record_id = $3",
            )
            .bind(window_begin_ms)
            .bind(instance_id)
            .bind(record_id)
            .execute(conn)
            .await?;
            Ok(())
        }

        /// Open windows that ended at or before `ended_by_ms`, oldest first.
        pub async fn ended<'c>(
            conn: impl Executor<'c, Database = Db>,
            ended_by_ms: i64,
        ) -> StoreResult<Vec<UsageWindow>> {
            let sql = format!(
                "SELECT {} FROM usage_windows WHERE state = 'open' AND end_ms <= $1 \
                 ORDER BY begin_ms, instance_id",
                super::WINDOW_COLUMNS
            );
            Ok(sqlx::query_as(&sql).bind(ended_by_ms).fetch_all(conn).await?)
        }

        /// Fixes an open window's push record; `false` when it was not open any more.
        pub async fn close<'c>(conn: impl Executor<'c, Database = Db>, w: &UsageWindow) -> StoreResult<bool> {
            let done = sqlx::query(
                "UPDATE usage_windows SET state = $1, metering_sn = $2, push_begin_ms = $3, push_end_ms = $4, \
                 record_ms = $5, code = $6, reason = $7, updated_ms = $8 \
                 WHERE instance_id = $9 AND begin_ms = $10 AND state = 'open'",
            )
            .bind(&w.state)
            .bind(&w.metering_sn)
            .bind(w.push_begin_ms)
            .bind(w.push_end_ms)
            .bind(w.record_ms)
            .bind(&w.code)
            .bind(&w.reason)
            .bind(w.updated_ms)
            .bind(&w.instance_id)
            .bind(w.begin_ms)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Records how a closed window's push ended (pushed or parked); `false` when it
        /// was settled already. KooGallery taking the record wins: a window another push
        /// (an operator's, at the same moment) saw refused is pushed once one is accepted.
        pub async fn settle<'c>(conn: impl Executor<'c, Database = Db>, w: &UsageWindow) -> StoreResult<bool> {
            let done = sqlx::query(
                "UPDATE usage_windows SET state = $1, pushed_ms = $2, code = $3, reason = $4, updated_ms = $5 \
                 WHERE instance_id = $6 AND begin_ms = $7 \
                 AND (state = 'closed' OR (state = 'parked' AND $8 = 'pushed'))",
            )
            .bind(&w.state)
            .bind(w.pushed_ms)
            .bind(&w.code)
            .bind(&w.reason)
            .bind(w.updated_ms)
            .bind(&w.instance_id)
            .bind(w.begin_ms)
            .bind(&w.state)
            .execute(conn)
            .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Parked windows (of one instance, or all) back to closed, to be pushed again.
        pub async fn unpark<'c>(
            conn: impl Executor<'c, Database = Db>,
            instance_id: Option<&str>,
            now_ms: i64,
        ) -> StoreResult<u64> {
            let done = sqlx::query(
                "UPDATE usage_windows SET state = 'closed', reason = NULL, code = NULL, updated_ms = $1 \
                 WHERE state = 'parked' AND (CAST($2 AS TEXT) IS NULL OR instance_id = $3)",
            )
            .bind(now_ms)
            .bind(instance_id)
            .bind(instance_id)
            .execute(conn)
            .await?;
            Ok(done.rows_affected())
        }

        /// Every instance's total among these ids (those with usage).
        pub async fn totals<'c>(
            conn: impl Executor<'c, Database = Db>,
            ids: &[String],
        ) -> StoreResult<Vec<UsageTotal>> {
            let sql = format!(
                "SELECT instance_id, CAST(SUM(total) AS BIGINT) AS total, MAX(updated_ms) AS updated_ms FROM usage_windows \
                 WHERE {} GROUP BY instance_id",
                $ids
            );
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(&sql)
                .bind(bind_ids(ids))
                .fetch_all(conn)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(instance_id, total, updated_ms)| UsageTotal {
                    instance_id,
                    total,
                    updated_ms,
                })
                .collect())
        }

        /// One instance's windows, newest first.
        pub async fn windows<'c>(
            conn: impl Executor<'c, Database = Db>,
            instance_id: &str,
            limit: u32,
        ) -> StoreResult<Vec<UsageWindow>> {
            let sql = format!(
                "SELECT {} FROM usage_windows WHERE instance_id = $1 ORDER BY begin_ms DESC LIMIT $2",
                super::WINDOW_COLUMNS
            );
            Ok(sqlx::query_as(&sql)
                .bind(instance_id)
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?)
        }

        /// Windows closed and not yet accepted, in the order they are pushed: oldest
        /// window first.
        pub async fn closed<'c>(
            conn: impl Executor<'c, Database = Db>,
            limit: u32,
        ) -> StoreResult<Vec<UsageWindow>> {
            let sql = format!(
                "SELECT {} FROM usage_windows WHERE state = '{}' ORDER BY begin_ms, instance_id LIMIT $1",
                super::WINDOW_COLUMNS,
                window_state::CLOSED
            );
            Ok(sqlx::query_as(&sql)
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?)
        }

        /// Replaces a package instance's fee items with `entries`, kept in their order.
        pub async fn replace_package(
            conn: &mut <Db as sqlx::Database>::Connection,
            instance_id: &str,
            entries: &[PackageUsage],
        ) -> StoreResult<()> {
            sqlx::query("DELETE FROM package_usage WHERE instance_id = $1")
                .bind(instance_id)
                .execute(&mut *conn)
                .await?;
            for (position, e) in entries.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO package_usage (instance_id, position, related_instance_id, usage_value, \
                     statistical_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(instance_id)
                .bind(i64::try_from(position).unwrap_or(i64::MAX))
                .bind(&e.related_instance_id)
                .bind(e.usage_value)
                .bind(e.statistical_ms)
                .bind(e.updated_ms)
                .execute(&mut *conn)
                .await?;
            }
            Ok(())
        }

        /// The fee items of these package instances, each instance's in the order reported.
        pub async fn package<'c>(
            conn: impl Executor<'c, Database = Db>,
            ids: &[String],
        ) -> StoreResult<Vec<PackageUsage>> {
            let sql = format!(
                "SELECT instance_id, related_instance_id, usage_value, statistical_ms, updated_ms \
                 FROM package_usage WHERE {} ORDER BY instance_id, position",
                $ids
            );
            Ok(sqlx::query_as(&sql).bind(bind_ids(ids)).fetch_all(conn).await?)
        }

        /// Late usage of one instance: what each window took from earlier ones.
        pub async fn carried<'c>(
            conn: impl Executor<'c, Database = Db>,
            instance_id: &str,
        ) -> StoreResult<Vec<Carried>> {
            Ok(sqlx::query_as(
                "SELECT window_begin_ms, origin_begin_ms, CAST(SUM(quantity) AS BIGINT) AS total, COUNT(*) AS records \
                 FROM usage_records WHERE instance_id = $1 AND window_begin_ms <> origin_begin_ms \
                 GROUP BY window_begin_ms, origin_begin_ms ORDER BY window_begin_ms, origin_begin_ms",
            )
            .bind(instance_id)
            .fetch_all(conn)
            .await?)
        }
    };
}

/// PostgreSQL: the ids go as one text array.
pub(super) mod pg {
    fn bind_ids(ids: &[String]) -> Vec<String> {
        ids.to_vec()
    }
    queries!(sqlx::Postgres, "instance_id = ANY($1)");
}

/// SQLite: the ids go as one JSON array, read with `json_each`.
pub(super) mod lite {
    #[expect(clippy::expect_used, reason = "a list of strings serialises")]
    fn bind_ids(ids: &[String]) -> String {
        serde_json::to_string(ids).expect("strings serialise")
    }
    queries!(
        sqlx::Sqlite,
        "instance_id IN (SELECT value FROM json_each($1))"
    );
}
