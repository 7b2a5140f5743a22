//! Orders: the fetch of an order's details (查询订单, spec §8.2) that a callback asks for,
//! and what those details change on an instance.

use super::instance::Instance;
use crate::protocol::order::{OrderInfo, OrderLine};
use crate::protocol::time;
use crate::store::{OrderLineRecord, StoreResult, Tx};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// What an order fetch is for: the order line to query, and the instance to fill in with
/// what the answer says (`None`: every instance of that order line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fetch {
    pub order_id: String,
    pub order_line_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The activity that asked for it.
    pub source: String,
    pub test: bool,
}

impl Fetch {
    /// The order line as first heard of, before anything was fetched.
    pub fn line_record(&self, now_ms: i64) -> OrderLineRecord {
        OrderLineRecord {
            order_id: self.order_id.clone(),
            order_line_id: self.order_line_id.clone(),
            test: self.test,
            source: self.source.clone(),
            created_ms: now_ms,
            order_info: None,
            fetched_ms: None,
        }
    }
}

/// Remembers the order line a fetch is for, inside the callback's transaction; the
/// fetch itself is the decision's follow-up. Returns whether the line was new.
pub async fn remember(tx: &mut dyn Tx, fetch: &Fetch, now_ms: i64) -> StoreResult<bool> {
    tx.record_order_line(&fetch.line_record(now_ms)).await
}

/// Whether `order_id` is the order an instance follows now: its latest renewal, upgrade
/// or unsubscribe order, else the order that created it. Fetches are retried with
/// jitter and can be queued again by hand, so one of an older order can finish after a
/// newer one; applying it would roll the newer expiry or SKU back.
pub fn is_current_order(instance: &Instance, order_id: &str) -> bool {
    instance
        .last_order_id
        .as_deref()
        .unwrap_or(&instance.order_id)
        == order_id
}

/// Copies what an order line says onto an instance: product, SKU, linear value, charging
/// mode, period, expiry and buyer. Facts the answer leaves out keep their stored value.
pub fn apply(instance: &mut Instance, order: &OrderInfo, line: &OrderLine, now_ms: i64) {
    let before = instance.clone();
    let product = line.product_info.first();
    set(
        &mut instance.product_id,
        product.and_then(|p| p.product_id.clone()),
    );
    set(
        &mut instance.sku_code,
        product.and_then(|p| p.sku_code.clone()),
    );
    set(
        &mut instance.linear_value,
        product.and_then(|p| p.linear_value.clone()),
    );
    set(&mut instance.charging_mode, line.charging_mode.clone());
    set(&mut instance.period_type, line.period_type.clone());
    set(&mut instance.period_number, line.period_number);
    set(
        &mut instance.expire_ms,
        line.expire_time
            .as_deref()
            .and_then(time::parse_compact)
            .map(|t| t.timestamp_millis()),
    );
    if let Some(buyer) = &order.buyer_info {
        set(&mut instance.customer_id, buyer.customer_id.clone());
        set(&mut instance.customer_name, buyer.customer_name.clone());
        let mut details = Map::new();
        let personal = |value: &Option<crate::protocol::personal::Personal>| {
            value.as_deref().map(str::to_owned)
        };
        for (name, value) in [
            ("mobilePhone", personal(&buyer.mobile_phone)),
            ("email", personal(&buyer.email)),
            ("customerRealName", personal(&buyer.customer_real_name)),
            ("customerType", buyer.customer_type.clone()),
            ("userId", personal(&buyer.user_id)),
            ("userName", personal(&buyer.user_name)),
        ] {
            if let Some(value) = value {
                details.insert(name.to_owned(), Value::String(value));
            }
        }
        instance
            .details
            .insert("buyer".into(), Value::Object(details));
    }
    if let Some(order_type) = &order.order_type {
        instance
            .details
            .insert("orderType".into(), json!(order_type));
    }
    if let Some(name) = product.and_then(|p| p.product_name.as_ref()) {
        instance.details.insert("productName".into(), json!(name));
    }
    if !line.extend_params.is_empty() {
        let params: Map<String, Value> = line
            .extend_params
            .iter()
            .map(|p| (p.name.clone(), json!(p.value)))
            .collect();
        instance
            .details
            .insert("extendParams".into(), Value::Object(params));
    }
    if *instance != before {
        instance.updated_ms = now_ms;
    }
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::instance::Family;

    fn order() -> OrderInfo {
        serde_json::from_str(
            r#"{"orderId":"O1","orderType":"NEW","orderLine":[{"orderLineId":"O1-1","chargingMode":"PERIOD",
              "periodType":"year","periodNumber":1,"expireTime":"20251121235959",
              "productInfo":[{"productId":"P1","skuCode":"S1","linearValue":50,"productName":"Basic"}],
              "extendParams":[{"name":"ip","value":"127.0.0.1"}]}],
              "buyerInfo":{"customerId":"C1","customerName":"mock_user_01","email":null,"mobilePhone":"186"}}"#,
        )
        .unwrap()
    }

    #[test]
    fn an_order_line_fills_in_the_instance() {
        let order = order();
        let mut instance = Instance::new("i".into(), Family::SaasV2, "O1".into(), false, 1);

        apply(&mut instance, &order, &order.order_line[0], 9);

        assert_eq!(instance.product_id.as_deref(), Some("P1"));
        assert_eq!(instance.sku_code.as_deref(), Some("S1"));
        assert_eq!(instance.linear_value.as_deref(), Some("50"));
        assert_eq!(instance.charging_mode.as_deref(), Some("PERIOD"));
        assert_eq!(instance.period_type.as_deref(), Some("year"));
        assert_eq!(instance.period_number, Some(1));
        assert_eq!(instance.expire_ms, Some(1_763_769_599_000));
        assert_eq!(instance.customer_id.as_deref(), Some("C1"));
        assert_eq!(instance.customer_name.as_deref(), Some("mock_user_01"));
        assert_eq!(
            Value::Object(instance.details.clone()),
            json!({"buyer": {"mobilePhone": "186"}, "orderType": "NEW", "productName": "Basic",
                   "extendParams": {"ip": "127.0.0.1"}})
        );
        assert_eq!(instance.updated_ms, 9);
    }

    #[test]
    fn facts_the_answer_leaves_out_are_kept() {
        let mut instance = Instance::new("i".into(), Family::SaasV2, "O1".into(), false, 1);
        instance.expire_ms = Some(5);
        instance.product_id = Some("kept".into());
        let order: OrderInfo =
            serde_json::from_str(r#"{"orderId":"O2","orderLine":[{"orderLineId":"O2-1"}]}"#)
                .unwrap();

        apply(&mut instance, &order, &order.order_line[0], 9);

        assert_eq!(instance.expire_ms, Some(5));
        assert_eq!(instance.product_id.as_deref(), Some("kept"));
        assert_eq!(instance.updated_ms, 1, "nothing changed");
    }
}
