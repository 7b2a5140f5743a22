//! What koogate knows of its database's health: down once a connection could not be had
//! (or the schema is not migrated yet), up again once a background probe gets an answer.
//! While it is down, callbacks are answered `000005` at once instead of each waiting out
//! the connection timeout, and `/readyz` answers 503 without asking the database.

use super::{Store, StoreError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Shared by the callbacks, `/readyz` and the probe of one process.
#[derive(Debug)]
pub struct Health {
    down: AtomicBool,
    migrated: AtomicBool,
    /// Wakes the probe when the database goes down.
    went_down: Notify,
}

/// How often a database known to be down is asked again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);

impl Health {
    /// A database believed up; `migrated` is false while the schema is still being set up.
    pub fn new(migrated: bool) -> Arc<Self> {
        Arc::new(Self {
            down: AtomicBool::new(false),
            migrated: AtomicBool::new(migrated),
            went_down: Notify::new(),
        })
    }

    /// Whether callbacks should be answered `000005` without touching the database.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire) || !self.migrated.load(Ordering::Acquire)
    }

    /// Notes what a failed database call says about reachability.
    pub fn observe(&self, error: &StoreError) {
        if unreachable(error) && !self.down.swap(true, Ordering::AcqRel) {
            tracing::error!(%error, "database unreachable: callbacks answer 000005 until it answers again");
            self.went_down.notify_one();
        }
    }

    /// The schema is in place.
    pub fn set_migrated(&self) {
        self.migrated.store(true, Ordering::Release);
    }

    /// Asks a database known to be down again every [`PROBE_INTERVAL`] until it
    /// answers, until `stop` changes.
    pub async fn probe(&self, store: Arc<dyn Store>, mut stop: watch::Receiver<()>) {
        loop {
            if !self.down.load(Ordering::Acquire) {
                tokio::select! {
                    () = self.went_down.notified() => {}
                    _ = stop.changed() => return,
                }
            }
            tokio::select! {
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
                _ = stop.changed() => return,
            }
            let answered = tokio::time::timeout(Duration::from_secs(1), store.ping()).await;
            if matches!(answered, Ok(Ok(()))) && self.down.swap(false, Ordering::AcqRel) {
                tracing::info!("database answers again");
            }
        }
    }
}

/// Whether an error means the database could not be reached at all (as opposed to a
/// query that failed).
pub fn unreachable(error: &StoreError) -> bool {
    let cause = match error {
        StoreError::Database(cause)
        | StoreError::Migrate(sqlx::migrate::MigrateError::Execute(cause)) => cause,
        _ => return false,
    };
    matches!(
        cause,
        sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_connection_failures_mark_the_database_down() {
        let health = Health::new(true);
        health.observe(&StoreError::Corrupt("a bad row".into()));
        health.observe(&StoreError::Database(sqlx::Error::RowNotFound));
        assert!(!health.is_down());
        health.observe(&StoreError::Database(sqlx::Error::PoolTimedOut));
        assert!(health.is_down());
    }

    #[test]
    fn an_unmigrated_database_counts_as_down() {
        let health = Health::new(false);
        assert!(health.is_down());
        health.set_migrated();
        assert!(!health.is_down());
    }
}
