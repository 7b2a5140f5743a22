//! What each SaaS 1.0 activity does (spec §4, D7–D9), inside the callback's transaction.
//! A 1.0 instance is the same record as a 2.0 one, with the same lifecycle: the facts the
//! 1.0 request carries go to the instance's columns, the rest to its `details`.

use super::answer::Answer;
use super::events::{Decision, EventType};
use super::instance::{Family, Instance};
use super::provision::Provisioner;
use super::steps::{self, change};
use crate::protocol::crypto::FieldCipher;
use crate::protocol::reply::{Credentials, Reply};
use crate::protocol::saas_v1::{Activity, ChargingMode, Linear, NewInstance, Refresh, Upgrade};
use crate::protocol::saas_v2::StatusChange;
use crate::protocol::v1::ExtendParam;
use crate::store::{IdempotencyKey, StoreResult, Tx};
use serde_json::{Map, Value, json};

/// Runs one authenticated, parsed SaaS 1.0 callback. `cipher` (from the key that verified
/// the request) encrypts the app-info credentials of `newInstance` and `queryInstance`.
pub async fn act(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    request: crate::protocol::saas_v1::Request,
    cipher: &FieldCipher,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    let test = request.test;
    let credentials = Credentials::Encrypted(cipher.clone());
    // An exact repeat of a state-changing request gets the first answer without running
    // again, so that a captured `instanceStatus FREEZE` cannot be replayed after an
    // unfreeze. newInstance is already answered once per order, queryInstance changes
    // nothing.
    let repeat = match (&request.activity, request.repeat_key) {
        (Activity::NewInstance(_) | Activity::QueryInstance { .. }, _) | (_, None) => None,
        (_, Some(key)) => Some(IdempotencyKey {
            scope: "saas_v1.repeat",
            key,
        }),
    };
    if let Some(key) = &repeat
        && let Some(earlier) = steps::replay(tx, key, now_ms).await?
    {
        return Ok(Decision::quiet(earlier));
    }
    let decision = match request.activity {
        Activity::NewInstance(order) => {
            new_instance(tx, provisioner, test, *order, &credentials, now_ms).await
        }
        Activity::QueryInstance { instance_ids } => {
            steps::query(tx, &instance_ids, test, &credentials)
                .await
                .map(Decision::quiet)
        }
        Activity::RefreshInstance(refresh) => refresh_instance(tx, test, refresh, now_ms).await,
        // expireInstance freezes: the buyer may still renew during the freeze period (§1).
        Activity::ExpireInstance { instance_id, .. } => {
            change(tx, &instance_id, EventType::InstanceFrozen, |i| {
                i.freeze(test, now_ms)
            })
            .await
        }
        Activity::ReleaseInstance {
            instance_id,
            order_id,
            order_amount,
        } => {
            change(tx, &instance_id, EventType::InstanceReleased, |i| {
                i.release(Some(&order_id), now_ms);
                if let Some(amount) = order_amount {
                    i.details
                        .insert("releaseOrderAmount".into(), amount.as_str().into());
                }
                Ok(())
            })
            .await
        }
        Activity::Upgrade(upgrade) => upgrade_once(tx, test, upgrade, now_ms).await,
        Activity::InstanceStatus {
            instance_id,
            status,
        } => {
            let kind = match status {
                StatusChange::Freeze => EventType::InstanceFrozen,
                StatusChange::Unfreeze => EventType::InstanceUnfrozen,
            };
            change(tx, &instance_id, kind, |i| match status {
                StatusChange::Freeze => i.freeze(test, now_ms),
                StatusChange::Unfreeze => i.unfreeze(test, now_ms),
            })
            .await
        }
    }?;
    if let Some(key) = &repeat {
        steps::settle(tx, key, &decision.answer).await?;
    }
    Ok(decision)
}

/// D7: one instance per `orderId` — per `orderId` + `productId` for pay-per-use, where one
/// order carries several billing items (§1). Its id is the first call's `businessId`, and
/// every later call (KooGallery calls again each time the buyer opens the resource
/// details) replays the stored bytes: the credentials in them were encrypted under a
/// random IV, so encrypting again would change them.
async fn new_instance(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    test: bool,
    order: NewInstance,
    credentials: &Credentials,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    let key = IdempotencyKey {
        scope: "saas_v1.newInstance",
        // Neither id can hold a newline (they refuse control characters), so the two
        // forms never meet in the one scope.
        key: match order.charging_mode {
            Some(ChargingMode::OnDemand) => format!("{}\n{}", order.order_id, order.product_id),
            _ => order.order_id.to_string(),
        },
    };
    let build = || instance_for(order, test, now_ms);
    // SaaS 1.0 has no asynchronous answer (§5: 000004 is V2's): an instance still being
    // provisioned is answered 000000 without app info, which queryInstance supplies later.
    let answer = |instance: &Instance| {
        let reply = Reply::success().with_instance_id(&instance.id);
        match &instance.app_info {
            Some(info) => reply.with_app_info(info, credentials),
            None => reply,
        }
    };
    steps::create_once(tx, provisioner, &key, now_ms, build, answer).await
}

fn instance_for(order: NewInstance, test: bool, now_ms: i64) -> Instance {
    let mut i = Instance::new(
        order.business_id.into(),
        Family::SaasV1,
        order.order_id.into(),
        test,
        now_ms,
    );
    i.product_id = Some(order.product_id.into());
    i.sku_code = order.sku_code;
    i.charging_mode = order.charging_mode.map(|m| m.name().to_owned());
    i.period_type = order.period_type;
    i.period_number = order.period_number.map(i64::from);
    i.customer_id = Some(order.customer_id);
    i.customer_name = order.customer_name;
    i.expire_ms = order.expire_time.map(|t| t.timestamp_millis());
    let d = &mut i.details;
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            d.insert(name.into(), value.into());
        }
    };
    put("trialFlag", order.trial_flag);
    put(
        "orderAmount",
        order.order_amount.map(|a| a.as_str().to_owned()),
    );
    put("provisionType", order.provision_type);
    let personal =
        |value: Option<crate::protocol::personal::Personal>| value.map(|v| v.into_inner());
    put("userId", personal(order.user_id));
    put("userName", personal(order.user_name));
    put("mobilePhone", personal(order.mobile_phone));
    put("email", personal(order.email));
    set_linear(&mut i, order.linear);
    set_extend_params(&mut i.details, &order.extend_params);
    i
}

/// The first linear attribute sent becomes the instance's linear value; all of them are
/// kept in `details` under their wire names.
fn set_linear(i: &mut Instance, linear: Linear) {
    if let Some((_, value)) = linear.present().next() {
        i.linear_value = Some(value.to_string());
    }
    for (name, value) in linear.present() {
        i.details.insert(name.into(), value.into());
    }
}

fn set_extend_params(details: &mut Map<String, Value>, params: &[ExtendParam]) {
    if !params.is_empty() {
        let items = params
            .iter()
            .map(|p| json!({ "name": p.name, "value": p.value }))
            .collect();
        details.insert("saasExtendParams".into(), Value::Array(items));
    }
}

/// A renewal, a trial turned paid, or a cancelled renewal (negative `orderAmount`): each
/// sets the new expiry; none changes the state (KooGallery unfreezes with its own call).
async fn refresh_instance(
    tx: &mut dyn Tx,
    test: bool,
    r: Refresh,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    change(tx, &r.instance_id, EventType::InstanceRenewed, |i| {
        i.refresh(
            test,
            &r.order_id,
            r.product_id.as_deref(),
            r.expire_time.timestamp_millis(),
            now_ms,
        )?;
        if r.trial_to_formal {
            i.details.insert("trialFlag".into(), "0".into());
        }
        if let Some(period_type) = r.period_type {
            i.period_type = Some(period_type);
        }
        if let Some(period_number) = r.period_number {
            i.period_number = Some(i64::from(period_number));
        }
        if let Some(amount) = r.order_amount {
            i.details
                .insert("lastOrderAmount".into(), amount.as_str().into());
        }
        Ok(())
    })
    .await
}

/// `upgrade` applies once per upgrade order (§1): a repeat replays the first answer and
/// changes nothing, even if its parameters differ.
async fn upgrade_once(
    tx: &mut dyn Tx,
    test: bool,
    u: Upgrade,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    let key = IdempotencyKey {
        scope: "saas_v1.upgrade",
        key: u.order_id.to_string(),
    };
    if let Some(earlier) = steps::replay(tx, &key, now_ms).await? {
        return Ok(Decision::quiet(earlier));
    }
    let decision = change(tx, &u.instance_id, EventType::InstanceUpgraded, |i| {
        i.upgrade(test, &u.order_id, now_ms)?;
        i.sku_code = Some(u.sku_code);
        i.product_id = Some(u.product_id);
        set_linear(i, u.linear);
        set_extend_params(&mut i.details, &u.extend_params);
        Ok(())
    })
    .await?;
    steps::settle(tx, &key, &decision.answer).await?;
    Ok(decision)
}
