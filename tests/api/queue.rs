//! The job queue's conformance suite, the same expectations of every `Queue` method on
//! SQLite and PostgreSQL; and, on PostgreSQL, two replicas draining one queue in batches,
//! and what a claim costs over a long history of finished jobs.
//!
//! Whether a job is due and when a lease ends are the database's call, on its clock,
//! which is the real one here: due times are written relative to the real now, and the
//! caller's `now_ms` in a lease is set far off at times to show that it decides nothing.

use crate::helpers::open_store as open;
use crate::helpers::{Backend, Database};
use crate::on_both_backends;
use koogate::store::{self, Job, JobFailure, JobState, Lease, NewJob, Store};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

on_both_backends!(
    a_batch_takes_due_jobs_up_to_its_limit_and_one_per_lane,
    a_job_behind_its_lane_waits_until_the_one_before_is_done,
    a_waiting_job_whose_release_was_lost_is_released_by_the_sweep,
    a_claimed_job_is_not_claimed_again_while_its_lease_holds,
    an_ended_lease_is_claimed_again_and_its_old_holder_has_lost_the_job,
    a_failed_attempt_comes_due_after_its_wait_or_is_parked_until_requeued,
    jobs_are_read_by_subject_key_and_id_and_finished_ones_purged,
    a_commit_says_whether_it_enqueued,
    a_commit_that_enqueued_wakes_the_worker_before_its_poll,
);

/// Reports each job it runs.
struct Reporting(tokio::sync::mpsc::UnboundedSender<i64>);

#[async_trait::async_trait]
impl koogate::jobs::Handler for Reporting {
    async fn run(&self, job: &Job) -> Result<koogate::jobs::Outcome, koogate::jobs::JobError> {
        let _ = self.0.send(job.id);
        Ok(koogate::jobs::Outcome::Done)
    }
}

/// The worker polls once an hour here: a job it runs within seconds was woken by the
/// commit that enqueued it.
async fn a_commit_that_enqueued_wakes_the_worker_before_its_poll(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let wake = Arc::new(tokio::sync::Notify::new());
    let (ran, mut runs) = tokio::sync::mpsc::unbounded_channel();
    let policy = koogate::jobs::Policy {
        max_attempts: 3,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(1),
        poll_interval: Duration::from_secs(3_600),
        lease: Duration::from_secs(60),
        attempt_timeout: Duration::from_secs(30),
        concurrency: 2,
    };
    let worker = koogate::jobs::Worker::new(
        store.clone(),
        policy,
        koogate::clock::system_clock(),
        wake.clone(),
    )
    .handle("test.job", Arc::new(Reporting(ran)));
    let (stop, stopped) = tokio::sync::watch::channel(());
    let running = tokio::spawn(worker.run(stopped));
    // Its first look, at start, finds nothing; then it sleeps until woken or the hour ends.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut tx = store.begin().await.unwrap();
    tx.enqueue_job(&job("woken", None, now())).await.unwrap();
    let committed = tx.commit().await.unwrap();
    assert!(committed.enqueued);
    committed.wake(&wake);
    let id = tokio::time::timeout(Duration::from_secs(20), runs.recv())
        .await
        .expect("the job ran long before the next poll")
        .unwrap();
    let done = crate::helpers::eventually("the job recorded as done", || async {
        let job = store.job(id).await.unwrap().unwrap();
        (job.state == JobState::Done).then_some(job)
    })
    .await;
    assert_eq!(done.dedup_key.as_deref(), Some("woken"));

    stop.send(()).unwrap();
    running.await.unwrap();
}

const HOUR: i64 = 3_600_000;

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn job(key: &str, lane: Option<&str>, run_at_ms: i64) -> NewJob {
    NewJob {
        kind: "test.job".into(),
        payload: "{}".into(),
        dedup_key: Some(key.into()),
        subject: Some(format!("subject-{}", key.len())),
        lane: lane.map(str::to_owned),
        run_at_ms,
        created_ms: run_at_ms,
    }
}

async fn enqueue(store: &Arc<dyn Store>, jobs: &[NewJob]) {
    let mut tx = store.begin().await.unwrap();
    for j in jobs {
        assert!(tx.enqueue_job(j).await.unwrap(), "{j:?}");
    }
    tx.commit().await.unwrap();
}

fn lease(token: &str, duration_ms: i64) -> Lease {
    Lease {
        token: token.into(),
        now_ms: now(),
        duration_ms,
    }
}

fn keys(jobs: &[Job]) -> Vec<&str> {
    jobs.iter().filter_map(|j| j.dedup_key.as_deref()).collect()
}

async fn a_batch_takes_due_jobs_up_to_its_limit_and_one_per_lane(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let due = now() - 60_000;
    enqueue(
        &store,
        &[
            job("a1", Some("a"), due),
            job("a2", Some("a"), due),
            job("b1", Some("b"), due + 1),
            job("n1", None, due + 2),
            job("n2", None, due + 3),
            job("n3", None, due + 4),
            job("later", None, now() + HOUR),
        ],
    )
    .await;

    let first = store.claim_jobs(&lease("t1", 60_000), 3).await.unwrap();
    assert_eq!(
        keys(&first),
        ["a1", "b1", "n1"],
        "due longest first, a2 waits"
    );
    let before = now();
    for j in &first {
        assert_eq!((j.state, j.attempts), (JobState::Running, 1), "{j:?}");
        assert_eq!(j.lease_token.as_deref(), Some("t1"));
        // The database's now plus the lease: close to the real now plus the lease.
        let until = j.lease_until_ms.unwrap();
        assert!(
            (until - (before + 60_000)).abs() < 30_000,
            "{until} vs {before}"
        );
    }
    let second = store.claim_jobs(&lease("t2", 60_000), 10).await.unwrap();
    assert_eq!(
        keys(&second),
        ["n2", "n3"],
        "a2 waits for a1, `later` is not due"
    );
    assert!(
        store
            .claim_jobs(&lease("t3", 60_000), 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert!(store.finish_job(first[0].id, "t1", now()).await.unwrap());
    let third = store.claim_jobs(&lease("t4", 60_000), 10).await.unwrap();
    assert_eq!(keys(&third), ["a2"], "a1 done lets a2 through");
}

fn state_of(jobs: &[Job], key: &str) -> JobState {
    jobs.iter()
        .find(|j| j.dedup_key.as_deref() == Some(key))
        .unwrap_or_else(|| panic!("no job {key}"))
        .state
}

async fn states(store: &Arc<dyn Store>) -> Vec<Job> {
    let mut all = Vec::new();
    for n in 1..=3 {
        all.extend(store.jobs_about(&format!("subject-{n}")).await.unwrap());
    }
    all
}

/// Lane `a`: a1 alone, then a2 and a3 together in a later transaction.
async fn lane_of_three(store: &Arc<dyn Store>, due: i64) {
    enqueue(store, &[job("a1", Some("a"), due)]).await;
    enqueue(
        store,
        &[job("a2", Some("a"), due), job("a3", Some("a"), due)],
    )
    .await;
}

/// A job enqueued behind an unfinished one of its lane is `waiting`, outside the due
/// jobs, until the one before it is done — whether the two came in one transaction, in
/// one callback's statement, or apart; a retry of the one before keeps it waiting.
async fn a_job_behind_its_lane_waits_until_the_one_before_is_done(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let due = now() - 60_000;
    lane_of_three(&store, due).await;
    // A callback's transaction: on PostgreSQL its jobs go out in one statement.
    let mut tx = store.begin_callback().await.unwrap();
    for j in [
        job("b1", Some("b"), due),
        job("b2", Some("b"), due),
        job("n1", None, due),
    ] {
        assert!(tx.enqueue_job(&j).await.unwrap(), "{j:?}");
    }
    tx.commit().await.unwrap();
    let all = states(&store).await;
    for (key, state) in [
        ("a1", JobState::Pending),
        ("a2", JobState::Waiting),
        ("a3", JobState::Waiting),
        ("b1", JobState::Pending),
        ("b2", JobState::Waiting),
        ("n1", JobState::Pending),
    ] {
        assert_eq!(state_of(&all, key), state, "{key}");
    }

    let first = store.claim_jobs(&lease("t1", 60_000), 10).await.unwrap();
    assert_eq!(keys(&first), ["a1", "b1", "n1"]);
    // a1 fails and is due again at once: a2 still waits behind it.
    let a1 = first[0].id;
    assert!(
        store
            .fail_job(&JobFailure {
                id: a1,
                token: "t1",
                error: "try again",
                retry_in_ms: Some(0),
                uncounted: false,
                now_ms: now(),
            })
            .await
            .unwrap()
    );
    assert_eq!(state_of(&states(&store).await, "a2"), JobState::Waiting);
    assert!(store.finish_job(first[1].id, "t1", now()).await.unwrap());
    assert!(store.finish_job(first[2].id, "t1", now()).await.unwrap());
    let all = states(&store).await;
    assert_eq!(
        state_of(&all, "b2"),
        JobState::Pending,
        "b1 done lets b2 through"
    );

    let second = store.claim_jobs(&lease("t2", 60_000), 10).await.unwrap();
    assert_eq!(keys(&second), ["a1", "b2"]);
    assert!(store.finish_job(second[0].id, "t2", now()).await.unwrap());
    let all = states(&store).await;
    assert_eq!(state_of(&all, "a2"), JobState::Pending, "the next one only");
    assert_eq!(state_of(&all, "a3"), JobState::Waiting);
    let third = store.claim_jobs(&lease("t3", 60_000), 10).await.unwrap();
    assert_eq!(keys(&third), ["a2"]);
    // A finish whose lease was lost releases nothing.
    assert!(
        !store
            .finish_job(third[0].id, "t-lost", now())
            .await
            .unwrap()
    );
    assert_eq!(state_of(&states(&store).await, "a3"), JobState::Waiting);
    assert_eq!(
        store.release_waiting(now()).await.unwrap(),
        0,
        "a2 still runs"
    );
}

/// Runs one statement of the test's own.
async fn execute(db: &Database, backend: Backend, sql: &str) {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
    }
}

/// A job left waiting although nothing before it in its lane is unfinished (its release
/// was lost to a crash between the finish's two statements) is made pending by the
/// sweep; one still behind an unfinished job is not.
async fn a_waiting_job_whose_release_was_lost_is_released_by_the_sweep(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let due = now() - 60_000;
    lane_of_three(&store, due).await;
    let a1 = store
        .claim_job(&lease("t1", 60_000))
        .await
        .unwrap()
        .unwrap();
    // The finish's first statement alone.
    execute(
        &db,
        backend,
        &format!("UPDATE jobs SET state = 'done' WHERE id = {}", a1.id),
    )
    .await;
    assert!(
        store
            .claim_jobs(&lease("t2", 60_000), 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.release_waiting(now()).await.unwrap(), 1);
    let all = states(&store).await;
    assert_eq!(state_of(&all, "a2"), JobState::Pending);
    assert_eq!(state_of(&all, "a3"), JobState::Waiting, "a2 is unfinished");
    let next = store.claim_jobs(&lease("t3", 60_000), 10).await.unwrap();
    assert_eq!(keys(&next), ["a2"]);
}

/// On PostgreSQL a job can be enqueued behind one that finishes before the enqueue
/// commits. The enqueue holds that one until it commits, so the finish waits for it and
/// then releases the new job at once, not at the next sweep.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_enqueued_while_the_one_before_finishes_is_released_by_that_finish() {
    let db = Database::fresh(Backend::Postgres).await;
    let store = open(&db).await;
    let due = now() - 60_000;
    enqueue(&store, &[job("a1", Some("a"), due)]).await;
    let a1 = store
        .claim_job(&lease("t1", 60_000))
        .await
        .unwrap()
        .unwrap();
    let mut tx = store.begin().await.unwrap();
    assert!(tx.enqueue_job(&job("a2", Some("a"), due)).await.unwrap());
    let finishing = {
        let store = store.clone();
        tokio::spawn(async move { store.finish_job(a1.id, "t1", now()).await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!finishing.is_finished(), "the finish waits for the enqueue");
    tx.commit().await.unwrap();
    assert!(finishing.await.unwrap());
    assert_eq!(state_of(&states(&store).await, "a2"), JobState::Pending);
    let next = store.claim_jobs(&lease("t2", 60_000), 10).await.unwrap();
    assert_eq!(keys(&next), ["a2"]);
    assert_eq!(store.release_waiting(now()).await.unwrap(), 0);
}

async fn a_claimed_job_is_not_claimed_again_while_its_lease_holds(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    enqueue(&store, &[job("j", None, now() - 1)]).await;
    let held = store
        .claim_job(&lease("t1", 60_000))
        .await
        .unwrap()
        .unwrap();
    // A replica whose clock runs a day ahead does not see the lease as ended.
    let skewed = Lease {
        now_ms: now() + 24 * HOUR,
        ..lease("t2", 60_000)
    };
    assert!(store.claim_job(&skewed).await.unwrap().is_none());
    assert!(store.claim_jobs(&skewed, 10).await.unwrap().is_empty());
    assert!(store.finish_job(held.id, "t1", now()).await.unwrap());
    assert_eq!(
        store.job(held.id).await.unwrap().unwrap().state,
        JobState::Done
    );
    assert!(store.claim_job(&skewed).await.unwrap().is_none(), "done");
}

async fn an_ended_lease_is_claimed_again_and_its_old_holder_has_lost_the_job(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    enqueue(&store, &[job("j", None, now() - 1)]).await;
    let first = store.claim_job(&lease("t1", 20)).await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A replica whose clock runs an hour behind still sees the lease as ended.
    let behind = Lease {
        now_ms: now() - HOUR,
        ..lease("t2", 60_000)
    };
    let again = store.claim_job(&behind).await.unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (first.id, 2));
    assert!(!store.finish_job(first.id, "t1", now()).await.unwrap());
    let lost = JobFailure {
        id: first.id,
        token: "t1",
        error: "too late",
        retry_in_ms: Some(0),
        uncounted: false,
        now_ms: now(),
    };
    assert!(!store.fail_job(&lost).await.unwrap());
    let job = store.job(first.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.lease_token.as_deref(), job.last_error),
        (JobState::Running, Some("t2"), None)
    );
    assert!(store.finish_job(first.id, "t2", now()).await.unwrap());
}

async fn a_failed_attempt_comes_due_after_its_wait_or_is_parked_until_requeued(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    enqueue(
        &store,
        &[job("j1", None, now() - 3), job("j2", None, now() - 2)],
    )
    .await;
    let claimed = store.claim_jobs(&lease("t1", 60_000), 2).await.unwrap();
    let (j1, j2) = (&claimed[0], &claimed[1]);
    let failure = |id, retry_in_ms, uncounted| JobFailure {
        id,
        token: "t1",
        error: "down",
        retry_in_ms,
        uncounted,
        now_ms: 5,
    };
    let before = now();
    assert!(
        store
            .fail_job(&failure(j1.id, Some(HOUR), false))
            .await
            .unwrap()
    );
    let waiting = store.job(j1.id).await.unwrap().unwrap();
    assert_eq!(waiting.state, JobState::Pending);
    assert!(
        (waiting.run_at_ms - (before + HOUR)).abs() < 30_000,
        "an hour after the database's now, not the caller's: {}",
        waiting.run_at_ms
    );
    assert_eq!(waiting.last_error.as_deref(), Some("down"));
    // Due again at once, and not counted (a stop cut it short).
    assert!(
        store
            .fail_job(&failure(j2.id, Some(0), true))
            .await
            .unwrap()
    );
    let retried = store.claim_jobs(&lease("t1", 60_000), 10).await.unwrap();
    assert_eq!(keys(&retried), ["j2"], "j1 waits its hour");
    assert_eq!(
        retried[0].attempts, 1,
        "the cut-short attempt was not counted"
    );

    // Parked: not due, listed, and back in the queue when requeued, with fresh attempts.
    assert!(store.fail_job(&failure(j2.id, None, false)).await.unwrap());
    assert!(
        store
            .claim_job(&lease("t2", 60_000))
            .await
            .unwrap()
            .is_none()
    );
    let parked = store.failed_jobs(10).await.unwrap();
    assert_eq!(keys(&parked), ["j2"]);
    assert!(store.requeue_job(j2.id, 7).await.unwrap());
    assert!(
        !store.requeue_job(j2.id, 7).await.unwrap(),
        "not parked now"
    );
    assert!(!store.requeue_job(j1.id, 7).await.unwrap(), "never parked");
    let back = store
        .claim_job(&lease("t3", 60_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((back.id, back.attempts), (j2.id, 1));

    // Every parked job back in one statement, of a kind or of all.
    assert!(
        store
            .fail_job(&JobFailure {
                token: "t3",
                ..failure(j2.id, None, false)
            })
            .await
            .unwrap()
    );
    assert_eq!(
        store.requeue_failed(Some("other.kind"), 8).await.unwrap(),
        0
    );
    assert_eq!(store.requeue_failed(Some("test.job"), 8).await.unwrap(), 1);
    assert_eq!(store.requeue_failed(None, 8).await.unwrap(), 0);
    let job = store.job(j2.id).await.unwrap().unwrap();
    assert_eq!(
        (job.state, job.attempts, job.updated_ms),
        (JobState::Pending, 0, 8)
    );
}

async fn jobs_are_read_by_subject_key_and_id_and_finished_ones_purged(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let due = now() - 10;
    enqueue(
        &store,
        &[
            job("k1", None, due),
            job("k2", None, due),
            job("k333", None, due),
        ],
    )
    .await;
    let about = store.jobs_about("subject-2").await.unwrap();
    assert_eq!(keys(&about), ["k1", "k2"], "oldest first");
    let k2 = store.job_by_key("test.job", "k2").await.unwrap().unwrap();
    assert_eq!(store.job(k2.id).await.unwrap().unwrap(), k2);
    assert!(
        store
            .job_by_key("other.kind", "k2")
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.job(k2.id + 100).await.unwrap().is_none());

    let claimed = store.claim_jobs(&lease("t", 60_000), 3).await.unwrap();
    assert_eq!(claimed.len(), 3);
    for (j, finished_ms) in claimed.iter().zip([100, 200, 300]) {
        assert!(store.finish_job(j.id, "t", finished_ms).await.unwrap());
    }
    assert_eq!(store.purge_jobs(250, 1).await.unwrap(), 1, "one per batch");
    assert_eq!(store.purge_jobs(250, 10).await.unwrap(), 1);
    assert_eq!(store.purge_jobs(250, 10).await.unwrap(), 0);
    assert!(
        store
            .job_by_key("test.job", "k333")
            .await
            .unwrap()
            .is_some()
    );
}

async fn a_commit_says_whether_it_enqueued(backend: Backend) {
    let db = Database::fresh(backend).await;
    let store = open(&db).await;
    let tx = store.begin().await.unwrap();
    assert!(!tx.commit().await.unwrap().enqueued);
    let mut tx = store.begin().await.unwrap();
    assert!(tx.enqueue_job(&job("once", None, now())).await.unwrap());
    assert!(tx.commit().await.unwrap().enqueued);
    let mut tx = store.begin().await.unwrap();
    assert!(!tx.enqueue_job(&job("once", None, now())).await.unwrap());
    assert!(
        !tx.commit().await.unwrap().enqueued,
        "a duplicate enqueues nothing"
    );
}

/// SQLite reads the same two partial indexes in order, over a queue with a history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_claim_reads_the_partial_indexes_on_sqlite() {
    let db = Database::fresh(Backend::Sqlite).await;
    let store = open(&db).await;
    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)          INSERT INTO jobs (kind, payload, dedup_key, lane, state, attempts, run_at_ms, created_ms,          updated_ms) SELECT 'bulk', '{}', 'j' || n, CASE WHEN n % 10 = 0 THEN 'lane-' || (n % 100) END,          CASE WHEN n % 10 = 1 THEN 'pending' ELSE 'done' END, 0, $1 - n, $1 - n, $1 - n FROM g",
    )
    .bind(now())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&pool).await.unwrap();
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(&format!("EXPLAIN QUERY PLAN {}", store::SQLITE_CLAIM))
            .bind(16_i64)
            .bind("t")
            .bind(now())
            .bind(60_000_i64)
            .fetch_all(&pool)
            .await
            .unwrap();
    let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
    println!("{}", plan.join("\n"));
    for index in ["jobs_pending_due", "jobs_running_lease"] {
        assert!(
            plan.iter()
                .any(|d| d.contains(&format!("USING INDEX {index}"))),
            "{plan:#?}"
        );
    }
    assert!(
        !plan
            .iter()
            .any(|d| d.starts_with("SCAN j ") || d == "SCAN j"),
        "{plan:#?}"
    );
    assert!(
        plan.iter()
            .filter(|d| d.starts_with("SEARCH e "))
            .all(|d| d.contains("USING INDEX jobs_lane (lane=? AND id<?)")),
        "each lane probe is one range of jobs_lane: {plan:#?}"
    );
    assert_eq!(
        store
            .claim_jobs(&lease("t", 60_000), 16)
            .await
            .unwrap()
            .len(),
        16
    );
}

/// Inserts `count` jobs in one statement: `state`, due `age_ms` to `age_ms + count` ms
/// ago, one in `lane_every` in one of 100 lanes.
async fn bulk_insert(
    pool: &sqlx::PgPool,
    prefix: &str,
    state: &str,
    count: i64,
    age_ms: i64,
    lane_every: i64,
) {
    sqlx::query(
        "INSERT INTO jobs (kind, payload, dedup_key, subject, lane, state, attempts, run_at_ms, \
         created_ms, updated_ms) \
         SELECT 'bulk', '{}', $1 || g, NULL, \
         CASE WHEN g % $2 = 0 THEN $1 || 'lane-' || (g % 100) END, $3, 0, $4 - $5 - g, $4 - $5 - g, \
         $4 - $5 - g FROM generate_series(1, $6::bigint) g",
    )
    .bind(prefix)
    .bind(lane_every)
    .bind(state)
    .bind(now())
    .bind(age_ms)
    .bind(count)
    .execute(pool)
    .await
    .unwrap();
}

/// Two replicas (two stores, two pools) on one database, each with four workers claiming
/// in batches of 16, drain 3,000 jobs without any job being taken twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_claiming_in_batches_take_no_job_twice() {
    let db = Database::fresh(Backend::Postgres).await;
    let replicas = [open(&db).await, open(&db).await];
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    bulk_insert(&pool, "drain-", "pending", 3_000, 1_000, 7).await;

    let claimed = Arc::new(std::sync::Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut workers = Vec::new();
    for (r, store) in replicas.iter().enumerate() {
        for w in 0..4 {
            let (store, claimed) = (store.clone(), claimed.clone());
            workers.push(tokio::spawn(async move {
                let mut idle = 0;
                while idle < 20 && Instant::now() < deadline {
                    let token = format!("r{r}w{w}-{}", uuid::Uuid::new_v4().simple());
                    let batch = store.claim_jobs(&lease(&token, 60_000), 16).await.unwrap();
                    if batch.is_empty() {
                        // Lane jobs wait for the one before them, held by another worker.
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle = 0;
                    for j in &batch {
                        assert!(store.finish_job(j.id, &token, now()).await.unwrap());
                    }
                    claimed.lock().unwrap().extend(batch.iter().map(|j| j.id));
                }
            }));
        }
    }
    for w in workers {
        w.await.unwrap();
    }
    let claimed = claimed.lock().unwrap().clone();
    let distinct: HashSet<i64> = claimed.iter().copied().collect();
    assert_eq!(distinct.len(), claimed.len(), "a job was taken twice");
    assert_eq!(claimed.len(), 3_000);
    let (not_once,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE state <> 'done' OR attempts <> 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(not_once, 0);
}

/// A pool whose connections plan as the store's claim connections do.
async fn claim_pool(url: &str) -> sqlx::PgPool {
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    sqlx::PgPool::connect_with(options.options(store::PG_CLAIM_SETTINGS))
        .await
        .unwrap()
}

/// Prepares the claim as `explained` on `conn`, planned as the worker's prepared claim is.
async fn prepare_claim(conn: &mut sqlx::PgConnection) {
    sqlx::raw_sql(&format!(
        "PREPARE explained (bigint, text, bigint, bigint) AS {}",
        store::PG_CLAIM
    ))
    .execute(conn)
    .await
    .unwrap();
}

/// The plan of one claim of `limit` jobs by the prepared `explained`, run with EXPLAIN
/// ANALYZE and rolled back.
async fn explain_prepared(conn: &mut sqlx::PgConnection, limit: i64, token: &str) -> String {
    let mut tx = sqlx::Connection::begin(conn).await.unwrap();
    let lines: Vec<(String,)> = sqlx::query_as(&format!(
        "EXPLAIN (ANALYZE, BUFFERS) EXECUTE explained ({limit}, '{token}', {}, 60000)",
        now()
    ))
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    lines
        .into_iter()
        .map(|(l,)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The median "Execution Time" of `runs` claims of `limit` jobs, read with EXPLAIN
/// ANALYZE of the prepared claim, and the plan of the last one. Each claim is rolled
/// back, so that every one meets the same queue.
async fn explain_claims(pool: &sqlx::PgPool, limit: i64, runs: usize) -> (f64, String) {
    let mut conn = pool.acquire().await.unwrap();
    prepare_claim(&mut conn).await;
    let mut times = Vec::new();
    let mut plan = String::new();
    for n in 0..runs {
        plan = explain_prepared(&mut conn, limit, &format!("explain-{limit}-{n}")).await;
        let time = plan
            .lines()
            .find_map(|l| l.trim().strip_prefix("Execution Time: "))
            .and_then(|t| t.trim_end_matches(" ms").parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no execution time in:\n{plan}"));
        times.push(time);
    }
    sqlx::raw_sql("DEALLOCATE explained")
        .execute(&mut *conn)
        .await
        .unwrap();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], plan)
}

/// Every sort in the plan sorts at most `most` rows: never every due row.
fn sorts_at_most(plan: &str, most: u64) -> bool {
    plan.lines().filter(|l| l.contains("Sort  (")).all(|l| {
        l.split("actual time=")
            .nth(1)
            .and_then(|a| a.split("rows=").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|r| r.parse::<u64>().ok())
            .is_some_and(|rows| rows <= most)
    })
}

/// A new database's jobs table has no statistics until autovacuum first analyzes it
/// (here it never does), and the claim's plan must not depend on them: with 3,000 due
/// jobs the planner would otherwise take them for a handful and sort every one of them.
/// Planned as the store's claim connections plan it, the claim still walks the due index
/// in order and stops after its limit.
#[tokio::test]
async fn a_claim_walks_the_due_index_before_the_table_has_statistics() {
    let db = Database::fresh(Backend::Postgres).await;
    let _store = open(&db).await;
    let pool = claim_pool(&db.url).await;
    sqlx::query("ALTER TABLE jobs SET (autovacuum_enabled = false)")
        .execute(&pool)
        .await
        .unwrap();
    bulk_insert(&pool, "new-", "pending", 3_000, 1_000, 7).await;
    for limit in [1_i64, 16] {
        let (_, plan) = explain_claims(&pool, limit, 1).await;
        assert!(plan.contains("Index Scan using jobs_pending_due"), "{plan}");
        assert!(
            sorts_at_most(&plan, u64::try_from(2 * limit).unwrap()),
            "{plan}"
        );
    }
    let (analyzed,): (bool,) = sqlx::query_as(
        "SELECT last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL \
         FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(!analyzed, "the table was analyzed: the test proved nothing");
}

/// The worker's claim is planned once per connection: planned afresh it cost more than it
/// took to run. Without `force_generic_plan` in the claim settings, PostgreSQL plans the
/// first five executions for their parameters, and often every later one.
#[tokio::test]
async fn a_claim_connection_plans_the_claim_once() {
    let db = Database::fresh(Backend::Postgres).await;
    let _store = open(&db).await;
    let pool = claim_pool(&db.url).await;
    bulk_insert(&pool, "due-", "pending", 2_000, 1_000, 10).await;
    let mut conn = pool.acquire().await.unwrap();
    for n in 0..8 {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        let claimed = sqlx::query(store::PG_CLAIM)
            .bind(4_i64)
            .bind(format!("plan-{n}"))
            .bind(now())
            .bind(60_000_i64)
            .fetch_all(&mut *tx)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 4);
        tx.rollback().await.unwrap();
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
    )
    .bind(store::PG_CLAIM)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!((generic, custom), (8, 0));
}

/// Planned once, the claim may be planned on an empty table, and the plan must still
/// suit the table once it holds a history and a queue: the due index walked in order,
/// each lane probed in `jobs_lane`, the batch taken through the primary key, nothing
/// scanned whole. (Planned on an emptied table whose statistics describe jobs without
/// lanes, the update used to join every row, and the lane probe to step through the
/// primary key over every older job.)
#[tokio::test]
async fn a_claim_planned_on_an_empty_table_still_walks_the_indexes() {
    let db = Database::fresh(Backend::Postgres).await;
    let _store = open(&db).await;
    let pool = claim_pool(&db.url).await;
    // Emptied, with the statistics of what it held (jobs without lanes) left behind.
    bulk_insert(&pool, "past-", "done", 20_000, HOUR, i64::MAX).await;
    for statement in ["ANALYZE jobs", "TRUNCATE jobs", "VACUUM ANALYZE jobs"] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let mut conn = pool.acquire().await.unwrap();
    prepare_claim(&mut conn).await;
    let empty = explain_prepared(&mut conn, 16, "empty").await;
    assert!(empty.contains("rows=0 loops=1"), "{empty}");

    bulk_insert(&pool, "history-", "done", 50_000, HOUR, 3).await;
    bulk_insert(&pool, "due-", "pending", 5_000, 1_000, 10).await;
    let plan = explain_prepared(&mut conn, 16, "full").await;
    assert!(!plan.contains("Seq Scan"), "{plan}");
    assert!(plan.contains("Index Scan using jobs_pending_due"), "{plan}");
    assert!(plan.contains("Index Cond: (id = ANY"), "{plan}");
    let probes: Vec<&str> = plan.lines().filter(|l| l.contains(" on jobs e")).collect();
    assert!(!probes.is_empty(), "{plan}");
    assert!(
        probes.iter().all(|l| l.contains("using jobs_lane")),
        "{plan}"
    );
    assert!(sorts_at_most(&plan, 32), "{plan}");
    let claimed = plan
        .lines()
        .next()
        .and_then(|l| l.split("rows=").last())
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_owned);
    assert_eq!(claimed.as_deref(), Some("16"), "{plan}");
}

/// The queue: 20,000 due jobs on top of a history of 200,000 finished ones. A
/// claim of 1 or of 16 reads the two partial indexes in order and stops; no sequential
/// scan, no sort of every due row. The measured times are printed (`--nocapture`); the
/// bound asserted is generous, for a busy machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_stays_fast_over_a_long_history() {
    let db = Database::fresh(Backend::Postgres).await;
    let store = open(&db).await;
    let pool = claim_pool(&db.url).await;
    let started = Instant::now();
    bulk_insert(&pool, "history-", "done", 200_000, HOUR, 3).await;
    bulk_insert(&pool, "due-", "pending", 20_000, 1_000, 10).await;
    // Some running jobs whose lease holds, and a few whose lease has ended.
    for (ms, count) in [(HOUR, 50), (-HOUR, 5)] {
        sqlx::query(
            "INSERT INTO jobs (kind, payload, state, attempts, run_at_ms, lease_token, lease_until_ms, \
             created_ms, updated_ms) SELECT 'bulk', '{}', 'running', 1, $1, 'elsewhere', $1 + $2, $1, $1 \
             FROM generate_series(1, $3::bigint)",
        )
        .bind(now())
        .bind(ms)
        .bind(count)
        .execute(&pool)
        .await
        .unwrap();
    }
    // What autovacuum does to a table after so many inserts: statistics, and the
    // visibility map that lets the lane probes read the index alone.
    sqlx::query("VACUUM ANALYZE jobs")
        .execute(&pool)
        .await
        .unwrap();
    println!("220,055 jobs inserted in {:?}", started.elapsed());

    for limit in [1_i64, 16] {
        let (median_ms, plan) = explain_claims(&pool, limit, 50).await;
        println!("claim of {limit}: median execution time {median_ms:.3} ms over 50\n{plan}");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        for index in ["jobs_pending_due", "jobs_running_lease"] {
            assert!(
                plan.contains(&format!("Index Scan using {index}")),
                "{plan}"
            );
        }
        assert!(
            sorts_at_most(&plan, u64::try_from(2 * limit).unwrap()),
            "{plan}"
        );
        assert!(median_ms < 25.0, "median {median_ms} ms:\n{plan}");

        // The same through the store, prepared and cached as the worker runs it, on an
        // idle pool, each claim taking its jobs for good: wall time, the commit's flush
        // to disk included; printed only.
        let mut walls = Vec::new();
        for _ in 0..50 {
            let t = Instant::now();
            let got = store
                .claim_jobs(&lease("wall", 60_000), u32::try_from(limit).unwrap())
                .await
                .unwrap();
            walls.push(t.elapsed());
            assert_eq!(got.len(), usize::try_from(limit).unwrap());
        }
        walls.sort();
        println!(
            "claim of {limit} through the store: median wall time {:?} over 50",
            walls[walls.len() / 2]
        );
    }
    println!("the whole test took {:?}", started.elapsed());
}
