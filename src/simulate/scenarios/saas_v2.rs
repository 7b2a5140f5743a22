//! SaaS 2.0 (spec §3): POST JSON with `signature`/`timestamp`/`nonce` URL parameters.

use super::{
    BAD_TIME, Flow, IMPOSSIBLE_TIME, SIMULTANEOUS, Session, body, business_id, dial_test_rounds,
    line, next_year, signed,
};
use crate::simulate::Scenario;
use crate::simulate::checks::{ACCEPTED, Expect, INVALID, NOT_FOUND, SUCCESS};

/// The mock order the debugging cases use (spec §8.2, §9): KooGallery's 查询订单 answers it
/// without a purchase.
const DIAL_ORDER: &str = "MOCKPERIODYEARNEW";
const DIAL_RENEWAL: &str = "MOCKMONTYRENEW";
const DIAL_CHANGE: &str = "MOCKMONTYCHANGE";
/// The businessId saved in the 创建实例 debugging case; a saved case never changes.
const DIAL_BUSINESS_ID: &str = "koogate-simulate-dial-test";
/// The expiry saved in the 更新实例 debugging case.
const DIAL_EXPIRE: &str = "20991231235959";
/// The product and specification a `changeInstanceCheck` names (made-up ids, as on the
/// debugging page).
const PRODUCT_ID: &str = "OFFI000000000000000001";
const SKU_UPGRADED: &str = "koogate-simulate-pro";

pub async fn run(s: &mut Session<'_>, scenario: Scenario) -> Flow {
    match scenario {
        Scenario::Lifecycle => lifecycle(s).await,
        Scenario::Idempotency => idempotency(s).await,
        Scenario::Security => security(s).await,
        Scenario::BadInput => bad_input(s).await,
        Scenario::Strict => strict(s).await,
        Scenario::DialTest => dial_test(s).await,
    }
}

fn new_instance_fields(order: &str, business_id: &str, flag: &str) -> Vec<(&'static str, String)> {
    vec![
        ("activity", "newInstance".into()),
        ("businessId", business_id.into()),
        ("orderId", order.into()),
        ("orderLineId", line(order)),
        ("testFlag", flag.into()),
    ]
}

fn new_instance(order: &str, business_id: &str, flag: &str) -> Vec<u8> {
    let fields = new_instance_fields(order, business_id, flag);
    body(
        &fields
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    )
}

fn query(instance: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "queryInstance"),
        ("instanceId", instance),
        ("testFlag", flag),
    ])
}

fn refresh(instance: &str, order: &str, expire: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "refreshInstance"),
        ("expireTime", expire),
        ("instanceId", instance),
        ("orderId", order),
        ("orderLineId", &line(order)),
        ("scene", "RENEWAL"),
        ("testFlag", flag),
    ])
}

fn status(instance: &str, status: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "updateInstanceStatus"),
        ("instanceId", instance),
        ("status", status),
        ("testFlag", flag),
    ])
}

fn upgrade(instance: &str, order: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "upgradeInstance"),
        ("instanceId", instance),
        ("orderId", order),
        ("orderLineId", &line(order)),
        ("testFlag", flag),
    ])
}

/// `changeInstanceCheck` for a change to the upgraded specification, with `productInfo` as a
/// JSON object or, as some senders write it, a JSON string holding one (§3.7).
#[expect(clippy::expect_used, reason = "the body is built from a JSON literal")]
fn change_check(instance: &str, as_string: bool, flag: &str) -> Vec<u8> {
    let product = serde_json::json!({
        "linearValue": 1,
        "productId": PRODUCT_ID,
        "skuCode": SKU_UPGRADED,
    });
    let product = if as_string {
        serde_json::Value::from(product.to_string())
    } else {
        product
    };
    serde_json::to_vec(&serde_json::json!({
        "activity": "changeInstanceCheck",
        "instanceId": instance,
        "productInfo": product,
        "testFlag": flag,
    }))
    .expect("JSON values always serialise")
}

fn release(instance: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "releaseInstance"),
        ("instanceId", instance),
        ("testFlag", flag),
    ])
}

/// new → query → renew → freeze → unfreeze → upgrade → release → release again.
async fn lifecycle(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let create = s.signed(new_instance(&order, &business_id(), flag));
    let created = s
        .step(
            format!(
                "newInstance for new order {order} answers 000000 or 000004 with an instanceId"
            ),
            create,
            Expect::created(ACCEPTED),
        )
        .await?;
    let Some(id) = created.instance_id else {
        return s.skipped(
            "the rest of the lifecycle",
            "newInstance gave no instanceId to continue with",
        );
    };
    let (renewal, upgrade_order) = (s.fresh_order(), s.fresh_order());
    let unknown = format!("{}-unknown", business_id());
    let mut steps = vec![
        (
            "queryInstance lists the new instance",
            query(&id, flag),
            Expect::query(&id),
        ),
        (
            "queryInstance for it and an unknown id answers 000000 and lists it (D8)",
            query(&format!("{id},{unknown}"), flag),
            Expect::query(&id),
        ),
        (
            "updateInstanceStatus for an unknown instance answers 000003",
            status(&unknown, "FREEZE", flag),
            Expect::plain(NOT_FOUND),
        ),
        (
            "refreshInstance RENEWAL answers 000000",
            refresh(&id, &renewal, &next_year(), flag),
            Expect::plain(SUCCESS),
        ),
        (
            "updateInstanceStatus FREEZE answers 000000",
            status(&id, "FREEZE", flag),
            Expect::plain(SUCCESS),
        ),
        (
            "updateInstanceStatus UNFREEZE answers 000000",
            status(&id, "UNFREEZE", flag),
            Expect::plain(SUCCESS),
        ),
        (
            "upgradeInstance answers 000000",
            upgrade(&id, &upgrade_order, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "changeInstanceCheck with productInfo as an object answers 000000 (the change is allowed)",
            change_check(&id, false, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "changeInstanceCheck with productInfo as a JSON string answers 000000",
            change_check(&id, true, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseInstance answers 000000",
            release(&id, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseInstance again answers 000000 (D9)",
            release(&id, flag),
            Expect::plain(SUCCESS),
        ),
    ];
    // A real release is final (D9). After a debugging release, koogate keeps a test
    // instance for later test callbacks so the dial test keeps passing (spec §9, D11), so
    // these checks are made on real callbacks only.
    if s.options.real {
        let later = s.fresh_order();
        steps.extend([
            (
                "refreshInstance on the released instance answers 000003 (D9)",
                refresh(&id, &later, &next_year(), flag),
                Expect::plain(NOT_FOUND),
            ),
            (
                "queryInstance for the released instance answers 000003 (D8, D9)",
                query(&id, flag),
                Expect::plain(NOT_FOUND),
            ),
            (
                "updateInstanceStatus on the released instance answers 000003 (D9)",
                status(&id, "UNFREEZE", flag),
                Expect::plain(NOT_FOUND),
            ),
            (
                "upgradeInstance on the released instance answers 000003 (D9)",
                upgrade(&id, &later, flag),
                Expect::plain(NOT_FOUND),
            ),
            (
                "changeInstanceCheck on the released instance answers 000003 (D9)",
                change_check(&id, false, flag),
                Expect::plain(NOT_FOUND),
            ),
        ]);
    }
    for (name, step, expect) in steps {
        let request = s.signed(step);
        s.step(name, request, expect).await?;
    }
    Ok(())
}

/// A repeat with a new businessId, then many identical calls at the same moment.
async fn idempotency(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let first = s.signed(new_instance(&order, &business_id(), flag));
    let first = s
        .step(
            format!("newInstance for new order {order} answers 000000 or 000004"),
            first,
            Expect::created(ACCEPTED),
        )
        .await?;
    let again = s.signed(new_instance(&order, &business_id(), flag));
    s.repeat(
        "newInstance again with a new businessId answers the same instanceId, byte for byte",
        &first,
        again,
        Expect::created(ACCEPTED),
    )
    .await?;

    let order = s.fresh_order();
    let together = (0..SIMULTANEOUS)
        .map(|_| s.signed(new_instance(&order, &business_id(), flag)))
        .collect();
    s.simultaneous(
        format!(
            "{SIMULTANEOUS} newInstance calls for one new order line at the same moment answer one instanceId, byte for byte"
        ),
        together,
        Expect::created(ACCEPTED),
    )
    .await
}

async fn security(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let forged = |marker: &str| new_instance(&order, marker, flag);
    let valid = new_instance(&order, &business_id(), flag);
    signed::security(s, &forged, valid, Expect::created(ACCEPTED)).await
}

async fn bad_input(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let long = "X".repeat(65);
    let mut cases = signed::malformed("newInstance", flag);
    cases.extend([
        (
            "newInstance without orderId gets 000002".to_owned(),
            body(&[
                ("activity", "newInstance"),
                ("businessId", &business_id()),
                ("orderLineId", &line(&order)),
                ("testFlag", flag),
            ]),
        ),
        (
            "newInstance without businessId gets 000002".to_owned(),
            body(&[
                ("activity", "newInstance"),
                ("orderId", &order),
                ("orderLineId", &line(&order)),
                ("testFlag", flag),
            ]),
        ),
        (
            "newInstance with a 65-character orderId gets 000002".to_owned(),
            new_instance(&long, &business_id(), flag),
        ),
        (
            "newInstance with a 65-character businessId gets 000002".to_owned(),
            new_instance(&order, &long, flag),
        ),
        (
            "updateInstanceStatus without status gets 000002".to_owned(),
            body(&[
                ("activity", "updateInstanceStatus"),
                ("instanceId", &business_id()),
                ("testFlag", flag),
            ]),
        ),
    ]);
    let after = (
        "the server still answers: newInstance for a new order answers 000000 or 000004",
        new_instance(&order, &business_id(), flag),
        Expect::created(ACCEPTED),
    );
    signed::bad_input(s, cases, after).await
}

/// What real implementations get wrong: the form of the body the signature covers (D1a), a
/// `newInstance` without `testFlag`, forged requests for every activity (and invalid forged
/// ones), every activity for an unknown instance, and expiry times that are not
/// `yyyyMMddHHmmss`.
async fn strict(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let create = s.signed(new_instance(&order, &business_id(), flag));
    let created = s
        .step(
            format!(
                "newInstance for new order {order} answers 000000 or 000004 with an instanceId"
            ),
            create,
            Expect::created(ACCEPTED),
        )
        .await?;
    let fields = [
        new_instance_fields(&s.fresh_order(), &business_id(), flag),
        new_instance_fields(&s.fresh_order(), &business_id(), flag),
    ];
    signed::payload_form(s, fields, Expect::created(ACCEPTED)).await?;
    let real = s.fresh_order();
    let without_flag = body(&[
        ("activity", "newInstance"),
        ("businessId", &business_id()),
        ("orderId", &real),
        ("orderLineId", &line(&real)),
    ]);
    let request = s.signed(without_flag);
    s.step(
        "newInstance without testFlag (a real order, as the newest pages send it) answers 000000 or 000004",
        request,
        Expect::created(ACCEPTED),
    )
    .await?;

    let Some(id) = created.instance_id else {
        return s.skipped(
            "the rest of the strict scenario",
            "newInstance gave no instanceId to continue with",
        );
    };
    let other = s.fresh_order();
    signed::forged_each(
        s,
        vec![
            ("refreshInstance", refresh(&id, &other, &next_year(), flag)),
            ("updateInstanceStatus", status(&id, "FREEZE", flag)),
            ("upgradeInstance", upgrade(&id, &other, flag)),
            ("changeInstanceCheck", change_check(&id, false, flag)),
            ("queryInstance", query(&id, flag)),
            ("releaseInstance", release(&id, flag)),
        ],
    )
    .await?;
    let without_order = body(&[
        ("activity", "newInstance"),
        ("businessId", &business_id()),
        ("orderLineId", &line(&other)),
        ("testFlag", flag),
    ]);
    signed::forged_invalid(s, "newInstance", without_order).await?;

    let unknown = format!("{}-unknown", business_id());
    let cases = [
        (
            "refreshInstance",
            refresh(&unknown, &other, &next_year(), flag),
        ),
        ("upgradeInstance", upgrade(&unknown, &other, flag)),
        ("changeInstanceCheck", change_check(&unknown, false, flag)),
        ("releaseInstance", release(&unknown, flag)),
        ("queryInstance", query(&unknown, flag)),
    ];
    for (activity, case) in cases {
        let request = s.signed(case);
        s.step(
            format!("{activity} for an unknown instance gets 000003"),
            request,
            Expect::plain(NOT_FOUND),
        )
        .await?;
    }

    for bad in [BAD_TIME, IMPOSSIBLE_TIME] {
        let request = s.signed(refresh(&id, &other, bad, flag));
        s.step(
            format!("refreshInstance with an expireTime that is not yyyyMMddHHmmss ({bad:?}) gets 000002"),
            request,
            Expect::plain(INVALID),
        )
        .await?;
    }
    Ok(())
}

/// The saved debugging cases (创建实例, 查询实例, 更新实例, 更新实例状态, 实例升级, 释放实例), replayed
/// twice as the morning and afternoon dial tests replay them: with the same bodies, freshly
/// signed, always `testFlag=1`, on an instance that already exists the second time.
async fn dial_test(s: &mut Session<'_>) -> Flow {
    let flag = "1";
    dial_test_rounds(
        s,
        &format!("创建实例 newInstance for {DIAL_ORDER} answers 000000 or 000004"),
        |s| s.signed(new_instance(DIAL_ORDER, DIAL_BUSINESS_ID, flag)),
        ACCEPTED,
        |s, id| {
            vec![
                (
                    "查询实例 queryInstance lists it",
                    s.signed(query(id, flag)),
                    Expect::query(id),
                ),
                (
                    "更新实例 refreshInstance answers 000000",
                    s.signed(refresh(id, DIAL_RENEWAL, DIAL_EXPIRE, flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "更新实例状态 FREEZE answers 000000",
                    s.signed(status(id, "FREEZE", flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "更新实例状态 UNFREEZE answers 000000",
                    s.signed(status(id, "UNFREEZE", flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "实例升级 upgradeInstance answers 000000",
                    s.signed(upgrade(id, DIAL_CHANGE, flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "释放实例 releaseInstance answers 000000",
                    s.signed(release(id, flag)),
                    Expect::plain(SUCCESS),
                ),
            ]
        },
    )
    .await
}
