//! Masking for the admin pages: credentials (passwords in app info) and the buyer's
//! personal data (names, phone numbers, e-mail addresses) are never shown whole. The
//! exact bytes stay in the database and in the evidence file an appeal needs; the pages
//! show enough to recognise a value, and the SHA-256 of what was really received.

use serde_json::Value;

const MASK: char = '•';

/// Keys (compared in lower case) whose values are personal data or credentials.
const EXACT: [&str; 12] = [
    "customername",
    "username",
    "realname",
    "buyername",
    "contactname",
    "name",
    "mobile",
    "tel",
    "telephone",
    "pwd",
    "sk",
    "accesskey",
];

/// Parts of keys that mark them so wherever they appear (`mobilePhone`, `userEmail`,
/// `adminPassword`, `clientSecret`).
const PARTS: [&str; 4] = ["password", "phone", "email", "secret"];

/// Whether a JSON key or query parameter holds what is masked.
pub fn sensitive(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    EXACT.contains(&key.as_str()) || PARTS.iter().any(|part| key.contains(part))
}

/// A value masked by its kind: a password entirely, an e-mail address but for its
/// first character and its domain, anything else but for its first and last character.
pub fn mask_value(key: &str, value: &str) -> String {
    let key = key.to_ascii_lowercase();
    let dots = |n: usize| MASK.to_string().repeat(n);
    let Some(first) = value.chars().next() else {
        return String::new();
    };
    if key.contains("password") || key.contains("secret") || key == "pwd" || key == "sk" {
        return dots(6);
    }
    if let Some((_, domain)) = value.split_once('@') {
        return format!("{first}{}@{domain}", dots(3));
    }
    match (value.chars().count(), value.chars().next_back()) {
        (n, Some(last)) if n > 2 => format!("{first}{}{last}", dots((n - 2).min(6))),
        (n, _) => dots(n),
    }
}

/// A name that is shown in a list (the customer's name).
pub fn name(value: Option<&str>) -> String {
    value.map_or_else(|| "—".into(), |v| mask_value("name", v))
}

fn walk(key: &str, value: &mut Value) {
    match value {
        Value::String(s) if sensitive(key) => *s = mask_value(key, s),
        Value::Number(_) if sensitive(key) => *value = Value::String(MASK.to_string().repeat(6)),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                walk(k, v);
            }
        }
        Value::Array(items) => {
            for item in items {
                walk(key, item);
            }
        }
        _ => {}
    }
}

/// A JSON text with what is sensitive masked, pretty-printed; text that is not JSON is
/// shown as it is when it is UTF-8 and as hex otherwise (a refused request may be
/// anything), with nothing masked because nothing in it can be told apart.
pub fn body(bytes: &[u8]) -> String {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(mut json) => {
            walk("", &mut json);
            serde_json::to_string_pretty(&json).unwrap_or_default()
        }
        Err(_) => match std::str::from_utf8(bytes) {
            Ok(text) => text.to_owned(),
            Err(_) => hex::encode(bytes),
        },
    }
}

/// A JSON object (an instance's details) with what is sensitive masked.
pub fn object(map: &serde_json::Map<String, Value>) -> String {
    body(&serde_json::to_vec(map).unwrap_or_default())
}

/// A raw query string with the values of sensitive parameters masked; the parameters
/// keep their order and their encoding.
pub fn query(raw: &str) -> String {
    raw.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if sensitive(name) => {
                let decoded: String = form_urlencoded::parse(format!("v={value}").as_bytes())
                    .map(|(_, v)| v.into_owned())
                    .next()
                    .unwrap_or_default();
                format!("{name}={}", mask_value(name, &decoded))
            }
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_data_and_credentials_are_masked_wherever_they_are() {
        let shown = body(
            br#"{"customerName":"Zhang San","mobilePhone":"13800138000","email":"buyer@example.com",
                "appInfo":{"password":"p@ss","userName":"admin"},"orderId":"CS1","extend":[{"phone":"12"}]}"#,
        );
        for hidden in ["Zhang San", "13800138000", "buyer@", "p@ss", "admin\""] {
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        for kept in [
            "Z••••••n",
            "1••••••0",
            "b•••@example.com",
            "••••••",
            "\"CS1\"",
        ] {
            assert!(shown.contains(kept), "{kept} not in {shown}");
        }
    }

    #[test]
    fn a_query_keeps_its_shape_and_loses_its_secrets() {
        assert_eq!(
            query("activity=newInstance&mobilePhone=13800138000&email=a%40b.c&orderId=X"),
            "activity=newInstance&mobilePhone=1••••••0&email=a•••@b.c&orderId=X"
        );
    }

    #[test]
    fn what_is_not_json_is_shown_as_it_came() {
        assert_eq!(body(b"not json <x>"), "not json <x>");
        assert_eq!(body(&[0xff, 0x00]), "ff00");
        assert_eq!(name(None), "—");
        assert_eq!(name(Some("<b>")), "<•>");
    }
}
