//! Inputs that once got the wrong answer: control characters, long numeric ids, bodies
//! signed over their canonical form (D1a), on both backends.

use crate::helpers::{Backend, Database, KEY, Options, TestApp, V1Params, order_id};
use crate::on_both_backends;
use koogate::protocol::canonical::canonical_form as canonical;
use koogate::protocol::signature::{self, Variant};

on_both_backends!(
    control_characters_in_ids_get_000002_naming_the_field,
    a_control_character_in_the_nonce_gets_000001_and_is_recorded,
    long_numeric_ids_keep_their_exact_text,
    saas_v1_names_with_a_nul_are_stored,
    bodies_signed_over_their_canonical_form_are_accepted,
    refused_requests_are_stored_bounded,
);

/// POSTs `body` to `path`, its signature computed over `signed` (the body itself, or
/// what a sender that re-serialises it would sign).
async fn post_signed_over(
    app: &TestApp,
    path: &str,
    body: &str,
    signed: &[u8],
) -> crate::helpers::Received {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(KEY, &nonce, &ts, signed, Variant::A);
    app.post_raw(
        path,
        &format!("signature={sig}&timestamp={ts}&nonce={nonce}"),
        body.as_bytes().to_vec(),
    )
    .await
}

async fn control_characters_in_ids_get_000002_naming_the_field(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = order_id();
    let cases = [
        (
            format!(
                r#"{{"activity":"newInstance","businessId":"b","orderId":"{order}\u0000","orderLineId":"l","testFlag":"0"}}"#
            ),
            "orderId",
        ),
        (
            format!(
                r#"{{"activity":"newInstance","businessId":"b","orderId":"{order}","orderLineId":"x\nl","testFlag":"0"}}"#
            ),
            "orderLineId",
        ),
        (
            format!(
                r#"{{"activity":"newInstance","businessId":"b\u0000","orderId":"{order}","orderLineId":"l","testFlag":"0"}}"#
            ),
            "businessId",
        ),
        (
            r#"{"activity":"updateInstanceStatus","instanceId":"i\u0000","status":"FREEZE"}"#
                .to_owned(),
            "instanceId",
        ),
        (r#"{"activity":"newInstance\u0000"}"#.to_owned(), "activity"),
    ];

    for (body, field) in &cases {
        let answer = app.saas(body).await;

        assert_eq!(answer.code(), "000002", "{body}: {}", answer.msg());
        assert!(answer.msg().starts_with(field), "{body}: {}", answer.msg());
        assert!(answer.signed_with(KEY));
    }
    let records = app.records(10).await;
    assert_eq!(records.len(), cases.len(), "every refusal is recorded");
    assert!(
        app.store
            .instances_for_order(&order)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_control_character_in_the_nonce_gets_000001_and_is_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = crate::helpers::new_instance(&order_id(), "nul-nonce");
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = "abc\u{0}def";
    let sig = signature::sign(KEY, nonce, &ts, body.as_bytes(), Variant::A);

    let answer = app
        .post_raw(
            "/koogallery/saas",
            &format!("signature={sig}&timestamp={ts}&nonce=abc%00def"),
            body.into_bytes(),
        )
        .await;

    assert_eq!(answer.code(), "000001", "{}", answer.msg());
    assert!(answer.msg().contains("nonce"), "{}", answer.msg());
    assert_eq!(app.records(10).await.len(), 1);
}

async fn long_numeric_ids_keep_their_exact_text(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Two 30-digit orders that floating point would merge into one.
    let base = format!("{}", 100_000_000_000_000u64 + u64::from(rand_digits()));
    let (first, second) = (
        format!("{base}000000000000001"),
        format!("{base}000000000000002"),
    );

    for (order, business) in [(&first, "num-1"), (&second, "num-2")] {
        let body = format!(
            r#"{{"activity":"newInstance","businessId":"{business}-{base}","orderId":{order},"orderLineId":{order}1,"testFlag":"0"}}"#
        );
        let answer = app.saas(&body).await;
        assert_eq!(answer.code(), "000000", "{}", answer.msg());
    }
    for (order, v1_order) in [
        (&first, format!("{first}9")),
        (&second, format!("{second}9")),
    ] {
        let body = V1Params::new("newInstance")
            .with("businessId", &format!("v1-{v1_order}"))
            .with("productId", "00301-666666-0--0")
            .with("customerId", "68cbc86abc2018ab880d92f36422fa0e")
            .with("testFlag", "0")
            .json()
            .replacen('{', &format!(r#"{{"orderId":{v1_order},"#), 1);
        let answer = app.v1_post(&body).await;
        assert_eq!(answer.code(), "000000", "{}", answer.msg());
        assert_eq!(app.store.instances_for_order(order).await.unwrap().len(), 1);
        assert_eq!(
            app.store
                .instances_for_order(&v1_order)
                .await
                .unwrap()
                .len(),
            1
        );
    }
}

/// A few random digits, so that the numeric orders of two runs never meet.
fn rand_digits() -> u32 {
    uuid::Uuid::new_v4().as_fields().0 % 1_000_000_000
}

async fn saas_v1_names_with_a_nul_are_stored(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let order = order_id();
    let params = V1Params::new("newInstance")
        .with("businessId", &format!("nul-name-{order}"))
        .with("orderId", &order)
        .with("productId", "00301-666666-0--0")
        .with("customerId", "68cbc86abc2018ab880d92f36422fa0e")
        .with("customerName", "Ann\u{0}Lee")
        .with("testFlag", "0");

    let answer = app.v1_get(&params).await;

    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    assert_eq!(
        app.store.instances_for_order(&order).await.unwrap().len(),
        1
    );
}

async fn bodies_signed_over_their_canonical_form_are_accepted(backend: Backend) {
    let db = Database::fresh(backend).await;
    let app = TestApp::spawn_with(db, Options::default()).await;
    let order = order_id();
    // As a re-serialising sender might send it: spaces, keys out of order, a null.
    let body = format!(
        r#"{{"orderId": "{order}", "activity": "newInstance", "orderLineId": "{order}-000001", "businessId": "canon-{order}", "testFlag": "0", "extra": null}}"#
    );
    let signed = canonical(body.as_bytes()).expect("an object");
    assert_ne!(signed, body.as_bytes());

    let accepted = post_signed_over(&app, "/koogallery/saas", &body, &signed).await;
    let notify = format!(
        r#"{{ "testFlag": "0", "orderLineId": "{order}-000001", "orderId": "{order}", "activity": "orderNotify" }}"#
    );
    let notified = post_signed_over(
        &app,
        "/koogallery/order-notify",
        &notify,
        &canonical(notify.as_bytes()).unwrap(),
    )
    .await;

    assert_eq!(accepted.code(), "000000", "{}", accepted.msg());
    assert_eq!(notified.code(), "000000", "{}", notified.msg());
    let records = app.records(10).await;
    assert!(
        records.iter().all(|r| r.verdict == "ok:A:canonical"),
        "{:?}",
        records.iter().map(|r| &r.verdict).collect::<Vec<_>>()
    );

    // With the fallback off, only the raw bytes count.
    let db = app.stop().await;
    let strict = Options::default().env("KOOGATE_SIGNATURE_ACCEPT_CANONICAL", "false");
    let app = TestApp::spawn_with(db, strict).await;
    let refused = post_signed_over(&app, "/koogallery/saas", &body, &signed).await;
    assert_eq!(refused.code(), "000001", "{}", refused.msg());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_ids_are_koogates_unless_a_short_token() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let send = |id: String| {
        app.client
            .get(app.url("/healthz"))
            .header("x-request-id", id)
            .send()
    };

    let kept = send("kg-trace-0001".into()).await.unwrap();
    let long = send("x".repeat(65)).await.unwrap();
    let spaced = send("two words".into()).await.unwrap();

    let echoed = |r: &reqwest::Response| r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(echoed(&kept), "kg-trace-0001");
    for replaced in [echoed(&long), echoed(&spaced)] {
        assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");
    }
}

async fn refused_requests_are_stored_bounded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let query = format!(
        "signature=00&timestamp=1&nonce=n&pad={}",
        "q".repeat(60_000)
    );

    let answer = app
        .client
        .post(format!("{}?{query}", app.url("/koogallery/saas")))
        .header("x-request-id", "r".repeat(50_000))
        .body(vec![b' '; 60_000])
        .send()
        .await
        .unwrap();

    let answer = TestApp::received(answer).await;
    assert_eq!(answer.code(), "000001");
    let records = app.records(1).await;
    let record = records.first().expect("recorded");
    assert!(record.raw_query.len() <= 4096, "{}", record.raw_query.len());
    assert!(record.raw_body.len() <= 4096);
    assert!(record.request_id.len() <= 64, "{}", record.request_id.len());
    assert!(record.verdict.contains("query of"), "{}", record.verdict);
}
