//! The open-API shapes koogate and the mock marketplace exchange: the order notification
//! (spec §7), 查询订单 (query order, §8.2), license-code activation and heartbeat (§6.3),
//! the License string/file upload (§8.3) and the usage push (§8.4).
//!
//! Answers are read leniently: unknown keys are ignored, absent or `null` optional fields
//! are `None`, and fields documented as numbers that some samples write as strings (or
//! the other way round) are accepted in either form.

use super::fields::{FieldError, Fields};
use super::ids::{OrderId, OrderLineId};
use super::personal::Personal;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The open-API paths, relative to the marketplace's base URL.
pub mod paths {
    /// 查询订单 (§8.2), `GET` with `orderId` and optionally `orderLineId`.
    pub const QUERY_ORDER: &str = "/api/mkp-openapi-public/global/v1/order/query";
    /// 激活授权码 (§6.3).
    pub const LICENSE_ACTIVATE: &str = "/api/mkp-openapi-public/global/v1/license/activate";
    /// 查询授权码 / heartbeat (§6.3).
    pub const LICENSE_HEARTBEAT: &str = "/api/mkp-openapi-public/global/v1/license/heartbeat";
    /// 字符串/文件流上传 (§8.3): `{event_id}` is the `eventId` of `getLicenseAsync`.
    pub const MARKET_EVENT_FILE: &str =
        "/api/mkp-openapi-public/global/v1/market-event/{event_id}/file";
    /// 按需使用量推送 (§8.4).
    pub const USAGE_DATA: &str = "/api/mkp-openapi-public/global/v1/isv/usage-data";
}

/// `resultCode` of a successful query (§8.2).
pub const MKT_SUCCESS: &str = "MKT.0000";

/// The mock order ids KooGallery answers without a purchase (§8.2); each has one order
/// line, `<id>-000001`.
pub const MOCK_ORDER_IDS: [&str; 9] = [
    "MOCKPERIODYEARNEW",
    "MOCKONETIMENEW",
    "MOCKONDEMAND",
    "MOCKONDEMANDPKG",
    "MOCKPERIODDAYTRIAL",
    "MOCKMONTYTRIALTOFORMAL",
    "MOCKMONTYUNSUBSCRIBE",
    "MOCKMONTYRENEW",
    "MOCKMONTYCHANGE",
];

/// A verified `orderNotify` callback (§7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyRequest {
    pub test: bool,
    pub order_id: OrderId,
    pub order_line_id: OrderLineId,
}

impl NotifyRequest {
    /// Parses a body whose signature has already been verified. `testFlag` is mandatory
    /// in the table but read leniently: absent counts as a real order, as in §1.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        let f = Fields::parse(body)?;
        let activity = f.required("activity", 20)?;
        if activity != "orderNotify" {
            return Err(FieldError::UnknownActivity(activity));
        }
        Ok(Self {
            test: f.test_flag()?,
            order_id: f.id()?,
            order_line_id: f.id()?,
        })
    }
}

/// The answer of 查询订单 (§8.2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryOrderResponse {
    pub result_code: String,
    #[serde(default)]
    pub result_msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_info: Option<OrderInfo>,
}

/// `orderInfo`: one order and its lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderInfo {
    pub order_id: String,
    /// `NEW`, `TRIAL`, `TRIAL_TO_FORMAL`, `UNSUBSCRIBE`, `RENEW` or `CHANGE`.
    #[serde(default)]
    pub order_type: Option<String>,
    /// When the order was placed, `yyyyMMddHHmmss` UTC.
    #[serde(default)]
    pub create_time: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub order_line: Vec<OrderLine>,
    #[serde(default)]
    pub buyer_info: Option<BuyerInfo>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub extend_params: Vec<NameValue>,
}

impl OrderInfo {
    /// The line with this id, or the only line when none is named.
    pub fn line(&self, order_line_id: Option<&str>) -> Option<&OrderLine> {
        match order_line_id {
            Some(id) => self.order_line.iter().find(|l| l.order_line_id == id),
            None if self.order_line.len() == 1 => self.order_line.first(),
            None => None,
        }
    }
}

/// One order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub order_line_id: String,
    /// `ON_DEMAND`, `ONE_TIME`, `PERIOD` or `ON_DEMAND_PKG`.
    #[serde(default)]
    pub charging_mode: Option<String>,
    /// `yyyyMMddHHmmss` UTC; period products only.
    #[serde(default)]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub period_type: Option<String>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub period_number: Option<i64>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub product_info: Vec<ProductInfo>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub extend_params: Vec<NameValue>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub currency: Option<String>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub currency_after_discount: Option<String>,
}

/// A product of an order line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductInfo {
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub sku_code: Option<String>,
    /// The linear attribute as written (a number in the samples, a string in others).
    #[serde(default, deserialize_with = "lenient_text")]
    pub linear_value: Option<String>,
    #[serde(default)]
    pub product_name: Option<String>,
}

/// `buyerInfo`: the buyer's personal data is [`Personal`], which `Debug` never shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuyerInfo {
    #[serde(default)]
    pub mobile_phone: Option<Personal>,
    #[serde(default)]
    pub email: Option<Personal>,
    #[serde(default)]
    pub customer_id: Option<String>,
    #[serde(default)]
    pub customer_name: Option<String>,
    #[serde(default)]
    pub customer_real_name: Option<Personal>,
    #[serde(default, deserialize_with = "lenient_text")]
    pub customer_type: Option<String>,
    #[serde(default)]
    pub user_id: Option<Personal>,
    #[serde(default)]
    pub user_name: Option<Personal>,
}

/// An `extendParams` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameValue {
    pub name: String,
    #[serde(default, deserialize_with = "lenient_text")]
    pub value: Option<String>,
}

/// The common answer of the license, upload and usage APIs (§6.3, §8.3, §8.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error_code: String,
    #[serde(default)]
    pub error_msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// 激活授权码 request (§6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateRequest {
    pub license: String,
    /// `yyyyMMddHHmmss` UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_effect_time: Option<String>,
}

/// `data.license_code_info` of an activation, which the API sends as a JSON *string*.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseCodeInfo {
    /// `ALIVE`, `EXPIRED` or `RELEASED`.
    pub status: String,
    #[serde(default)]
    pub expire_time: Option<String>,
    #[serde(default)]
    pub product_id: Option<String>,
    #[serde(default)]
    pub order_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_int")]
    pub amount: Option<i64>,
}

/// 查询授权码 (heartbeat) request (§6.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub license: String,
    #[serde(
        rename = "heartbeatInfo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_info: Option<HeartbeatInfo>,
}

/// The deprecated `heartbeatInfo` of a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatInfo {
    pub third_party_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

/// `data` of a heartbeat (LicenseInfo); extensible, so unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenseInfo {
    pub license_code: String,
    pub status: String,
    pub activate_time: String,
    #[serde(default)]
    pub expire_time: Option<String>,
}

/// The `isvUpdateFileReq` part of an upload (§8.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRequest {
    /// `CHARACTERS` or `FILE`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub characters: Option<String>,
}

/// The body of a usage push (§8.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsagePush {
    pub usage_records: Vec<UsageRecord>,
}

/// One usage record (§8.4); times are `yyyyMMdd'T'HHmmss'Z'`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub instance_id: String,
    pub record_time: String,
    pub begin_time: String,
    pub end_time: String,
    /// A string or a number with at most 4 decimals, greater than 0.
    #[serde(deserialize_with = "required_text")]
    pub usage_value: String,
    pub metering_sn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relate_pkg_instance: Option<String>,
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A string, or a number or boolean in its JSON text form; `null` and `""` are `None`.
fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

fn required_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    lenient_text(d)?.ok_or_else(|| serde::de::Error::custom("expected a string or a number"))
}

/// An integer, or a string holding one; anything else is `None`.
fn lenient_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The China-site sample of §8.2, with an unknown key added at each level.
    const SAMPLE: &str = r#"{"resultCode":"MKT.0000","resultMsg":"Success","orderInfo":{
      "orderId":"MOCKPERIODYEARNEW","orderType":"NEW","createTime":"20241121090846","futureKey":1,
      "orderLine":[{"orderLineId":"MOCKPERIODYEARNEW-000001","chargingMode":"PERIOD","periodType":"year",
         "periodNumber":1,"expireTime":"20251121235959","trialFlag":"0",
         "productInfo":[{"productId":"OFFI846204237451911168","skuCode":"0a4d1578-x","linearValue":50,
                         "productName":"MOCK测试商品,测试规格,基础版,包周期","extra":{}}],
         "extendParams":[{"name":"emailDomainName","value":"test.xxxx.com"},{"name":"ip","value":"127.0.0.1"}],
         "currency":"100","currencyAfterDiscount":"100"}],
      "buyerInfo":{"mobilePhone":"18688888888","email":null,"customerId":"459bbbec","customerName":"mock_user_01",
         "customerRealName":"测试用户1","customerType":0,"userId":null,"userName":null,"more":true},
      "extendParams":[]}}"#;

    #[test]
    fn reads_the_spec_sample_and_ignores_unknown_keys() {
        let answer: QueryOrderResponse = serde_json::from_str(SAMPLE).unwrap();

        assert_eq!(answer.result_code, MKT_SUCCESS);
        let order = answer.order_info.unwrap();
        assert_eq!(order.order_type.as_deref(), Some("NEW"));
        let line = order.line(Some("MOCKPERIODYEARNEW-000001")).unwrap();
        assert_eq!(line.charging_mode.as_deref(), Some("PERIOD"));
        assert_eq!(line.period_number, Some(1));
        assert_eq!(line.expire_time.as_deref(), Some("20251121235959"));
        let product = &line.product_info[0];
        assert_eq!(product.linear_value.as_deref(), Some("50"));
        assert_eq!(product.sku_code.as_deref(), Some("0a4d1578-x"));
        assert_eq!(line.extend_params[1].value.as_deref(), Some("127.0.0.1"));
        let buyer = order.buyer_info.unwrap();
        assert_eq!(buyer.customer_type.as_deref(), Some("0"));
        assert_eq!(buyer.email, None);
        assert_eq!(buyer.customer_real_name.as_deref(), Some("测试用户1"));
    }

    #[test]
    fn numbers_and_strings_are_read_either_way() {
        let line: OrderLine = serde_json::from_str(
            r#"{"orderLineId":"l","periodNumber":"3","productInfo":null,"currency":12.5,"extendParams":null}"#,
        )
        .unwrap();
        assert_eq!(line.period_number, Some(3));
        assert_eq!(line.currency.as_deref(), Some("12.5"));
        assert!(line.product_info.is_empty() && line.extend_params.is_empty());
        let record: UsageRecord = serde_json::from_str(
            r#"{"instance_id":"i","record_time":"a","begin_time":"b","end_time":"c","usage_value":1.25,"metering_sn":"m"}"#,
        )
        .unwrap();
        assert_eq!(record.usage_value, "1.25");
    }

    #[test]
    fn a_line_is_found_by_id_or_as_the_only_one() {
        let order: OrderInfo = serde_json::from_str(
            r#"{"orderId":"o","orderLine":[{"orderLineId":"o-1"},{"orderLineId":"o-2"}]}"#,
        )
        .unwrap();
        assert_eq!(order.line(Some("o-2")).unwrap().order_line_id, "o-2");
        assert!(order.line(Some("o-3")).is_none());
        assert!(order.line(None).is_none(), "two lines: none is implied");
    }

    #[test]
    fn order_notifications_parse_with_the_field_limits() {
        let ok = NotifyRequest::parse(
            br#"{"activity":"orderNotify","orderId":"CS1","orderLineId":"CS1-000001","testFlag":"1"}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            NotifyRequest {
                test: true,
                order_id: "CS1".try_into().unwrap(),
                order_line_id: "CS1-000001".try_into().unwrap()
            }
        );
        let long = "x".repeat(65);
        let cases = [
            ("{".to_owned(), "body is not a JSON object"),
            (
                r#"{"activity":"newInstance","orderId":"o","orderLineId":"l"}"#.into(),
                "unknown activity \"newInstance\"",
            ),
            (
                r#"{"activity":"orderNotify","orderLineId":"l"}"#.into(),
                "orderId is missing",
            ),
            (
                format!(r#"{{"activity":"orderNotify","orderId":"o","orderLineId":"{long}"}}"#),
                "orderLineId is longer than 64 characters",
            ),
            (
                r#"{"activity":"orderNotify","orderId":"o","orderLineId":"l","testFlag":"2"}"#
                    .into(),
                "testFlag has an invalid value",
            ),
        ];
        for (body, expected) in cases {
            let problem = NotifyRequest::parse(body.as_bytes()).unwrap_err();
            assert!(
                problem.to_string().starts_with(expected),
                "{body}: {problem}"
            );
        }
    }
}
