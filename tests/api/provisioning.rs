//! Provisioning by the merchant's app (merchant-api.md §3, D12): the fast path, a slow
//! app reporting later through the API, a failing app, and SaaS 1.0.

use crate::helpers::{
    Backend, Database, KEY, Options, TestApp, V1Params, eventually, java_aes, new_instance,
    order_id,
};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use crate::receiver::Receiver;
use serde_json::Value;

on_both_backends!(
    an_unusable_answer_is_a_failed_attempt_that_says_why,
    the_fast_path_answers_with_the_apps_info,
    a_slow_app_reports_later_through_the_api,
    a_failing_apps_code_reaches_koogallery_and_the_retry_asks_again,
    saas_v1_answers_at_once_and_queries_supply_the_info_once_known,
    an_app_that_never_answers_holds_no_callback_past_its_deadline,
);

pub(crate) const APP_INFO: &str = r#"{"appInfo":{"frontEndUrl":"https://tenant.example.com/t/1","userName":"owner","password":"pw-Secret-42","memo":"welcome"}}"#;

pub(crate) async fn app_mode(backend: Backend, wait_ms: &str) -> (TestApp, MockServer, Receiver) {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    let options = receiver
        .options(mock_market::options(&mock))
        .env("KOOGATE_PROVISIONING", "app")
        .env("KOOGATE_PROVISIONING_WAIT_MS", wait_ms);
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    (app, mock, receiver)
}

fn query(id: &str) -> String {
    format!(r#"{{"activity":"queryInstance","instanceId":"{id}","testFlag":"0"}}"#)
}

async fn the_fast_path_answers_with_the_apps_info(backend: Backend) {
    let (app, mock, receiver) = app_mode(backend, "2000").await;
    receiver.provision_with(Some(APP_INFO));
    let o = order_id();
    mock.register(order(&o, "sku-app", "20270101000000")).await;
    let id = format!("p-{o}");

    let first = app.saas(&new_instance(&o, &id)).await;
    let again = app.saas(&new_instance(&o, "another-business-id")).await;

    assert_eq!(first.code(), "000000", "{}", first.msg());
    assert_eq!(first.json()["instanceId"], id.as_str());
    assert!(first.signed_with(KEY));
    assert_eq!(first.body, again.body, "repeats are byte-identical");
    let info = app.saas(&query(&id)).await;
    assert_eq!(info.code(), "000000");
    assert_eq!(
        info.json()["info"][0]["appInfo"]["frontEndUrl"],
        "https://tenant.example.com/t/1"
    );
    assert_eq!(
        info.json()["info"][0]["appInfo"]["password"],
        "pw-Secret-42"
    );

    let (status, resource) = app.api_get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(resource["state"], "active");
    assert_eq!(resource["skuCode"], "sku-app");
    assert_eq!(resource["appInfo"]["userName"], "owner");
    assert!(
        !resource.to_string().contains("pw-Secret-42"),
        "the password is write-only"
    );
    let feed = app.feed(4).await;
    assert!(
        !Value::Array(feed.clone())
            .to_string()
            .contains("pw-Secret-42")
    );
    let types: Vec<&str> = feed.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "instance.created",
            "instance.order_updated",
            "instance.provision_requested",
            "instance.provisioned"
        ]
    );
    // The order facts reached the app with the request.
    let asked = receiver
        .processed()
        .into_iter()
        .find(|d| d.kind() == "instance.provision_requested")
        .unwrap();
    assert_eq!(
        asked.body["data"]["instance"]["customer"]["id"],
        "cust-0001"
    );
    // The audit record holds what was sent.
    let recent = app.records(10).await;
    let record = recent.iter().find(|r| r.response_body == first.body);
    assert!(
        record.is_some(),
        "the callback's record has the answer sent"
    );
}

async fn a_slow_app_reports_later_through_the_api(backend: Backend) {
    let (app, mock, receiver) = app_mode(backend, "300").await;
    receiver.provision_with(None);
    let o = order_id();
    mock.register(order(&o, "sku-slow", "20270101000000")).await;
    let id = format!("s-{o}");

    let first = app.saas(&new_instance(&o, &id)).await;
    assert_eq!(first.code(), "000004", "{}", first.msg());
    assert_eq!(first.json()["instanceId"], id.as_str());
    eventually("the app to be asked", || async {
        receiver
            .processed()
            .iter()
            .any(|d| d.kind() == "instance.provision_requested")
            .then_some(())
    })
    .await;
    let pending = app.saas(&query(&id)).await;
    assert_eq!(pending.code(), "000004", "D12: still provisioning");
    assert!(pending.json().get("info").is_none());

    let path = format!("/api/v1/instances/{id}/provisioning");
    let over_long = format!(
        r#"{{"state":"succeeded","appInfo":{{"frontEndUrl":"https://x/{}","password":"{}"}}}}"#,
        "a".repeat(520),
        "p".repeat(80)
    );
    let (status, problem) = app.api_put(&path, &over_long, None).await;
    assert_eq!(status, 422, "{problem}");
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["appInfo.frontEndUrl", "appInfo.password"]);
    let (status, _) = app.api_put(&path, r#"{"state":"done"}"#, None).await;
    assert_eq!(status, 422);
    let (status, _) = app
        .api_put(
            "/api/v1/instances/nope/provisioning",
            &APP_INFO.replace("{\"appInfo\"", "{\"state\":\"succeeded\",\"appInfo\""),
            None,
        )
        .await;
    assert_eq!(status, 404);

    let body = APP_INFO.replace("{\"appInfo\"", "{\"state\":\"succeeded\",\"appInfo\"");
    let (status, resource) = app.api_put(&path, &body, Some("key-1")).await;
    assert_eq!(status, 200, "{resource}");
    assert_eq!(resource["state"], "active");
    assert!(resource["appInfo"].get("password").is_none());
    let (status, _) = app.api_put(&path, &body, Some("key-1")).await;
    assert_eq!(status, 200, "the same key and body answer again");
    let (status, problem) = app
        .api_put(&path, &body.replace("welcome", "hello"), Some("key-1"))
        .await;
    assert_eq!(status, 409, "{problem}");

    let ready = app.saas(&query(&id)).await;
    assert_eq!(ready.code(), "000000");
    assert_eq!(ready.json()["info"][0]["appInfo"]["userName"], "owner");
    let retry = app.saas(&new_instance(&o, "later-call")).await;
    assert_eq!(retry.code(), "000000", "the stored answer became 000000");
    assert_eq!(retry.json()["instanceId"], id.as_str());
    assert_eq!(app.saas(&new_instance(&o, "x")).await.body, retry.body);

    app.saas(&format!(
        r#"{{"activity":"releaseInstance","instanceId":"{id}"}}"#
    ))
    .await;
    let (status, _) = app.api_put(&path, &body, None).await;
    assert_eq!(status, 409, "a released instance takes no report");
}

async fn a_failing_apps_code_reaches_koogallery_and_the_retry_asks_again(backend: Backend) {
    let (app, mock, receiver) = app_mode(backend, "2000").await;
    receiver.provision_with(Some(
        r#"{"failed":{"resultCode":"000101","message":"mobile number already exists"}}"#,
    ));
    let o = order_id();
    mock.register(order(&o, "sku-fail", "20270101000000")).await;
    let id = format!("x-{o}");

    let first = app.saas(&new_instance(&o, &id)).await;
    assert_eq!(first.code(), "000101", "{}", first.msg());
    assert_eq!(first.msg(), "mobile number already exists");
    assert!(first.signed_with(KEY));
    let (_, resource) = app.api_get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(resource["state"], "provisioning_failed");
    assert_eq!(app.saas(&query(&id)).await.code(), "000004", "D12");

    receiver.provision_with(Some(APP_INFO));
    let retry = app.saas(&new_instance(&o, "a-new-business-id")).await;
    assert_eq!(retry.code(), "000000", "{}", retry.msg());
    assert_eq!(retry.json()["instanceId"], id.as_str(), "the same instance");
    let asked = receiver
        .processed()
        .iter()
        .filter(|d| d.kind() == "instance.provision_requested")
        .count();
    assert_eq!(asked, 2, "the retry asked the app again");
}

async fn saas_v1_answers_at_once_and_queries_supply_the_info_once_known(backend: Backend) {
    let receiver = Receiver::start().await;
    let options = receiver
        .options(Options::default())
        .env("KOOGATE_PROVISIONING", "app");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    receiver.provision_with(None);
    let o = order_id();
    let id = format!("v1-{o}");
    let answer = app
        .v1_get(
            &V1Params::new("newInstance")
                .with("businessId", &id)
                .with("orderId", &o)
                .with("productId", "00301-666666-0--0")
                .with("customerId", "cust-v1")
                .with("testFlag", "0"),
        )
        .await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    assert_eq!(answer.json()["instanceId"], id.as_str());
    assert!(answer.json().get("appInfo").is_none());
    let asked = eventually("the app to be asked", || async {
        receiver
            .processed()
            .into_iter()
            .find(|d| d.kind() == "instance.provision_requested")
    })
    .await;
    assert_eq!(asked.body["data"]["instance"]["customer"]["id"], "cust-v1");

    let body = APP_INFO.replace("{\"appInfo\"", "{\"state\":\"succeeded\",\"appInfo\"");
    let (status, _) = app
        .api_put(&format!("/api/v1/instances/{id}/provisioning"), &body, None)
        .await;
    assert_eq!(status, 200);
    let query = app
        .v1_get(&V1Params::new("queryInstance").with("instanceId", &id))
        .await;
    assert_eq!(query.code(), "000000", "{}", query.msg());
    let info: &Value = &query.json()["info"][0]["appInfo"];
    assert_eq!(info["frontEndUrl"], "https://tenant.example.com/t/1");
    let user = java_aes::decrypt(KEY, "1", info["userName"].as_str().unwrap());
    assert_eq!(user, "owner");
}

async fn an_unusable_answer_is_a_failed_attempt_that_says_why(backend: Backend) {
    let (app, mock, receiver) = app_mode(backend, "300").await;
    let o = order_id();
    mock.register(order(&o, "sku-bad", "20270101000000")).await;
    let id = format!("u-{o}");
    for (answer, why) in [
        (
            "not json",
            "the answer is not usable: not the documented JSON",
        ),
        (
            r#"{"appInfo":{"frontEndUrl":""}}"#,
            "the answer is not usable: appInfo.frontEndUrl: is required",
        ),
        (
            r#"{"failed":{"resultCode":"000999"}}"#,
            "the answer is not usable: resultCode: \"000999\" is not one of 000100 to 000107",
        ),
    ] {
        receiver.provision_with(Some(answer));
        if app.store.instance(&id).await.unwrap().is_none() {
            assert_eq!(app.saas(&new_instance(&o, &id)).await.code(), "000004");
        }
        let errors = eventually(why, || async {
            let (_, feed) = app.api_get("/api/v1/events").await;
            let asked = feed["items"]
                .as_array()?
                .iter()
                .find(|e| e["type"] == "instance.provision_requested")?
                .clone();
            let event_id = asked["data"]["eventId"].as_str()?.to_owned();
            let (_, detail) = app.api_get(&format!("/api/v1/events/{event_id}")).await;
            let errors: Vec<String> = detail["attempts"]
                .as_array()?
                .iter()
                .filter_map(|a| a["error"].as_str().map(str::to_owned))
                .collect();
            errors.iter().any(|e| e.starts_with(why)).then_some(errors)
        })
        .await;
        assert!(!errors.is_empty());
    }
    let (_, resource) = app.api_get(&format!("/api/v1/instances/{id}")).await;
    assert_eq!(resource["state"], "provisioning", "nothing was applied");
}

/// An app that never answers `instance.provision_requested` costs each waiting
/// `newInstance` its wait, no more: it is answered `000004` within the callback deadline,
/// and the waits hold no database connection (nor SQLite's write lock), so with a pool of
/// two, four waiting callbacks and one that changes an instance are all answered in time.
async fn an_app_that_never_answers_holds_no_callback_past_its_deadline(backend: Backend) {
    use std::time::{Duration, Instant};
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    receiver.delay(Some(Duration::from_secs(4)));
    let options = receiver
        .options(mock_market::options(&mock))
        .env("KOOGATE_PROVISIONING", "app")
        .env("KOOGATE_PROVISIONING_WAIT_MS", "1500")
        .env("KOOGATE_HTTP_CALLBACK_DEADLINE_MS", "2000")
        .env("KOOGATE_EVENTS_TIMEOUT_MS", "3000")
        .env("KOOGATE_DATABASE_MAX_CONNECTIONS", "2")
        .env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "1000");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let existing = order_id();
    let created = app
        .saas(&new_instance(&existing, &format!("e-{existing}")))
        .await;
    assert_eq!(created.code(), "000004", "{}", created.msg());
    let bodies: Vec<String> = (0..4)
        .map(|_| {
            let o = order_id();
            new_instance(&o, &format!("w-{o}"))
        })
        .collect();
    let freeze = format!(
        r#"{{"activity":"updateInstanceStatus","instanceId":"e-{existing}","status":"FREEZE"}}"#
    );
    let started = Instant::now();

    let (a, b, c, d, frozen) = tokio::join!(
        app.saas(&bodies[0]),
        app.saas(&bodies[1]),
        app.saas(&bodies[2]),
        app.saas(&bodies[3]),
        async {
            // Once the waits are under way.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let sent = Instant::now();
            (app.saas(&freeze).await, sent.elapsed())
        },
    );
    let took = started.elapsed();

    for waited in [&a, &b, &c, &d] {
        assert_eq!(waited.code(), "000004", "{}", waited.msg());
    }
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    let (frozen, frozen_took) = frozen;
    assert_eq!(frozen.code(), "000000", "{}", frozen.msg());
    assert!(
        frozen_took < Duration::from_millis(1000),
        "a callback beside the waits took {frozen_took:?}"
    );
    app.stop().await;
}

/// A waiting `newInstance` that cannot read its instance (another session holds the table
/// locked, past the deadline) still answers when its wait is over: the read is given up,
/// not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wait_whose_read_is_stuck_ends_on_time() {
    use sqlx::{Connection, Executor};
    use std::time::{Duration, Instant};
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    receiver.delay(Some(Duration::from_secs(4)));
    let db = Database::fresh(Backend::Postgres).await;
    let url = db.url.clone();
    let options = receiver
        .options(mock_market::options(&mock))
        .env("KOOGATE_PROVISIONING", "app")
        .env("KOOGATE_PROVISIONING_WAIT_MS", "1500")
        .env("KOOGATE_HTTP_CALLBACK_DEADLINE_MS", "2000")
        .env("KOOGATE_EVENTS_TIMEOUT_MS", "3000")
        .env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "1000");
    let app = TestApp::spawn_with(db, options).await;
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    let o = order_id();
    let body = new_instance(&o, &format!("l-{o}"));
    let started = Instant::now();

    let ((answer, took), ()) = tokio::join!(
        async { (app.saas(&body).await, started.elapsed()) },
        async {
            // Once the callback has committed and waits: every read of an instance blocks.
            tokio::time::sleep(Duration::from_millis(400)).await;
            holder.execute("BEGIN").await.unwrap();
            holder
                .execute("LOCK TABLE instances IN ACCESS EXCLUSIVE MODE")
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(3000)).await;
            holder.execute("ROLLBACK").await.unwrap();
        }
    );

    assert_eq!(answer.code(), "000004", "{}", answer.msg());
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    app.stop().await;
}
