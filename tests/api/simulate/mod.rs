//! `koogate simulate`: every check passes against koogate and against a correct implementation of
//! each interface; each deliberately broken server is named for its fault and fails the run; the
//! binary answers usage errors with the valid choices and says through its exit status whether
//! every check passed.
//!
//! Every interface runs against koogate itself and against the in-memory implementation in
//! `fake.rs`, which the faults then break.

mod fake;

use crate::helpers::{Backend, Database, KEY, TestApp};
use crate::on_both_backends;
use fake::Faults;
use koogate::domain::license_code::LicenseCode;
use koogate::simulate::{self, Interface, Options, Quiet, Report, Scenario};
use reqwest::Url;
use secrecy::SecretString;
use std::process::Output;
use std::time::Duration;

on_both_backends!(
    every_saas_v2_check_passes_against_koogate,
    every_saas_v1_check_passes_against_koogate,
    every_order_notify_check_passes_against_koogate,
    every_license_code_check_passes_against_koogate,
);

fn options(url: &str, interface: Interface) -> Options {
    Options::new(
        Url::parse(url).expect("test URL"),
        SecretString::from(KEY),
        interface,
    )
}

async fn simulate(options: &Options) -> Report {
    simulate::run(options, &mut Quiet).await
}

/// The failed checks, with their problems, for assertion messages.
fn failures(report: &Report) -> String {
    report
        .all_checks()
        .filter(|c| !c.passed)
        .map(|c| format!("✗ {}: {}", c.name, c.problems.join(" | ")))
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_all_passed(report: &Report, expected_scenarios: usize) {
    assert!(report.all_passed(), "{}", failures(report));
    assert_eq!(report.scenarios.len(), expected_scenarios);
    assert!(
        report.scenarios.iter().all(|s| !s.checks.is_empty()),
        "every scenario ran checks"
    );
}

async fn every_saas_v2_check_passes_against_koogate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let url = app.url("/koogallery/saas");

    let debugging = simulate(&options(&url, Interface::SaasV2)).await;
    let real = simulate(&Options {
        real: true,
        ..options(&url, Interface::SaasV2)
    })
    .await;
    let again = simulate(&options(&url, Interface::SaasV2)).await;

    assert_all_passed(&debugging, 5);
    assert_all_passed(&real, 5);
    assert_all_passed(&again, 5);
    assert_eq!((real.test_flag, debugging.test_flag), ("0", "1"));
    let names: Vec<&str> = debugging.all_checks().map(|c| c.name.as_str()).collect();
    for expected in [
        "releaseInstance again answers 000000 (D9)",
        "20 newInstance calls for one new order line at the same moment answer one instanceId, byte for byte",
        "the same request again with the same nonce (a replay) gets 000001",
        "the server still answers: newInstance for a new order answers 000000 or 000004",
        "dial test 2, on the existing instance: 释放实例 releaseInstance answers 000000",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:#?}"
        );
    }
}

async fn every_saas_v1_check_passes_against_koogate(backend: Backend) {
    // Credentials in every answer, so their encryption is checked, under both key sizes.
    for encrypt_type in ["1", "2"] {
        let settings = crate::helpers::Options::default()
            .env("KOOGATE_APP_USER_NAME", "admin-{instanceId}")
            .env("KOOGATE_APP_GENERATE_PASSWORD", "true")
            .env("KOOGATE_SAAS_V1_ENCRYPT_TYPE", encrypt_type);
        let app = TestApp::spawn_with(Database::fresh(backend).await, settings).await;
        let url = app.url("/koogallery/saas");

        let debugging = simulate(&options(&url, Interface::SaasV1)).await;
        let real = simulate(&Options {
            real: true,
            ..options(&url, Interface::SaasV1)
        })
        .await;

        assert_all_passed(&debugging, 5);
        assert_all_passed(&real, 5);
        let names: Vec<&str> = debugging.all_checks().map(|c| c.name.as_str()).collect();
        assert!(
            names.contains(&"a timeStamp 661 s old (the window plus 61 s) gets 000001 (D3)"),
            "{names:#?}"
        );
    }
}

async fn every_order_notify_check_passes_against_koogate(backend: Backend) {
    // The order details are fetched in the background, from the mock marketplace here.
    let mock = crate::mock_market::MockServer::start().await;
    let settings = crate::mock_market::options(&mock);
    let app = TestApp::spawn_with(Database::fresh(backend).await, settings).await;
    let url = app.url("/koogallery/order-notify");

    let debugging = simulate(&options(&url, Interface::OrderNotify)).await;
    let real = simulate(&Options {
        real: true,
        ..options(&url, Interface::OrderNotify)
    })
    .await;

    assert_all_passed(&debugging, 5);
    assert_all_passed(&real, 5);
}

async fn every_license_code_check_passes_against_koogate(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let code = LicenseCode::activated("LIC-SIMULATE-0001".into(), 1_700_000_000_000);
    assert!(app.store.insert_license_code(&code).await.unwrap());
    let url = app.url("/koogallery/license-code");
    let with_code = || Options {
        license_code: Some(code.license.clone()),
        ..options(&url, Interface::LicenseCode)
    };

    let first = simulate(&with_code()).await;
    let again = simulate(&with_code()).await;

    assert_all_passed(&first, 5);
    assert_all_passed(&again, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_check_passes_against_a_correct_implementation_of_each_interface() {
    let base = fake::start(Faults::default()).await;
    let cases = [
        (Interface::SaasV2, "/saas"),
        (Interface::SaasV1, "/saas"),
        (Interface::OrderNotify, "/order-notify"),
        (Interface::LicenseCode, "/license-code"),
    ];
    for (interface, path) in cases {
        let report = simulate(&Options {
            license_code: Some(fake::LICENSE.into()),
            ..options(&format!("{base}{path}"), interface)
        })
        .await;
        assert!(
            report.all_passed(),
            "{}:\n{}",
            interface.as_str(),
            failures(&report)
        );
        assert_eq!(report.scenarios.len(), 5, "{}", interface.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn license_code_scenarios_that_change_a_code_need_one() {
    let base = fake::start(Faults::default()).await;

    let report = simulate(&options(
        &format!("{base}/license-code"),
        Interface::LicenseCode,
    ))
    .await;

    let by_scenario = |s: Scenario| {
        report
            .scenarios
            .iter()
            .find(|r| r.scenario == s)
            .expect("scenario ran")
    };
    for needs_code in [
        Scenario::Lifecycle,
        Scenario::Idempotency,
        Scenario::DialTest,
    ] {
        let checks = &by_scenario(needs_code).checks;
        assert_eq!(checks.len(), 1, "{needs_code:?}");
        assert!(checks[0].problems[0].contains("needs --license-code"));
    }
    for runs_without in [Scenario::Security, Scenario::BadInput] {
        let checks = &by_scenario(runs_without).checks;
        assert!(checks.iter().all(|c| c.passed), "{}", failures(&report));
    }
}

/// Each broken server fails the run, and the failing check names its fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_servers_are_named_for_their_fault() {
    let cases = [
        (
            Faults {
                body_sign_with_timestamp: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::Lifecycle,
            "newInstance for new order",
            "Body-Sign is keyed with key + timeStamp",
        ),
        (
            Faults {
                body_sign_with_timestamp: true,
                ..Faults::default()
            },
            Interface::SaasV1,
            Scenario::Lifecycle,
            "newInstance for new order",
            "Body-Sign is keyed with key + timeStamp",
        ),
        (
            Faults {
                reserialised_after_signing: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::Lifecycle,
            "queryInstance lists the new instance",
            "the body was re-serialised after signing",
        ),
        (
            Faults {
                body_sign_without_space: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::Lifecycle,
            "newInstance for new order",
            "carries the right signature in the wrong format",
        ),
        (
            Faults {
                no_body_sign: true,
                ..Faults::default()
            },
            Interface::OrderNotify,
            Scenario::Lifecycle,
            "orderNotify for a new purchase",
            "no Body-Sign header",
        ),
        (
            Faults {
                accepts_replayed_nonce: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::Security,
            "(a replay) gets 000001",
            "resultCode is 000000 (\"success.\"), expected 000001",
        ),
        (
            Faults {
                accepts_stale_timestamp: true,
                ..Faults::default()
            },
            Interface::LicenseCode,
            Scenario::Security,
            "a timestamp 61 s old gets 000001",
            "resultCode is 000003",
        ),
        (
            Faults {
                instance_per_call: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::Idempotency,
            "newInstance again with a new businessId",
            "a second instance was created for the same order",
        ),
        (
            Faults {
                instance_per_call: true,
                ..Faults::default()
            },
            Interface::SaasV1,
            Scenario::Idempotency,
            "at the same moment",
            "different instanceIds",
        ),
        (
            Faults {
                html: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::DialTest,
            "创建实例",
            "the answer is HTML, not JSON",
        ),
        (
            Faults {
                breaks_after_bad_input: true,
                ..Faults::default()
            },
            Interface::SaasV2,
            Scenario::BadInput,
            "the server still answers",
            "HTTP status 500",
        ),
        (
            Faults {
                plain_v1_credentials: true,
                ..Faults::default()
            },
            Interface::SaasV1,
            Scenario::Lifecycle,
            "newInstance for new order",
            "appInfo.userName does not decrypt",
        ),
    ];
    for (faults, interface, scenario, check, fault) in cases {
        let base = fake::start(faults).await;
        let path = match interface {
            Interface::OrderNotify => "/order-notify",
            Interface::LicenseCode => "/license-code",
            Interface::SaasV2 | Interface::SaasV1 | Interface::License => "/saas",
        };
        let report = simulate(&Options {
            scenarios: vec![scenario],
            license_code: Some(fake::LICENSE.into()),
            ..options(&format!("{base}{path}"), interface)
        })
        .await;

        assert!(!report.all_passed(), "{faults:?} went unnoticed");
        let named = report
            .all_checks()
            .filter(|c| !c.passed && c.name.contains(check))
            .any(|c| c.problems.iter().any(|p| p.contains(fault)));
        assert!(
            named,
            "{faults:?}: no failed check {check:?} says {fault:?}:\n{}",
            failures(&report)
        );
        let failed = report.all_checks().find(|c| !c.passed).expect("a failure");
        assert!(
            !failed.exchanges.is_empty() && failed.exchanges[0].sent.starts_with("curl "),
            "a failure shows what was sent"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_answers_are_marked_and_timeouts_fail() {
    let slow = fake::start(Faults {
        delay: Duration::from_millis(300),
        ..Faults::default()
    })
    .await;
    let with_timeout = |ms: u64| Options {
        scenarios: vec![Scenario::DialTest],
        timeout: Duration::from_millis(ms),
        ..options(&format!("{slow}/order-notify"), Interface::OrderNotify)
    };

    let in_time = simulate(&with_timeout(500)).await;
    let too_late = simulate(&with_timeout(100)).await;

    assert!(in_time.all_passed(), "{}", failures(&in_time));
    assert!(
        in_time.all_checks().all(|c| c.slow),
        "300 ms of 500 is slow"
    );
    assert!(!too_late.all_passed());
    let first = too_late.all_checks().next().expect("a check");
    assert!(
        first.problems[0].starts_with("no answer within 100 ms"),
        "{:?}",
        first.problems
    );
    assert_eq!(too_late.checks, 2, "a timeout does not stop the run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_address_that_cannot_be_reached_stops_the_run_with_its_cause() {
    let closed = closed_port().await;
    let tls_to_plain = fake::start(Faults::default())
        .await
        .replace("http:", "https:");
    let cases = [
        (format!("http://127.0.0.1:{closed}/saas"), "cannot connect"),
        (format!("{tls_to_plain}/saas"), "the TLS handshake failed"),
    ];
    for (url, cause) in cases {
        let report = simulate(&options(&url, Interface::SaasV2)).await;

        assert_eq!((report.checks, report.failed), (1, 1), "{url}");
        assert!(
            report.stopped.as_deref().is_some_and(|s| s.contains(cause)),
            "{url}: {:?}",
            report.stopped
        );
        let check = report.all_checks().next().expect("one check");
        assert!(check.problems[0].contains(cause), "{:?}", check.problems);
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Runs the real binary with `args`, without a key in the environment.
async fn koogate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_koogate"))
            .args(args)
            .env_remove("KOOGATE_SIMULATE_KEY")
            .output()
            .expect("the binary runs")
    })
    .await
    .expect("blocking task")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_reports_and_exits_zero_only_when_every_check_passed() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = app.url("/koogallery/saas");
    let closed = format!("http://127.0.0.1:{}/saas", closed_port().await);

    let passed = koogate(args(&[
        "simulate",
        "--url",
        &url,
        "--key",
        KEY,
        "--scenario",
        "lifecycle",
    ]))
    .await;
    let json = koogate(args(&[
        "simulate",
        "--url",
        &url,
        "--key",
        KEY,
        "--scenario",
        "security",
        "--json",
        "--verbose",
    ]))
    .await;
    let wrong_key = koogate(args(&[
        "simulate",
        "--url",
        &url,
        "--key",
        "not-the-key",
        "--scenario",
        "lifecycle",
    ]))
    .await;
    let unreachable = koogate(args(&["simulate", "--url", &closed, "--key", KEY])).await;

    let stdout = String::from_utf8_lossy(&passed.stdout);
    assert_eq!(passed.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("  ✓ releaseInstance again answers 000000 (D9)"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("summary: 10 checks, 10 passed, 0 failed\n"),
        "{stdout}"
    );

    assert_eq!(json.status.code(), Some(0));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert_eq!(
        (report["checks"].as_u64(), report["failed"].as_u64()),
        (Some(7), Some(0))
    );
    let requests = String::from_utf8_lossy(&json.stderr);
    assert_eq!(requests.matches("→ curl -X POST").count(), 7, "{requests}");

    let stdout = String::from_utf8_lossy(&wrong_key.stdout);
    assert_eq!(wrong_key.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("✗ newInstance for new order"), "{stdout}");
    assert!(stdout.contains("resultCode is 000001"), "{stdout}");
    assert!(stdout.contains("sent: curl -X POST"), "{stdout}");

    let stdout = String::from_utf8_lossy(&unreachable.stdout);
    assert_eq!(unreachable.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("stopped early"), "{stdout}");
}

#[tokio::test]
async fn usage_errors_list_the_valid_choices() {
    let url = "https://merchant.example/koogallery/saas";
    let cases = [
        (args(&["simulate", "--url", url]), "--key <KEY>"),
        (
            args(&[
                "simulate",
                "--url",
                url,
                "--key",
                KEY,
                "--scenario",
                "everything",
            ]),
            "[possible values: lifecycle, idempotency, security, bad-input, dial-test, all]",
        ),
        (
            args(&[
                "simulate",
                "--url",
                url,
                "--key",
                KEY,
                "--interface",
                "saas-v3",
            ]),
            "[possible values: saas-v2, saas-v1, order-notify, license-code]",
        ),
        (
            args(&[
                "simulate",
                "--url",
                url,
                "--key",
                KEY,
                "--interface",
                "license-code",
            ]),
            "needs --license-code CODE",
        ),
        (
            args(&["simulate", "--url", "merchant.example/saas", "--key", KEY]),
            "expected the full production address",
        ),
    ];
    for (args, expected) in cases {
        let output = koogate(args.clone()).await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}
