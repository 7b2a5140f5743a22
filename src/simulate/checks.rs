//! What every answer must be: HTTP 200, a JSON object with a six-digit `resultCode`, a
//! `Body-Sign` over the exact bytes received (§2.4), the fields of the activity within their
//! limits (§3, §4), and encrypted credentials that decrypt under the access key (§2.5). Each
//! problem is one sentence that names the fault, and the known mistakes are named as such.

use super::client::{Exchange, Received};
use crate::protocol::crypto::{FieldCipher, KeySize};
use crate::protocol::json;
use crate::protocol::reply::MAX_RESULT_MSG;
use crate::protocol::signature;
use serde_json::{Map, Value};

/// `000000` only.
pub const SUCCESS: &[&str] = &["000000"];
/// `000000`, or `000004` where provisioning may finish later (V2 `newInstance`, §3.1).
pub const ACCEPTED: &[&str] = &["000000", "000004"];
pub const AUTH_FAILED: &[&str] = &["000001"];
pub const INVALID: &[&str] = &["000002"];
pub const NOT_FOUND: &[&str] = &["000003"];

/// Every result code of the spec's table (§5); KooGallery knows no other.
const SPEC_CODES: [&str; 18] = [
    "000000", "000001", "000002", "000003", "000004", "000005", "000100", "000101", "000102",
    "000103", "000104", "000105", "000106", "000107", "000900", "000901", "000902", "000903",
];

/// What an answer must carry besides `resultCode`.
#[derive(Debug, Clone)]
pub enum Shape {
    /// `resultCode` and `resultMsg` only.
    Plain,
    /// A `newInstance` answer: an `instanceId`, and `appInfo` when credentials are returned.
    Created,
    /// A `queryInstance` answer listing this instance.
    Query(String),
}

/// The codes an answer may carry, and its shape when the code is one of them.
#[derive(Debug, Clone)]
pub struct Expect {
    pub codes: &'static [&'static str],
    pub shape: Shape,
}

impl Expect {
    pub const fn plain(codes: &'static [&'static str]) -> Self {
        Self {
            codes,
            shape: Shape::Plain,
        }
    }

    pub const fn created(codes: &'static [&'static str]) -> Self {
        Self {
            codes,
            shape: Shape::Created,
        }
    }

    pub fn query(instance_id: &str) -> Self {
        Self {
            codes: SUCCESS,
            shape: Shape::Query(instance_id.to_owned()),
        }
    }
}

/// How credentials in `appInfo` are sent by the interface under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credentials {
    /// SaaS 1.0: always encrypted (§2.5), `encryptType` defaulting to `1`.
    Encrypted,
    /// SaaS 2.0: plain unless `encryptType` says otherwise (D6).
    PlainUnlessTyped,
}

/// What was found in one answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub problems: Vec<String>,
    pub code: Option<String>,
    pub instance_id: Option<String>,
    /// The body exactly as received, when an answer came back.
    pub body: Option<Vec<u8>>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks one exchange against `expect`.
pub fn inspect(
    exchange: &Exchange,
    expect: &Expect,
    key: &str,
    credentials: Credentials,
) -> Answer {
    let received = match &exchange.result {
        Ok(received) => received,
        Err(failure) => {
            return Answer {
                problems: vec![failure.describe()],
                ..Answer::default()
            };
        }
    };
    let mut answer = Answer {
        body: Some(received.body.clone()),
        ..Answer::default()
    };
    let problems = &mut answer.problems;
    if received.status != 200 {
        problems.push(format!(
            "HTTP status {}, expected 200: every protocol answer is HTTP 200 with the result in resultCode",
            received.status
        ));
    }
    if let Some(problem) = body_sign_problem(key, received, &exchange.request.time) {
        problems.push(problem);
    }
    let Some(object) = json_object(received, problems) else {
        return answer;
    };
    answer.code = result_code(&object, expect, problems);
    if let Some(msg) = object.get("resultMsg") {
        match msg {
            Value::String(text) if text.chars().count() > MAX_RESULT_MSG => problems.push(format!(
                "resultMsg is {} characters long, at most {MAX_RESULT_MSG} allowed",
                text.chars().count()
            )),
            Value::String(_) | Value::Null => {}
            _ => problems.push("resultMsg is not a string".into()),
        }
    }
    let code_expected = answer
        .code
        .as_deref()
        .is_some_and(|code| expect.codes.contains(&code));
    if code_expected {
        match &expect.shape {
            Shape::Plain => {}
            Shape::Created => {
                answer.instance_id = instance_id(&object, "instanceId", problems);
                if let Some(app) = object.get("appInfo") {
                    app_info(app, "appInfo", &object, key, credentials, problems);
                }
            }
            Shape::Query(id) => query_info(&object, id, key, credentials, problems),
        }
    }
    answer
}

fn json_object(received: &Received, problems: &mut Vec<String>) -> Option<Map<String, Value>> {
    let html = received
        .content_type
        .as_deref()
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"))
        || received.body.trim_ascii_start().starts_with(b"<");
    if html {
        problems.push(format!(
            "the answer is HTML, not JSON (a web server or proxy page instead of the interface?): {}",
            excerpt(&received.body)
        ));
        return None;
    }
    match serde_json::from_slice::<Value>(&received.body) {
        Ok(Value::Object(object)) => Some(object),
        Ok(_) => {
            problems.push(format!(
                "the answer is JSON but not an object: {}",
                excerpt(&received.body)
            ));
            None
        }
        Err(error) => {
            problems.push(format!(
                "the answer is not JSON ({error}): {}",
                excerpt(&received.body)
            ));
            None
        }
    }
}

fn result_code(
    object: &Map<String, Value>,
    expect: &Expect,
    problems: &mut Vec<String>,
) -> Option<String> {
    let code = match object.get("resultCode") {
        Some(Value::String(code)) => code.clone(),
        Some(other) => {
            problems.push(format!("resultCode is {other}, not a string of six digits"));
            return None;
        }
        None => {
            problems.push("the answer has no resultCode".into());
            return None;
        }
    };
    let expected = expect.codes.join(" or ");
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(format!("resultCode {code:?} is not six digits (spec §5)"));
    } else if !SPEC_CODES.contains(&code.as_str()) {
        problems.push(format!(
            "resultCode {code} is not one of the spec's result codes (§5), so KooGallery cannot \
             tell what it means; expected {expected}"
        ));
    } else if !expect.codes.contains(&code.as_str()) {
        let msg = object
            .get("resultMsg")
            .and_then(Value::as_str)
            .map(|m| format!(" ({m:?})"))
            .unwrap_or_default();
        // 000004 reads as "being processed": KooGallery waits and polls instead of failing.
        let hint = if code == "000004" {
            "; 000004 (request being processed) is the answer of an asynchronous newInstance only"
        } else {
            ""
        };
        problems.push(format!(
            "resultCode is {code}{msg}, expected {expected}{hint}"
        ));
    }
    Some(code)
}

fn instance_id(
    object: &Map<String, Value>,
    field: &str,
    problems: &mut Vec<String>,
) -> Option<String> {
    match object.get(field) {
        Some(Value::String(id)) if id.trim().is_empty() => {
            problems.push(format!("{field} is empty"));
            None
        }
        Some(Value::String(id)) => {
            if id.chars().count() > 64 {
                problems.push(format!(
                    "{field} is {} characters long, at most 64 allowed (spec §1)",
                    id.chars().count()
                ));
            }
            Some(id.clone())
        }
        Some(_) => {
            problems.push(format!("{field} is not a string"));
            None
        }
        None => {
            problems.push(format!("the answer has no {field}"));
            None
        }
    }
}

fn query_info(
    object: &Map<String, Value>,
    id: &str,
    key: &str,
    credentials: Credentials,
    problems: &mut Vec<String>,
) {
    let Some(Value::Array(info)) = object.get("info") else {
        problems.push("the answer has no info array (spec §3.2)".into());
        return;
    };
    let mut listed = false;
    for (i, entry) in info.iter().enumerate() {
        let Some(entry) = entry.as_object() else {
            problems.push(format!("info[{i}] is not an object"));
            continue;
        };
        match entry.get("instanceId").and_then(Value::as_str) {
            Some(found) => listed |= found == id,
            None => problems.push(format!("info[{i}].instanceId is missing")),
        }
        if let Some(app) = entry.get("appInfo") {
            app_info(
                app,
                &format!("info[{i}].appInfo"),
                object,
                key,
                credentials,
                problems,
            );
        }
    }
    if !listed {
        problems.push(format!("info does not list instance {id}"));
    }
}

/// AppInfo limits (§3.2) and, where credentials are encrypted, their decryption (§2.5). The
/// limits apply to the fields as sent, ciphertext included.
fn app_info(
    app: &Value,
    where_: &str,
    answer: &Map<String, Value>,
    key: &str,
    credentials: Credentials,
    problems: &mut Vec<String>,
) {
    let Some(app) = app.as_object() else {
        problems.push(format!("{where_} is not an object"));
        return;
    };
    match app.get("frontEndUrl") {
        Some(Value::String(url)) if !url.trim().is_empty() => {}
        _ => problems.push(format!(
            "{where_}.frontEndUrl is missing (mandatory, spec §3.2)"
        )),
    }
    for (field, max) in [
        ("frontEndUrl", 512),
        ("adminUrl", 512),
        ("userName", 128),
        ("password", 128),
        ("memo", 1024),
    ] {
        match app.get(field) {
            Some(Value::String(text)) if text.chars().count() > max => problems.push(format!(
                "{where_}.{field} is {} characters long, at most {max} allowed",
                text.chars().count()
            )),
            Some(Value::String(_) | Value::Null) | None => {}
            Some(_) => problems.push(format!("{where_}.{field} is not a string")),
        }
    }
    let encrypt_type = answer.get("encryptType").and_then(Value::as_str);
    let encrypted = credentials == Credentials::Encrypted || encrypt_type.is_some();
    if !encrypted {
        return;
    }
    let size = match KeySize::from_encrypt_type(encrypt_type.unwrap_or("1")) {
        Ok(size) => size,
        Err(_) => {
            problems.push(format!(
                "encryptType is {:?}: \"1\" (AES-256) or \"2\" (AES-128) expected",
                encrypt_type.unwrap_or_default()
            ));
            return;
        }
    };
    let cipher = FieldCipher::new(key, size);
    for field in ["userName", "password"] {
        if let Some(Value::String(text)) = app.get(field)
            && let Err(error) = cipher.decrypt(text)
        {
            problems.push(format!(
                "{where_}.{field} does not decrypt with {size:?} under the access key \
                 (IV + Base64(AES-CBC), key from SHA1PRNG, spec §2.5): {error}"
            ));
        }
    }
}

/// The one plaintext that every one of `ids` decrypts to under the access key (§2.5 format,
/// either key size), if they do: a single id encrypted under a fresh IV each time.
pub fn one_id_encrypted(key: &str, ids: &[&str]) -> Option<String> {
    [KeySize::Aes256, KeySize::Aes128]
        .into_iter()
        .find_map(|size| {
            let cipher = FieldCipher::new(key, size);
            let plain: Vec<String> = ids
                .iter()
                .map(|id| cipher.decrypt(id).ok())
                .collect::<Option<_>>()?;
            let first = plain.first()?;
            plain.iter().all(|p| p == first).then(|| first.clone())
        })
}

/// Why `Body-Sign` does not prove these exact bytes came from the key's holder, naming the
/// known mistakes (spec §2.4): a key + timeStamp key, a body re-serialised after signing, a
/// header in another format.
pub fn body_sign_problem(key: &str, received: &Received, time: &str) -> Option<String> {
    let Some(header) = received.body_sign.as_deref() else {
        return Some(
            "no Body-Sign header: every answer must carry one, error answers included (spec §2.4)"
                .into(),
        );
    };
    let body = &received.body;
    // The documented form exactly (spec §2.4, D4): KooGallery's parser is not public, so
    // only the documented spelling is known to be accepted.
    if header.trim() == signature::body_sign(key, body) {
        return None;
    }
    let Some(normalised) = lenient_header(header) else {
        return Some(format!(
            "Body-Sign {header:?} is malformed: expected sign_type=\"HMAC-SHA256\", signature= \"<Base64>\""
        ));
    };
    if signature::verify_body_sign(key, body, &normalised) {
        return Some(format!(
            "Body-Sign {header:?} carries the right signature in the wrong format: expected \
             sign_type=\"HMAC-SHA256\", signature= \"<Base64>\" (spec §2.4)"
        ));
    }
    if signature::verify_body_sign(&format!("{key}{time}"), body, &normalised) {
        return Some(format!(
            "Body-Sign is keyed with key + timeStamp ({time}): it must be keyed with the access key alone (spec §2.4)"
        ));
    }
    for (how, bytes) in reserialisations(body) {
        if signature::verify_body_sign(key, &bytes, &normalised) {
            return Some(format!(
                "Body-Sign was computed over the same JSON {how}, not over the bytes sent: the body \
                 was re-serialised after signing; sign exactly the bytes you send (spec §2.4)"
            ));
        }
    }
    Some(
        "Body-Sign does not match the bytes received under the access key: another key, or \
         another body, was signed"
            .into(),
    )
}

/// The Base64 signature of a header in any near-documented form, rebuilt in the documented one.
fn lenient_header(header: &str) -> Option<String> {
    let (_, rest) = header.split_once("signature=")?;
    let b64: String = rest
        .trim_start()
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .collect();
    (!b64.is_empty()).then(|| format!("sign_type=\"HMAC-SHA256\", signature= \"{b64}\""))
}

/// Other serialisations of the JSON received that a framework commonly writes after a body
/// was signed, each with a description.
fn reserialisations(body: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![
        (
            "with a space after each ':' and ','",
            respace(body, ": ", ", "),
        ),
        ("without whitespace", respace(body, ":", ",")),
        ("with a trailing newline", [body, b"\n"].concat()),
        ("without surrounding whitespace", body.trim_ascii().to_vec()),
    ];
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        out.push(("with its keys sorted", value.to_string().into_bytes()));
        if let Ok(pretty) = serde_json::to_vec_pretty(&value) {
            out.push(("pretty-printed", pretty));
        }
        out.push((
            "with non-ASCII characters as \\u escapes",
            json::to_ascii_vec(&value),
        ));
    }
    out.retain(|(_, bytes)| bytes != body);
    out
}

/// The JSON with the whitespace outside strings replaced: `colon` after each key, `comma`
/// between items. Key order and string escapes are kept as they are.
fn respace(body: &[u8], colon: &str, comma: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut in_string, mut escaped) = (false, false);
    for &b in body {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                out.push(b);
            }
            b' ' | b'\n' | b'\r' | b'\t' => {}
            b':' => out.extend_from_slice(colon.as_bytes()),
            b',' => out.extend_from_slice(comma.as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// At most 300 characters of a body, for messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(an empty body)".into();
    }
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test-access-key-0001";

    fn received(body: &[u8], body_sign: Option<String>) -> Received {
        Received {
            status: 200,
            content_type: Some("application/json".into()),
            body_sign,
            body: body.to_vec(),
        }
    }

    #[test]
    fn body_sign_mistakes_are_named() {
        let sent = br#"{"resultCode":"000000","resultMsg":"success."}"#;
        let spaced = br#"{"resultCode": "000000", "resultMsg": "success."}"#;
        let good = signature::body_sign(KEY, sent);
        let cases = [
            (None, "no Body-Sign header"),
            (Some("HMAC-SHA256 abc".to_owned()), "is malformed"),
            (
                Some(good.replace("= \"", "=").replace("\"\"", "")),
                "wrong format",
            ),
            (
                Some(signature::body_sign(&format!("{KEY}1700000000000"), sent)),
                "keyed with key + timeStamp",
            ),
            (
                Some(signature::body_sign(KEY, spaced)),
                "with a space after each ':' and ','",
            ),
            (
                Some(signature::body_sign("another key", sent)),
                "does not match",
            ),
        ];
        for (header, expected) in cases {
            let problem = body_sign_problem(KEY, &received(sent, header.clone()), "1700000000000")
                .unwrap_or_else(|| panic!("{header:?} accepted"));
            assert!(problem.contains(expected), "{header:?}: {problem}");
        }
        assert_eq!(
            body_sign_problem(KEY, &received(sent, Some(good)), "1"),
            None
        );
    }

    #[test]
    fn one_id_under_random_ivs_is_told_from_two_ids() {
        let cipher = FieldCipher::new(KEY, KeySize::Aes128);
        let (a, b) = (cipher.encrypt("inst-1"), cipher.encrypt("inst-1"));
        assert_ne!(a, b);
        assert_eq!(one_id_encrypted(KEY, &[&a, &b]).as_deref(), Some("inst-1"));
        let other = cipher.encrypt("inst-2");
        assert_eq!(one_id_encrypted(KEY, &[&a, &other]), None);
        assert_eq!(one_id_encrypted(KEY, &["inst-1", "inst-2"]), None);
    }

    #[test]
    fn respacing_keeps_strings_and_key_order() {
        let body = br#"{"b":"x, y: \"z\"","a":[1,2]}"#;
        assert_eq!(
            respace(body, ": ", ", "),
            br#"{"b": "x, y: \"z\"", "a": [1, 2]}"#.to_vec()
        );
    }

    #[test]
    fn v1_credentials_must_decrypt_under_the_key() {
        let cipher = FieldCipher::new(KEY, KeySize::Aes128);
        let good = format!(
            r#"{{"resultCode":"000000","encryptType":"2","instanceId":"i","appInfo":{{"frontEndUrl":"https://a","userName":"{}"}}}}"#,
            cipher.encrypt("admin")
        );
        let plain = r#"{"resultCode":"000000","instanceId":"i","appInfo":{"frontEndUrl":"https://a","userName":"admin"}}"#;
        let check = |body: &str, credentials| {
            let exchange = Exchange {
                request: super::super::client::Request::post(
                    &reqwest::Url::parse("https://m.example/").unwrap(),
                    "",
                    Vec::new(),
                    String::new(),
                ),
                result: Ok(received(
                    body.as_bytes(),
                    Some(signature::body_sign(KEY, body.as_bytes())),
                )),
                elapsed: std::time::Duration::ZERO,
            };
            inspect(&exchange, &Expect::created(SUCCESS), KEY, credentials).problems
        };
        assert_eq!(check(&good, Credentials::Encrypted), Vec::<String>::new());
        assert_eq!(
            check(plain, Credentials::PlainUnlessTyped),
            Vec::<String>::new()
        );
        let problems = check(plain, Credentials::Encrypted);
        assert!(
            problems.len() == 1 && problems[0].contains("appInfo.userName does not decrypt"),
            "{problems:?}"
        );
    }
}
