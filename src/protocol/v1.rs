//! SaaS 1.0 request authentication (spec §2.1, §4): the `authToken` over the sorted parameters of the GET
//! query or the POST body, the `timeStamp` window (D3), and the `saasExtendParams` encoding (§4.1).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::Mac;
use serde_json::Value;
use serde_json::value::RawValue;
use subtle::ConstantTimeEq;

use super::codes::ResultCode;
use super::crypto::hmac_sha256;

/// The query parameter (GET form) or HTTP header (POST-body form) that carries the token.
pub const AUTH_TOKEN: &str = "authToken";
const TIME_STAMP: &str = "timeStamp";

/// Why a V1 request failed authentication, or its POST body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum V1Error {
    /// No `authToken` query parameter (GET) or header (POST body), or an empty one.
    #[error("authToken is missing")]
    MissingAuthToken,
    /// No `timeStamp` parameter, or a blank one in a POST body.
    #[error("timeStamp is missing")]
    MissingTimeStamp,
    /// `timeStamp` is not 17 digits forming a valid `yyyyMMddHHmmssSSS` time.
    #[error("timeStamp is not a UTC time of the form yyyyMMddHHmmssSSS")]
    MalformedTimeStamp,
    /// `timeStamp` is further from server time than the configured window.
    #[error(
        "timeStamp is {skew} s away from server time (negative: ahead of it), outside the ±{window_secs} s window",
        skew = *.skew_ms as f64 / 1000.0
    )]
    StaleTimeStamp {
        /// Server time minus `timeStamp`, in milliseconds.
        skew_ms: i64,
        /// The window that was applied, in seconds.
        window_secs: u64,
    },
    /// The token matches none of the configured accessKeys.
    #[error("authToken does not match the parameters under any configured accessKey")]
    BadToken,
    /// The POST body is not a JSON object.
    #[error("the request body is not a JSON object: {0}")]
    BadBody(String),
    /// A POST-body field holds an array or an object, which has no defined place in the signed string.
    #[error(
        "body field {0:?} is an array or an object; only strings, numbers and booleans can be signed"
    )]
    UnsupportedValue(String),
}

impl V1Error {
    /// The result code KooGallery gets for this problem (D5): a body that cannot be read is an invalid
    /// request, `000002`; everything else is an authentication failure, `000001`.
    pub fn result_code(&self) -> ResultCode {
        match self {
            Self::BadBody(_) | Self::UnsupportedValue(_) => ResultCode::InvalidParam,
            _ => ResultCode::AuthFailed,
        }
    }
}

/// The decoded parameters of one V1 request together with the `authToken` it carries.
///
/// Invariants: the parameters never include `authToken`; each name has one value (the first one received,
/// as a Java servlet's `getParameter` returns); names iterate in byte order, which is the order of the signed
/// string (§2.1 step 2: Java `TreeMap` order, identical for the ASCII names KooGallery uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Request {
    params: BTreeMap<String, String>,
    auth_token: Option<String>,
}

impl V1Request {
    /// Reads the GET form from its raw query string (still percent-encoded, without `?`).
    ///
    /// Names and values are decoded as `application/x-www-form-urlencoded`, like the official demo's servlet
    /// (§2.1 step 1): `+` is a space and `%XX` a UTF-8 byte. Empty values are kept, as the demo keeps them.
    pub fn from_query(raw_query: &str) -> Self {
        let mut params = BTreeMap::new();
        let mut auth_token = None;
        for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
            if name == AUTH_TOKEN {
                auth_token.get_or_insert(value.into_owned());
            } else {
                params
                    .entry(name.into_owned())
                    .or_insert_with(|| value.into_owned());
            }
        }
        Self::new(params, auth_token)
    }

    /// Reads the POST-body form (§2.1 notes): the parameters are the fields of the JSON object `body`, and
    /// `auth_token` is the value of the `authToken` HTTP header.
    ///
    /// Blank values (null, empty or whitespace-only, as Java's `StringUtils.isBlank`) are skipped. A number
    /// or boolean takes part in its JSON text form exactly as received (`1`, `1.50`, `true`): KooGallery
    /// signs the text it sent, and re-formatting a parsed number would turn `1.50` into `1.5`. A body field
    /// named `authToken` is ignored: the token comes from the header.
    pub fn from_json_body(body: &[u8], auth_token: Option<&str>) -> Result<Self, V1Error> {
        let fields: BTreeMap<String, &RawValue> = match serde_json::from_slice(body) {
            Ok(fields) => fields,
            Err(_) if serde_json::from_slice::<&RawValue>(body).is_ok() => {
                return Err(V1Error::BadBody("it is valid JSON of another type".into()));
            }
            Err(e) => return Err(V1Error::BadBody(e.to_string())),
        };
        let mut params = BTreeMap::new();
        for (name, value) in fields {
            let raw = value.get();
            let text = match raw.as_bytes().first() {
                Some(b'"') => serde_json::from_str::<String>(raw)
                    .map_err(|e| V1Error::BadBody(e.to_string()))?,
                Some(b'n') => continue,
                Some(b'[' | b'{') => return Err(V1Error::UnsupportedValue(name)),
                // A number, `true` or `false`: its text as sent.
                _ => raw.to_owned(),
            };
            if name != AUTH_TOKEN && !text.trim().is_empty() {
                params.insert(name, text);
            }
        }
        Ok(Self::new(params, auth_token.map(str::to_owned)))
    }

    fn new(params: BTreeMap<String, String>, auth_token: Option<String>) -> Self {
        let auth_token = auth_token.filter(|token| !token.is_empty());
        Self { params, auth_token }
    }

    /// The received `authToken`, if any.
    pub fn auth_token(&self) -> Option<&str> {
        self.auth_token.as_deref()
    }

    /// The decoded value of parameter `name` (never `authToken`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The `authToken` this request should carry under `access_key`: standard padded Base64 of
    /// HMAC-SHA256 keyed with `accessKey + timeStamp` over the sorted `name=value&…` string (§2.1 step 4).
    pub fn sign(&self, access_key: &str) -> Result<String, V1Error> {
        let time_stamp = self.get(TIME_STAMP).ok_or(V1Error::MissingTimeStamp)?;
        Ok(token(access_key, time_stamp, &self.string_to_sign()))
    }

    /// Checks the received `authToken` against each key in turn (several during a key rotation) and
    /// returns the index of the first key that matches. Each comparison is constant-time.
    pub fn verify_token<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<usize, V1Error> {
        let received = self
            .auth_token
            .as_deref()
            .ok_or(V1Error::MissingAuthToken)?;
        let time_stamp = self.get(TIME_STAMP).ok_or(V1Error::MissingTimeStamp)?;
        let message = self.string_to_sign();
        keys.into_iter()
            .position(|key| {
                let expected = token(key, time_stamp, &message);
                bool::from(expected.as_bytes().ct_eq(received.as_bytes()))
            })
            .ok_or(V1Error::BadToken)
    }

    /// Checks that `timeStamp` (`yyyyMMddHHmmssSSS`, UTC) is at most `window_secs` from `now`, either way
    /// (D3). A window of 0 disables the check entirely, format included, so that replayed dial-test cases
    /// (§9) can always be let through.
    pub fn check_time_stamp(&self, now: DateTime<Utc>, window_secs: u64) -> Result<(), V1Error> {
        if window_secs == 0 {
            return Ok(());
        }
        let raw = self.get(TIME_STAMP).ok_or(V1Error::MissingTimeStamp)?;
        let sent = parse_time_stamp(raw)?;
        let skew_ms = (now - sent).num_milliseconds();
        if skew_ms.unsigned_abs() > window_secs.saturating_mul(1000) {
            return Err(V1Error::StaleTimeStamp {
                skew_ms,
                window_secs,
            });
        }
        Ok(())
    }

    /// Authenticates the request: the token under one of `keys` (whose index is returned), then the
    /// `timeStamp` window. The token goes first so that a wrong key is reported as such even on an old
    /// request.
    pub fn verify<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        now: DateTime<Utc>,
        window_secs: u64,
    ) -> Result<usize, V1Error> {
        let key_index = self.verify_token(keys)?;
        self.check_time_stamp(now, window_secs)?;
        Ok(key_index)
    }

    /// `name=value` pairs joined with `&`, in name order, no leading `&` (§2.1 step 3).
    fn string_to_sign(&self) -> String {
        let pairs: Vec<String> = self
            .params
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        pairs.join("&")
    }
}

fn token(access_key: &str, time_stamp: &str, message: &str) -> String {
    let mut mac = hmac_sha256(format!("{access_key}{time_stamp}").as_bytes());
    mac.update(message.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

fn parse_time_stamp(raw: &str) -> Result<DateTime<Utc>, V1Error> {
    // The digit check keeps chrono from accepting signs or variable-width fields.
    if raw.len() != 17 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(V1Error::MalformedTimeStamp);
    }
    NaiveDateTime::parse_from_str(raw, "%Y%m%d%H%M%S%3f")
        .map(|time| time.and_utc())
        .map_err(|_| V1Error::MalformedTimeStamp)
}

/// One `{name, value}` item of `saasExtendParams` (§4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendParam {
    /// Parameter name, e.g. `identificationCode`.
    pub name: String,
    /// Parameter value.
    pub value: String,
}

/// Why `saasExtendParams` could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtendParamsError {
    /// The value is not standard, padded Base64.
    #[error("saasExtendParams is not Base64: {0}")]
    NotBase64(base64::DecodeError),
    /// The decoded bytes are not a JSON array.
    #[error("saasExtendParams does not decode to a JSON array")]
    NotJsonArray,
    /// An array item is not an object with string `name` and `value`.
    #[error("saasExtendParams item {index} is not an object with string fields name and value")]
    BadItem {
        /// Zero-based position of the item in the array.
        index: usize,
    },
}

/// Decodes `saasExtendParams` as the request parameter holds it once the query has been URL-decoded (as
/// [`V1Request::get`] returns it): Base64, then a JSON array of `{name, value}` (§4.1).
pub fn decode_extend_params(value: &str) -> Result<Vec<ExtendParam>, ExtendParamsError> {
    let json = STANDARD
        .decode(value)
        .map_err(ExtendParamsError::NotBase64)?;
    let Ok(Value::Array(items)) = serde_json::from_slice(&json) else {
        return Err(ExtendParamsError::NotJsonArray);
    };
    items
        .iter()
        .enumerate()
        .map(
            |(index, item)| match (item["name"].as_str(), item["value"].as_str()) {
                (Some(name), Some(value)) => Ok(ExtendParam {
                    name: name.to_owned(),
                    value: value.to_owned(),
                }),
                _ => Err(ExtendParamsError::BadItem { index }),
            },
        )
        .collect()
}

/// Encodes `params` as KooGallery puts `saasExtendParams` into the query: `urlEncode(base64(json))` of the
/// compact array (§4.1, §12 vector 7). The result goes into a query string as it is, without further
/// encoding.
pub fn encode_extend_params(params: &[ExtendParam]) -> String {
    let items: Vec<Value> = params
        .iter()
        .map(|p| serde_json::json!({ "name": p.name, "value": p.value }))
        .collect();
    let base64 = STANDARD.encode(Value::Array(items).to_string());
    form_urlencoded::byte_serialize(base64.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    const KEY: &str = "test-access-key-0001";
    const TS: &str = "20200727073711903";

    /// §12 vector 1, in a scrambled order, with the token percent-encoded as KooGallery sends it.
    const VECTOR_1_QUERY: &str = "timeStamp=20200727073711903&orderId=CS1906666666ABCDE\
        &authToken=rjND%2BEtzdPJCNyqrLt%2FLHR3JrNBZA%2FGGJbgOmLk2tqE%3D&activity=newInstance\
        &testFlag=1&customerId=68cbc86abc2018ab880d92f36422fa0e&productId=00301-666666-0--0\
        &expireTime=20200727153156&businessId=61e834ba-7b97-4418-b8f7-e5345137278c";
    const VECTOR_1_SIGNED: &str = "activity=newInstance&businessId=61e834ba-7b97-4418-b8f7-e5345137278c\
        &customerId=68cbc86abc2018ab880d92f36422fa0e&expireTime=20200727153156&orderId=CS1906666666ABCDE\
        &productId=00301-666666-0--0&testFlag=1&timeStamp=20200727073711903";
    const VECTOR_1_TOKEN: &str = "rjND+EtzdPJCNyqrLt/LHR3JrNBZA/GGJbgOmLk2tqE=";

    fn at(raw: &str) -> DateTime<Utc> {
        parse_time_stamp(raw).expect("test time stamp is well formed")
    }

    #[test]
    fn get_query_matches_spec_vector_1() {
        let request = V1Request::from_query(VECTOR_1_QUERY);
        assert_eq!(request.string_to_sign(), VECTOR_1_SIGNED);
        assert_eq!(request.sign(KEY).as_deref(), Ok(VECTOR_1_TOKEN));
        assert_eq!(request.verify_token([KEY]), Ok(0));
        assert_eq!(request.verify([KEY], at(TS), 600), Ok(0));
    }

    #[test]
    fn post_body_skips_blank_values_and_uses_numbers_as_json_text() {
        let body = br#"{"timeStamp":"20200727073711903","activity":"newInstance","customerName":"",
            "userId":"   ","email":null,"periodNumber":1,"orderAmount":0.5,"testFlag":"1",
            "orderId":"CS1906666666ABCDE","authToken":"not the token"}"#;
        // Computed offline: Python hmac/hashlib over the string below, key KEY + TS.
        let token = "p07Oasov5Ix+SJFNhlT3jJjnjVBS8qXQIQ9RC0prOc8=";

        let request = V1Request::from_json_body(body, Some(token)).expect("body is an object");

        assert_eq!(
            request.string_to_sign(),
            "activity=newInstance&orderAmount=0.5&orderId=CS1906666666ABCDE&periodNumber=1\
             &testFlag=1&timeStamp=20200727073711903"
        );
        assert_eq!(request.sign(KEY).as_deref(), Ok(token));
        assert_eq!(request.verify([KEY], at(TS), 600), Ok(0));
    }

    #[test]
    fn query_values_are_decoded_like_a_java_servlet() {
        let query = "activity=newInstance&customerName=Zhang+San&userName=Li%20Si\
            &memo=%E5%BC%A0%E4%B8%89&email=a%2Bb%40x.com&testFlag=1&timeStamp=20200727073711903";
        // Computed offline: Python hmac/hashlib over the UTF-8 string below, key KEY + TS.
        let token = "Fh3AoRKlv6Qq5N7thI5TNefu99Bk2jMsg3FK0hR+n9w=";

        let request = V1Request::from_query(query);

        assert_eq!(request.get("customerName"), Some("Zhang San"));
        assert_eq!(request.get("userName"), Some("Li Si"));
        assert_eq!(request.get("memo"), Some("张三"));
        assert_eq!(request.get("email"), Some("a+b@x.com"));
        assert_eq!(
            request.string_to_sign(),
            "activity=newInstance&customerName=Zhang San&email=a+b@x.com&memo=张三&testFlag=1\
             &timeStamp=20200727073711903&userName=Li Si"
        );
        assert_eq!(request.sign(KEY).as_deref(), Ok(token));
    }

    #[test]
    fn repeated_names_keep_their_first_value_and_empty_values_are_kept() {
        let request = V1Request::from_query(
            "b=first&a=&b=second&flag&authToken=one&authToken=two&timeStamp=1",
        );
        assert_eq!(request.get("b"), Some("first"));
        assert_eq!(request.auth_token.as_deref(), Some("one"));
        assert_eq!(request.get(AUTH_TOKEN), None);
        assert_eq!(request.string_to_sign(), "a=&b=first&flag=&timeStamp=1");
    }

    #[test]
    fn key_rotation_reports_which_key_matched() {
        let request = V1Request::from_query(VECTOR_1_QUERY);
        assert_eq!(request.verify_token(["old-key", KEY]), Ok(1));
        assert_eq!(request.verify_token([KEY, "new-key"]), Ok(0));
        assert_eq!(
            request.verify_token(["old-key", "new-key"]),
            Err(V1Error::BadToken)
        );
        assert_eq!(request.verify_token([]), Err(V1Error::BadToken));
    }

    #[test]
    fn authentication_failures_name_the_problem() {
        let without = |name: &str| {
            let kept: Vec<&str> = VECTOR_1_QUERY
                .split('&')
                .filter(|pair| !pair.starts_with(&format!("{name}=")))
                .collect();
            kept.join("&")
        };
        let cases = [
            (
                without(AUTH_TOKEN),
                V1Error::MissingAuthToken,
                "no authToken",
            ),
            (
                VECTOR_1_QUERY.replace("authToken=rjND", "authToken=&x=rjND"),
                V1Error::MissingAuthToken,
                "empty authToken",
            ),
            (
                without(TIME_STAMP),
                V1Error::MissingTimeStamp,
                "no timeStamp",
            ),
            (
                VECTOR_1_QUERY.replace("testFlag=1", "testFlag=0"),
                V1Error::BadToken,
                "tampered parameter",
            ),
            (
                VECTOR_1_QUERY.replace("%2BEtz", "%2Betz"),
                V1Error::BadToken,
                "tampered token",
            ),
            (
                format!("{VECTOR_1_QUERY}&extra="),
                V1Error::BadToken,
                "added parameter",
            ),
        ];
        for (query, expected, why) in cases {
            let request = V1Request::from_query(&query);
            assert_eq!(request.verify([KEY], at(TS), 600), Err(expected), "{why}");
        }
    }

    #[test]
    fn time_stamp_window_edges() {
        let request = V1Request::from_query(VECTOR_1_QUERY);
        let sent = at(TS);
        let window = TimeDelta::seconds(600);
        let ms = TimeDelta::milliseconds(1);
        let cases = [
            (sent, Ok(())),
            (sent + window, Ok(())),
            (sent - window, Ok(())),
            (
                sent + window + ms,
                Err(V1Error::StaleTimeStamp {
                    skew_ms: 600_001,
                    window_secs: 600,
                }),
            ),
            (
                sent - window - ms,
                Err(V1Error::StaleTimeStamp {
                    skew_ms: -600_001,
                    window_secs: 600,
                }),
            ),
        ];
        for (now, expected) in cases {
            assert_eq!(request.check_time_stamp(now, 600), expected, "now = {now}");
        }
        let years_later = sent + TimeDelta::days(3650);
        assert_eq!(
            request.check_time_stamp(years_later, 0),
            Ok(()),
            "0 disables the check"
        );
    }

    #[test]
    fn stale_message_says_how_far_off_and_which_way() {
        let error = V1Error::StaleTimeStamp {
            skew_ms: -600_001,
            window_secs: 600,
        };
        assert_eq!(
            error.to_string(),
            "timeStamp is -600.001 s away from server time (negative: ahead of it), outside the ±600 s window"
        );
    }

    #[test]
    fn malformed_time_stamps_are_refused() {
        let now = at(TS);
        for raw in [
            "2020072707371190",
            "202007270737119030",
            "2020072707371190x",
            "+2020072707371190",
            "20201327073711903",
            "20200230073711903",
            "20200727247711903",
            "2020-07-27T07:37:11",
        ] {
            let request = V1Request::from_query(&format!("timeStamp={raw}"));
            assert_eq!(
                request.check_time_stamp(now, 600),
                Err(V1Error::MalformedTimeStamp),
                "{raw}"
            );
        }
        let request = V1Request::from_query("activity=x");
        assert_eq!(
            request.check_time_stamp(now, 600),
            Err(V1Error::MissingTimeStamp)
        );
    }

    #[test]
    fn post_bodies_that_cannot_be_signed_are_refused() {
        for body in [&b""[..], b"{\"a\":", b"[{\"a\":\"b\"}]", b"\"text\""] {
            let result = V1Request::from_json_body(body, Some("t"));
            assert!(
                matches!(result, Err(V1Error::BadBody(_))),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            V1Request::from_json_body(br#"{"appInfo":{"a":"b"}}"#, Some("t")),
            Err(V1Error::UnsupportedValue("appInfo".into()))
        );
    }

    #[test]
    fn post_body_numbers_are_signed_as_sent_not_as_reformatted() {
        let body = br#"{"timeStamp":"20200727073711903","orderAmount":1.50,"amount":1e3,"big":12345678901234567890123,"flag":true,"s":"say \"hi\""}"#;
        let request = V1Request::from_json_body(body, Some("t")).expect("body is an object");
        assert_eq!(
            request.string_to_sign(),
            "amount=1e3&big=12345678901234567890123&flag=true&orderAmount=1.50&s=say \"hi\"\
             &timeStamp=20200727073711903"
        );
    }

    #[test]
    fn only_unreadable_bodies_are_invalid_parameters() {
        assert_eq!(
            V1Error::BadBody("x".into()).result_code(),
            ResultCode::InvalidParam
        );
        assert_eq!(
            V1Error::UnsupportedValue("x".into()).result_code(),
            ResultCode::InvalidParam
        );
        for problem in [
            V1Error::MissingAuthToken,
            V1Error::MissingTimeStamp,
            V1Error::MalformedTimeStamp,
            V1Error::BadToken,
            V1Error::StaleTimeStamp {
                skew_ms: 1,
                window_secs: 1,
            },
        ] {
            assert_eq!(problem.result_code(), ResultCode::AuthFailed, "{problem}");
        }
    }

    fn vector_7_params() -> Vec<ExtendParam> {
        [
            ("idNum", "352255555555656"),
            ("userName", "huawei123"),
            ("custEmail", "123@huawei.com"),
        ]
        .into_iter()
        .map(|(name, value)| ExtendParam {
            name: name.into(),
            value: value.into(),
        })
        .collect()
    }

    const VECTOR_7: &str = "W3sibmFtZSI6ImlkTnVtIiwidmFsdWUiOiIzNTIyNTU1NTU1NTU2NTYifSx7Im5hbWUiOiJ1c2VyTmFtZSIsInZhbHVlIjoiaHVhd2VpMTIzIn0seyJuYW1lIjoiY3VzdEVtYWlsIiwidmFsdWUiOiIxMjNAaHVhd2VpLmNvbSJ9XQ%3D%3D";

    #[test]
    fn extend_params_encode_to_spec_vector_7() {
        assert_eq!(encode_extend_params(&vector_7_params()), VECTOR_7);
    }

    #[test]
    fn extend_params_decode_from_spec_vector_7_in_a_query() {
        let request =
            V1Request::from_query(&format!("activity=upgrade&saasExtendParams={VECTOR_7}"));
        let value = request
            .get("saasExtendParams")
            .expect("parameter is present");
        assert_eq!(decode_extend_params(value), Ok(vector_7_params()));
    }

    #[test]
    fn malformed_extend_params_name_the_problem() {
        // VECTOR_7 itself is still URL-encoded: `%` is no Base64 character.
        for value in ["not base64!", VECTOR_7] {
            let result = decode_extend_params(value);
            assert!(
                matches!(result, Err(ExtendParamsError::NotBase64(_))),
                "{value:?} gave {result:?}"
            );
        }
        let cases = [
            ("not json", ExtendParamsError::NotJsonArray),
            (
                r#"{"name":"a","value":"b"}"#,
                ExtendParamsError::NotJsonArray,
            ),
            (r#"[{"name":"a"}]"#, ExtendParamsError::BadItem { index: 0 }),
            (
                r#"[{"name":"a","value":"b"},{"name":"c","value":1}]"#,
                ExtendParamsError::BadItem { index: 1 },
            ),
            (
                r#"[{"name":"a","value":"b"},"c"]"#,
                ExtendParamsError::BadItem { index: 1 },
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(
                decode_extend_params(&STANDARD.encode(json)),
                Err(expected),
                "{json}"
            );
        }
        assert_eq!(decode_extend_params(&STANDARD.encode("[]")), Ok(vec![]));
    }
}
