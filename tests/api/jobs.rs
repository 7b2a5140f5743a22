//! Durable background work against a misbehaving mock marketplace: retries with backoff,
//! parking with the reason, replicas sharing the work, and a replica dying mid-job.

use crate::helpers::{Backend, Database, KEY, TestApp, eventually, order_id};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use crate::orders::settled_job;
use koogate::cli::{jobs, orders};
use koogate::store::{JobState, PoolOptions};
use std::sync::Arc;
use std::time::Duration;

on_both_backends!(
    a_job_succeeds_on_its_third_attempt_after_two_failures,
    a_job_that_keeps_failing_is_parked_and_shown,
    without_credentials_fetches_are_parked_with_the_reason,
    two_replicas_never_run_the_same_job_twice,
    a_job_whose_replica_died_mid_attempt_is_taken_again,
    an_attempt_cut_short_by_a_stop_is_not_counted,
);

async fn notify(app: &TestApp, order_id: &str) {
    let body = format!(
        r#"{{"activity":"orderNotify","orderId":"{order_id}","orderLineId":"{order_id}-000001"}}"#
    );
    let answer = app
        .post_signed("/koogallery/order-notify", KEY, &body)
        .await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
}

async fn a_job_succeeds_on_its_third_attempt_after_two_failures(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let failures = [
        ("http500", "HTTP 500 with a malformed body: not JSON"),
        ("mkt0999", "MKT.0999 (HTTP 500, internal error)"),
        ("malformed", "HTTP 200 with a malformed body: not JSON"),
        ("timeout", "did not answer within 1000 ms"),
    ];
    for (mode, reason) in failures {
        let order_id = order_id();
        mock.register(order(&order_id, "sku-retry", "20270101000000"))
            .await;
        if mode == "timeout" {
            mock.delay_next(1_500, 2).await;
        } else {
            mock.fail_next(mode, 2).await;
        }

        notify(&app, &order_id).await;

        let job = settled_job(&app, &order_id).await;
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Done, 3),
            "{mode}: {job:?}"
        );
        let error = job.last_error.unwrap_or_default();
        assert!(
            error.contains(reason),
            "{mode}: the second failure is kept: {error}"
        );
        assert_eq!(mock.queries_for(&order_id).await.len(), 3, "{mode}");
        let line = &app.store.order_lines(&order_id).await.unwrap()[0];
        assert!(
            line.order_info.as_deref().unwrap().contains("sku-retry"),
            "{mode}"
        );
    }
}

async fn a_job_that_keeps_failing_is_parked_and_shown(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let order_id = order_id();
    mock.register(order(&order_id, "sku-never", "20270101000000"))
        .await;
    mock.fail_next("mkt0999", 1_000).await;

    notify(&app, &order_id).await;

    let job = settled_job(&app, &order_id).await;
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Failed, 4),
        "parked after max_attempts"
    );
    assert_eq!(mock.queries_for(&order_id).await.len(), 4);
    let report = orders::show(app.store.as_ref(), &order_id)
        .await
        .unwrap()
        .unwrap();
    for expected in [
        "order.fetch  failed  attempts 4",
        "last error: the marketplace answered MKT.0999 (HTTP 500, internal error): Internal error",
        "not fetched yet",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }

    // A refusal that no retry can fix parks the job at its first attempt.
    let foreign = order_id.replace("CS", "NOTMINE");
    mock.fail_next("mkt0999", 0).await;
    notify(&app, &foreign).await;
    let job = settled_job(&app, &foreign).await;
    assert_eq!((job.state, job.attempts), (JobState::Failed, 1));
    assert!(job.last_error.unwrap().contains("MKT.0150"));

    // Once the cause is fixed, an operator lists the parked jobs and queues one again.
    let store = app.store.as_ref();
    let listing = jobs::failed(store).await.unwrap();
    for subject in [&order_id, &foreign] {
        assert!(listing.contains(&format!("about {subject}")), "{listing}");
    }
    let parked = app.store.jobs_about(&order_id).await.unwrap()[0].id;
    let now = chrono::Utc::now().timestamp_millis();
    let retried = jobs::retry(store, &[parked, 999_999], false, now)
        .await
        .unwrap();
    assert_eq!(
        retried,
        format!("#{parked}  queued again\n#999999  no such job\n")
    );
    let done = eventually("the queued-again job to finish", || async {
        let job = store.job(parked).await.unwrap().unwrap();
        (job.state == JobState::Done).then_some(job)
    })
    .await;
    assert_eq!(done.attempts, 1, "attempts are counted afresh");
    let again = jobs::retry(store, &[parked], false, now).await.unwrap();
    assert_eq!(again, format!("#{parked}  not failed: left as it is\n"));
    assert!(
        !jobs::failed(store)
            .await
            .unwrap()
            .contains(&format!("about {order_id}"))
    );
    // The other parked job (and any other) goes back with --all-failed, in one statement.
    let all = jobs::retry(store, &[], true, now).await.unwrap();
    assert_eq!(all, "1 failed jobs queued again\n");
    assert_eq!(
        jobs::retry(store, &[], true, now).await.unwrap(),
        "no failed jobs\n"
    );
}

async fn without_credentials_fetches_are_parked_with_the_reason(backend: Backend) {
    let mock = MockServer::start().await;
    let options = mock_market::options(&mock)
        .without_env("KOOGATE_MARKETPLACE_AK")
        .without_env("KOOGATE_MARKETPLACE_SK");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let order_id = order_id();

    notify(&app, &order_id).await;

    let job = settled_job(&app, &order_id).await;
    assert_eq!((job.state, job.attempts), (JobState::Failed, 1));
    assert!(
        job.last_error
            .unwrap()
            .contains("set KOOGATE_MARKETPLACE_AK and KOOGATE_MARKETPLACE_SK"),
    );
    assert!(mock.calls().await.is_empty());
}

async fn two_replicas_never_run_the_same_job_twice(backend: Backend) {
    let mock = MockServer::start().await;
    let first =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    // Three replicas on one database race for the queue; slow answers keep them all busy.
    let mut replicas = vec![Arc::new(first)];
    for _ in 0..2 {
        let db = replicas[0].db.shared();
        replicas.push(Arc::new(
            TestApp::spawn_with(db, mock_market::options(&mock)).await,
        ));
    }
    mock.delay_next(20, 1_000).await;
    let orders: Vec<String> = (0..30).map(|_| order_id()).collect();
    for id in &orders {
        mock.register(order(id, "sku-shared", "20270101000000"))
            .await;
    }

    let sends = orders.iter().enumerate().map(|(i, id)| {
        let app = replicas[i % replicas.len()].clone();
        let id = id.clone();
        tokio::spawn(async move { notify(&app, &id).await })
    });
    for send in sends.collect::<Vec<_>>() {
        send.await.expect("notified");
    }

    for id in &orders {
        let job = settled_job(&replicas[0], id).await;
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Done, 1),
            "{id}: {job:?}"
        );
    }
    for id in &orders {
        assert_eq!(mock.queries_for(id).await.len(), 1, "{id} was fetched once");
    }
}

async fn a_job_whose_replica_died_mid_attempt_is_taken_again(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let order_id = order_id();
    mock.register(order(&order_id, "sku-crash", "20270101000000"))
        .await;
    mock.delay_next(10_000, 1).await;

    notify(&app, &order_id).await;
    eventually("the replica to be mid-attempt", || async {
        let calls = mock.queries_for(&order_id).await;
        (calls.len() == 1 && calls[0].status == 0).then_some(())
    })
    .await;
    let db = app.crash().await;
    let running = app_job_state(&db, &order_id).await;
    assert_eq!(
        running,
        JobState::Running,
        "the dead replica still holds the job"
    );

    let restarted = TestApp::spawn_with(db, mock_market::options(&mock)).await;

    let job = settled_job(&restarted, &order_id).await;
    assert_eq!((job.state, job.attempts), (JobState::Done, 2), "{job:?}");
    assert_eq!(mock.queries_for(&order_id).await.len(), 2);
    let instance_line = &restarted.store.order_lines(&order_id).await.unwrap()[0];
    assert!(
        instance_line
            .order_info
            .as_deref()
            .unwrap()
            .contains("sku-crash")
    );
}

/// The job's state read through a store of its own, with no worker that could touch it.
async fn app_job_state(db: &Database, order_id: &str) -> JobState {
    let options = PoolOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(3),
    };
    let store = koogate::store::connect(&db.url, &options, crate::helpers::test_sealer())
        .await
        .unwrap();
    store.jobs_about(order_id).await.unwrap()[0].state
}

/// A graceful stop (a rolling deploy) cuts an attempt short without counting it: the
/// job is due again at once, and the next replica runs it as if nothing happened.
async fn an_attempt_cut_short_by_a_stop_is_not_counted(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let order_id = order_id();
    mock.register(order(&order_id, "sku-stop", "20270101000000"))
        .await;
    mock.delay_next(10_000, 1).await;

    notify(&app, &order_id).await;
    eventually("the replica to be mid-attempt", || async {
        let calls = mock.queries_for(&order_id).await;
        (calls.len() == 1 && calls[0].status == 0).then_some(())
    })
    .await;
    let db = app.stop().await;
    let store = koogate::store::connect(
        &db.url,
        &PoolOptions {
            max_connections: 1,
            acquire_timeout: Duration::from_secs(5),
        },
        crate::helpers::test_sealer(),
    )
    .await
    .unwrap();
    let job = store.jobs_about(&order_id).await.unwrap().remove(0);
    assert_eq!((job.state, job.attempts), (JobState::Pending, 0), "{job:?}");
    assert!(job.last_error.unwrap().contains("interrupted"));
    drop(store);

    let restarted = TestApp::spawn_with(db, mock_market::options(&mock)).await;
    let job = settled_job(&restarted, &order_id).await;
    assert_eq!((job.state, job.attempts), (JobState::Done, 1), "{job:?}");
}
