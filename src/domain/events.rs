//! Domain events (merchant-api.md §2): what each decision changed, as data. Activities
//! return them beside their answer and the follow-up work they leave; the application
//! layer writes both in the same transaction as the change, and the webhook delivery
//! and the pull feed read the events from there.

use super::instance::{Family, Instance, State};
use super::license_code::LicenseCode;
use super::order::Fetch;
use crate::protocol::reply::AppInfo;
use crate::store::OrderLineRecord;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;
use serde_json::Value;

/// The event types of merchant-api.md §2.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    InstanceCreated,
    InstanceOrderUpdated,
    InstanceProvisionRequested,
    InstanceProvisioned,
    InstanceProvisioningFailed,
    InstanceRenewed,
    InstanceUpgraded,
    InstanceFrozen,
    InstanceUnfrozen,
    InstanceReleased,
    OrderReceived,
    LicenseCodeRenewed,
    LicenseCodeFrozen,
    LicenseCodeUnfrozen,
    LicenseCodeReleased,
    LicenseRequested,
    LicenseDelivered,
    LicenseDeliveryFailed,
    UsagePushed,
    UsagePushFailed,
}

impl EventType {
    pub const ALL: [Self; 20] = [
        Self::InstanceCreated,
        Self::InstanceOrderUpdated,
        Self::InstanceProvisionRequested,
        Self::InstanceProvisioned,
        Self::InstanceProvisioningFailed,
        Self::InstanceRenewed,
        Self::InstanceUpgraded,
        Self::InstanceFrozen,
        Self::InstanceUnfrozen,
        Self::InstanceReleased,
        Self::OrderReceived,
        Self::LicenseCodeRenewed,
        Self::LicenseCodeFrozen,
        Self::LicenseCodeUnfrozen,
        Self::LicenseCodeReleased,
        Self::LicenseRequested,
        Self::LicenseDelivered,
        Self::LicenseDeliveryFailed,
        Self::UsagePushed,
        Self::UsagePushFailed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InstanceCreated => "instance.created",
            Self::InstanceOrderUpdated => "instance.order_updated",
            Self::InstanceProvisionRequested => "instance.provision_requested",
            Self::InstanceProvisioned => "instance.provisioned",
            Self::InstanceProvisioningFailed => "instance.provisioning_failed",
            Self::InstanceRenewed => "instance.renewed",
            Self::InstanceUpgraded => "instance.upgraded",
            Self::InstanceFrozen => "instance.frozen",
            Self::InstanceUnfrozen => "instance.unfrozen",
            Self::InstanceReleased => "instance.released",
            Self::OrderReceived => "order.received",
            Self::LicenseCodeRenewed => "license_code.renewed",
            Self::LicenseCodeFrozen => "license_code.frozen",
            Self::LicenseCodeUnfrozen => "license_code.unfrozen",
            Self::LicenseCodeReleased => "license_code.released",
            Self::LicenseRequested => "license.requested",
            Self::LicenseDelivered => "license.delivered",
            Self::LicenseDeliveryFailed => "license.delivery_failed",
            Self::UsagePushed => "usage.pushed",
            Self::UsagePushFailed => "usage.push_failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One change, as a decision reports it: its type, what it is about, and the subject
/// as it is after the change.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventType,
    /// `instance:ID`, `license-code:CODE`, `order:ORDER/LINE` or `license-request:EVENT`.
    pub subject: String,
    /// Caused by `testFlag=1` traffic (seller-center debugging, dial tests).
    pub test: bool,
    pub snapshot: Value,
}

impl Event {
    /// An event about an instance, with its snapshot (§4.2, without secrets).
    pub fn instance(kind: EventType, instance: &Instance) -> Self {
        Self {
            kind,
            subject: format!("instance:{}", instance.id),
            test: instance.test,
            snapshot: serde_json::json!({ "instance": to_value(&InstanceView::from(instance)) }),
        }
    }

    /// An event about a license code.
    pub fn license_code(kind: EventType, code: &LicenseCode, test: bool) -> Self {
        Self {
            kind,
            subject: format!("license-code:{}", code.license),
            test,
            snapshot: serde_json::json!({ "licenseCode": to_value(&LicenseCodeView::from(code)) }),
        }
    }

    /// `order.received`: an order line's details as 查询订单 answered them.
    pub fn order_received(line: &OrderLineRecord) -> Self {
        Self {
            kind: EventType::OrderReceived,
            subject: format!("order:{}/{}", line.order_id, line.order_line_id),
            test: line.test,
            snapshot: serde_json::json!({ "orderLine": to_value(&OrderLineView::from(line)) }),
        }
    }
}

fn to_value(view: &impl Serialize) -> Value {
    // Views are plain structs of strings, numbers and options: they always serialise.
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// A time as the merchant API writes it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Where an instance is, as the merchant API names it (merchant-api.md §4.2).
pub fn state_name(instance: &Instance) -> &'static str {
    match instance.state {
        State::Released => "released",
        _ if instance.provisioning_error.is_some() => "provisioning_failed",
        _ if instance.app_info.is_none() => "provisioning",
        State::Frozen => "frozen",
        State::Active => "active",
    }
}

/// The instance resource of merchant-api.md §4.2: what the app may know of an instance.
/// The password is write-only and never part of it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    pub id: String,
    /// `provisioning`, `active`, `frozen`, `released` or `provisioning_failed`.
    pub state: &'static str,
    /// `saas-v2`, `saas-v1` or `license`.
    pub generation: &'static str,
    pub test: bool,
    pub order_id: String,
    pub order_line_id: Option<String>,
    pub product_id: Option<String>,
    pub sku_code: Option<String>,
    pub charging_mode: Option<String>,
    pub period_type: Option<String>,
    pub period_number: Option<i64>,
    pub linear_value: Option<String>,
    pub expire_time: Option<String>,
    pub customer: CustomerView,
    pub app_info: Option<AppInfoView>,
    /// Why the app could not provide the instance, when it said so.
    pub provisioning_error: Option<ProvisioningError>,
    pub created_at: String,
    pub updated_at: String,
    pub released_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CustomerView {
    pub id: Option<String>,
    pub name: Option<String>,
}

/// App info without its password.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppInfoView {
    pub front_end_url: String,
    pub admin_url: Option<String>,
    pub user_name: Option<String>,
    pub memo: Option<String>,
}

/// What the app reported when it could not provide an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningError {
    pub result_code: String,
    pub message: String,
}

impl From<&AppInfo> for AppInfoView {
    fn from(info: &AppInfo) -> Self {
        Self {
            front_end_url: info.front_end_url.clone(),
            admin_url: info.admin_url.clone(),
            user_name: info.user_name.clone(),
            memo: info.memo.clone(),
        }
    }
}

impl From<&Instance> for InstanceView {
    fn from(i: &Instance) -> Self {
        Self {
            id: i.id.clone(),
            state: state_name(i),
            generation: match i.family {
                Family::SaasV2 => "saas-v2",
                Family::SaasV1 => "saas-v1",
            },
            test: i.test,
            order_id: i.order_id.clone(),
            order_line_id: i.order_line_id.clone(),
            product_id: i.product_id.clone(),
            sku_code: i.sku_code.clone(),
            charging_mode: i.charging_mode.clone(),
            period_type: i.period_type.clone(),
            period_number: i.period_number,
            linear_value: i.linear_value.clone(),
            expire_time: i.expire_ms.map(rfc3339),
            customer: CustomerView {
                id: i.customer_id.clone(),
                name: i.customer_name.clone(),
            },
            app_info: i.app_info.as_ref().map(AppInfoView::from),
            provisioning_error: i.provisioning_error.clone(),
            created_at: rfc3339(i.created_ms),
            updated_at: rfc3339(i.updated_ms),
            released_at: i.released_ms.map(rfc3339),
        }
    }
}

/// A license code as events and the API show it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LicenseCodeView {
    pub license: String,
    pub state: &'static str,
    pub order_id: Option<String>,
    pub order_line_id: Option<String>,
    pub product_id: Option<String>,
    pub expire_time: Option<String>,
    pub activated_at: String,
    pub updated_at: String,
    pub released_at: Option<String>,
}

impl From<&LicenseCode> for LicenseCodeView {
    fn from(c: &LicenseCode) -> Self {
        Self {
            license: c.license.clone(),
            state: c.state.as_str(),
            order_id: c.order_id.clone(),
            order_line_id: c.order_line_id.clone(),
            product_id: c.product_id.clone(),
            expire_time: c.expire_ms.map(rfc3339),
            activated_at: rfc3339(c.activated_ms),
            updated_at: rfc3339(c.updated_ms),
            released_at: c.released_ms.map(rfc3339),
        }
    }
}

/// An order line as events and the API show it: `orderInfo` is what 查询订单 answered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderLineView {
    pub order_id: String,
    pub order_line_id: String,
    pub test: bool,
    /// The activity that first named the line.
    pub source: String,
    pub received_at: String,
    #[schema(value_type = Option<Object>)]
    pub order_info: Option<Value>,
    pub fetched_at: Option<String>,
}

impl From<&OrderLineRecord> for OrderLineView {
    fn from(l: &OrderLineRecord) -> Self {
        Self {
            order_id: l.order_id.clone(),
            order_line_id: l.order_line_id.clone(),
            test: l.test,
            source: l.source.clone(),
            received_at: rfc3339(l.created_ms),
            order_info: l
                .order_info
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            fetched_at: l.fetched_ms.map(rfc3339),
        }
    }
}

/// An answer, the events its decision caused, and the background work it leaves.
#[derive(Debug, Clone)]
pub struct Decision<A> {
    pub answer: A,
    pub events: Vec<Event>,
    /// What the application layer is to queue, in the decision's transaction.
    pub follow_up: Vec<FollowUp>,
}

impl<A> Decision<A> {
    /// A decision that changed nothing.
    pub fn quiet(answer: A) -> Self {
        Self {
            answer,
            events: Vec::new(),
            follow_up: Vec::new(),
        }
    }

    pub fn with(answer: A, events: Vec<Event>) -> Self {
        Self {
            answer,
            events,
            follow_up: Vec::new(),
        }
    }

    /// The same decision, leaving `work` to be done as well.
    pub fn and_then(mut self, work: FollowUp) -> Self {
        self.follow_up.push(work);
        self
    }
}

/// The job kind that fetches an order's details.
pub const FETCH_KIND: &str = "order.fetch";

/// The job kind that delivers one event to the merchant's webhook endpoint.
pub const DELIVER_KIND: &str = "event.deliver";

/// The job kind that uploads one application's License.
pub const UPLOAD_KIND: &str = "license.upload";

/// Work a decision leaves to the background, described as data: the domain says what
/// must happen next, the application layer decides how it is queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    /// The order line's details are needed from 查询订单 (spec §8.2).
    FetchOrder(Fetch),
    /// An application's License is known and must reach KooGallery (§8.3).
    UploadLicense {
        event_id: String,
        /// The order the upload is listed with.
        order_id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_by_its_name() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("instance.deleted"), None);
    }

    #[test]
    fn an_instance_snapshot_never_carries_the_password() {
        let mut i = Instance::new(
            "i1".into(),
            Family::SaasV2,
            "o1".into(),
            true,
            1_764_576_000_123,
        );
        i.app_info = Some(AppInfo {
            front_end_url: "https://app/i1".into(),
            admin_url: None,
            user_name: Some("admin".into()),
            password: Some("s3cret-pw".into()),
            memo: None,
        });
        let event = Event::instance(EventType::InstanceProvisioned, &i);
        let text = event.snapshot.to_string();
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(!text.contains("password"), "{text}");
        assert_eq!(event.subject, "instance:i1");
        let snapshot = &event.snapshot["instance"];
        assert_eq!(snapshot["state"], "active");
        assert_eq!(snapshot["generation"], "saas-v2");
        assert_eq!(snapshot["createdAt"], "2025-12-01T08:00:00.123Z");
        assert_eq!(snapshot["expireTime"], Value::Null);
    }

    #[test]
    fn states_as_the_api_names_them() {
        let mut i = Instance::new("i".into(), Family::SaasV1, "o".into(), false, 0);
        assert_eq!(state_name(&i), "provisioning");
        i.provisioning_error = Some(ProvisioningError {
            result_code: "000100".into(),
            message: "no capacity".into(),
        });
        assert_eq!(state_name(&i), "provisioning_failed");
        i.release(None, 1);
        assert_eq!(state_name(&i), "released");
    }
}
