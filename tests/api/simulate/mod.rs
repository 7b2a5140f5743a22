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
use koogate::protocol::crypto::KeySize;
use koogate::simulate::{self, Human, Interface, Options, Quiet, Report, Scenario};
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
    let mut lines = vec![format!("common: {}", report.common_problems.join(" | "))];
    lines.extend(
        report
            .all_checks()
            .filter(|c| !c.passed)
            .map(|c| format!("✗ {}: {}", c.name, c.problems.join(" | "))),
    );
    lines.join("\n")
}

/// Whether a failed check named like `check` says `fault`, itself or, when every check had
/// that fault, once for the whole report.
fn names(report: &Report, check: &str, fault: &str) -> bool {
    let common = report.common_problems.iter().any(|p| p.contains(fault));
    report
        .all_checks()
        .filter(|c| !c.passed && c.name.contains(check))
        .any(|c| common || c.problems.iter().any(|p| p.contains(fault)))
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

    assert_all_passed(&debugging, 6);
    assert_all_passed(&real, 6);
    assert_all_passed(&again, 6);
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
        // A product that creates accounts from the buyer's mobile number or email gets both,
        // encrypted under the product's key size, in every newInstance.
        let with_contact = simulate(&Options {
            v1_contact: true,
            v1_key_size: KeySize::from_encrypt_type(encrypt_type).unwrap(),
            ..options(&url, Interface::SaasV1)
        })
        .await;

        assert_all_passed(&debugging, 6);
        assert_all_passed(&real, 6);
        assert_all_passed(&with_contact, 6);
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

    assert_all_passed(&debugging, 6);
    assert_all_passed(&real, 6);
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

    assert_all_passed(&first, 6);
    assert_all_passed(&again, 6);
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
    for ((interface, path), real) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
        let report = simulate(&Options {
            license_code: Some(fake::LICENSE.into()),
            real,
            ..options(&format!("{base}{path}"), interface)
        })
        .await;
        assert!(
            report.all_passed(),
            "{} (real: {real}):\n{}",
            interface.as_str(),
            failures(&report)
        );
        assert_eq!(report.scenarios.len(), 6, "{}", interface.as_str());
        assert_eq!(report.warnings, 0, "{}", interface.as_str());
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
    for runs_without in [Scenario::Security, Scenario::BadInput, Scenario::Strict] {
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
        assert!(
            names(&report, check, fault),
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

/// A server broken the way a real merchant implementation was.
struct Broken {
    faults: Faults,
    interface: Interface,
    scenario: Scenario,
    real: bool,
    /// Part of the name of a check that must fail, and part of what it must say.
    check: &'static str,
    fault: &'static str,
    /// A misdiagnosis no check may make.
    not_said: &'static str,
}

fn broken(faults: Faults, interface: Interface, scenario: Scenario) -> Broken {
    Broken {
        faults,
        interface,
        scenario,
        real: false,
        check: "",
        fault: "",
        not_said: "a second instance was created",
    }
}

impl Broken {
    fn named(self, check: &'static str, fault: &'static str) -> Self {
        Self {
            check,
            fault,
            ..self
        }
    }

    fn real(self) -> Self {
        Self { real: true, ..self }
    }

    fn not_said(self, not_said: &'static str) -> Self {
        Self { not_said, ..self }
    }
}

fn path(interface: Interface) -> &'static str {
    match interface {
        Interface::OrderNotify => "/order-notify",
        Interface::LicenseCode => "/license-code",
        Interface::SaasV2 | Interface::SaasV1 | Interface::License => "/saas",
    }
}

/// Each defect found in real merchant implementations fails the run (a non-zero exit status)
/// and the failing check names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn defects_of_real_implementations_fail_the_run_and_are_named() {
    let f = Faults::default;
    use Interface::{OrderNotify, SaasV1, SaasV2};
    use Scenario::{BadInput, Idempotency, Lifecycle, Strict};
    let cases = [
        broken(
            Faults {
                verifies_reserialised: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named(
            "is not canonical",
            "verifies the signature over its own re-serialisation of the JSON",
        ),
        broken(
            Faults {
                verifies_reserialised: true,
                ..f()
            },
            OrderNotify,
            Strict,
        )
        .named(
            "is not canonical",
            "verifies the signature over its own re-serialisation of the JSON",
        ),
        broken(
            Faults {
                expects_variant_b: true,
                ..f()
            },
            SaasV2,
            Lifecycle,
        )
        .named("newInstance for new order", "the server expects variant B"),
        broken(
            Faults {
                expects_variant_b: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named("is not canonical", "the server expects variant B")
        .not_said("its own re-serialisation"),
        broken(
            Faults {
                forged_status_processing: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named(
            "a forged updateInstanceStatus",
            "a forged updateInstanceStatus was answered 000004 instead of being refused",
        ),
        broken(
            Faults {
                validates_before_authenticating: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named(
            "missing a mandatory field gets 000001",
            "validates the request before authenticating it",
        ),
        broken(
            Faults {
                unknown_instance_processing: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named(
            "refreshInstance for an unknown instance",
            "resultCode is 000004",
        ),
        broken(
            Faults {
                unknown_instance_processing: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named(
            "changeInstanceCheck for an unknown instance",
            "resultCode is 000004",
        ),
        broken(
            Faults {
                unknown_instance_processing: true,
                ..f()
            },
            SaasV1,
            Strict,
        )
        .named(
            "expireInstance for an unknown instance",
            "resultCode is 000004",
        ),
        broken(
            Faults {
                answers_after_release: true,
                ..f()
            },
            SaasV2,
            Lifecycle,
        )
        .real()
        .named(
            "refreshInstance on the released instance",
            "resultCode is 000000",
        ),
        broken(
            Faults {
                answers_after_release: true,
                ..f()
            },
            SaasV1,
            Lifecycle,
        )
        .real()
        .named(
            "queryInstance for the released instance",
            "resultCode is 000000",
        ),
        broken(
            Faults {
                crashes_on_bad_time: true,
                ..f()
            },
            SaasV2,
            Strict,
        )
        .named(
            "with an expireTime that is not yyyyMMddHHmmss",
            "HTTP status 500",
        ),
        broken(
            Faults {
                requires_mobile_phone: true,
                ..f()
            },
            SaasV1,
            Strict,
        )
        .named(
            "without mobilePhone and email",
            "the server requires mobilePhone or email",
        ),
        broken(
            Faults {
                random_iv_instance_id: true,
                ..f()
            },
            SaasV1,
            Idempotency,
        )
        .named(
            "newInstance again",
            "instanceId changes between repeats: encrypted with a random IV each time",
        ),
        broken(
            Faults {
                random_iv_instance_id: true,
                ..f()
            },
            SaasV1,
            Idempotency,
        )
        .named(
            "at the same moment",
            "instanceId changes between repeats: encrypted with a random IV each time",
        ),
        broken(
            Faults {
                unlisted_result_code: true,
                ..f()
            },
            SaasV2,
            BadInput,
        )
        .named(
            "without orderId gets 000002",
            "resultCode 000999 is not one of the spec's result codes (§5)",
        ),
    ];
    for case in cases {
        let base = fake::start(case.faults).await;
        let report = simulate(&Options {
            scenarios: vec![case.scenario],
            real: case.real,
            license_code: Some(fake::LICENSE.into()),
            ..options(&format!("{base}{}", path(case.interface)), case.interface)
        })
        .await;

        assert!(!report.all_passed(), "{:?} went unnoticed", case.faults);
        assert!(
            names(&report, case.check, case.fault),
            "{:?}: no failed check {:?} says {:?}:\n{}",
            case.faults,
            case.check,
            case.fault,
            failures(&report)
        );
        assert!(
            !failures(&report).contains(case.not_said),
            "{:?} misdiagnosed:\n{}",
            case.faults,
            failures(&report)
        );
    }
}

/// Huawei's sample server verifies the canonical form only (D1a); which form KooGallery signs
/// is not documented, so that is a warning naming the form, and the run still passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_verifying_only_the_canonical_form_passes_with_a_warning_naming_it() {
    let base = fake::start(Faults {
        verifies_canonical_only: true,
        ..Faults::default()
    })
    .await;
    for interface in [
        Interface::SaasV2,
        Interface::OrderNotify,
        Interface::LicenseCode,
    ] {
        let report = simulate(&Options {
            license_code: Some(fake::LICENSE.into()),
            ..options(&format!("{base}{}", path(interface)), interface)
        })
        .await;

        assert!(report.all_passed(), "{}", failures(&report));
        assert_eq!(report.warnings, 1, "{}", interface.as_str());
        let warned = report.all_checks().find(|c| !c.warnings.is_empty());
        assert!(
            warned.is_some_and(|c| c.warnings[0].starts_with(
                "the server verifies the signature over the body's canonical form only"
            )),
            "{warned:?}"
        );
    }

    let mut out = Vec::new();
    let strict = Options {
        scenarios: vec![Scenario::Strict],
        ..options(&format!("{base}/saas"), Interface::SaasV2)
    };
    let report = simulate::run(&strict, &mut Human::report(&mut out, false)).await;
    let text = String::from_utf8(out).unwrap();
    assert!(report.all_passed(), "{text}");
    assert!(
        text.contains("\n  ! a body that is not canonical"),
        "{text}"
    );
    assert!(
        text.contains("\n      - warning: the server verifies the signature over the body's canonical form only"),
        "{text}"
    );
    assert!(text.contains(", 0 failed, 1 with a warning\n"), "{text}");
}

/// A fault that fails every check (no Body-Sign here) is said once, at the first check, not
/// under each of them; the JSON report carries it once at the top.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fault_every_check_has_is_stated_once() {
    let base = fake::start(Faults {
        no_body_sign: true,
        ..Faults::default()
    })
    .await;
    let mut out = Vec::new();

    let report = simulate::run(
        &options(&format!("{base}/saas"), Interface::SaasV2),
        &mut Human::report(&mut out, false),
    )
    .await;

    let text = String::from_utf8(out).unwrap();
    assert_eq!(report.passed, 0, "{text}");
    assert!(report.checks > 40, "{text}");
    let json = serde_json::to_value(&report).unwrap();
    let common = json["common_problems"].as_array().expect(&text);
    assert!(
        common.len() == 1
            && common[0]
                .as_str()
                .unwrap()
                .starts_with("no Body-Sign header"),
        "{common:?}"
    );
    assert!(
        report
            .all_checks()
            .all(|c| c.problems.iter().all(|p| !p.contains("Body-Sign"))),
        "{}",
        failures(&report)
    );
    assert_eq!(text.matches("no Body-Sign header").count(), 1, "{text}");
    let stated = text.find("no Body-Sign header").unwrap();
    assert!(stated < text.find("✗ queryInstance lists the new instance").unwrap());
    assert!(text.contains("      - the same fault as every check above\n"));
    assert!(
        text.contains(" 0 passed, ")
            && text.contains(", all with the fault stated at the first check"),
        "{text}"
    );
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
    // Every check timed out: the report says so once.
    assert!(
        too_late.common_problems[0].starts_with("no answer within 100 ms"),
        "{:?}",
        too_late.common_problems
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
    let strict = koogate(args(&[
        "simulate",
        "--url",
        &url,
        "--key",
        KEY,
        "--scenario",
        "strict",
    ]))
    .await;

    let stdout = String::from_utf8_lossy(&passed.stdout);
    assert_eq!(passed.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("  ✓ releaseInstance again answers 000000 (D9)"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("summary: 12 checks, 12 passed, 0 failed\n"),
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

    // A warning (which form of the body koogate verifies, D1a) never fails the run.
    let stdout = String::from_utf8_lossy(&strict.stdout);
    assert_eq!(strict.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");

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
            "[possible values: lifecycle, idempotency, security, bad-input, strict, dial-test, all]",
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
            "[possible values: saas-v2, saas-v1, order-notify, license-code, license]",
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
