//! Instances and their lifecycle: active ⇄ frozen → released (spec §3, D9).

use super::events::ProvisioningError;
use crate::protocol::reply::AppInfo;

/// Which interface generation created the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    SaasV2,
    SaasV1,
}

impl Family {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SaasV2 => "saas_v2",
            Self::SaasV1 => "saas_v1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::SaasV2, Self::SaasV1]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// Where an instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Frozen,
    Released,
}

impl State {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Frozen => "frozen",
            Self::Released => "released",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Frozen, Self::Released]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// A provisioned (or provisioning) resource a buyer bought. `Debug` shows neither the
/// password nor the buyer's personal details.
#[derive(Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub family: Family,
    pub order_id: String,
    pub order_line_id: Option<String>,
    pub product_id: Option<String>,
    pub sku_code: Option<String>,
    /// `PERIOD`, `ON_DEMAND`, `ONE_TIME` or `ON_DEMAND_PKG` (spec §8.2; V1's numeric
    /// `chargingMode` is mapped to these names).
    pub charging_mode: Option<String>,
    pub period_type: Option<String>,
    pub period_number: Option<i64>,
    /// The linear attribute (quantity, GB, Mbps …) as KooGallery wrote it.
    pub linear_value: Option<String>,
    pub customer_id: Option<String>,
    pub customer_name: Option<String>,
    /// Family-specific facts with no column of their own (V1 parameters, buyer
    /// details, extend params), as a JSON object.
    pub details: serde_json::Map<String, serde_json::Value>,
    /// Created by a `testFlag=1` callback (seller-center debugging or a dial test).
    pub test: bool,
    pub state: State,
    /// `None` while an asynchronous provisioner is still working (`000004`).
    pub app_info: Option<AppInfo>,
    pub expire_ms: Option<i64>,
    /// The latest renewal, upgrade or unsubscribe order applied to the instance.
    pub last_order_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub released_ms: Option<i64>,
    /// What the merchant's app reported when it could not provide the instance
    /// (`app` provisioning, merchant-api.md §3); `None` otherwise.
    pub provisioning_error: Option<ProvisioningError>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut details = self.details.clone();
        for name in crate::store::PERSONAL_DETAILS {
            if let Some(value) = details.get_mut(name) {
                *value = "[redacted]".into();
            }
        }
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("family", &self.family)
            .field("order_id", &self.order_id)
            .field("order_line_id", &self.order_line_id)
            .field("product_id", &self.product_id)
            .field("sku_code", &self.sku_code)
            .field("charging_mode", &self.charging_mode)
            .field("period_type", &self.period_type)
            .field("period_number", &self.period_number)
            .field("linear_value", &self.linear_value)
            .field("customer_id", &self.customer_id)
            .field("customer_name", &self.customer_name)
            .field("details", &details)
            .field("test", &self.test)
            .field("state", &self.state)
            // AppInfo's own Debug redacts the password.
            .field("app_info", &self.app_info)
            .field("expire_ms", &self.expire_ms)
            .field("last_order_id", &self.last_order_id)
            .field("created_ms", &self.created_ms)
            .field("updated_ms", &self.updated_ms)
            .field("released_ms", &self.released_ms)
            .field("provisioning_error", &self.provisioning_error)
            .finish()
    }
}

/// The instance cannot be acted on: it was released (D9), answered `000003`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gone;

impl Instance {
    /// A new, active instance with no order details yet.
    pub fn new(id: String, family: Family, order_id: String, test: bool, now_ms: i64) -> Self {
        Self {
            id,
            family,
            order_id,
            order_line_id: None,
            product_id: None,
            sku_code: None,
            charging_mode: None,
            period_type: None,
            period_number: None,
            linear_value: None,
            customer_id: None,
            customer_name: None,
            details: serde_json::Map::new(),
            test,
            state: State::Active,
            app_info: None,
            expire_ms: None,
            last_order_id: None,
            created_ms: now_ms,
            updated_ms: now_ms,
            released_ms: None,
            provisioning_error: None,
        }
    }

    /// Whether a callback sees the instance as existing. Dial tests replay the saved
    /// debugging cases twice a day forever (spec §9), release case included, so a test
    /// instance stays visible to test callbacks after a test release; real instances
    /// follow D9 strictly.
    pub fn visible_to(&self, test_callback: bool) -> bool {
        self.state != State::Released || (self.test && test_callback)
    }

    /// Makes the instance usable for a lifecycle change, or refuses (D9). A released
    /// test instance touched by a test callback comes back as active (see [`Self::visible_to`]).
    fn usable(&mut self, test_callback: bool) -> Result<(), Gone> {
        if !self.visible_to(test_callback) {
            return Err(Gone);
        }
        if self.state == State::Released {
            self.state = State::Active;
            self.released_ms = None;
        }
        Ok(())
    }

    /// `updateInstanceStatus FREEZE` / V1 `expireInstance`: repeat freezes are no-ops.
    pub fn freeze(&mut self, test_callback: bool, now_ms: i64) -> Result<(), Gone> {
        self.usable(test_callback)?;
        self.state = State::Frozen;
        self.updated_ms = now_ms;
        Ok(())
    }

    /// `updateInstanceStatus UNFREEZE`: repeat unfreezes are no-ops.
    pub fn unfreeze(&mut self, test_callback: bool, now_ms: i64) -> Result<(), Gone> {
        self.usable(test_callback)?;
        self.state = State::Active;
        self.updated_ms = now_ms;
        Ok(())
    }

    /// `refreshInstance`: a new expiry from a renewal, trial conversion or cancelled
    /// renewal. The state is left alone: KooGallery unfreezes with its own call.
    pub fn refresh(
        &mut self,
        test_callback: bool,
        order_id: &str,
        product_id: Option<&str>,
        expire_ms: i64,
        now_ms: i64,
    ) -> Result<(), Gone> {
        self.usable(test_callback)?;
        self.expire_ms = Some(expire_ms);
        self.last_order_id = Some(order_id.to_owned());
        if let Some(product_id) = product_id {
            self.product_id = Some(product_id.to_owned());
        }
        self.updated_ms = now_ms;
        Ok(())
    }

    /// `upgradeInstance`: the instance id stays; the upgrade order is remembered.
    pub fn upgrade(
        &mut self,
        test_callback: bool,
        order_id: &str,
        now_ms: i64,
    ) -> Result<(), Gone> {
        self.usable(test_callback)?;
        self.last_order_id = Some(order_id.to_owned());
        self.updated_ms = now_ms;
        Ok(())
    }

    /// `releaseInstance`: always succeeds, and a repeat changes nothing (D9).
    pub fn release(&mut self, order_id: Option<&str>, now_ms: i64) {
        if self.state == State::Released {
            return;
        }
        self.state = State::Released;
        self.released_ms = Some(now_ms);
        self.updated_ms = now_ms;
        if let Some(order_id) = order_id {
            self.last_order_id = Some(order_id.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(test: bool) -> Instance {
        Instance::new("i".into(), Family::SaasV2, "o".into(), test, 0)
    }

    #[test]
    fn active_and_frozen_switch_back_and_forth() {
        let mut i = instance(false);
        i.freeze(false, 1).unwrap();
        assert_eq!(i.state, State::Frozen);
        i.freeze(false, 2).unwrap();
        assert_eq!(i.state, State::Frozen);
        i.unfreeze(false, 3).unwrap();
        assert_eq!(i.state, State::Active);
        assert_eq!(i.updated_ms, 3);
    }

    #[test]
    fn refresh_keeps_the_state_and_sets_the_expiry() {
        let mut i = instance(false);
        i.freeze(false, 1).unwrap();
        i.refresh(false, "renew-1", Some("p2"), 99, 2).unwrap();
        assert_eq!(
            (
                i.state,
                i.expire_ms,
                i.last_order_id.as_deref(),
                i.product_id.as_deref()
            ),
            (State::Frozen, Some(99), Some("renew-1"), Some("p2"))
        );
    }

    #[test]
    fn a_released_instance_is_gone_but_releases_again() {
        let mut i = instance(false);
        i.release(Some("unsub"), 5);
        i.release(None, 6);
        assert_eq!((i.state, i.released_ms), (State::Released, Some(5)));
        assert_eq!(i.freeze(false, 7), Err(Gone));
        assert_eq!(i.unfreeze(false, 7), Err(Gone));
        assert_eq!(i.refresh(false, "o", None, 1, 7), Err(Gone));
        assert_eq!(i.upgrade(false, "o", 7), Err(Gone));
        assert!(!i.visible_to(false));
        // A test callback does not revive a real instance.
        assert_eq!(i.freeze(true, 7), Err(Gone));
    }

    #[test]
    fn test_instances_survive_test_releases_for_test_callbacks() {
        let mut i = instance(true);
        i.release(None, 5);
        assert!(i.visible_to(true));
        assert!(!i.visible_to(false));
        assert_eq!(i.freeze(false, 6), Err(Gone));
        i.freeze(true, 6).unwrap();
        assert_eq!((i.state, i.released_ms), (State::Frozen, None));
    }
}
