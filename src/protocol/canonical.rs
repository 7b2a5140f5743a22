//! The canonical form of a JSON request body (decision D1a): what Huawei's sample merchant
//! server re-serialises a body to before it checks the V2 signature. Top-level keys sorted by
//! UTF-16 code units (Java `String` order), top-level `null` values dropped, nested values in
//! the order received, compact, strings escaped as Jackson escapes them.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt::{self, Write};

/// The canonical form of `body`, or `None` when `body` is not a JSON object or repeats a
/// top-level key (D1a refuses such a body: what was signed and what is acted on could differ).
///
/// Numbers, `true`, `false` and nested `null` are copied as received: KooGallery's bodies
/// carry strings only (§3), and D1a says nothing of number formatting.
pub fn canonical_form(body: &[u8]) -> Option<Vec<u8>> {
    let Entries(entries) = serde_json::from_slice(body).ok()?;
    let mut kept: Vec<(String, Box<RawValue>)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        if kept.iter().any(|(k, _)| *k == key) {
            return None;
        }
        kept.push((key, value));
    }
    kept.retain(|(_, value)| value.get().trim() != "null");
    kept.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    let mut out = String::with_capacity(body.len());
    out.push('{');
    for (i, (key, value)) in kept.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(key, &mut out);
        out.push(':');
        write_value(value, &mut out)?;
    }
    out.push('}');
    Some(out.into_bytes())
}

/// The top-level members of a JSON object in the order received, each value as its raw
/// text, repeats included.
pub fn members(body: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
    serde_json::from_slice(body).map(|Entries(entries)| entries)
}

/// A key named more than once among `members`, if any.
pub fn repeated_key(members: &[(String, Box<RawValue>)]) -> Option<&str> {
    let mut names: Vec<&str> = members.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    names
        .windows(2)
        .find(|pair| pair.first() == pair.last())
        .and_then(|pair| pair.first().copied())
}

/// A nested value, compact, with its keys in the order received.
fn write_value(raw: &RawValue, out: &mut String) -> Option<()> {
    let text = raw.get().trim();
    match text.as_bytes().first()? {
        b'{' => {
            let Entries(entries) = serde_json::from_str(text).ok()?;
            out.push('{');
            for (i, (key, value)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(value, out)?;
            }
            out.push('}');
        }
        b'[' => {
            let items: Vec<Box<RawValue>> = serde_json::from_str(text).ok()?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        b'"' => write_string(&serde_json::from_str::<String>(text).ok()?, out),
        _ => out.push_str(text),
    }
    Some(())
}

/// Jackson's escaping: `"` `\` and the five short control escapes, other C0 controls as
/// `\u00XX` in upper-case hex, everything else (non-ASCII, `/`, DEL) as it is.
fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c < ' ' => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// An object's members in the order received, duplicates included; serde_json's own map
/// would sort them and merge repeats.
struct Entries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::signature::{self, Variant};

    const KEY: &str = "test-access-key-0001";
    const TS: &str = "1680508066618";
    const NONCE: &str = "50D83FDECAED6CCD8EF597F2A577950527928BA287D04E6036E92B2806FD17DA";
    const VECTOR_3: &str = r#"{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8","orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}"#;
    const VECTOR_3B: &str = r#"{"orderId": "CS2211181819B4LVS", "activity": "newInstance", "orderLineId": "CS2211181819B4LVS-000001", "businessId": "87b94795-0603-4e24-8ae5-69420d60e3c8", "testFlag": "1", "extra": null}"#;

    fn canonical(body: &str) -> Option<String> {
        canonical_form(body.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn spec_vector_3b_signs_as_vector_3_in_canonical_form() {
        let form = canonical(VECTOR_3B).unwrap();
        assert_eq!(form, VECTOR_3);
        assert_eq!(
            signature::sign(KEY, NONCE, TS, form.as_bytes(), Variant::A),
            "C506F4221EC15F98C40B8A5D5065D8B815A2C5596CF4421382088B5652565458"
        );
        assert_eq!(
            signature::sign(KEY, NONCE, TS, VECTOR_3B.as_bytes(), Variant::A),
            "6067F7CAA33482FC64DE75ECED6CBEA85B42C7739C7DB0193E6B478B8D0B6DA4"
        );
    }

    #[test]
    fn repeated_keys_are_found() {
        let members = members(br#"{"b":1,"a":2,"b":3}"#).unwrap();
        assert_eq!(repeated_key(&members), Some("b"));
        assert_eq!(
            repeated_key(&super::members(br#"{"b":1,"a":2}"#).unwrap()),
            None
        );
    }

    #[test]
    fn nested_values_keep_their_order_and_nulls() {
        assert_eq!(
            canonical(r#"{ "z" : { "b" : null , "a" : [ 2 , 1.50 , true ] }, "a": 1 }"#).unwrap(),
            r#"{"a":1,"z":{"b":null,"a":[2,1.50,true]}}"#
        );
    }

    #[test]
    fn strings_are_escaped_as_jackson_escapes_them() {
        assert_eq!(
            canonical(r#"{"s":"\u00e9\/\"\\\b\f\n\r\t\u0001\u001f\u007f\ud83c\udf89"}"#).unwrap(),
            "{\"s\":\"é/\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001F\u{7f}🎉\"}"
        );
        assert_eq!(canonical(r#"{"\u0061":"x"}"#).unwrap(), r#"{"a":"x"}"#);
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+1F600 sorts after U+FF21 in UTF-8 byte order, but before it in UTF-16: its lead
        // surrogate is D83D.
        assert_eq!(
            canonical("{\"\u{1F600}\":1,\"\u{FF21}\":2,\"B\":3,\"a\":4}").unwrap(),
            "{\"B\":3,\"a\":4,\"\u{1F600}\":1,\"\u{FF21}\":2}"
        );
    }

    #[test]
    fn repeated_keys_and_non_objects_have_no_canonical_form() {
        for body in [
            r#"{"a":"1","a":"2"}"#,
            r#"{"a":null,"a":"2"}"#,
            "[]",
            r#""text""#,
            "{",
            "",
        ] {
            assert_eq!(canonical(body), None, "{body}");
        }
        assert_eq!(
            canonical(r#"{"n":{"a":1,"a":2}}"#).unwrap(),
            r#"{"n":{"a":1,"a":2}}"#
        );
    }
}
