//! What each SaaS 2.0 activity does (spec §3, D7–D9), inside the callback's transaction.

use super::callback::Answer;
use super::instance::{Family, Gone, Instance};
use super::provision::{ProvisionRequest, Provisioned, Provisioner};
use crate::protocol::codes::ResultCode;
use crate::protocol::reply::{InstanceInfo, Reply};
use crate::protocol::saas_v2::{Activity, Request, StatusChange};
use crate::store::{Claim, IdempotencyKey, StoreResult, StoredAnswer, Tx};

/// Runs one verified, parsed SaaS 2.0 callback.
pub async fn act(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    request: Request,
    now_ms: i64,
) -> StoreResult<Answer> {
    let test = request.test;
    match request.activity {
        Activity::NewInstance {
            order_id,
            order_line_id,
            business_id,
        } => {
            new_instance(
                tx,
                provisioner,
                test,
                order_id,
                order_line_id,
                business_id,
                now_ms,
            )
            .await
        }
        Activity::QueryInstance { instance_ids } => {
            let info: Vec<InstanceInfo> = tx
                .instances(&instance_ids)
                .await?
                .into_iter()
                .filter(|i| i.visible_to(test))
                .map(|i| InstanceInfo {
                    instance_id: i.id,
                    app_info: i.app_info,
                })
                .collect();
            if info.is_empty() {
                return Ok(Answer::reply(&Reply::new(
                    ResultCode::NotFound,
                    "no such instance",
                )));
            }
            let mut reply = Reply::success();
            reply.info = Some(info);
            Ok(Answer::reply(&reply))
        }
        Activity::RefreshInstance {
            order_id,
            instance_id,
            product_id,
            expire_time,
            ..
        } => {
            change(tx, &instance_id, |i| {
                i.refresh(
                    test,
                    &order_id,
                    product_id.as_deref(),
                    expire_time.timestamp_millis(),
                    now_ms,
                )
            })
            .await
        }
        Activity::UpdateInstanceStatus {
            instance_id,
            status,
        } => {
            change(tx, &instance_id, |i| match status {
                StatusChange::Freeze => i.freeze(test, now_ms),
                StatusChange::Unfreeze => i.unfreeze(test, now_ms),
            })
            .await
        }
        Activity::ReleaseInstance {
            instance_id,
            order_id,
            ..
        } => {
            change(tx, &instance_id, |i| {
                i.release(order_id.as_deref(), now_ms);
                Ok(())
            })
            .await
        }
        Activity::UpgradeInstance {
            instance_id,
            order_id,
            ..
        } => change(tx, &instance_id, |i| i.upgrade(test, &order_id, now_ms)).await,
        Activity::ChangeInstanceCheck {
            instance_id,
            product,
        } => {
            // The built-in policy allows every renewal change of a live instance; the
            // target product is in the audit record for the merchant to review.
            tracing::info!(product_id = ?product.product_id, sku_code = ?product.sku_code, "renewal change allowed");
            match tx
                .instances(std::slice::from_ref(&instance_id))
                .await?
                .first()
            {
                Some(i) if i.visible_to(test) => Ok(Answer::reply(&Reply::success())),
                _ => Ok(Answer::reply(&Reply::new(
                    ResultCode::NotFound,
                    format!("instance {instance_id} does not exist"),
                ))),
            }
        }
    }
}

/// D7: one instance per (orderId, orderLineId), whose id is the first call's
/// `businessId`; every later call replays the first answer byte for byte.
async fn new_instance(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    test: bool,
    order_id: String,
    order_line_id: String,
    business_id: String,
    now_ms: i64,
) -> StoreResult<Answer> {
    let key = IdempotencyKey {
        scope: "saas_v2.newInstance",
        // Both ids are at most 64 characters and never contain a newline.
        key: format!("{order_id}\n{order_line_id}"),
    };
    if let Claim::Answered(stored) = tx.claim_idempotency(&key, now_ms).await? {
        return Answer::replay(stored);
    }
    let mut instance = Instance::new(business_id, Family::SaasV2, order_id, test, now_ms);
    instance.order_line_id = Some(order_line_id);
    // businessId is unique per call, but an id that is somehow taken must not merge two
    // orders: fall back to a UUID, which the spec allows (§1).
    instance.app_info = provision(provisioner, &instance);
    if !tx.insert_instance(&instance).await? {
        instance.id = uuid::Uuid::new_v4().simple().to_string();
        instance.app_info = provision(provisioner, &instance);
        if !tx.insert_instance(&instance).await? {
            tx.abandon_idempotency(&key).await?;
            return Ok(Answer::reply(&Reply::new(
                ResultCode::Internal,
                "could not allocate an instance id",
            )));
        }
    }
    let code = if instance.app_info.is_some() {
        ResultCode::Success
    } else {
        ResultCode::Processing
    };
    let msg = if code == ResultCode::Success {
        "success."
    } else {
        "provisioning."
    };
    let answer = Answer::reply(&Reply::new(code, msg).with_instance_id(&instance.id));
    tx.complete_idempotency(
        &key,
        &StoredAnswer {
            result_code: code.as_str().to_owned(),
            instance_id: Some(instance.id.clone()),
            body: answer.body.clone(),
        },
    )
    .await?;
    Ok(answer.with_instance(instance.id))
}

fn provision(
    provisioner: &dyn Provisioner,
    instance: &Instance,
) -> Option<crate::protocol::reply::AppInfo> {
    match provisioner.provision(&ProvisionRequest {
        instance_id: &instance.id,
        order_id: &instance.order_id,
        order_line_id: instance.order_line_id.as_deref(),
        test: instance.test,
    }) {
        Provisioned::Ready(info) => Some(info),
        Provisioned::Pending => None,
    }
}

/// Applies a lifecycle change to one instance under its row lock.
async fn change(
    tx: &mut dyn Tx,
    instance_id: &str,
    apply: impl FnOnce(&mut Instance) -> Result<(), Gone>,
) -> StoreResult<Answer> {
    let not_found = || {
        Answer::reply(&Reply::new(
            ResultCode::NotFound,
            format!("instance {instance_id} does not exist"),
        ))
    };
    let Some(mut instance) = tx.instance_for_update(instance_id).await? else {
        return Ok(not_found());
    };
    let before = instance.clone();
    if apply(&mut instance).is_err() {
        return Ok(not_found());
    }
    if instance != before {
        tx.update_instance(&instance).await?;
    }
    Ok(Answer::reply(&Reply::success()))
}
