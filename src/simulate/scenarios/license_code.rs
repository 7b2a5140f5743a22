//! License code 2.0, merchant side (spec §6.3): POST JSON signed as in §2.2. There is no create
//! activity: codes are created inside KooGallery and known to the merchant once activated, so
//! the scenarios that change a code need one the server knows (`--license-code`, a test code
//! from seller center activated through the server). A code it does not know gets `000003`.

use super::{BAD_TIME, Flow, SIMULTANEOUS, Session, body, line, next_year, signed};
use crate::simulate::Scenario;
use crate::simulate::checks::{Expect, INVALID, NOT_FOUND, SUCCESS};

/// The order saved in the 更新授权码有效期 debugging case, and its expiry.
const DIAL_ORDER: &str = "MOCKMONTYRENEW";
const DIAL_EXPIRE: &str = "20991231235959";
const NEEDS_CODE: &str = "needs --license-code: a license code the server has activated (request a \
                          test code in seller center and activate it through your server)";

pub async fn run(s: &mut Session<'_>, scenario: Scenario) -> Flow {
    let code = s.options().license_code.clone();
    match (scenario, code) {
        (Scenario::Security, code) => security(s, code).await,
        (Scenario::BadInput, code) => bad_input(s, code).await,
        (Scenario::Strict, code) => strict(s, code).await,
        (Scenario::Lifecycle, Some(code)) => lifecycle(s, &code).await,
        (Scenario::Idempotency, Some(code)) => idempotency(s, &code).await,
        (Scenario::DialTest, Some(code)) => dial_test(s, &code).await,
        (scenario, None) => s.skipped(scenario.as_str(), NEEDS_CODE),
    }
}

fn refresh(license: &str, order: &str, scene: &str, expire: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "refreshLicenseCode"),
        ("expireTime", expire),
        ("license", license),
        ("orderId", order),
        ("orderLineId", &line(order)),
        ("scene", scene),
        ("testFlag", flag),
    ])
}

fn status(license: &str, status: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "updateLicenseCodeStatus"),
        ("license", license),
        ("status", status),
        ("testFlag", flag),
    ])
}

fn release(license: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "releaseLicenseCode"),
        ("license", license),
        ("testFlag", flag),
    ])
}

/// A code no server has activated.
fn unknown_code() -> String {
    format!("unknown-{}", uuid::Uuid::new_v4().simple())
}

/// A request the server must accept: a renewal of the known code, or, without one, a renewal of
/// an unknown code, which must get `000003`.
fn accepted(s: &mut Session<'_>, code: Option<&str>) -> (Vec<u8>, Expect) {
    let order = s.fresh_order();
    let flag = s.test_flag();
    match code {
        Some(code) => (
            refresh(code, &order, "RENEWAL", &next_year(), flag),
            Expect::plain(SUCCESS),
        ),
        None => (
            refresh(&unknown_code(), &order, "RENEWAL", &next_year(), flag),
            Expect::plain(NOT_FOUND),
        ),
    }
}

/// renew → freeze → unfreeze → release → release again, and an unknown code.
async fn lifecycle(s: &mut Session<'_>, code: &str) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let steps = [
        (
            "refreshLicenseCode RENEWAL answers 000000",
            refresh(code, &order, "RENEWAL", &next_year(), flag),
            Expect::plain(SUCCESS),
        ),
        (
            "updateLicenseCodeStatus FREEZE answers 000000",
            status(code, "FREEZE", flag),
            Expect::plain(SUCCESS),
        ),
        (
            "updateLicenseCodeStatus UNFREEZE answers 000000",
            status(code, "UNFREEZE", flag),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseLicenseCode answers 000000",
            release(code, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseLicenseCode again answers 000000",
            release(code, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "refreshLicenseCode for a code the server does not know answers 000003 (授权码ID不存在)",
            refresh(&unknown_code(), &order, "RENEWAL", &next_year(), flag),
            Expect::plain(NOT_FOUND),
        ),
    ];
    for (name, step, expect) in steps {
        let request = s.signed(step);
        s.step(name, request, expect).await?;
    }
    Ok(())
}

/// KooGallery retries each activity 60 times (§9): a repeat must succeed the same way.
async fn idempotency(s: &mut Session<'_>, code: &str) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let expire = next_year();
    let first = s.signed(refresh(code, &order, "RENEWAL", &expire, flag));
    let first = s
        .step(
            format!("refreshLicenseCode for renewal order {order} answers 000000"),
            first,
            Expect::plain(SUCCESS),
        )
        .await?;
    let again = s.signed(refresh(code, &order, "RENEWAL", &expire, flag));
    s.repeat(
        "the same refreshLicenseCode again answers 000000, byte for byte",
        &first,
        again,
        Expect::plain(SUCCESS),
    )
    .await?;
    let order = s.fresh_order();
    let together = (0..SIMULTANEOUS)
        .map(|_| s.signed(refresh(code, &order, "RENEWAL", &expire, flag)))
        .collect();
    s.simultaneous(
        format!("{SIMULTANEOUS} identical refreshLicenseCode calls at the same moment answer 000000, byte for byte"),
        together,
        Expect::plain(SUCCESS),
    )
    .await
}

async fn security(s: &mut Session<'_>, code: Option<String>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let expire = next_year();
    let forged = |marker: &str| refresh(marker, &order, "RENEWAL", &expire, flag);
    let (valid, expect) = accepted(s, code.as_deref());
    signed::security(s, &forged, valid, expect).await
}

async fn bad_input(s: &mut Session<'_>, code: Option<String>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let expire = next_year();
    let mut cases = signed::malformed("refreshLicenseCode", flag);
    cases.extend([
        (
            "refreshLicenseCode without license gets 000002".to_owned(),
            body(&[
                ("activity", "refreshLicenseCode"),
                ("expireTime", &expire),
                ("orderId", &order),
                ("orderLineId", &line(&order)),
                ("scene", "RENEWAL"),
                ("testFlag", flag),
            ]),
        ),
        (
            "refreshLicenseCode with a 65-character license gets 000002".to_owned(),
            refresh(&"X".repeat(65), &order, "RENEWAL", &expire, flag),
        ),
        (
            "updateLicenseCodeStatus without status gets 000002".to_owned(),
            body(&[
                ("activity", "updateLicenseCodeStatus"),
                ("license", code.as_deref().unwrap_or("unused")),
                ("testFlag", flag),
            ]),
        ),
    ]);
    let (good, expect) = accepted(s, code.as_deref());
    let after = (
        "the server still answers: refreshLicenseCode is answered",
        good,
        expect,
    );
    signed::bad_input(s, cases, after).await
}

/// The form of the body the signature is verified over (D1a), forged requests for each activity
/// and forged invalid ones; with a known code, an expiry that is not `yyyyMMddHHmmss`.
async fn strict(s: &mut Session<'_>, code: Option<String>) -> Flow {
    let flag = s.test_flag();
    let license = code.clone().unwrap_or_else(unknown_code);
    let expect = match code {
        Some(_) => Expect::plain(SUCCESS),
        None => Expect::plain(NOT_FOUND),
    };
    let renewal = |order: &str| {
        vec![
            ("activity", "refreshLicenseCode".to_owned()),
            ("expireTime", next_year()),
            ("license", license.clone()),
            ("orderId", order.to_owned()),
            ("orderLineId", line(order)),
            ("scene", "RENEWAL".to_owned()),
            ("testFlag", flag.to_owned()),
        ]
    };
    let fields = [renewal(&s.fresh_order()), renewal(&s.fresh_order())];
    signed::payload_form(s, fields, expect).await?;
    let order = s.fresh_order();
    signed::forged_each(
        s,
        vec![
            (
                "refreshLicenseCode",
                refresh(&license, &order, "RENEWAL", &next_year(), flag),
            ),
            ("updateLicenseCodeStatus", status(&license, "FREEZE", flag)),
            ("releaseLicenseCode", release(&license, flag)),
        ],
    )
    .await?;
    let without_scene = body(&[
        ("activity", "refreshLicenseCode"),
        ("expireTime", &next_year()),
        ("license", &license),
        ("orderId", &order),
        ("orderLineId", &line(&order)),
        ("testFlag", flag),
    ]);
    signed::forged_invalid(s, "refreshLicenseCode", without_scene).await?;
    // Only a code the server knows tells a bad time apart from an unknown code.
    if let Some(code) = code {
        let request = s.signed(refresh(&code, &order, "RENEWAL", BAD_TIME, flag));
        s.step(
            format!(
                "refreshLicenseCode with an expireTime that is not yyyyMMddHHmmss ({BAD_TIME:?}) gets 000002"
            ),
            request,
            Expect::plain(INVALID),
        )
        .await?;
    }
    Ok(())
}

/// The saved debugging cases (更新授权码有效期, 变更授权码状态, 释放授权码), replayed twice as the dial
/// test does, with `testFlag=1`, on the known code.
async fn dial_test(s: &mut Session<'_>, code: &str) -> Flow {
    let flag = "1";
    for label in ["dial test 1", "dial test 2, on a released code"] {
        let cases = [
            (
                "更新授权码有效期 refreshLicenseCode answers 000000",
                refresh(code, DIAL_ORDER, "RENEWAL", DIAL_EXPIRE, flag),
            ),
            (
                "变更授权码状态 FREEZE answers 000000",
                status(code, "FREEZE", flag),
            ),
            (
                "变更授权码状态 UNFREEZE answers 000000",
                status(code, "UNFREEZE", flag),
            ),
            (
                "释放授权码 releaseLicenseCode answers 000000",
                release(code, flag),
            ),
        ];
        for (name, case) in cases {
            let request = s.signed(case);
            s.step(format!("{label}: {name}"), request, Expect::plain(SUCCESS))
                .await?;
        }
    }
    Ok(())
}
