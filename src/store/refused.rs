//! The records of requests refused before their signature was verified, written off the
//! hot path: an anonymous sender's requests go into a bounded buffer that one writer
//! drains in batches, so they never hold the SQLite writer lock or a PostgreSQL
//! connection while a genuine callback waits. When the buffer is full a record is
//! dropped and counted, never waited for.

use super::{CallbackRecord, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::{Notify, mpsc, watch};

/// Records buffered at most (each bounded to about 9 KiB, see
/// [`CallbackRecord::bound_unverified`]).
pub const CAPACITY: usize = 10_000;

/// Records written per statement batch.
const BATCH: usize = 200;

/// Refused requests logged per second at most. A flood of forged requests would otherwise
/// write two log lines for each; beyond this they are counted, and one line says how many
/// went unlogged (`koogate_refusals_total` counts every one).
pub const LOGGED_PER_SECOND: u64 = 20;

/// Where refused requests are recorded; cheap to clone.
#[derive(Clone)]
pub struct RefusedLog {
    queue: mpsc::Sender<CallbackRecord>,
    counts: Arc<Counts>,
}

/// Drains a [`RefusedLog`] into the store.
pub struct RefusedWriter {
    queue: mpsc::Receiver<CallbackRecord>,
    counts: Arc<Counts>,
    store: Arc<dyn Store>,
}

struct Counts {
    /// Buffered or being written.
    pending: AtomicUsize,
    dropped: AtomicU64,
    idle: Notify,
    log: LogBudget,
}

/// [`LOGGED_PER_SECOND`] log lines a second; the rest counted.
struct LogBudget {
    /// What the seconds count from.
    epoch: Instant,
    /// The second (since `epoch`) whose lines `logged` counts.
    second: AtomicU64,
    logged: AtomicU64,
    /// Refusals not logged since the last line that said how many.
    unlogged: AtomicU64,
}

impl LogBudget {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            logged: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        }
    }

    /// Whether one more line fits this second; the first of a new second also logs how
    /// many did not fit before it.
    fn admit(&self) -> bool {
        let second = self.epoch.elapsed().as_secs();
        if self.second.swap(second, Ordering::AcqRel) != second {
            self.logged.store(0, Ordering::Release);
            let unlogged = self.unlogged.swap(0, Ordering::AcqRel);
            if unlogged > 0 {
                tracing::warn!(
                    unlogged,
                    "refused requests not logged, more than {LOGGED_PER_SECOND} a second: \
                     koogate_refusals_total counts every one"
                );
            }
        }
        if self.logged.fetch_add(1, Ordering::AcqRel) < LOGGED_PER_SECOND {
            true
        } else {
            self.unlogged.fetch_add(1, Ordering::AcqRel);
            false
        }
    }
}

/// A log and its writer over `store`, buffering at most `capacity` records.
pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (RefusedLog, RefusedWriter) {
    let (tx, rx) = mpsc::channel(capacity);
    let counts = Arc::new(Counts {
        pending: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        idle: Notify::new(),
        log: LogBudget::new(),
    });
    (
        RefusedLog {
            queue: tx,
            counts: counts.clone(),
        },
        RefusedWriter {
            queue: rx,
            counts,
            store,
        },
    )
}

impl RefusedLog {
    /// Buffers `record` for writing, or drops and counts it when the buffer is full.
    pub fn record(&self, record: CallbackRecord) {
        self.counts.pending.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(record).is_err() {
            self.counts.pending.fetch_sub(1, Ordering::AcqRel);
            let dropped = self.counts.dropped.fetch_add(1, Ordering::AcqRel) + 1;
            // A flood is logged at 1, 2, 4, 8, … drops, not once per request.
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    "records of refused requests dropped: their buffer is full"
                );
            }
        }
    }

    /// Whether a refused request may be logged: at most [`LOGGED_PER_SECOND`] a second.
    pub fn admit_log(&self) -> bool {
        self.counts.log.admit()
    }

    /// Records dropped so far because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.counts.dropped.load(Ordering::Acquire)
    }

    /// Resolves once every record buffered so far is written (or failed to be).
    pub async fn flushed(&self) {
        loop {
            let idle = self.counts.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.counts.pending.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl RefusedWriter {
    /// Writes buffered records in batches until `stop` changes, then writes what is left.
    pub async fn run(mut self, mut stop: watch::Receiver<()>) {
        loop {
            let first = tokio::select! {
                first = self.queue.recv() => first,
                _ = stop.changed() => None,
            };
            let Some(first) = first else { break };
            self.write(first).await;
        }
        while let Ok(record) = self.queue.try_recv() {
            self.write(record).await;
        }
    }

    /// Writes `first` with whatever else is buffered, up to one batch.
    async fn write(&mut self, first: CallbackRecord) {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match self.queue.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        if let Err(error) = self.store.record_callbacks(&batch).await {
            tracing::error!(%error, records = batch.len(), "could not record refused requests");
        }
        let left = self.counts.pending.fetch_sub(batch.len(), Ordering::AcqRel) - batch.len();
        if left == 0 {
            self.counts.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_at_the_budget_and_counted_beyond_it() {
        let budget = LogBudget::new();
        let admitted = (0..LOGGED_PER_SECOND + 30)
            .filter(|_| budget.admit())
            .count();
        // All within one second of a fresh budget (the loop takes microseconds).
        assert_eq!(admitted as u64, LOGGED_PER_SECOND);
        assert_eq!(budget.unlogged.load(Ordering::Acquire), 30);
    }

    #[test]
    fn a_new_second_opens_a_new_budget() {
        let budget = LogBudget::new();
        while budget.admit() {}
        // As if the next second had begun.
        budget.second.store(u64::MAX, Ordering::Release);
        assert!(budget.admit());
        assert_eq!(
            budget.unlogged.load(Ordering::Acquire),
            0,
            "reported and reset"
        );
    }
}
