//! Online License (在线开通License, spec §6.2): the SaaS 2.0 instance activities plus
//! `getLicenseAsync`, on the same address and key. The License itself is uploaded by the
//! merchant to KooGallery, not returned, so an application is answered `000000` (the upload
//! succeeded in time) or `000004` (it is under way); either is a pass (D13).

use super::{Flow, Session, body, business_id, line, next_year};
use crate::simulate::Scenario;
use crate::simulate::checks::{ACCEPTED, Expect, INVALID, NOT_FOUND, SUCCESS};

pub async fn run(s: &mut Session<'_>, scenario: Scenario) -> Flow {
    match scenario {
        Scenario::Lifecycle => lifecycle(s).await,
        Scenario::Idempotency => idempotency(s).await,
        Scenario::BadInput => bad_input(s).await,
        // The same route, key and signature as SaaS 2.0: its checks apply unchanged.
        Scenario::Security | Scenario::Strict | Scenario::DialTest => {
            super::saas_v2::run(s, scenario).await
        }
    }
}

/// A `getLicenseAsync` body: `effectiveTime` in the documented `2023-10-27 10:30:15 z` form.
fn apply(instance: &str, event: &str, fingerprint: Option<&str>, flag: &str) -> Vec<u8> {
    let effective = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S z").to_string();
    let expire = next_year();
    let mut fields = vec![
        ("activity", "getLicenseAsync"),
        ("effectiveTime", effective.as_str()),
        ("eventId", event),
        ("expireTime", expire.as_str()),
        ("instanceId", instance),
        ("testFlag", flag),
    ];
    if let Some(fp) = fingerprint {
        fields.push(("deviceFingerprint", fp));
    }
    body(&fields)
}

fn event_id() -> String {
    format!("SIMEV{}", &uuid::Uuid::new_v4().simple().to_string()[..20])
}

const FINGERPRINT: &str = "00:16:3e:01:02:03|SIMDISK0001|SIMBOARD0001|SIMCPU0001";

/// A new instance of the License product to apply on, or why there is none.
async fn instance(s: &mut Session<'_>) -> Flow<Option<String>> {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let create = s.signed(body(&[
        ("activity", "newInstance"),
        ("businessId", &business_id()),
        ("orderId", &order),
        ("orderLineId", &line(&order)),
        ("testFlag", flag),
    ]));
    let created = s
        .step(
            format!(
                "newInstance for the License product, order {order}, answers with an instanceId"
            ),
            create,
            Expect::created(ACCEPTED),
        )
        .await?;
    Ok(created.instance_id)
}

/// Sends an application and its repeat: the repeat is accepted too, and once an
/// application was answered `000000` every repeat is the same bytes.
async fn apply_and_repeat(s: &mut Session<'_>, id: &str, event: &str) -> Flow {
    let flag = s.test_flag();
    let first = s
        .step(
            format!("getLicenseAsync {event} answers 000000 (uploaded) or 000004 (uploading)"),
            s.signed(apply(id, event, Some(FINGERPRINT), flag)),
            Expect::plain(ACCEPTED),
        )
        .await?;
    let name = "the same application again is accepted (idempotent on eventId and fingerprint)";
    let again = s.signed(apply(id, event, Some(FINGERPRINT), flag));
    if first.code.as_deref() == Some("000000") {
        s.repeat(name, &first, again, Expect::plain(SUCCESS))
            .await?;
    } else {
        s.step(name, again, Expect::plain(ACCEPTED)).await?;
    }
    Ok(())
}

/// new → apply → repeat → another device on the same eventId → a second application →
/// renew, freeze, unfreeze → release → apply on the released instance.
async fn lifecycle(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let Some(id) = instance(s).await? else {
        return s.skipped(
            "the License lifecycle",
            "newInstance gave no instanceId to apply on",
        );
    };
    let event = event_id();
    apply_and_repeat(s, &id, &event).await?;
    let order = s.fresh_order();
    let expire = next_year();
    let steps = [
        (
            "the same eventId with another deviceFingerprint answers 000002".to_owned(),
            apply(
                &id,
                &event,
                Some("ff:ff:ff:ff:ff:ff|OTHER|OTHER|OTHER"),
                flag,
            ),
            Expect::plain(INVALID),
        ),
        (
            "a new eventId is a new application, accepted".to_owned(),
            apply(&id, &event_id(), Some(FINGERPRINT), flag),
            Expect::plain(ACCEPTED),
        ),
        (
            "refreshInstance (renewal) answers 000000".to_owned(),
            body(&[
                ("activity", "refreshInstance"),
                ("expireTime", &expire),
                ("instanceId", &id),
                ("orderId", &order),
                ("orderLineId", &line(&order)),
                ("scene", "RENEWAL"),
                ("testFlag", flag),
            ]),
            Expect::plain(SUCCESS),
        ),
        (
            "updateInstanceStatus FREEZE answers 000000".to_owned(),
            body(&[
                ("activity", "updateInstanceStatus"),
                ("instanceId", &id),
                ("status", "FREEZE"),
                ("testFlag", flag),
            ]),
            Expect::plain(SUCCESS),
        ),
        (
            "updateInstanceStatus UNFREEZE answers 000000".to_owned(),
            body(&[
                ("activity", "updateInstanceStatus"),
                ("instanceId", &id),
                ("status", "UNFREEZE"),
                ("testFlag", flag),
            ]),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseInstance answers 000000".to_owned(),
            body(&[
                ("activity", "releaseInstance"),
                ("instanceId", &id),
                ("testFlag", "0"),
            ]),
            Expect::plain(SUCCESS),
        ),
        (
            "getLicenseAsync on the released instance answers 000003 (D9)".to_owned(),
            apply(&id, &event_id(), Some(FINGERPRINT), "0"),
            Expect::plain(NOT_FOUND),
        ),
    ];
    for (name, request, expect) in steps {
        s.step(name, s.signed(request), expect).await?;
    }
    Ok(())
}

/// Repeats of one application, then the same eventId from another device.
async fn idempotency(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let Some(id) = instance(s).await? else {
        return s.skipped("the License repeats", "newInstance gave no instanceId");
    };
    let event = event_id();
    apply_and_repeat(s, &id, &event).await?;
    s.step(
        "the same eventId with another deviceFingerprint answers 000002",
        s.signed(apply(&id, &event, Some("AA:BB:CC:DD:EE:FF|X|Y|Z"), flag)),
        Expect::plain(INVALID),
    )
    .await?;
    s.step(
        "the same eventId without a fingerprint answers 000002",
        s.signed(apply(&id, &event, None, flag)),
        Expect::plain(INVALID),
    )
    .await?;
    Ok(())
}

/// Applications that break §6.2's field table: each `000002`, or `000003` for an unknown
/// instance.
#[expect(
    clippy::expect_used,
    reason = "the simulator builds these bodies itself as JSON objects"
)]
async fn bad_input(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let Some(id) = instance(s).await? else {
        return s.skipped(
            "the License bad-input checks",
            "newInstance gave no instanceId",
        );
    };
    let with = |field: &str, value: &str| {
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&apply(&id, &event_id(), Some(FINGERPRINT), flag))
                .expect("the application is a JSON object");
        fields.insert(field.to_owned(), value.into());
        serde_json::to_vec(&fields).expect("a map serialises")
    };
    let without = |field: &str| {
        let mut fields: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&apply(&id, &event_id(), Some(FINGERPRINT), flag))
                .expect("the application is a JSON object");
        fields.remove(field);
        serde_json::to_vec(&fields).expect("a map serialises")
    };
    let cases = [
        (
            "an effectiveTime in another format answers 000002",
            with("effectiveTime", "27/10/2023 10:30"),
            INVALID,
        ),
        (
            "no effectiveTime answers 000002",
            without("effectiveTime"),
            INVALID,
        ),
        (
            "an eventId that is not a URL path segment answers 000002",
            with("eventId", "../x/y"),
            INVALID,
        ),
        (
            "an eventId over 64 characters answers 000002",
            with("eventId", &"E".repeat(65)),
            INVALID,
        ),
        (
            "a deviceFingerprint over 1024 characters answers 000002",
            with("deviceFingerprint", &"f".repeat(1025)),
            INVALID,
        ),
        (
            "an unknown instanceId answers 000003",
            with("instanceId", &format!("unknown-{}", business_id())),
            NOT_FOUND,
        ),
    ];
    for (name, request, codes) in cases {
        s.step(name, s.signed(request), Expect::plain(codes))
            .await?;
    }
    Ok(())
}
