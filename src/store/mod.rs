//! The storage seam: one narrow trait, implemented for SQLite (the embedded default)
//! and PostgreSQL (production, several replicas). Everything a callback changes —
//! its nonce, the instance, the idempotent answer and the audit record — is written
//! through one [`Tx`] and commits together.

mod postgres;
mod rows;
mod sqlite;

use crate::domain::instance::Instance;
use crate::domain::license_code::LicenseCode;
use async_trait::async_trait;
use std::sync::Arc;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A storage failure. Callers answer `000005` and log it; details never reach KooGallery.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store the URL names (`sqlite:` or `postgres:`/`postgresql:`), creating
/// a SQLite file and its folder when missing. Does not migrate.
pub async fn connect(url: &str, options: &PoolOptions) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(url, options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// Connection-pool settings shared by both backends.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a request waits for a connection before it fails (and is answered
    /// `000005`) — bounded so a database outage cannot make callbacks hang.
    pub acquire_timeout: std::time::Duration,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations.
    async fn migrate(&self) -> StoreResult<()>;
    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Starts the one transaction a callback runs in.
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;
    /// Records a callback that changed nothing (refused before or after its transaction).
    async fn record_callback(&self, record: &CallbackRecord) -> StoreResult<()>;
    /// Forgets nonces whose replay window has passed; returns how many.
    async fn purge_nonces(&self, now_ms: i64) -> StoreResult<u64>;
    /// One instance, for operational commands and tests.
    async fn instance(&self, id: &str) -> StoreResult<Option<Instance>>;
    /// Instances created for an order (any line), oldest first.
    async fn instances_for_order(&self, order_id: &str) -> StoreResult<Vec<Instance>>;
    /// The newest callbacks, newest first.
    async fn recent_callbacks(&self, limit: u32) -> StoreResult<Vec<CallbackRecord>>;
    /// Remembers an activated license code; `false` if it is already known.
    async fn insert_license_code(&self, code: &LicenseCode) -> StoreResult<bool>;
    /// One license code, for operational commands and tests.
    async fn license_code(&self, license: &str) -> StoreResult<Option<LicenseCode>>;
}

/// One callback's transaction. Dropping it without [`Tx::commit`] rolls everything back.
#[async_trait]
pub trait Tx: Send {
    /// Remembers a nonce until `expires_ms`; `false` if it is already remembered (a replay).
    async fn claim_nonce(&mut self, nonce: &str, expires_ms: i64) -> StoreResult<bool>;
    /// Claims an idempotency key. A concurrent claim of the same key waits for this
    /// transaction to finish and then sees its stored answer.
    async fn claim_idempotency(&mut self, key: &IdempotencyKey, now_ms: i64) -> StoreResult<Claim>;
    /// Stores the answer for a claimed key.
    async fn complete_idempotency(
        &mut self,
        key: &IdempotencyKey,
        answer: &StoredAnswer,
    ) -> StoreResult<()>;
    /// Gives up a claim, so that a retry is processed afresh (D7).
    async fn abandon_idempotency(&mut self, key: &IdempotencyKey) -> StoreResult<()>;
    /// Inserts a new instance; `false` if its id is taken.
    async fn insert_instance(&mut self, instance: &Instance) -> StoreResult<bool>;
    /// Reads an instance and locks it for this transaction.
    async fn instance_for_update(&mut self, id: &str) -> StoreResult<Option<Instance>>;
    /// Reads the instances with these ids that exist, in the order asked.
    async fn instances(&mut self, ids: &[String]) -> StoreResult<Vec<Instance>>;
    /// Writes back an instance read with [`Tx::instance_for_update`].
    async fn update_instance(&mut self, instance: &Instance) -> StoreResult<()>;
    /// Reads a license code and locks it for this transaction.
    async fn license_code_for_update(&mut self, license: &str) -> StoreResult<Option<LicenseCode>>;
    /// Writes back a license code read with [`Tx::license_code_for_update`].
    async fn update_license_code(&mut self, code: &LicenseCode) -> StoreResult<()>;
    /// Records the callback this transaction answers.
    async fn record_callback(&mut self, record: &CallbackRecord) -> StoreResult<()>;
    async fn commit(self: Box<Self>) -> StoreResult<()>;
}

/// What makes two callbacks "the same" (D7): a scope (interface and activity) and the
/// ids that identify the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub scope: &'static str,
    pub key: String,
}

/// The outcome of [`Tx::claim_idempotency`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This transaction owns the key and must complete or abandon it.
    Claimed,
    /// An earlier callback already answered: replay these bytes.
    Answered(StoredAnswer),
}

/// An answer kept for replay, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub result_code: String,
    pub instance_id: Option<String>,
    pub body: Vec<u8>,
}

/// The audit record of one callback: everything needed to see later what KooGallery
/// sent and what koogate answered. Keys are never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    pub request_id: String,
    pub received_ms: i64,
    pub interface: String,
    pub activity: Option<String>,
    pub method: String,
    pub raw_query: String,
    pub raw_body: Vec<u8>,
    /// `ok:A`, `ok:B`, or why the signature was refused.
    pub verdict: String,
    pub result_code: Option<String>,
    pub http_status: u16,
    pub response_body: Vec<u8>,
    pub duration_us: i64,
    pub test: bool,
    pub order_id: Option<String>,
    pub instance_id: Option<String>,
}

/// The stored answer behind an idempotency key that another transaction completed.
fn answered(
    key: &IdempotencyKey,
    result_code: Option<String>,
    instance_id: Option<String>,
    body: Option<Vec<u8>>,
) -> StoreResult<Claim> {
    match (result_code, body) {
        (Some(result_code), Some(body)) => Ok(Claim::Answered(StoredAnswer {
            result_code,
            instance_id,
            body,
        })),
        // Claims are completed or abandoned inside the transaction that made them, so
        // a committed claim without an answer means the table was edited by hand.
        _ => Err(StoreError::Corrupt(format!(
            "idempotency key {}/{} has no answer",
            key.scope, key.key
        ))),
    }
}
