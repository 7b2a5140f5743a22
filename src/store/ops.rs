//! The operational reads: what the metrics read from the database at scrape time, and
//! everything stored about one order, for the evidence of an appeal. SQL written once
//! and expanded for each backend, as in `events`.

use super::JobState;
use crate::domain::events::DELIVER_KIND;
use crate::domain::license_code::LicenseCode;

/// The shared state of the queue and the webhook endpoint, as one replica read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operations {
    /// Unfinished jobs: (kind, state, how many). Finished ones are deleted after their
    /// retention, so a count of them would mean nothing.
    pub jobs: Vec<(String, JobState, i64)>,
    /// Per kind, when the pending job that has been due longest became due.
    pub oldest_due: Vec<(String, i64)>,
    /// Deliveries not yet done: pending, running or parked.
    pub backlog: i64,
    /// When the oldest of them was queued.
    pub backlog_oldest_ms: Option<i64>,
    pub webhook_paused: bool,
    /// Per family (the callback record's interface), when a test callback last answered
    /// `000000`: the dial test's health.
    pub last_test_success: Vec<(String, i64)>,
    /// Usage windows KooGallery has not taken: (state, how many) for `open`, `closed`
    /// and `parked` windows that exist.
    pub usage_unpushed: Vec<(String, i64)>,
    /// Per state (`open`, `closed`) and window length, when the first such window ends:
    /// the push deadline of the most urgent one follows from it.
    pub usage_first_end: Vec<(String, i64, i64)>,
}

/// A license code of an order and its activation through koogate, if noted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeActivation {
    pub code: LicenseCode,
    /// When the activation was begun and completed (`None` if it never completed).
    pub started_ms: Option<i64>,
    pub completed_ms: Option<i64>,
}

fn job_state(state: &str) -> Option<JobState> {
    JobState::parse(state)
}

const CALLBACK_COLUMNS: &str = "request_id, received_ms, interface, activity, method, raw_query, raw_body, \
     verdict, result_code, http_status, response_body, duration_us, test, order_id, instance_id, response_sha256";

macro_rules! queries {
    ($db:ty) => {
        use super::{CALLBACK_COLUMNS, CodeActivation, Operations, job_state};
        use crate::store::rows::{CallbackRow, LicenseCodeRow, license_code_columns};
        use crate::store::{CallbackRecord, StoreResult};
        use sqlx::Executor;

        type Db = $db;

        pub async fn operations<'c, E>(conn: E, now_ms: i64) -> StoreResult<Operations>
        where
            E: Executor<'c, Database = Db> + Copy,
        {
            let jobs: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT kind, state, COUNT(*) FROM jobs WHERE state <> 'done' \
                 GROUP BY kind, state ORDER BY kind, state",
            )
            .fetch_all(conn)
            .await?;
            let oldest_due: Vec<(String, i64)> = sqlx::query_as(
                "SELECT kind, MIN(run_at_ms) FROM jobs WHERE state = 'pending' AND run_at_ms <= $1 \
                 GROUP BY kind ORDER BY kind",
            )
            .bind(now_ms)
            .fetch_all(conn)
            .await?;
            let (backlog, backlog_oldest_ms): (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), MIN(created_ms) FROM jobs WHERE kind = $1 AND state <> 'done'",
            )
            .bind(super::DELIVER_KIND)
            .fetch_one(conn)
            .await?;
            let paused: Option<(i64,)> =
                sqlx::query_as("SELECT paused_ms FROM webhook_pause WHERE id = 1")
                    .fetch_optional(conn)
                    .await?;
            // The literal conditions match the partial index `callbacks_test_success`.
            let last_test_success: Vec<(String, i64)> = sqlx::query_as(
                "SELECT interface, MAX(received_ms) FROM callbacks \
                 WHERE test = TRUE AND result_code = '000000' GROUP BY interface ORDER BY interface",
            )
            .fetch_all(conn)
            .await?;
            // Pushed windows are most of the table: the conditions keep to the index on
            // (state, begin_ms).
            let usage_unpushed: Vec<(String, i64)> = sqlx::query_as(
                "SELECT state, COUNT(*) FROM usage_windows WHERE state IN ('open', 'closed', 'parked') \
                 GROUP BY state ORDER BY state",
            )
            .fetch_all(conn)
            .await?;
            let usage_first_end: Vec<(String, i64, i64)> = sqlx::query_as(
                "SELECT state, end_ms - begin_ms, MIN(end_ms) FROM usage_windows \
                 WHERE state IN ('open', 'closed') GROUP BY state, end_ms - begin_ms ORDER BY state",
            )
            .fetch_all(conn)
            .await?;
            Ok(Operations {
                jobs: jobs
                    .into_iter()
                    .filter_map(|(kind, state, n)| Some((kind, job_state(&state)?, n)))
                    .collect(),
                oldest_due,
                backlog,
                backlog_oldest_ms,
                webhook_paused: paused.is_some(),
                last_test_success,
                usage_unpushed,
                usage_first_end,
            })
        }

        /// Every callback about an order: naming it, or naming one of its instances or
        /// license codes (a status change or a release carries only that id).
        pub async fn callbacks_of_order<'c>(
            conn: impl Executor<'c, Database = Db>,
            order_id: &str,
        ) -> StoreResult<Vec<CallbackRecord>> {
            let sql = format!(
                "SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE order_id = $1 \
                 OR instance_id IN (SELECT instance_id FROM instances WHERE order_id = $2) \
                 OR instance_id IN (SELECT license FROM license_codes WHERE order_id = $3) \
                 ORDER BY received_ms, id"
            );
            let rows: Vec<CallbackRow> = sqlx::query_as(&sql)
                .bind(order_id)
                .bind(order_id)
                .bind(order_id)
                .fetch_all(conn)
                .await?;
            Ok(rows.into_iter().map(CallbackRecord::from).collect())
        }

        /// The license codes of an order, with their activation.
        pub async fn code_activations<'c, E>(
            conn: E,
            order_id: &str,
        ) -> StoreResult<Vec<CodeActivation>>
        where
            E: Executor<'c, Database = Db> + Copy,
        {
            let rows: Vec<LicenseCodeRow> = sqlx::query_as(concat!(
                "SELECT ",
                license_code_columns!(),
                " FROM license_codes WHERE order_id = $1 ORDER BY activated_ms, license"
            ))
            .bind(order_id)
            .fetch_all(conn)
            .await?;
            let mut activations = Vec::with_capacity(rows.len());
            for row in rows {
                let code = row.into_license_code()?;
                let noted: Option<(i64, Option<i64>)> = sqlx::query_as(
                    "SELECT started_ms, completed_ms FROM license_activations WHERE license = $1",
                )
                .bind(&code.license)
                .fetch_optional(conn)
                .await?;
                activations.push(CodeActivation {
                    code,
                    started_ms: noted.map(|(started, _)| started),
                    completed_ms: noted.and_then(|(_, completed)| completed),
                });
            }
            Ok(activations)
        }
    };
}

pub(super) mod pg {
    queries!(sqlx::Postgres);
}

pub(super) mod lite {
    queries!(sqlx::Sqlite);
}
