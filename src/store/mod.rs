//! The storage seam: [`Store`] and its subtraits, one per concern, implemented for
//! SQLite (the embedded default) and PostgreSQL (production, several replicas).
//! Everything a callback changes — its nonce, the instance, the idempotent answer and
//! the audit record — is written through one [`Tx`] and commits together.

mod at_rest;
mod audit;
mod backend;
mod deferred;
mod events;
pub mod health;
mod license_requests;
mod ops;
mod postgres;
mod queue;
mod records;
pub mod refused;
mod rows;
pub mod seal;
mod sqlite;
mod usage;

use crate::domain::instance::Instance;
use crate::domain::license_code::LicenseCode;
use crate::domain::license_request::LicenseRequest;
use async_trait::async_trait;
use std::sync::Arc;

pub use at_rest::Sealed;
pub use events::{Attempt, Cursor, InstanceFilter, NewEvent, Pause, STATE_FILTERS, StoredEvent};
pub use license_requests::LicenseUpload;
pub use ops::{
    CallbackCount, CodeActivation, FailingOrder, Operations, OrderSummary, Search, StoredCallback,
};
pub use postgres::PgStore;
pub use queue::{Committed, PG_CLAIM, PG_CLAIM_SETTINGS, Queue, SQLITE_CLAIM};
pub use rows::PERSONAL_DETAILS;
pub use sqlite::SqliteStore;
pub use usage::{Carried, NewUsageRecord, PackageUsage, UsageTotal, UsageWindow, window_state};

/// A storage failure. Callers answer `000005` and log it; details never reach KooGallery.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// The URL, its password removed.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    /// The data key is missing or unreadable (see [`crate::config::Settings::sealer`]).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A callback's nonce was taken by a twin that committed first (a replay).
    #[error("nonce already used")]
    ReplayedNonce,
    /// A key a held-back write needed was taken by a twin that committed first; nothing
    /// was written (see [`Store::begin_callback`]).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The SQLite file or its folder cannot be created or opened; says which, and why.
    #[error("{0} (KOOGATE_DATABASE_URL)")]
    SqliteFile(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Opens the store the URL names (`sqlite:` or `postgres:`/`postgresql:`), creating
/// a SQLite file and its folder when missing; `sealer` encrypts what is kept at rest.
/// Does not migrate.
pub async fn connect(
    url: &str,
    options: &PoolOptions,
    sealer: seal::Sealer,
) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options, sealer).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(PgStore::connect(url, options, sealer).await?))
    } else {
        Err(StoreError::UnsupportedUrl(crate::config::redact_url(url)))
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

/// Everything a backend stores, by concern: the subtraits hold the reads and writes,
/// this one opening, migrating and checking the database and starting a callback's
/// transaction. Callers bring the subtraits into scope with [`prelude`].
#[async_trait]
pub trait Store:
    Records + Events + Audit + Ops + Usage + LicenseRequests + Queue + Send + Sync + 'static
{
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;
    /// Applies pending migrations, then seals what an older release (or an older data
    /// key) left readable ([`Store::seal_at_rest`]).
    async fn migrate(&self) -> StoreResult<()>;
    /// Encrypts under the current data key every credential, stored answer and buyer
    /// datum still in plain text or under an old key, and redacts the audit copies of
    /// answers recorded before redaction. Skipped when the database says this key has
    /// done it already.
    async fn seal_at_rest(&self, now_ms: i64) -> StoreResult<Sealed>;
    /// Whether the database answers.
    async fn ping(&self) -> StoreResult<()>;
    /// Starts a transaction whose every statement goes out as it is made.
    async fn begin(&self) -> StoreResult<Box<dyn Tx>>;
    /// Starts the transaction a callback runs in first. Its writes may be held back and
    /// sent together at commit (PostgreSQL does, to answer in two round trips): `true`
    /// from [`Tx::claim_nonce`], [`Tx::insert_instance`] or [`Tx::enqueue_job`] then
    /// means "unless the key is taken at commit", and commit fails as
    /// [`StoreError::ReplayedNonce`] or [`StoreError::Conflict`] — nothing written; run
    /// the callback again in [`Store::begin`], which sees what the twin did.
    async fn begin_callback(&self) -> StoreResult<Box<dyn Tx>>;
}

/// Instances, order lines, license codes and their activations.
#[async_trait]
pub trait Records: Send + Sync {
    /// One instance, for operational commands and tests.
    async fn instance(&self, id: &str) -> StoreResult<Option<Instance>>;
    /// Instances created for an order (any line), oldest first.
    async fn instances_for_order(&self, order_id: &str) -> StoreResult<Vec<Instance>>;
    /// Instances, newest first.
    async fn list_instances(&self, filter: &InstanceFilter) -> StoreResult<Vec<Instance>>;
    /// The lines of an order koogate has heard of, by line id.
    async fn order_lines(&self, order_id: &str) -> StoreResult<Vec<OrderLineRecord>>;
    /// Remembers an activated license code; `false` if it is already known.
    async fn insert_license_code(&self, code: &LicenseCode) -> StoreResult<bool>;
    /// One license code, for operational commands and tests.
    async fn license_code(&self, license: &str) -> StoreResult<Option<LicenseCode>>;
    /// Notes that activating `license` through the open API begins (again).
    async fn begin_license_activation(&self, license: &str, now_ms: i64) -> StoreResult<()>;
    /// Notes that the activation of `license` completed and the code is stored.
    async fn complete_license_activation(&self, license: &str, now_ms: i64) -> StoreResult<()>;
    /// Activations begun and never completed (a crash or a failed call), oldest first,
    /// with when they began.
    async fn unfinished_license_activations(&self) -> StoreResult<Vec<(String, i64)>>;
    /// The license codes of an order with their activations.
    async fn code_activations(&self, order_id: &str) -> StoreResult<Vec<CodeActivation>>;
}

/// Events and their delivery (merchant-api.md §2).
#[async_trait]
pub trait Events: Send + Sync {
    /// Events after `after`, in feed order, as many as `limit`.
    async fn events_after(&self, after: Cursor, limit: u32) -> StoreResult<Vec<StoredEvent>>;
    /// One event by its public id.
    async fn event(&self, event_id: &str) -> StoreResult<Option<StoredEvent>>;
    /// The events of one subject, in sequence.
    async fn events_of(&self, subject: &str) -> StoreResult<Vec<StoredEvent>>;
    /// The delivery attempts of an event, oldest first.
    async fn event_attempts(&self, event_id: &str) -> StoreResult<Vec<Attempt>>;
    /// Records a delivery attempt.
    async fn record_attempt(&self, attempt: &Attempt) -> StoreResult<()>;
    /// The webhook endpoint's pause, if it is paused.
    async fn webhook_pause(&self) -> StoreResult<Option<Pause>>;
    /// Pauses the webhook endpoint (a first pause is kept).
    async fn pause_webhook(&self, paused_ms: i64, reason: &str) -> StoreResult<()>;
    /// Lifts the pause and makes every waiting delivery of `kind` due now, parked ones
    /// included; returns how many deliveries were put back in the queue.
    async fn resume_webhook(&self, kind: &str, now_ms: i64) -> StoreResult<u64>;
}

/// The audit record of callbacks and its reads.
#[async_trait]
pub trait Audit: Send + Sync {
    /// Records a callback that changed nothing (refused before or after its transaction).
    async fn record_callback(&self, record: &CallbackRecord) -> StoreResult<()>;
    /// Records several refused requests in one transaction.
    async fn record_callbacks(&self, records: &[CallbackRecord]) -> StoreResult<()>;
    /// The newest callbacks, newest first.
    async fn recent_callbacks(&self, limit: u32) -> StoreResult<Vec<CallbackRecord>>;
    /// One callback record by its row id.
    async fn callback(&self, id: i64) -> StoreResult<Option<StoredCallback>>;
    /// Every callback about an order, its instances or its license codes, oldest first.
    async fn callbacks_of_order(&self, order_id: &str) -> StoreResult<Vec<StoredCallback>>;
    /// The newest callbacks since `since_ms` refused before any activity ran, newest first.
    async fn refused_callbacks(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<StoredCallback>>;
    /// Callbacks received since `since_ms`, by family and result code.
    async fn callback_counts(&self, since_ms: i64) -> StoreResult<Vec<CallbackCount>>;
    /// Orders whose `newInstance` failed since `since_ms` and has not succeeded since.
    async fn failing_orders(&self, since_ms: i64) -> StoreResult<Vec<FailingOrder>>;
}

/// Operations (merchant-api.md §7): the metrics, searches and the purges that bound
/// what is kept.
#[async_trait]
pub trait Ops: Send + Sync {
    /// The queue, the backlog, the pause and the dial test, read for the metrics.
    async fn operations(&self) -> StoreResult<Operations>;
    /// Instances matching a search, newest first.
    async fn search_instances(&self, search: &Search) -> StoreResult<Vec<Instance>>;
    /// Orders matching a search, newest first.
    async fn search_orders(&self, search: &Search) -> StoreResult<Vec<OrderSummary>>;
    /// Forgets nonces whose replay window has passed on the database's clock (as the
    /// queue's leases are: replicas' clocks may disagree); returns how many.
    async fn purge_nonces(&self) -> StoreResult<u64>;
    /// Deletes at most `batch` callback records received before `before_ms`, oldest
    /// first; returns how many.
    async fn purge_callbacks(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;
    /// Deletes at most `batch` events created before `before_ms`; returns how many.
    async fn purge_events(&self, before_ms: i64, batch: u32) -> StoreResult<u64>;
    /// Clears the buyer personal data of at most `batch` instances released before
    /// `released_before_ms`, and 查询订单's buyer data of their order lines; returns how
    /// many instances.
    async fn purge_buyer_data(&self, released_before_ms: i64, batch: u32) -> StoreResult<u64>;
}

/// Pay-per-use usage (merchant-api.md §6).
#[async_trait]
pub trait Usage: Send + Sync {
    /// One instance's usage windows, newest first.
    async fn usage_windows(&self, instance_id: &str, limit: u32) -> StoreResult<Vec<UsageWindow>>;
    /// Windows closed and waiting for their push, oldest first.
    async fn closed_usage_windows(&self, limit: u32) -> StoreResult<Vec<UsageWindow>>;
    /// Late usage of one instance, by the window it was carried into.
    async fn usage_carried(&self, instance_id: &str) -> StoreResult<Vec<Carried>>;
}

/// Online License applications (merchant-api.md §5).
#[async_trait]
pub trait LicenseRequests: Send + Sync {
    /// One application, by KooGallery's eventId.
    async fn license_request(&self, event_id: &str) -> StoreResult<Option<LicenseRequest>>;
    /// Applications (of one instance, or all), newest first, as many as `limit`.
    async fn license_requests(
        &self,
        instance_id: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<LicenseRequest>>;
    /// The upload attempts of an application, oldest first.
    async fn license_uploads(&self, event_id: &str) -> StoreResult<Vec<LicenseUpload>>;
    /// Records an upload attempt.
    async fn record_license_upload(&self, upload: &LicenseUpload) -> StoreResult<()>;
}

/// The storage traits in one import (`use koogate::store::prelude::*;`), for code that
/// calls them on a concrete store or through a generic bound; a `dyn Store` offers the
/// methods of its subtraits without it.
pub mod prelude {
    pub use super::{Audit, Events, LicenseRequests, Ops, Queue, Records, Store, Tx, Usage};
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
    /// The SaaS 2.0 instance of an order line, locked for this transaction.
    async fn instance_for_order_line(
        &mut self,
        order_id: &str,
        order_line_id: &str,
    ) -> StoreResult<Option<Instance>>;
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
    /// Remembers an order line; `false` (and nothing changed) if it is already known.
    async fn record_order_line(&mut self, line: &OrderLineRecord) -> StoreResult<bool>;
    /// Stores what 查询订单 answered for an order line, remembering the line if needed.
    async fn store_order_info(&mut self, line: &OrderLineRecord) -> StoreResult<()>;
    /// Enqueues a job, to be run once this transaction commits; `false` (and nothing
    /// enqueued) if a job of the same kind and dedup key exists.
    async fn enqueue_job(&mut self, job: &NewJob) -> StoreResult<bool>;
    /// Writes an event, numbered after its subject's last one.
    async fn record_event(&mut self, event: &NewEvent) -> StoreResult<()>;
    /// [`Events::record_attempt`] inside this transaction: a successful delivery's attempt
    /// commits with its job's completion, one write instead of two.
    async fn record_attempt(&mut self, attempt: &Attempt) -> StoreResult<()>;
    /// [`Queue::finish_job`] inside this transaction, so that a job's effects and its
    /// completion commit together.
    async fn finish_job(&mut self, id: i64, token: &str, now_ms: i64) -> StoreResult<bool>;

    // Pay-per-use usage (merchant-api.md §6).

    /// Claims a usage record's id (the dedupe key); `None` when it is new, else the
    /// quantity stored with it first. A concurrent claim of the same id waits for this
    /// transaction and then sees it.
    async fn claim_usage_record(&mut self, record: &NewUsageRecord<'_>)
    -> StoreResult<Option<i64>>;
    /// Adds `window.total` and `window.records` to the window, creating it; `false` (and
    /// nothing changed) when the window is no longer open.
    async fn add_usage(&mut self, window: &UsageWindow) -> StoreResult<bool>;
    /// Notes that a record was counted in a later window than its own.
    async fn carry_usage_record(
        &mut self,
        instance_id: &str,
        record_id: &str,
        window_begin_ms: i64,
    ) -> StoreResult<()>;
    /// Open windows that ended at or before `ended_by_ms`, oldest first.
    async fn ended_usage_windows(&mut self, ended_by_ms: i64) -> StoreResult<Vec<UsageWindow>>;
    /// Fixes an open window's push record (or parks it); `false` if it was not open.
    async fn close_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool>;
    /// Records a closed window's push outcome; `false` if it was settled already (an
    /// accepted push still overrides a parked one: KooGallery has the record).
    async fn settle_usage_window(&mut self, window: &UsageWindow) -> StoreResult<bool>;
    /// Puts parked windows (of one instance, or all) back in line to be pushed.
    async fn unpark_usage(&mut self, instance_id: Option<&str>, now_ms: i64) -> StoreResult<u64>;
    /// The usage totals of these instances (those that have any).
    async fn usage_totals(&mut self, ids: &[String]) -> StoreResult<Vec<UsageTotal>>;
    /// Replaces a pay-per-use package instance's fee items (lock the instance first).
    async fn replace_package_usage(
        &mut self,
        instance_id: &str,
        entries: &[PackageUsage],
    ) -> StoreResult<()>;
    /// The fee items of these package instances, each instance's in the order reported.
    async fn package_usage(&mut self, ids: &[String]) -> StoreResult<Vec<PackageUsage>>;

    // Online License applications (merchant-api.md §5).

    /// Reads a License application and locks it for this transaction.
    async fn license_request_for_update(
        &mut self,
        event_id: &str,
    ) -> StoreResult<Option<LicenseRequest>>;
    /// Inserts a new application; `false` if its eventId is taken.
    async fn insert_license_request(&mut self, request: &LicenseRequest) -> StoreResult<bool>;
    /// Writes back an application read with [`Tx::license_request_for_update`].
    async fn update_license_request(&mut self, request: &LicenseRequest) -> StoreResult<()>;

    /// Commits, saying whether a job was enqueued: only then is the worker woken.
    async fn commit(self: Box<Self>) -> StoreResult<Committed>;
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

/// An answer kept for replay, byte for byte (sealed at rest: it may hold credentials).
/// `Debug` shows the body's length only.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub result_code: String,
    pub instance_id: Option<String>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for StoredAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAnswer")
            .field("result_code", &self.result_code)
            .field("instance_id", &self.instance_id)
            .field(
                "body",
                &format_args!("[{} bytes redacted]", self.body.len()),
            )
            .finish()
    }
}

/// The associated data of an idempotency key's sealed answer.
fn answer_place(key: &IdempotencyKey) -> String {
    seal::place(rows::IDEMPOTENCY_BODY, &[key.scope, &key.key])
}

/// An answer's body as stored: sealed for its key.
fn seal_answer(key: &IdempotencyKey, body: &[u8], sealer: &seal::Sealer) -> Vec<u8> {
    sealer.seal(&answer_place(key), body).into_bytes()
}

/// How much of a request's body is kept when its signature was refused: enough to see
/// what was sent, without letting unauthenticated senders fill the disk.
pub const REFUSED_BODY_KEPT: usize = 4096;

/// The audit record of one callback: everything needed to see later what KooGallery
/// sent and what koogate answered. Keys are never part of it, and credentials in the
/// answer are redacted ([`CallbackRecord::answered_with`]).
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
    /// The answer sent, with its credentials redacted; the exact bytes stay sealed in the
    /// idempotency store for replay.
    pub response_body: Vec<u8>,
    /// The SHA-256 (lower-case hex) of the exact bytes sent.
    pub response_sha256: String,
    pub duration_us: i64,
    pub test: bool,
    pub order_id: Option<String>,
    pub instance_id: Option<String>,
}

impl CallbackRecord {
    /// Records the answer sent: its hash, and a copy with the credentials redacted.
    pub fn answered_with(&mut self, sent: &[u8]) {
        self.response_sha256 = crate::protocol::crypto::sha256_hex(sent);
        self.response_body = crate::protocol::reply::redact_credentials(sent).into_owned();
    }

    /// Marks the request as refused before verification, keeping at most
    /// [`REFUSED_BODY_KEPT`] bytes of its body (the verdict says how many there were).
    pub fn refused(&mut self, problem: impl std::fmt::Display) {
        self.verdict = problem.to_string();
        self.bound_unverified();
    }

    /// Bounds what an unauthenticated sender chose: the body and the raw query to
    /// [`REFUSED_BODY_KEPT`] bytes each and the verdict to [`REFUSED_VERDICT_KEPT`], so
    /// that no refused request can be stored larger than about 9 KiB.
    pub fn bound_unverified(&mut self) {
        truncate_chars(&mut self.verdict, REFUSED_VERDICT_KEPT);
        let len = self.raw_body.len();
        if len > REFUSED_BODY_KEPT {
            self.raw_body.truncate(REFUSED_BODY_KEPT);
            self.verdict.push_str(&format!(
                " (body of {len} bytes, first {REFUSED_BODY_KEPT} kept)"
            ));
        }
        let len = self.raw_query.len();
        if truncate_chars(&mut self.raw_query, REFUSED_BODY_KEPT) {
            self.verdict.push_str(&format!(
                " (query of {len} bytes, first {} kept)",
                self.raw_query.len()
            ));
        }
    }
}

/// How much of the verdict of a refused request is kept (it may quote what was sent).
pub const REFUSED_VERDICT_KEPT: usize = 512;

/// Cuts `text` to at most `max` bytes on a character boundary; whether it was cut.
fn truncate_chars(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    true
}

/// An order line koogate has heard of. `Debug` leaves out what 查询订单 answered (it
/// holds the buyer's personal data).
#[derive(Clone, PartialEq, Eq)]
pub struct OrderLineRecord {
    pub order_id: String,
    pub order_line_id: String,
    pub test: bool,
    /// The activity that first named it.
    pub source: String,
    pub created_ms: i64,
    /// `orderInfo` as 查询订单 answered it, as JSON.
    pub order_info: Option<String>,
    pub fetched_ms: Option<i64>,
}

impl std::fmt::Debug for OrderLineRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderLineRecord")
            .field("order_id", &self.order_id)
            .field("order_line_id", &self.order_line_id)
            .field("test", &self.test)
            .field("source", &self.source)
            .field("created_ms", &self.created_ms)
            .field(
                "order_info",
                &self
                    .order_info
                    .as_ref()
                    .map(|info| format!("[{} bytes redacted]", info.len())),
            )
            .field("fetched_ms", &self.fetched_ms)
            .finish()
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting for its `run_at_ms`.
    Pending,
    /// Held back behind an unfinished earlier job of its lane; made pending when that
    /// one is done. Such jobs stay out of the claim's index, so that a lane held up for
    /// days (an endpoint down) costs a claim nothing however many jobs queue behind it.
    Waiting,
    /// Held by a worker until its lease ends.
    Running,
    Done,
    /// Parked after its last attempt, with the reason; never dropped.
    Failed,
}

impl JobState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Waiting,
            Self::Running,
            Self::Done,
            Self::Failed,
        ]
        .into_iter()
        .find(|state| state.as_str() == s)
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Selects the handler.
    pub kind: String,
    /// The handler's input, as JSON.
    pub payload: String,
    /// A second job with the same kind and key is not enqueued.
    pub dedup_key: Option<String>,
    /// What the job is about (an order id), for lookups.
    pub subject: Option<String>,
    /// Jobs of one lane run one at a time, oldest first: a later one waits while an
    /// earlier one is pending, running or parked.
    pub lane: Option<String>,
    pub run_at_ms: i64,
    pub created_ms: i64,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    pub dedup_key: Option<String>,
    pub subject: Option<String>,
    pub state: JobState,
    /// Attempts started so far, the current one included.
    pub attempts: i64,
    pub run_at_ms: i64,
    pub lease_token: Option<String>,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// What a worker asks for when it claims jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Unique per claim; finishing or failing the job needs it.
    pub token: String,
    /// The caller's clock, recorded as the jobs' `updated_ms` only: when the lease ends
    /// is `duration_ms` after the database's now.
    pub now_ms: i64,
    pub duration_ms: i64,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure<'a> {
    pub id: i64,
    pub token: &'a str,
    pub error: &'a str,
    /// How long after the database's now to try again; `None` parks the job as failed.
    pub retry_in_ms: Option<i64>,
    /// The attempt was cut short by a shutdown rather than failing: it is not counted,
    /// so rolling restarts do not use up a job's attempts.
    pub uncounted: bool,
    pub now_ms: i64,
}

/// The stored answer behind an idempotency key that another transaction completed.
fn answered(
    key: &IdempotencyKey,
    result_code: Option<String>,
    instance_id: Option<String>,
    body: Option<Vec<u8>>,
    sealer: &seal::Sealer,
) -> StoreResult<Claim> {
    match (result_code, body) {
        (Some(result_code), Some(body)) => Ok(Claim::Answered(StoredAnswer {
            result_code,
            instance_id,
            body: sealer
                .open(&answer_place(key), &body)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?
                .into_owned(),
        })),
        // Claims are completed or abandoned inside the transaction that made them, so
        // a committed claim without an answer means the table was edited by hand.
        _ => Err(StoreError::Corrupt(format!(
            "idempotency key {}/{} has no answer",
            key.scope, key.key
        ))),
    }
}
