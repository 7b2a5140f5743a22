//! Online License products (getLicenseAsync, merchant-api.md §5, D13) over HTTP: the
//! result codes, idempotency on (eventId, deviceFingerprint), signed Licenses checked by
//! an independent Ed25519 implementation (ring), the app's Licenses, and the upload to the
//! mock marketplace with its retries, parking and a crash in the middle.

use crate::helpers::{
    Backend, Database, KEY, Options, TestApp, eventually, new_instance, order_id,
};
use crate::mock_market::{self, MockServer, order};
use crate::on_both_backends;
use crate::receiver::Receiver;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use koogate::marketplace::mock::Call;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

on_both_backends!(
    a_signed_license_is_uploaded_and_every_repeat_gets_the_same_one,
    each_result_code_of_the_spec_and_nothing_stored_for_bad_input,
    an_upload_is_retried_after_cbc0999_and_parked_after_cbc0101,
    a_slow_upload_answers_000004_and_a_crash_before_it_loses_nothing,
    the_app_provides_the_license_in_its_answer_or_through_the_api,
);

/// An Ed25519 key made for the test: its seed as PKCS#8 PEM (built by hand from RFC 8410,
/// not by koogate), and the public key as ring derives it.
struct TestKey {
    path: PathBuf,
    public: Vec<u8>,
    _dir: tempfile::TempDir,
}

fn test_key() -> TestKey {
    use ring::signature::KeyPair;
    let seed: [u8; 32] = rand::random();
    let mut der = hex::decode("302e020100300506032b657004220420").unwrap();
    der.extend_from_slice(&seed);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        STANDARD.encode(&der)
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("license.pem");
    std::fs::write(&path, pem).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    TestKey {
        path,
        public: pair.public_key().as_ref().to_vec(),
        _dir: dir,
    }
}

/// Checks a token with ring (not the crate koogate signs with) and returns its claims.
fn verify_independently(public: &[u8], token: &str) -> Value {
    let (first, second) = token.split_once('.').expect("two parts");
    let signature = URL_SAFE_NO_PAD.decode(second).expect("Base64url signature");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(first.as_bytes(), &signature)
        .expect("ring accepts the signature");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(first).unwrap()).unwrap()
}

pub(crate) struct Setup {
    pub(crate) app: TestApp,
    pub(crate) mock: MockServer,
    key: TestKey,
    pub(crate) instance: String,
    pub(crate) order: String,
}

pub(crate) async fn setup(backend: Backend, extra: &[(&str, &str)]) -> Setup {
    let mock = MockServer::start().await;
    let key = test_key();
    let mut options = mock_market::options(&mock)
        .env(
            "KOOGATE_LICENSE_SIGNING_KEY_FILE",
            key.path.to_str().unwrap(),
        )
        .env("KOOGATE_PROVISIONING_WAIT_MS", "2000");
    for (name, value) in extra {
        options = options.env(name, value);
    }
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let (order, instance) = new_product(&app, &mock, "20991231235959").await;
    Setup {
        app,
        mock,
        key,
        instance,
        order,
    }
}

/// A bought period product whose order facts (PERIOD, the expiry) koogate has fetched.
pub(crate) async fn new_product(
    app: &TestApp,
    mock: &MockServer,
    expire: &str,
) -> (String, String) {
    let o = order_id();
    mock.register(order(&o, "sku-lic", expire)).await;
    let id = format!("lic-{o}");
    assert_eq!(app.saas(&new_instance(&o, &id)).await.code(), "000000");
    eventually("the order facts", || async {
        let i = app.store.instance(&id).await.unwrap()?;
        i.charging_mode.is_some().then_some(())
    })
    .await;
    (o, id)
}

pub(crate) fn event_id() -> String {
    format!("EV{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}

pub(crate) fn application(instance: &str, event: &str, fingerprint: Option<&str>) -> Value {
    let mut body = json!({
        "activity": "getLicenseAsync",
        "instanceId": instance,
        "effectiveTime": "2026-10-27 10:30:15 z",
        "expireTime": "20271027103015",
        "eventId": event,
        "testFlag": "0",
    });
    if let Some(fp) = fingerprint {
        body["deviceFingerprint"] = fp.into();
    }
    body
}

async fn uploads_of(mock: &MockServer, event: &str) -> Vec<Call> {
    let path = format!("/api/mkp-openapi-public/global/v1/market-event/{event}/file");
    mock.calls()
        .await
        .into_iter()
        .filter(|c| c.path == path)
        .collect()
}

/// The token a CHARACTERS upload carried, with the body checked against §8.3 byte for byte.
fn characters_of(body: &str) -> String {
    let boundary = body
        .strip_prefix("--")
        .and_then(|b| b.split("\r\n").next())
        .expect("a boundary line");
    let meta = body
        .strip_prefix(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"isvUpdateFileReq\"\r\n\
             Content-Type: application/json\r\n\r\n"
        ))
        .and_then(|rest| rest.strip_suffix(&format!("\r\n--{boundary}--\r\n")))
        .unwrap_or_else(|| panic!("not the documented shape: {body}"));
    let meta: Value = serde_json::from_str(meta).unwrap();
    assert_eq!(meta["type"], "CHARACTERS", "{meta}");
    assert_eq!(
        meta.as_object().unwrap().len(),
        2,
        "type and characters only"
    );
    meta["characters"].as_str().unwrap().to_owned()
}

async fn a_signed_license_is_uploaded_and_every_repeat_gets_the_same_one(backend: Backend) {
    let s = setup(backend, &[]).await;
    let ev = event_id();
    s.mock.expect_license_event(&ev).await;
    let body = application(
        &s.instance,
        &ev,
        Some("00:11:22:33:44:55|DISK-1|BOARD-1|CPU-1"),
    );

    let first = s.app.saas(&body.to_string()).await;

    assert_eq!(first.code(), "000000", "{}", first.msg());
    assert!(first.signed_with(KEY));
    let uploads = uploads_of(&s.mock, &ev).await;
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        (uploads[0].status, uploads[0].code.as_str()),
        (200, "CBC.0000")
    );
    let token = characters_of(&uploads[0].body);
    let claims = verify_independently(&s.key.public, &token);
    assert_eq!(claims["v"], 1);
    assert_eq!(claims["instanceId"], s.instance.as_str());
    assert_eq!(claims["orderId"], s.order.as_str());
    assert_eq!(claims["skuCode"], "sku-lic");
    assert_eq!(claims["eventId"], ev.as_str());
    assert_eq!(
        claims["deviceFingerprint"],
        "00:11:22:33:44:55|DISK-1|BOARD-1|CPU-1"
    );
    assert_eq!(claims["effectiveTime"], "2026-10-27T10:30:15Z");
    assert_eq!(claims["expireTime"], "2027-10-27T10:30:15Z");

    // A repeat: the same answer bytes and the same License, no second upload.
    let again = s.app.saas(&body.to_string()).await;
    assert_eq!(again.body, first.body);
    assert_eq!(uploads_of(&s.mock, &ev).await.len(), 1);
    let (status, shown) = s
        .app
        .api_get(&format!("/api/v1/license-requests/{ev}?content=true"))
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["state"], "delivered");
    assert_eq!(shown["license"]["type"], "CHARACTERS");
    assert_eq!(shown["license"]["source"], "signed");
    assert_eq!(shown["license"]["characters"], token.as_str());
    assert_eq!(
        shown["license"]["sha256"],
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert_eq!(shown["uploads"][0]["code"], "CBC.0000");
    let (_, plain) = s
        .app
        .api_get(&format!("/api/v1/license-requests/{ev}"))
        .await;
    assert!(plain["license"].get("characters").is_none(), "{plain}");

    // The same eventId with another fingerprint is refused; a new eventId is a new License.
    let changed = application(&s.instance, &ev, Some("AA:BB|OTHER"));
    let refused = s.app.saas(&changed.to_string()).await;
    assert_eq!(refused.code(), "000002");
    assert!(
        refused.msg().contains("deviceFingerprint"),
        "{}",
        refused.msg()
    );
    let ev2 = event_id();
    s.mock.expect_license_event(&ev2).await;
    let second = s
        .app
        .saas(
            &application(
                &s.instance,
                &ev2,
                Some("00:11:22:33:44:55|DISK-1|BOARD-1|CPU-1"),
            )
            .to_string(),
        )
        .await;
    assert_eq!(second.code(), "000000");
    let token2 = characters_of(&uploads_of(&s.mock, &ev2).await[0].body);
    assert_ne!(token2, token);
    assert_eq!(
        verify_independently(&s.key.public, &token2)["eventId"],
        ev2.as_str()
    );

    let feed = s.app.feed(1).await;
    let kinds: Vec<(String, String)> = eventually("the License events", || async {
        let items = s.app.api_get("/api/v1/events?limit=1000").await.1["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let kinds: Vec<(String, String)> = items
            .iter()
            .filter(|e| e["data"]["subject"] == format!("license-request:{ev}").as_str())
            .map(|e| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["data"]["licenseRequest"]["state"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        (kinds.len() == 2).then_some(kinds)
    })
    .await;
    assert!(!feed.is_empty());
    assert_eq!(
        kinds,
        [
            ("license.requested".to_owned(), "uploading".to_owned()),
            ("license.delivered".to_owned(), "delivered".to_owned())
        ]
    );
}

async fn each_result_code_of_the_spec_and_nothing_stored_for_bad_input(backend: Backend) {
    let s = setup(backend, &[("KOOGATE_LICENSE_REQUIRE_FINGERPRINT", "true")]).await;
    let fp = Some("MAC|DISK|BOARD|CPU");
    let code = |body: Value| {
        let app = &s.app;
        async move { app.saas(&body.to_string()).await }
    };

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            application("no-such-instance", &event_id(), fp),
            "000003",
            "does not exist",
        ),
        (
            {
                let mut b = application(&s.instance, &event_id(), fp);
                b.as_object_mut().unwrap().remove("expireTime");
                b
            },
            "000902",
            "expireTime",
        ),
        (
            application(&s.instance, &event_id(), None),
            "000903",
            "deviceFingerprint",
        ),
        (
            {
                let mut b = application(&s.instance, &event_id(), fp);
                b["effectiveTime"] = "2100-01-01 00:00:00 z".into();
                b["expireTime"] = "21010101000000".into();
                b
            },
            "000901",
            "effectiveTime",
        ),
        (
            {
                let mut b = application(&s.instance, &event_id(), fp);
                b["effectiveTime"] = "27.10.2026 10:30".into();
                b
            },
            "000002",
            "effectiveTime",
        ),
        (
            application(&s.instance, "ev/../../x", fp),
            "000002",
            "eventId",
        ),
        (
            application(&s.instance, &"e".repeat(65), fp),
            "000002",
            "eventId",
        ),
        (
            application(&s.instance, &event_id(), Some(&"f".repeat(1025))),
            "000002",
            "deviceFingerprint",
        ),
        (
            {
                let mut b = application(&s.instance, &event_id(), fp);
                b["expireTime"] = "2".repeat(33).into();
                b
            },
            "000002",
            "expireTime",
        ),
    ];
    for (body, expected, names) in cases {
        let event = body["eventId"].as_str().unwrap().to_owned();
        let answer = code(body.clone()).await;
        assert_eq!(answer.code(), expected, "{body}: {}", answer.msg());
        assert!(answer.msg().contains(names), "{body}: {}", answer.msg());
        assert!(answer.signed_with(KEY));
        assert!(
            s.app.store.license_request(&event).await.unwrap().is_none(),
            "nothing stored for {body}"
        );
    }

    // A released instance is gone (D9).
    let release = json!({"activity": "releaseInstance", "instanceId": s.instance, "testFlag": "0"});
    assert_eq!(s.app.saas(&release.to_string()).await.code(), "000000");
    let gone = code(application(&s.instance, &event_id(), fp)).await;
    assert_eq!(gone.code(), "000003");
    assert!(
        s.mock
            .calls()
            .await
            .iter()
            .all(|c| !c.path.contains("market-event"))
    );
}

async fn an_upload_is_retried_after_cbc0999_and_parked_after_cbc0101(backend: Backend) {
    let s = setup(backend, &[("KOOGATE_PROVISIONING_WAIT_MS", "100")]).await;
    let ev = event_id();
    s.mock.expect_license_event(&ev).await;
    s.mock.fail_with_code("CBC.0999", 2).await;

    let answer = s
        .app
        .saas(&application(&s.instance, &ev, None).to_string())
        .await;
    assert!(["000000", "000004"].contains(&answer.code().as_str()));

    eventually("the upload after two CBC.0999", || async {
        let r = s.app.store.license_request(&ev).await.unwrap()?;
        (r.state.as_str() == "delivered").then_some(())
    })
    .await;
    let uploads = uploads_of(&s.mock, &ev).await;
    let codes: Vec<&str> = uploads.iter().map(|c| c.code.as_str()).collect();
    assert_eq!(codes, ["CBC.0999", "CBC.0999", "CBC.0000"]);
    assert!(
        uploads.iter().all(|c| c.body == uploads[0].body),
        "a retry sends the same bytes"
    );
    let (_, shown) = s
        .app
        .api_get(&format!("/api/v1/license-requests/{ev}"))
        .await;
    let statuses: Vec<i64> = shown["uploads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [500, 500, 200]);
    let done = s
        .app
        .saas(&application(&s.instance, &ev, None).to_string())
        .await;
    assert_eq!(done.code(), "000000", "a repeat after delivery");

    let parked = event_id();
    s.mock.expect_license_event(&parked).await;
    s.mock.fail_with_code("CBC.0101", 1).await;
    let answer = s
        .app
        .saas(&application(&s.instance, &parked, None).to_string())
        .await;
    assert_eq!(answer.code(), "000004");
    let request = eventually("the upload parked", || async {
        let r = s.app.store.license_request(&parked).await.unwrap()?;
        (r.state.as_str() == "failed").then_some(r)
    })
    .await;
    let reason = request.error.unwrap();
    assert!(
        reason.contains("CBC.0101") && reason.contains("invalid parameter"),
        "{reason}"
    );
    assert_eq!(
        uploads_of(&s.mock, &parked).await.len(),
        1,
        "parked at once"
    );
    // The application is marked failed inside the attempt; the job is parked just after.
    let job = eventually("the upload job parked", || async {
        let job = s
            .app
            .store
            .job_by_key("license.upload", &parked)
            .await
            .unwrap()?;
        (job.state.as_str() == "failed").then_some(job)
    })
    .await;
    let kinds = eventually("license.delivery_failed", || async {
        let events = s
            .app
            .store
            .events_of(&format!("license-request:{parked}"))
            .await
            .unwrap();
        (events.len() == 2).then_some(events)
    })
    .await;
    assert_eq!(kinds[1].kind, "license.delivery_failed");
    assert_eq!(
        s.app
            .saas(&application(&s.instance, &parked, None).to_string())
            .await
            .code(),
        "000004"
    );

    // Once the cause is fixed, the operator queues it again and it is delivered.
    let now = chrono::Utc::now().timestamp_millis();
    koogate::cli::jobs::retry(s.app.store.as_ref(), &[job.id], false, now)
        .await
        .unwrap();
    eventually("the retried upload", || async {
        let r = s.app.store.license_request(&parked).await.unwrap()?;
        (r.state.as_str() == "delivered").then_some(())
    })
    .await;
}

async fn a_slow_upload_answers_000004_and_a_crash_before_it_loses_nothing(backend: Backend) {
    let s = setup(backend, &[("KOOGATE_PROVISIONING_WAIT_MS", "300")]).await;
    let ev = event_id();
    s.mock.expect_license_event(&ev).await;
    s.mock.delay_next(10_000, 1).await;
    let body = application(&s.instance, &ev, Some("FP-1")).to_string();

    let answer = s.app.saas(&body).await;
    assert_eq!(answer.code(), "000004", "{}", answer.msg());
    eventually("the upload under way", || async {
        (!uploads_of(&s.mock, &ev).await.is_empty()).then_some(())
    })
    .await;
    let options = mock_market::options(&s.mock)
        .env(
            "KOOGATE_LICENSE_SIGNING_KEY_FILE",
            s.key.path.to_str().unwrap(),
        )
        .env("KOOGATE_PROVISIONING_WAIT_MS", "2000");
    let db = s.app.crash().await;

    let app = TestApp::spawn_with(db, options).await;
    let request = eventually("the upload after the crash", || async {
        let r = app.store.license_request(&ev).await.unwrap()?;
        (r.state.as_str() == "delivered").then_some(r)
    })
    .await;
    let delivered = uploads_of(&s.mock, &ev).await;
    let last = delivered.last().unwrap();
    assert_eq!(last.code, "CBC.0000");
    let token = characters_of(&last.body);
    assert_eq!(
        verify_independently(&s.key.public, &token)["deviceFingerprint"],
        "FP-1"
    );
    assert_eq!(request.license.unwrap().content.bytes(), token.as_bytes());
    assert_eq!(app.saas(&body).await.code(), "000000");
}

async fn the_app_provides_the_license_in_its_answer_or_through_the_api(backend: Backend) {
    let mock = MockServer::start().await;
    let receiver = Receiver::start().await;
    receiver.license_with(Some(r#"{"license":"APP-LICENSE-0001"}"#));
    let options: Options = receiver
        .options(mock_market::options(&mock))
        .env("KOOGATE_LICENSE_MODE", "app")
        .env("KOOGATE_LICENSE_MAX_BYTES", "64")
        .env("KOOGATE_PROVISIONING_WAIT_MS", "3000");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    let (_, instance) = new_product(&app, &mock, "20991231235959").await;

    // In its answer to license.requested: delivered within the wait.
    let ev = event_id();
    mock.expect_license_event(&ev).await;
    let answer = app
        .saas(&application(&instance, &ev, Some("FP")).to_string())
        .await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    assert_eq!(
        characters_of(&uploads_of(&mock, &ev).await[0].body),
        "APP-LICENSE-0001"
    );
    let asked = receiver
        .processed()
        .into_iter()
        .find(|d| d.kind() == "license.requested")
        .unwrap();
    assert_eq!(
        asked.body["data"]["licenseRequest"]["deviceFingerprint"],
        "FP"
    );
    assert_eq!(asked.body["data"]["instance"]["id"], instance.as_str());

    // Later, through the API, as a file.
    receiver.license_with(None);
    let later = event_id();
    mock.expect_license_event(&later).await;
    let waiting = app
        .saas(&application(&instance, &later, None).to_string())
        .await;
    assert_eq!(waiting.code(), "000004");
    let path = format!("/api/v1/license-requests/{later}");
    let refusals = [
        (r#"{"license":""}"#, "license"),
        (
            r#"{"file":{"name":"dev.lic","contentBase64":"%%%"}}"#,
            "file.contentBase64",
        ),
        (
            &*format!(r#"{{"license":"{}"}}"#, "x".repeat(65)),
            "license",
        ),
        (r#"{}"#, "license"),
    ];
    for (body, field) in refusals {
        let (status, problem) = app.api_put(&path, body, None).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let file: &[u8] = b"\x00binary license\xff";
    let put = json!({"file": {"name": "device.lic", "contentBase64": STANDARD.encode(file)}});
    let (status, shown) = app.api_put(&path, &put.to_string(), None).await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["license"]["type"], "FILE");
    assert_eq!(shown["license"]["source"], "app");
    eventually("the file delivered", || async {
        let r = app.store.license_request(&later).await.unwrap()?;
        (r.state.as_str() == "delivered").then_some(())
    })
    .await;
    let upload = &uploads_of(&mock, &later).await[0];
    assert_eq!(upload.code, "CBC.0000");
    assert!(
        upload
            .body
            .contains("name=\"file\"; filename=\"device.lic\"")
    );
    assert!(upload.body.contains(&format!(
        r#"{{"type":"FILE","file_name":"device.lic","sha256":"{}"}}"#,
        hex::encode(Sha256::digest(file))
    )));
    let (_, again) = app.api_put(&path, &put.to_string(), None).await;
    assert_eq!(
        again["state"], "delivered",
        "the same License again is a no-op"
    );
    let (status, _) = app.api_put(&path, r#"{"license":"ANOTHER"}"#, None).await;
    assert_eq!(status, 409, "Licenses are never replaced");
    let (status, _) = app
        .api_put("/api/v1/license-requests/nope", r#"{"license":"L"}"#, None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        app.saas(&application(&instance, &later, None).to_string())
            .await
            .code(),
        "000000"
    );
    // An unusable answer is a failed attempt that says why, and is delivered again.
    receiver.license_with(Some(r#"{"license":""}"#));
    let bad = event_id();
    let waiting = app
        .saas(&application(&instance, &bad, None).to_string())
        .await;
    assert_eq!(waiting.code(), "000004");
    let subject = format!("license-request:{bad}");
    let requested = app.store.events_of(&subject).await.unwrap().remove(0);
    let error = eventually("a failed attempt", || async {
        let attempts = app.store.event_attempts(&requested.event_id).await.unwrap();
        attempts.into_iter().find_map(|a| a.error)
    })
    .await;
    assert_eq!(error, "the answer is not usable: license: is empty");
    receiver.license_with(Some(r#"{"license":"FIXED-LICENSE"}"#));
    mock.expect_license_event(&bad).await;
    eventually("the fixed answer delivered", || async {
        let r = app.store.license_request(&bad).await.unwrap()?;
        (r.state.as_str() == "delivered").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite_a_key_is_created_beside_the_database_and_license_verify_checks_tokens() {
    let mock = MockServer::start().await;
    let app = TestApp::spawn_with(
        Database::fresh(Backend::Sqlite).await,
        mock_market::options(&mock),
    )
    .await;
    let db_file = app.db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let key_file = PathBuf::from(&db_file).with_file_name("license-signing-key.pem");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "only its owner may read the key");

    let (_, instance) = new_product(&app, &mock, "20991231235959").await;
    let ev = event_id();
    mock.expect_license_event(&ev).await;
    let answer = app
        .saas(&application(&instance, &ev, None).to_string())
        .await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    let token = characters_of(&uploads_of(&mock, &ev).await[0].body);
    let db = app.stop().await;

    // The CLI, as an operator runs it, with the same database: the key is found again.
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_koogate"))
            .args(args)
            .env_clear()
            .env("KOOGATE_DATABASE_URL", &db.url)
            .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
            .env("KOOGATE_LOG_FILTER", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, printed, _) = run(&["license", "public-key"], "");
    assert!(ok);
    let pem = &printed[printed.find("-----BEGIN PUBLIC KEY-----").unwrap()..];
    let hex_line = printed.lines().find(|l| l.starts_with("hex")).unwrap();
    let public = hex::decode(hex_line.split_whitespace().nth(1).unwrap()).unwrap();
    assert!(pem.trim_end().ends_with("-----END PUBLIC KEY-----"));
    assert_eq!(
        verify_independently(&public, &token)["eventId"],
        ev.as_str()
    );

    python_agrees(pem, &token, &ev);

    let (ok, printed, _) = run(&["license", "verify", "-"], &format!("{token}\n"));
    assert!(ok, "{printed}");
    assert!(
        printed.contains(&format!("\"eventId\": \"{ev}\"")),
        "{printed}"
    );
    let mut changed = token.clone().into_bytes();
    let at = changed.len() / 3;
    changed[at] = if changed[at] == b'x' { b'y' } else { b'x' };
    let (ok, _, said) = run(
        &["license", "verify", "-"],
        std::str::from_utf8(&changed).unwrap(),
    );
    assert!(!ok, "a token with one byte changed is refused");
    assert!(said.contains("refused"), "{said}");

    let (ok, listed, _) = run(&["license", "requests", "--instance", &instance], "");
    assert!(
        ok && listed.contains(&ev) && listed.contains("delivered"),
        "{listed}"
    );
    let (ok, shown, _) = run(&["license", "request", &ev], "");
    assert!(
        ok && shown.contains("CBC.0000") && shown.contains("CHARACTERS from signed"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_key_file_that_is_not_an_ed25519_key_refuses_the_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let missing = dir.path().join("missing.pem");
    for (path, reason) in [
        (&bad, "not an Ed25519 private key"),
        (&missing, "cannot read"),
    ] {
        let path = path.to_str().unwrap().to_owned();
        let error = koogate::config::Settings::load_with(None, |name| {
            (name == "KOOGATE_LICENSE_SIGNING_KEY_FILE").then(|| path.clone())
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains(&path) && error.contains(reason), "{error}");
        assert!(error.contains("license.signing_key_file"), "{error}");
    }
}

/// The README's offline check (`examples/verify_license.py`, Python's `cryptography`)
/// accepts the token and refuses it with one byte changed — where Python has the package.
fn python_agrees(pem: &str, token: &str, event_id: &str) {
    let has_cryptography = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cryptography {
        eprintln!("python3 with cryptography is not installed: the Python check is left out");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("public.pem");
    std::fs::write(&key, pem).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify_license.py");
    let check = |token: &str| {
        let file = dir.path().join("license.txt");
        std::fs::write(&file, token).unwrap();
        std::process::Command::new("python3")
            .args([script, key.to_str().unwrap(), file.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let accepted = check(token);
    let printed = String::from_utf8_lossy(&accepted.stdout);
    assert!(accepted.status.success(), "{accepted:?}");
    assert!(
        printed.contains(&format!("\"eventId\": \"{event_id}\"")),
        "{printed}"
    );
    let mut changed = token.as_bytes().to_vec();
    changed[5] = if changed[5] == b'Q' { b'R' } else { b'Q' };
    assert!(
        !check(std::str::from_utf8(&changed).unwrap())
            .status
            .success()
    );
}

on_both_backends!(the_simulator_plays_the_license_family_and_koogate_passes);

async fn the_simulator_plays_the_license_family_and_koogate_passes(backend: Backend) {
    let s = setup(backend, &[("KOOGATE_PROVISIONING_WAIT_MS", "200")]).await;
    let url = reqwest::Url::parse(&s.app.url("/koogallery/saas")).unwrap();
    let options = koogate::simulate::Options::new(
        url,
        secrecy::SecretString::from(KEY),
        koogate::simulate::Interface::License,
    );

    let report = koogate::simulate::run(&options, &mut koogate::simulate::Quiet).await;

    let failed: Vec<String> = report
        .all_checks()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {:?}", c.name, c.problems))
        .collect();
    assert!(report.all_passed(), "{failed:#?}");
    let names: Vec<&str> = report.all_checks().map(|c| c.name.as_str()).collect();
    for expected in [
        "the same application again is accepted",
        "the same eventId with another deviceFingerprint answers 000002",
        "an eventId that is not a URL path segment answers 000002",
        "getLicenseAsync on the released instance answers 000003",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(expected)),
            "{expected}: {names:#?}"
        );
    }
}
