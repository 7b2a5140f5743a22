//! The records of requests refused before their signature was verified, written off the
//! hot path: an anonymous sender's requests go into a bounded buffer that one writer
//! drains in batches, so they never hold the SQLite writer lock or a PostgreSQL
//! connection while a genuine callback waits. When the buffer is full a record is
//! dropped and counted, never waited for.

use super::{CallbackRecord, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc, watch};

/// Records buffered at most (each bounded to about 9 KiB, see
/// [`CallbackRecord::bound_unverified`]).
pub const CAPACITY: usize = 10_000;

/// Records written per statement batch.
const BATCH: usize = 200;

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

#[derive(Default)]
struct Counts {
    /// Buffered or being written.
    pending: AtomicUsize,
    dropped: AtomicU64,
    idle: Notify,
}

/// A log and its writer over `store`, buffering at most `capacity` records.
pub fn channel(store: Arc<dyn Store>, capacity: usize) -> (RefusedLog, RefusedWriter) {
    let (tx, rx) = mpsc::channel(capacity);
    let counts = Arc::new(Counts::default());
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
