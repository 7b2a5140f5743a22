//! `GET /metrics`: after a scripted set of callbacks, every exported value is exactly
//! what happened, the text parses as Prometheus text, and nothing in it names an order,
//! an instance or a key.

use crate::helpers::{
    self, Backend, Database, KEY, Options, TestApp, eventually, new_instance, order_id,
};
use crate::mock_market::{self, MockServer};
use crate::on_both_backends;
use koogate::protocol::signature::{self, Variant};
use koogate::store::{JobState, NewJob, window_state};
use prometheus_parse::{Scrape, Value};
use std::sync::Arc;

on_both_backends!(
    a_scripted_set_of_callbacks_is_counted_exactly,
    open_api_calls_are_counted_by_api_host_and_outcome,
    the_oldest_due_job_has_waited_since_it_came_due,
    usage_windows_not_taken_and_the_nearest_deadline_are_exported,
);

/// The internal listener's metrics, parsed.
async fn scrape(app: &TestApp) -> (String, Scrape) {
    let response = reqwest::get(format!("http://{}/metrics", app.admin))
        .await
        .expect("the internal listener answers");
    assert_eq!(response.status(), 200, "no token is needed");
    let text = response.text().await.unwrap();
    let scrape = Scrape::parse(text.lines().map(|line| Ok(line.to_owned())))
        .expect("the text parses as Prometheus text");
    (text, scrape)
}

/// The value of the one sample of `name` with exactly these labels (0 when absent).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| {
            s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
        })
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name}: unexpected value {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{name} {labels:?} is exported once");
    found.first().copied().unwrap_or(0.0)
}

/// The sum of `name` over every label set.
fn total(scrape: &Scrape, name: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

fn signed_query(body: &str, ts_ms: i64, key: &str) -> String {
    let ts = ts_ms.to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(key, &nonce, &ts, body.as_bytes(), Variant::A);
    format!("signature={sig}&timestamp={ts}&nonce={nonce}")
}

async fn a_scripted_set_of_callbacks_is_counted_exactly(backend: Backend) {
    // Deliveries go to a port nothing listens on, and are retried only in an hour; no
    // AK/SK, so each order fetch is parked at once.
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hooks = format!("http://{}/hooks", nobody.local_addr().unwrap());
    drop(nobody);
    let options = Options::default()
        .env("KOOGATE_EVENTS_URL", &hooks)
        .env("KOOGATE_EVENTS_SECRET", crate::receiver::SECRET)
        .env("KOOGATE_EVENTS_RETRY_SCHEDULE", "1h")
        .env("KOOGATE_JOBS_POLL_INTERVAL_MS", "50");
    let app = TestApp::spawn_with(helpers::Database::fresh(backend).await, options).await;
    let now = chrono::Utc::now().timestamp_millis();

    // Three new instances, one of them seller center's debugging (testFlag=1).
    let (real_a, real_b, test_order) = (order_id(), order_id(), order_id());
    assert_eq!(
        app.saas(&new_instance(&real_a, "mx-a")).await.code(),
        "000000"
    );
    let body_b = new_instance(&real_b, "mx-b");
    let query_b = signed_query(&body_b, now, KEY);
    let first = app
        .post_raw("/koogallery/saas", &query_b, body_b.clone().into())
        .await;
    assert_eq!(first.code(), "000000");
    let test_body =
        new_instance(&test_order, "mx-t").replace(r#""testFlag":"0""#, r#""testFlag":"1""#);
    assert_eq!(app.saas(&test_body).await.code(), "000000");

    // One refusal of each reason.
    let replayed = app
        .post_raw("/koogallery/saas", &query_b, body_b.into())
        .await;
    assert_eq!(replayed.code(), "000001", "replayed nonce");
    let body = new_instance(&order_id(), "mx-refused");
    let refusals = [
        ("missing_signature", String::new()),
        ("bad_signature", signed_query(&body, now, "another-key")),
        ("stale_timestamp", signed_query(&body, now - 61_000, KEY)),
        ("future_timestamp", signed_query(&body, now + 61_000, KEY)),
    ];
    for (reason, query) in &refusals {
        let answer = app
            .post_raw("/koogallery/saas", query, body.clone().into())
            .await;
        assert_eq!(answer.code(), "000001", "{reason}");
    }
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(70_000));
    let too_large = app
        .post_raw(
            "/koogallery/saas",
            &signed_query(&huge, now, KEY),
            huge.into(),
        )
        .await;
    assert_eq!(too_large.status, 413);
    assert_eq!(app.saas("{not json").await.code(), "000002", "malformed");

    // The parked fetches and the failed deliveries happen in the background.
    let (text, scrape) = eventually(
        "three parked fetches and three failed deliveries, none running",
        || async {
            let (text, scrape) = scrape(&app).await;
            let parked = value(
                &scrape,
                "koogate_jobs",
                &[("kind", "order.fetch"), ("state", "failed")],
            );
            let failed = value(
                &scrape,
                "koogate_event_deliveries_total",
                &[("type", "instance.created"), ("outcome", "no_answer")],
            );
            let running = value(
                &scrape,
                "koogate_jobs",
                &[("kind", "event.deliver"), ("state", "running")],
            );
            (parked == 3.0 && failed == 3.0 && running == 0.0).then_some((text, scrape))
        },
    )
    .await;

    let callbacks = "koogate_callbacks_total";
    let counted = |activity, code, test| {
        value(
            &scrape,
            callbacks,
            &[
                ("family", "saas_v2"),
                ("activity", activity),
                ("result_code", code),
                ("test", test),
            ],
        )
    };
    assert_eq!(counted("newInstance", "000000", "false"), 2.0);
    assert_eq!(counted("newInstance", "000000", "true"), 1.0);
    assert_eq!(counted("newInstance", "000001", "false"), 1.0, "the replay");
    assert_eq!(
        counted("unknown", "000001", "false"),
        4.0,
        "refused signatures"
    );
    assert_eq!(
        counted("unknown", "000002", "false"),
        2.0,
        "too large and malformed"
    );
    assert_eq!(total(&scrape, callbacks), 10.0, "nothing else was counted");
    assert_eq!(
        value(
            &scrape,
            "koogate_callback_duration_seconds_count",
            &[("family", "saas_v2")]
        ),
        10.0
    );
    for reason in [
        "missing_signature",
        "bad_signature",
        "stale_timestamp",
        "future_timestamp",
        "replayed_nonce",
        "too_large",
        "malformed",
    ] {
        let n = value(
            &scrape,
            "koogate_refusals_total",
            &[("family", "saas_v2"), ("reason", reason)],
        );
        assert_eq!(n, 1.0, "{reason}");
    }
    assert_eq!(total(&scrape, "koogate_refusals_total"), 7.0);
    assert_eq!(total(&scrape, "koogate_event_deliveries_total"), 3.0);
    for state in ["pending", "waiting"] {
        assert_eq!(
            value(
                &scrape,
                "koogate_jobs",
                &[("kind", "event.deliver"), ("state", state)]
            ),
            3.0,
            "each instance's created event waits for its retry, its provisioned event behind it"
        );
    }
    assert_eq!(total(&scrape, "koogate_jobs"), 9.0);
    assert_eq!(value(&scrape, "koogate_event_backlog", &[]), 6.0);
    let backlog_age = value(&scrape, "koogate_event_backlog_oldest_age_seconds", &[]);
    assert!((0.0..60.0).contains(&backlog_age), "{backlog_age}");
    assert_eq!(value(&scrape, "koogate_webhook_paused", &[]), 0.0);
    let dial = value(
        &scrape,
        "koogate_dial_test_last_success_timestamp_seconds",
        &[("family", "saas_v2")],
    );
    assert!(
        (dial - now as f64 / 1000.0).abs() < 60.0,
        "the test newInstance: {dial}"
    );
    assert_eq!(
        total(&scrape, "koogate_dial_test_last_success_timestamp_seconds"),
        dial,
        "no other family had a test callback"
    );
    assert_eq!(
        total(&scrape, "koogate_openapi_calls_total"),
        0.0,
        "no AK/SK: no call"
    );

    app.store
        .pause_webhook(now, "the endpoint answered 410 Gone")
        .await
        .unwrap();
    let (_, paused) = self::scrape(&app).await;
    assert_eq!(value(&paused, "koogate_webhook_paused", &[]), 1.0);

    for secret in [
        real_a.as_str(),
        real_b.as_str(),
        test_order.as_str(),
        "mx-a",
        "mx-t",
        KEY,
    ] {
        assert!(!text.contains(secret), "/metrics names {secret}");
    }
    app.stop().await;
}

#[tokio::test]
async fn two_servers_in_one_process_count_apart() {
    let one = TestApp::spawn(Backend::Sqlite).await;
    let two = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(
        one.saas(&new_instance(&order_id(), "mx-one")).await.code(),
        "000000"
    );
    let (_, first) = scrape(&one).await;
    let (_, second) = scrape(&two).await;
    assert_eq!(total(&first, "koogate_callbacks_total"), 1.0);
    assert_eq!(total(&second, "koogate_callbacks_total"), 0.0);
    one.stop().await;
    two.stop().await;
}

/// 10:30 UTC, and a clock that stays there: the ages and deadlines read at a scrape are
/// then exact.
const FROZEN: &str = "2026-12-01T10:30:00Z";

fn ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

fn frozen() -> Options {
    freeze(Options::default())
}

/// `options` with the clock stopped at [`FROZEN`] and the worker polling often.
fn freeze(options: Options) -> Options {
    let now = ms(FROZEN);
    Options {
        clock: Some(Arc::new(move || now)),
        ..options.env("KOOGATE_JOBS_POLL_INTERVAL_MS", "50")
    }
}

/// Waits for the usage push koogate enqueues when it starts to have run: with the clock
/// standing still, no other is enqueued, and its retries never come due.
async fn start_push_settled(app: &TestApp) {
    eventually("the usage push of the start to have run", || async {
        let job = app
            .store
            .job_by_key("usage.push", "slot:2026-12-01T10:00:00.000Z")
            .await
            .unwrap()?;
        let settled = match job.state {
            JobState::Done | JobState::Failed => true,
            JobState::Pending => job.run_at_ms > ms(FROZEN),
            JobState::Running | JobState::Waiting => false,
        };
        settled.then_some(())
    })
    .await;
}

async fn open_api_calls_are_counted_by_api_host_and_outcome(backend: Backend) {
    // The primary host refuses connections, so every call goes on to the fallback, the
    // mock marketplace, which fails some of them on request.
    let mock = MockServer::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nobody = format!("http://localhost:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let options = mock_market::options(&mock)
        .env("KOOGATE_MARKETPLACE_URL", &nobody)
        .env("KOOGATE_MARKETPLACE_FALLBACK_URL", &mock.url());
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let calls = |scrape: &Scrape, host: &str, outcome: &str| {
        value(
            scrape,
            "koogate_openapi_calls_total",
            &[("api", "query_order"), ("host", host), ("outcome", outcome)],
        )
    };
    // One order at a time, each with its own failure, so that every call is accounted for.
    let script: [(&str, &str, f64); 4] = [
        ("answered", "2xx", 1.0),
        ("mkt0999 once, then answered", "2xx", 2.0),
        ("MKT.0154, parked", "4xx", 1.0),
        ("too slow once, then answered", "2xx", 3.0),
    ];
    for (step, (what, outcome, expected)) in script.iter().enumerate() {
        match step {
            1 => mock.fail_next("mkt0999", 1).await,
            2 => mock.fail_with_code("MKT.0154", 1).await,
            3 => mock.delay_next(1500, 1).await,
            _ => {}
        }
        let order = order_id();
        mock.register(mock_market::order(&order, "sku-calls", "20270101000000"))
            .await;
        assert_eq!(
            app.saas(&new_instance(&order, &format!("calls-{step}")))
                .await
                .code(),
            "000000"
        );
        eventually(what, || async {
            let (_, scrape) = scrape(&app).await;
            let running = total(&scrape, "koogate_job_oldest_due_age_seconds")
                + value(
                    &scrape,
                    "koogate_jobs",
                    &[("kind", "order.fetch"), ("state", "running")],
                );
            (calls(&scrape, "127.0.0.1", outcome) == *expected && running == 0.0).then_some(())
        })
        .await;
    }

    let (text, scrape) = scrape(&app).await;
    assert_eq!(calls(&scrape, "localhost", "unreachable"), 6.0, "{text}");
    assert_eq!(calls(&scrape, "127.0.0.1", "2xx"), 3.0, "{text}");
    assert_eq!(
        calls(&scrape, "127.0.0.1", "5xx"),
        1.0,
        "MKT.0999 is an HTTP 500"
    );
    assert_eq!(
        calls(&scrape, "127.0.0.1", "4xx"),
        1.0,
        "MKT.0154 is an HTTP 401"
    );
    assert_eq!(calls(&scrape, "127.0.0.1", "timeout"), 1.0);
    assert_eq!(
        total(&scrape, "koogate_openapi_calls_total"),
        12.0,
        "nothing else was called: {text}"
    );
    assert_eq!(
        value(
            &scrape,
            "koogate_jobs",
            &[("kind", "order.fetch"), ("state", "failed")]
        ),
        1.0,
        "the refused order's fetch is parked"
    );
    app.stop().await;
}

async fn the_oldest_due_job_has_waited_since_it_came_due(backend: Backend) {
    // One attempt at a time, and the marketplace slow to answer: while the first fetch
    // waits for its answer, the one due after it waits for the worker. The one behind a
    // lane waits for its lane, not for a worker, and a third is not due for another
    // minute. Whether a job is due, and for how long, is the database's call, on the real
    // clock; the replica's clock is frozen hours behind it, as a skewed replica's would
    // be, and must not change the age.
    let mock = MockServer::start().await;
    let options = freeze(mock_market::options(&mock).env("KOOGATE_JOBS_CONCURRENCY", "1"));
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    start_push_settled(&app).await;
    mock.delay_next(8_000, 1).await;
    let fetch = serde_json::json!({
        "orderId": "CS-SLOW", "orderLineId": "CS-SLOW-1", "source": "test", "test": true,
    });
    let job = |payload: String, lane: Option<&str>, run_at_ms: i64| NewJob {
        kind: "order.fetch".into(),
        payload,
        dedup_key: None,
        subject: None,
        lane: lane.map(str::to_owned),
        run_at_ms,
        created_ms: ms(FROZEN),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let mut tx = app.store.begin().await.unwrap();
    for j in [
        job(fetch.to_string(), Some("metrics"), now - 120_000),
        job("{}".into(), None, now - 90_000),
        job("{}".into(), Some("metrics"), now - 100_000),
        job("{}".into(), None, now + 60_000),
    ] {
        assert!(tx.enqueue_job(&j).await.unwrap());
    }
    tx.commit().await.unwrap();

    let scrape = eventually("the first fetch to be running", || async {
        let (_, scrape) = scrape(&app).await;
        let running = value(
            &scrape,
            "koogate_jobs",
            &[("kind", "order.fetch"), ("state", "running")],
        );
        (running == 1.0).then_some(scrape)
    })
    .await;
    assert_eq!(
        value(
            &scrape,
            "koogate_jobs",
            &[("kind", "order.fetch"), ("state", "waiting")]
        ),
        1.0
    );
    let waited = (chrono::Utc::now().timestamp_millis() - now) as f64 / 1000.0;
    let age = value(
        &scrape,
        "koogate_job_oldest_due_age_seconds",
        &[("kind", "order.fetch")],
    );
    assert!(
        (89.999..=90.001 + waited).contains(&age),
        "due 90 s before the enqueue, scraped within {waited} s of it: {age}"
    );
    assert_eq!(
        total(&scrape, "koogate_job_oldest_due_age_seconds"),
        age,
        "no other kind has a due job"
    );
    assert_eq!(
        value(
            &scrape,
            "koogate_jobs",
            &[("kind", "order.fetch"), ("state", "pending")]
        ),
        2.0
    );
    app.stop().await;
}

async fn usage_windows_not_taken_and_the_nearest_deadline_are_exported(backend: Backend) {
    use chrono::{DateTime, Duration, Utc};
    let now: DateTime<Utc> = FROZEN.parse().unwrap();
    let app = TestApp::spawn_with(Database::fresh(backend).await, frozen()).await;
    start_push_settled(&app).await;
    let (_, before) = scrape(&app).await;
    let a = crate::usage::metered_instance(&app, now - Duration::days(2), "ON_DEMAND").await;
    let b = crate::usage::metered_instance(&app, now - Duration::days(2), "ON_DEMAND").await;
    let at = |hh_mm: &str| {
        format!("2026-12-01T{hh_mm}:00Z")
            .parse::<DateTime<Utc>>()
            .unwrap()
    };
    use crate::usage::record;
    let answer = crate::usage::send(
        &app,
        &[
            record("a8", &a, "1", at("08:10")),
            record("a9", &a, "1", at("09:20")),
            record("a10", &a, "1", at("10:05")),
            record("b10", &b, "2", at("10:10")),
        ],
    )
    .await;
    assert_eq!(answer["accepted"], 4, "{answer}");
    // The 08:00 window was refused by KooGallery, the 09:00 one is being pushed.
    let windows = app.store.usage_windows(&a, 10).await.unwrap();
    let mut tx = app.store.begin().await.unwrap();
    for w in windows
        .iter()
        .filter(|w| w.begin_ms < ms("2026-12-01T10:00:00Z"))
    {
        let mut fixed = w.clone();
        fixed.state = if w.begin_ms == ms("2026-12-01T08:00:00Z") {
            window_state::PARKED
        } else {
            window_state::CLOSED
        }
        .to_owned();
        assert!(tx.close_usage_window(&fixed).await.unwrap());
    }
    tx.commit().await.unwrap();

    let (text, after) = scrape(&app).await;

    let unpushed = |scrape: &Scrape, state| {
        value(
            scrape,
            "koogate_usage_windows_unpushed",
            &[("state", state)],
        )
    };
    for state in ["open", "closed", "parked"] {
        assert_eq!(unpushed(&before, state), 0.0, "every state is exported");
        assert!(
            text.contains(&format!(
                "koogate_usage_windows_unpushed{{state=\"{state}\"}}"
            )),
            "{text}"
        );
    }
    assert_eq!(
        total(&before, "koogate_usage_window_deadline_seconds"),
        0.0,
        "no window, no deadline"
    );
    assert_eq!(unpushed(&after, "open"), 2.0, "10:00 of both instances");
    assert_eq!(unpushed(&after, "closed"), 1.0);
    assert_eq!(unpushed(&after, "parked"), 1.0);
    let deadline = |state| {
        value(
            &after,
            "koogate_usage_window_deadline_seconds",
            &[("state", state)],
        )
    };
    assert_eq!(deadline("closed"), 5400.0, "09:00–10:00 is due by 12:00");
    assert_eq!(deadline("open"), 9000.0, "10:00–11:00 is due by 13:00");
    for secret in [a.as_str(), b.as_str()] {
        assert!(!text.contains(secret), "/metrics names {secret}");
    }
    app.stop().await;
}
