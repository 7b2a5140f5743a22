//! Durable background work. A job is a kind and a JSON payload, written through a
//! [`Tx`](crate::store::Tx) in the same transaction as the callback that causes it, so it
//! exists exactly when the callback's effects do. Every replica runs one [`Worker`]: it
//! claims due jobs under a lease (no two replicas hold the same job), dispatches them to
//! the [`Handler`] of their kind, retries failures with exponential backoff and jitter, and
//! parks a job as failed, with its last error, after the last attempt. A replica that dies
//! mid-job leaves a lease that ends; the job is then taken again.
//!
//! Jobs sit beside the routes, above the domain: handlers run its decisions and queue what
//! those leave through [`follow_up`], which the callback pipeline in `app` uses too. The
//! dependency runs one way: `app` wires the worker, nothing here imports `app`.

pub mod event_delivery;
pub mod follow_up;
pub mod license_upload;
pub mod order_fetch;
pub mod usage_push;

use crate::clock::Clock;
use crate::store::{Job, JobFailure, Lease, NewJob, Store, StoreResult, Tx};
use async_trait::async_trait;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

/// How the worker runs and retries (`[jobs]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Attempts before a job is parked as failed.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles with each attempt after it.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// How often to look for due jobs when not woken.
    pub poll_interval: Duration,
    /// How long a claimed job is held.
    pub lease: Duration,
    /// Longest an attempt may run: shorter than the lease, so that no other replica takes
    /// a job while an attempt at it still runs.
    pub attempt_timeout: Duration,
    /// Attempts this replica runs at once, so that one slow endpoint does not hold up
    /// every other job.
    pub concurrency: u32,
}

impl Policy {
    /// The wait after `attempts` failed attempts: `base × 2^(attempts−1)`, capped at the
    /// maximum, then drawn uniformly between half of it and all of it (jitter, so that
    /// jobs failed together by one outage do not all come back at once).
    pub fn backoff(&self, attempts: u32, rng: &mut impl Rng) -> Duration {
        let exponent = attempts.saturating_sub(1);
        let full = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.backoff_max);
        let half = full / 2;
        half + rng.random_range(Duration::ZERO..=full - half)
    }
}

/// Why an attempt failed, and when (if ever) the job should run again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub message: String,
    pub retry: Retry,
}

/// When a failed job runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// After the worker's backoff, until its last attempt.
    Backoff,
    /// After this wait, whatever the count of attempts: the handler keeps its own
    /// schedule (event deliveries retry for days) and parks the job itself.
    After(Duration),
    /// After this wait, without counting the attempt: the job could not be tried (its
    /// endpoint is paused).
    Deferred(Duration),
    /// Never: the job is parked at once.
    Never,
}

impl JobError {
    /// A failure another attempt may not have (a timeout, an outage).
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Backoff,
        }
    }

    /// A failure every attempt would have: the job is parked at once.
    pub fn park(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retry: Retry::Never,
        }
    }

    pub fn retryable(&self) -> bool {
        self.retry != Retry::Never
    }
}

/// What a successful attempt leaves to the worker.
pub enum Outcome {
    /// The job is done; the worker records it.
    Done,
    /// The job's effects, uncommitted: the worker marks the job done in this same
    /// transaction and commits, so effects and completion land together or not at all.
    Commit(Box<dyn Tx>),
    /// As `Commit`, and wakes whoever waits on `notify` once the effects are committed.
    CommitAndNotify(Box<dyn Tx>, Arc<Notify>),
}

/// Runs the jobs of one kind.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn run(&self, job: &Job) -> Result<Outcome, JobError>;

    /// The handler decides when its jobs are retried and parked ([`Retry::After`]), so
    /// the worker's count of attempts does not limit them.
    fn keeps_own_schedule(&self) -> bool {
        false
    }
}

/// A job to enqueue: `payload` is serialised to JSON.
#[expect(
    clippy::expect_used,
    reason = "job payloads are plain data with string keys"
)]
pub fn new_job(
    kind: &str,
    payload: &impl serde::Serialize,
    dedup_key: Option<String>,
    subject: Option<String>,
    now_ms: i64,
) -> NewJob {
    NewJob {
        kind: kind.to_owned(),
        payload: serde_json::to_string(payload).expect("job payloads serialise"),
        dedup_key,
        subject,
        lane: None,
        run_at_ms: now_ms,
        created_ms: now_ms,
    }
}

/// The longest lease or wait handed to the database, which adds it to its own now: a
/// century, so that the sum cannot overflow there and fail the statement.
const LONGEST_WAIT_MS: i64 = 100 * 365 * 86_400_000;

/// Milliseconds of `wait`, at most [`LONGEST_WAIT_MS`].
fn wait_ms(wait: Duration) -> i64 {
    i64::try_from(wait.as_millis())
        .unwrap_or(i64::MAX)
        .min(LONGEST_WAIT_MS)
}

/// Why an attempt did not succeed.
enum Failure {
    Job(JobError),
    /// The worker is stopping: the job is due again at once.
    Interrupted,
}

/// Claims and runs jobs, dispatching on their kind.
pub struct Worker {
    store: Arc<dyn Store>,
    policy: Policy,
    clock: Clock,
    wake: Arc<Notify>,
    handlers: HashMap<String, Arc<dyn Handler>>,
}

/// Aborts a spawned attempt when the worker stops waiting for it (shutdown, timeout, or
/// the worker itself being dropped), so no attempt outlives its lease unobserved.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Worker {
    /// A worker with no handlers; `wake` lets callbacks signal new jobs without waiting
    /// for the next poll.
    pub fn new(store: Arc<dyn Store>, policy: Policy, clock: Clock, wake: Arc<Notify>) -> Self {
        Self {
            store,
            policy,
            clock,
            wake,
            handlers: HashMap::new(),
        }
    }

    /// Registers the handler of a kind.
    pub fn handle(mut self, kind: &str, handler: Arc<dyn Handler>) -> Self {
        self.handlers.insert(kind.to_owned(), handler);
        self
    }

    /// Runs due jobs, `concurrency` at a time, until `stop` changes or its sender is
    /// dropped. An attempt running then is cut short and made due again at once, for this
    /// or another replica.
    ///
    /// Whenever attempts are free it claims as many due jobs as there are free attempts,
    /// in one statement: when a job ends, when a transaction of this replica enqueued one
    /// (`wake`), and at every poll (for what other replicas enqueued, and retries).
    pub async fn run(self, mut stop: watch::Receiver<()>) {
        let slots = usize::try_from(self.policy.concurrency.max(1)).unwrap_or(usize::MAX);
        // Attempts run as tasks of their own: they go on while the next claim waits (on
        // SQLite, for the writer turn an attempt may hold).
        let this = Arc::new(self);
        let mut running = tokio::task::JoinSet::new();
        let mut look = true;
        loop {
            if stop.has_changed().unwrap_or(true) {
                break;
            }
            // Attempts that ended since the last look free their slots now: counted as
            // running until reaped, they would leave one slot for each claim, and a
            // claim a job is as slow as the queue gets.
            while running.try_join_next().is_some() {
                look = true;
            }
            let free = slots.saturating_sub(running.len());
            if look && free > 0 {
                look = false;
                match this.claim(free).await {
                    Ok((lease, jobs)) => {
                        // A full batch may have left more due jobs behind.
                        look = jobs.len() == free;
                        for job in jobs {
                            let worker = this.clone();
                            let (lease, stop) = (lease.clone(), stop.clone());
                            running.spawn(async move { worker.run_job(job, lease, stop).await });
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot claim jobs; trying again later");
                    }
                }
                if look {
                    continue;
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {
                    // The job may have held back the next of its lane.
                    look = true;
                }
                _ = this.wake.notified() => look = true,
                _ = tokio::time::sleep(this.policy.poll_interval) => look = true,
            }
        }
        // The attempts still running see the stop too: wait for them to be recorded.
        while running.join_next().await.is_some() {}
    }

    /// Claims up to `limit` due jobs under one lease token.
    async fn claim(&self, limit: usize) -> StoreResult<(Lease, Vec<Job>)> {
        let lease = Lease {
            token: uuid::Uuid::new_v4().simple().to_string(),
            now_ms: (self.clock)(),
            duration_ms: wait_ms(self.policy.lease),
        };
        let jobs = self
            .store
            .claim_jobs(&lease, u32::try_from(limit).unwrap_or(u32::MAX))
            .await?;
        Ok((lease, jobs))
    }

    /// Runs one claimed job and records its outcome.
    async fn run_job(&self, job: Job, lease: Lease, mut stop: watch::Receiver<()>) {
        let span =
            tracing::info_span!("job", id = job.id, kind = %job.kind, attempt = job.attempts);
        if let Err(error) = self.process(&job, &lease, &mut stop).instrument(span).await {
            tracing::warn!(%error, id = job.id, "cannot record the outcome of a job; its lease will end and it will run again");
        }
    }

    async fn process(
        &self,
        job: &Job,
        lease: &Lease,
        stop: &mut watch::Receiver<()>,
    ) -> StoreResult<()> {
        let max = i64::from(self.policy.max_attempts);
        let counted = self
            .handlers
            .get(&job.kind)
            .is_none_or(|h| !h.keeps_own_schedule());
        let result = if counted && job.attempts > max {
            // Its last attempt was claimed by a replica that died before recording it.
            Err(Failure::Job(JobError::park(format!(
                "abandoned: the replica running attempt {max} stopped before finishing it"
            ))))
        } else {
            self.attempt(job, stop).await
        };
        match result {
            Ok(Outcome::Done) => {
                let recorded = self
                    .store
                    .finish_job(job.id, &lease.token, (self.clock)())
                    .await?;
                self.finished(job, recorded);
            }
            Ok(Outcome::Commit(tx)) => self.commit(job, lease, tx, None).await?,
            Ok(Outcome::CommitAndNotify(tx, notify)) => {
                self.commit(job, lease, tx, Some(notify)).await?
            }
            Err(failure) => self.failed(job, lease, failure).await?,
        }
        Ok(())
    }

    /// Marks the job done inside its effects' transaction and commits both.
    async fn commit(
        &self,
        job: &Job,
        lease: &Lease,
        mut tx: Box<dyn Tx>,
        notify: Option<Arc<Notify>>,
    ) -> StoreResult<()> {
        if !tx.finish_job(job.id, &lease.token, (self.clock)()).await? {
            self.finished(job, false);
            return Ok(());
        }
        tx.commit().await?.wake(&self.wake);
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
        self.finished(job, true);
        Ok(())
    }

    async fn attempt(&self, job: &Job, stop: &mut watch::Receiver<()>) -> Result<Outcome, Failure> {
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            return Err(Failure::Job(JobError::retry(format!(
                "this replica has no handler for jobs of kind {:?}",
                job.kind
            ))));
        };
        let owned = job.clone();
        let mut task = AbortOnDrop(tokio::spawn(async move { handler.run(&owned).await }));
        let timeout = self.policy.attempt_timeout;
        let result = tokio::select! {
            joined = &mut task.0 => match joined {
                Ok(result) => result,
                Err(error) if error.is_panic() => Err(JobError::retry("the handler panicked")),
                Err(_) => Err(JobError::retry("the attempt was cancelled")),
            },
            _ = tokio::time::sleep(timeout) => Err(JobError::retry(format!(
                "the attempt took longer than {} ms and was cut off",
                timeout.as_millis()
            ))),
            stopped = stop.changed() => match stopped {
                Ok(()) => return Err(Failure::Interrupted),
                // Torn down without a stop (see `app::serve`): this task is about to be
                // dropped; recording the attempt now would race the teardown.
                Err(_) => std::future::pending().await,
            },
        };
        result.map_err(Failure::Job)
    }

    fn finished(&self, job: &Job, recorded: bool) {
        if recorded {
            tracing::info!(attempts = job.attempts, "job done");
        } else {
            tracing::warn!("job finished after its lease ended; another replica owns it now");
        }
    }

    async fn failed(&self, job: &Job, lease: &Lease, failure: Failure) -> StoreResult<()> {
        let attempts = u32::try_from(job.attempts).unwrap_or(u32::MAX);
        let now_ms = (self.clock)();
        let (error, interrupted) = match failure {
            Failure::Job(error) => (error, false),
            Failure::Interrupted => (JobError::retry("interrupted: the replica shut down"), true),
        };
        // A wait, not an instant: the database adds it to its own now.
        let after = |wait: Duration| Some(wait_ms(wait));
        let (retry_in_ms, uncounted) = match error.retry {
            _ if interrupted => (Some(0), true),
            Retry::Deferred(wait) => (after(wait), true),
            Retry::After(wait) => (after(wait), false),
            Retry::Backoff if attempts < self.policy.max_attempts => (
                after(self.policy.backoff(attempts, &mut rand::rng())),
                false,
            ),
            Retry::Backoff | Retry::Never => (None, false),
        };
        let recorded = self
            .store
            .fail_job(&JobFailure {
                id: job.id,
                token: &lease.token,
                error: &error.message,
                retry_in_ms,
                uncounted,
                now_ms,
            })
            .await?;
        match (recorded, retry_in_ms) {
            (false, _) => {
                tracing::warn!(error = %error.message, "job failed after its lease ended; another replica owns it now")
            }
            (true, Some(wait)) => tracing::warn!(
                error = %error.message,
                retry_in_ms = wait,
                "job attempt failed; it will be retried"
            ),
            (true, None) => tracing::error!(
                error = %error.message,
                attempts,
                "job parked as failed: `koogate orders show` lists it"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy() -> Policy {
        Policy {
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(60),
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(29),
            concurrency: 1,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let cases = [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (40, 60), (0, 2)];
        for (attempts, full_secs) in cases {
            let full = Duration::from_secs(full_secs);
            for _ in 0..200 {
                let wait = policy().backoff(attempts, &mut rng);
                assert!(
                    wait >= full / 2 && wait <= full,
                    "after {attempts} attempts: {wait:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let waits: std::collections::HashSet<Duration> =
            (0..20).map(|_| policy().backoff(3, &mut rng)).collect();
        assert!(waits.len() > 10, "{waits:?}");
    }
}
