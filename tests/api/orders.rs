//! Order notifications (spec §7) and the order details every new, renewed or upgraded
//! instance gets from 查询订单 (§8.2), fetched in the background from the mock marketplace.

use crate::helpers::{Backend, Database, KEY, TestApp, eventually, new_instance, order_id};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use koogate::cli::orders;
use koogate::store::{Job, JobState};
use std::time::{Duration, Instant};

on_both_backends!(
    a_notification_is_stored_once_answered_at_once_and_fetched,
    bad_notifications_start_nothing,
    new_renewed_and_upgraded_instances_get_their_order_details,
    callbacks_never_wait_for_the_marketplace,
    a_late_fetch_of_an_older_order_keeps_the_newer_facts,
);

const NOTIFY_KEY: &str = "notify-key-0001";

fn notify_body(order_id: &str) -> String {
    format!(
        r#"{{"activity":"orderNotify","orderId":"{order_id}","orderLineId":"{order_id}-000001","testFlag":"0"}}"#
    )
}

/// The one job about an order, once it is no longer pending or running.
pub async fn settled_job(app: &TestApp, order_id: &str) -> Job {
    eventually(&format!("the job of {order_id} to settle"), || async {
        let jobs = app.store.jobs_about(order_id).await.unwrap();
        assert!(jobs.len() <= 1, "{jobs:?}");
        jobs.into_iter()
            .find(|j| matches!(j.state, JobState::Done | JobState::Failed))
    })
    .await
}

async fn a_notification_is_stored_once_answered_at_once_and_fetched(backend: Backend) {
    let mock = MockServer::start().await;
    let options = mock_market::options(&mock).env("KOOGATE_ACCESS_KEY_ORDER_NOTIFY", NOTIFY_KEY);
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let order_id = order_id();
    mock.register(order(&order_id, "sku-notify", "20270101000000"))
        .await;

    let first = app
        .post_signed(
            "/koogallery/order-notify",
            NOTIFY_KEY,
            &notify_body(&order_id),
        )
        .await;
    let retry = app
        .post_signed(
            "/koogallery/order-notify",
            NOTIFY_KEY,
            &notify_body(&order_id),
        )
        .await;

    for answer in [&first, &retry] {
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.body,
            br#"{"resultCode":"000000","resultMsg":"success"}"#
        );
        assert!(
            answer.signed_with(NOTIFY_KEY),
            "signed with the 通用接口 key"
        );
    }
    let job = settled_job(&app, &order_id).await;
    assert_eq!((job.state, job.attempts), (JobState::Done, 1), "{job:?}");
    let lines = app.store.order_lines(&order_id).await.unwrap();
    assert_eq!(lines.len(), 1, "stored once per (orderId, orderLineId)");
    assert_eq!(lines[0].source, "orderNotify");
    let stored: serde_json::Value =
        serde_json::from_str(lines[0].order_info.as_deref().expect("fetched")).unwrap();
    assert_eq!(
        stored["orderLine"][0]["productInfo"][0]["skuCode"],
        "sku-notify"
    );
    assert_eq!(stored["buyerInfo"]["customerRealName"], "测试买家");
    let queries = mock.queries_for(&order_id).await;
    assert_eq!(queries.len(), 1, "fetched once: {queries:?}");
    assert_eq!(
        queries[0].query,
        format!("orderId={order_id}&orderLineId={order_id}-000001")
    );

    let report = orders::show(app.store.as_ref(), &order_id)
        .await
        .unwrap()
        .expect("the order is known");
    for expected in [
        format!("order {order_id}"),
        format!("{order_id}-000001  first named by orderNotify"),
        "product OFFI-TEST-1 sku sku-notify linear value 20".into(),
        "PERIOD month×3".into(),
        "buyer buyer_01 (cust-0001)".into(),
        "order.fetch  done  attempts 1".into(),
    ] {
        assert!(report.contains(&expected), "{expected:?} not in:\n{report}");
    }
}

async fn bad_notifications_start_nothing(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let order_id = order_id();
    let good = notify_body(&order_id);
    let long = "x".repeat(65);
    let refused = [
        (
            app.post_signed("/koogallery/order-notify", "not-the-key", &good)
                .await,
            "000001",
            "signature does not match",
        ),
        (
            app.post_raw(
                "/koogallery/order-notify",
                "timestamp=1&nonce=n",
                good.clone().into_bytes(),
            )
            .await,
            "000001",
            "missing URL parameter signature",
        ),
        (
            app.post_signed("/koogallery/order-notify", KEY, "{not json")
                .await,
            "000002",
            "body is not a JSON object",
        ),
        (
            app.post_signed(
                "/koogallery/order-notify",
                KEY,
                &good.replace("orderNotify", "newInstance"),
            )
            .await,
            "000002",
            "unknown activity \"newInstance\"",
        ),
        (
            app.post_signed(
                "/koogallery/order-notify",
                KEY,
                &good.replace(&format!(r#""orderId":"{order_id}","#), ""),
            )
            .await,
            "000002",
            "orderId is missing",
        ),
        (
            app.post_signed(
                "/koogallery/order-notify",
                KEY,
                &good.replace(&format!("{order_id}-000001"), &long),
            )
            .await,
            "000002",
            "orderLineId is longer than 64",
        ),
    ];
    for (answer, code, message) in refused {
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (200, code),
            "{message}"
        );
        assert!(
            answer.msg().contains(message),
            "{message}: {}",
            answer.msg()
        );
        assert!(answer.signed_with(KEY));
    }

    assert!(app.store.order_lines(&order_id).await.unwrap().is_empty());
    assert!(
        app.store.jobs_about(&order_id).await.unwrap().is_empty(),
        "no job started"
    );
    let wrong_method = TestApp::received(
        app.client
            .get(app.url("/koogallery/order-notify"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.signed_with(KEY));
    assert!(
        mock.calls().await.is_empty(),
        "the marketplace was never called"
    );
}

async fn new_renewed_and_upgraded_instances_get_their_order_details(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let (bought, renewal, upgrade) = (order_id(), order_id(), order_id());
    mock.register(order(&bought, "sku-basic", "20270101000000"))
        .await;
    mock.register(order(&renewal, "sku-basic", "20270401000000"))
        .await;
    let mut upgraded = order(&upgrade, "sku-pro", "20270401000000");
    upgraded["orderLine"][0]["productInfo"][0]["linearValue"] = 100.into();
    upgraded["orderType"] = "CHANGE".into();
    mock.register(upgraded).await;

    let created = app.saas(&new_instance(&bought, "inst-1")).await;
    assert_eq!(created.code(), "000000");
    let filled = eventually("the instance to get its order details", || async {
        let i = app.store.instance("inst-1").await.unwrap().unwrap();
        i.sku_code.is_some().then_some(i)
    })
    .await;
    assert_eq!(filled.product_id.as_deref(), Some("OFFI-TEST-1"));
    assert_eq!(filled.sku_code.as_deref(), Some("sku-basic"));
    assert_eq!(filled.charging_mode.as_deref(), Some("PERIOD"));
    assert_eq!(filled.period_type.as_deref(), Some("month"));
    assert_eq!(filled.period_number, Some(3));
    assert_eq!(
        filled.expire_ms,
        Some(1_798_761_600_000),
        "2027-01-01T00:00:00Z"
    );
    assert_eq!(filled.linear_value.as_deref(), Some("20"));
    assert_eq!(filled.customer_id.as_deref(), Some("cust-0001"));
    assert_eq!(filled.customer_name.as_deref(), Some("buyer_01"));
    assert_eq!(filled.details["buyer"]["email"], "buyer@example.org");
    assert_eq!(filled.details["buyer"]["customerRealName"], "测试买家");
    assert_eq!(
        app.saas(&new_instance(&bought, "inst-again")).await.body,
        created.body,
        "the stored answer is replayed byte for byte after the fetch"
    );

    let renew = format!(
        r#"{{"activity":"refreshInstance","scene":"RENEWAL","orderId":"{renewal}","orderLineId":"{renewal}-000001","instanceId":"inst-1","expireTime":"20270401000000"}}"#
    );
    assert_eq!(app.saas(&renew).await.code(), "000000");
    assert_eq!(settled_job(&app, &renewal).await.state, JobState::Done);
    let up = format!(
        r#"{{"activity":"upgradeInstance","instanceId":"inst-1","orderId":"{upgrade}","orderLineId":"{upgrade}-000001"}}"#
    );
    assert_eq!(app.saas(&up).await.code(), "000000");
    assert_eq!(settled_job(&app, &upgrade).await.state, JobState::Done);

    let after = app.store.instance("inst-1").await.unwrap().unwrap();
    assert_eq!(
        after.expire_ms,
        Some(1_806_537_600_000),
        "2027-04-01T00:00:00Z"
    );
    assert_eq!(after.sku_code.as_deref(), Some("sku-pro"));
    assert_eq!(after.linear_value.as_deref(), Some("100"));
    assert_eq!(after.details["orderType"], "CHANGE");
    assert_eq!(after.order_id, bought, "the instance keeps its first order");
    assert_eq!(after.last_order_id.as_deref(), Some(upgrade.as_str()));

    // A refresh of an unknown instance changes nothing and fetches nothing.
    let unknown = renew
        .replace("inst-1", "no-such")
        .replace(&renewal, "CSNOFETCH");
    assert_eq!(app.saas(&unknown).await.code(), "000003");
    assert!(app.store.jobs_about("CSNOFETCH").await.unwrap().is_empty());
}

async fn callbacks_never_wait_for_the_marketplace(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    // Every call hangs past the client's timeout: the marketplace is as slow as can be.
    mock.delay_next(5_000, 100).await;

    for i in 0..3 {
        let started = Instant::now();
        let created = app
            .saas(&new_instance(&order_id(), &format!("slow-{i}")))
            .await;
        let notified = app
            .post_signed("/koogallery/order-notify", KEY, &notify_body(&order_id()))
            .await;
        assert_eq!(
            (created.code(), notified.code()),
            ("000000".into(), "000000".into())
        );
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "two callbacks took {:?} while the marketplace hangs",
            started.elapsed()
        );
    }
}

/// A fetch of an older order that finishes late (it was retried, or queued again by
/// hand) must not roll back what a newer renewal brought.
async fn a_late_fetch_of_an_older_order_keeps_the_newer_facts(backend: Backend) {
    let mock = MockServer::start().await;
    let app =
        TestApp::spawn_with(Database::fresh(backend).await, mock_market::options(&mock)).await;
    let (first, renewal) = (order_id(), order_id());
    mock.register(order(&first, "sku-first", "20270101000000"))
        .await;
    mock.register(order(&renewal, "sku-renewed", "20300101000000"))
        .await;

    mock.fail_next("mkt0999", 4).await;
    assert_eq!(
        app.saas(&new_instance(&first, "late-1")).await.code(),
        "000000"
    );
    let parked = settled_job(&app, &first).await;
    assert_eq!(parked.state, JobState::Failed);
    mock.fail_next("mkt0999", 0).await;

    let refresh = format!(
        r#"{{"activity":"refreshInstance","scene":"RENEWAL","orderId":"{renewal}","orderLineId":"{renewal}-000001","instanceId":"late-1","expireTime":"20300101000000"}}"#
    );
    assert_eq!(app.saas(&refresh).await.code(), "000000");
    assert_eq!(settled_job(&app, &renewal).await.state, JobState::Done);
    let now = chrono::Utc::now().timestamp_millis();
    koogate::cli::jobs::retry(app.store.as_ref(), &[parked.id], false, now)
        .await
        .unwrap();
    assert_eq!(settled_job(&app, &first).await.state, JobState::Done);

    let instance = app.store.instance("late-1").await.unwrap().unwrap();
    assert_eq!(instance.sku_code.as_deref(), Some("sku-renewed"));
    assert_eq!(
        instance.expire_ms,
        Some(1_893_456_000_000),
        "2030-01-01, not 2027"
    );
    let first_line = &app.store.order_lines(&first).await.unwrap()[0];
    assert!(
        first_line
            .order_info
            .as_deref()
            .unwrap()
            .contains("sku-first"),
        "the older order is still stored"
    );
}
