//! Online License applications and their upload attempts (merchant-api.md §5): SQL
//! written once, expanded for each backend by `queries!`, with the one dialect
//! difference (how a row is locked for the transaction) passed in.

use super::{StoreError, StoreResult};
use crate::domain::license_request::{License, LicenseRequest, RequestState};
use crate::protocol::license_upload::Content;

/// One attempt at 字符串/文件流上传.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LicenseUpload {
    pub event_id: String,
    pub attempted_ms: i64,
    /// The HTTP status; `None` when no answer came.
    pub status: Option<i64>,
    /// `error_code` as answered (`CBC.0000`, `CBC.0999`, `91381037`, …).
    pub code: Option<String>,
    pub message: Option<String>,
    /// Why the attempt failed, when it did.
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(sqlx::FromRow)]
struct Row {
    event_id: String,
    instance_id: String,
    device_fingerprint: Option<String>,
    effective_ms: i64,
    expire_ms: Option<i64>,
    test: bool,
    state: String,
    license_type: Option<String>,
    file_name: Option<String>,
    content: Option<Vec<u8>>,
    sha256: Option<String>,
    source: Option<String>,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    delivered_ms: Option<i64>,
}

const COLUMNS: &str = "event_id, instance_id, device_fingerprint, effective_ms, expire_ms, test, \
     state, license_type, file_name, content, sha256, source, error, created_ms, updated_ms, delivered_ms";

impl Row {
    fn into_request(self) -> StoreResult<LicenseRequest> {
        let corrupt = |what: String| StoreError::Corrupt(format!("license request {what}"));
        let state = RequestState::parse(&self.state)
            .ok_or_else(|| corrupt(format!("{}: state {:?}", self.event_id, self.state)))?;
        let license = match (self.license_type.as_deref(), self.content, self.source) {
            (None, None, _) => None,
            (Some(kind), Some(bytes), Some(source)) => {
                let content = match (kind, self.file_name) {
                    ("CHARACTERS", _) => Content::Characters(
                        String::from_utf8(bytes)
                            .map_err(|_| corrupt(format!("{}: characters", self.event_id)))?,
                    ),
                    ("FILE", Some(name)) => Content::File { name, bytes },
                    _ => return Err(corrupt(format!("{}: type {kind:?}", self.event_id))),
                };
                // The hash was written with the content: a mismatch means the row was edited.
                if self.sha256.as_deref() != Some(content.sha256().as_str()) {
                    return Err(corrupt(format!("{}: sha256 does not match", self.event_id)));
                }
                Some(License { content, source })
            }
            _ => return Err(corrupt(format!("{}: a partial License", self.event_id))),
        };
        Ok(LicenseRequest {
            event_id: self.event_id,
            instance_id: self.instance_id,
            device_fingerprint: self.device_fingerprint,
            effective_ms: self.effective_ms,
            expire_ms: self.expire_ms,
            test: self.test,
            state,
            license,
            error: self.error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            delivered_ms: self.delivered_ms,
        })
    }
}

/// The License columns of a request: (type, file name, content, sha256, source).
type LicenseColumns = (
    Option<&'static str>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
);

fn license_columns(r: &LicenseRequest) -> LicenseColumns {
    match &r.license {
        None => (None, None, None, None, None),
        Some(license) => (
            Some(license.content.kind()),
            match &license.content {
                Content::File { name, .. } => Some(name.clone()),
                Content::Characters(_) => None,
            },
            Some(license.content.bytes().to_vec()),
            Some(license.content.sha256()),
            Some(license.source.clone()),
        ),
    }
}

/// Expands the queries for one backend: `$db` is its sqlx database, `$lock` what follows
/// a `SELECT` that locks the row for the transaction.
macro_rules! queries {
    ($db:ty, $lock:expr) => {
        use super::{COLUMNS, LicenseUpload, Row, license_columns};
        use crate::domain::license_request::LicenseRequest;
        use crate::store::StoreResult;
        use sqlx::Executor;

        type Db = $db;

        pub async fn get<'c>(
            conn: impl Executor<'c, Database = Db>,
            event_id: &str,
            lock: bool,
        ) -> StoreResult<Option<LicenseRequest>> {
            let sql = format!(
                "SELECT {COLUMNS} FROM license_requests WHERE event_id = $1{}",
                if lock { $lock } else { "" }
            );
            let row: Option<Row> = sqlx::query_as(&sql)
                .bind(event_id)
                .fetch_optional(conn)
                .await?;
            row.map(Row::into_request).transpose()
        }

        pub async fn list<'c>(
            conn: impl Executor<'c, Database = Db>,
            instance_id: Option<&str>,
            limit: u32,
        ) -> StoreResult<Vec<LicenseRequest>> {
            let sql = format!(
                "SELECT {COLUMNS} FROM license_requests WHERE ($1 IS NULL OR instance_id = $2) \
                 ORDER BY created_ms DESC, event_id DESC LIMIT $3"
            );
            let rows: Vec<Row> = sqlx::query_as(&sql)
                .bind(instance_id)
                .bind(instance_id)
                .bind(i64::from(limit))
                .fetch_all(conn)
                .await?;
            rows.into_iter().map(Row::into_request).collect()
        }

        pub async fn insert<'c>(
            conn: impl Executor<'c, Database = Db>,
            r: &LicenseRequest,
        ) -> StoreResult<bool> {
            let (kind, name, content, sha256, source) = license_columns(r);
            let sql = format!(
                "INSERT INTO license_requests ({COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
                 ON CONFLICT (event_id) DO NOTHING"
            );
            let done = sqlx::query(&sql)
                .bind(&r.event_id)
                .bind(&r.instance_id)
                .bind(&r.device_fingerprint)
                .bind(r.effective_ms)
                .bind(r.expire_ms)
                .bind(r.test)
                .bind(r.state.as_str())
                .bind(kind)
                .bind(name)
                .bind(content)
                .bind(sha256)
                .bind(source)
                .bind(&r.error)
                .bind(r.created_ms)
                .bind(r.updated_ms)
                .bind(r.delivered_ms)
                .execute(conn)
                .await?;
            Ok(done.rows_affected() == 1)
        }

        /// Writes back what may change: the state, the License, the error and the times.
        pub async fn update<'c>(
            conn: impl Executor<'c, Database = Db>,
            r: &LicenseRequest,
        ) -> StoreResult<()> {
            let (kind, name, content, sha256, source) = license_columns(r);
            sqlx::query(
                "UPDATE license_requests SET state = $1, license_type = $2, file_name = $3, \
                 content = $4, sha256 = $5, source = $6, error = $7, updated_ms = $8, \
                 delivered_ms = $9 WHERE event_id = $10",
            )
            .bind(r.state.as_str())
            .bind(kind)
            .bind(name)
            .bind(content)
            .bind(sha256)
            .bind(source)
            .bind(&r.error)
            .bind(r.updated_ms)
            .bind(r.delivered_ms)
            .bind(&r.event_id)
            .execute(conn)
            .await?;
            Ok(())
        }

        pub async fn uploads<'c>(
            conn: impl Executor<'c, Database = Db>,
            event_id: &str,
        ) -> StoreResult<Vec<LicenseUpload>> {
            Ok(sqlx::query_as(
                "SELECT event_id, attempted_ms, status, code, message, error, duration_ms \
                 FROM license_uploads WHERE event_id = $1 ORDER BY id",
            )
            .bind(event_id)
            .fetch_all(conn)
            .await?)
        }

        pub async fn insert_upload<'c>(
            conn: impl Executor<'c, Database = Db>,
            u: &LicenseUpload,
        ) -> StoreResult<()> {
            sqlx::query(
                "INSERT INTO license_uploads (event_id, attempted_ms, status, code, message, error, duration_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&u.event_id)
            .bind(u.attempted_ms)
            .bind(u.status)
            .bind(&u.code)
            .bind(&u.message)
            .bind(&u.error)
            .bind(u.duration_ms)
            .execute(conn)
            .await?;
            Ok(())
        }
    };
}

/// PostgreSQL: the row lock is taken explicitly.
pub(super) mod pg {
    queries!(sqlx::Postgres, " FOR UPDATE");
}

/// SQLite: a write transaction already holds the database's one write lock.
pub(super) mod lite {
    queries!(sqlx::Sqlite, "");
}
