//! License-code 2.0 callbacks over HTTP (spec §6.3), on SQLite and PostgreSQL.

use crate::helpers::{Backend, Database, KEY, Options, TestApp};
use crate::on_both_backends;
use koogate::domain::instance::State;
use koogate::domain::license_code::LicenseCode;

on_both_backends!(
    an_activated_code_is_renewed_frozen_and_released,
    unknown_codes_and_bad_input_are_refused,
    a_test_release_keeps_the_dial_test_passing,
    the_license_code_key_is_its_own,
    activation_through_the_open_api_makes_a_code_known,
);

const PATH: &str = "/koogallery/license-code";

async fn activated(app: &TestApp, license: &str) {
    let code = LicenseCode::activated(license.into(), 1_700_000_000_000);
    assert!(app.store.insert_license_code(&code).await.unwrap());
}

async fn an_activated_code_is_renewed_frozen_and_released(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    activated(&app, "LIC-0001").await;
    let state = || async { app.store.license_code("LIC-0001").await.unwrap().unwrap() };

    let renew = app
        .post_signed(PATH, KEY, r#"{"activity":"refreshLicenseCode","scene":"RENEWAL","orderId":"R1","orderLineId":"R1-000001","license":"LIC-0001","productId":"P2","expireTime":"20301121235959"}"#)
        .await;
    assert_eq!(
        renew.body,
        br#"{"resultCode":"000000","resultMsg":"success."}"#
    );
    assert!(renew.signed_with(KEY));
    let code = state().await;
    assert_eq!(
        (
            code.expire_ms,
            code.last_order_id.as_deref(),
            code.product_id.as_deref()
        ),
        (Some(1_921_535_999_000), Some("R1"), Some("P2"))
    );

    for (status, expected) in [
        ("FREEZE", State::Frozen),
        ("FREEZE", State::Frozen),
        ("UNFREEZE", State::Active),
    ] {
        let body = format!(
            r#"{{"activity":"updateLicenseCodeStatus","license":"LIC-0001","status":"{status}"}}"#
        );
        assert_eq!(app.post_signed(PATH, KEY, &body).await.code(), "000000");
        assert_eq!(state().await.state, expected, "{status}");
    }

    let release = r#"{"activity":"releaseLicenseCode","license":"LIC-0001","orderId":"U1","orderLineId":"U1-000001"}"#;
    assert_eq!(app.post_signed(PATH, KEY, release).await.code(), "000000");
    assert_eq!(
        app.post_signed(PATH, KEY, release).await.code(),
        "000000",
        "a repeat release succeeds"
    );
    assert_eq!(state().await.state, State::Released);
    let after = app
        .post_signed(
            PATH,
            KEY,
            r#"{"activity":"updateLicenseCodeStatus","license":"LIC-0001","status":"UNFREEZE"}"#,
        )
        .await;
    assert_eq!(after.code(), "000003");
}

async fn unknown_codes_and_bad_input_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unknown = app
        .post_signed(
            PATH,
            KEY,
            r#"{"activity":"releaseLicenseCode","license":"NEVER-ACTIVATED"}"#,
        )
        .await;
    assert_eq!(unknown.code(), "000003");
    assert_eq!(unknown.msg(), "license code NEVER-ACTIVATED does not exist");

    let cases = [
        (
            r#"{"activity":"newInstance","orderId":"o"}"#,
            "unknown activity \"newInstance\"",
        ),
        (
            r#"{"activity":"updateLicenseCodeStatus","license":"L"}"#,
            "status is missing",
        ),
        (
            r#"{"activity":"refreshLicenseCode","scene":"RENEWAL","orderId":"o","orderLineId":"l","license":"L","expireTime":"soon"}"#,
            "expireTime has an invalid value",
        ),
        ("not json", "body is not a JSON object"),
    ];
    for (body, expected) in cases {
        let answer = app.post_signed(PATH, KEY, body).await;
        assert_eq!(answer.code(), "000002", "{body}");
        assert!(
            answer.msg().starts_with(expected),
            "{body}: {}",
            answer.msg()
        );
        assert!(answer.signed_with(KEY));
    }
    let records = app.records(1).await;
    assert_eq!(records[0].interface, "license_code");
}

async fn a_test_release_keeps_the_dial_test_passing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    activated(&app, "TEST-LIC").await;
    for _day in 0..2 {
        for body in [
            r#"{"activity":"refreshLicenseCode","scene":"RENEWAL","orderId":"MOCKMONTYRENEW","orderLineId":"MOCKMONTYRENEW-000001","license":"TEST-LIC","expireTime":"20301121235959","testFlag":"1"}"#,
            r#"{"activity":"updateLicenseCodeStatus","license":"TEST-LIC","status":"FREEZE","testFlag":"1"}"#,
            r#"{"activity":"updateLicenseCodeStatus","license":"TEST-LIC","status":"UNFREEZE","testFlag":"1"}"#,
            r#"{"activity":"releaseLicenseCode","license":"TEST-LIC","testFlag":"1"}"#,
        ] {
            let answer = app.post_signed(PATH, KEY, body).await;
            assert_eq!(answer.code(), "000000", "{body}: {}", answer.msg());
        }
    }
    let real = app
        .post_signed(
            PATH,
            KEY,
            r#"{"activity":"updateLicenseCodeStatus","license":"TEST-LIC","status":"UNFREEZE"}"#,
        )
        .await;
    assert_eq!(real.code(), "000003", "real callbacks see the release");
}

async fn the_license_code_key_is_its_own(backend: Backend) {
    let options = Options::default().env("KOOGATE_ACCESS_KEY_LICENSE_CODE", "license-key-2026");
    let app = TestApp::spawn_with(Database::fresh(backend).await, options).await;
    activated(&app, "LIC-KEY").await;
    let body = r#"{"activity":"updateLicenseCodeStatus","license":"LIC-KEY","status":"FREEZE"}"#;

    let with_saas_key = app.post_signed(PATH, KEY, body).await;
    let with_own_key = app.post_signed(PATH, "license-key-2026", body).await;

    assert_eq!(with_saas_key.code(), "000001");
    assert!(
        with_saas_key.signed_with("license-key-2026"),
        "refusals use the route's primary key"
    );
    assert_eq!(with_own_key.code(), "000000");
    assert!(with_own_key.signed_with("license-key-2026"));
}

/// The whole flow: the merchant's software hands koogate a code, koogate activates it
/// with KooGallery (the mock), and KooGallery's later callbacks about it are answered.
async fn activation_through_the_open_api_makes_a_code_known(backend: Backend) {
    use crate::mock_market::{MockServer, options};
    use koogate::app::license_activation::{Activation, activate};
    use koogate::marketplace::mock::MOCK_LICENSE;
    let mock = MockServer::start().await;
    let settings_options = options(&mock);
    let env = settings_options.env.clone();
    let app = TestApp::spawn_with(Database::fresh(backend).await, settings_options).await;
    let settings =
        koogate::config::Settings::load_with(None, |name| env.get(name).cloned()).unwrap();
    let client = koogate::marketplace::Client::from_settings(&settings);
    let store = app.store.as_ref();

    let unknown = activate(&client, store, "NOT-SOLD", None, 1)
        .await
        .unwrap_err();
    let first = activate(&client, store, MOCK_LICENSE, Some("20241121100000"), 2)
        .await
        .unwrap();
    let again = activate(&client, store, MOCK_LICENSE, None, 3)
        .await
        .unwrap();

    assert!(unknown.to_string().contains("92020005"), "{unknown}");
    assert_eq!(
        store.license_code("NOT-SOLD").await.unwrap(),
        None,
        "a refused code is not stored"
    );
    let Activation::New(code) = first else {
        panic!("first activation: {first:?}")
    };
    assert_eq!(code.order_id.as_deref(), Some("MOCKPERIODYEARNEW"));
    assert!(code.expire_ms.is_some());
    assert_eq!(again, Activation::Known(code.clone()));
    let described = koogate::cli::describe_license(&code);
    assert!(
        described.contains("order       MOCKPERIODYEARNEW"),
        "{described}"
    );

    let body = format!(
        r#"{{"activity":"updateLicenseCodeStatus","license":"{MOCK_LICENSE}","status":"FREEZE"}}"#
    );
    assert_eq!(app.post_signed(PATH, KEY, &body).await.code(), "000000");
}
