//! PostgreSQL, for production and for several replicas behind a load balancer. The
//! unique keys of the nonce and idempotency tables make concurrent duplicates wait for
//! the first transaction and then see its result (READ COMMITTED); instance changes
//! take a row lock.

use super::seal::Sealer;
use super::{Committed, PoolOptions, Store, StoreResult, Tx};
use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use std::str::FromStr;
use std::sync::Arc;

pub struct PgStore {
    pool: PgPool,
    /// The worker's claims, on connections of their own whose planner runs with
    /// [`super::queue::PG_CLAIM_SETTINGS`]: see there why.
    claims: PgPool,
    sealer: Arc<Sealer>,
}

/// Connections of the claim pool: the worker of a replica makes one claim at a time, and
/// a second lets a command claim beside it.
const CLAIM_CONNECTIONS: u32 = 2;

impl PgStore {
    /// Connects lazily: the server starts (and says so on `/readyz`) while the database
    /// is still down, and every pool use waits at most the acquire timeout.
    /// What is kept encrypted is sealed with `sealer`.
    pub async fn connect(url: &str, options: &PoolOptions, sealer: Sealer) -> StoreResult<Self> {
        let connect = PgConnectOptions::from_str(url)?;
        let pool_with = |max_connections| {
            PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(options.acquire_timeout)
                // No ping before each use: it would be a round trip on every callback. A
                // connection the server dropped fails its next statement instead
                // (answered `000005`) and is not given out again.
                .test_before_acquire(false)
        };
        let claims = pool_with(CLAIM_CONNECTIONS)
            .connect_lazy_with(connect.clone().options(super::queue::PG_CLAIM_SETTINGS));
        Ok(Self {
            pool: pool_with(options.max_connections).connect_lazy_with(connect),
            claims,
            sealer: Arc::new(sealer),
        })
    }

    /// A transaction for a batch of writes outside a callback.
    async fn write_tx(&self) -> StoreResult<Transaction<'static, Postgres>> {
        Ok(self.pool.begin().await?)
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

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(
            PgTx::begin(&self.pool, self.sealer.clone()).await?,
        ))
    }

    async fn begin_callback(&self) -> StoreResult<Box<dyn Tx>> {
        Ok(Box::new(super::deferred::DeferredTx::new(
            self.pool.clone(),
            self.sealer.clone(),
        )))
    }
}

/// Whether a read failed because its connection was dropped by the server while it sat
/// idle in the pool (a restart, an outage, a terminated backend): the pool does not ping
/// before use, so such a connection is found out by its first statement.
pub(super) fn stale(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        // Class 08 (connection exception) and 57P (operator intervention: shutdown,
        // terminated backend).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => false,
    }
}

/// How many tries a statement gets when the connections idle in `pool` may have been
/// dropped by the server: one more than there are. sqlx counts idle connections in an
/// atomic that a taker can decrement before the returner's increment lands, so for a
/// moment it reads as wrapped below zero; the pool's size bounds it.
pub(super) fn tries(pool: &PgPool) -> usize {
    let size = usize::try_from(pool.size()).unwrap_or(usize::MAX);
    pool.num_idle().min(size).saturating_add(1)
}

/// A transaction, the sealer of what it writes encrypted, and whether it enqueued a job.
pub(super) struct PgTx(Transaction<'static, Postgres>, Arc<Sealer>, bool);

impl PgTx {
    /// Begins on a live connection: one the server dropped while it sat idle in the pool
    /// fails its `BEGIN` at once and is replaced (the pool does not ping before use), at
    /// most once per idle connection.
    pub(super) async fn begin(pool: &PgPool, sealer: Arc<Sealer>) -> StoreResult<Self> {
        let mut tries = tries(pool);
        loop {
            match pool.begin().await {
                Err(error) if tries > 1 && stale(&error) => tries -= 1,
                begun => return Ok(Self(begun?, sealer, false)),
            }
        }
    }

    /// The transaction's connection, for statements of its own.
    pub(super) fn connection(&mut self) -> &mut sqlx::PgConnection {
        &mut self.0
    }
}

// The subtraits and the transaction's methods shared with the other backend; the commit
// is this backend's own.
super::backend::shared_impls! {
    store: PgStore,
    writer: [],
    claims: claims,
    tx: PgTx { conn: 0, sealer: 1, enqueued: 2 },
    dialect: pg,
    own: {
    async fn commit(self: Box<Self>) -> StoreResult<Committed> {
        self.0.commit().await?;
        Ok(Committed { enqueued: self.2 })
    }
    }
}
