//! KooGallery's ids as newtypes, made only by parsing a request field against its spec
//! table. An id holds no control character, so ids joined by a newline into one
//! idempotency or deduplication key (`orderId` + `orderLineId`, D7) can never collide; a
//! numeric id keeps the exact text it was sent in (see [`super::fields::Fields`]).

use super::fields::FieldError;

/// An id read from one named request field, with that field's limits.
pub trait Id: Sized {
    /// The wire name, which a refusal names (`000002`).
    const FIELD: &'static str;
    /// The longest value the spec table allows, in characters.
    const MAX: usize;

    /// Checks `text` against the field's limits.
    fn parse(text: &str) -> Result<Self, FieldError>;
}

/// The checks every id shares: not blank, at most `max` characters, no control
/// character (NUL included: PostgreSQL cannot store it in text, and a newline would let
/// two different pairs of ids make one key).
fn check(field: &'static str, max: usize, text: &str) -> Result<(), FieldError> {
    if text.trim().is_empty() {
        return Err(FieldError::Missing(field));
    }
    if text.chars().count() > max {
        return Err(FieldError::TooLong { field, max });
    }
    super::fields::refuse_control(field, text)
}

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:literal $(, $extra:path)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl Id for $name {
            const FIELD: &'static str = $field;
            const MAX: usize = $max;

            fn parse(text: &str) -> Result<Self, FieldError> {
                check($field, $max, text)?;
                $($extra($field, text)?;)?
                Ok(Self(text.to_owned()))
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = FieldError;

            fn try_from(text: &str) -> Result<Self, FieldError> {
                <Self as Id>::parse(text)
            }
        }

        // Read-only access as text, so the store and logs take an id where they take a
        // `&str`; the only way in is `parse`.
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id!(
    /// `orderId` (String(64), spec §3.1 and §4.1).
    OrderId, "orderId", 64
);
id!(
    /// `orderLineId` (String(64), spec §3.1).
    OrderLineId, "orderLineId", 64
);
id!(
    /// `instanceId` (String(64), spec §3.2–§3.7 and §4).
    InstanceId, "instanceId", 64
);
id!(
    /// `businessId` (String(64), spec §3.1 and §4.1): new on every call; the first one
    /// becomes the instance id.
    BusinessId, "businessId", 64
);
id!(
    /// `productId` (String(64)): with `orderId`, the key of a pay-per-use SaaS 1.0 order.
    ProductId, "productId", 64
);
id!(
    /// `license`, a License code (String(64), spec §6.3).
    LicenseCode, "license", 64
);
id!(
    /// `eventId` of `getLicenseAsync` (String(64), spec §6.2): a path segment of the upload
    /// URL (§8.3), so only characters that need no encoding.
    EventId, "eventId", 64, url_safe
);

/// Refuses what would need encoding (or change meaning) as one URL path segment, so the
/// URL koogate signs is the one the gateway reads.
fn url_safe(field: &'static str, text: &str) -> Result<(), FieldError> {
    let unreserved = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if unreserved && text != "." && text != ".." {
        Ok(())
    } else {
        Err(FieldError::Invalid {
            field,
            reason: "only letters, digits, '-', '_', '.' and '~' may be used".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_within_its_table_is_kept_exactly() {
        let id = OrderId::parse("CS2211181819B4LVS").unwrap();
        assert_eq!(id.as_str(), "CS2211181819B4LVS");
        assert_eq!(
            OrderId::parse("123456789012345678901234567890")
                .unwrap()
                .as_str(),
            "123456789012345678901234567890"
        );
        assert_eq!(InstanceId::parse("订单").unwrap().to_string(), "订单");
    }

    #[test]
    fn refusals_name_the_field() {
        let cases: [(&str, FieldError, &str); 4] = [
            ("", FieldError::Missing("orderLineId"), "blank is missing"),
            (
                " ",
                FieldError::Missing("orderLineId"),
                "spaces are missing",
            ),
            (
                &"x".repeat(65),
                FieldError::TooLong {
                    field: "orderLineId",
                    max: 64,
                },
                "65 characters is too long",
            ),
            (
                "A\nB",
                FieldError::Invalid {
                    field: "orderLineId",
                    reason: "contains the control character U+000A".into(),
                },
                "a newline is a control character",
            ),
        ];
        for (text, expected, why) in cases {
            assert_eq!(OrderLineId::parse(text), Err(expected), "{why}");
        }
        assert!(
            OrderLineId::parse(&"订".repeat(64)).is_ok(),
            "chars, not bytes"
        );
    }

    #[test]
    fn every_control_character_is_refused() {
        for c in ['\0', '\t', '\r', '\u{7f}', '\u{85}'] {
            let text = format!("A{c}B");
            assert!(
                matches!(
                    BusinessId::parse(&text),
                    Err(FieldError::Invalid {
                        field: "businessId",
                        ..
                    })
                ),
                "{text:?}"
            );
        }
    }

    #[test]
    fn an_event_id_takes_only_unreserved_characters() {
        assert!(EventId::parse("ev-1_x.y~z").is_ok());
        for bad in ["a/b", "a b", "%2F", ".", "..", "a?b", "码"] {
            assert!(
                matches!(
                    EventId::parse(bad),
                    Err(FieldError::Invalid {
                        field: "eventId",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(LicenseCode::parse("码 1/2").is_ok(), "not a path parameter");
    }

    #[test]
    fn try_from_is_parse() {
        assert_eq!(
            InstanceId::try_from("i-1"),
            InstanceId::parse("i-1"),
            "one way in"
        );
        assert!(InstanceId::try_from("i\u{0}").is_err());
    }
}
