//! The canonical form of a signed JSON body (decision D1a): what Huawei's own sample
//! merchant server re-serialises before it verifies a signature. Top-level keys sorted in
//! Java `String` order (UTF-16 code units), top-level `null`s dropped, nested values in
//! their received order, compact, with Jackson's string escaping.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::fmt;

/// The canonical form of `body`, or `None` when it is not a JSON object or repeats a
/// top-level key (such a body is refused, so what was signed and what is acted on can
/// never differ).
pub fn canonical(body: &[u8]) -> Option<Vec<u8>> {
    let mut entries = members(body).ok()?;
    if repeated_key(&entries).is_some() {
        return None;
    }
    entries.retain(|(_, value)| value.get() != "null");
    entries.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    let mut out = Vec::with_capacity(body.len());
    out.push(b'{');
    for (index, (key, value)) in entries.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        escape_into(key, &mut out);
        out.push(b':');
        compact_into(value.get(), &mut out)?;
    }
    out.push(b'}');
    Some(out)
}

/// The top-level members of a JSON object in received order, each value as its raw text.
pub fn members(body: &[u8]) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = de.deserialize_map(Members)?;
    de.end()?;
    Ok(entries)
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

struct Members;

impl<'de> Visitor<'de> for Members {
    type Value = Vec<(String, Box<RawValue>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
            entries.push(entry);
        }
        Ok(entries)
    }
}

/// Copies valid JSON text without insignificant whitespace, members in their order, and
/// every string re-escaped as Jackson writes it. Numbers, `true`, `false` and `null` keep
/// their text.
fn compact_into(json: &str, out: &mut Vec<u8>) -> Option<()> {
    let bytes = json.as_bytes();
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'"' => {
                let end = string_end(bytes, i)?;
                let text: String = serde_json::from_str(json.get(i..end)?).ok()?;
                escape_into(&text, out);
                i = end;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    Some(())
}

/// The index just past the string literal that starts at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// A JSON string literal as Jackson writes it: non-ASCII as raw UTF-8, `/` as is, the
/// short escapes for `"` `\` and `\b \f \n \r \t`, other C0 controls as `\u00XX` in
/// uppercase hex.
fn escape_into(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for ch in text.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if u32::from(c) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04X}", u32::from(c)).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(body: &str) -> Option<String> {
        canonical(body.as_bytes()).map(|bytes| String::from_utf8(bytes).unwrap())
    }

    #[test]
    fn vector_3b_becomes_vector_3() {
        let sent = r#"{"orderId": "CS2211181819B4LVS", "activity": "newInstance", "orderLineId": "CS2211181819B4LVS-000001", "businessId": "87b94795-0603-4e24-8ae5-69420d60e3c8", "testFlag": "1", "extra": null}"#;
        let vector_3 = r#"{"activity":"newInstance","businessId":"87b94795-0603-4e24-8ae5-69420d60e3c8","orderId":"CS2211181819B4LVS","orderLineId":"CS2211181819B4LVS-000001","testFlag":"1"}"#;
        assert_eq!(canon(sent).as_deref(), Some(vector_3));
        assert_eq!(
            canon(vector_3).as_deref(),
            Some(vector_3),
            "a canonical body is its own canonical form"
        );
    }

    #[test]
    fn strings_are_escaped_as_jackson_does() {
        assert_eq!(
            canon(r#"{"a":"\u00e9/\/\"\\\b\f\n\r\t\u0001\u001f\u007f\u2028"}"#).unwrap(),
            "{\"a\":\"\u{e9}//\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001F\u{7f}\u{2028}\"}"
        );
        assert_eq!(canon(r#"{"k\u0000":1}"#).unwrap(), r#"{"k\u0000":1}"#);
    }

    #[test]
    fn nested_values_keep_their_order_and_numbers_their_text() {
        assert_eq!(
            canon(r#"{ "z" : { "b" : [ 1.50 , null , true ], "a" : "x y" }, "n": 123456789012345678901234567890 }"#)
                .unwrap(),
            r#"{"n":123456789012345678901234567890,"z":{"b":[1.50,null,true],"a":"x y"}}"#
        );
    }

    #[test]
    fn keys_sort_in_java_string_order() {
        // U+1F600 sorts before U+FF5E in UTF-16 (its first unit 0xD83D < 0xFF5E), after
        // it in UTF-8 and in code points.
        assert_eq!(
            canon("{\"\u{FF5E}\":2,\"\u{1F600}\":1,\"B\":3,\"a\":4}").unwrap(),
            "{\"B\":3,\"a\":4,\"\u{1F600}\":1,\"\u{FF5E}\":2}"
        );
    }

    #[test]
    fn only_objects_without_repeated_keys_have_one() {
        for body in ["", "[]", "null", "\"x\"", "{", "{\"a\":1,\"a\":2}", "{} x"] {
            assert_eq!(canon(body), None, "{body:?}");
        }
        assert_eq!(canon("{}").as_deref(), Some("{}"));
        assert_eq!(
            canon(r#"{"a":{"b":1,"b":2}}"#).as_deref(),
            Some(r#"{"a":{"b":1,"b":2}}"#)
        );
    }
}
