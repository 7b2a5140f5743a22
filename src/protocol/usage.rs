//! Pay-per-use usage push (spec §8.4): the canonical JSON body and the `signature` header computed over it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::Mac;
use serde_json::Value;

use super::crypto::hmac_sha256;

/// Serialises `value` compactly with the keys of every object sorted, at every nesting level (objects
/// inside arrays included). koogate sends exactly this string and signs the same string (§8.4: "此处body
/// 按自然排序后参与签名"; recursive sorting is koogate's reading, §13 question 6).
///
/// Keys sort in byte order, which is Java's natural `String` order for the ASCII keys the API uses.
/// Strings, numbers, booleans and null are written exactly as serde_json writes them.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_sorted(value, &mut out);
    out
}

fn write_sorted(value: &Value, out: &mut String) {
    match value {
        // Sorted here rather than relying on `serde_json::Map`, whose order depends on whether any crate
        // in the build enables serde_json's `preserve_order` feature.
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::from(key.as_str()).to_string());
                out.push(':');
                write_sorted(item, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_sorted(item, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

/// The usage push's `signature` header: standard padded Base64 of HMAC-SHA256 keyed with the merchant key
/// (the accessKey bound to the basic interface) over `ts={ts}&nonce={nonce}&body={body}`, where `ts` and
/// `nonce` are the header values sent and `body` is the exact body sent, from [`canonical_json`] (§8.4).
pub fn usage_signature(merchant_key: &str, ts: &str, nonce: &str, body: &str) -> String {
    let mut mac = hmac_sha256(merchant_key.as_bytes());
    mac.update(format!("ts={ts}&nonce={nonce}&body={body}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The answer code of a call whose records were (partly) refused one by one, listed in
/// `abnormal_usage_data` (spec §8.4, newer revision).
pub const ABNORMAL_DATA: &str = "94060999";

/// The record-level codes of `abnormal_usage_data` (spec §8.4, newer revision).
const RECORD_CODES: [(&str, &str); 12] = [
    ("001", "instance does not exist"),
    ("002", "time format is wrong"),
    ("003", "usage value is wrong"),
    ("004", "metering_sn is missing"),
    ("005", "duplicate metering_sn"),
    ("006", "product is delisted"),
    ("007", "record time has expired"),
    ("009", "instance does not belong to this merchant"),
    ("010", "duplicate record"),
    ("011", "time range is wrong"),
    ("012", "not a pay-per-use instance"),
    ("013", "instance state is abnormal"),
];

/// What a record-level code means.
pub fn record_code_meaning(code: &str) -> &'static str {
    RECORD_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("undocumented record code", |(_, meaning)| meaning)
}

/// Whether a record-level code says KooGallery has the record already: a duplicate
/// `metering_sn` (`005`) or a second record for the same window (`010`). koogate derives
/// both from the window, so either means an earlier push of this window got through.
pub fn already_accepted(code: &str) -> bool {
    matches!(code, "005" | "010")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const VECTOR_5_BODY: &str = r#"{"usage_records":[{"begin_time":"20220809T080000Z","end_time":"20220809T090000Z","instance_id":"7f141bf1-aec8-4859-8323-fb3a8ad50721","metering_sn":"a1b2c3","record_time":"20220809T091000Z","usage_value":"99"}]}"#;

    #[test]
    fn canonical_body_and_signature_match_spec_vector_5() {
        let records = json!({"usage_records": [{
            "usage_value": "99",
            "record_time": "20220809T091000Z",
            "metering_sn": "a1b2c3",
            "instance_id": "7f141bf1-aec8-4859-8323-fb3a8ad50721",
            "end_time": "20220809T090000Z",
            "begin_time": "20220809T080000Z",
        }]});

        let body = canonical_json(&records);

        assert_eq!(body, VECTOR_5_BODY);
        assert_eq!(
            usage_signature(
                "test-access-key-0001",
                "1709690865879",
                "6c63c221-1f6b-4141-8ff4-22f5dfe82b65",
                &body
            ),
            "/xDQTk5sp/TJDZDKF4tMdpUX7J5K+bchndMrKAsCI/E="
        );
    }

    #[test]
    fn canonical_json_sorts_objects_nested_in_arrays() {
        let value =
            json!({"b": [{"z": 1, "a": {"y": [2, {"d": true, "c": null}], "x": 3}}], "a": []});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":[],"b":[{"a":{"x":3,"y":[2,{"c":null,"d":true}]},"z":1}]}"#
        );
    }

    #[test]
    fn canonical_json_writes_leaves_as_serde_json_does() {
        let value: Value = serde_json::from_str(
            r#"{"s":"q\"\\ \n 张\u0001","n":[1.5,-0,10000000000000000000,1e3]," k":1}"#,
        )
        .expect("valid JSON");
        assert_eq!(
            canonical_json(&value),
            r#"{" k":1,"n":[1.5,-0.0,10000000000000000000,1000.0],"s":"q\"\\ \n 张\u0001"}"#
        );
    }
}
