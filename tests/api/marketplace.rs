//! The open-API client against the mock marketplace: signing, the fallback host, typed
//! errors, and the license, upload and usage endpoints with the spec's shapes.

use crate::helpers::KEY;
use crate::mock_market::{AK, MockServer, SK};
use koogate::config::{Credentials, Marketplace};
use koogate::marketplace::client::{MAX_ANSWER_BYTES, market_event_file_path};
use koogate::marketplace::mock::MOCK_LICENSE;
use koogate::marketplace::{ApiCode, Client, MarketError, Request, interpret};
use koogate::protocol::order::{LicenseCodeInfo, paths};
use koogate::protocol::usage;
use reqwest::Method;
use secrecy::SecretString;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn client(url: &str, fallback: &str, ak: &str, sk: &str) -> Client {
    let settings = Marketplace {
        url: url.into(),
        fallback_url: fallback.into(),
        connect_timeout_ms: 500,
        request_timeout_ms: 2_000,
        stage: String::new(),
    };
    Client::new(
        &settings,
        Some(Credentials {
            ak: ak.into(),
            sk: SecretString::from(sk),
        }),
    )
}

/// A loopback URL nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn the_spec_mock_orders_answer_with_their_details() {
    let mock = MockServer::start().await;
    let client = client(&mock.url(), "", AK, SK);

    let answer = client
        .query_order("MOCKPERIODYEARNEW", Some("MOCKPERIODYEARNEW-000001"))
        .await
        .expect("a spec mock order");

    let line = answer.order.line(Some("MOCKPERIODYEARNEW-000001")).unwrap();
    assert_eq!(line.charging_mode.as_deref(), Some("PERIOD"));
    assert_eq!(line.period_type.as_deref(), Some("year"));
    assert_eq!(
        answer.order.buyer_info.unwrap().customer_name.as_deref(),
        Some("mock_user_01")
    );
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["resultCode"], "MKT.0000");
    let unknown = client.query_order("CSNOSUCHORDER", None).await.unwrap_err();
    assert!(
        matches!(
            &unknown,
            MarketError::Api {
                status: 401,
                code: ApiCode::IllegalOperation,
                ..
            }
        ),
        "{unknown}"
    );
    assert!(!unknown.retryable());
}

#[tokio::test]
async fn an_unreachable_primary_falls_back_to_the_second_host() {
    let mock = MockServer::start().await;

    let through_fallback = client(&closed_port(), &mock.url(), AK, SK)
        .query_order("MOCKONETIMENEW", None)
        .await;
    let without_fallback = client(&closed_port(), "", AK, SK)
        .query_order("MOCKONETIMENEW", None)
        .await;

    let answer = through_fallback.expect("the fallback answers");
    assert_eq!(answer.order.order_id, "MOCKONETIMENEW");
    assert_eq!(
        mock.calls().await.len(),
        1,
        "signed for the host that answered"
    );
    let error = without_fallback.unwrap_err();
    assert!(matches!(error, MarketError::Unreachable { .. }), "{error}");
    assert!(error.retryable());
}

#[tokio::test]
async fn bad_credentials_are_refused_as_the_gateway_does() {
    let mock = MockServer::start().await;

    let wrong_sk = client(&mock.url(), "", AK, "not-the-sk")
        .query_order("MOCKONDEMAND", None)
        .await
        .unwrap_err();
    let wrong_ak = client(&mock.url(), "", "OTHERAK", SK)
        .query_order("MOCKONDEMAND", None)
        .await
        .unwrap_err();

    match &wrong_sk {
        MarketError::Gateway {
            status,
            code,
            message,
        } => {
            assert_eq!((*status, code.as_str()), (401, "APIGW.0301"));
            assert!(message.contains("signature does not match"), "{message}");
        }
        other => panic!("expected APIGW.0301, got {other}"),
    }
    assert!(
        matches!(
            &wrong_ak,
            MarketError::Api {
                status: 401,
                code: ApiCode::IllegalToken,
                ..
            }
        ),
        "{wrong_ak}"
    );
    assert!(!wrong_sk.retryable() && !wrong_ak.retryable());
    let unsigned = reqwest::get(format!(
        "{}{}?orderId=MOCKONDEMAND",
        mock.url(),
        paths::QUERY_ORDER
    ))
    .await
    .unwrap();
    assert_eq!(unsigned.status(), 401);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["error_code"], "APIGW.0301");
}

async fn post(
    client: &Client,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Value, MarketError> {
    let answer = client
        .send(&Request {
            method: &Method::POST,
            path,
            query: &[],
            content_type: Some(content_type),
            headers,
            body,
        })
        .await?;
    interpret(&answer)
}

#[tokio::test]
async fn license_codes_activate_and_answer_heartbeats() {
    let mock = MockServer::start().await;
    let client = client(&mock.url(), "", AK, SK);
    let json_body = |v: Value| v.to_string().into_bytes();

    let activated = post(
        &client,
        paths::LICENSE_ACTIVATE,
        "application/json",
        &[],
        &json_body(json!({"license": MOCK_LICENSE, "real_effect_time": "20241121100000"})),
    )
    .await
    .unwrap();
    let heartbeat = post(
        &client,
        paths::LICENSE_HEARTBEAT,
        "application/json",
        &[],
        &json_body(
            json!({"license": MOCK_LICENSE, "heartbeatInfo": {"thirdPartyAccount": "acct-1"}}),
        ),
    )
    .await
    .unwrap();
    let unknown = post(
        &client,
        paths::LICENSE_ACTIVATE,
        "application/json",
        &[],
        &json_body(json!({"license": "NO-SUCH-CODE"})),
    )
    .await
    .unwrap_err();

    assert_eq!(activated["error_code"], "92020000");
    let info: LicenseCodeInfo = serde_json::from_str(
        activated["data"]["license_code_info"]
            .as_str()
            .expect("a JSON string"),
    )
    .unwrap();
    assert_eq!(
        (info.status.as_str(), info.order_id.as_deref()),
        ("ALIVE", Some("MOCKPERIODYEARNEW"))
    );
    assert_eq!(heartbeat["data"]["license_code"], MOCK_LICENSE);
    assert_eq!(heartbeat["data"]["activate_time"], "20241121100000");
    assert!(
        matches!(
            &unknown,
            MarketError::Api {
                code: ApiCode::LicenseNotFound,
                ..
            }
        ),
        "{unknown}"
    );
}

#[tokio::test]
async fn usage_pushes_carry_both_signatures() {
    let mock = MockServer::start().await;
    let client = client(&mock.url(), "", AK, SK);
    // A window that ended an hour ago: the mock refuses future and 21-day-old windows.
    let hour = |back: i64| {
        let t = chrono::Utc::now() - chrono::Duration::hours(back);
        t.format("%Y%m%dT%H0000Z").to_string()
    };
    let body = usage::canonical_json(&json!({"usage_records": [{
        "instance_id": "inst-1", "record_time": hour(1), "begin_time": hour(2),
        "end_time": hour(1), "usage_value": "1.5", "metering_sn": "sn-1"}]}));
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let signature = usage::usage_signature(KEY, &ts, "nonce-1", &body);

    let accepted = post(
        &client,
        paths::USAGE_DATA,
        "application/json",
        &[("ts", &ts), ("nonce", "nonce-1"), ("signature", &signature)],
        body.as_bytes(),
    )
    .await;
    let forged = post(
        &client,
        paths::USAGE_DATA,
        "application/json",
        &[("ts", &ts), ("nonce", "nonce-2"), ("signature", &signature)],
        body.as_bytes(),
    )
    .await;
    let too_precise = body.replace("\"1.5\"", "\"1.00001\"");
    let too_precise_sig = usage::usage_signature(KEY, &ts, "nonce-3", &too_precise);
    let invalid = post(
        &client,
        paths::USAGE_DATA,
        "application/json",
        &[
            ("ts", &ts),
            ("nonce", "nonce-3"),
            ("signature", &too_precise_sig),
        ],
        too_precise.as_bytes(),
    )
    .await;

    assert_eq!(accepted.unwrap()["error_code"], "MKT.0000");
    assert!(matches!(
        forged.unwrap_err(),
        MarketError::Api {
            code: ApiCode::InvalidBodySign,
            ..
        }
    ));
    // Refused record by record, as the newer revision answers (spec §8.4): 003, bad value.
    assert!(matches!(
        invalid.unwrap_err(),
        MarketError::Api {
            code: ApiCode::Other(code),
            ..
        } if code == usage::ABNORMAL_DATA
    ));
}

fn multipart(meta: &Value, file: Option<&[u8]>) -> Vec<u8> {
    let mut body = format!(
        "--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"isvUpdateFileReq\"\r\n\
         Content-Type: application/json\r\n\r\n{meta}\r\n"
    )
    .into_bytes();
    if let Some(file) = file {
        body.extend_from_slice(
            b"--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"license.lic\"\r\n\
              Content-Type: application/octet-stream\r\n\r\n",
        );
        body.extend_from_slice(file);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"--XBOUNDARYX--\r\n");
    body
}

#[tokio::test]
async fn license_strings_and_files_upload_as_multipart() {
    let mock = MockServer::start().await;
    mock.expect_license_event("event-0001").await;
    let client = client(&mock.url(), "", AK, SK);
    let path = market_event_file_path("event-0001").unwrap();
    let content_type = "multipart/form-data; boundary=XBOUNDARYX";
    let file: &[u8] = b"\x00LICENSE\xffbytes";
    let sha = hex::encode(Sha256::digest(file));

    let cases = [
        (
            multipart(
                &json!({"type": "CHARACTERS", "characters": "LIC-123"}),
                None,
            ),
            Ok("CBC.0000"),
            "a string",
        ),
        (
            multipart(
                &json!({"type": "FILE", "file_name": "license.lic", "sha256": sha}),
                Some(file),
            ),
            Ok("CBC.0000"),
            "a file",
        ),
        (
            multipart(
                &json!({"type": "FILE", "file_name": "license.lic", "sha256": "00"}),
                Some(file),
            ),
            Err("sha256 does not match"),
            "a wrong hash",
        ),
        (
            multipart(&json!({"type": "CHARACTERS"}), None),
            Err("characters is required"),
            "no characters",
        ),
        (
            b"not multipart".to_vec(),
            Err("malformed multipart body"),
            "not multipart",
        ),
    ];
    for (body, expected, what) in cases {
        let result = post(&client, &path, content_type, &[], &body).await;
        match (result, expected) {
            (Ok(json), Ok(code)) => assert_eq!(json["error_code"], code, "{what}"),
            (
                Err(MarketError::Api {
                    code: ApiCode::UploadInvalidParameter,
                    message,
                    ..
                }),
                Err(part),
            ) => {
                assert!(message.contains(part), "{what}: {message}")
            }
            (other, _) => panic!("{what}: {other:?}"),
        }
    }
}

/// Serves `router` on a loopback port and returns its URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn redirects_are_not_followed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // Arrange: a host that would receive the signed headers, and one redirecting there.
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let elsewhere = serve(axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    }))
    .await;
    let redirecting = serve(axum::Router::new().fallback(move || {
        let to = format!("{elsewhere}/stolen");
        async move { axum::response::Redirect::temporary(&to) }
    }))
    .await;

    let refused = client(&redirecting, "", AK, SK)
        .query_order("MOCKONETIMENEW", None)
        .await
        .unwrap_err();

    assert!(
        matches!(refused, MarketError::Malformed { status: 307, .. }),
        "{refused}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing reached the other host"
    );
}

#[tokio::test]
async fn an_oversized_answer_is_not_read_whole() {
    let huge =
        serve(axum::Router::new().fallback(|| async { vec![b' '; MAX_ANSWER_BYTES + 1] })).await;

    let refused = client(&huge, "", AK, SK)
        .query_order("MOCKONETIMENEW", None)
        .await
        .unwrap_err();

    assert!(refused.to_string().contains("larger than"), "{refused}");
}

#[test]
fn path_parameters_are_plain_tokens() {
    assert!(
        market_event_file_path("evt-01_AB")
            .unwrap()
            .ends_with("/market-event/evt-01_AB/file")
    );
    for bad in ["", "..", "a/b", "a%2Fb", "a?b", &"x".repeat(65)] {
        assert!(market_event_file_path(bad).is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn dot_segments_are_never_sent() {
    let mock = MockServer::start().await;
    let refused = client(&mock.url(), "", AK, SK)
        .send(&Request {
            method: &Method::GET,
            path: "/api/mkp-openapi-public/global/v1/order/../../v2/other",
            query: &[],
            content_type: None,
            headers: &[],
            body: b"",
        })
        .await
        .unwrap_err();
    assert!(matches!(refused, MarketError::Request(_)), "{refused}");
}

crate::on_both_backends!(a_license_activation_is_noted_before_the_call_and_completed_after);

async fn a_license_activation_is_noted_before_the_call_and_completed_after(
    backend: crate::helpers::Backend,
) {
    use koogate::app::license_activation::{self as license, Activation};
    let db = crate::helpers::Database::fresh(backend).await;
    let options = koogate::store::PoolOptions {
        max_connections: 4,
        acquire_timeout: std::time::Duration::from_secs(5),
    };
    let store = koogate::store::connect(&db.url, &options, crate::helpers::test_sealer())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mock = MockServer::start().await;
    let client = client(&mock.url(), "", AK, SK);

    // The call fails after the activation was noted: the code is not known, but noted.
    mock.fail_next("http500", 1).await;
    let failed = license::activate(&client, store.as_ref(), MOCK_LICENSE, None, 1_000).await;
    assert!(failed.is_err());
    assert!(store.license_code(MOCK_LICENSE).await.unwrap().is_none());
    assert_eq!(
        store.unfinished_license_activations().await.unwrap(),
        vec![(MOCK_LICENSE.to_owned(), 1_000)]
    );

    // Activating again completes it.
    let done = license::activate(&client, store.as_ref(), MOCK_LICENSE, None, 2_000)
        .await
        .unwrap();
    assert!(matches!(done, Activation::New(_)));
    assert!(
        store
            .unfinished_license_activations()
            .await
            .unwrap()
            .is_empty()
    );
}
