//! SaaS 1.0 over HTTP (spec §2.1, §2.5, §4, D3–D9), GET and POST-body forms, on SQLite
//! and PostgreSQL. Credentials are checked with the test client's own implementation of
//! the field encryption (`helpers::java_aes`), not the server's.

use crate::helpers::{
    Backend, Database, KEY, Options, Received, TestApp, V1Params, java_aes, order_id, v1_now,
};
use crate::on_both_backends;
use koogate::domain::instance::Instance;
use koogate::domain::provision::{ProvisionRequest, Provisioned, Provisioner};
use koogate::protocol::v1::{ExtendParam, encode_extend_params};
use serde_json::{Value, json};
use std::sync::Arc;

on_both_backends!(
    new_instance_answers_encrypted_credentials_and_replays_the_bytes,
    pay_per_use_orders_are_keyed_on_order_and_product,
    concurrent_duplicates_create_one_instance,
    the_post_body_form_serves_the_same_activities,
    lifecycle_follows_expire_status_and_release,
    refresh_renews_converts_trials_and_cancels_renewals,
    upgrade_applies_once_per_order,
    query_answers_encrypted_credentials_for_the_ids_that_exist,
    bad_input_gets_000002_naming_the_parameter,
    authentication_failures_get_000001,
    the_time_stamp_window_is_configurable,
    spec_vectors_over_http,
    credentials_round_trip_with_an_independent_client,
    one_instance_model_across_generations,
    test_instances_keep_serving_dial_tests,
    every_callback_is_recorded_as_saas_v1,
    an_exact_repeat_is_answered_without_running_again,
);

/// Servers in these tests hand out an administrator account, so that answers carry
/// credentials to encrypt.
fn with_credentials() -> Options {
    Options::default()
        .env("KOOGATE_APP_USER_NAME", "admin-{instanceId}")
        .env("KOOGATE_APP_GENERATE_PASSWORD", "true")
}

async fn spawn(backend: Backend) -> TestApp {
    TestApp::spawn_with(Database::fresh(backend).await, with_credentials()).await
}

/// A minimal `newInstance` for a yearly/monthly order.
fn new_instance(order: &str, business_id: &str) -> V1Params {
    V1Params::new("newInstance")
        .with("businessId", business_id)
        .with("orderId", order)
        .with("productId", "00301-666666-0--0")
        .with("customerId", "68cbc86abc2018ab880d92f36422fa0e")
        .with("testFlag", "0")
}

fn instance_params(activity: &str, instance_id: &str) -> V1Params {
    V1Params::new(activity).with("instanceId", instance_id)
}

/// Decrypts `appInfo.userName` and `appInfo.password` with the test client's own code.
fn credentials(app_info: &Value, encrypt_type: &str) -> (String, String) {
    let field = |name: &str| {
        let sealed = app_info[name].as_str().expect("credential present");
        java_aes::decrypt(KEY, encrypt_type, sealed)
    };
    (field("userName"), field("password"))
}

async fn stored(app: &TestApp, id: &str) -> Instance {
    app.store
        .instance(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("instance {id} stored"))
}

async fn new_instance_answers_encrypted_credentials_and_replays_the_bytes(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    let extend = encode_extend_params(&[ExtendParam {
        name: "idNum".into(),
        value: "352255555555656".into(),
    }]);
    let extend = form_urlencoded::parse(format!("x={extend}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    let full = new_instance(&order, "v1-full")
        .with("customerName", "张三")
        .with("userId", "iam-1")
        .with("userName", "iam-user")
        .with("mobilePhone", &java_aes::encrypt(KEY, "1", "13800000000"))
        .with("email", &java_aes::encrypt(KEY, "1", "buyer@example.com"))
        .with("skuCode", "sku-basic")
        .with("trialFlag", "1")
        .with("provisionType", "1")
        .with("expireTime", "20300101000000")
        .with("chargingMode", "1")
        .with("periodType", "month")
        .with("periodNumber", "3")
        .with("orderAmount", "12.500")
        .with("saasExtendParams", &extend)
        .with("amount", "10")
        .with("bandWidth", "100");

    let first = app.v1_get(&full).await;
    let again = app
        .v1_get(&full.clone().with("businessId", "v1-again"))
        .await;

    assert_eq!(
        (first.status, first.code()),
        (200, "000000".into()),
        "{}",
        first.msg()
    );
    let answer = first.json();
    assert_eq!(answer["instanceId"], "v1-full", "the first businessId (D7)");
    assert_eq!(answer["encryptType"], "1", "AES-256 unless configured");
    assert_eq!(
        answer["appInfo"]["frontEndUrl"],
        "https://app.example.net/v1-full"
    );
    let (user, password) = credentials(&answer["appInfo"], "1");
    assert_eq!(user, "admin-v1-full");
    assert_eq!(password.len(), 16);
    assert_eq!(again.body, first.body, "a repeat gets the very same bytes");
    assert!(first.signed_with(KEY) && again.signed_with(KEY));

    let i = stored(&app, "v1-full").await;
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        1
    );
    assert_eq!(i.family.as_str(), "saas_v1");
    assert!(!i.test);
    assert_eq!(i.product_id.as_deref(), Some("00301-666666-0--0"));
    assert_eq!(i.sku_code.as_deref(), Some("sku-basic"));
    assert_eq!(i.charging_mode.as_deref(), Some("PERIOD"));
    assert_eq!(
        (i.period_type.as_deref(), i.period_number),
        (Some("month"), Some(3))
    );
    assert_eq!(i.linear_value.as_deref(), Some("10"));
    assert_eq!(
        i.customer_id.as_deref(),
        Some("68cbc86abc2018ab880d92f36422fa0e")
    );
    assert_eq!(i.customer_name.as_deref(), Some("张三"));
    assert_eq!(i.expire_ms, Some(1_893_456_000_000));
    assert_eq!(
        Value::Object(i.details),
        json!({
            "trialFlag": "1",
            "orderAmount": "12.500",
            "provisionType": "1",
            "userId": "iam-1",
            "userName": "iam-user",
            "mobilePhone": "13800000000",
            "email": "buyer@example.com",
            "amount": 10,
            "bandWidth": 100,
            "saasExtendParams": [{"name": "idNum", "value": "352255555555656"}],
        }),
        "the rest of the order, decrypted and decoded"
    );
}

async fn pay_per_use_orders_are_keyed_on_order_and_product(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    let item = |product: &str, business_id: &str| {
        new_instance(&order, business_id)
            .with("chargingMode", "0")
            .with("productId", product)
    };

    let storage = app.v1_get(&item("p-storage", "ppu-1")).await;
    let traffic = app.v1_get(&item("p-traffic", "ppu-2")).await;
    let storage_again = app.v1_get(&item("p-storage", "ppu-3")).await;

    assert_eq!(storage.json()["instanceId"], "ppu-1");
    assert_eq!(
        traffic.json()["instanceId"],
        "ppu-2",
        "another billing item, another instance"
    );
    assert_eq!(storage_again.body, storage.body);
    assert_eq!(
        stored(&app, "ppu-1").await.charging_mode.as_deref(),
        Some("ON_DEMAND")
    );

    // Any other charging mode is keyed on the order alone.
    let period = order_id();
    let first = app.v1_get(&new_instance(&period, "per-1")).await;
    let other_product = new_instance(&period, "per-2").with("productId", "p-other");
    assert_eq!(app.v1_get(&other_product).await.body, first.body);
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        2
    );
    assert_eq!(
        app.store.instances_for_order(&period).await.unwrap().len(),
        1
    );
}

async fn concurrent_duplicates_create_one_instance(backend: Backend) {
    let app = Arc::new(spawn(backend).await);
    let order = order_id();

    let calls: Vec<_> = (0..30)
        .map(|i| {
            let app = app.clone();
            let params = new_instance(&order, &format!("conc-{i}"));
            tokio::spawn(async move { app.v1_get(&params).await })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("task"));
    }

    assert_eq!(answers[0].code(), "000000", "{}", answers[0].msg());
    for answer in &answers {
        assert_eq!(
            answer.body, answers[0].body,
            "every duplicate gets the same bytes"
        );
    }
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        1
    );
}

async fn the_post_body_form_serves_the_same_activities(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    let ts = v1_now();
    // Numbers as JSON numbers, 1.50 kept as sent; blank values take no part in the token.
    let body = format!(
        r#"{{"activity":"newInstance","businessId":"post-1","orderId":"{order}","productId":"p1","customerId":"c1","customerName":"","userId":null,"chargingMode":1,"periodType":"year","periodNumber":1,"orderAmount":1.50,"amount":5,"testFlag":0,"timeStamp":"{ts}"}}"#
    );

    let created = app.v1_post(&body).await;

    assert_eq!(created.code(), "000000", "{}", created.msg());
    assert_eq!(created.json()["instanceId"], "post-1");
    assert!(created.signed_with(KEY));
    let i = stored(&app, "post-1").await;
    assert_eq!(i.details["orderAmount"], "1.50");
    assert_eq!(
        (i.period_number, i.linear_value.as_deref()),
        (Some(1), Some("5"))
    );
    assert_eq!(i.customer_name, None);

    // The same order through the GET form is the same order: same bytes.
    assert_eq!(
        app.v1_get(&new_instance(&order, "get-1")).await.body,
        created.body
    );

    let steps = [
        (
            instance_params("expireInstance", "post-1").with("orderId", &order),
            "frozen",
        ),
        (
            instance_params("instanceStatus", "post-1").with("instanceStatus", "NORMAL"),
            "active",
        ),
        (instance_params("queryInstance", "post-1"), "active"),
        (
            instance_params("releaseInstance", "post-1").with("orderId", &order),
            "released",
        ),
    ];
    for (params, state) in steps {
        let answer = app.v1_post(&params.json()).await;
        assert_eq!(answer.code(), "000000", "{params:?}: {}", answer.msg());
        assert!(answer.signed_with(KEY));
        assert_eq!(
            stored(&app, "post-1").await.state.as_str(),
            state,
            "{params:?}"
        );
    }
}

async fn lifecycle_follows_expire_status_and_release(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    app.v1_get(&new_instance(&order, "life-1")).await;
    let expire = instance_params("expireInstance", "life-1").with("orderId", &order);
    let status = |s: &str| instance_params("instanceStatus", "life-1").with("instanceStatus", s);
    let release = instance_params("releaseInstance", "life-1").with("orderId", &order);
    let refresh = instance_params("refreshInstance", "life-1")
        .with("orderId", "RENEW-1")
        .with("expireTime", "20310101000000");
    let upgrade = instance_params("upgrade", "life-1")
        .with("orderId", "UP-LATE")
        .with("skuCode", "s2")
        .with("productId", "p2");

    let steps = [
        (expire.clone(), "000000", "frozen", "expireInstance freezes"),
        (expire.clone(), "000000", "frozen", "a repeat succeeds"),
        (status("NORMAL"), "000000", "active", "NORMAL unfreezes"),
        (status("FREEZE"), "000000", "frozen", "pay-per-use freeze"),
        (status("FREEZE"), "000000", "frozen", "repeat freeze"),
        (
            release.clone().with("orderAmount", "-3.5"),
            "000000",
            "released",
            "release",
        ),
        (
            release.clone(),
            "000000",
            "released",
            "a repeat release succeeds (D9)",
        ),
        (
            expire.clone(),
            "000003",
            "released",
            "expire after release (D9)",
        ),
        (
            status("NORMAL"),
            "000003",
            "released",
            "status after release",
        ),
        (refresh, "000003", "released", "refresh after release"),
        (upgrade, "000003", "released", "upgrade after release"),
        (
            instance_params("queryInstance", "life-1"),
            "000003",
            "released",
            "query after release",
        ),
    ];
    for (params, code, state, why) in steps {
        let answer = app.v1_get(&params).await;
        assert_eq!(answer.code(), code, "{why}: {}", answer.msg());
        assert!(answer.signed_with(KEY), "{why}");
        assert_eq!(stored(&app, "life-1").await.state.as_str(), state, "{why}");
    }
    let released = stored(&app, "life-1").await;
    assert_eq!(released.details["releaseOrderAmount"], "-3.5");
    assert!(released.released_ms.is_some());

    for params in [
        instance_params("expireInstance", "no-such").with("orderId", "o"),
        instance_params("releaseInstance", "no-such").with("orderId", "o"),
        instance_params("instanceStatus", "no-such").with("instanceStatus", "FREEZE"),
        instance_params("refreshInstance", "no-such")
            .with("orderId", "o")
            .with("expireTime", "20310101000000"),
        instance_params("upgrade", "no-such")
            .with("orderId", "UP-NONE")
            .with("skuCode", "s")
            .with("productId", "p"),
        instance_params("queryInstance", "no-such"),
    ] {
        let answer = app.v1_get(&params).await;
        assert_eq!(answer.code(), "000003", "{params:?}");
        assert!(answer.signed_with(KEY));
    }
}

async fn refresh_renews_converts_trials_and_cancels_renewals(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    app.v1_get(
        &new_instance(&order, "ref-1")
            .with("trialFlag", "1")
            .with("expireTime", "20300101000000"),
    )
    .await;
    let refresh = |order: &str, expire: &str| {
        instance_params("refreshInstance", "ref-1")
            .with("orderId", order)
            .with("expireTime", expire)
    };

    let converted = app
        .v1_get(&refresh("TRIAL-OK", "20300201000000").with("trialToFormal", "1"))
        .await;
    let renewed = app
        .v1_get(
            &refresh("RENEW-1", "20310201000000")
                .with("productId", "p-year")
                .with("periodType", "year")
                .with("periodNumber", "1")
                .with("orderAmount", "99.9"),
        )
        .await;
    let after_renewal = stored(&app, "ref-1").await;
    let cancelled = app
        .v1_get(&refresh("UNRENEW-1", "20300201000000").with("orderAmount", "-99.9"))
        .await;

    for answer in [&converted, &renewed, &cancelled] {
        assert_eq!(answer.code(), "000000", "{}", answer.msg());
        assert!(answer.signed_with(KEY));
    }
    assert_eq!(after_renewal.details["trialFlag"], "0", "no longer a trial");
    assert_eq!(after_renewal.expire_ms, Some(1_927_670_400_000));
    assert_eq!(after_renewal.product_id.as_deref(), Some("p-year"));
    assert_eq!(
        (
            after_renewal.period_type.as_deref(),
            after_renewal.period_number
        ),
        (Some("year"), Some(1))
    );
    let i = stored(&app, "ref-1").await;
    assert_eq!(
        i.expire_ms,
        Some(1_896_134_400_000),
        "the cancelled renewal's expiry"
    );
    assert_eq!(i.details["lastOrderAmount"], "-99.9");
    assert_eq!(i.last_order_id.as_deref(), Some("UNRENEW-1"));
    assert_eq!(
        i.state.as_str(),
        "active",
        "refresh never changes the state"
    );
}

async fn upgrade_applies_once_per_order(backend: Backend) {
    let app = spawn(backend).await;
    app.v1_get(
        &new_instance(&order_id(), "up-1")
            .with("skuCode", "small")
            .with("amount", "5"),
    )
    .await;
    let upgrade = |order: &str, sku: &str, amount: &str| {
        instance_params("upgrade", "up-1")
            .with("orderId", order)
            .with("skuCode", sku)
            .with("productId", &format!("p-{sku}"))
            .with("amount", amount)
    };

    let first = app.v1_get(&upgrade("UP-1", "large", "50")).await;
    let repeat = app.v1_get(&upgrade("UP-1", "huge", "500")).await;
    let after_repeat = stored(&app, "up-1").await;
    let next = app.v1_get(&upgrade("UP-2", "huge", "500")).await;

    assert_eq!(first.code(), "000000", "{}", first.msg());
    assert_eq!(repeat.body, first.body, "a repeat replays the answer");
    assert_eq!(
        (
            after_repeat.sku_code.as_deref(),
            after_repeat.linear_value.as_deref()
        ),
        (Some("large"), Some("50")),
        "and does not upgrade twice"
    );
    assert_eq!(after_repeat.product_id.as_deref(), Some("p-large"));
    assert_eq!(next.code(), "000000");
    let i = stored(&app, "up-1").await;
    assert_eq!(
        (i.sku_code.as_deref(), i.last_order_id.as_deref()),
        (Some("huge"), Some("UP-2"))
    );

    // An upgrade refused as 000003 is not remembered: its retry runs afresh.
    let early = instance_params("upgrade", "up-later")
        .with("orderId", "UP-EARLY")
        .with("skuCode", "s")
        .with("productId", "p");
    assert_eq!(app.v1_get(&early).await.code(), "000003");
    app.v1_get(&new_instance(&order_id(), "up-later")).await;
    assert_eq!(app.v1_get(&early).await.code(), "000000");
}

async fn query_answers_encrypted_credentials_for_the_ids_that_exist(backend: Backend) {
    let app = spawn(backend).await;
    for id in ["q-1", "q-2", "q-gone"] {
        app.v1_get(&new_instance(&order_id(), id)).await;
    }
    app.v1_get(&instance_params("releaseInstance", "q-gone").with("orderId", "o"))
        .await;

    let answer = app
        .v1_get(&instance_params("queryInstance", "q-2,missing,q-gone,q-1"))
        .await;
    let once = app.v1_get(&instance_params("queryInstance", "q-2")).await;
    let again = app.v1_get(&instance_params("queryInstance", "q-2")).await;

    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    assert!(answer.signed_with(KEY));
    let json = answer.json();
    assert_eq!(json["encryptType"], "1");
    let info = json["info"].as_array().unwrap();
    let ids: Vec<_> = info
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["q-2", "q-1"],
        "existing ids in the order asked (D8, D9)"
    );
    let (user, password) = credentials(&info[0]["appInfo"], "1");
    assert_eq!(user, "admin-q-2");
    assert_eq!(
        credentials(&again.json()["info"][0]["appInfo"], "1"),
        (user, password)
    );
    assert_ne!(
        again.body, once.body,
        "every answer is encrypted under a new IV"
    );

    let too_many = (0..101)
        .map(|i| format!("id-{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let refused = app
        .v1_get(&instance_params("queryInstance", &too_many))
        .await;
    assert_eq!(refused.code(), "000002");
    assert!(refused.msg().contains("101 ids"), "{}", refused.msg());
}

async fn bad_input_gets_000002_naming_the_parameter(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    let base = new_instance(&order, "bad-1");
    let long = "x".repeat(65);
    let not_a_list = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        br#"{"name":"a","value":"b"}"#,
    );
    let cases = [
        (base.clone().without("customerId"), "customerId is missing"),
        (base.clone().without("productId"), "productId is missing"),
        (
            base.clone().with("orderId", &long),
            "orderId is longer than 64 characters",
        ),
        (
            base.clone().with("customerName", &"名".repeat(65)),
            "customerName is longer than 64",
        ),
        (
            base.clone().with("chargingMode", "2"),
            "chargingMode has an invalid value",
        ),
        (
            base.clone().with("chargingMode", "one"),
            "chargingMode has an invalid value",
        ),
        (
            base.clone().with("periodNumber", "x"),
            "periodNumber has an invalid value",
        ),
        (
            base.clone().with("diskSize", "12345678"),
            "diskSize is longer than 7 characters",
        ),
        (
            base.clone().with("amount", "1.5"),
            "amount has an invalid value",
        ),
        (
            base.clone().with("orderAmount", "0.0001"),
            "orderAmount has an invalid value",
        ),
        (
            base.clone().with("orderAmount", "-1"),
            "orderAmount has an invalid value",
        ),
        (
            base.clone().with("expireTime", "tomorrow"),
            "expireTime has an invalid value",
        ),
        (
            base.clone().with("testFlag", "yes"),
            "testFlag is longer than 2 characters",
        ),
        (
            base.clone().with("saasExtendParams", "not base64!"),
            "saasExtendParams has an invalid value: not Base64",
        ),
        (
            base.clone().with("saasExtendParams", &not_a_list),
            "saasExtendParams has an invalid value: not a Base64-encoded JSON array",
        ),
        (
            base.clone().with("saasExtendParams", &"A".repeat(2049)),
            "saasExtendParams is longer than 2048",
        ),
        (
            base.clone().with("email", "buyer@example.com"),
            "email has an invalid value: cannot be decrypted",
        ),
        (
            base.clone()
                .with("mobilePhone", &java_aes::encrypt("another-key", "1", "138")),
            "mobilePhone has an invalid value: cannot be decrypted",
        ),
        (
            base.clone()
                .with("mobilePhone", &java_aes::encrypt(KEY, "2", "13800000000")),
            "mobilePhone has an invalid value: cannot be decrypted",
        ),
        (
            V1Params::new("launchRocket"),
            "unknown activity \"launchRocket\"",
        ),
        (base.clone().without("activity"), "activity is missing"),
        (
            instance_params("refreshInstance", "i").with("orderId", "o"),
            "expireTime is missing",
        ),
        (
            instance_params("instanceStatus", "i").with("instanceStatus", "PAUSED"),
            "instanceStatus has an invalid value",
        ),
        (
            instance_params("upgrade", "i")
                .with("orderId", "o")
                .with("productId", "p"),
            "skuCode is missing",
        ),
        (instance_params("expireInstance", "i"), "orderId is missing"),
    ];
    for (params, expected) in cases {
        for (form, answer) in [
            ("GET", app.v1_get(&params).await),
            ("POST", app.v1_post(&params.json()).await),
        ] {
            assert_eq!(
                (answer.status, answer.code().as_str()),
                (200, "000002"),
                "{form} {params:?}: {}",
                answer.msg()
            );
            assert!(
                answer.msg().starts_with(expected),
                "{form} {params:?}: {}",
                answer.msg()
            );
            assert!(answer.signed_with(KEY), "error answers are signed (D4)");
        }
    }

    let bodies: [(&[u8], &str); 3] = [
        (b"{not json", "the request body is not a JSON object"),
        (b"[1,2]", "the request body is not a JSON object"),
        (
            br#"{"activity":"newInstance","appInfo":{"a":1}}"#,
            "body field \"appInfo\" is an array or an object",
        ),
    ];
    for (body, expected) in bodies {
        let answer = app.v1_post_raw(Some("any-token"), body.to_vec()).await;
        assert_eq!(answer.code(), "000002", "{}", answer.msg());
        assert!(answer.msg().starts_with(expected), "{}", answer.msg());
        assert!(answer.signed_with(KEY));
    }
    assert!(
        app.store
            .instances_for_order(&order)
            .await
            .unwrap()
            .is_empty(),
        "nothing half-written"
    );
    assert_eq!(
        app.v1_get(&base).await.code(),
        "000000",
        "and the server keeps answering"
    );
}

async fn authentication_failures_get_000001(backend: Backend) {
    let app = spawn(backend).await;
    let params = new_instance(&order_id(), "auth-1");
    let signed = params.signed_query(KEY);
    let old = (chrono::Utc::now() - chrono::Duration::minutes(11))
        .format("%Y%m%d%H%M%S%3f")
        .to_string();
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(11))
        .format("%Y%m%d%H%M%S%3f")
        .to_string();
    let cases = [
        (params.query(), "authToken is missing"),
        (
            format!("{}&authToken=", params.query()),
            "authToken is missing",
        ),
        (
            signed.replace("businessId=auth-1", "businessId=auth-2"),
            "authToken does not match",
        ),
        (format!("{signed}&extra=1"), "authToken does not match"),
        (
            params.signed_query("not-the-key"),
            "authToken does not match",
        ),
        (
            params.clone().with("timeStamp", &old).signed_query(KEY),
            "timeStamp is 6",
        ),
        (
            params.clone().with("timeStamp", &ahead).signed_query(KEY),
            "timeStamp is -6",
        ),
        (
            params
                .clone()
                .with("timeStamp", "2020-07-27")
                .signed_query(KEY),
            "timeStamp is not a UTC time",
        ),
        (String::new(), "authToken is missing"),
    ];
    for (query, expected) in cases {
        let answer = app.get_raw("/koogallery/saas", &query).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (200, "000001"),
            "{query}"
        );
        assert!(
            answer.msg().starts_with("authentication failed: "),
            "{}",
            answer.msg()
        );
        assert!(answer.msg().contains(expected), "{query}: {}", answer.msg());
        assert!(answer.signed_with(KEY), "signed with the primary key");
    }

    let body = params.json();
    let posts = [
        (None, "authToken is missing"),
        (Some("d3Jvbmc="), "authToken does not match"),
    ];
    for (token, expected) in posts {
        let answer = app.v1_post_raw(token, body.clone().into_bytes()).await;
        assert_eq!(answer.code(), "000001", "{token:?}");
        assert!(answer.msg().contains(expected), "{}", answer.msg());
        assert!(answer.signed_with(KEY));
    }
    assert!(app.store.instance("auth-1").await.unwrap().is_none());
    assert!(app.store.instance("auth-2").await.unwrap().is_none());

    // Keys rotate as for SaaS 2.0: either key verifies, and signs its own answer.
    let rotated = TestApp::spawn_with(
        Database::fresh(backend).await,
        with_credentials().env("KOOGATE_ACCESS_KEY", &format!("new-key-2026,{KEY}")),
    )
    .await;
    let with_old = rotated.v1_get(&params).await;
    assert_eq!(with_old.code(), "000000");
    assert!(with_old.signed_with(KEY) && !with_old.signed_with("new-key-2026"));
    let (user, _) = credentials(&with_old.json()["appInfo"], "1");
    assert_eq!(
        user, "admin-auth-1",
        "credentials under the key that verified"
    );

    let keyless = TestApp::spawn_with(
        Database::fresh(backend).await,
        Options::default().without_env("KOOGATE_ACCESS_KEY"),
    )
    .await;
    let answer = keyless.v1_get(&params).await;
    assert_eq!(answer.code(), "000001");
    assert!(
        answer.msg().contains("no access key is configured"),
        "{}",
        answer.msg()
    );
    assert!(answer.body_sign.is_none(), "nothing to sign with");
}

async fn the_time_stamp_window_is_configurable(backend: Backend) {
    let old_ts = "20200727073711903";
    let at = |window: &str| with_credentials().env("KOOGATE_SAAS_V1_TIMESTAMP_WINDOW_SECS", window);
    let seconds_ago = |s: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(s))
            .format("%Y%m%d%H%M%S%3f")
            .to_string()
    };

    let off = TestApp::spawn_with(Database::fresh(backend).await, at("0")).await;
    let replayed = new_instance(&order_id(), "win-1").with("timeStamp", old_ts);
    assert_eq!(
        off.v1_get(&replayed).await.code(),
        "000000",
        "0 turns the check off"
    );
    let garbled = new_instance(&order_id(), "win-2").with("timeStamp", "whenever");
    assert_eq!(
        off.v1_get(&garbled).await.code(),
        "000000",
        "format included"
    );

    let minute = TestApp::spawn_with(Database::fresh(backend).await, at("60")).await;
    let fresh = new_instance(&order_id(), "win-3").with("timeStamp", &seconds_ago(30));
    let stale = new_instance(&order_id(), "win-4").with("timeStamp", &seconds_ago(120));
    assert_eq!(minute.v1_get(&fresh).await.code(), "000000");
    let refused = minute.v1_get(&stale).await;
    assert_eq!(refused.code(), "000001");
    assert!(refused.msg().contains("±60 s window"), "{}", refused.msg());

    let default = spawn(backend).await;
    let nine_minutes = new_instance(&order_id(), "win-5").with("timeStamp", &seconds_ago(540));
    assert_eq!(
        default.v1_get(&nine_minutes).await.code(),
        "000000",
        "10 minutes by default"
    );
    let also_post = new_instance(&order_id(), "win-6").with("timeStamp", &seconds_ago(660));
    assert_eq!(
        default.v1_post(&also_post.json()).await.code(),
        "000001",
        "POST form too"
    );
}

/// §12 vector 1's query, in a scrambled order, percent-encoded as KooGallery sends it.
const VECTOR_1_QUERY: &str = "timeStamp=20200727073711903&orderId=CS1906666666ABCDE\
    &authToken=rjND%2BEtzdPJCNyqrLt%2FLHR3JrNBZA%2FGGJbgOmLk2tqE%3D&activity=newInstance\
    &testFlag=1&customerId=68cbc86abc2018ab880d92f36422fa0e&productId=00301-666666-0--0\
    &expireTime=20200727153156&businessId=61e834ba-7b97-4418-b8f7-e5345137278c";

/// 2020-07-27T07:37:11.903Z, the `timeStamp` of vector 1.
const VECTOR_1_NOW: i64 = 1_595_835_431_903;

async fn spec_vectors_over_http(backend: Backend) {
    // An asynchronous provisioner: the answer carries no app info, so the authToken of
    // vector 1 gets exactly the answer of vector 2, and its Body-Sign.
    struct Later;
    impl Provisioner for Later {
        fn provision(&self, _: &ProvisionRequest<'_>) -> Provisioned {
            Provisioned::Pending
        }
    }
    let options = Options {
        clock: Some(Arc::new(|| VECTOR_1_NOW)),
        provisioner: Some(Arc::new(Later)),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;

    let vector1 = app.get_raw("/koogallery/saas", VECTOR_1_QUERY).await;

    assert_eq!(
        vector1.body,
        br#"{"resultCode":"000000","resultMsg":"success.","instanceId":"61e834ba-7b97-4418-b8f7-e5345137278c"}"#,
        "{}",
        vector1.msg()
    );
    assert_eq!(
        vector1.body_sign.as_deref(),
        Some(
            r#"sign_type="HMAC-SHA256", signature= "JSqNm7p+OAeCN9tQ6u7yzH1Q5AjgE54Ic87spu6ROSY=""#
        )
    );
    assert!(
        stored(&app, "61e834ba-7b97-4418-b8f7-e5345137278c")
            .await
            .test
    );
    let one_ms_late = TestApp::spawn_with(
        Database::fresh(backend).await,
        Options {
            clock: Some(Arc::new(|| VECTOR_1_NOW + 600_001)),
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        one_ms_late
            .get_raw("/koogallery/saas", VECTOR_1_QUERY)
            .await
            .code(),
        "000001"
    );

    // §12 vector 6: Java's ciphertexts of `admin` arrive as email, under each key size.
    for (encrypt_type, field) in [
        ("1", "0123456789abcdefzgivnHi79T0CV1zgTV92FA=="),
        ("2", "0123456789abcdefra/iiZNZNzZnfC8LS9YD3Q=="),
    ] {
        assert_eq!(
            java_aes::encrypt_with_iv(KEY, encrypt_type, "0123456789abcdef", "admin"),
            field
        );
        let app = TestApp::spawn_with(
            Database::fresh(backend).await,
            with_credentials().env("KOOGATE_SAAS_V1_ENCRYPT_TYPE", encrypt_type),
        )
        .await;
        let id = format!("vec6-{encrypt_type}");
        let answer = app
            .v1_get(&new_instance(&order_id(), &id).with("email", field))
            .await;
        assert_eq!(answer.code(), "000000", "{}", answer.msg());
        assert_eq!(answer.json()["encryptType"], encrypt_type);
        assert_eq!(stored(&app, &id).await.details["email"], "admin");
    }
    assert_eq!(
        hex::encode(java_aes::sha1prng(KEY.as_bytes(), 32)),
        "fa32b243c1eeb23e93357bb8be8ec84903d6395e4f1ccb2379a1666d99a6ab9f",
        "the test client derives Java's key"
    );
}

async fn credentials_round_trip_with_an_independent_client(backend: Backend) {
    for encrypt_type in ["1", "2"] {
        let app = TestApp::spawn_with(
            Database::fresh(backend).await,
            with_credentials()
                .env("KOOGATE_APP_USER_NAME", "管理员-{instanceId}")
                .env("KOOGATE_SAAS_V1_ENCRYPT_TYPE", encrypt_type),
        )
        .await;
        let phone = "+86 138-0000-0000";
        let email = "买家+tag@example.com";
        let id = format!("rt-{encrypt_type}");
        let params = new_instance(&order_id(), &id)
            .with("mobilePhone", &java_aes::encrypt(KEY, encrypt_type, phone))
            .with("email", &java_aes::encrypt(KEY, encrypt_type, email));

        let created = app.v1_get(&params).await;
        let queried = app
            .v1_post(&instance_params("queryInstance", &id).json())
            .await;

        assert_eq!(created.code(), "000000", "{}", created.msg());
        let i = stored(&app, &id).await;
        assert_eq!(
            (
                i.details["mobilePhone"].as_str(),
                i.details["email"].as_str()
            ),
            (Some(phone), Some(email))
        );
        let app_info = &created.json()["appInfo"];
        let (user, password) = credentials(app_info, encrypt_type);
        assert_eq!(user, format!("管理员-{id}"));
        assert_eq!(queried.json()["encryptType"], encrypt_type);
        assert_eq!(
            credentials(&queried.json()["info"][0]["appInfo"], encrypt_type),
            (user, password.clone())
        );
        assert_eq!(
            i.app_info.unwrap().password.as_deref(),
            Some(password.as_str())
        );
        for name in ["userName", "password"] {
            let field = app_info[name].as_str().unwrap();
            assert!(field.len() <= 128, "{name} fits String(128): {field}");
            assert!(
                field[..16].bytes().all(|b| b.is_ascii_alphanumeric()),
                "IV of letters and digits"
            );
        }
    }
}

async fn one_instance_model_across_generations(backend: Backend) {
    let app = spawn(backend).await;
    app.v1_get(&new_instance(&order_id(), "gen-v1")).await;
    app.saas(&crate::helpers::new_instance(&order_id(), "gen-v2"))
        .await;

    // Each generation sees and changes the other's instances, under the same rules.
    let v2_query = app
        .saas(r#"{"activity":"queryInstance","instanceId":"gen-v1,gen-v2"}"#)
        .await;
    let ids: Vec<_> = v2_query.json()["info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["gen-v1", "gen-v2"]);
    assert_eq!(
        app.v1_get(&instance_params("expireInstance", "gen-v2").with("orderId", "o"))
            .await
            .code(),
        "000000"
    );
    assert_eq!(stored(&app, "gen-v2").await.state.as_str(), "frozen");
    assert_eq!(
        app.saas(r#"{"activity":"releaseInstance","instanceId":"gen-v1"}"#)
            .await
            .code(),
        "000000"
    );
    assert_eq!(
        app.v1_get(&instance_params("queryInstance", "gen-v1"))
            .await
            .code(),
        "000003"
    );
    let families = (
        stored(&app, "gen-v1").await.family,
        stored(&app, "gen-v2").await.family,
    );
    assert_eq!(
        (families.0.as_str(), families.1.as_str()),
        ("saas_v1", "saas_v2")
    );
}

async fn test_instances_keep_serving_dial_tests(backend: Backend) {
    let app = spawn(backend).await;
    let create = new_instance("MOCKPERIODYEARNEW", "dial-1").with("testFlag", "1");
    let created = app.v1_get(&create).await;
    assert_eq!(created.code(), "000000");
    assert!(stored(&app, "dial-1").await.test);

    // The saved cases are replayed twice a day, release included (spec §9).
    let dial = |p: V1Params| p.with("testFlag", "1");
    for _day in 0..2 {
        for params in [
            create.clone().with("businessId", "dial-later"),
            dial(instance_params("queryInstance", "dial-1")),
            dial(instance_params("expireInstance", "dial-1").with("orderId", "MOCKPERIODYEARNEW")),
            dial(instance_params("instanceStatus", "dial-1").with("instanceStatus", "NORMAL")),
            dial(
                instance_params("refreshInstance", "dial-1")
                    .with("orderId", "R")
                    .with("expireTime", "20301121235959"),
            ),
            dial(
                instance_params("upgrade", "dial-1")
                    .with("orderId", "U")
                    .with("skuCode", "s")
                    .with("productId", "p"),
            ),
            dial(instance_params("releaseInstance", "dial-1").with("orderId", "MOCKPERIODYEARNEW")),
        ] {
            let answer = app.v1_get(&params).await;
            assert_eq!(answer.code(), "000000", "{params:?}: {}", answer.msg());
        }
    }
    assert_eq!(app.v1_get(&create).await.body, created.body);
    let real = app
        .v1_get(&instance_params("queryInstance", "dial-1"))
        .await;
    assert_eq!(
        real.code(),
        "000003",
        "a real callback still sees the test release"
    );
}

async fn every_callback_is_recorded_as_saas_v1(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    let created: Received = app.v1_get(&new_instance(&order, "audit-1")).await;
    app.v1_post(&instance_params("queryInstance", "audit-1").json())
        .await;
    app.get_raw("/koogallery/saas", "activity=newInstance")
        .await;

    let records = app.records(10).await;
    assert_eq!(records.len(), 3);
    let (refused, queried, first) = (&records[0], &records[1], &records[2]);
    for record in &records {
        assert_eq!(record.interface, "saas_v1");
        assert!(
            !format!("{record:?}").contains(KEY),
            "the key is never stored"
        );
    }
    assert_eq!(
        (first.method.as_str(), first.activity.as_deref()),
        ("GET", Some("newInstance"))
    );
    assert_eq!(first.verdict, "ok");
    assert_eq!(first.order_id.as_deref(), Some(order.as_str()));
    assert_eq!(first.instance_id.as_deref(), Some("audit-1"));
    assert!(first.raw_query.contains("authToken="));
    assert_eq!(
        first.response_sha256,
        koogate::protocol::crypto::sha256_hex(&created.body),
        "the hash of the exact bytes sent"
    );
    let password = created.json()["appInfo"]["password"]
        .as_str()
        .expect("the answer carries the (encrypted) password")
        .to_owned();
    let copy = String::from_utf8(first.response_body.clone()).unwrap();
    assert!(
        !copy.contains(&password) && copy.contains(r#""password":"[redacted]""#),
        "the audit copy has the password redacted: {copy}"
    );
    assert_eq!(
        (queried.method.as_str(), queried.activity.as_deref()),
        ("POST", Some("queryInstance"))
    );
    assert!(
        queried
            .raw_body
            .starts_with(b"{\"activity\":\"queryInstance\"")
    );
    assert_eq!(refused.verdict, "authToken is missing");
    assert_eq!(refused.result_code.as_deref(), Some("000001"));
}

/// A `HEAD` of a signed SaaS 1.0 GET (a link checker, a proxy's probe) is refused with a
/// signed 405 and creates nothing: only a GET runs the activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn head_does_not_run_an_activity() {
    let app = spawn(Backend::Sqlite).await;
    let query = new_instance(&order_id(), "head-only").signed_query(KEY);

    let response = app
        .client
        .head(format!("{}?{query}", app.url("/koogallery/saas")))
        .send()
        .await
        .expect("answered");

    assert_eq!(response.status().as_u16(), 405);
    assert!(response.headers().contains_key("Body-Sign"));
    assert!(app.store.instance("head-only").await.unwrap().is_none());
}

/// SaaS 1.0 has no nonce: a captured `instanceStatus FREEZE`, sent again unchanged (same
/// `authToken` and `timeStamp`) after an unfreeze, gets the first answer and freezes
/// nothing.
async fn an_exact_repeat_is_answered_without_running_again(backend: Backend) {
    let app = spawn(backend).await;
    let order = order_id();
    let id = format!("repeat-{order}");
    app.v1_get(&new_instance(&order, &id)).await;
    let freeze = instance_params("instanceStatus", &id)
        .with("instanceStatus", "FREEZE")
        .with("timeStamp", &v1_now())
        .signed_query(KEY);

    let first = app.get_raw("/koogallery/saas", &freeze).await;
    let unfrozen = app
        .v1_get(&instance_params("instanceStatus", &id).with("instanceStatus", "NORMAL"))
        .await;
    let replayed = app.get_raw("/koogallery/saas", &freeze).await;

    assert_eq!(first.code(), "000000", "{}", first.msg());
    assert_eq!(unfrozen.code(), "000000", "{}", unfrozen.msg());
    assert_eq!(replayed.body, first.body, "the first answer, byte for byte");
    assert!(replayed.signed_with(KEY));
    assert_eq!(stored(&app, &id).await.state.as_str(), "active");
}
