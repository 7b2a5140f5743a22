//! License-code 2.0 merchant callbacks (spec §6.3): renewal, freeze and release of a
//! license code (授权码) that KooGallery created.

use super::fields::{FieldError, Fields};
use super::ids::{LicenseCode, OrderId, OrderLineId};
use super::saas_v2::StatusChange;
use chrono::{DateTime, Utc};

/// A parsed License-code callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub test: bool,
    pub activity: Activity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    RefreshLicenseCode {
        scene: RefreshScene,
        order_id: OrderId,
        order_line_id: OrderLineId,
        license: LicenseCode,
        product_id: Option<String>,
        expire_time: DateTime<Utc>,
    },
    UpdateLicenseCodeStatus {
        license: LicenseCode,
        status: StatusChange,
    },
    ReleaseLicenseCode {
        license: LicenseCode,
        order_id: Option<OrderId>,
        order_line_id: Option<OrderLineId>,
    },
}

/// `refreshLicenseCode` `scene`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshScene {
    Renewal,
    UnsubscribeRenewalPeriod,
}

impl Activity {
    pub const fn name(&self) -> &'static str {
        match self {
            Self::RefreshLicenseCode { .. } => "refreshLicenseCode",
            Self::UpdateLicenseCodeStatus { .. } => "updateLicenseCodeStatus",
            Self::ReleaseLicenseCode { .. } => "releaseLicenseCode",
        }
    }

    /// The license code the callback is about.
    pub fn license(&self) -> &str {
        match self {
            Self::RefreshLicenseCode { license, .. }
            | Self::UpdateLicenseCodeStatus { license, .. }
            | Self::ReleaseLicenseCode { license, .. } => license,
        }
    }

    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::RefreshLicenseCode { order_id, .. } => Some(order_id),
            Self::ReleaseLicenseCode { order_id, .. } => order_id.as_deref(),
            Self::UpdateLicenseCodeStatus { .. } => None,
        }
    }
}

impl Request {
    /// Parses a body whose signature has already been verified.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let f = Fields::parse(body)?;
        let test = f.test_flag()?;
        let activity = match f.required("activity", 32)?.as_str() {
            "refreshLicenseCode" => Activity::RefreshLicenseCode {
                scene: match f.required("scene", 64)?.as_str() {
                    "RENEWAL" => RefreshScene::Renewal,
                    "UNSUBSCRIBE_RENEWAL_PERIOD" => RefreshScene::UnsubscribeRenewalPeriod,
                    other => {
                        return Err(FieldError::Invalid {
                            field: "scene",
                            reason: format!(
                                "{other:?} is not RENEWAL or UNSUBSCRIBE_RENEWAL_PERIOD"
                            ),
                        });
                    }
                },
                order_id: f.id()?,
                order_line_id: f.id()?,
                license: f.id()?,
                product_id: f.optional("productId", 64)?,
                expire_time: f.compact_time("expireTime")?,
            },
            "updateLicenseCodeStatus" => Activity::UpdateLicenseCodeStatus {
                license: f.id()?,
                status: f.status()?,
            },
            "releaseLicenseCode" => Activity::ReleaseLicenseCode {
                license: f.id()?,
                order_id: f.optional_id()?,
                order_line_id: f.optional_id()?,
            },
            other => return Err(FieldError::UnknownActivity(other.to_owned())),
        };
        Ok(Self { test, activity })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_activity_parses() {
        let r = Request::parse(br#"{"activity":"refreshLicenseCode","scene":"RENEWAL","orderId":"o","orderLineId":"o-1","license":"L1","expireTime":"20301121235959","testFlag":"1"}"#).unwrap();
        assert!(r.test);
        assert_eq!(r.activity.license(), "L1");
        assert_eq!(r.activity.order_id(), Some("o"));
        let r = Request::parse(
            br#"{"activity":"updateLicenseCodeStatus","license":"L1","status":"FREEZE"}"#,
        )
        .unwrap();
        assert_eq!(
            r.activity,
            Activity::UpdateLicenseCodeStatus {
                license: "L1".try_into().unwrap(),
                status: StatusChange::Freeze
            }
        );
        let r = Request::parse(br#"{"activity":"releaseLicenseCode","license":"L1"}"#).unwrap();
        assert_eq!(r.activity.name(), "releaseLicenseCode");
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let cases = [
            (r#"{"activity":"newLicenseCode","license":"L"}"#.to_string(), "unknown activity"),
            (r#"{"activity":"releaseLicenseCode"}"#.into(), "license is missing"),
            (format!(r#"{{"activity":"releaseLicenseCode","license":"{}"}}"#, "L".repeat(65)), "license is longer than 64"),
            (r#"{"activity":"updateLicenseCodeStatus","license":"L","status":"NORMAL"}"#.into(), "status has an invalid value"),
            (r#"{"activity":"refreshLicenseCode","scene":"TRIAL_TO_FORMAL","orderId":"o","orderLineId":"l","license":"L","expireTime":"20301121235959"}"#.into(), "scene has an invalid value"),
        ];
        for (body, expected) in cases {
            let err = Request::parse(body.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{body}: {err}");
        }
    }
}
