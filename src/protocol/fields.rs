//! Reading request fields with the limits of the spec tables. Every failure names the
//! field, because the message goes back to KooGallery as `resultMsg` (`000002`).

use super::ids::Id;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// A request that does not match its field table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("body is not a JSON object: {0}")]
    NotJson(String),
    #[error("{0} is missing")]
    Missing(&'static str),
    #[error("{0} must be a string")]
    NotString(&'static str),
    #[error("{field} is longer than {max} characters")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} has an invalid value: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unknown activity {0:?}")]
    UnknownActivity(String),
    #[error("{0} appears more than once")]
    Repeated(String),
}

/// Refuses a control character (NUL included) in an id or an enum word: no KooGallery id
/// holds one, PostgreSQL cannot store NUL in text, and ids joined by a newline into one
/// idempotency key stay distinct only because none contains one.
pub fn refuse_control(field: &'static str, text: &str) -> Result<(), FieldError> {
    match text.chars().find(|c| c.is_control()) {
        None => Ok(()),
        Some(c) => Err(FieldError::Invalid {
            field,
            reason: format!("contains the control character U+{:04X}", u32::from(c)),
        }),
    }
}

/// Free text (a name) as it can be stored anywhere: NUL, which PostgreSQL refuses in
/// text, becomes U+FFFD; everything else is kept.
pub fn storable_text(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// The fields of one JSON request body, each as its received JSON text.
pub struct Fields(BTreeMap<String, Box<RawValue>>);

impl Fields {
    /// Parses a body that must be a JSON object naming each field once (D1a: a repeated
    /// field could be read differently from what was signed).
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        // The general parser first, for its messages (and its number range check).
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(_)) => {}
            Ok(_) => return Err(FieldError::NotJson("expected an object".into())),
            Err(e) => return Err(FieldError::NotJson(e.to_string())),
        }
        let members =
            super::canonical::members(body).map_err(|e| FieldError::NotJson(e.to_string()))?;
        if let Some(name) = super::canonical::repeated_key(&members) {
            return Err(FieldError::Repeated(name.to_owned()));
        }
        Ok(Self(members.into_iter().collect()))
    }

    /// A mandatory string of at most `max` characters. Blank counts as missing.
    pub fn required(&self, field: &'static str, max: usize) -> Result<String, FieldError> {
        self.optional(field, max)?.ok_or(FieldError::Missing(field))
    }

    /// An optional string of at most `max` characters. Absent, `null` and blank are `None`.
    /// Numbers are accepted in their JSON text exactly as sent (never through floating
    /// point, which would merge long numeric ids), since V1 documents some string fields
    /// (e.g. `testFlag`) as integers. Every field read here is an id or an enum word, so
    /// control characters are refused.
    pub fn optional(&self, field: &'static str, max: usize) -> Result<Option<String>, FieldError> {
        let Some(raw) = self.0.get(field).map(|raw| raw.get()) else {
            return Ok(None);
        };
        let text = match raw.as_bytes().first() {
            Some(b'n') => return Ok(None),
            Some(b'"') => serde_json::from_str::<String>(raw)
                .map_err(|e| FieldError::NotJson(e.to_string()))?,
            Some(b'-' | b'0'..=b'9') => raw.to_owned(),
            _ => return Err(FieldError::NotString(field)),
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        if text.chars().count() > max {
            return Err(FieldError::TooLong { field, max });
        }
        refuse_control(field, &text)?;
        Ok(Some(text))
    }

    /// A mandatory id, checked against its own field table.
    pub fn id<T: Id>(&self) -> Result<T, FieldError> {
        T::parse(&self.required(T::FIELD, T::MAX)?)
    }

    /// An optional id; absent, `null` and blank are `None`.
    pub fn optional_id<T: Id>(&self) -> Result<Option<T>, FieldError> {
        self.optional(T::FIELD, T::MAX)?
            .map(|text| T::parse(&text))
            .transpose()
    }

    /// A field that may be a JSON object or a JSON string holding one (spec §3.7).
    pub fn object(&self, field: &'static str) -> Result<Map<String, Value>, FieldError> {
        let value = self
            .0
            .get(field)
            .map(|raw| serde_json::from_str::<Value>(raw.get()))
            .transpose()
            .map_err(|e| FieldError::NotJson(e.to_string()))?;
        match value.as_ref() {
            None | Some(Value::Null) => Err(FieldError::Missing(field)),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Object(map)) => Ok(map),
                _ => Err(FieldError::Invalid {
                    field,
                    reason: "not a JSON object".into(),
                }),
            },
            Some(_) => Err(FieldError::Invalid {
                field,
                reason: "not a JSON object".into(),
            }),
        }
    }

    /// A mandatory `yyyyMMddHHmmss` time (D10: 17 digits are accepted too), as UTC.
    pub fn compact_time(
        &self,
        field: &'static str,
    ) -> Result<chrono::DateTime<chrono::Utc>, FieldError> {
        let raw = self.required(field, 20)?;
        super::time::parse_compact(&raw).ok_or_else(|| FieldError::Invalid {
            field,
            reason: format!("{raw:?} is not yyyyMMddHHmmss or yyyyMMddHHmmssSSS"),
        })
    }

    /// `status`: `FREEZE` or `UNFREEZE` (spec §3.4, §6.3).
    pub fn status(&self) -> Result<super::saas_v2::StatusChange, FieldError> {
        use super::saas_v2::StatusChange;
        match self.required("status", 32)?.as_str() {
            "FREEZE" => Ok(StatusChange::Freeze),
            "UNFREEZE" => Ok(StatusChange::Unfreeze),
            other => Err(FieldError::Invalid {
                field: "status",
                reason: format!("{other:?} is not FREEZE or UNFREEZE"),
            }),
        }
    }

    /// `testFlag`: `"1"` marks a debugging or dial-test request; `"0"` or absent a real one.
    pub fn test_flag(&self) -> Result<bool, FieldError> {
        match self.optional("testFlag", 2)?.as_deref() {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(_) => Err(FieldError::Invalid {
                field: "testFlag",
                reason: "must be \"0\" or \"1\"".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(json: &str) -> Fields {
        Fields::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn limits_are_counted_in_characters() {
        let f = fields(r#"{"a":"订单订单","b":"abcde","n":12,"blank":" ","o":{}}"#);
        assert_eq!(f.required("a", 4).unwrap(), "订单订单");
        assert_eq!(
            f.required("b", 4),
            Err(FieldError::TooLong { field: "b", max: 4 })
        );
        assert_eq!(f.required("n", 4).unwrap(), "12");
        assert_eq!(f.required("blank", 4), Err(FieldError::Missing("blank")));
        assert_eq!(f.required("absent", 4), Err(FieldError::Missing("absent")));
        assert_eq!(f.optional("o", 4), Err(FieldError::NotString("o")));
    }

    #[test]
    fn bodies_that_are_not_objects_are_refused() {
        for body in ["", "[]", "{", "\"x\"", "{\"a\":1"] {
            assert!(
                matches!(Fields::parse(body.as_bytes()), Err(FieldError::NotJson(_))),
                "{body:?}"
            );
        }
    }

    #[test]
    fn numbers_keep_their_exact_text() {
        let f = fields(
            r#"{"a":123456789012345678901234567890,"b":123456789012345678901234567891,"c":1.50}"#,
        );
        assert_eq!(
            f.required("a", 64).unwrap(),
            "123456789012345678901234567890"
        );
        assert_eq!(
            f.required("b", 64).unwrap(),
            "123456789012345678901234567891"
        );
        assert_eq!(f.required("c", 64).unwrap(), "1.50");
    }

    #[test]
    fn control_characters_are_refused_naming_the_field() {
        for body in [
            r#"{"orderId":"A\u0000"}"#,
            r#"{"orderId":"A\nB"}"#,
            r#"{"orderId":"\u007f"}"#,
        ] {
            let refused = fields(body).required("orderId", 64).unwrap_err();
            assert!(
                matches!(
                    refused,
                    FieldError::Invalid {
                        field: "orderId",
                        ..
                    }
                ),
                "{body}: {refused:?}"
            );
            assert!(refused.to_string().starts_with("orderId "), "{refused}");
        }
    }

    #[test]
    fn a_repeated_field_is_refused() {
        assert_eq!(
            Fields::parse(br#"{"orderId":"A","orderId":"B"}"#).err(),
            Some(FieldError::Repeated("orderId".into()))
        );
    }

    #[test]
    fn free_text_is_kept_but_storable() {
        assert_eq!(storable_text("a\0b\n".into()), "a\u{FFFD}b\n");
    }

    #[test]
    fn test_flag_values() {
        assert!(fields(r#"{"testFlag":"1"}"#).test_flag().unwrap());
        assert!(fields(r#"{"testFlag":1}"#).test_flag().unwrap());
        assert!(!fields(r#"{"testFlag":"0"}"#).test_flag().unwrap());
        assert!(!fields("{}").test_flag().unwrap());
        assert!(fields(r#"{"testFlag":"2"}"#).test_flag().is_err());
    }

    #[test]
    fn objects_may_arrive_as_json_strings() {
        let f = fields(r#"{"p":"{\"productId\":\"x\"}","q":{"skuCode":"s"},"r":"nope"}"#);
        assert_eq!(f.object("p").unwrap()["productId"], "x");
        assert_eq!(f.object("q").unwrap()["skuCode"], "s");
        assert!(f.object("r").is_err());
        assert_eq!(f.object("z"), Err(FieldError::Missing("z")));
    }
}
