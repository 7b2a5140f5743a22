//! The operational reads: what the metrics read from the database at scrape time,
//! everything stored about one order, for the evidence of an appeal, and what the admin
//! pages search and summarise. SQL written once and expanded for each backend, as in
//! `events`.

use super::{CallbackRecord, JobState};
use crate::domain::events::DELIVER_KIND;
use crate::domain::license_code::LicenseCode;

/// A stored callback record with the row id the admin pages link it by (request ids
/// may come from the client and need not be unique).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCallback {
    pub id: i64,
    pub record: CallbackRecord,
}

/// How many callbacks of one family answered one result code (`None`: refused before
/// any code, or not answered by koogate).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CallbackCount {
    pub interface: String,
    pub result_code: Option<String>,
    pub count: i64,
}

/// An order whose `newInstance` has failed and never succeeded since: KooGallery refunds
/// it once it has failed for 3 hours (koogallery.md §9).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FailingOrder {
    pub order_id: String,
    pub first_failed_ms: i64,
    pub last_failed_ms: i64,
    pub failures: i64,
}

/// What the admin lists search: a text matched (case-insensitively, as a substring)
/// against order ids, instance ids and the customer, a state and a family, a page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub text: Option<String>,
    /// A state as [`super::STATE_FILTERS`] names it.
    pub state: Option<String>,
    /// `saas_v2` or `saas_v1`.
    pub family: Option<String>,
    pub offset: u32,
    pub limit: u32,
}

impl Search {
    /// The text as a `LIKE` pattern, its own `%`, `_` and `\` taken literally.
    fn pattern(&self) -> Option<String> {
        let text = self
            .text
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())?;
        let mut pattern = String::from("%");
        for c in text.to_lowercase().chars() {
            if matches!(c, '%' | '_' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        Some(pattern)
    }
}

/// An order koogate has heard of: when first, and how many instances it has.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrderSummary {
    pub order_id: String,
    pub first_ms: i64,
    pub instances: i64,
}

/// The shared state of the queue and the webhook endpoint, as one replica read it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Operations {
    /// Unfinished jobs: (kind, state, how many). Finished ones are deleted after their
    /// retention, so a count of them would mean nothing.
    pub jobs: Vec<(String, JobState, i64)>,
    /// Per kind, how long the pending job that has been due longest has been due, in
    /// milliseconds on the database's clock: the clock that decides whether a job is due,
    /// so a replica's skew cannot make the queue look stuck or fresh.
    pub oldest_due_age_ms: Vec<(String, i64)>,
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
    ($db:ty, $now:ident) => {
        use super::{
            CALLBACK_COLUMNS, CallbackCount, CodeActivation, FailingOrder, Operations,
            OrderSummary, Search, StoredCallback, job_state,
        };
        use crate::store::rows::{
            CallbackRow, InstanceRow, LicenseCodeRow, instance_columns, license_code_columns,
        };
        use crate::domain::instance::Instance;
        use crate::store::StoreResult;
        use crate::store::seal::Sealer;
        use sqlx::Executor;

        type Db = $db;

        pub async fn operations<'c, E>(conn: E) -> StoreResult<Operations>
        where
            E: Executor<'c, Database = Db> + Copy,
        {
            let jobs: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT kind, state, COUNT(*) FROM jobs WHERE state <> 'done' \
                 GROUP BY kind, state ORDER BY kind, state",
            )
            .fetch_all(conn)
            .await?;
            let oldest_due_age_ms: Vec<(String, i64)> = sqlx::query_as(concat!(
                "SELECT kind, ",
                $now!(),
                " - MIN(run_at_ms) FROM jobs WHERE state = 'pending' AND run_at_ms <= ",
                $now!(),
                " GROUP BY kind ORDER BY kind"
            ))
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
                oldest_due_age_ms,
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
        ) -> StoreResult<Vec<StoredCallback>> {
            let sql = format!(
                "SELECT id, {CALLBACK_COLUMNS} FROM callbacks WHERE order_id = $1 \
                 OR instance_id IN (SELECT instance_id FROM instances WHERE order_id = $2) \
                 OR instance_id IN (SELECT license FROM license_codes WHERE order_id = $3) \
                 ORDER BY received_ms, id"
            );
            let rows: Vec<IdRow> = sqlx::query_as(&sql)
                .bind(order_id)
                .bind(order_id)
                .bind(order_id)
                .fetch_all(conn)
                .await?;
            Ok(rows.into_iter().map(StoredCallback::from).collect())
        }

        #[derive(sqlx::FromRow)]
        struct IdRow {
            id: i64,
            #[sqlx(flatten)]
            row: CallbackRow,
        }

        impl From<IdRow> for StoredCallback {
            fn from(row: IdRow) -> Self {
                Self {
                    id: row.id,
                    record: row.row.into(),
                }
            }
        }

        /// One callback record by its row id.
        pub async fn callback<'c>(
            conn: impl Executor<'c, Database = Db>,
            id: i64,
        ) -> StoreResult<Option<StoredCallback>> {
            let sql = format!("SELECT id, {CALLBACK_COLUMNS} FROM callbacks WHERE id = $1");
            let row: Option<IdRow> = sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?;
            Ok(row.map(StoredCallback::from))
        }

        /// The newest callbacks since `since_ms` that were refused before any activity ran
        /// (bad or missing signature, stale timestamp, replayed nonce, malformed), newest
        /// first: they name no order, so this is where an operator finds them.
        pub async fn refused_callbacks<'c>(
            conn: impl Executor<'c, Database = Db>,
            since_ms: i64,
            limit: u32,
        ) -> StoreResult<Vec<StoredCallback>> {
            let sql = format!(
                "SELECT id, {CALLBACK_COLUMNS} FROM callbacks \
                 WHERE received_ms >= $1 AND verdict NOT LIKE 'ok%' \
                 ORDER BY received_ms DESC, id DESC LIMIT $2"
            );
            let rows: Vec<IdRow> = sqlx::query_as(&sql)
                .bind(since_ms)
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?;
            Ok(rows.into_iter().map(StoredCallback::from).collect())
        }

        /// Callbacks received since `since_ms`, counted by family and result code.
        pub async fn callback_counts<'c>(
            conn: impl Executor<'c, Database = Db>,
            since_ms: i64,
        ) -> StoreResult<Vec<CallbackCount>> {
            Ok(sqlx::query_as(
                "SELECT interface, result_code, COUNT(*) AS count FROM callbacks \
                 WHERE received_ms >= $1 GROUP BY interface, result_code \
                 ORDER BY interface, result_code",
            )
            .bind(since_ms)
            .fetch_all(conn)
            .await?)
        }

        /// Orders (not of tests) whose `newInstance` first failed since `since_ms` and has
        /// not succeeded since, the longest failing first.
        pub async fn failing_orders<'c>(
            conn: impl Executor<'c, Database = Db>,
            since_ms: i64,
        ) -> StoreResult<Vec<FailingOrder>> {
            Ok(sqlx::query_as(
                "SELECT f.order_id, MIN(f.received_ms) AS first_failed_ms, \
                 MAX(f.received_ms) AS last_failed_ms, COUNT(*) AS failures FROM callbacks f \
                 WHERE f.activity = 'newInstance' AND f.test = FALSE AND f.order_id IS NOT NULL \
                 AND f.result_code IS NOT NULL AND f.result_code NOT IN ('000000', '000004') \
                 AND NOT EXISTS (SELECT 1 FROM callbacks s WHERE s.order_id = f.order_id \
                 AND s.activity = 'newInstance' AND s.result_code = '000000' \
                 AND s.received_ms >= f.received_ms) \
                 GROUP BY f.order_id HAVING MIN(f.received_ms) >= $1 ORDER BY first_failed_ms, f.order_id LIMIT 100",
            )
            .bind(since_ms)
            .fetch_all(conn)
            .await?)
        }

        /// Pushes the conditions of `search` on the instances table. The names are not
        /// qualified: inside a subquery they resolve to its own `instances` first.
        fn instance_conditions<'a>(q: &mut sqlx::QueryBuilder<'a, Db>, search: &'a Search) {
            if let Some(pattern) = search.pattern() {
                q.push(" AND (LOWER(instance_id) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(order_id) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(COALESCE(customer_id, '')) LIKE ")
                    .push_bind(pattern.clone())
                    .push(" ESCAPE '\\' OR LOWER(COALESCE(customer_name, '')) LIKE ")
                    .push_bind(pattern)
                    .push(" ESCAPE '\\')");
            }
            if let Some(state) = &search.state {
                // Unknown names are refused before they get here.
                if let Some((_, sql)) = crate::store::STATE_FILTERS.iter().find(|(n, _)| n == state) {
                    q.push(" AND ").push(*sql);
                }
            }
            if let Some(family) = &search.family {
                q.push(" AND family = ").push_bind(family.as_str());
            }
        }

        /// Instances matching `search`, newest first.
        pub async fn search_instances<'c>(
            conn: impl Executor<'c, Database = Db>,
            search: &Search,
            sealer: &Sealer,
        ) -> StoreResult<Vec<Instance>> {
            let mut q = sqlx::QueryBuilder::<Db>::new(concat!(
                "SELECT ",
                instance_columns!(),
                " FROM instances WHERE 1 = 1"
            ));
            instance_conditions(&mut q, search);
            q.push(" ORDER BY created_ms DESC, instance_id DESC LIMIT ")
                .push_bind(i64::from(search.limit))
                .push(" OFFSET ")
                .push_bind(i64::from(search.offset));
            let rows: Vec<InstanceRow> = q.build_query_as().fetch_all(conn).await?;
            rows.into_iter().map(|r| r.into_instance(sealer)).collect()
        }

        /// Orders matching `search` (by their id, or by one of their instances), newest
        /// first. An order is known by its lines or its instances (SaaS 1.0 has no lines).
        pub async fn search_orders<'c>(
            conn: impl Executor<'c, Database = Db>,
            search: &Search,
        ) -> StoreResult<Vec<OrderSummary>> {
            let mut q = sqlx::QueryBuilder::<Db>::new(
                "SELECT o.order_id, MIN(o.created_ms) AS first_ms, \
                 (SELECT COUNT(*) FROM instances n WHERE n.order_id = o.order_id) AS instances \
                 FROM (SELECT order_id, created_ms FROM order_lines \
                 UNION ALL SELECT order_id, created_ms FROM instances) o WHERE 1 = 1",
            );
            let filtered = search.state.is_some() || search.family.is_some();
            match (search.pattern(), filtered) {
                // By its own id, or by one of its instances.
                (Some(pattern), false) => {
                    q.push(" AND (LOWER(o.order_id) LIKE ")
                        .push_bind(pattern)
                        .push(" ESCAPE '\\' OR o.order_id IN (SELECT order_id FROM instances WHERE 1 = 1");
                    instance_conditions(&mut q, search);
                    q.push("))");
                }
                // A state or a family is an instance's: only orders with such an instance.
                (_, true) => {
                    q.push(" AND o.order_id IN (SELECT order_id FROM instances WHERE 1 = 1");
                    instance_conditions(&mut q, search);
                    q.push(")");
                }
                (None, false) => {}
            }
            q.push(" GROUP BY o.order_id ORDER BY first_ms DESC, o.order_id DESC LIMIT ")
                .push_bind(i64::from(search.limit))
                .push(" OFFSET ")
                .push_bind(i64::from(search.offset));
            Ok(q.build_query_as().fetch_all(conn).await?)
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
    use crate::store::queue::pg_now;
    queries!(sqlx::Postgres, pg_now);
}

pub(super) mod lite {
    use crate::store::queue::lite_now;
    queries!(sqlx::Sqlite, lite_now);
}
