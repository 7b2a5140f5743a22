//! What each SaaS 2.0 activity does (spec §3, D7–D9; `getLicenseAsync`, §6.2), inside the
//! callback's transaction.

use super::answer::Answer;
use super::events::{Decision, Event, EventType, FollowUp};
use super::instance::{Family, Instance};
use super::license_request::{self, Licensing};
use super::order::Fetch;
use super::provision::Provisioner;
use super::steps::{self, change};
use crate::protocol::codes::ResultCode;
use crate::protocol::ids::{BusinessId, OrderId, OrderLineId};
use crate::protocol::reply::{Credentials, Reply};
use crate::protocol::saas_v2::{Activity, Request, StatusChange};
use crate::store::{StoreResult, Tx};

/// Runs one verified, parsed SaaS 2.0 callback. `credentials` says how `queryInstance`
/// returns app-info credentials (D6).
pub async fn act(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    licensing: &Licensing,
    request: Request,
    credentials: &Credentials,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
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
            steps::query(tx, &instance_ids, test, credentials)
                .await
                .map(Decision::quiet)
        }
        Activity::RefreshInstance {
            order_id,
            order_line_id,
            instance_id,
            product_id,
            expire_time,
            ..
        } => {
            let decision = change(tx, &instance_id, EventType::InstanceRenewed, |i| {
                i.refresh(
                    test,
                    &order_id,
                    product_id.as_deref(),
                    expire_time.timestamp_millis(),
                    now_ms,
                )
            })
            .await?;
            let fetch = fetch(
                order_id,
                order_line_id,
                instance_id.into(),
                "refreshInstance",
                test,
            );
            Ok(fetch_if_accepted(decision, fetch))
        }
        Activity::UpdateInstanceStatus {
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
        Activity::ReleaseInstance {
            instance_id,
            order_id,
            ..
        } => {
            change(tx, &instance_id, EventType::InstanceReleased, |i| {
                i.release(order_id.as_deref(), now_ms);
                Ok(())
            })
            .await
        }
        Activity::UpgradeInstance {
            instance_id,
            order_id,
            order_line_id,
        } => {
            // `instance.upgraded` follows once the upgrade order is fetched (§2.4), with
            // the new facts: the order fetch reports it.
            let mut decision = change(tx, &instance_id, EventType::InstanceUpgraded, |i| {
                i.upgrade(test, &order_id, now_ms)
            })
            .await?;
            decision.events.clear();
            let fetch = fetch(
                order_id,
                order_line_id,
                instance_id.into(),
                "upgradeInstance",
                test,
            );
            Ok(fetch_if_accepted(decision, fetch))
        }
        Activity::GetLicenseAsync(application) => {
            license_request::apply_for(tx, licensing, application, test, now_ms).await
        }
        Activity::ChangeInstanceCheck {
            instance_id,
            product,
        } => {
            // The built-in policy allows every renewal change of a live instance; the
            // target product is in the audit record for the merchant to review.
            tracing::info!(product_id = ?product.product_id, sku_code = ?product.sku_code, "renewal change allowed");
            match tx.instances(&[instance_id.to_string()]).await?.first() {
                Some(i) if i.visible_to(test) => {
                    Ok(Decision::quiet(Answer::reply(&Reply::success())))
                }
                _ => Ok(Decision::quiet(steps::not_found(&instance_id))),
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
    order_id: OrderId,
    order_line_id: OrderLineId,
    business_id: BusinessId,
    now_ms: i64,
) -> StoreResult<Decision<Answer>> {
    let key = super::provision::new_instance_key(&order_id, &order_line_id);
    let build = || {
        let mut instance = Instance::new(
            business_id.into(),
            Family::SaasV2,
            order_id.to_string(),
            test,
            now_ms,
        );
        instance.order_line_id = Some(order_line_id.to_string());
        instance
    };
    let answer = |instance: &Instance| {
        let reply = match instance.app_info {
            Some(_) => Reply::success(),
            None => Reply::new(ResultCode::Processing, "provisioning."),
        };
        reply.with_instance_id(&instance.id)
    };
    if let Some(earlier) = steps::replay(tx, &key, now_ms).await? {
        // A replay (every retry, and every buyer who opens the resource details) stays a
        // read and one insert: only the call that created the instance fetches its order.
        return Ok(Decision::quiet(earlier));
    }
    // The app reported this order line as failed, and the stored answer was given up so
    // that this retry asks it again, for the same instance (merchant-api.md §3).
    if provisioner.asks_app()
        && let Some(mut failed) = tx
            .instance_for_order_line(&order_id, &order_line_id)
            .await?
        && failed.provisioning_error.is_some()
    {
        failed.provisioning_error = None;
        failed.updated_ms = now_ms;
        tx.update_instance(&failed).await?;
        let reply = answer(&failed);
        let asked = Answer::reply(&reply).with_instance(failed.id.clone());
        steps::settle(tx, &key, &asked).await?;
        let event = Event::instance(EventType::InstanceProvisionRequested, &failed);
        return Ok(Decision::with(asked, vec![event]));
    }
    let created = steps::create(tx, provisioner, &key, build, answer).await?;
    match created.answer.instance_id.clone() {
        Some(instance_id) => {
            let fetch = fetch(order_id, order_line_id, instance_id, "newInstance", test);
            Ok(fetch_if_accepted(created, fetch))
        }
        None => Ok(created),
    }
}

/// The order fetch that fills in an instance (spec §3.1, §3.3, §3.6: the order's details
/// come from 查询订单).
fn fetch(
    order_id: OrderId,
    order_line_id: OrderLineId,
    instance_id: String,
    source: &str,
    test: bool,
) -> Fetch {
    Fetch {
        order_id: order_id.into(),
        order_line_id: order_line_id.into(),
        instance_id: Some(instance_id),
        source: source.to_owned(),
        test,
    }
}

/// Asks for the fetch of the order behind an answer KooGallery takes as done; an answer
/// that changed nothing (`000003`, `000005`) fetches nothing. The fetch stores the order
/// line: recording it here would cost the callback a write nothing reads before then.
fn fetch_if_accepted(decision: Decision<Answer>, fetch: Fetch) -> Decision<Answer> {
    if !decision.answer.code.is_accepted() {
        return decision;
    }
    decision.and_then(FollowUp::FetchOrder(fetch))
}
