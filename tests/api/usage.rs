//! Pay-per-use usage (merchant-api.md §6, spec §8.4): records taken through the management
//! API, summed exactly per window, pushed to the mock marketplace on KooGallery's cadence
//! under an injected clock, and reported back by the API and `queryInstance`.

use crate::helpers::{
    API_TOKEN, Backend, Database, Options, TestApp, eventually, new_instance, order_id,
};
use crate::mock_market::{self, MockServer};
use crate::on_both_backends;
use chrono::{DateTime, Duration, DurationRound, Utc};
use koogate::app::AppState;
use koogate::cli::usage as usage_cli;
use koogate::config::Settings;
use koogate::domain::instance::{Family, Instance};
use koogate::domain::usage::{self, Incoming, WindowSize};
use koogate::protocol::reply::AppInfo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

on_both_backends!(
    many_small_quantities_add_up_exactly_and_a_repeat_counts_once,
    bad_records_are_refused_alone_and_bad_batches_whole,
    a_record_sent_to_two_replicas_at_once_is_counted_once,
    a_window_is_pushed_at_five_past_once_even_when_the_answer_is_lost,
    late_usage_goes_into_the_open_window_linked_to_its_own,
    refused_windows_are_parked_with_the_reason,
    a_day_long_outage_is_caught_up_in_order_within_21_days,
    daily_windows_are_pushed_at_five_past_midnight,
    query_instance_reports_the_usage_so_far,
    a_package_answers_one_usage_info_entry_per_fee_item,
    bad_package_reports_are_refused_naming_the_field,
    an_operator_pushes_now_and_reads_the_windows,
);

/// A clock the test sets by hand, which runs on from there in real time, as the windows'
/// clock does between the test's jumps (retries come due on the database's clock).
#[derive(Clone)]
struct TestClock(Arc<Mutex<(i64, Instant)>>);

impl TestClock {
    fn at(t: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new((t.timestamp_millis(), Instant::now()))))
    }

    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = (t.timestamp_millis(), Instant::now());
    }

    fn options(&self, options: Options) -> Options {
        let now = self.0.clone();
        Options {
            clock: Some(Arc::new(move || {
                let (base, since) = *now.lock().unwrap();
                base + i64::try_from(since.elapsed().as_millis()).unwrap()
            })),
            ..options
        }
    }
}

/// The start of the hour `hours` hours before the real now: the mock marketplace checks
/// pushed windows against its own clock, so tests live in the recent past.
fn hours_ago(hours: i64) -> DateTime<Utc> {
    Utc::now().duration_trunc(Duration::hours(1)).unwrap() - Duration::hours(hours)
}

fn rfc(t: DateTime<Utc>) -> String {
    koogate::domain::events::rfc3339(t.timestamp_millis())
}

/// A provisioned pay-per-use instance created at `created`.
pub async fn metered_instance(app: &TestApp, created: DateTime<Utc>, charging: &str) -> String {
    let id = format!("inst-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut instance = Instance::new(
        id.clone(),
        Family::SaasV2,
        order_id(),
        false,
        created.timestamp_millis(),
    );
    instance.charging_mode = Some(charging.into());
    instance.app_info = Some(AppInfo {
        front_end_url: format!("https://app.example.net/{id}"),
        admin_url: None,
        user_name: None,
        password: None,
        memo: None,
    });
    let mut tx = app.store.begin().await.unwrap();
    assert!(tx.insert_instance(&instance).await.unwrap());
    tx.commit().await.unwrap();
    id
}

pub fn record(id: &str, instance: &str, quantity: &str, at: DateTime<Utc>) -> Value {
    json!({"id": id, "instanceId": instance, "quantity": quantity, "occurredAt": rfc(at)})
}

async fn post_usage(app: &TestApp, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(format!("http://{}/api/v1/usage", app.admin))
        .bearer_auth(API_TOKEN)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("the internal listener answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON answer"))
}

pub async fn send(app: &TestApp, records: &[Value]) -> Value {
    let (status, answer) = post_usage(app, &json!({ "records": records }).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn usage_of(app: &TestApp, instance: &str) -> Value {
    let (status, usage) = app
        .api_get(&format!("/api/v1/instances/{instance}/usage"))
        .await;
    assert_eq!(status, 200, "{usage}");
    usage
}

/// The instance's window beginning at `begin`, once `state` holds.
async fn window_in_state(
    app: &TestApp,
    instance: &str,
    begin: DateTime<Utc>,
    state: &str,
) -> Value {
    eventually(&format!("the window of {begin} to be {state}"), || async {
        usage_of(app, instance).await["windows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["begin"] == rfc(begin) && w["state"] == state)
            .cloned()
    })
    .await
}

async fn many_small_quantities_add_up_exactly_and_a_repeat_counts_once(backend: Backend) {
    let t0 = hours_ago(2);
    let clock = TestClock::at(t0 + Duration::minutes(59));
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(Options::default()),
    )
    .await;
    let instance = metered_instance(&app, t0 - Duration::days(1), "ON_DEMAND").await;
    // 0.1 + 0.2 is not 0.3 in floating point; 1000 records of 0.1, 0.2 and 0.0001 must add up to
    // exactly 100.0333 (334 × 0.1 + 333 × 0.2 + 333 × 0.0001).
    let records: Vec<Value> = (0..1000)
        .map(|i| {
            let quantity = ["0.1", "0.2", "0.0001"][i % 3];
            record(
                &format!("r{i}"),
                &instance,
                quantity,
                t0 + Duration::seconds(i as i64),
            )
        })
        .collect();

    let first = send(&app, &records).await;
    let repeat = send(&app, &records).await;
    let conflict = send(&app, &[record("r0", &instance, "5", t0)]).await;

    assert_eq!(
        (first["accepted"].as_u64(), first["errors"].as_u64()),
        (Some(1000), Some(0))
    );
    assert_eq!(first["results"][0]["window"], rfc(t0));
    assert_eq!(
        repeat["duplicates"], 1000,
        "a repeat is answered as a duplicate"
    );
    assert_eq!(conflict["results"][0]["result"], "conflict");
    assert!(
        conflict["results"][0]["message"]
            .as_str()
            .unwrap()
            .contains("0.1000"),
        "the first value is kept: {conflict}"
    );
    let usage = usage_of(&app, &instance).await;
    assert_eq!(usage["total"], "100.0333");
    assert_eq!(usage["windows"][0]["value"], "100.0333");
    assert_eq!(usage["windows"][0]["records"], 1000);
    assert_eq!(usage["windows"][0]["state"], "open");
}

async fn bad_records_are_refused_alone_and_bad_batches_whole(backend: Backend) {
    let now = hours_ago(1) + Duration::minutes(30);
    let clock = TestClock::at(now);
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(Options::default()),
    )
    .await;
    let metered = metered_instance(&app, now - Duration::days(30), "ON_DEMAND").await;
    let period = metered_instance(&app, now - Duration::days(1), "PERIOD").await;
    let released = metered_instance(&app, now - Duration::days(1), "ON_DEMAND").await;
    let mut tx = app.store.begin().await.unwrap();
    let mut gone = tx.instance_for_update(&released).await.unwrap().unwrap();
    gone.release(None, now.timestamp_millis());
    tx.update_instance(&gone).await.unwrap();
    tx.commit().await.unwrap();
    let at = now - Duration::minutes(5);
    let cases: Vec<(Value, &str, &str)> = vec![
        (record("a", &metered, "-1", at), "quantity", "negative"),
        (record("b", &metered, "0", at), "quantity", "zero"),
        (
            record("c", &metered, "1.00001", at),
            "quantity",
            "five decimals",
        ),
        (
            record("d", &metered, "1e3", at),
            "quantity",
            "exponent form",
        ),
        (record("e", &metered, "abc", at), "quantity", "not a number"),
        (
            json!({"id": "f", "instanceId": metered, "quantity": 1.5, "occurredAt": rfc(at)}),
            "quantity",
            "a JSON number",
        ),
        (
            json!({"id": "g", "instanceId": metered, "quantity": "1", "occurredAt": "08:12 today"}),
            "occurredAt",
            "a time that does not parse",
        ),
        (
            record("h", &metered, "1", now + Duration::minutes(5)),
            "occurredAt",
            "in the future",
        ),
        (
            record("i", &metered, "1", now - Duration::days(22)),
            "occurredAt",
            "older than 21 days",
        ),
        (
            record("nul\u{0}id", &metered, "1", at),
            "id",
            "a NUL in the id",
        ),
        (
            record("l", "bad\u{0}instance", "1", at),
            "instanceId",
            "a NUL in the instance id",
        ),
        (
            record("j", "no-such-instance", "1", at),
            "instanceId",
            "unknown instance",
        ),
        (
            record("k", &released, "1", at),
            "instanceId",
            "released instance",
        ),
        (
            record("l", &period, "1", at),
            "instanceId",
            "not pay-per-use",
        ),
        (
            json!({"instanceId": metered, "quantity": "1", "occurredAt": rfc(at)}),
            "id",
            "no id",
        ),
    ];
    let mut records: Vec<Value> = cases.iter().map(|(r, ..)| r.clone()).collect();
    records.push(record("ok", &metered, "2.5", at));

    let answer = send(&app, &records).await;

    for (i, (_, field, why)) in cases.iter().enumerate() {
        let result = &answer["results"][i];
        assert_eq!(
            (result["result"].as_str(), result["field"].as_str()),
            (Some("error"), Some(*field)),
            "{why}: {result}"
        );
    }
    assert_eq!(answer["results"][cases.len()]["result"], "accepted");
    assert_eq!(answer["errors"], cases.len());
    let usage = usage_of(&app, &metered).await;
    assert_eq!(
        usage["total"], "2.5000",
        "nothing of an invalid record is stored"
    );

    let too_many: Vec<Value> = (0..1001)
        .map(|i| record(&format!("m{i}"), &metered, "1", at))
        .collect();
    let batch_cases = [
        ("{not json".to_owned(), "body", "not JSON"),
        ("{}".to_owned(), "records", "no records"),
        (
            r#"{"records":"x"}"#.to_owned(),
            "records",
            "records not a list",
        ),
        (r#"{"records":[]}"#.to_owned(), "records", "empty"),
        (
            json!({ "records": too_many }).to_string(),
            "records",
            "1001 records",
        ),
    ];
    for (body, field, why) in batch_cases {
        let (status, problem) = post_usage(&app, &body).await;
        assert_eq!(status, 422, "{why}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{why}: {problem}");
    }
    assert_eq!(usage_of(&app, &metered).await["total"], "2.5000");
}

async fn a_record_sent_to_two_replicas_at_once_is_counted_once(backend: Backend) {
    let t0 = hours_ago(1);
    let clock = TestClock::at(t0 + Duration::minutes(40));
    let first = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(Options::default()),
    )
    .await;
    let second = TestApp::spawn_with(first.db.shared(), clock.options(Options::default())).await;
    let instance = metered_instance(&first, t0 - Duration::days(1), "ON_DEMAND").await;
    let records: Vec<Value> = (0..50)
        .map(|i| {
            record(
                &format!("twice-{i}"),
                &instance,
                "0.5",
                t0 + Duration::minutes(1),
            )
        })
        .collect();

    let (a, b) = tokio::join!(send(&first, &records), send(&second, &records));

    let accepted = a["accepted"].as_u64().unwrap() + b["accepted"].as_u64().unwrap();
    let duplicates = a["duplicates"].as_u64().unwrap() + b["duplicates"].as_u64().unwrap();
    assert_eq!((accepted, duplicates), (50, 50), "{a} {b}");
    assert_eq!(usage_of(&first, &instance).await["total"], "25.0000");
}

async fn a_window_is_pushed_at_five_past_once_even_when_the_answer_is_lost(backend: Backend) {
    let mock = MockServer::start().await;
    let t0 = hours_ago(3);
    let clock = TestClock::at(t0 + Duration::minutes(10));
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(mock_market::options(&mock)),
    )
    .await;
    let instance = metered_instance(&app, t0 - Duration::days(2), "ON_DEMAND").await;
    send(
        &app,
        &[record("u1", &instance, "1.25", t0 + Duration::minutes(9))],
    )
    .await;

    clock.set(t0 + Duration::minutes(64) + Duration::seconds(50));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(mock.usage_taken().await.is_empty(), "not pushed before :05");
    // The first push gets through but its answer is lost; the retry is the same record.
    mock.fail_next("lose_answer", 1).await;
    clock.set(t0 + Duration::minutes(65));

    let pushed = window_in_state(&app, &instance, t0, "pushed").await;
    let taken = mock.usage_taken().await;
    assert_eq!(taken.len(), 1, "one record per window: {taken:?}");
    let sent = &taken[0];
    assert_eq!(sent.instance_id, instance);
    assert_eq!(sent.usage_value, "1.2500");
    assert_eq!(sent.begin_time, usage::wire_time(t0.timestamp_millis()));
    assert_eq!(
        sent.end_time,
        usage::wire_time((t0 + Duration::hours(1)).timestamp_millis())
    );
    assert_eq!(pushed["meteringSn"], sent.metering_sn.as_str());
    assert_eq!(
        pushed["code"], "005",
        "the retry was known as a duplicate: {pushed}"
    );
    let calls: Vec<_> = mock
        .calls()
        .await
        .into_iter()
        .filter(|c| c.path.ends_with("/isv/usage-data"))
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        calls[0].body, calls[1].body,
        "the retry sends the same record"
    );
    let events = app.feed(1).await;
    let pushed_events: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "usage.pushed")
        .collect();
    assert_eq!(pushed_events.len(), 1, "{events:?}");
    assert_eq!(pushed_events[0]["data"]["usageWindow"]["value"], "1.2500");
}

async fn late_usage_goes_into_the_open_window_linked_to_its_own(backend: Backend) {
    let mock = MockServer::start().await;
    let t0 = hours_ago(3);
    let clock = TestClock::at(t0 + Duration::minutes(30));
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(mock_market::options(&mock)),
    )
    .await;
    let instance = metered_instance(&app, t0 - Duration::days(1), "ON_DEMAND").await;
    send(
        &app,
        &[record("early", &instance, "3", t0 + Duration::minutes(20))],
    )
    .await;
    clock.set(t0 + Duration::minutes(65));
    window_in_state(&app, &instance, t0, "pushed").await;

    let late = send(
        &app,
        &[record(
            "late",
            &instance,
            "0.75",
            t0 + Duration::minutes(50),
        )],
    )
    .await;

    let next = t0 + Duration::hours(1);
    assert_eq!(late["results"][0]["result"], "accepted");
    assert_eq!(late["results"][0]["window"], rfc(next));
    assert_eq!(late["results"][0]["carriedFrom"], rfc(t0));
    let usage = usage_of(&app, &instance).await;
    assert_eq!(usage["total"], "3.7500");
    let open = &usage["windows"][0];
    assert_eq!(
        (open["begin"].as_str(), open["value"].as_str()),
        (Some(rfc(next).as_str()), Some("0.7500"))
    );
    assert_eq!(open["carriedIn"][0]["from"], rfc(t0));
    assert_eq!(
        usage["windows"][1]["value"], "3.0000",
        "a pushed value never changes"
    );
    clock.set(next + Duration::minutes(65));
    window_in_state(&app, &instance, next, "pushed").await;
    let values: Vec<String> = mock
        .usage_taken()
        .await
        .into_iter()
        .map(|r| r.usage_value)
        .collect();
    assert_eq!(values, ["3.0000", "0.7500"]);
}

async fn refused_windows_are_parked_with_the_reason(backend: Backend) {
    let mock = MockServer::start().await;
    let t0 = hours_ago(4);
    let clock = TestClock::at(t0 + Duration::minutes(30));
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(mock_market::options(&mock)),
    )
    .await;
    let too_old = metered_instance(&app, t0 - Duration::days(1), "ON_DEMAND").await;
    send(
        &app,
        &[record("x", &too_old, "1", t0 + Duration::minutes(1))],
    )
    .await;
    mock.fail_with_code("MKT.9004", 1).await;
    clock.set(t0 + Duration::minutes(65));

    let parked = window_in_state(&app, &too_old, t0, "parked").await;

    assert_eq!(parked["code"], "MKT.9004");
    assert!(
        parked["reason"]
            .as_str()
            .unwrap()
            .contains("revenue at risk"),
        "{parked}"
    );
    let next = t0 + Duration::hours(1);
    let refused = metered_instance(&app, t0 - Duration::days(1), "ON_DEMAND").await;
    send(
        &app,
        &[record("y", &refused, "1", next + Duration::minutes(1))],
    )
    .await;
    mock.usage_codes("003", 1).await;
    clock.set(next + Duration::minutes(65));
    let parked = window_in_state(&app, &refused, next, "parked").await;
    assert_eq!(parked["code"], "003");
    assert!(
        parked["reason"].as_str().unwrap().contains("usage value"),
        "{parked}"
    );
    let events = app.feed(2).await;
    let failed = events
        .iter()
        .filter(|e| e["type"] == "usage.push_failed")
        .count();
    assert_eq!(failed, 2, "{events:?}");
    let taken = mock.usage_taken().await;
    assert!(taken.is_empty(), "{taken:?} {:?}", mock.calls().await);
}

async fn a_day_long_outage_is_caught_up_in_order_within_21_days(backend: Backend) {
    let mock = MockServer::start().await;
    let start = hours_ago(26);
    let clock = TestClock::at(start);
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(mock_market::options(&mock)),
    )
    .await;
    let instance = metered_instance(&app, start - Duration::days(23), "ON_DEMAND").await;
    // Usage as it arrived while the server was down: the day before, hour by hour, and one
    // window from 22 days ago that no push reached in time.
    let mut arrivals: Vec<(DateTime<Utc>, String)> = (0..24)
        .map(|h| {
            (
                start + Duration::hours(h) + Duration::minutes(30),
                format!("{}.5", h + 1),
            )
        })
        .collect();
    arrivals.insert(0, (start - Duration::days(22), "9".to_owned()));
    for (i, (at, quantity)) in arrivals.iter().enumerate() {
        let mut tx = app.store.begin().await.unwrap();
        let outcome = usage::ingest(
            tx.as_mut(),
            &[Incoming {
                id: format!("o{i}"),
                instance_id: instance.clone(),
                quantity: quantity.clone(),
                occurred_at: rfc(*at),
            }],
            WindowSize::Hour,
            at.timestamp_millis(),
        )
        .await
        .unwrap();
        assert!(
            matches!(outcome[0], usage::Outcome::Accepted { .. }),
            "{outcome:?}"
        );
        tx.commit().await.unwrap();
    }
    let db = app.crash().await;

    let clock = TestClock::at(start + Duration::hours(24) + Duration::minutes(6));
    let app = TestApp::spawn_with(db, clock.options(mock_market::options(&mock))).await;

    let last = start + Duration::hours(23);
    window_in_state(&app, &instance, last, "pushed").await;
    let taken = mock.usage_taken().await;
    let begins: Vec<String> = taken.iter().map(|r| r.begin_time.clone()).collect();
    let expected: Vec<String> = (0..24)
        .map(|h| usage::wire_time((start + Duration::hours(h)).timestamp_millis()))
        .collect();
    assert_eq!(begins, expected, "every missed window, oldest first");
    assert_eq!(taken[23].usage_value, "24.5000");
    let old = start - Duration::days(22);
    let old = old.duration_trunc(Duration::hours(1)).unwrap();
    let parked = window_in_state(&app, &instance, old, "parked").await;
    assert!(
        parked["reason"].as_str().unwrap().contains("21 days"),
        "{parked}"
    );
    let calls = mock
        .calls()
        .await
        .into_iter()
        .filter(|c| c.path.ends_with("/isv/usage-data"))
        .count();
    assert_eq!(calls, 1, "24 windows fit one call of at most 100 records");
}

async fn daily_windows_are_pushed_at_five_past_midnight(backend: Backend) {
    let mock = MockServer::start().await;
    let midnight = Utc::now().duration_trunc(Duration::days(1)).unwrap() - Duration::days(1);
    let day = midnight - Duration::days(1);
    let clock = TestClock::at(midnight - Duration::minutes(30));
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        clock.options(mock_market::options(&mock).env("KOOGATE_USAGE_WINDOW", "day")),
    )
    .await;
    let instance = metered_instance(&app, day - Duration::days(1), "ON_DEMAND").await;
    send(
        &app,
        &[record(
            "d1",
            &instance,
            "10",
            midnight - Duration::minutes(40),
        )],
    )
    .await;
    send(
        &app,
        &[record("d2", &instance, "0.0005", day + Duration::hours(1))],
    )
    .await;
    let open = &usage_of(&app, &instance).await["windows"][0];
    assert_eq!(open["begin"], rfc(day));
    assert_eq!(open["end"], rfc(midnight));
    assert_eq!(open["dueAt"], rfc(midnight + Duration::minutes(5)));
    assert_eq!(open["deadline"], rfc(midnight + Duration::hours(1)));

    clock.set(midnight + Duration::minutes(4) + Duration::seconds(50));
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(mock.usage_taken().await.is_empty(), "not before 00:05");
    clock.set(midnight + Duration::minutes(5));

    window_in_state(&app, &instance, day, "pushed").await;
    let taken = mock.usage_taken().await;
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].usage_value, "10.0005");
    assert_eq!(
        taken[0].end_time,
        usage::wire_time(midnight.timestamp_millis())
    );
}

async fn query_instance_reports_the_usage_so_far(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let order = order_id();
    let mut info = mock_market::order(&order, "sku-metered", "20270101000000");
    info["orderLine"][0]["chargingMode"] = json!("ON_DEMAND");
    mock.register(info).await;
    let created = app.saas(&new_instance(&order, "biz-metered")).await;
    let instance = created.json()["instanceId"].as_str().unwrap().to_owned();
    eventually("the order's charging mode", || async {
        let i = app.store.instance(&instance).await.unwrap().unwrap();
        (i.charging_mode.as_deref() == Some("ON_DEMAND")).then_some(())
    })
    .await;
    let query =
        format!(r#"{{"activity":"queryInstance","instanceId":"{instance}","testFlag":"0"}}"#);
    let before = app.saas(&query).await;

    let now = Utc::now();
    send(
        &app,
        &[
            record("q1", &instance, "2", now),
            record("q2", &instance, "0.5", now),
        ],
    )
    .await;
    let after = app.saas(&query).await;

    assert!(
        String::from_utf8_lossy(&before.body).contains(r#""usageInfo":[{"usageValue":0.0000,"#),
        "{}",
        String::from_utf8_lossy(&before.body)
    );
    let text = String::from_utf8_lossy(&after.body).into_owned();
    assert!(
        text.contains(r#""usageValue":2.5000,"#),
        "exact decimal, no float: {text}"
    );
    let usage_info = &after.json()["info"][0]["usageInfo"][0];
    assert_eq!(usage_info["statisticalTime"].as_str().unwrap().len(), 17);
}

async fn put_usage_info(app: &TestApp, instance: &str, body: &str) -> (u16, Value) {
    app.api_put(
        &format!("/api/v1/instances/{instance}/usage-info"),
        body,
        None,
    )
    .await
}

fn query_instance(instance: &str) -> String {
    format!(r#"{{"activity":"queryInstance","instanceId":"{instance}","testFlag":"0"}}"#)
}

async fn a_package_answers_one_usage_info_entry_per_fee_item(backend: Backend) {
    // The real clock: queryInstance's signature is checked against it.
    let now = Utc::now();
    let app = TestApp::spawn(backend).await;
    let package = metered_instance(&app, now - Duration::days(3), "ON_DEMAND_PKG").await;
    let before = app.saas(&query_instance(&package)).await;

    let (status, kept) = put_usage_info(
        &app,
        &package,
        &json!({"usageInfo": [
            {"relatedInstanceId": "ppu-b", "usageValue": "12.5", "statisticalTime": "2026-11-30T10:00:00.250Z"},
            {"relatedInstanceId": "ppu-a", "usageValue": "0", "statisticalTime": "2026-11-30T18:00:00+08:00"},
        ]})
        .to_string(),
    )
    .await;
    let answer = app.saas(&query_instance(&package)).await;

    let front = format!("https://app.example.net/{package}");
    assert_eq!(
        String::from_utf8_lossy(&before.body),
        format!(
            r#"{{"resultCode":"000000","resultMsg":"success.","info":[{{"instanceId":"{package}","appInfo":{{"frontEndUrl":"{front}"}},"usageInfo":[]}}]}}"#
        ),
        "a package with nothing reported yet answers an empty list"
    );
    assert_eq!(status, 200, "{kept}");
    assert_eq!(
        kept["usageInfo"][0],
        json!({"relatedInstanceId": "ppu-b", "usageValue": "12.5000",
               "statisticalTime": "2026-11-30T10:00:00.250Z", "reportedAt": kept["usageInfo"][0]["reportedAt"]})
    );
    assert_eq!(
        String::from_utf8_lossy(&answer.body),
        format!(
            r#"{{"resultCode":"000000","resultMsg":"success.","info":[{{"instanceId":"{package}","appInfo":{{"frontEndUrl":"{front}"}},"usageInfo":[{{"relatedInstanceId":"ppu-b","usageValue":12.5000,"statisticalTime":"20261130100000250"}},{{"relatedInstanceId":"ppu-a","usageValue":0.0000,"statisticalTime":"20261130100000000"}}]}}]}}"#
        ),
        "one entry per fee item, in the order reported, values exact, times UTC"
    );
    assert!(answer.signed_with(crate::helpers::KEY));

    // A new report replaces the list whole; a fee item without a time is counted now.
    let (status, _) = put_usage_info(
        &app,
        &package,
        r#"{"usageInfo":[{"relatedInstanceId":"ppu-a","usageValue":"3.0001"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    let replaced = app.saas(&query_instance(&package)).await.json();
    let entries = replaced["info"][0]["usageInfo"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 1, "{replaced}");
    assert_eq!(entries[0]["relatedInstanceId"], "ppu-a");
    assert_eq!(entries[0]["usageValue"].to_string(), "3.0001");
    let counted = entries[0]["statisticalTime"].as_str().unwrap();
    let counted = chrono::NaiveDateTime::parse_from_str(counted, "%Y%m%d%H%M%S%3f")
        .expect("yyyyMMddHHmmssSSS")
        .and_utc();
    assert!(
        (counted - now).num_seconds().abs() < 60,
        "counted at the report: {counted}"
    );
    let (status, shown) = app
        .api_get(&format!("/api/v1/instances/{package}/usage-info"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(shown["instanceId"], package.as_str());
    assert_eq!(shown["usageInfo"][0]["usageValue"], "3.0001");

    let (status, _) = put_usage_info(&app, &package, r#"{"usageInfo":[]}"#).await;
    assert_eq!(status, 200);
    let cleared = app.saas(&query_instance(&package)).await.json();
    assert_eq!(cleared["info"][0]["usageInfo"], json!([]));
}

async fn bad_package_reports_are_refused_naming_the_field(backend: Backend) {
    // The real clock: queryInstance's signature is checked against it.
    let now = Utc::now();
    let app = TestApp::spawn(backend).await;
    let package = metered_instance(&app, now - Duration::days(3), "ON_DEMAND_PKG").await;
    let metered = metered_instance(&app, now - Duration::days(3), "ON_DEMAND").await;
    let released = metered_instance(&app, now - Duration::days(3), "ON_DEMAND_PKG").await;
    let mut tx = app.store.begin().await.unwrap();
    let mut gone = tx.instance_for_update(&released).await.unwrap().unwrap();
    gone.release(None, now.timestamp_millis());
    tx.update_instance(&gone).await.unwrap();
    tx.commit().await.unwrap();
    let good = r#"{"usageInfo":[{"relatedInstanceId":"ppu-1","usageValue":"1.5"}]}"#;
    assert_eq!(put_usage_info(&app, &package, good).await.0, 200);

    for (instance, status, why) in [
        ("no-such-instance", 404, "unknown instance"),
        (
            metered.as_str(),
            409,
            "a pay-per-use, not a package, instance",
        ),
        (released.as_str(), 409, "a released package"),
    ] {
        let (got, problem) = put_usage_info(&app, instance, good).await;
        assert_eq!(got, status, "{why}: {problem}");
        assert_eq!(problem["status"], status, "{why}: a problem document");
        let (got, _) = app
            .api_get(&format!("/api/v1/instances/{instance}/usage-info"))
            .await;
        assert_eq!(got, status, "{why}: read back");
    }

    let item = |related: Value, value: Value, at: Value| {
        json!({"usageInfo": [{"relatedInstanceId": related, "usageValue": value, "statisticalTime": at}]})
            .to_string()
    };
    let ok_at = json!(rfc(now - Duration::minutes(5)));
    let too_many = json!({"usageInfo": (0..101)
        .map(|i| json!({"relatedInstanceId": format!("p{i}"), "usageValue": "1"}))
        .collect::<Vec<_>>()})
    .to_string();
    let cases: Vec<(String, &str, &str)> = vec![
        (item(json!("p"), json!("-1"), ok_at.clone()), "usageInfo[0].usageValue", "negative"),
        (item(json!("p"), json!("1.00001"), ok_at.clone()), "usageInfo[0].usageValue", "five decimals"),
        (item(json!("p"), json!("1e3"), ok_at.clone()), "usageInfo[0].usageValue", "exponent form"),
        (item(json!("p"), json!(1.5), ok_at.clone()), "usageInfo[0].usageValue", "a JSON number"),
        (item(json!("p"), json!("100000000"), ok_at.clone()), "usageInfo[0].usageValue", "over Double(12,4)"),
        (item(json!(""), json!("1"), ok_at.clone()), "usageInfo[0].relatedInstanceId", "empty"),
        (item(json!("x".repeat(65)), json!("1"), ok_at.clone()), "usageInfo[0].relatedInstanceId", "over 64 bytes"),
        (item(json!(7), json!("1"), ok_at.clone()), "usageInfo[0].relatedInstanceId", "not a string"),
        (item(json!("p"), json!("1"), json!("yesterday")), "usageInfo[0].statisticalTime", "a time that does not parse"),
        (item(json!("p"), json!("1"), json!(rfc(now + Duration::minutes(5)))), "usageInfo[0].statisticalTime", "in the future"),
        (
            r#"{"usageInfo":[{"relatedInstanceId":"p","usageValue":"1"},{"relatedInstanceId":"p","usageValue":"2"}]}"#.to_owned(),
            "usageInfo[1].relatedInstanceId",
            "a fee item listed twice",
        ),
        (
            r#"{"usageInfo":[{"relatedInstanceId":"p","usageValue":"1","dashboardUrl":"x"}]}"#.to_owned(),
            "usageInfo[0].dashboardUrl",
            "an unknown field",
        ),
        (r#"{"usageInfo":[{"usageValue":"1"}]}"#.to_owned(), "usageInfo[0].relatedInstanceId", "no related instance"),
        (too_many, "usageInfo", "101 fee items"),
        (r#"{"usageInfo":{}}"#.to_owned(), "usageInfo", "not a list"),
        ("{not json".to_owned(), "body", "not JSON"),
    ];
    for (body, field, why) in &cases {
        let (status, problem) = put_usage_info(&app, &package, body).await;
        assert_eq!(status, 422, "{why}: {problem}");
        assert_eq!(problem["errors"][0]["field"], *field, "{why}: {problem}");
    }

    let answer = app.saas(&query_instance(&package)).await.json();
    assert_eq!(
        answer["info"][0]["usageInfo"][0]["relatedInstanceId"], "ppu-1",
        "nothing of a refused report is stored: {answer}"
    );
    assert_eq!(answer["info"][0]["usageInfo"].as_array().unwrap().len(), 1);
}

async fn an_operator_pushes_now_and_reads_the_windows(backend: Backend) {
    let mock = MockServer::start().await;
    let t0 = hours_ago(2);
    let clock = TestClock::at(t0 + Duration::minutes(30));
    let options = clock.options(mock_market::options(&mock));
    let settings =
        Settings::load_with(None, |name| options.env.get(name).cloned()).expect("settings load");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let instance = metered_instance(&app, t0 - Duration::days(1), "ON_DEMAND").await;
    send(
        &app,
        &[record("op", &instance, "4.2", t0 + Duration::minutes(10))],
    )
    .await;
    // The window has ended but is not due for another 4 minutes.
    clock.set(t0 + Duration::minutes(61));
    let mut state = AppState::new(
        &settings,
        app.store.clone(),
        settings.configured_provisioner(),
    );
    state.services.clock = clock.options(Options::default()).clock.unwrap();

    let said = usage_cli::push(&state.usage_push(), false, 0)
        .await
        .unwrap();
    let shown = usage_cli::show(app.store.as_ref(), &instance)
        .await
        .unwrap()
        .expect("a known instance");

    // The server's own push job may send the window closed here at the same moment: then
    // one of the two is answered 005 and the window is still pushed once.
    assert!(said.contains("1 windows closed"), "{said}");
    let taken = mock.usage_taken().await;
    assert_eq!(taken.len(), 1, "{taken:?}");
    assert_eq!(taken[0].usage_value, "4.2000");
    assert!(shown.contains("total     4.2000"), "{shown}");
    assert!(shown.contains(" pushed "), "{shown}");
    assert!(
        usage_cli::show(app.store.as_ref(), "nobody")
            .await
            .unwrap()
            .is_none(),
        "an unknown instance"
    );
}

/// Usage records ingested per second through `POST /api/v1/usage`, on each store: the
/// README's figure. Run with
/// `cargo test --release --test api usage_ingest_throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "a benchmark: run it on purpose, in a release build"]
async fn usage_ingest_throughput() {
    const CLIENTS: usize = 8;
    const BATCHES: usize = 25;
    const PER_BATCH: usize = 1000;
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let app = TestApp::spawn(backend).await;
        let instance = metered_instance(&app, Utc::now() - Duration::days(1), "ON_DEMAND").await;
        let at = Utc::now() - Duration::minutes(1);
        let bodies: Vec<Vec<String>> = (0..CLIENTS)
            .map(|c| {
                (0..BATCHES)
                    .map(|b| {
                        let records: Vec<Value> = (0..PER_BATCH)
                            .map(|i| record(&format!("b{c}-{b}-{i}"), &instance, "0.0001", at))
                            .collect();
                        json!({ "records": records }).to_string()
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let app = &app;
        futures_util::future::join_all(bodies.into_iter().map(|batches| async move {
            for body in batches {
                let (status, answer) = post_usage(app, &body).await;
                assert_eq!(
                    (status, answer["accepted"].as_u64()),
                    (200, Some(PER_BATCH as u64))
                );
            }
        }))
        .await;
        let elapsed = started.elapsed();
        let total = CLIENTS * BATCHES * PER_BATCH;
        assert_eq!(
            usage_of(app, &instance).await["total"],
            format!("{}.0000", total / 10_000)
        );
        println!(
            "{backend:?}: {total} records in {:.2} s = {:.0} records/s ({CLIENTS} clients, batches of {PER_BATCH})",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
    }
}
