//! SaaS 1.0 requests (spec §4): the `activity` parameter selects one of seven shapes, each
//! read from an authenticated [`V1Request`] with the limits of its table. The encrypted
//! `mobilePhone` and `email` are decrypted here (§2.5), so a field that cannot be read is a
//! `000002` naming it, like any other bad parameter.
//!
//! Limits the tables leave open: `mobilePhone`/`email` (no length given) are bounded at
//! [`MAX_ENCRYPTED_LEN`] characters of ciphertext, and `trialFlag`/`provisionType` (no type
//! or length confirmed, spec §13 #5) are kept as text of at most [`MAX_UNDOCUMENTED_LEN`].

use super::crypto::FieldCipher;
use super::fields::{FieldError, refuse_control, storable_text};
use super::saas_v2::{MAX_QUERY_IDS_LEN, StatusChange, split_instance_ids};
use super::time;
use super::v1::{ExtendParam, ExtendParamsError, V1Request, decode_extend_params};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

/// Longest encrypted `mobilePhone`/`email` accepted: far above any real address once
/// encrypted, but a bound on what is decrypted and stored.
pub const MAX_ENCRYPTED_LEN: usize = 1024;

/// Longest `trialFlag`/`provisionType` accepted (their tables give no length).
pub const MAX_UNDOCUMENTED_LEN: usize = 64;

/// A parsed SaaS 1.0 callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub test: bool,
    pub activity: Activity,
    /// Lowercase hex SHA-256 of the `authToken`. SaaS 1.0 has no nonce, but the token is
    /// an HMAC over every parameter and the `timeStamp`, so an exact repeat (a capture
    /// replayed, or KooGallery's own retry) has the same one. The hash, not the token, is
    /// stored.
    pub repeat_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activity {
    NewInstance(Box<NewInstance>),
    RefreshInstance(Refresh),
    ExpireInstance {
        instance_id: String,
        order_id: String,
    },
    ReleaseInstance {
        instance_id: String,
        order_id: String,
        order_amount: Option<Amount>,
    },
    Upgrade(Upgrade),
    /// Pay-per-use status change; V1's `NORMAL` is an unfreeze.
    InstanceStatus {
        instance_id: String,
        status: StatusChange,
    },
    QueryInstance {
        instance_ids: Vec<String>,
    },
}

/// `newInstance` (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInstance {
    pub business_id: String,
    pub order_id: String,
    pub product_id: String,
    /// Mandatory in the table but not confirmed for SaaS 1.0: optional on input (§13 #5).
    pub sku_code: Option<String>,
    pub customer_id: String,
    /// Mandatory on the Chinese site, optional on the international one.
    pub customer_name: Option<String>,
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    /// Decrypted.
    pub mobile_phone: Option<String>,
    /// Decrypted.
    pub email: Option<String>,
    pub trial_flag: Option<String>,
    pub provision_type: Option<String>,
    pub expire_time: Option<DateTime<Utc>>,
    pub charging_mode: Option<ChargingMode>,
    pub period_type: Option<String>,
    pub period_number: Option<u32>,
    pub order_amount: Option<Amount>,
    pub extend_params: Vec<ExtendParam>,
    pub linear: Linear,
}

/// `refreshInstance` (§4.2): a renewal, a trial turned paid, or (negative `orderAmount`)
/// a cancelled renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refresh {
    pub order_id: String,
    pub instance_id: String,
    pub product_id: Option<String>,
    pub expire_time: DateTime<Utc>,
    pub trial_to_formal: bool,
    pub period_type: Option<String>,
    pub period_number: Option<u32>,
    pub order_amount: Option<Amount>,
}

/// `upgrade` (§4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub instance_id: String,
    pub order_id: String,
    pub sku_code: String,
    pub product_id: String,
    pub linear: Linear,
    pub extend_params: Vec<ExtendParam>,
}

impl Activity {
    /// The wire name, for logs and the audit record.
    pub const fn name(&self) -> &'static str {
        match self {
            Self::NewInstance(_) => "newInstance",
            Self::RefreshInstance(_) => "refreshInstance",
            Self::ExpireInstance { .. } => "expireInstance",
            Self::ReleaseInstance { .. } => "releaseInstance",
            Self::Upgrade(_) => "upgrade",
            Self::InstanceStatus { .. } => "instanceStatus",
            Self::QueryInstance { .. } => "queryInstance",
        }
    }

    /// The order the callback is about, if it names one.
    pub fn order_id(&self) -> Option<&str> {
        match self {
            Self::NewInstance(n) => Some(&n.order_id),
            Self::RefreshInstance(r) => Some(&r.order_id),
            Self::Upgrade(u) => Some(&u.order_id),
            Self::ExpireInstance { order_id, .. } | Self::ReleaseInstance { order_id, .. } => {
                Some(order_id)
            }
            Self::InstanceStatus { .. } | Self::QueryInstance { .. } => None,
        }
    }

    /// The instance the callback is about, if it names exactly one.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Self::NewInstance(_) => None,
            Self::RefreshInstance(r) => Some(&r.instance_id),
            Self::Upgrade(u) => Some(&u.instance_id),
            Self::ExpireInstance { instance_id, .. }
            | Self::ReleaseInstance { instance_id, .. }
            | Self::InstanceStatus { instance_id, .. } => Some(instance_id),
            Self::QueryInstance { instance_ids } if instance_ids.len() == 1 => {
                instance_ids.first().map(String::as_str)
            }
            Self::QueryInstance { .. } => None,
        }
    }
}

/// V1's numeric `chargingMode` (§4.1), named as 查询订单 names it (§8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargingMode {
    /// `0`, 按需.
    OnDemand,
    /// `1`, 包周期 (yearly/monthly).
    Period,
    /// `3`, 按次.
    OneTime,
    /// `5`, pay-per-use package.
    OnDemandPackage,
}

impl ChargingMode {
    /// The name koogate stores for every interface generation.
    pub const fn name(self) -> &'static str {
        match self {
            Self::OnDemand => "ON_DEMAND",
            Self::Period => "PERIOD",
            Self::OneTime => "ONE_TIME",
            Self::OnDemandPackage => "ON_DEMAND_PKG",
        }
    }

    fn parse(raw: &str) -> Result<Self, String> {
        match raw {
            "0" => Ok(Self::OnDemand),
            "1" => Ok(Self::Period),
            "3" => Ok(Self::OneTime),
            "5" => Ok(Self::OnDemandPackage),
            other => Err(format!("{other:?} is not 0, 1, 3 or 5")),
        }
    }
}

/// `orderAmount`: a BigDecimal(20) with at most 3 decimals (§4.1), kept as the exact text
/// received so no amount is ever rounded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount(String);

impl Amount {
    /// Reads `[-]digits[.1–3 digits]`; a sign only where `signed` (a cancelled renewal
    /// carries a negative amount, a purchase never does).
    fn parse(raw: &str, signed: bool) -> Result<Self, String> {
        let unsigned = match raw.strip_prefix('-') {
            Some(rest) if signed => rest,
            Some(_) => return Err(format!("{raw:?} is negative")),
            None => raw,
        };
        let (whole, decimals) = unsigned.split_once('.').unwrap_or((unsigned, "1"));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !digits(decimals) || decimals.len() > 3 {
            return Err(format!("{raw:?} is not an amount with at most 3 decimals"));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The linear pricing attributes (§4.1): quantity, GB, Mbps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Linear {
    pub amount: Option<u32>,
    pub disk_size: Option<u32>,
    pub band_width: Option<u32>,
}

impl Linear {
    /// Each attribute that was sent, with its wire name.
    pub fn present(&self) -> impl Iterator<Item = (&'static str, u32)> {
        [
            ("amount", self.amount),
            ("diskSize", self.disk_size),
            ("bandWidth", self.band_width),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.map(|v| (name, v)))
    }
}

impl Request {
    /// Parses an authenticated request. `cipher` decrypts `mobilePhone` and `email`; it is
    /// derived from the key that verified the request, with the product's key size.
    pub fn parse(request: &V1Request, cipher: &FieldCipher) -> Result<Self, FieldError> {
        let p = Params(request);
        let test = match p.optional("testFlag", 2)?.as_deref() {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => return Err(invalid("testFlag", format!("{other:?} is not 0 or 1"))),
        };
        let activity = match p.required("activity", 20)?.as_str() {
            "newInstance" => Activity::NewInstance(Box::new(NewInstance {
                business_id: p.required("businessId", 64)?,
                order_id: p.required("orderId", 64)?,
                product_id: p.required("productId", 64)?,
                sku_code: p.optional("skuCode", 64)?,
                customer_id: p.required("customerId", 100)?,
                customer_name: p.text("customerName", 64)?,
                user_id: p.optional("userId", 64)?,
                user_name: p.text("userName", 64)?,
                mobile_phone: p.encrypted("mobilePhone", cipher)?,
                email: p.encrypted("email", cipher)?,
                trial_flag: p.optional("trialFlag", MAX_UNDOCUMENTED_LEN)?,
                provision_type: p.optional("provisionType", MAX_UNDOCUMENTED_LEN)?,
                expire_time: p.parsed("expireTime", 20, expire_time)?,
                charging_mode: p.parsed("chargingMode", 3, ChargingMode::parse)?,
                period_type: p.optional("periodType", 10)?,
                period_number: p.parsed("periodNumber", 2, number)?,
                order_amount: p.parsed("orderAmount", 20, |raw| Amount::parse(raw, false))?,
                extend_params: p.extend_params()?,
                linear: p.linear()?,
            })),
            "refreshInstance" => Activity::RefreshInstance(Refresh {
                order_id: p.required("orderId", 64)?,
                instance_id: p.required("instanceId", 64)?,
                product_id: p.optional("productId", 64)?,
                expire_time: p
                    .parsed("expireTime", 20, expire_time)?
                    .ok_or(FieldError::Missing("expireTime"))?,
                trial_to_formal: p.parsed("trialToFormal", 2, flag)?.unwrap_or(false),
                period_type: p.optional("periodType", 10)?,
                period_number: p.parsed("periodNumber", 2, number)?,
                order_amount: p.parsed("orderAmount", 20, |raw| Amount::parse(raw, true))?,
            }),
            "expireInstance" => Activity::ExpireInstance {
                instance_id: p.required("instanceId", 64)?,
                order_id: p.required("orderId", 64)?,
            },
            "releaseInstance" => Activity::ReleaseInstance {
                instance_id: p.required("instanceId", 64)?,
                order_id: p.required("orderId", 64)?,
                order_amount: p.parsed("orderAmount", 20, |raw| Amount::parse(raw, true))?,
            },
            "upgrade" => Activity::Upgrade(Upgrade {
                instance_id: p.required("instanceId", 64)?,
                order_id: p.required("orderId", 64)?,
                sku_code: p.required("skuCode", 64)?,
                product_id: p.required("productId", 64)?,
                linear: p.linear()?,
                extend_params: p.extend_params()?,
            }),
            "instanceStatus" => Activity::InstanceStatus {
                instance_id: p.required("instanceId", 64)?,
                status: match p.required("instanceStatus", 32)?.as_str() {
                    "FREEZE" => StatusChange::Freeze,
                    "NORMAL" => StatusChange::Unfreeze,
                    other => {
                        return Err(invalid(
                            "instanceStatus",
                            format!("{other:?} is not FREEZE or NORMAL"),
                        ));
                    }
                },
            },
            "queryInstance" => Activity::QueryInstance {
                instance_ids: split_instance_ids(&p.required("instanceId", MAX_QUERY_IDS_LEN)?)?,
            },
            other => return Err(FieldError::UnknownActivity(other.to_owned())),
        };
        let repeat_key = request
            .auth_token()
            .map(|token| hex::encode(Sha256::digest(token.as_bytes())));
        Ok(Self {
            test,
            activity,
            repeat_key,
        })
    }
}

fn invalid(field: &'static str, reason: String) -> FieldError {
    FieldError::Invalid { field, reason }
}

fn expire_time(raw: &str) -> Result<DateTime<Utc>, String> {
    time::parse_compact(raw).ok_or_else(|| format!("{raw:?} is not yyyyMMddHHmmss"))
}

/// A non-negative integer of at most the field's digits (the length limit is checked first).
fn number(raw: &str) -> Result<u32, String> {
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{raw:?} is not a whole number"));
    }
    raw.parse()
        .map_err(|_| format!("{raw:?} is not a whole number"))
}

fn flag(raw: &str) -> Result<bool, String> {
    match raw {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(format!("{other:?} is not 0 or 1")),
    }
}

/// The parameters of one request, read with the limits of the spec tables.
struct Params<'a>(&'a V1Request);

impl Params<'_> {
    /// An optional value of at most `max` characters; absent and blank are `None` (the GET
    /// form keeps empty parameters, which carry nothing).
    /// Every field read this way is an id or an enum word, so control characters are
    /// refused (see [`refuse_control`]); names are read with [`Params::text`].
    fn optional(&self, field: &'static str, max: usize) -> Result<Option<String>, FieldError> {
        let text = self.text(field, max)?;
        if let Some(text) = &text {
            refuse_control(field, text)?;
        }
        Ok(text)
    }

    /// Free text of at most `max` characters, kept as sent but storable.
    fn text(&self, field: &'static str, max: usize) -> Result<Option<String>, FieldError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(value) if value.trim().is_empty() => Ok(None),
            Some(value) if value.chars().count() > max => Err(FieldError::TooLong { field, max }),
            Some(value) => Ok(Some(storable_text(value.to_owned()))),
        }
    }

    fn required(&self, field: &'static str, max: usize) -> Result<String, FieldError> {
        self.optional(field, max)?.ok_or(FieldError::Missing(field))
    }

    fn parsed<T>(
        &self,
        field: &'static str,
        max: usize,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, FieldError> {
        self.optional(field, max)?
            .map(|raw| parse(&raw).map_err(|reason| invalid(field, reason)))
            .transpose()
    }

    fn encrypted(
        &self,
        field: &'static str,
        cipher: &FieldCipher,
    ) -> Result<Option<String>, FieldError> {
        self.parsed(field, MAX_ENCRYPTED_LEN, |raw| {
            cipher
                .decrypt(raw)
                .map(storable_text)
                .map_err(|e| format!("cannot be decrypted: {e}"))
        })
    }

    fn extend_params(&self) -> Result<Vec<ExtendParam>, FieldError> {
        let parsed = self.parsed("saasExtendParams", 2048, |raw| {
            decode_extend_params(raw).map_err(|e| match e {
                ExtendParamsError::NotBase64(e) => format!("not Base64 ({e})"),
                ExtendParamsError::NotJsonArray => "not a Base64-encoded JSON array".into(),
                ExtendParamsError::BadItem { index } => {
                    format!("item {index} is not an object with string fields name and value")
                }
            })
        })?;
        Ok(parsed.unwrap_or_default())
    }

    fn linear(&self) -> Result<Linear, FieldError> {
        Ok(Linear {
            amount: self.parsed("amount", 7, number)?,
            disk_size: self.parsed("diskSize", 7, number)?,
            band_width: self.parsed("bandWidth", 7, number)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::crypto::KeySize;
    use crate::protocol::v1::encode_extend_params;

    const KEY: &str = "test-access-key-0001";

    fn cipher() -> FieldCipher {
        FieldCipher::new(KEY, KeySize::Aes256)
    }

    fn parse(query: &str) -> Result<Request, FieldError> {
        Request::parse(&V1Request::from_query(query), &cipher())
    }

    const NEW: &str = "activity=newInstance&businessId=b1&orderId=o1&productId=p1\
        &customerId=c1&timeStamp=20200727073711903";

    #[test]
    fn new_instance_reads_the_full_parameter_list() {
        let ext = encode_extend_params(&[ExtendParam {
            name: "idNum".into(),
            value: "352255555555656".into(),
        }]);
        let email = cipher().encrypt("buyer@example.com");
        let email: String = form_urlencoded::byte_serialize(email.as_bytes()).collect();
        let query = format!(
            "{NEW}&skuCode=s1&customerName=Zhang+San&userId=u1&userName=iam-user\
             &email={email}&trialFlag=1&provisionType=1&expireTime=20300101000000\
             &chargingMode=1&periodType=month&periodNumber=3&orderAmount=12.500\
             &saasExtendParams={ext}&amount=10&diskSize=&bandWidth=100&testFlag=1"
        );

        let r = parse(&query).unwrap();

        assert!(r.test);
        let Activity::NewInstance(n) = r.activity else {
            panic!("{:?}", r.activity)
        };
        assert_eq!(
            (
                n.business_id.as_str(),
                n.order_id.as_str(),
                n.product_id.as_str()
            ),
            ("b1", "o1", "p1")
        );
        assert_eq!(n.customer_name.as_deref(), Some("Zhang San"));
        assert_eq!(n.email.as_deref(), Some("buyer@example.com"));
        assert_eq!(n.mobile_phone, None);
        assert_eq!(n.charging_mode, Some(ChargingMode::Period));
        assert_eq!(n.period_number, Some(3));
        assert_eq!(n.order_amount.as_ref().map(Amount::as_str), Some("12.500"));
        assert_eq!(n.expire_time.unwrap().timestamp(), 1_893_456_000);
        assert_eq!(n.extend_params[0].value, "352255555555656");
        assert_eq!(
            n.linear.present().collect::<Vec<_>>(),
            [("amount", 10), ("bandWidth", 100)],
            "an empty diskSize is absent"
        );
    }

    #[test]
    fn charging_modes_map_to_the_order_names() {
        for (code, name) in [
            ("0", "ON_DEMAND"),
            ("1", "PERIOD"),
            ("3", "ONE_TIME"),
            ("5", "ON_DEMAND_PKG"),
        ] {
            assert_eq!(ChargingMode::parse(code).unwrap().name(), name);
        }
    }

    #[test]
    fn amounts_keep_their_text_and_refresh_may_be_negative() {
        let refresh = "activity=refreshInstance&orderId=r1&instanceId=i1\
            &expireTime=20300101000000&orderAmount=-30.25&trialToFormal=1";
        let Activity::RefreshInstance(r) = parse(refresh).unwrap().activity else {
            panic!()
        };
        assert_eq!(r.order_amount.unwrap().as_str(), "-30.25");
        assert!(r.trial_to_formal);
        assert!(Amount::parse("0", false).is_ok());
        assert!(Amount::parse("-0.5", false).is_err());
    }

    #[test]
    fn the_other_activities_parse() {
        let cases = [
            (
                "activity=expireInstance&instanceId=i&orderId=o",
                "expireInstance",
            ),
            (
                "activity=releaseInstance&instanceId=i&orderId=o&orderAmount=1",
                "releaseInstance",
            ),
            (
                "activity=upgrade&instanceId=i&orderId=o&skuCode=s&productId=p&amount=5",
                "upgrade",
            ),
            (
                "activity=instanceStatus&instanceId=i&instanceStatus=NORMAL",
                "instanceStatus",
            ),
            ("activity=queryInstance&instanceId=a,b", "queryInstance"),
        ];
        for (query, name) in cases {
            let r = parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
            assert_eq!(r.activity.name(), name);
        }
        let Activity::InstanceStatus { status, .. } =
            parse("activity=instanceStatus&instanceId=i&instanceStatus=NORMAL")
                .unwrap()
                .activity
        else {
            panic!()
        };
        assert_eq!(status, StatusChange::Unfreeze);
    }

    #[test]
    fn bad_parameters_are_named() {
        let long = "x".repeat(65);
        let garbage = "0123456789abcdefAAAAAAAAAAAAAAAAAAAAAA%3D%3D";
        let not_json = form_urlencoded::byte_serialize(b"bm90IGpzb24=").collect::<String>();
        let cases = [
            ("activity=launch".to_string(), "unknown activity \"launch\""),
            ("orderId=o".into(), "activity is missing"),
            (NEW.replace("&customerId=c1", ""), "customerId is missing"),
            (NEW.replace("&customerId=c1", "&customerId="), "customerId is missing"),
            (NEW.replace("orderId=o1", &format!("orderId={long}")), "orderId is longer than 64 characters"),
            (format!("{NEW}&chargingMode=2"), "chargingMode has an invalid value: \"2\" is not 0, 1, 3 or 5"),
            (format!("{NEW}&chargingMode=x"), "chargingMode has an invalid value"),
            (format!("{NEW}&periodNumber=1a"), "periodNumber has an invalid value: \"1a\" is not a whole number"),
            (format!("{NEW}&periodNumber=100"), "periodNumber is longer than 2 characters"),
            (format!("{NEW}&amount=-1"), "amount has an invalid value"),
            (format!("{NEW}&orderAmount=1.2345"), "orderAmount has an invalid value"),
            (format!("{NEW}&orderAmount=-1"), "orderAmount has an invalid value: \"-1\" is negative"),
            (format!("{NEW}&expireTime=2030-01-01"), "expireTime has an invalid value"),
            (format!("{NEW}&testFlag=2"), "testFlag has an invalid value"),
            (format!("{NEW}&saasExtendParams=%25%25%25"), "saasExtendParams has an invalid value: not Base64"),
            (format!("{NEW}&saasExtendParams={not_json}"), "saasExtendParams has an invalid value: not a Base64-encoded JSON array"),
            (format!("{NEW}&saasExtendParams=W3sibmFtZSI6MX1d"), "saasExtendParams has an invalid value: item 0"),
            (format!("{NEW}&email={garbage}"), "email has an invalid value: cannot be decrypted"),
            (format!("{NEW}&mobilePhone=13800000000"), "mobilePhone has an invalid value: cannot be decrypted"),
            ("activity=refreshInstance&orderId=o&instanceId=i".into(), "expireTime is missing"),
            ("activity=refreshInstance&orderId=o&instanceId=i&expireTime=20300101000000&trialToFormal=2".into(), "trialToFormal has an invalid value"),
            ("activity=instanceStatus&instanceId=i&instanceStatus=STOP".into(), "instanceStatus has an invalid value"),
            ("activity=upgrade&instanceId=i&orderId=o&productId=p".into(), "skuCode is missing"),
            ("activity=queryInstance&instanceId=,,".into(), "instanceId is missing"),
        ];
        for (query, expected) in cases {
            let err = parse(&query).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{query}: {err}");
        }
    }

    #[test]
    fn a_field_encrypted_with_another_key_size_is_refused() {
        // Spec §12 vector 6: `admin` under AES-128; the product is configured for AES-256.
        let aes128 = "0123456789abcdefra/iiZNZNzZnfC8LS9YD3Q==";
        let encoded: String = form_urlencoded::byte_serialize(aes128.as_bytes()).collect();
        let err = parse(&format!("{NEW}&mobilePhone={encoded}")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("mobilePhone has an invalid value"),
            "{err}"
        );
    }
}
