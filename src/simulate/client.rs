//! Requests as KooGallery sends them, and what came back: the signature parameters appended
//! to the production address (§2.2) or the `authToken` over the query (§2.1), sent with
//! certificate verification on and KooGallery's timeout.

use crate::protocol::signature::{self, Variant};
use crate::protocol::v1::V1Request;
use reqwest::Url;
use serde::Serialize;
use std::error::Error as _;
use std::time::{Duration, Instant};

/// The content type KooGallery sends with POST bodies (spec §3).
pub const JSON_CONTENT_TYPE: &str = "application/json;charset=utf8";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
}

/// One request, exactly as it goes on the wire.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub url: String,
    /// POST bodies only.
    pub body: Option<Vec<u8>>,
    /// The time signed into the request (V2 `timestamp`, V1 `timeStamp`): an answer signed with
    /// key + this time is a known mistake (spec §2.4).
    pub time: String,
    /// The variant of a V2 signature made correctly over the exact body sent (D1); `None` for
    /// requests signed otherwise, or deliberately wrongly.
    pub variant: Option<Variant>,
}

impl Request {
    /// A POST to `url` with `signature`, `timestamp` and `nonce` for `key` over `body`.
    pub fn signed_post(url: &Url, key: &str, body: Vec<u8>, timestamp_ms: i64) -> Self {
        Self::signed_post_with(url, key, body, timestamp_ms, Variant::A)
    }

    /// As [`Request::signed_post`], with the payload hash of `variant` (D1).
    pub fn signed_post_with(
        url: &Url,
        key: &str,
        body: Vec<u8>,
        timestamp_ms: i64,
        variant: Variant,
    ) -> Self {
        let signed = body.clone();
        Self {
            variant: Some(variant),
            ..Self::signed_over(url, key, body, &signed, timestamp_ms, variant)
        }
    }

    /// A POST of `body` whose signature covers `signed` instead (D1a: the canonical form of
    /// `body`, as Huawei's sample server verifies it).
    pub fn signed_over(
        url: &Url,
        key: &str,
        body: Vec<u8>,
        signed: &[u8],
        timestamp_ms: i64,
        variant: Variant,
    ) -> Self {
        let timestamp = timestamp_ms.to_string();
        let nonce = nonce();
        let sig = signature::sign(key, &nonce, &timestamp, signed, variant);
        Self::post(
            url,
            &format!("signature={sig}&timestamp={timestamp}&nonce={nonce}"),
            body,
            timestamp,
        )
    }

    /// A POST to `url` with `query` appended and `body`, for requests signed some other way.
    pub fn post(url: &Url, query: &str, body: Vec<u8>, time: String) -> Self {
        Self {
            method: Method::Post,
            url: append_query(url, query),
            body: Some(body),
            time,
            variant: None,
        }
    }

    /// A V1 GET: `params` (URL-encoded as KooGallery does), `timeStamp`, then the `authToken`
    /// computed under `key` over every query parameter, those already in `url` included.
    pub fn v1_get(url: &Url, key: &str, params: &[(&str, String)], time_stamp: &str) -> Self {
        let query = v1_query(params, time_stamp);
        let token = v1_token(url, key, &query);
        Self::v1_unsigned(url, &query, Some(&token), time_stamp)
    }

    /// A V1 GET with exactly this query, and `auth_token` appended when there is one.
    pub fn v1_unsigned(url: &Url, query: &str, auth_token: Option<&str>, time_stamp: &str) -> Self {
        let query = match auth_token {
            Some(token) => format!("{query}&authToken={}", encode(token)),
            None => query.to_owned(),
        };
        Self {
            method: Method::Get,
            url: append_query(url, &query),
            body: None,
            time: time_stamp.to_owned(),
            variant: None,
        }
    }

    /// The request as a `curl` command, like seller center's "生成请求命令".
    pub fn curl(&self) -> String {
        let mut out = match self.method {
            Method::Get => format!("curl {}", shell_quote(&self.url)),
            Method::Post => format!(
                "curl -X POST {} -H {}",
                shell_quote(&self.url),
                shell_quote(&format!("Content-Type: {JSON_CONTENT_TYPE}"))
            ),
        };
        if let Some(body) = &self.body {
            out.push_str(" --data-raw ");
            out.push_str(&shell_quote(&String::from_utf8_lossy(body)));
        }
        out
    }
}

/// The query KooGallery sends: the parameters in the given order, then `timeStamp`, each value
/// form-encoded as Java's `URLEncoder` does (the servlet decodes it, §2.1).
pub fn v1_query(params: &[(&str, String)], time_stamp: &str) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, value) in params {
        query.append_pair(name, value);
    }
    query.append_pair("timeStamp", time_stamp);
    query.finish()
}

/// The `authToken` the server computes for `query` sent to `url` (§2.1): every parameter
/// counts, including any the production address already carries.
#[expect(clippy::expect_used, reason = "the query always carries timeStamp")]
pub fn v1_token(url: &Url, key: &str, query: &str) -> String {
    let all = match url.query() {
        Some(existing) if !existing.is_empty() => format!("{existing}&{query}"),
        _ => query.to_owned(),
    };
    V1Request::from_query(&all)
        .sign(key)
        .expect("the query always carries timeStamp")
}

/// A fresh nonce in the form of KooGallery's examples: 64 upper-case hex characters.
pub fn nonce() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
    .to_uppercase()
}

fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// `url` with `query` appended after any query it has; a fragment is never sent.
fn append_query(url: &Url, query: &str) -> String {
    let mut base = url.clone();
    base.set_fragment(None);
    match base.query() {
        Some("") => format!("{base}{query}"),
        Some(_) => format!("{base}&{query}"),
        None => format!("{base}?{query}"),
    }
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// An answer, as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub status: u16,
    pub content_type: Option<String>,
    pub body_sign: Option<String>,
    pub body: Vec<u8>,
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No connection, or no TLS session: nothing further can be checked.
    Unreachable(String),
    /// No complete answer within KooGallery's timeout.
    Timeout(Duration),
    /// Anything else that went wrong in transit.
    Broken(String),
}

impl Failure {
    pub fn describe(&self) -> String {
        match self {
            Self::Unreachable(cause) => format!("cannot connect: {cause}"),
            Self::Timeout(limit) => format!(
                "no answer within {} ms: KooGallery gives up after 5 s and counts the call as failed",
                limit.as_millis()
            ),
            Self::Broken(cause) => format!("the answer could not be read: {cause}"),
        }
    }
}

/// A request and what came of it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub request: Request,
    pub result: Result<Received, Failure>,
    pub elapsed: Duration,
}

/// The HTTP client: rustls with the web PKI roots, certificate verification on (KooGallery
/// requires a certificate from a trusted CA, §1), no redirects (KooGallery does not follow
/// them), and KooGallery's timeout.
pub fn build(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("koogate-simulate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| chain(&e))
}

pub async fn send(client: &reqwest::Client, timeout: Duration, request: Request) -> Exchange {
    let started = Instant::now();
    let builder = match request.method {
        Method::Get => client.get(&request.url),
        Method::Post => client
            .post(&request.url)
            .header(reqwest::header::CONTENT_TYPE, JSON_CONTENT_TYPE)
            .body(request.body.clone().unwrap_or_default()),
    };
    let result = match builder.send().await {
        Ok(response) => read(response, timeout).await,
        Err(error) => Err(classify(&error, timeout)),
    };
    Exchange {
        request,
        result,
        elapsed: started.elapsed(),
    }
}

async fn read(response: reqwest::Response, timeout: Duration) -> Result<Received, Failure> {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let content_type = header("content-type");
    let body_sign = header("body-sign");
    let body = response
        .bytes()
        .await
        .map_err(|e| classify(&e, timeout))?
        .to_vec();
    Ok(Received {
        status,
        content_type,
        body_sign,
        body,
    })
}

fn classify(error: &reqwest::Error, timeout: Duration) -> Failure {
    if error.is_timeout() {
        return Failure::Timeout(timeout);
    }
    let cause = chain(error);
    if !error.is_connect() {
        return Failure::Broken(cause);
    }
    let lower = cause.to_ascii_lowercase();
    let tls = [
        "certificate",
        "tls",
        "handshake",
        "corrupt message",
        "alert",
    ]
    .iter()
    .any(|word| lower.contains(word));
    Failure::Unreachable(if tls {
        format!(
            "the TLS handshake failed (KooGallery requires TLS 1.2 or later and a certificate from \
             a trusted CA, spec §1): {cause}"
        )
    } else {
        cause
    })
}

/// The causes of an error, without the request URL the outermost one repeats, so a TLS or DNS
/// failure names its real reason.
fn chain(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "test-access-key-0001";

    #[test]
    fn signature_parameters_follow_any_existing_query() {
        let cases = [
            (
                "https://m.example/koogallery/saas",
                "https://m.example/koogallery/saas?a=1",
            ),
            (
                "https://m.example/p?tenant=7",
                "https://m.example/p?tenant=7&a=1",
            ),
            ("https://m.example/p?", "https://m.example/p?a=1"),
            ("https://m.example/p#frag", "https://m.example/p?a=1"),
        ];
        for (url, expected) in cases {
            let url = Url::parse(url).unwrap();
            assert_eq!(append_query(&url, "a=1"), expected, "{url}");
        }
    }

    #[test]
    fn v2_requests_verify_with_the_server_side_code() {
        let url = Url::parse("https://m.example/p?tenant=7").unwrap();
        let body = br#"{"activity":"newInstance"}"#.to_vec();
        let request = Request::signed_post(&url, KEY, body.clone(), 1_680_508_066_618);
        let query = request.url.split_once('?').unwrap().1;
        let params = signature::SignedParams::from_query(query);
        let keys = signature::KeyRing::from_list(KEY);
        assert!(signature::verify(&keys, &params, &body, false, 1_680_508_066_618).is_ok());
        assert!(query.starts_with("tenant=7&signature="), "{query}");
    }

    #[test]
    fn v1_tokens_match_spec_vector_1_and_cover_existing_parameters() {
        let url = Url::parse("https://m.example/saas").unwrap();
        let params = [
            ("activity", "newInstance".to_owned()),
            (
                "businessId",
                "61e834ba-7b97-4418-b8f7-e5345137278c".to_owned(),
            ),
            ("customerId", "68cbc86abc2018ab880d92f36422fa0e".to_owned()),
            ("expireTime", "20200727153156".to_owned()),
            ("orderId", "CS1906666666ABCDE".to_owned()),
            ("productId", "00301-666666-0--0".to_owned()),
            ("testFlag", "1".to_owned()),
        ];
        let request = Request::v1_get(&url, KEY, &params, "20200727073711903");
        assert!(
            request
                .url
                .ends_with("&authToken=rjND%2BEtzdPJCNyqrLt%2FLHR3JrNBZA%2FGGJbgOmLk2tqE%3D"),
            "{}",
            request.url
        );

        let with_query = Url::parse("https://m.example/saas?tenant=a+b").unwrap();
        let request = Request::v1_get(&with_query, KEY, &params, "20200727073711903");
        let received = V1Request::from_query(request.url.split_once('?').unwrap().1);
        assert_eq!(received.get("tenant"), Some("a b"));
        assert_eq!(received.verify_token([KEY]), Ok(0));
    }

    #[test]
    fn curl_commands_quote_for_the_shell() {
        let url = Url::parse("https://m.example/p").unwrap();
        let request = Request::post(&url, "x=1", br#"{"memo":"it's"}"#.to_vec(), "1".into());
        assert_eq!(
            request.curl(),
            r#"curl -X POST 'https://m.example/p?x=1' -H 'Content-Type: application/json;charset=utf8' --data-raw '{"memo":"it'\''s"}'"#
        );
    }
}
