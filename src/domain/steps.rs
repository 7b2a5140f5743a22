//! The steps both SaaS generations build their activities from, inside the callback's
//! transaction: create an instance once per idempotency key (D7), apply a lifecycle
//! change under the row lock (D9), and answer a query (D8).

use super::answer::Answer;
use super::events::{Decision, Event, EventType};
use super::instance::{Family, Gone, Instance};
use super::provision::{ProvisionRequest, Provisioned, Provisioner};
use super::usage;
use crate::protocol::codes::ResultCode;
use crate::protocol::ids::InstanceId;
use crate::protocol::reply::{AppInfo, Credentials, InstanceInfo, Reply, UsageInfo};
use crate::store::{Claim, IdempotencyKey, StoreResult, StoredAnswer, Tx};

/// D7: the first call under `key` creates the instance `build` describes (its id is that
/// call's `businessId`), provisions it and answers with `answer`; every later call under
/// the same key replays the first answer byte for byte, without building anything (and
/// reports no event).
pub async fn create_once(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    key: &IdempotencyKey,
    now_ms: i64,
    build: impl FnOnce() -> Instance,
    answer: impl FnOnce(&Instance) -> Reply,
) -> StoreResult<Decision<Answer>> {
    if let Some(earlier) = replay(tx, key, now_ms).await? {
        return Ok(Decision::quiet(earlier));
    }
    create(tx, provisioner, key, build, answer).await
}

/// Creates and provisions the instance `build` describes, under a key this callback has
/// claimed with [`replay`], and reports it: `instance.created`, then
/// `instance.provisioned` when app info is known at once, or
/// `instance.provision_requested` when the merchant's app is asked for it and the order
/// facts are already in hand (SaaS 1.0 sends them in the callback).
pub async fn create(
    tx: &mut dyn Tx,
    provisioner: &dyn Provisioner,
    key: &IdempotencyKey,
    build: impl FnOnce() -> Instance,
    answer: impl FnOnce(&Instance) -> Reply,
) -> StoreResult<Decision<Answer>> {
    let mut instance = build();
    instance.app_info = provision(provisioner, &instance);
    // businessId is unique per call, but an id that is somehow taken must not merge two
    // orders: fall back to a UUID, which the spec allows (§1).
    if !tx.insert_instance(&instance).await? {
        instance.id = uuid::Uuid::new_v4().simple().to_string();
        instance.app_info = provision(provisioner, &instance);
        if !tx.insert_instance(&instance).await? {
            tx.abandon_idempotency(key).await?;
            return Ok(Decision::quiet(Answer::reply(&Reply::new(
                ResultCode::Internal,
                "could not allocate an instance id",
            ))));
        }
    }
    let reply = Answer::reply(&answer(&instance)).with_instance(instance.id.clone());
    settle(tx, key, &reply).await?;
    let mut events = vec![Event::instance(EventType::InstanceCreated, &instance)];
    if instance.app_info.is_some() {
        events.push(Event::instance(EventType::InstanceProvisioned, &instance));
    } else if provisioner.asks_app() && instance.family == Family::SaasV1 {
        events.push(Event::instance(
            EventType::InstanceProvisionRequested,
            &instance,
        ));
    }
    Ok(Decision::with(reply, events))
}

/// Claims `key` for this callback; `Some` is an earlier callback's answer, to replay
/// byte for byte instead of acting again.
pub async fn replay(
    tx: &mut dyn Tx,
    key: &IdempotencyKey,
    now_ms: i64,
) -> StoreResult<Option<Answer>> {
    match tx.claim_idempotency(key, now_ms).await? {
        Claim::Answered(stored) => Answer::replay(stored).map(Some),
        Claim::Claimed => Ok(None),
    }
}

/// Keeps `answer` under a key claimed with [`replay`] when KooGallery takes it as done
/// (`000000`/`000004`); any other answer gives the claim up, so the retry runs afresh (D7).
pub async fn settle(tx: &mut dyn Tx, key: &IdempotencyKey, answer: &Answer) -> StoreResult<()> {
    if answer.code.is_accepted() {
        tx.complete_idempotency(key, &stored(answer)).await
    } else {
        tx.abandon_idempotency(key).await
    }
}

fn stored(answer: &Answer) -> StoredAnswer {
    StoredAnswer {
        result_code: answer.code.as_str().to_owned(),
        instance_id: answer.instance_id.clone(),
        body: answer.body.clone(),
    }
}

fn provision(provisioner: &dyn Provisioner, instance: &Instance) -> Option<AppInfo> {
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

/// Applies a lifecycle change to one instance under its row lock: `000003` when the
/// instance is unknown or `apply` finds it gone (D9), `000000` otherwise. A change that
/// changed something is reported as an event of type `kind`; a repeat reports none.
pub async fn change(
    tx: &mut dyn Tx,
    instance_id: &str,
    kind: EventType,
    apply: impl FnOnce(&mut Instance) -> Result<(), Gone>,
) -> StoreResult<Decision<Answer>> {
    let Some(mut instance) = tx.instance_for_update(instance_id).await? else {
        return Ok(Decision::quiet(not_found(instance_id)));
    };
    let before = instance.clone();
    if apply(&mut instance).is_err() {
        return Ok(Decision::quiet(not_found(instance_id)));
    }
    let answer = Answer::reply(&Reply::success());
    // A repeat only moves `updated_ms`: it changed nothing, writes nothing, reports nothing.
    let mut unmoved = instance.clone();
    unmoved.updated_ms = before.updated_ms;
    if unmoved == before {
        return Ok(Decision::quiet(answer));
    }
    tx.update_instance(&instance).await?;
    Ok(Decision::with(
        answer,
        vec![Event::instance(kind, &instance)],
    ))
}

/// `queryInstance` (D8, D9, D12): `info` for the listed instances the caller can see and
/// whose app info is known, in the order asked, credentials sealed; `000004` when the
/// ones it can see are all still being provided (or their provisioning failed); `000003`
/// when there is none.
pub async fn query(
    tx: &mut dyn Tx,
    instance_ids: &[InstanceId],
    test: bool,
    credentials: &Credentials,
) -> StoreResult<Answer> {
    // An id listed twice is answered once, on either store.
    let mut unique: Vec<String> = Vec::with_capacity(instance_ids.len());
    for id in instance_ids {
        if !unique.iter().any(|known| known == id.as_str()) {
            unique.push(id.to_string());
        }
    }
    let visible: Vec<Instance> = tx
        .instances(&unique)
        .await?
        .into_iter()
        .filter(|i| i.visible_to(test))
        .collect();
    if visible.is_empty() {
        return Ok(Answer::reply(&Reply::new(
            ResultCode::NotFound,
            "no such instance",
        )));
    }
    let metered: Vec<String> = visible
        .iter()
        .filter(|i| usage::is_pay_per_use(i))
        .map(|i| i.id.clone())
        .collect();
    let totals = if metered.is_empty() {
        Vec::new()
    } else {
        tx.usage_totals(&metered).await?
    };
    let packages: Vec<String> = visible
        .iter()
        .filter(|i| usage::is_package(i))
        .map(|i| i.id.clone())
        .collect();
    let items = if packages.is_empty() {
        Vec::new()
    } else {
        tx.package_usage(&packages).await?
    };
    let info: Vec<InstanceInfo> = visible
        .into_iter()
        .filter_map(|i| {
            let usage_info = if usage::is_pay_per_use(&i) {
                let total = totals.iter().find(|t| t.instance_id == i.id);
                Some(vec![usage_info(
                    None,
                    total.map_or(0, |t| t.total),
                    // No usage yet: nothing counted since the instance was created.
                    total.map_or(i.created_ms, |t| t.updated_ms),
                )])
            } else if usage::is_package(&i) {
                // One entry per fee item the app reported; none yet is an empty list, as
                // the field is required for packages and nothing was consumed that koogate
                // knows of.
                Some(
                    items
                        .iter()
                        .filter(|e| e.instance_id == i.id)
                        .map(|e| {
                            usage_info(
                                Some(e.related_instance_id.clone()),
                                e.usage_value,
                                e.statistical_ms,
                            )
                        })
                        .collect(),
                )
            } else {
                None
            };
            i.app_info.map(|app_info| InstanceInfo {
                instance_id: i.id,
                app_info: Some(app_info),
                usage_info,
            })
        })
        .collect();
    if info.is_empty() {
        return Ok(Answer::reply(&Reply::new(
            ResultCode::Processing,
            "provisioning.",
        )));
    }
    Ok(Answer::reply(
        &Reply::success().with_info(info, credentials),
    ))
}

/// A `usageInfo` entry: the cumulative usage of a pay-per-use instance, or what a package
/// consumed for the pay-per-use instance `related`.
#[expect(clippy::expect_used, reason = "a fixed-point decimal is a JSON number")]
fn usage_info(related: Option<String>, total: i64, at_ms: i64) -> UsageInfo {
    let text = usage::Quantity(total).to_fixed();
    UsageInfo {
        related_instance_id: related,
        usage_value: serde_json::value::RawValue::from_string(text)
            .expect("a fixed-point decimal is a JSON number"),
        statistical_time: usage::statistical_time(at_ms),
    }
}

/// `000003` for an instance that does not exist, or no longer does (D9).
pub fn not_found(instance_id: &str) -> Answer {
    Answer::reply(&Reply::new(
        ResultCode::NotFound,
        format!("instance {instance_id} does not exist"),
    ))
}
