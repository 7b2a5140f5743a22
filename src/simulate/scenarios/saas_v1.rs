//! SaaS 1.0 (spec §4): GET with the parameters in the query, `timeStamp`, and `authToken` over
//! all of them (§2.1). Credentials in `appInfo` come back encrypted (§2.5). There is no nonce,
//! so a replayed request is legitimate here (the dial test replays), and no JSON body to break.

use super::{
    BAD_TIME, Flow, IMPOSSIBLE_TIME, SIMULTANEOUS, Session, business_id, dial_test_rounds,
    forged_not_refused, next_year, other_key, validated_before_authenticated,
};
use crate::protocol::crypto::FieldCipher;
use crate::protocol::time;
use crate::simulate::Scenario;
use crate::simulate::checks::{AUTH_FAILED, Expect, INVALID, NOT_FOUND, SUCCESS};
use crate::simulate::client::{self, Exchange, Request};
use chrono::{Duration, Utc};

const CUSTOMER_ID: &str = "68cbc86abc2018ab880d92f36422fa0e";
const PRODUCT_ID: &str = "00301-666666-0--0";
const SKU: &str = "koogate-simulate-basic";
const SKU_UPGRADED: &str = "koogate-simulate-pro";
/// The order and businessId saved in the 新购商品 debugging case (any made-up value works in
/// V1, which looks no order up).
const DIAL_ORDER: &str = "CSKOOGATESIMULATEDIAL";
const DIAL_BUSINESS_ID: &str = "koogate-simulate-dial-test";
const DIAL_EXPIRE: &str = "20991231235959";

type Params = Vec<(&'static str, String)>;

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

fn params(pairs: &[(&'static str, &str)]) -> Params {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn new_instance(order: &str, business_id: &str, expire: &str, flag: &str) -> Params {
    params(&[
        ("activity", "newInstance"),
        ("businessId", business_id),
        ("chargingMode", "1"),
        ("customerId", CUSTOMER_ID),
        ("customerName", "koogate-simulate"),
        ("expireTime", expire),
        ("orderId", order),
        ("periodNumber", "1"),
        ("periodType", "year"),
        ("productId", PRODUCT_ID),
        ("skuCode", SKU),
        ("testFlag", flag),
    ])
}

fn query(instance: &str, flag: &str) -> Params {
    params(&[
        ("activity", "queryInstance"),
        ("instanceId", instance),
        ("testFlag", flag),
    ])
}

fn refresh(instance: &str, order: &str, expire: &str, flag: &str) -> Params {
    params(&[
        ("activity", "refreshInstance"),
        ("expireTime", expire),
        ("instanceId", instance),
        ("orderId", order),
        ("periodNumber", "1"),
        ("periodType", "year"),
        ("productId", PRODUCT_ID),
        ("testFlag", flag),
    ])
}

fn expire(instance: &str, order: &str, flag: &str) -> Params {
    params(&[
        ("activity", "expireInstance"),
        ("instanceId", instance),
        ("orderId", order),
        ("testFlag", flag),
    ])
}

fn status(instance: &str, status: &str, flag: &str) -> Params {
    params(&[
        ("activity", "instanceStatus"),
        ("instanceId", instance),
        ("instanceStatus", status),
        ("testFlag", flag),
    ])
}

fn upgrade(instance: &str, order: &str, flag: &str) -> Params {
    params(&[
        ("activity", "upgrade"),
        ("instanceId", instance),
        ("orderId", order),
        ("productId", PRODUCT_ID),
        ("skuCode", SKU_UPGRADED),
        ("testFlag", flag),
    ])
}

fn release(instance: &str, order: &str, flag: &str) -> Params {
    params(&[
        ("activity", "releaseInstance"),
        ("instanceId", instance),
        ("orderId", order),
        ("testFlag", flag),
    ])
}

/// `timeStamp` for a request sent `offset` from now: `yyyyMMddHHmmssSSS`, UTC.
fn time_stamp(offset: Duration) -> String {
    time::format_millis(Utc::now() + offset)
}

/// A request as KooGallery sends it: with `--v1-contact`, every `newInstance` carries the
/// buyer's encrypted `mobilePhone` and `email` (§4.1).
fn get(s: &Session<'_>, params: &Params) -> Request {
    let mut params = params.clone();
    if s.options().v1_contact && params.contains(&("activity", "newInstance".to_owned())) {
        params.extend(contact(s));
    }
    Request::v1_get(s.url(), s.key(), &params, &time_stamp(Duration::zero()))
}

/// An encrypted `mobilePhone` and `email` (§2.5, under the product's key size), different on
/// every call: a server may refuse a number or address it already has (`000101`, `000102`).
fn contact(s: &Session<'_>) -> Params {
    let cipher = FieldCipher::new(s.key(), s.options().v1_key_size);
    let n = uuid::Uuid::new_v4().as_u128() % 100_000_000;
    vec![
        ("email", cipher.encrypt(&format!("buyer{n:08}@example.com"))),
        ("mobilePhone", cipher.encrypt(&format!("138{n:08}"))),
    ]
}

fn without(mut params: Params, name: &str) -> Params {
    params.retain(|(k, _)| *k != name);
    params
}

/// new → query → renew → freeze (expireInstance) → unfreeze (instanceStatus NORMAL) → upgrade
/// → release → release again.
async fn lifecycle(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let create = get(s, &new_instance(&order, &business_id(), &next_year(), flag));
    let created = s
        .step(
            format!("newInstance for new order {order} answers 000000 with an instanceId"),
            create,
            Expect::created(SUCCESS),
        )
        .await?;
    let Some(id) = created.instance_id else {
        return s.skipped(
            "the rest of the lifecycle",
            "newInstance gave no instanceId to continue with",
        );
    };
    let (renewal, upgrade_order) = (s.fresh_order(), s.fresh_order());
    let mut steps = vec![
        (
            "queryInstance lists the new instance",
            query(&id, flag),
            Expect::query(&id),
        ),
        (
            "refreshInstance (renewal) answers 000000",
            refresh(&id, &renewal, &next_year(), flag),
            Expect::plain(SUCCESS),
        ),
        (
            "expireInstance (freeze) answers 000000",
            expire(&id, &order, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "instanceStatus NORMAL (unfreeze) answers 000000",
            status(&id, "NORMAL", flag),
            Expect::plain(SUCCESS),
        ),
        (
            "upgrade answers 000000",
            upgrade(&id, &upgrade_order, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseInstance answers 000000",
            release(&id, &order, flag),
            Expect::plain(SUCCESS),
        ),
        (
            "releaseInstance again answers 000000 (D9)",
            release(&id, &order, flag),
            Expect::plain(SUCCESS),
        ),
    ];
    // A real release is final (D9); a debugging one keeps the instance for later debugging
    // calls (D11), so these checks are made on real callbacks only.
    if s.options().real {
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
                "instanceStatus on the released instance answers 000003 (D9)",
                status(&id, "NORMAL", flag),
                Expect::plain(NOT_FOUND),
            ),
            (
                "upgrade on the released instance answers 000003 (D9)",
                upgrade(&id, &later, flag),
                Expect::plain(NOT_FOUND),
            ),
            (
                "expireInstance on the released instance answers 000003 (D9)",
                expire(&id, &order, flag),
                Expect::plain(NOT_FOUND),
            ),
        ]);
    }
    for (name, step, expect) in steps {
        let request = get(s, &step);
        s.step(name, request, expect).await?;
    }
    Ok(())
}

async fn idempotency(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let expire_at = next_year();
    let first = get(s, &new_instance(&order, &business_id(), &expire_at, flag));
    let first = s
        .step(
            format!("newInstance for new order {order} answers 000000"),
            first,
            Expect::created(SUCCESS),
        )
        .await?;
    let again = get(s, &new_instance(&order, &business_id(), &expire_at, flag));
    s.repeat(
        "newInstance again with a new businessId answers the same instanceId, byte for byte (D7)",
        &first,
        again,
        Expect::created(SUCCESS),
    )
    .await?;

    let order = s.fresh_order();
    let together = (0..SIMULTANEOUS)
        .map(|_| get(s, &new_instance(&order, &business_id(), &expire_at, flag)))
        .collect();
    s.simultaneous(
        format!(
            "{SIMULTANEOUS} newInstance calls for one new order at the same moment answer one instanceId, byte for byte"
        ),
        together,
        Expect::created(SUCCESS),
    )
    .await
}

/// Forged and stale requests get `000001`; the timeStamp checks follow the server's window
/// (D3: 10 minutes unless configured; none when it is 0).
async fn security(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let (url, key) = (s.url().clone(), s.key().to_owned());
    let expire_at = next_year();
    let mut markers = Vec::new();
    let mut forged = |what: &str| {
        let marker = format!(
            "forged-{what}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        markers.push(marker.clone());
        new_instance(&order, &marker, &expire_at, flag)
    };
    let refused = || Expect::plain(AUTH_FAILED);
    let now = time_stamp(Duration::zero());

    let signed_query = client::v1_query(&forged("signed"), &now);
    let token = client::v1_token(&url, &key, &signed_query);
    let sent_query = client::v1_query(&forged("sent"), &now);
    let tampered = Request::v1_unsigned(&url, &sent_query, Some(&token), &now);
    s.step(
        "parameters changed after signing get 000001",
        tampered,
        refused(),
    )
    .await?;

    let wrong_key = Request::v1_get(&url, &other_key(), &forged("key"), &now);
    s.step(
        "an authToken computed with another key gets 000001",
        wrong_key,
        refused(),
    )
    .await?;

    let unsigned_query = client::v1_query(&forged("unsigned"), &now);
    let unsigned = Request::v1_unsigned(&url, &unsigned_query, None, &now);
    s.step(
        "a request without authToken gets 000001",
        unsigned,
        refused(),
    )
    .await?;

    let window = s.options().v1_window;
    if !window.is_zero() {
        let beyond = Duration::from_std(window).unwrap_or(Duration::MAX) + Duration::seconds(61);
        let secs = beyond.num_seconds();
        let stale = Request::v1_get(&url, &key, &forged("old"), &time_stamp(-beyond));
        s.step(
            format!("a timeStamp {secs} s old (the window plus 61 s) gets 000001 (D3)"),
            stale,
            refused(),
        )
        .await?;
        let ahead = Request::v1_get(&url, &key, &forged("ahead"), &time_stamp(beyond));
        s.step(
            format!("a timeStamp {secs} s ahead (the window plus 61 s) gets 000001 (D3)"),
            ahead,
            refused(),
        )
        .await?;
    }

    let valid = get(s, &new_instance(&order, &business_id(), &expire_at, flag));
    let exchange = s.send(valid).await;
    let mut answer = s.inspect(&exchange, &Expect::created(SUCCESS)).await;
    if let Some(id) = answer.instance_id.as_deref()
        && markers.iter().any(|m| m == id)
    {
        answer.problems.push(format!(
            "instance {id} was created by one of the refused requests above: a request that fails \
             authentication must change nothing"
        ));
    }
    s.record(
        "a correctly signed request is accepted, and the refused ones changed nothing",
        answer.problems,
        &[&exchange],
    )
}

async fn bad_input(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let long = "X".repeat(65);
    let without = |name: &str| {
        let mut p = new_instance(&order, &business_id(), &next_year(), flag);
        p.retain(|(k, _)| *k != name);
        p
    };
    let mut no_instance = refresh("unused", &order, &next_year(), flag);
    no_instance.retain(|(k, _)| *k != "instanceId");
    let cases = [
        (
            "newInstance without orderId gets 000002",
            without("orderId"),
        ),
        (
            "newInstance without businessId gets 000002",
            without("businessId"),
        ),
        (
            "newInstance with a 65-character orderId gets 000002",
            new_instance(&long, &business_id(), &next_year(), flag),
        ),
        (
            "an unknown activity gets 000002",
            params(&[("activity", "launchRocket"), ("testFlag", flag)]),
        ),
        (
            "refreshInstance without instanceId gets 000002",
            no_instance,
        ),
    ];
    for (name, case) in cases {
        let request = get(s, &case);
        s.step(name, request, Expect::plain(INVALID)).await?;
    }
    let good = get(s, &new_instance(&order, &business_id(), &next_year(), flag));
    s.step(
        "the server still answers: newInstance for a new order answers 000000",
        good,
        Expect::created(SUCCESS),
    )
    .await?;
    Ok(())
}

/// `saasExtendParams` as KooGallery puts it in the query once URL-decoded: Base64 of the array in
/// the spec's example (§4.1, §12 vector 7).
const SPEC_EXTEND_PARAMS: &str = "W3sibmFtZSI6ImlkTnVtIiwidmFsdWUiOiIzNTIyNTU1NTU1NTU2NTYifSx7Im5hbWUiOiJ1c2VyTmFtZSIsInZhbHVlIjoiaHVhd2VpMTIzIn0seyJuYW1lIjoiY3VzdEVtYWlsIiwidmFsdWUiOiIxMjNAaHVhd2VpLmNvbSJ9XQ==";

/// What real implementations get wrong: the inputs KooGallery really sends (no `testFlag`, no
/// `customerName`, `saasExtendParams`, and no `mobilePhone`/`email` unless the product asked
/// for them), forged requests for every activity (and an invalid forged one), every activity
/// for an unknown instance, and expiry times that are not `yyyyMMddHHmmss`.
async fn strict(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let create = get(s, &new_instance(&order, &business_id(), &next_year(), flag));
    let created = s
        .step(
            format!("newInstance for new order {order} answers 000000 with an instanceId"),
            create,
            Expect::created(SUCCESS),
        )
        .await?;

    let fresh =
        |s: &mut Session<'_>| new_instance(&s.fresh_order(), &business_id(), &next_year(), flag);
    let mut extended = fresh(s);
    extended.push(("saasExtendParams", SPEC_EXTEND_PARAMS.to_owned()));
    let inputs = [
        (
            "newInstance without testFlag (a real order, as the newest pages send it) answers 000000",
            without(fresh(s), "testFlag"),
        ),
        (
            "newInstance without customerName (optional on the international site) answers 000000",
            without(fresh(s), "customerName"),
        ),
        (
            "newInstance with the saasExtendParams of the spec's example answers 000000",
            extended,
        ),
    ];
    for (name, params) in inputs {
        let request = get(s, &params);
        s.step(name, request, Expect::created(SUCCESS)).await?;
    }
    if !s.options().v1_contact {
        contact_not_required(s).await?;
    }

    let Some(id) = created.instance_id else {
        return s.skipped(
            "the rest of the strict scenario",
            "newInstance gave no instanceId to continue with",
        );
    };
    let other = s.fresh_order();
    let activities = |instance: &str| {
        [
            (
                "refreshInstance",
                refresh(instance, &other, &next_year(), flag),
            ),
            ("expireInstance", expire(instance, &order, flag)),
            ("instanceStatus", status(instance, "FREEZE", flag)),
            ("upgrade", upgrade(instance, &other, flag)),
            ("queryInstance", query(instance, flag)),
            ("releaseInstance", release(instance, &order, flag)),
        ]
    };
    let now = time_stamp(Duration::zero());
    for (activity, params) in activities(&id) {
        let forged = Request::v1_get(s.url(), &other_key(), &params, &now);
        let exchange = s.send(forged).await;
        let mut answer = s.answer(&exchange, &Expect::plain(AUTH_FAILED));
        forged_not_refused(activity, &mut answer);
        s.record(
            format!("a forged {activity} (authToken from another key) gets 000001"),
            answer.problems,
            &[&exchange],
        )?;
    }
    let invalid = without(
        new_instance(&other, &business_id(), &next_year(), flag),
        "orderId",
    );
    let forged = Request::v1_get(s.url(), &other_key(), &invalid, &now);
    let exchange = s.send(forged).await;
    let mut answer = s.answer(&exchange, &Expect::plain(AUTH_FAILED));
    validated_before_authenticated(&mut answer);
    s.record(
        "a forged newInstance missing a mandatory parameter gets 000001, not 000002",
        answer.problems,
        &[&exchange],
    )?;

    let unknown = format!("{}-unknown", business_id());
    for (activity, params) in activities(&unknown) {
        let request = get(s, &params);
        s.step(
            format!("{activity} for an unknown instance gets 000003"),
            request,
            Expect::plain(NOT_FOUND),
        )
        .await?;
    }

    for bad in [BAD_TIME, IMPOSSIBLE_TIME] {
        let request = get(s, &refresh(&id, &other, bad, flag));
        s.step(
            format!("refreshInstance with an expireTime that is not yyyyMMddHHmmss ({bad:?}) gets 000002"),
            request,
            Expect::plain(INVALID),
        )
        .await?;
    }
    let bad_order = s.fresh_order();
    let request = get(s, &new_instance(&bad_order, &business_id(), BAD_TIME, flag));
    s.step(
        format!(
            "newInstance with an expireTime that is not yyyyMMddHHmmss ({BAD_TIME:?}) gets 000002"
        ),
        request,
        Expect::plain(INVALID),
    )
    .await?;
    Ok(())
}

/// A `newInstance` without `mobilePhone` and `email`, as every product that does not create the
/// buyer's account from them receives it. When it is refused, the same order with both sent
/// tells whether the server requires them.
async fn contact_not_required(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let order = s.fresh_order();
    let bare = get(s, &new_instance(&order, &business_id(), &next_year(), flag));
    let exchange = s.send(bare).await;
    let mut answer = s.inspect(&exchange, &Expect::created(SUCCESS)).await;
    let mut exchanges = vec![exchange];
    if answer.code.as_deref().is_some_and(|c| c != "000000") {
        let mut with = new_instance(&s.fresh_order(), &business_id(), &next_year(), flag);
        with.extend(contact(s));
        let probe = s.send(get(s, &with)).await;
        if s.answer(&probe, &Expect::created(SUCCESS)).ok() {
            answer.problems.push(
                "the server requires mobilePhone or email: the same newInstance was accepted \
                 once both were sent, encrypted. KooGallery sends them only for a product that \
                 creates the buyer's account from the mobile number or the email (§4.1); if \
                 yours does, run with --v1-contact"
                    .into(),
            );
        }
        exchanges.push(probe);
    }
    let shown: Vec<&Exchange> = exchanges.iter().collect();
    s.record(
        "newInstance without mobilePhone and email (a product that creates no account from them) answers 000000",
        answer.problems,
        &shown,
    )
}

/// The saved debugging cases (新购商品, 查询实例, 商品续费, 商品升级, 商品过期, 资源释放), replayed twice
/// as the dial test does, always with `testFlag=1`.
async fn dial_test(s: &mut Session<'_>) -> Flow {
    let flag = "1";
    dial_test_rounds(
        s,
        &format!("新购商品 newInstance for {DIAL_ORDER} answers 000000"),
        |s| {
            get(
                s,
                &new_instance(DIAL_ORDER, DIAL_BUSINESS_ID, DIAL_EXPIRE, flag),
            )
        },
        SUCCESS,
        |s, id| {
            vec![
                (
                    "查询实例 queryInstance lists it",
                    get(s, &query(id, flag)),
                    Expect::query(id),
                ),
                (
                    "商品续费 refreshInstance answers 000000",
                    get(s, &refresh(id, DIAL_ORDER, DIAL_EXPIRE, flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "商品升级 upgrade answers 000000",
                    get(s, &upgrade(id, DIAL_ORDER, flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "商品过期 expireInstance answers 000000",
                    get(s, &expire(id, DIAL_ORDER, flag)),
                    Expect::plain(SUCCESS),
                ),
                (
                    "资源释放 releaseInstance answers 000000",
                    get(s, &release(id, DIAL_ORDER, flag)),
                    Expect::plain(SUCCESS),
                ),
            ]
        },
    )
    .await
}
