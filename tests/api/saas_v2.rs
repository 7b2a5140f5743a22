//! SaaS 2.0 over HTTP (spec §3, D1–D9), on SQLite and PostgreSQL.

use crate::helpers::{Backend, Database, KEY, Options, TestApp, java_aes, new_instance, order_id};
use crate::on_both_backends;
use koogate::protocol::signature::{self, Variant};
use std::sync::Arc;

on_both_backends!(
    new_instance_is_idempotent_on_the_order_line,
    concurrent_duplicates_create_one_instance,
    answers_survive_a_restart,
    lifecycle_follows_active_frozen_released,
    query_answers_the_ids_that_exist,
    query_encrypts_credentials_when_configured,
    refresh_upgrade_and_change_check,
    test_instances_keep_serving_dial_tests,
    bad_input_gets_000002_naming_the_problem,
    spec_vectors_over_http,
    bad_signatures_get_000001,
    replayed_nonces_get_000001,
    every_callback_is_recorded_without_keys,
    rotated_keys_sign_with_the_key_that_verified,
    oversized_bodies_are_refused_with_413,
    asynchronous_provisioning_answers_000004,
);

async fn new_instance_is_idempotent_on_the_order_line(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = order_id();

    let first = app.saas(&new_instance(&order, "biz-first")).await;
    let again = app.saas(&new_instance(&order, "biz-second")).await;

    assert_eq!(first.status, 200);
    assert_eq!(first.code(), "000000");
    assert_eq!(
        first.json()["instanceId"],
        "biz-first",
        "instanceId is the first call's businessId (D7)"
    );
    assert_eq!(
        again.body, first.body,
        "a repeat gets a byte-identical body"
    );
    assert!(first.signed_with(KEY) && again.signed_with(KEY));
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        1
    );

    // Another line of the same order is another instance.
    let other_line = new_instance(&order, "biz-line-2").replace("-000001", "-000002");
    assert_eq!(
        app.saas(&other_line).await.json()["instanceId"],
        "biz-line-2"
    );
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        2
    );
}

async fn concurrent_duplicates_create_one_instance(backend: Backend) {
    let app = Arc::new(TestApp::spawn(backend).await);
    let order = order_id();

    let calls = (0..40).map(|i| {
        let app = app.clone();
        let body = new_instance(&order, &format!("biz-{i}"));
        tokio::spawn(async move { app.saas(&body).await })
    });
    let answers: Vec<_> = futures_join(calls).await;

    let first = &answers[0];
    assert_eq!(first.code(), "000000", "{}", first.msg());
    for answer in &answers {
        assert_eq!(
            answer.body, first.body,
            "every concurrent duplicate gets the same bytes"
        );
    }
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        1
    );
}

async fn futures_join<T: Send + 'static>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    let mut out = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        out.push(handle.await.expect("task"));
    }
    out
}

async fn answers_survive_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = order_id();
    let first = app.saas(&new_instance(&order, "biz-before")).await;
    let frozen = app
        .saas(r#"{"activity":"updateInstanceStatus","instanceId":"biz-before","status":"FREEZE"}"#)
        .await;
    assert_eq!(frozen.code(), "000000");

    let db: Database = app.stop().await;
    let app = TestApp::spawn_with(db, Options::default()).await;

    let again = app.saas(&new_instance(&order, "biz-after")).await;
    assert_eq!(
        again.body, first.body,
        "the stored answer outlives the process"
    );
    let stored = app
        .store
        .instance("biz-before")
        .await
        .unwrap()
        .expect("instance kept");
    assert_eq!(stored.state.as_str(), "frozen");
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        1
    );
}

async fn lifecycle_follows_active_frozen_released(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.saas(&new_instance(&order_id(), "life-1")).await;
    let status = |s: &str| {
        format!(r#"{{"activity":"updateInstanceStatus","instanceId":"life-1","status":"{s}"}}"#)
    };
    let state = || async {
        app.store
            .instance("life-1")
            .await
            .unwrap()
            .unwrap()
            .state
            .as_str()
    };

    let steps = [
        (status("FREEZE"), "000000", "frozen"),
        (status("FREEZE"), "000000", "frozen"),
        (status("UNFREEZE"), "000000", "active"),
        (r#"{"activity":"releaseInstance","instanceId":"life-1","orderId":"UNSUB-1","orderLineId":"UNSUB-1-000001"}"#.into(), "000000", "released"),
        (r#"{"activity":"releaseInstance","instanceId":"life-1"}"#.into(), "000000", "released"),
        (status("UNFREEZE"), "000003", "released"),
        (r#"{"activity":"refreshInstance","scene":"RENEWAL","orderId":"R1","orderLineId":"R1-1","instanceId":"life-1","expireTime":"20300101000000"}"#.into(), "000003", "released"),
        (r#"{"activity":"upgradeInstance","instanceId":"life-1","orderId":"U1","orderLineId":"U1-1"}"#.into(), "000003", "released"),
    ];
    for (body, code, expected_state) in steps {
        let answer = app.saas(&body).await;
        assert_eq!(answer.code(), code, "{body}: {}", answer.msg());
        assert!(answer.signed_with(KEY));
        assert_eq!(state().await, expected_state, "{body}");
    }
    let released = app.store.instance("life-1").await.unwrap().unwrap();
    assert_eq!(released.last_order_id.as_deref(), Some("UNSUB-1"));
    assert!(released.released_ms.is_some());

    for body in [
        status("FREEZE").replace("life-1", "no-such"),
        r#"{"activity":"releaseInstance","instanceId":"no-such"}"#.into(),
    ] {
        let answer = app.saas(&body).await;
        assert_eq!(answer.code(), "000003", "{body}");
        assert!(answer.msg().contains("no-such"), "{}", answer.msg());
    }
}

async fn query_answers_the_ids_that_exist(backend: Backend) {
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        Options::default()
            .env(
                "KOOGATE_ADMIN_URL",
                "https://admin.example.net/{instanceId}",
            )
            .env("KOOGATE_APP_USER_NAME", "admin")
            .env("KOOGATE_APP_GENERATE_PASSWORD", "true")
            .env("KOOGATE_APP_MEMO", "欢迎使用"),
    )
    .await;
    app.saas(&new_instance(&order_id(), "q-1")).await;
    app.saas(&new_instance(&order_id(), "q-2")).await;
    app.saas(&new_instance(&order_id(), "q-gone")).await;
    app.saas(r#"{"activity":"releaseInstance","instanceId":"q-gone"}"#)
        .await;

    let answer = app
        .saas(r#"{"activity":"queryInstance","instanceId":"q-2,missing,q-2,q-gone,q-1"}"#)
        .await;

    assert_eq!(answer.code(), "000000");
    let info = answer.json()["info"].as_array().unwrap().clone();
    let ids: Vec<_> = info
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["q-2", "q-1"],
        "existing ids once each, in the order asked; released ones left out (D8, D9)"
    );
    let app_info = &info[0]["appInfo"];
    assert_eq!(app_info["frontEndUrl"], "https://app.example.net/q-2");
    assert_eq!(app_info["adminUrl"], "https://admin.example.net/q-2");
    assert_eq!(app_info["userName"], "admin", "D6: plain text by default");
    assert_eq!(answer.json().get("encryptType"), None);
    assert_eq!(app_info["password"].as_str().unwrap().len(), 16);
    assert_eq!(app_info["memo"], "欢迎使用");
    assert!(
        answer.body.is_ascii(),
        "Chinese text goes out as \\u escapes"
    );

    let none = app
        .saas(r#"{"activity":"queryInstance","instanceId":"missing,q-gone"}"#)
        .await;
    assert_eq!(none.code(), "000003");
}

async fn query_encrypts_credentials_when_configured(backend: Backend) {
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        Options::default()
            .env("KOOGATE_APP_USER_NAME", "admin")
            .env("KOOGATE_APP_GENERATE_PASSWORD", "true")
            .env("KOOGATE_SAAS_V2_ENCRYPT_TYPE", "2"),
    )
    .await;
    let created = app.saas(&new_instance(&order_id(), "d6-1")).await;

    let answer = app
        .saas(r#"{"activity":"queryInstance","instanceId":"d6-1"}"#)
        .await;

    assert_eq!(
        created.body, br#"{"resultCode":"000000","resultMsg":"success.","instanceId":"d6-1"}"#,
        "newInstance carries no credentials"
    );
    let json = answer.json();
    assert_eq!(json["encryptType"], "2", "D6: announced with the key size");
    let app_info = &json["info"][0]["appInfo"];
    let field = |name: &str| java_aes::decrypt(KEY, "2", app_info[name].as_str().unwrap());
    assert_eq!(field("userName"), "admin");
    let stored = app.store.instance("d6-1").await.unwrap().unwrap();
    assert_eq!(Some(field("password")), stored.app_info.unwrap().password);
    assert_eq!(app_info["frontEndUrl"], "https://app.example.net/d6-1");
    assert!(answer.signed_with(KEY));
}

async fn refresh_upgrade_and_change_check(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.saas(&new_instance(&order_id(), "r-1")).await;

    let refresh = app
        .saas(r#"{"activity":"refreshInstance","scene":"TRIAL_TO_FORMAL","orderId":"R9","orderLineId":"R9-1","instanceId":"r-1","productId":"P2","expireTime":"20221124023618256"}"#)
        .await;
    assert_eq!(refresh.code(), "000000", "{}", refresh.msg());
    let stored = app.store.instance("r-1").await.unwrap().unwrap();
    assert_eq!(stored.expire_ms, Some(1_669_257_378_256));
    assert_eq!(stored.product_id.as_deref(), Some("P2"));
    assert_eq!(stored.last_order_id.as_deref(), Some("R9"));

    let upgrade = app.saas(r#"{"activity":"upgradeInstance","instanceId":"r-1","orderId":"UP1","orderLineId":"UP1-1"}"#).await;
    assert_eq!(upgrade.code(), "000000");
    assert_eq!(
        app.store
            .instance("r-1")
            .await
            .unwrap()
            .unwrap()
            .last_order_id
            .as_deref(),
        Some("UP1")
    );

    let check = app
        .saas(r#"{"activity":"changeInstanceCheck","instanceId":"r-1","productInfo":{"productId":"P3","skuCode":"S3","linearValue":"10"}}"#)
        .await;
    assert_eq!(check.code(), "000000");
    let unknown = app
        .saas(r#"{"activity":"changeInstanceCheck","instanceId":"nope","productInfo":"{\"productId\":\"P3\"}"}"#)
        .await;
    assert_eq!(unknown.code(), "000003");
}

async fn test_instances_keep_serving_dial_tests(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let create = r#"{"activity":"newInstance","businessId":"dial-1","orderId":"MOCKPERIODYEARNEW","orderLineId":"MOCKPERIODYEARNEW-000001","testFlag":"1"}"#;
    let created = app.saas(create).await;
    assert_eq!(created.code(), "000000");
    assert!(
        app.store.instance("dial-1").await.unwrap().unwrap().test,
        "stored marked as a test"
    );

    // The saved cases are replayed twice a day, release included (spec §9).
    for _day in 0..2 {
        for body in [
            create.replace("dial-1", "dial-later"),
            r#"{"activity":"queryInstance","instanceId":"dial-1","testFlag":"1"}"#.into(),
            r#"{"activity":"updateInstanceStatus","instanceId":"dial-1","status":"FREEZE","testFlag":"1"}"#.into(),
            r#"{"activity":"refreshInstance","scene":"RENEWAL","orderId":"MOCKMONTYRENEW","orderLineId":"MOCKMONTYRENEW-000001","instanceId":"dial-1","expireTime":"20301121235959","testFlag":"1"}"#.into(),
            r#"{"activity":"releaseInstance","instanceId":"dial-1","testFlag":"1"}"#.into(),
        ] {
            let answer = app.saas(&body).await;
            assert_eq!(answer.code(), "000000", "{body}: {}", answer.msg());
        }
    }
    assert_eq!(app.saas(create).await.body, created.body);
    // A real callback still sees the test release.
    let real = app
        .saas(r#"{"activity":"queryInstance","instanceId":"dial-1"}"#)
        .await;
    assert_eq!(real.code(), "000003");
}

async fn bad_input_gets_000002_naming_the_problem(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let long = "x".repeat(65);
    let cases = [
        ("{not json".to_string(), "body is not a JSON object"),
        ("[]".into(), "body is not a JSON object"),
        (r#"{"orderId":"o"}"#.into(), "activity is missing"),
        (r#"{"activity":"launchRocket"}"#.into(), "unknown activity \"launchRocket\""),
        (r#"{"activity":"newInstance","orderLineId":"l","businessId":"b"}"#.into(), "orderId is missing"),
        (new_instance(&long, "b"), "orderId is longer than 64 characters"),
        (new_instance("o", &long), "businessId is longer than 64 characters"),
        (r#"{"activity":"updateInstanceStatus","instanceId":"i","status":"STOP"}"#.into(), "status has an invalid value"),
        (r#"{"activity":"refreshInstance","scene":"SOMETIME","orderId":"o","orderLineId":"l","instanceId":"i","expireTime":"20300101000000"}"#.into(), "scene has an invalid value"),
        (r#"{"activity":"refreshInstance","scene":"RENEWAL","orderId":"o","orderLineId":"l","instanceId":"i","expireTime":"2030-01-01"}"#.into(), "expireTime has an invalid value"),
        (r#"{"activity":"newInstance","orderId":"o","orderLineId":"l","businessId":"b","testFlag":"2"}"#.into(), "testFlag has an invalid value"),
    ];
    for (body, expected) in cases {
        let answer = app.saas(&body).await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (200, "000002"),
            "{body}"
        );
        assert!(
            answer.msg().starts_with(expected),
            "{body}: {}",
            answer.msg()
        );
        assert!(answer.signed_with(KEY), "error answers are signed too (D4)");
    }
    assert!(
        app.store.instances_for_order("o").await.unwrap().is_empty(),
        "nothing half-written"
    );
    let ok = app.saas(&new_instance(&order_id(), "still-fine")).await;
    assert_eq!(ok.code(), "000000", "the server keeps answering");
}

/// The instant the spec's vector 3 was signed.
const VECTOR_NOW: i64 = 1_680_508_066_618;

fn frozen_clock(at: i64) -> Options {
    Options {
        clock: Some(Arc::new(move || at)),
        ..Options::default()
    }
}

async fn spec_vectors_over_http(backend: Backend) {
    let app = TestApp::spawn_with(Database::fresh(backend).await, frozen_clock(VECTOR_NOW)).await;

    // §12 vector 3: the exact request, variant A signature in upper-case hex.
    let vector3 = app
        .post_raw(
            "/koogallery/saas",
            "signature=C506F4221EC15F98C40B8A5D5065D8B815A2C5596CF4421382088B5652565458&timestamp=1680508066618\
             &nonce=50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA",
            br#"{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8","orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}"#.to_vec(),
        )
        .await;
    assert_eq!(vector3.code(), "000000", "{}", vector3.msg());
    assert_eq!(
        vector3.json()["instanceId"],
        "87b94795-0603-4e24-8ae5-69420d60e3c8"
    );

    // §12 vector 2: an answer with exactly that body carries exactly that Body-Sign.
    let body = r#"{"activity":"newInstance","businessId":"61e834ba-7b97-4418-b8f7-e5345137278c","orderId":"CS1906666666ABCDE","orderLineId":"CS1906666666ABCDE-000001"}"#;
    let ts = VECTOR_NOW.to_string();
    let sig = signature::sign(KEY, "vector-2", &ts, body.as_bytes(), Variant::A);
    let vector2 = app
        .post_raw(
            "/koogallery/saas",
            &format!("signature={sig}&timestamp={ts}&nonce=vector-2"),
            body.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(
        vector2.body,
        br#"{"resultCode":"000000","resultMsg":"success.","instanceId":"61e834ba-7b97-4418-b8f7-e5345137278c"}"#
    );
    assert_eq!(
        vector2.body_sign.as_deref(),
        Some(
            r#"sign_type="HMAC-SHA256", signature= "JSqNm7p+OAeCN9tQ6u7yzH1Q5AjgE54Ic87spu6ROSY=""#
        )
    );

    // Variant B is refused unless enabled (D1) ...
    let vector3_b = "signature=4485628226C98D3B98671B10F0639E6EB4C0D17B2685B98FD8B57FA9BD75D8AF&timestamp=1680508066618&nonce=variant-b";
    let b_body = br#"{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8","orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}"#;
    let refused = app
        .post_raw("/koogallery/saas", vector3_b, b_body.to_vec())
        .await;
    assert_eq!(refused.code(), "000001");
    // ... and accepted once it is: the nonce differs from vector 3's, so the signature is recomputed.
    let db = app.stop().await;
    let app = TestApp::spawn_with(
        db,
        frozen_clock(VECTOR_NOW).env("KOOGATE_SIGNATURE_ACCEPT_VARIANT_B", "true"),
    )
    .await;
    let sig_b = signature::sign(KEY, "variant-b", "1680508066618", b_body, Variant::B);
    let accepted = app
        .post_raw(
            "/koogallery/saas",
            &format!("signature={sig_b}&timestamp=1680508066618&nonce=variant-b"),
            b_body.to_vec(),
        )
        .await;
    assert_eq!(accepted.body, vector3.body, "same order line, same answer");
}

async fn bad_signatures_get_000001(backend: Backend) {
    let app = TestApp::spawn_with(Database::fresh(backend).await, frozen_clock(VECTOR_NOW)).await;
    let body = new_instance(&order_id(), "sig-1");
    let now = VECTOR_NOW;
    let signed_at = |ts: i64| {
        let ts = ts.to_string();
        let sig = signature::sign(KEY, "n-sig-1", &ts, body.as_bytes(), Variant::A);
        format!("signature={sig}&timestamp={ts}&nonce=n-sig-1")
    };
    let tampered = body.replace("sig-1", "sig-2");
    let cases = [
        (
            signed_at(now - 61_000),
            body.clone(),
            "timestamp is 61 s old",
        ),
        (
            signed_at(now + 61_000),
            body.clone(),
            "timestamp is 61 s ahead of server time",
        ),
        (signed_at(now), tampered, "signature does not match"),
        (
            format!("timestamp={now}&nonce=n-sig-1"),
            body.clone(),
            "missing URL parameter signature",
        ),
        (
            signed_at(now).replace("&nonce=n-sig-1", ""),
            body.clone(),
            "missing URL parameter nonce",
        ),
        (
            signed_at(now).replace(&format!("timestamp={now}"), "timestamp=yesterday"),
            body.clone(),
            "timestamp is not",
        ),
    ];
    for (query, body, expected) in cases {
        let answer = app
            .post_raw("/koogallery/saas", &query, body.into_bytes())
            .await;
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (200, "000001"),
            "{query}"
        );
        assert!(answer.msg().contains(expected), "{query}: {}", answer.msg());
        assert!(answer.signed_with(KEY), "signed with the primary key");
    }
    let ts = now.to_string();
    let sig = signature::sign("not-the-key", "n-wrong", &ts, body.as_bytes(), Variant::A);
    let wrong_key = app
        .post_raw(
            "/koogallery/saas",
            &format!("signature={sig}&timestamp={ts}&nonce=n-wrong"),
            body.clone().into_bytes(),
        )
        .await;
    assert_eq!(wrong_key.code(), "000001");
    assert!(app.store.instance("sig-1").await.unwrap().is_none());
    assert!(app.store.instance("sig-2").await.unwrap().is_none());

    // A key configured nowhere: the server still answers, and says why.
    let keyless = TestApp::spawn_with(
        Database::fresh(backend).await,
        Options::default().without_env("KOOGATE_ACCESS_KEY"),
    )
    .await;
    let answer = keyless.saas(&body).await;
    assert_eq!(answer.code(), "000001");
    assert!(
        answer.msg().contains("no access key is configured"),
        "{}",
        answer.msg()
    );
    assert!(answer.body_sign.is_none(), "nothing to sign with");
}

async fn replayed_nonces_get_000001(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = new_instance(&order_id(), "replay-1");
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = signature::sign(KEY, "nonce-replay-1", &ts, body.as_bytes(), Variant::A);
    let query = format!("signature={sig}&timestamp={ts}&nonce=nonce-replay-1");

    let first = app
        .post_raw("/koogallery/saas", &query, body.clone().into_bytes())
        .await;
    let replay = app
        .post_raw("/koogallery/saas", &query, body.into_bytes())
        .await;

    assert_eq!(first.code(), "000000");
    assert_eq!(replay.code(), "000001");
    assert_eq!(replay.msg(), "nonce was already used");
    assert!(replay.signed_with(KEY));
}

async fn every_callback_is_recorded_without_keys(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = order_id();
    app.saas(&new_instance(&order, "audit-1")).await;
    app.post_signed("/koogallery/saas", "wrong", "{}").await;
    // Refused requests are recorded off the hot path: written before the next callback.
    app.refused.flushed().await;
    app.saas(r#"{"activity":"nope"}"#).await;

    let records = app.records(10).await;
    assert_eq!(records.len(), 3);
    let (unknown, refused, created) = (&records[0], &records[1], &records[2]);
    assert_eq!(created.activity.as_deref(), Some("newInstance"));
    assert_eq!(created.result_code.as_deref(), Some("000000"));
    assert_eq!(created.order_id.as_deref(), Some(order.as_str()));
    assert_eq!(created.instance_id.as_deref(), Some("audit-1"));
    assert_eq!(created.verdict, "ok:A");
    assert_eq!(
        created.raw_body,
        new_instance(&order, "audit-1").into_bytes()
    );
    assert!(created.raw_query.contains("signature="));
    assert!(
        created
            .response_body
            .starts_with(br#"{"resultCode":"000000""#)
    );
    assert!(created.duration_us > 0);
    assert_eq!(refused.verdict, "signature does not match");
    assert_eq!(refused.result_code.as_deref(), Some("000001"));
    assert_eq!(unknown.result_code.as_deref(), Some("000002"));
    for record in &records {
        let text = format!("{record:?}");
        assert!(!text.contains(KEY), "the key is never stored");
    }
}

async fn rotated_keys_sign_with_the_key_that_verified(backend: Backend) {
    let app = TestApp::spawn_with(
        Database::fresh(backend).await,
        Options::default().env("KOOGATE_ACCESS_KEY", &format!("new-key-2026,{KEY}")),
    )
    .await;
    let with_old = app
        .post_signed("/koogallery/saas", KEY, &new_instance(&order_id(), "rot-1"))
        .await;
    let with_new = app
        .post_signed(
            "/koogallery/saas",
            "new-key-2026",
            &new_instance(&order_id(), "rot-2"),
        )
        .await;
    let with_neither = app
        .post_signed(
            "/koogallery/saas",
            "old-old",
            &new_instance(&order_id(), "rot-3"),
        )
        .await;

    assert_eq!(
        (with_old.code(), with_new.code(), with_neither.code()),
        ("000000".into(), "000000".into(), "000001".into())
    );
    assert!(with_old.signed_with(KEY) && !with_old.signed_with("new-key-2026"));
    assert!(with_new.signed_with("new-key-2026"));
    assert!(
        with_neither.signed_with("new-key-2026"),
        "refusals use the primary (first) key"
    );
}

async fn oversized_bodies_are_refused_with_413(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let big = format!(
        r#"{{"activity":"newInstance","pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let answer = app.saas(&big).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.code(), "000002");
    assert!(
        answer.msg().contains("larger than 65536 bytes"),
        "{}",
        answer.msg()
    );
    assert!(answer.signed_with(KEY));

    let wrong_method = TestApp::received(
        app.client
            .put(app.url("/koogallery/saas"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.signed_with(KEY));
    assert_eq!(
        app.saas(&new_instance(&order_id(), "after-big"))
            .await
            .code(),
        "000000"
    );
}

async fn asynchronous_provisioning_answers_000004(backend: Backend) {
    struct Later;
    impl koogate::domain::provision::Provisioner for Later {
        fn provision(
            &self,
            _: &koogate::domain::provision::ProvisionRequest<'_>,
        ) -> koogate::domain::provision::Provisioned {
            koogate::domain::provision::Provisioned::Pending
        }
    }
    let options = Options {
        provisioner: Some(Arc::new(Later)),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let order = order_id();

    let first = app.saas(&new_instance(&order, "async-1")).await;
    let again = app.saas(&new_instance(&order, "async-2")).await;

    assert_eq!(first.code(), "000004");
    assert_eq!(first.json()["instanceId"], "async-1");
    assert_eq!(again.body, first.body);
    let query = app
        .saas(r#"{"activity":"queryInstance","instanceId":"async-1"}"#)
        .await;
    // D12: an instance still being provided is not listed; the answer says so.
    assert_eq!(query.code(), "000004", "{}", query.msg());
    assert!(query.json().get("info").is_none(), "no app info yet");
}

/// D5 and the issue: a database that is down gets `000005`, `/readyz` says so, and the
/// server answers again as soon as the database is back. PostgreSQL only: an embedded
/// SQLite file has no server to lose.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_gets_000005_and_service_resumes() {
    use sqlx::Connection;
    let db = Database::fresh(Backend::Postgres).await;
    let name = db
        .url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin_url = crate::postgres::with_database(&db.url, "postgres").unwrap();
    let app = TestApp::spawn_with(
        db,
        Options::default().env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
    )
    .await;
    assert_eq!(
        app.saas(&new_instance(&order_id(), "before-outage"))
            .await
            .code(),
        "000000"
    );

    let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    let set_connections =
        |allow: bool| format!("ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allow}");
    sqlx::raw_sql(&set_connections(false))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(&name)
        .execute(&mut admin)
        .await
        .unwrap();

    let order = order_id();
    let during = app.saas(&new_instance(&order, "during-outage")).await;
    assert_eq!(
        (during.status, during.code().as_str()),
        (200, "000005"),
        "{}",
        during.msg()
    );
    assert!(during.signed_with(KEY));
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    sqlx::raw_sql(&set_connections(true))
        .execute(&mut admin)
        .await
        .unwrap();
    let after = app.saas(&new_instance(&order, "after-outage")).await;
    assert_eq!(after.code(), "000000", "{}", after.msg());
    assert_eq!(
        after.json()["instanceId"],
        "after-outage",
        "the failed call stored nothing (D7)"
    );
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

/// `koogate bench` measures what it claims: every callback answered, duplicates included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_load_generator_counts_every_answer() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let args = koogate::bench::BenchArgs {
        url: app.url("/koogallery/saas"),
        key: KEY.into(),
        requests: 60,
        concurrency: 4,
        duplicates: 0.5,
        forged_rate: 0,
        forged_for: std::time::Duration::ZERO,
        rate: 0,
    };
    let report = koogate::bench::run(&args).await.unwrap();
    assert_eq!(report.outcomes.get("000000"), Some(&60), "{report}");
    assert_eq!(report.latencies.len(), 60);
    assert_eq!(
        (
            report.fresh.latencies.len(),
            report.duplicate.latencies.len()
        ),
        (30, 30),
        "fresh and duplicate callbacks are reported apart"
    );
    assert!(report.fresh.quantile(0.5) <= report.fresh.quantile(0.99));
    assert!(report.quantile(0.5) <= report.quantile(0.99));
    let records = app.records(100).await;
    let orders: std::collections::HashSet<_> =
        records.iter().filter_map(|r| r.order_id.clone()).collect();
    assert_eq!(
        orders.len(),
        30,
        "half of the callbacks re-delivered an order"
    );
}

/// `koogate bench --rate`: the genuine callbacks are paced, never sent faster than asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_load_generator_paces_genuine_callbacks() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let args = koogate::bench::BenchArgs {
        url: app.url("/koogallery/saas"),
        key: KEY.into(),
        requests: 40,
        concurrency: 4,
        duplicates: 0.0,
        forged_rate: 0,
        forged_for: std::time::Duration::ZERO,
        rate: 80,
    };
    let report = koogate::bench::run(&args).await.unwrap();
    assert_eq!(report.outcomes.get("000000"), Some(&40), "{report}");
    // Ten sends per sender, 50 ms apart: the last leaves 450 ms after the first.
    assert!(
        report.elapsed >= std::time::Duration::from_millis(440),
        "40 callbacks at 80/s took {:?}",
        report.elapsed
    );
}

/// `koogate bench --forged-rate`: the flood is sent at the rate asked for, every forged
/// callback is refused with `000001`, and the genuine ones stop with the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_load_generator_floods_with_forged_callbacks_beside_genuine_ones() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let args = koogate::bench::BenchArgs {
        url: app.url("/koogallery/saas"),
        key: KEY.into(),
        requests: 1_000_000,
        concurrency: 1,
        duplicates: 0.0,
        forged_rate: 200,
        forged_for: std::time::Duration::from_secs(1),
        rate: 0,
    };
    let report = koogate::bench::run(&args).await.unwrap();
    let flood = report.flood.as_ref().expect("a flood was asked for");
    assert_eq!(flood.outcomes.get("000001"), Some(&flood.sent), "{report}");
    // Paced per sender, missed ticks skipped: about 200 in the second, never a burst above.
    assert!((150..=201).contains(&flood.sent), "{report}");
    assert!(
        report.requests < 1_000_000,
        "the genuine callbacks stopped with the flood"
    );
    assert_eq!(
        report.outcomes.get("000000"),
        Some(&report.requests),
        "{report}"
    );
    assert_eq!(report.verdict(&args.url), Ok(()));
}

/// Graceful shutdown: a callback already being processed when the server is told to stop
/// is finished and answered, and stored; only then does `serve` return.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_finishes_callbacks_in_flight() {
    use koogate::domain::provision::{ProvisionRequest, Provisioned, Provisioner};
    use koogate::protocol::reply::AppInfo;
    /// Takes its time, and says when it has started.
    struct Slow(tokio::sync::mpsc::UnboundedSender<()>);
    impl Provisioner for Slow {
        fn provision(&self, request: &ProvisionRequest<'_>) -> Provisioned {
            let _ = self.0.send(());
            std::thread::sleep(std::time::Duration::from_millis(400));
            Provisioned::Ready(AppInfo {
                front_end_url: format!("https://slow.example.net/{}", request.instance_id),
                admin_url: None,
                user_name: None,
                password: None,
                memo: None,
            })
        }
    }
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let options = Options {
        provisioner: Some(Arc::new(Slow(started_tx))),
        ..Options::default()
    };
    let app = TestApp::spawn_with(Database::fresh(Backend::Sqlite).await, options).await;
    let store = app.store.clone();
    let url = app.url("/koogallery/saas");
    let body = new_instance(&order_id(), "in-flight");
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = signature::sign(KEY, "n-in-flight", &ts, body.as_bytes(), Variant::A);
    let request = app
        .client
        .post(format!(
            "{url}?signature={sig}&timestamp={ts}&nonce=n-in-flight"
        ))
        .body(body)
        .send();
    let in_flight =
        tokio::spawn(async move { TestApp::received(request.await.expect("answered")).await });

    started
        .recv()
        .await
        .expect("the callback reached the provisioner");
    app.stop().await;

    let answer = in_flight.await.unwrap();
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    assert!(store.instance("in-flight").await.unwrap().is_some());
}

/// The binary stops on SIGTERM, as an orchestrator stops it, and exits cleanly.
#[tokio::test]
async fn the_server_process_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_koogate"))
        .arg("serve")
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env("KOOGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("KOOGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env(
            "KOOGATE_DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .env("KOOGATE_ACCESS_KEY", KEY)
        .env("KOOGATE_LOG_FILTER", "warn")
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    crate::helpers::eventually("the server to answer /healthz", || async {
        client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            .ok()
    })
    .await;

    let pid = server.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = crate::helpers::eventually("the server to exit", || {
        let exited = server.try_wait().unwrap();
        async move { exited }
    })
    .await;
    assert!(status.success(), "exit status {status}");
}

/// Unauthenticated senders cannot fill the audit table: a refused request keeps a
/// bounded prefix of its body, and says how long it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_keeps_only_a_prefix_of_its_body() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let body = format!(
        r#"{{"activity":"newInstance","pad":"{}"}}"#,
        "x".repeat(10_000)
    );
    let answer = app
        .post_signed("/koogallery/saas", "not-the-key", &body)
        .await;
    assert_eq!(answer.code(), "000001");

    let record = &app.records(1).await[0];
    assert_eq!(
        record.raw_body,
        body.as_bytes()[..koogate::store::REFUSED_BODY_KEPT].to_vec()
    );
    assert_eq!(
        record.verdict,
        format!(
            "signature does not match (body of {} bytes, first 4096 kept)",
            body.len()
        )
    );
}

/// A body that does not arrive within the deadline is answered (408, signed JSON)
/// instead of holding the connection and the task forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_that_never_arrives_is_answered_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let options = Options::default()
        .env("KOOGATE_HTTP_CALLBACK_DEADLINE_MS", "300")
        .env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "200");
    let app = TestApp::spawn_with(Database::fresh(Backend::Sqlite).await, options).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /koogallery/saas?signature=AA&timestamp=1&nonce=n HTTP/1.1\r\nHost: koogate\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"activity\"")
        .await
        .unwrap();

    let mut raw = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut raw),
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(read.is_ok(), "no answer within 5 s");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.contains("body-sign: sign_type=\"HMAC-SHA256\""),
        "{text}"
    );
    assert!(
        text.contains(r#""resultMsg":"request body did not arrive within 300 ms""#),
        "{text}"
    );
}
