//! The embedded default: one SQLite file in WAL mode. SQLite has one writer at a time,
//! so writers queue in-process on an async lock, first come first served, and each
//! callback transaction is `BEGIN IMMEDIATE`. Left to SQLite's busy handler alone,
//! waiting writers sleep and poll, which showed as a 100 ms+ latency tail under load;
//! the busy timeout still covers other processes (a `koogate migrate`, say).

use super::seal::Sealer;
use super::{Committed, PoolOptions, Store, StoreError, StoreResult, Tx};
use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use std::str::FromStr;
use std::sync::Arc;
use tokio::sync::{Mutex, OwnedMutexGuard};

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Arc<Mutex<()>>,
    sealer: Arc<Sealer>,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file and its folder; what is kept
    /// encrypted is sealed with `sealer`.
    pub async fn connect(url: &str, options: &PoolOptions, sealer: Sealer) -> StoreResult<Self> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a committed answer survives a power cut, not only a process crash.
            .synchronous(SqliteSynchronous::Full)
            // Rewritten and deleted rows are zeroed, not left in free space: the start-up
            // pass that encrypts an older release's plain text, and the purges of buyer
            // data and old records, must not leave what they replaced readable in the file.
            .pragma("secure_delete", "on")
            .busy_timeout(options.acquire_timeout);
        let file = connect.get_filename().to_owned();
        if let Some(folder) = file.parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(|e| {
                StoreError::SqliteFile(format!(
                    "cannot create the folder {} of the database file: {e}",
                    folder.display()
                ))
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| {
                StoreError::SqliteFile(format!(
                    "cannot open the database file {}: {e}",
                    file.display()
                ))
            })?;
        Ok(Self {
            pool,
            writer: Arc::new(Mutex::new(())),
            sealer: Arc::new(sealer),
        })
    }

    /// A transaction for a batch of writes outside a callback, `IMMEDIATE` like every
    /// write transaction here: it takes the write lock as it begins. The caller holds
    /// the writers' turn.
    async fn write_tx(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn migrate(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await?;
        self.seal_at_rest(chrono::Utc::now().timestamp_millis())
            .await?;
        Ok(())
    }

    async fn seal_at_rest(&self, now_ms: i64) -> StoreResult<super::Sealed> {
        let sealed =
            super::at_rest::lite::seal_all(&self.pool, Some(&*self.writer), &self.sealer, now_ms)
                .await?;
        if sealed.ran {
            // The zeroed pages reach the database file at the next checkpoint: take it
            // now, so the replaced plain text is gone from the file, not only from the WAL.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(sealed)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn begin_callback(&self) -> StoreResult<Box<dyn Tx>> {
        // One writer at a time already: an ordinary transaction is as short as it gets.
        self.begin().await
    }

    async fn begin(&self) -> StoreResult<Box<dyn Tx>> {
        let turn = self.writer.clone().lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx {
            tx,
            sealer: self.sealer.clone(),
            enqueued: false,
            _turn: turn,
        }))
    }
}

/// A write transaction and this process's turn to write. Fields drop in order: the
/// transaction rolls back (when not committed) before the turn passes on.
struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    sealer: Arc<Sealer>,
    /// Whether it enqueued a job.
    enqueued: bool,
    _turn: OwnedMutexGuard<()>,
}

// The subtraits and the transaction's methods shared with the other backend; the commit
// is this backend's own.
super::backend::shared_impls! {
    store: SqliteStore,
    writer: [writer],
    // One writer at a time: a claim has no plan to go wrong and no connection of its own.
    claims: pool,
    tx: SqliteTx { conn: tx, sealer: sealer, enqueued: enqueued },
    dialect: lite,
    own: {
    async fn commit(self: Box<Self>) -> StoreResult<Committed> {
        self.tx.commit().await?;
        Ok(Committed {
            enqueued: self.enqueued,
        })
    }
    }
}
