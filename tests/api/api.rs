//! The management API (merchant-api.md §1, §4): two listeners, bearer tokens, problem
//! documents, instances and orders, and the OpenAPI document kept in step with the code.

use crate::helpers::{API_TOKEN, Backend, Database, Options, TestApp, new_instance, order_id};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use crate::orders::settled_job;
use serde_json::Value;

on_both_backends!(
    instances_are_listed_newest_first_with_filters_and_cursors,
    an_order_shows_its_lines_and_instances,
    control_characters_in_a_path_or_query_are_a_400_naming_them,
);

/// A NUL in an id is a clear 400 on both backends, never PostgreSQL's refusal as a 500;
/// `%2500` is a literal `%00`, not a control character.
async fn control_characters_in_a_path_or_query_are_a_400_naming_them(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in [
        "/api/v1/instances/a%00b",
        "/api/v1/orders/a%0Ab",
        "/api/v1/events/a%1fb",
        "/api/v1/instances?orderId=a%00b",
        "/api/v1/instances/a%7Fb/usage",
        "/admin/instances?q=a%00b",
    ] {
        let (status, problem) = app.api_get(path).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("control character"),
            "{path}: {problem}"
        );
    }
    let (status, problem) = app.api_get("/api/v1/instances/a%2500b").await;
    assert_eq!(status, 404, "{problem}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_required_and_compared() {
    let app = TestApp::spawn_with(
        Database::fresh(Backend::Sqlite).await,
        Options::default().env("KOOGATE_API_TOKEN", &format!("old-token,{API_TOKEN}")),
    )
    .await;
    let url = format!("http://{}/api/v1/instances", app.admin);
    let cases: [(Option<&str>, u16); 5] = [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some(&format!("Basic {API_TOKEN}")), 401),
        (Some("Bearer old-token"), 200),
        (Some(&format!("Bearer {API_TOKEN}")), 200),
    ];
    for (header, status) in cases {
        let mut request = app.client.get(&url);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{header:?}");
        if status == 401 {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let text = response.text().await.unwrap();
            assert!(!text.contains(API_TOKEN), "{text}");
            let problem: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(problem["status"], 401);
        }
    }
    // The public listener serves none of it.
    let public = app
        .client
        .get(app.url("/api/v1/instances"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status().as_u16(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_token_the_api_says_which_variable_to_set() {
    let app = TestApp::spawn_with(
        Database::fresh(Backend::Sqlite).await,
        Options::default().without_env("KOOGATE_API_TOKEN"),
    )
    .await;
    let response = app
        .client
        .get(format!("http://{}/api/v1/instances", app.admin))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("KOOGATE_API_TOKEN"),
        "{problem}"
    );
}

/// The committed `docs/openapi.json` is what the code generates; regenerate it with
/// `KOOGATE_WRITE_OPENAPI=1 cargo test --test api openapi`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_openapi_document_is_served_and_matches_the_committed_copy() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = app
        .client
        .get(format!("http://{}/api/v1/openapi.json", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200, "no token needed");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served["openapi"], "3.1.0");
    for path in [
        "/api/v1/instances",
        "/api/v1/instances/{id}",
        "/api/v1/instances/{id}/provisioning",
        "/api/v1/orders/{orderId}",
        "/api/v1/events",
        "/api/v1/events/{eventId}",
        "/api/v1/instances/{id}/usage-info",
    ] {
        assert!(served["paths"].get(path).is_some(), "{path} is documented");
    }
    let generated = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    if std::env::var_os("KOOGATE_WRITE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is not what the code generates: run \
         KOOGATE_WRITE_OPENAPI=1 cargo test --test api openapi and commit it"
    );
}

async fn instances_are_listed_newest_first_with_filters_and_cursors(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let o = order_id();
        let id = format!("l{n}-{o}");
        assert_eq!(app.saas(&new_instance(&o, &id)).await.code(), "000000");
        ids.push(id);
    }
    app.saas(&format!(
        r#"{{"activity":"updateInstanceStatus","instanceId":"{}","status":"FREEZE"}}"#,
        ids[1]
    ))
    .await;

    let mut listed = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = app
            .api_get(&format!("/api/v1/instances?limit=2{after}"))
            .await;
        assert_eq!(status, 200, "{page}");
        for item in page["items"].as_array().unwrap() {
            listed.push(item["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    let (_, frozen) = app.api_get("/api/v1/instances?state=frozen").await;
    let frozen: Vec<&str> = frozen["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(frozen, [ids[1].as_str()]);
    let (_, by_order) = app
        .api_get(&format!("/api/v1/instances?orderId={}", &ids[3][3..]))
        .await;
    assert_eq!(by_order["items"].as_array().unwrap().len(), 1);
    let (_, tests) = app.api_get("/api/v1/instances?test=true").await;
    assert!(tests["items"].as_array().unwrap().is_empty());

    let (status, problem) = app.api_get("/api/v1/instances?state=gone&after=zz").await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"].as_array().unwrap().len(), 2, "{problem}");
    let (status, problem) = app.api_get("/api/v1/instances/nope").await;
    assert_eq!((status, problem["status"].as_u64()), (404, Some(404)));
}

async fn an_order_shows_its_lines_and_instances(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let o = order_id();
    mock.register(order(&o, "sku-order", "20270101000000"))
        .await;
    assert_eq!(
        app.saas(&new_instance(&o, &format!("o-{o}"))).await.code(),
        "000000"
    );
    settled_job(&app, &o).await;

    let (status, view) = app.api_get(&format!("/api/v1/orders/{o}")).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["lines"][0]["orderLineId"], format!("{o}-000001"));
    assert_eq!(view["lines"][0]["orderInfo"]["orderId"], o.as_str());
    assert_eq!(view["instances"][0]["id"], format!("o-{o}"));
    assert_eq!(
        view["instances"][0]["expireTime"],
        "2027-01-01T00:00:00.000Z"
    );
    let (status, _) = app.api_get("/api/v1/orders/NO-SUCH-ORDER").await;
    assert_eq!(status, 404);
}
