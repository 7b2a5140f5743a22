//! Events to the merchant's app (merchant-api.md §2): recorded with each change, delivered
//! signed (checked by the Standard Webhooks reference crate), in sequence per subject,
//! retried, parked and resumed without loss; the pull feed shows the same events.

use crate::helpers::{
    Backend, Database, KEY, Options, TestApp, eventually, new_instance, order_id,
};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use crate::orders::settled_job;
use crate::receiver::{Delivery, Receiver};
use koogate::cli::events as events_cli;
use koogate::domain::events::DELIVER_KIND;
use koogate::store::JobState;
use serde_json::Value;
use std::time::Duration;

on_both_backends!(
    a_lifecycle_produces_exactly_its_events_in_order,
    one_subjects_retries_hold_back_only_that_subject,
    an_endpoint_down_past_the_schedule_loses_nothing_and_resume_drains_in_order,
    gone_pauses_the_endpoint_until_resumed,
    a_replica_killed_mid_delivery_delivers_again_with_the_same_id,
    the_feed_pages_through_every_event_with_its_attempts,
    without_an_endpoint_events_are_kept_for_the_feed,
);

/// Waits until the app has processed `n` deliveries.
async fn processed(receiver: &Receiver, n: usize) -> Vec<Delivery> {
    eventually(&format!("{n} deliveries"), || async {
        let done = receiver.processed();
        (done.len() >= n).then_some(done)
    })
    .await
}

fn types_of(deliveries: &[Delivery], subject: &str) -> Vec<String> {
    deliveries
        .iter()
        .filter(|d| d.subject() == subject)
        .map(|d| d.kind().to_owned())
        .collect()
}

async fn saas_ok(app: &TestApp, body: &str) {
    let answer = app.saas(body).await;
    assert_eq!(answer.code(), "000000", "{body}: {}", answer.msg());
}

async fn a_lifecycle_produces_exactly_its_events_in_order(backend: Backend) {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    let options = receiver.options(mock_market::options(&mock));
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let (new, renew, upgrade) = (order_id(), order_id(), order_id());
    mock.register(order(&new, "sku-new", "20270101000000"))
        .await;
    mock.register(order(&renew, "sku-renewed", "20280101000000"))
        .await;
    mock.register(order(&upgrade, "sku-upgraded", "20280101000000"))
        .await;
    let id = format!("ev-{new}");
    let subject = format!("instance:{id}");
    let steps = [
        (new_instance(&new, &id), Some(&new)),
        (
            format!(
                r#"{{"activity":"refreshInstance","scene":"RENEWAL","orderId":"{renew}","orderLineId":"{renew}-000001","instanceId":"{id}","expireTime":"20280101000000"}}"#
            ),
            Some(&renew),
        ),
        (
            format!(
                r#"{{"activity":"updateInstanceStatus","instanceId":"{id}","status":"FREEZE"}}"#
            ),
            None,
        ),
        (
            format!(
                r#"{{"activity":"updateInstanceStatus","instanceId":"{id}","status":"UNFREEZE"}}"#
            ),
            None,
        ),
        (
            format!(
                r#"{{"activity":"upgradeInstance","instanceId":"{id}","orderId":"{upgrade}","orderLineId":"{upgrade}-000001"}}"#
            ),
            Some(&upgrade),
        ),
        (
            format!(
                r#"{{"activity":"releaseInstance","instanceId":"{id}","orderId":"{upgrade}","orderLineId":"{upgrade}-000001"}}"#
            ),
            None,
        ),
    ];
    for (body, fetched) in &steps {
        saas_ok(&app, body).await;
        // KooGallery's retry of the same callback changes nothing and reports nothing.
        saas_ok(&app, body).await;
        if let Some(order) = fetched {
            assert_eq!(settled_job(&app, order).await.state, JobState::Done);
        }
    }

    let expected = [
        "instance.created",
        "instance.provisioned",
        "instance.order_updated",
        "instance.renewed",
        "instance.order_updated",
        "instance.frozen",
        "instance.unfrozen",
        "instance.upgraded",
        "instance.released",
    ];
    let delivered = processed(&receiver, expected.len()).await;
    assert_eq!(types_of(&delivered, &subject), expected);
    let sequences: Vec<i64> = delivered.iter().map(Delivery::sequence).collect();
    assert_eq!(sequences, (1..=9).collect::<Vec<_>>());
    // Event ids are time-ordered, so that the indexes keyed by them grow at their end.
    let ids: Vec<&str> = delivered.iter().map(|d| d.id.as_str()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(
        delivered.iter().all(|d| d.verified),
        "every delivery verifies"
    );
    for d in &delivered {
        assert_eq!(d.body["data"]["test"], false);
        assert_eq!(d.body["data"]["instance"]["id"], id.as_str());
        assert!(d.id.starts_with("evt_"), "{}", d.id);
    }
    // Snapshots follow the changes.
    let snapshot = |n: usize| &delivered[n].body["data"]["instance"];
    assert_eq!(
        snapshot(1)["appInfo"]["frontEndUrl"],
        format!("https://app.example.net/{id}")
    );
    assert_eq!(snapshot(2)["skuCode"], "sku-new");
    assert_eq!(snapshot(5)["state"], "frozen");
    assert_eq!(snapshot(7)["skuCode"], "sku-upgraded");
    assert_eq!(snapshot(8)["state"], "released");
    assert!(snapshot(8)["releasedAt"].is_string());
    // Nothing more arrives: the repeats recorded no event.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.processed().len(), expected.len());
    assert_eq!(app.feed(expected.len()).await.len(), expected.len());
}

async fn one_subjects_retries_hold_back_only_that_subject(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        receiver.options(Options::default()),
    )
    .await;
    let (slow, fast) = (order_id(), order_id());
    let slow_subject = format!("instance:i-{slow}");
    receiver.fail(&slow_subject, 4);

    saas_ok(&app, &new_instance(&slow, &format!("i-{slow}"))).await;
    saas_ok(
        &app,
        &format!(
            r#"{{"activity":"updateInstanceStatus","instanceId":"i-{slow}","status":"FREEZE"}}"#
        ),
    )
    .await;
    saas_ok(&app, &new_instance(&fast, &format!("i-{fast}"))).await;

    let delivered = processed(&receiver, 5).await;
    let fast_at = delivered
        .iter()
        .position(|d| d.kind() == "instance.provisioned" && d.subject().ends_with(&fast))
        .unwrap();
    let slow_first = delivered
        .iter()
        .position(|d| d.subject() == slow_subject)
        .unwrap();
    assert!(
        fast_at < slow_first,
        "the other subject did not wait for the retried one"
    );
    assert_eq!(
        types_of(&delivered, &slow_subject),
        [
            "instance.created",
            "instance.provisioned",
            "instance.frozen"
        ],
        "the retried subject's events still came in sequence"
    );
    let attempts = receiver.attempts();
    let failed = attempts
        .iter()
        .filter(|d| d.subject() == slow_subject && d.status == 500)
        .count();
    assert_eq!(failed, 4);
    // While the first event was retried, no later event of its subject was tried.
    let first_ok = attempts
        .iter()
        .position(|d| d.subject() == slow_subject && d.status == 200)
        .unwrap();
    assert!(
        attempts[..first_ok]
            .iter()
            .filter(|d| d.subject() == slow_subject)
            .all(|d| d.sequence() == 1)
    );
    // Every attempt is recorded with its status.
    let first = &delivered[slow_first];
    let (_, detail) = app.api_get(&format!("/api/v1/events/{}", first.id)).await;
    let statuses: Vec<i64> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 500, 500, 200]);
    assert_eq!(detail["attempts"][0]["error"], "answered HTTP 500");
}

async fn an_endpoint_down_past_the_schedule_loses_nothing_and_resume_drains_in_order(
    backend: Backend,
) {
    let receiver = Receiver::start().await;
    let options = receiver
        .options(Options::default())
        .env("KOOGATE_EVENTS_MAX_AGE", "200ms");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    receiver.answer_status(Some(503));
    let ids: Vec<String> = (0..3).map(|_| order_id()).collect();
    for id in &ids {
        saas_ok(&app, &new_instance(id, &format!("d-{id}"))).await;
    }
    saas_ok(
        &app,
        &format!(
            r#"{{"activity":"releaseInstance","instanceId":"d-{}"}}"#,
            ids[0]
        ),
    )
    .await;

    // Each subject's first event is parked; the ones behind it wait.
    eventually("the first events to be parked", || async {
        let failed = app.store.failed_jobs(100).await.unwrap();
        (failed.iter().filter(|j| j.kind == DELIVER_KIND).count() == 3).then_some(())
    })
    .await;
    let listing = events_cli::failed(app.store.as_ref()).await.unwrap();
    assert_eq!(listing.lines().count(), 3, "{listing}");
    assert!(
        listing.contains("answered HTTP 503; parked after"),
        "{listing}"
    );
    assert!(receiver.processed().is_empty());

    receiver.answer_status(None);
    let now = chrono::Utc::now().timestamp_millis();
    let said = events_cli::resume(app.store.as_ref(), now).await.unwrap();
    assert_eq!(said, "3 deliveries due now\n");
    app.store.ping().await.unwrap();

    let delivered = processed(&receiver, 7).await;
    assert_eq!(
        types_of(&delivered, &format!("instance:d-{}", ids[0])),
        [
            "instance.created",
            "instance.provisioned",
            "instance.released"
        ]
    );
    for id in &ids[1..] {
        assert_eq!(
            types_of(&delivered, &format!("instance:d-{id}")),
            ["instance.created", "instance.provisioned"]
        );
    }
    assert!(
        events_cli::failed(app.store.as_ref())
            .await
            .unwrap()
            .starts_with("no parked deliveries")
    );
}

async fn gone_pauses_the_endpoint_until_resumed(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        receiver.options(Options::default()),
    )
    .await;
    receiver.answer_status(Some(410));
    let a = order_id();
    saas_ok(&app, &new_instance(&a, &format!("g-{a}"))).await;
    eventually("the endpoint to be paused", || async {
        app.store.webhook_pause().await.unwrap()
    })
    .await;
    let b = order_id();
    saas_ok(&app, &new_instance(&b, &format!("g-{b}"))).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let tried = receiver.attempts().len();
    assert_eq!(tried, 1, "a paused endpoint is not called again");
    let listing = events_cli::failed(app.store.as_ref()).await.unwrap();
    assert!(listing.contains("endpoint paused since"), "{listing}");

    receiver.answer_status(None);
    let now = chrono::Utc::now().timestamp_millis();
    let said = events_cli::resume(app.store.as_ref(), now).await.unwrap();
    assert!(said.starts_with("endpoint resumed; "), "{said}");
    let delivered = processed(&receiver, 4).await;
    assert_eq!(types_of(&delivered, &format!("instance:g-{a}")).len(), 2);
    assert_eq!(types_of(&delivered, &format!("instance:g-{b}")).len(), 2);
}

/// Settings under which a dead replica's lease ends within a test.
fn short_leases(receiver: &Receiver) -> Options {
    receiver
        .options(Options::default())
        .env("KOOGATE_MARKETPLACE_CONNECT_TIMEOUT_MS", "200")
        .env("KOOGATE_MARKETPLACE_REQUEST_TIMEOUT_MS", "1000")
        .env("KOOGATE_JOBS_LEASE_MS", "2000")
}

async fn a_replica_killed_mid_delivery_delivers_again_with_the_same_id(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Database::fresh(backend).await, short_leases(&receiver)).await;
    receiver.delay(Some(Duration::from_millis(700)));
    let o = order_id();
    let subject = format!("instance:k-{o}");
    saas_ok(&app, &new_instance(&o, &format!("k-{o}"))).await;
    eventually("a delivery in flight", || async {
        let jobs = app.store.jobs_about(&subject).await.unwrap();
        jobs.iter()
            .any(|j| j.state == JobState::Running)
            .then_some(())
    })
    .await;

    let db = app.crash().await;
    receiver.delay(None);
    let restarted = TestApp::spawn_with(db, short_leases(&receiver)).await;

    let delivered = processed(&receiver, 2).await;
    assert_eq!(
        types_of(&delivered, &subject),
        ["instance.created", "instance.provisioned"]
    );
    // The receiver counts a delivery before its answer reaches koogate, so the job's
    // completion may commit a moment later.
    eventually("every delivery job done", || async {
        let jobs = restarted.store.jobs_about(&subject).await.unwrap();
        jobs.iter().all(|j| j.state == JobState::Done).then_some(())
    })
    .await;
    restarted.stop().await;
}

async fn the_feed_pages_through_every_event_with_its_attempts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..5 {
        let o = order_id();
        saas_ok(&app, &new_instance(&o, &format!("f-{o}"))).await;
    }
    app.feed(10).await;
    let mut seen: Vec<Value> = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = app
            .api_get(&format!("/api/v1/events?limit=3&after={after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap().clone();
        after = page["next"].as_str().unwrap().to_owned();
        if items.is_empty() {
            break;
        }
        seen.extend(items);
    }
    assert_eq!(seen.len(), 10, "created and provisioned for each");
    let ids: std::collections::HashSet<&str> = seen
        .iter()
        .map(|e| e["data"]["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 10, "no event twice");
    assert_eq!(seen[0]["type"], "instance.created");
    assert_eq!(seen[0]["data"]["sequence"], 1);
    assert_eq!(seen[1]["type"], "instance.provisioned");
    assert_eq!(seen[1]["data"]["sequence"], 2);

    let (status, problem) = app.api_get("/api/v1/events?after=not-a-cursor").await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["field"], "after");
    let (status, _) = app.api_get("/api/v1/events?limit=1001").await;
    assert_eq!(status, 422);
    let (status, _) = app.api_get("/api/v1/events/evt_unknown").await;
    assert_eq!(status, 404);
}

async fn without_an_endpoint_events_are_kept_for_the_feed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let o = order_id();
    let answer = app
        .saas(&format!(
            r#"{{"activity":"newInstance","businessId":"t-{o}","orderId":"{o}","orderLineId":"{o}-000001","testFlag":"1"}}"#
        ))
        .await;
    assert_eq!(answer.code(), "000000");
    let items = app.feed(2).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["data"]["test"], true, "test traffic is marked");
    let jobs = app
        .store
        .jobs_about(&format!("instance:t-{o}"))
        .await
        .unwrap();
    assert!(
        jobs.is_empty(),
        "nothing is queued for delivery without an endpoint"
    );
    // The signed KooGallery answer is untouched by all of this.
    assert!(answer.signed_with(KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_one_postgres_deliver_every_event_in_order() {
    let receiver = Receiver::start().await;
    let db = Database::fresh(Backend::Postgres).await;
    let shared = db.shared();
    let a = TestApp::spawn_with(db, receiver.options(Options::default())).await;
    let b = TestApp::spawn_with(shared, receiver.options(Options::default())).await;
    // Every subject fails now and then, so deliveries are retried on either replica.
    let ids: Vec<String> = (0..6).map(|n| format!("r{n}-{}", order_id())).collect();
    for (n, id) in ids.iter().enumerate() {
        receiver.fail(&format!("instance:{id}"), 2);
        let (first, second) = if n % 2 == 0 { (&a, &b) } else { (&b, &a) };
        saas_ok(first, &new_instance(&order_id(), id)).await;
        saas_ok(
            second,
            &format!(
                r#"{{"activity":"updateInstanceStatus","instanceId":"{id}","status":"FREEZE"}}"#
            ),
        )
        .await;
        saas_ok(
            first,
            &format!(
                r#"{{"activity":"updateInstanceStatus","instanceId":"{id}","status":"UNFREEZE"}}"#
            ),
        )
        .await;
    }
    let delivered = processed(&receiver, ids.len() * 4).await;
    for id in &ids {
        let subject = format!("instance:{id}");
        assert_eq!(
            types_of(&delivered, &subject),
            [
                "instance.created",
                "instance.provisioned",
                "instance.frozen",
                "instance.unfrozen"
            ],
            "{subject}"
        );
        let sequences: Vec<i64> = delivered
            .iter()
            .filter(|d| d.subject() == subject)
            .map(Delivery::sequence)
            .collect();
        assert_eq!(sequences, [1, 2, 3, 4]);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.processed().len(),
        ids.len() * 4,
        "nothing processed twice"
    );
    b.stop().await;
    a.stop().await;
}

on_both_backends!(an_app_that_misbehaves_never_slows_koogallerys_answers);

async fn an_app_that_misbehaves_never_slows_koogallerys_answers(backend: Backend) {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        receiver.options(Options::default()),
    )
    .await;
    // A redirect is a failed attempt, never followed with the signed body.
    receiver.answer_status(Some(302));
    let o = order_id();
    let started = std::time::Instant::now();
    saas_ok(&app, &new_instance(&o, &format!("m-{o}"))).await;
    let first = eventually("a redirected attempt", || async {
        receiver.attempts().into_iter().find(|d| d.status == 302)
    })
    .await;
    // A hanging app: the attempt times out; callbacks are answered all the same.
    receiver.answer_status(None);
    receiver.delay(Some(Duration::from_millis(1500)));
    let o2 = order_id();
    saas_ok(&app, &new_instance(&o2, &format!("m-{o2}"))).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered from koogate's state"
    );
    let detail = eventually("both failures recorded", || async {
        let (_, detail) = app.api_get(&format!("/api/v1/events/{}", first.id)).await;
        let attempts = detail["attempts"].as_array().cloned().unwrap_or_default();
        (attempts.len() >= 2).then_some(attempts)
    })
    .await;
    assert_eq!(detail[0]["status"], 302);
    assert_eq!(detail[0]["error"], "answered HTTP 302");
    assert!(detail[1]["status"].is_null(), "{detail:?}");
    assert_eq!(detail[1]["error"], "timed out");
    receiver.delay(None);
    processed(&receiver, 4).await;
}
