//! The `order.fetch` job: query an order line (查询订单, spec §8.2), store the answer, and
//! fill in the instances it describes — in one transaction, with the job's completion.

use super::{Handler, JobError, Outcome};
use crate::clock::Clock;
use crate::domain::events::{Event, EventType};
use crate::domain::order::{self, Fetch};
use crate::jobs::follow_up;
use crate::marketplace::{Client, MarketError};
use crate::store::{Job, Store, StoreError};
use async_trait::async_trait;
use std::sync::Arc;

/// Runs `order.fetch` jobs against the open APIs.
pub struct OrderFetch {
    pub client: Client,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// A webhook endpoint is configured: events are queued for delivery too.
    pub deliver_events: bool,
    /// The merchant's app provides app info: a new SaaS 2.0 instance is announced with
    /// `instance.provision_requested` once its order facts are known.
    pub asks_app: bool,
}

impl From<MarketError> for JobError {
    fn from(error: MarketError) -> Self {
        if error.retryable() {
            Self::retry(error.to_string())
        } else {
            Self::park(error.to_string())
        }
    }
}

impl From<StoreError> for JobError {
    fn from(error: StoreError) -> Self {
        Self::retry(error.to_string())
    }
}

#[async_trait]
impl Handler for OrderFetch {
    async fn run(&self, job: &Job) -> Result<Outcome, JobError> {
        let fetch: Fetch = serde_json::from_str(&job.payload)
            .map_err(|e| JobError::park(format!("the job's payload is not an order fetch: {e}")))?;
        let answer = self
            .client
            .query_order(&fetch.order_id, Some(&fetch.order_line_id))
            .await?;
        let line = answer
            .order
            .line(Some(&fetch.order_line_id))
            .ok_or_else(|| {
                JobError::park(format!(
                    "the marketplace's answer has no order line {}",
                    fetch.order_line_id
                ))
            })?;
        let targets = match &fetch.instance_id {
            Some(id) => vec![id.clone()],
            None => self
                .store
                .instances_for_order(&fetch.order_id)
                .await?
                .into_iter()
                .filter(|i| i.order_line_id.as_deref() == Some(fetch.order_line_id.as_str()))
                .map(|i| i.id)
                .collect(),
        };
        let now_ms = (self.clock)();
        let mut tx = self.store.begin().await?;
        // Instances first, then the order line: callbacks lock in the same order (a
        // refresh locks its instance, then records its order line), so a job and a
        // callback about the same order cannot deadlock.
        let mut instances = Vec::with_capacity(targets.len());
        for id in targets {
            // An instance deleted since has nothing to fill in.
            if let Some(instance) = tx.instance_for_update(&id).await? {
                instances.push(instance);
            }
        }
        let mut record = fetch.line_record(now_ms);
        record.order_info = Some(answer.order_info_json.clone());
        record.fetched_ms = Some(now_ms);
        tx.store_order_info(&record).await?;
        let mut events = Vec::new();
        if fetch.source == "orderNotify" {
            events.push(Event::order_received(&record));
        }
        for mut instance in instances {
            if !order::is_current_order(&instance, &fetch.order_id) {
                tracing::info!(
                    order_id = %fetch.order_id,
                    instance_id = %instance.id,
                    "a newer order has changed the instance since: its facts are kept"
                );
                continue;
            }
            let before = instance.clone();
            order::apply(&mut instance, &answer.order, line, now_ms);
            if instance != before {
                tx.update_instance(&instance).await?;
            }
            // An upgrade is reported once its order is known, with the new facts (§2.4).
            let kind = match fetch.source.as_str() {
                "upgradeInstance" => Some(EventType::InstanceUpgraded),
                _ if instance != before => Some(EventType::InstanceOrderUpdated),
                _ => None,
            };
            events.extend(kind.map(|kind| Event::instance(kind, &instance)));
            if self.asks_app
                && fetch.source == "newInstance"
                && instance.app_info.is_none()
                && instance.provisioning_error.is_none()
            {
                events.push(Event::instance(
                    EventType::InstanceProvisionRequested,
                    &instance,
                ));
            }
        }
        follow_up::record(tx.as_mut(), &events, &[], self.deliver_events, now_ms).await?;
        tracing::info!(order_id = %fetch.order_id, order_line_id = %fetch.order_line_id, "order details stored");
        Ok(Outcome::Commit(tx))
    }
}
