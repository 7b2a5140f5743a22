//! Order notifications (订单通知, spec §7): POST JSON signed as in §2.2, answered
//! `{"resultCode":"000000","resultMsg":"success"}`. The merchant then looks the order up through
//! 查询订单, so every notification carries one of KooGallery's mock orders (§8.2), which that
//! API answers without a purchase.

use super::{Flow, SIMULTANEOUS, Session, body, line, signed};
use crate::simulate::Scenario;
use crate::simulate::checks::{Expect, SUCCESS};

/// The mock orders, one per order type a notification is sent for (§7, §8.2).
const ORDERS: [(&str, &str); 6] = [
    ("a new purchase", "MOCKPERIODYEARNEW"),
    ("a trial", "MOCKPERIODDAYTRIAL"),
    ("a trial turned formal", "MOCKMONTYTRIALTOFORMAL"),
    ("a renewal", "MOCKMONTYRENEW"),
    ("a change", "MOCKMONTYCHANGE"),
    ("an unsubscription", "MOCKMONTYUNSUBSCRIBE"),
];
const DIAL_ORDER: &str = "MOCKPERIODYEARNEW";

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

fn notify(order: &str, flag: &str) -> Vec<u8> {
    body(&[
        ("activity", "orderNotify"),
        ("orderId", order),
        ("orderLineId", &line(order)),
        ("testFlag", flag),
    ])
}

/// One notification per order type, in the order an order lives through them.
async fn lifecycle(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    for (what, order) in ORDERS {
        let request = s.signed(notify(order, flag));
        s.step(
            format!("orderNotify for {what} ({order}) answers 000000"),
            request,
            Expect::plain(SUCCESS),
        )
        .await?;
    }
    Ok(())
}

/// KooGallery retries a notification for 3 hours (§9): every repeat must succeed the same way.
async fn idempotency(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let first = s.signed(notify(DIAL_ORDER, flag));
    let first = s
        .step(
            format!("orderNotify for {DIAL_ORDER} answers 000000"),
            first,
            Expect::plain(SUCCESS),
        )
        .await?;
    let again = s.signed(notify(DIAL_ORDER, flag));
    s.repeat(
        "the same orderNotify again answers 000000, byte for byte",
        &first,
        again,
        Expect::plain(SUCCESS),
    )
    .await?;
    let together = (0..SIMULTANEOUS)
        .map(|_| s.signed(notify("MOCKMONTYRENEW", flag)))
        .collect();
    s.simultaneous(
        format!("{SIMULTANEOUS} identical orderNotify calls at the same moment answer 000000, byte for byte"),
        together,
        Expect::plain(SUCCESS),
    )
    .await
}

async fn security(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let forged = |marker: &str| notify(marker, flag);
    signed::security(s, &forged, notify(DIAL_ORDER, flag), Expect::plain(SUCCESS)).await
}

async fn bad_input(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let long = "X".repeat(65);
    let mut cases = signed::malformed("orderNotify", flag);
    cases.extend([
        (
            "orderNotify without orderId gets 000002".to_owned(),
            body(&[
                ("activity", "orderNotify"),
                ("orderLineId", &line(DIAL_ORDER)),
                ("testFlag", flag),
            ]),
        ),
        (
            "orderNotify without orderLineId gets 000002".to_owned(),
            body(&[
                ("activity", "orderNotify"),
                ("orderId", DIAL_ORDER),
                ("testFlag", flag),
            ]),
        ),
        (
            "orderNotify with a 65-character orderId gets 000002".to_owned(),
            notify(&long, flag),
        ),
    ]);
    let after = (
        "the server still answers: orderNotify answers 000000",
        notify(DIAL_ORDER, flag),
        Expect::plain(SUCCESS),
    );
    signed::bad_input(s, cases, after).await
}

fn notify_fields(order: &str, flag: &str) -> Vec<(&'static str, String)> {
    vec![
        ("activity", "orderNotify".into()),
        ("orderId", order.into()),
        ("orderLineId", line(order)),
        ("testFlag", flag.into()),
    ]
}

/// The form of the body the signature is verified over (D1a), and forged invalid requests.
async fn strict(s: &mut Session<'_>) -> Flow {
    let flag = s.test_flag();
    let fields = [
        notify_fields("MOCKPERIODYEARNEW", flag),
        notify_fields("MOCKMONTYRENEW", flag),
    ];
    signed::payload_form(s, fields, Expect::plain(SUCCESS)).await?;
    let without_order = body(&[
        ("activity", "orderNotify"),
        ("orderLineId", &line(DIAL_ORDER)),
        ("testFlag", flag),
    ]);
    signed::forged_invalid(s, "orderNotify", without_order).await
}

/// The saved 订单通知 debugging case, replayed twice as the dial test does, with `testFlag=1`.
async fn dial_test(s: &mut Session<'_>) -> Flow {
    for label in ["dial test 1", "dial test 2"] {
        let request = s.signed(notify(DIAL_ORDER, "1"));
        s.step(
            format!("{label}: 订单通知 orderNotify for {DIAL_ORDER} answers 000000"),
            request,
            Expect::plain(SUCCESS),
        )
        .await?;
    }
    Ok(())
}
