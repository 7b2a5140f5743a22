//! Reading request fields with the limits of the spec tables. Every failure names the
//! field, because the message goes back to KooGallery as `resultMsg` (`000002`).

use serde_json::{Map, Value};

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
}

/// The fields of one JSON request body.
pub struct Fields(Map<String, Value>);

impl Fields {
    /// Parses a body that must be a JSON object.
    pub fn parse(body: &[u8]) -> Result<Self, FieldError> {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => Ok(Self(map)),
            Ok(_) => Err(FieldError::NotJson("expected an object".into())),
            Err(e) => Err(FieldError::NotJson(e.to_string())),
        }
    }

    /// A mandatory string of at most `max` characters. Blank counts as missing.
    pub fn required(&self, field: &'static str, max: usize) -> Result<String, FieldError> {
        self.optional(field, max)?.ok_or(FieldError::Missing(field))
    }

    /// An optional string of at most `max` characters. Absent, `null` and blank are `None`.
    /// Numbers are accepted in their JSON text form, since V1 documents some string
    /// fields (e.g. `testFlag`) as integers.
    pub fn optional(&self, field: &'static str, max: usize) -> Result<Option<String>, FieldError> {
        let text = match self.0.get(field) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(FieldError::NotString(field)),
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        if text.chars().count() > max {
            return Err(FieldError::TooLong { field, max });
        }
        Ok(Some(text))
    }

    /// A field that may be a JSON object or a JSON string holding one (spec §3.7).
    pub fn object(&self, field: &'static str) -> Result<Map<String, Value>, FieldError> {
        match self.0.get(field) {
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
