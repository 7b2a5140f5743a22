//! SaaS 2.0 requests (spec §3): the `activity` field selects one of seven shapes, each
//! read with the limits of its field table.

use super::fields::{FieldError, Fields};
use chrono::{DateTime, Utc};

/// Longest id in a `queryInstance` list, and most ids in one list (spec §3.2).
pub const MAX_QUERY_IDS: usize = 100;

/// A parsed SaaS 2.0 callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub test: bool,
    pub activity: Activity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    NewInstance {
        order_id: String,
        order_line_id: String,
        business_id: String,
    },
    QueryInstance {
        instance_ids: Vec<String>,
    },
    RefreshInstance {
        scene: Scene,
        order_id: String,
        order_line_id: String,
        instance_id: String,
        product_id: Option<String>,
        expire_time: DateTime<Utc>,
    },
    UpdateInstanceStatus {
        instance_id: String,
        status: StatusChange,
    },
    ReleaseInstance {
        instance_id: String,
        order_id: Option<String>,
        order_line_id: Option<String>,
    },
    UpgradeInstance {
        instance_id: String,
        order_id: String,
        order_line_id: String,
    },
    ChangeInstanceCheck {
        instance_id: String,
        product: ProductInfo,
    },
    /// 异步申请License (spec §6.2): served on the same route for online-License products.
    GetLicenseAsync(LicenseApplication),
}

/// A `getLicenseAsync` application (spec §6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LicenseApplication {
    pub instance_id: String,
    pub effective_time: DateTime<Utc>,
    pub expire_time: Option<DateTime<Utc>>,
    /// KooGallery's serial number of the application; part of the upload URL (§8.3).
    pub event_id: String,
    pub device_fingerprint: Option<String>,
}

impl Activity {
    /// The wire name, for logs and the audit record.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::NewInstance { .. } => "newInstance",
            Self::QueryInstance { .. } => "queryInstance",
            Self::RefreshInstance { .. } => "refreshInstance",
            Self::UpdateInstanceStatus { .. } => "updateInstanceStatus",
            Self::ReleaseInstance { .. } => "releaseInstance",
            Self::UpgradeInstance { .. } => "upgradeInstance",
            Self::ChangeInstanceCheck { .. } => "changeInstanceCheck",
            Self::GetLicenseAsync(_) => "getLicenseAsync",
        }
    }

    /// The order the callback is about, if it names one.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::NewInstance { order_id, .. }
            | Self::RefreshInstance { order_id, .. }
            | Self::UpgradeInstance { order_id, .. } => Some(order_id),
            Self::ReleaseInstance { order_id, .. } => order_id.as_deref(),
            _ => None,
        }
    }

    /// The instance the callback is about, if it names exactly one.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Self::RefreshInstance { instance_id, .. }
            | Self::UpdateInstanceStatus { instance_id, .. }
            | Self::ReleaseInstance { instance_id, .. }
            | Self::UpgradeInstance { instance_id, .. }
            | Self::ChangeInstanceCheck { instance_id, .. } => Some(instance_id),
            Self::QueryInstance { instance_ids } if instance_ids.len() == 1 => {
                instance_ids.first().map(String::as_str)
            }
            Self::GetLicenseAsync(application) => Some(&application.instance_id),
            _ => None,
        }
    }
}

/// `refreshInstance` `scene` (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scene {
    TrialToFormal,
    Renewal,
    UnsubscribeRenewalPeriod,
    RenewalChange,
}

impl Scene {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TrialToFormal => "TRIAL_TO_FORMAL",
            Self::Renewal => "RENEWAL",
            Self::UnsubscribeRenewalPeriod => "UNSUBSCRIBE_RENEWAL_PERIOD",
            Self::RenewalChange => "RENEWAL_CHANGE",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::TrialToFormal,
            Self::Renewal,
            Self::UnsubscribeRenewalPeriod,
            Self::RenewalChange,
        ]
        .into_iter()
        .find(|scene| scene.as_str() == s)
    }
}

/// `updateInstanceStatus` `status` (spec §3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    Freeze,
    Unfreeze,
}

/// The target product of `changeInstanceCheck` (spec §3.7: koogate reads these three
/// fields, as in 查询订单, and ignores the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductInfo {
    pub product_id: Option<String>,
    pub sku_code: Option<String>,
    pub linear_value: Option<String>,
}

impl Request {
    /// Parses a body whose signature has already been verified.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let f = Fields::parse(body)?;
        let test = f.test_flag()?;
        let activity = match f.required("activity", 32)?.as_str() {
            "newInstance" => Activity::NewInstance {
                order_id: f.required("orderId", 64)?,
                order_line_id: f.required("orderLineId", 64)?,
                business_id: f.required("businessId", 64)?,
            },
            "queryInstance" => Activity::QueryInstance {
                instance_ids: instance_id_list(&f)?,
            },
            "refreshInstance" => Activity::RefreshInstance {
                scene: {
                    let scene = f.required("scene", 64)?;
                    Scene::parse(&scene).ok_or_else(|| FieldError::Invalid {
                        field: "scene",
                        reason: format!(
                            "{scene:?} is not TRIAL_TO_FORMAL, RENEWAL, UNSUBSCRIBE_RENEWAL_PERIOD or RENEWAL_CHANGE"
                        ),
                    })?
                },
                order_id: f.required("orderId", 64)?,
                order_line_id: f.required("orderLineId", 64)?,
                instance_id: f.required("instanceId", 64)?,
                product_id: f.optional("productId", 64)?,
                expire_time: f.compact_time("expireTime")?,
            },
            "updateInstanceStatus" => Activity::UpdateInstanceStatus {
                instance_id: f.required("instanceId", 64)?,
                status: f.status()?,
            },
            "releaseInstance" => Activity::ReleaseInstance {
                instance_id: f.required("instanceId", 64)?,
                order_id: f.optional("orderId", 64)?,
                order_line_id: f.optional("orderLineId", 64)?,
            },
            "upgradeInstance" => Activity::UpgradeInstance {
                instance_id: f.required("instanceId", 64)?,
                order_id: f.required("orderId", 64)?,
                order_line_id: f.required("orderLineId", 64)?,
            },
            "changeInstanceCheck" => Activity::ChangeInstanceCheck {
                instance_id: f.required("instanceId", 64)?,
                product: product_info(&f)?,
            },
            "getLicenseAsync" => Activity::GetLicenseAsync(license_application(&f)?),
            other => return Err(FieldError::UnknownActivity(other.to_owned())),
        };
        Ok(Self { test, activity })
    }
}

fn instance_id_list(f: &Fields) -> Result<Vec<String>, FieldError> {
    split_instance_ids(&f.required("instanceId", MAX_QUERY_IDS_LEN)?)
}

/// Longest `queryInstance` `instanceId` list accepted: the table gives String(100) for a
/// list of up to 100 ids of 64 characters each, so koogate bounds the count and each id
/// rather than the whole string.
pub const MAX_QUERY_IDS_LEN: usize = MAX_QUERY_IDS * 65;

/// Splits a `queryInstance` `instanceId` list (SaaS 2.0 §3.2 and 1.0 §4.2 alike): up
/// to 100 comma-separated ids of at most 64 characters; blanks between commas are skipped.
pub fn split_instance_ids(raw: &str) -> Result<Vec<String>, FieldError> {
    let ids: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let invalid = |reason: String| FieldError::Invalid {
        field: "instanceId",
        reason,
    };
    if ids.is_empty() {
        return Err(FieldError::Missing("instanceId"));
    }
    if ids.len() > MAX_QUERY_IDS {
        return Err(invalid(format!(
            "{} ids given, at most {MAX_QUERY_IDS} allowed",
            ids.len()
        )));
    }
    if let Some(long) = ids.iter().find(|id| id.chars().count() > 64) {
        return Err(invalid(format!("id {long:?} is longer than 64 characters")));
    }
    Ok(ids)
}

fn license_application(f: &Fields) -> Result<LicenseApplication, FieldError> {
    let time = |field: &'static str, raw: Option<String>| {
        raw.map(|raw| {
            super::time::parse_license_time(&raw).ok_or_else(|| FieldError::Invalid {
                field,
                reason: format!(
                    "{raw:?} is not yyyy-MM-dd HH:mm:ss z, yyyyMMddHHmmss or yyyyMMddHHmmssSSS"
                ),
            })
        })
        .transpose()
    };
    let instance_id = f.required("instanceId", 64)?;
    let effective_time = time("effectiveTime", Some(f.required("effectiveTime", 32)?))?
        .ok_or(FieldError::Missing("effectiveTime"))?;
    let expire_time = time("expireTime", f.optional("expireTime", 32)?)?;
    let event_id = f.required("eventId", 64)?;
    // The id becomes a path segment of the upload URL (§8.3): only characters that need
    // no encoding, so the URL koogate signs is the one the gateway reads.
    if !event_id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        || event_id == "."
        || event_id == ".."
    {
        return Err(FieldError::Invalid {
            field: "eventId",
            reason: "only letters, digits, '-', '_', '.' and '~' may be used".into(),
        });
    }
    if let Some(expire) = expire_time
        && expire < effective_time
    {
        return Err(FieldError::Invalid {
            field: "expireTime",
            reason: "is before effectiveTime".into(),
        });
    }
    Ok(LicenseApplication {
        instance_id,
        effective_time,
        expire_time,
        event_id,
        device_fingerprint: f.optional("deviceFingerprint", 1024)?,
    })
}

fn product_info(f: &Fields) -> Result<ProductInfo, FieldError> {
    let map = f.object("productInfo")?;
    let text = |name: &str| match map.get(name) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(ProductInfo {
        product_id: text("productId"),
        sku_code: text("skuCode"),
        linear_value: text("linearValue"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Request, FieldError> {
        Request::parse(body.as_bytes())
    }

    #[test]
    fn spec_example_new_instance_parses() {
        let r = parse(r#"{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8","orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}"#).unwrap();
        assert!(r.test);
        assert_eq!(r.activity.name(), "newInstance");
        assert_eq!(r.activity.order_id(), Some("CS2211181819B4LVS"));
    }

    #[test]
    fn refresh_accepts_the_seventeen_digit_example_time() {
        let r = parse(r#"{"activity":"refreshInstance","scene":"RENEWAL","orderId":"o","orderLineId":"l","instanceId":"i","expireTime":"20221124023618256"}"#).unwrap();
        let Activity::RefreshInstance {
            expire_time, scene, ..
        } = r.activity
        else {
            panic!()
        };
        assert_eq!(scene, Scene::Renewal);
        assert_eq!(expire_time.timestamp_millis(), 1_669_257_378_256);
    }

    #[test]
    fn query_lists_are_bounded() {
        let r = parse(r#"{"activity":"queryInstance","instanceId":"a, b,,c"}"#).unwrap();
        assert_eq!(
            r.activity,
            Activity::QueryInstance {
                instance_ids: vec!["a".into(), "b".into(), "c".into()]
            }
        );
        let many = (0..101)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let err = parse(&format!(
            r#"{{"activity":"queryInstance","instanceId":"{many}"}}"#
        ))
        .unwrap_err();
        assert!(err.to_string().contains("101 ids"), "{err}");
    }

    #[test]
    fn change_check_reads_product_info_as_object_or_string() {
        for body in [
            r#"{"activity":"changeInstanceCheck","instanceId":"i","productInfo":{"productId":"p","skuCode":"s","linearValue":5}}"#,
            r#"{"activity":"changeInstanceCheck","instanceId":"i","productInfo":"{\"productId\":\"p\",\"skuCode\":\"s\",\"linearValue\":5}"}"#,
        ] {
            let Activity::ChangeInstanceCheck { product, .. } = parse(body).unwrap().activity
            else {
                panic!()
            };
            assert_eq!(product.product_id.as_deref(), Some("p"));
            assert_eq!(product.linear_value.as_deref(), Some("5"));
        }
    }

    #[test]
    fn get_license_async_reads_the_documented_fields() {
        let r = parse(r#"{"activity":"getLicenseAsync","instanceId":"i-1","effectiveTime":"2023-10-27 10:30:15 z","expireTime":"20241027103015","eventId":"EV-1_a.b~c","deviceFingerprint":"00:11|D1|B1|C1","testFlag":"1"}"#).unwrap();
        assert!(r.test);
        let Activity::GetLicenseAsync(a) = r.activity else {
            panic!()
        };
        assert_eq!(a.effective_time.timestamp(), 1_698_402_615);
        assert_eq!(a.expire_time.map(|t| t.timestamp()), Some(1_730_025_015));
        assert_eq!(a.event_id, "EV-1_a.b~c");
        assert_eq!(a.device_fingerprint.as_deref(), Some("00:11|D1|B1|C1"));
    }

    #[test]
    fn get_license_async_refuses_what_the_spec_does_not_allow() {
        // A body names each field once (D1a): a case's fields replace the base's.
        let base = |extra: &str| {
            let mut body: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
                r#"{"activity":"getLicenseAsync","instanceId":"i","effectiveTime":"20231027103015","eventId":"e"}"#,
            )
            .unwrap();
            let extra: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&format!("{{{}}}", extra.trim_start_matches(','))).unwrap();
            body.extend(extra);
            serde_json::Value::Object(body).to_string()
        };
        let cases = [
            (base(r#","eventId":"a/b""#), "eventId has an invalid value"),
            (base(r#","eventId":"..""#), "eventId has an invalid value"),
            (
                base(&format!(r#","eventId":"{}""#, "e".repeat(65))),
                "eventId is longer than 64",
            ),
            (
                base(r#","effectiveTime":"27/10/2023""#),
                "effectiveTime has an invalid value",
            ),
            (
                base(r#","expireTime":"20221027103015""#),
                "expireTime has an invalid value: is before",
            ),
            (
                base(&format!(r#","deviceFingerprint":"{}""#, "f".repeat(1025))),
                "deviceFingerprint is longer than 1024",
            ),
            (
                base(&format!(r#","expireTime":"{}""#, "2".repeat(33))),
                "expireTime is longer than 32",
            ),
            (
                r#"{"activity":"getLicenseAsync","instanceId":"i","eventId":"e"}"#.into(),
                "effectiveTime is missing",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(&body).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{body}: {err}");
        }
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let long = "x".repeat(65);
        let cases = [
            (r#"{"orderId":"o"}"#.to_string(), "activity is missing"),
            (r#"{"activity":"deleteEverything"}"#.into(), "unknown activity \"deleteEverything\""),
            (r#"{"activity":"newInstance","orderLineId":"l","businessId":"b"}"#.into(), "orderId is missing"),
            (format!(r#"{{"activity":"newInstance","orderId":"{long}","orderLineId":"l","businessId":"b"}}"#), "orderId is longer than 64 characters"),
            (r#"{"activity":"updateInstanceStatus","instanceId":"i","status":"PAUSE"}"#.into(), "status has an invalid value: \"PAUSE\" is not FREEZE or UNFREEZE"),
            (r#"{"activity":"refreshInstance","scene":"LATER","orderId":"o","orderLineId":"l","instanceId":"i","expireTime":"20221124023618"}"#.into(), "scene has an invalid value"),
            (r#"{"activity":"refreshInstance","scene":"RENEWAL","orderId":"o","orderLineId":"l","instanceId":"i","expireTime":"tomorrow"}"#.into(), "expireTime has an invalid value"),
            (r#"{"activity":"newInstance","orderId":1.5e400}"#.into(), "body is not a JSON object"),
        ];
        for (body, expected) in cases {
            let err = parse(&body).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{body}: {err}");
        }
    }
}
