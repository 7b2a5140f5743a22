//! The client of the KooGallery open APIs (spec §8): requests signed with the merchant's
//! AK/SK (APIG `SDK-HMAC-SHA256`, §8.1), TLS certificates verified (rustls with the
//! WebPKI roots), connect and request timeouts, the fallback host tried when the primary
//! cannot be connected to, and every documented error code turned into a typed error.

use crate::config::{self, Credentials, Settings};
use crate::metrics::Metrics;
use crate::protocol::apig::{self, HttpRequest};
use crate::protocol::order::{
    ActivateRequest, LicenseCodeInfo, MKT_SUCCESS, OrderInfo, QueryOrderResponse, paths,
};
use reqwest::{Method, Url};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::time::Duration;

/// Codes that mean success: `MKT.0000` (query order, usage push), `CBC.0000` (upload),
/// `92020000` (license codes).
const SUCCESS_CODES: [&str; 3] = [MKT_SUCCESS, "CBC.0000", "92020000"];

/// The largest open-API answer read: 查询订单, the largest, is a few KiB.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The path of 字符串/文件流上传 (§8.3) for `event_id`, which must be a plain token (at
/// most 64 letters, digits, `-` or `_`) so that it can only name one event.
pub fn market_event_file_path(event_id: &str) -> Result<String, MarketError> {
    let plain = (1..=64).contains(&event_id.len())
        && event_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !plain {
        return Err(MarketError::Request(format!(
            "event id {event_id:?} is not a token of at most 64 letters, digits, - or _"
        )));
    }
    Ok(paths::MARKET_EVENT_FILE.replace("{event_id}", event_id))
}

/// A call to the open APIs failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    /// No AK/SK is configured, so nothing can be signed.
    #[error(
        "no marketplace credentials: set KOOGATE_MARKETPLACE_AK and KOOGATE_MARKETPLACE_SK (or their _FILE forms)"
    )]
    NotConfigured,
    /// The request could not be signed or built.
    #[error("cannot build the request: {0}")]
    Request(String),
    /// No host (primary nor fallback) accepted a connection.
    #[error("cannot connect to the marketplace ({hosts}): {detail}")]
    Unreachable { hosts: String, detail: String },
    /// The connection opened but the answer did not come in time.
    #[error("the marketplace did not answer within {timeout_ms} ms")]
    Timeout { timeout_ms: u64 },
    /// The connection broke mid-call.
    #[error("the call to the marketplace broke off: {0}")]
    Transport(String),
    /// The answer is not the JSON the API documents.
    #[error("the marketplace answered HTTP {status} with a malformed body: {detail}")]
    Malformed { status: u16, detail: String },
    /// The API gateway refused the call (`APIGW.*`).
    #[error("the API gateway refused the call: {code} (HTTP {status}, {meaning}): {message}", meaning = gateway_meaning(code))]
    Gateway {
        status: u16,
        code: String,
        message: String,
    },
    /// The open API answered with an error code.
    #[error("the marketplace answered {code} (HTTP {status}, {meaning}): {message}", code = code.as_str(), meaning = code.meaning())]
    Api {
        status: u16,
        code: ApiCode,
        message: String,
    },
}

impl MarketError {
    /// Whether the same call could succeed later without anyone changing anything: an
    /// outage, a timeout, a throttle, an internal error of the marketplace. Errors about
    /// the credentials or the request itself are not retryable.
    pub fn retryable(&self) -> bool {
        match self {
            Self::NotConfigured | Self::Request(_) => false,
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Transport(_) => true,
            Self::Malformed { .. } => true,
            Self::Gateway { status, code, .. } => {
                *status >= 500 || *status == 429 || code == "APIGW.0308"
            }
            Self::Api { status, code, .. } => code.retryable().unwrap_or(*status >= 500),
        }
    }
}

/// The documented error codes of the open APIs (§6.3, §8.2–§8.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCode {
    /// `MKT.0999`
    InternalError,
    /// `MKT.0100`
    InputCheckFailed,
    /// `MKT.0101`
    InvalidParameter,
    /// `MKT.0102`
    InvalidBodySign,
    /// `MKT.0199`
    RequestParameterError,
    /// `MKT.0150`
    IllegalOperation,
    /// `MKT.0151`
    NoAuthority,
    /// `MKT.0154`
    IllegalToken,
    /// `MKT.0250`
    RateLimited,
    /// `MKT.9001`
    InstanceNotFound,
    /// `MKT.9002`
    InvalidUsage,
    /// `MKT.9003`
    TooManyRecords,
    /// `MKT.9004`
    BeginTimeTooOld,
    /// `CBC.0150`
    UploadIllegalOperation,
    /// `CBC.0101`
    UploadInvalidParameter,
    /// `CBC.0999`
    UploadInternalError,
    /// `91381033`…`91381038`, `91380150`: License upload refusals.
    LicenseRefused(String),
    /// `92020001`
    LicenseUnauthorized,
    /// `92020002`
    LicenseInvalidParameter,
    /// `92020004`
    LicenseNotYetReceived,
    /// `92020005`
    LicenseNotFound,
    /// Any other code, as sent.
    Other(String),
}

/// (wire code, variant, meaning, retryable); `None` leaves it to the HTTP status.
type CodeRow = (&'static str, fn() -> ApiCode, &'static str, Option<bool>);

const CODES: [CodeRow; 20] = [
    (
        "MKT.0999",
        || ApiCode::InternalError,
        "internal error",
        Some(true),
    ),
    (
        "MKT.0100",
        || ApiCode::InputCheckFailed,
        "input check failed",
        Some(false),
    ),
    (
        "MKT.0101",
        || ApiCode::InvalidParameter,
        "invalid parameter",
        Some(false),
    ),
    (
        "MKT.0102",
        || ApiCode::InvalidBodySign,
        "invalid body sign",
        Some(false),
    ),
    (
        "MKT.0199",
        || ApiCode::RequestParameterError,
        "request parameter error",
        Some(false),
    ),
    (
        "MKT.0150",
        || ApiCode::IllegalOperation,
        "illegal operation: the resource is not owned by this AK",
        Some(false),
    ),
    (
        "MKT.0151",
        || ApiCode::NoAuthority,
        "no authority",
        Some(false),
    ),
    (
        "MKT.0154",
        || ApiCode::IllegalToken,
        "illegal token: the AK/SK signature was refused",
        Some(false),
    ),
    (
        "MKT.0250",
        || ApiCode::RateLimited,
        "access frequency over the limit",
        Some(true),
    ),
    (
        "MKT.9001",
        || ApiCode::InstanceNotFound,
        "instance not found",
        Some(false),
    ),
    (
        "MKT.9002",
        || ApiCode::InvalidUsage,
        "invalid usage entities",
        Some(false),
    ),
    (
        "MKT.9003",
        || ApiCode::TooManyRecords,
        "too many records",
        Some(false),
    ),
    (
        "MKT.9004",
        || ApiCode::BeginTimeTooOld,
        "beginTime is more than 21 days old",
        Some(false),
    ),
    (
        "CBC.0150",
        || ApiCode::UploadIllegalOperation,
        "illegal operation",
        Some(false),
    ),
    (
        "CBC.0101",
        || ApiCode::UploadInvalidParameter,
        "invalid parameter",
        Some(false),
    ),
    (
        "CBC.0999",
        || ApiCode::UploadInternalError,
        "internal error",
        Some(true),
    ),
    (
        "92020001",
        || ApiCode::LicenseUnauthorized,
        "unauthorized (HTTP 500: internal error)",
        None,
    ),
    (
        "92020002",
        || ApiCode::LicenseInvalidParameter,
        "invalid parameter",
        Some(false),
    ),
    (
        "92020004",
        || ApiCode::LicenseNotYetReceived,
        "the buyer has not yet received the license code",
        Some(true),
    ),
    (
        "92020005",
        || ApiCode::LicenseNotFound,
        "license code does not exist",
        Some(false),
    ),
];

/// The License upload refusals of §8.3, by code.
const LICENSE_REFUSALS: [(&str, &str, bool); 7] = [
    ("91381033", "license resource invalid", false),
    ("91381034", "license application invalid", false),
    ("91381035", "no remaining amount in the period", false),
    ("91381036", "internal error", true),
    ("91381037", "invalid license format", false),
    ("91381038", "license application denied", false),
    ("91380150", "role permission denied", false),
];

impl ApiCode {
    /// The code as sent.
    pub fn parse(code: &str) -> Self {
        if let Some((_, variant, ..)) = CODES.iter().find(|row| row.0 == code) {
            return variant();
        }
        if LICENSE_REFUSALS.iter().any(|row| row.0 == code) {
            return Self::LicenseRefused(code.to_owned());
        }
        Self::Other(code.to_owned())
    }

    /// The wire form.
    pub fn as_str(&self) -> &str {
        match self {
            Self::LicenseRefused(code) | Self::Other(code) => code,
            known => CODES
                .iter()
                .find(|row| row.1() == *known)
                .map_or("", |row| row.0),
        }
    }

    /// The documented meaning.
    pub fn meaning(&self) -> &'static str {
        match self {
            Self::LicenseRefused(code) => LICENSE_REFUSALS
                .iter()
                .find(|row| row.0 == code)
                .map_or("license refused", |row| row.1),
            Self::Other(_) => "undocumented code",
            known => CODES
                .iter()
                .find(|row| row.1() == *known)
                .map_or("", |row| row.2),
        }
    }

    /// Whether the code says to try again later; `None` when only the HTTP status tells.
    pub fn retryable(&self) -> Option<bool> {
        match self {
            Self::LicenseRefused(code) => LICENSE_REFUSALS
                .iter()
                .find(|row| row.0 == code)
                .map(|row| row.2),
            Self::Other(_) => None,
            known => CODES
                .iter()
                .find(|row| row.1() == *known)
                .and_then(|row| row.3),
        }
    }
}

fn gateway_meaning(code: &str) -> &'static str {
    match code {
        "APIGW.0301" => "incorrect IAM authentication information: the AK/SK signature was refused",
        "APIGW.0308" => "throttled",
        _ => "API gateway error",
    }
}

/// One open-API call, before signing.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a Method,
    /// The API path, e.g. [`paths::QUERY_ORDER`]; segments are percent-encoded here.
    pub path: &'a str,
    /// Decoded query parameters; sent in canonical order and encoding.
    pub query: &'a [(&'a str, &'a str)],
    /// Sent and signed when the call has a body.
    pub content_type: Option<&'a str>,
    /// Further headers to send and sign (e.g. the usage push's `ts`, `nonce`, `signature`).
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes; its SHA-256 is signed.
    pub body: &'a [u8],
}

/// An answer as received, whatever its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The base URL that answered (the primary or the fallback).
    pub base: Url,
}

/// What 查询订单 answered.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderAnswer {
    pub order: OrderInfo,
    /// The `orderInfo` object exactly as received (unknown keys included), as JSON.
    pub order_info_json: String,
    /// The whole answer body, as received.
    pub body: Vec<u8>,
}

/// Signs and sends open-API calls. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    bases: Vec<Url>,
    credentials: Option<Credentials>,
    stage: Option<String>,
    request_timeout: Duration,
    /// Where each call is counted, when the client belongs to a server.
    metrics: Option<Metrics>,
}

/// A signed call, ready to send.
#[derive(Debug)]
struct Prepared {
    url: Url,
    headers: Vec<(String, String)>,
}

/// Why one host could not be used.
enum HostError {
    /// No connection: the next host may work.
    Connect(String),
    Other(MarketError),
}

impl Client {
    /// A client for the `[marketplace]` settings. URLs were validated when the settings
    /// loaded.
    #[expect(
        clippy::expect_used,
        reason = "Settings::load checked the URLs; the client builder fails only without a TLS backend, which is compiled in"
    )]
    pub fn new(settings: &config::Marketplace, credentials: Option<Credentials>) -> Self {
        let request_timeout = Duration::from_millis(settings.request_timeout_ms);
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(request_timeout)
            // http:// is accepted for a loopback mock only, checked when the settings load.
            .https_only(false)
            // A redirect would carry the signed headers to a host koogate never chose; a
            // 3xx is an answer like any other, and not the JSON an API documents.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("koogate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the TLS backend initialises");
        let bases = [&settings.url, &settings.fallback_url]
            .into_iter()
            .filter(|url| !url.is_empty())
            .map(|url| Url::parse(url).expect("marketplace URLs are validated at load"))
            .collect();
        Self {
            http,
            bases,
            credentials,
            stage: Some(settings.stage.clone()).filter(|s| !s.is_empty()),
            request_timeout,
            metrics: None,
        }
    }

    /// The client the loaded settings describe.
    pub fn from_settings(settings: &Settings) -> Self {
        Self::new(
            &settings.marketplace,
            settings.marketplace_credentials.clone(),
        )
    }

    /// The same client, counting its calls in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Whether an AK/SK is configured.
    pub fn is_configured(&self) -> bool {
        self.credentials.is_some()
    }

    /// Signs and sends a call to the primary host, then to the fallback if the primary
    /// cannot be connected to. Any answer is returned, whatever its status; see
    /// [`interpret`].
    pub async fn send(&self, request: &Request<'_>) -> Result<Answer, MarketError> {
        let credentials = self
            .credentials
            .as_ref()
            .ok_or(MarketError::NotConfigured)?;
        let mut refused = Vec::new();
        for base in &self.bases {
            let sent = self.send_to(base, request, credentials).await;
            if let Some(metrics) = &self.metrics {
                let api = crate::metrics::open_api_name(request.path);
                metrics.open_api(api, base.host_str().unwrap_or_default(), outcome(&sent));
            }
            match sent {
                Ok(answer) => return Ok(answer),
                Err(HostError::Connect(detail)) => {
                    tracing::warn!(host = %base, %detail, "cannot connect to the marketplace");
                    refused.push((base.to_string(), detail));
                }
                Err(HostError::Other(error)) => return Err(error),
            }
        }
        let hosts = refused
            .iter()
            .map(|(host, _)| host.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let detail = refused.pop().map(|(_, detail)| detail).unwrap_or_default();
        Err(MarketError::Unreachable { hosts, detail })
    }

    /// 查询订单 (§8.2): the order, or the line of it, with its details.
    #[expect(
        clippy::indexing_slicing,
        reason = "serde_json::Value gives Null for a missing key: reading it never panics"
    )]
    pub async fn query_order(
        &self,
        order_id: &str,
        order_line_id: Option<&str>,
    ) -> Result<OrderAnswer, MarketError> {
        let mut query = vec![("orderId", order_id)];
        if let Some(line) = order_line_id {
            query.push(("orderLineId", line));
        }
        let answer = self
            .send(&Request {
                method: &Method::GET,
                path: paths::QUERY_ORDER,
                query: &query,
                content_type: None,
                headers: &[],
                body: b"",
            })
            .await?;
        let json = interpret(&answer)?;
        let malformed = |detail: String| MarketError::Malformed {
            status: answer.status,
            detail,
        };
        let parsed: QueryOrderResponse =
            serde_json::from_value(json.clone()).map_err(|e| malformed(e.to_string()))?;
        let order = parsed
            .order_info
            .ok_or_else(|| malformed(format!("{MKT_SUCCESS} without orderInfo")))?;
        Ok(OrderAnswer {
            order,
            order_info_json: json["orderInfo"].to_string(),
            body: answer.body,
        })
    }

    /// 激活授权码 (§6.3): activates a license code and returns what KooGallery knows of
    /// it. `real_effect_time` (`yyyyMMddHHmmss`, UTC) is when it was actually delivered.
    #[expect(
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "the request is plain data; serde_json::Value gives Null for a missing key"
    )]
    pub async fn activate_license(
        &self,
        license: &str,
        real_effect_time: Option<&str>,
    ) -> Result<LicenseCodeInfo, MarketError> {
        let body = serde_json::to_vec(&ActivateRequest {
            license: license.to_owned(),
            real_effect_time: real_effect_time.map(str::to_owned),
        })
        .expect("the request serialises");
        let answer = self
            .send(&Request {
                method: &Method::POST,
                path: paths::LICENSE_ACTIVATE,
                query: &[],
                content_type: Some("application/json"),
                headers: &[],
                body: &body,
            })
            .await?;
        let json = interpret(&answer)?;
        // `license_code_info` is a JSON object sent as a JSON string.
        json["data"]["license_code_info"]
            .as_str()
            .ok_or("data.license_code_info is not a string".to_owned())
            .and_then(|info| {
                serde_json::from_str(info).map_err(|e| format!("data.license_code_info: {e}"))
            })
            .map_err(|detail| MarketError::Malformed {
                status: answer.status,
                detail,
            })
    }

    /// 字符串/文件流上传 (§8.3): uploads a License for the application `event_id` (a safe
    /// path segment, checked when the application arrived). The answer comes back as
    /// received, for [`interpret`] and the attempt record.
    pub async fn upload_license(
        &self,
        event_id: &str,
        body: &crate::protocol::license_upload::Body,
    ) -> Result<Answer, MarketError> {
        let path = paths::MARKET_EVENT_FILE.replace("{event_id}", event_id);
        self.send(&Request {
            method: &Method::POST,
            path: &path,
            query: &[],
            content_type: Some(&body.content_type),
            headers: &[],
            body: &body.bytes,
        })
        .await
    }

    async fn send_to(
        &self,
        base: &Url,
        request: &Request<'_>,
        credentials: &Credentials,
    ) -> Result<Answer, HostError> {
        let sdk_date = apig::format_sdk_date(chrono::Utc::now());
        let prepared = self
            .prepare(base, request, credentials, &sdk_date)
            .map_err(HostError::Other)?;
        let mut builder = self.http.request(request.method.clone(), prepared.url);
        for (name, value) in &prepared.headers {
            builder = builder.header(name, value);
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.to_vec());
        }
        let mut response = builder.send().await.map_err(|e| self.classify(e))?;
        let status = response.status().as_u16();
        let too_large = || {
            HostError::Other(MarketError::Malformed {
                status,
                detail: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
            })
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_ANSWER_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| HostError::Other(self.failure(e)))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            body,
            base: base.clone(),
        })
    }

    /// The URL and headers of a call to `base`, signed for `sdk_date`. The query is sent
    /// in its canonical form, so the gateway decodes exactly what was signed.
    fn prepare(
        &self,
        base: &Url,
        request: &Request<'_>,
        credentials: &Credentials,
        sdk_date: &str,
    ) -> Result<Prepared, MarketError> {
        // A dot segment would be resolved by the gateway to another API than was signed.
        if request
            .path
            .split('/')
            .any(|segment| matches!(segment, "." | ".."))
        {
            return Err(MarketError::Request(format!(
                "{:?} has a dot segment",
                request.path
            )));
        }
        let prefix = base.path().trim_end_matches('/');
        let path = format!("{prefix}{}", request.path);
        let mut url = base.clone();
        url.set_path(
            &path
                .split('/')
                .map(apig::uri_encode)
                .collect::<Vec<_>>()
                .join("/"),
        );
        let query = apig::canonical_query(request.query);
        url.set_query(Some(query.as_str()).filter(|q| !q.is_empty()));
        let host = match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => return Err(MarketError::Request(format!("{base} has no host"))),
        };
        let mut signed_headers: Vec<(&str, &str)> = Vec::new();
        if let Some(content_type) = request.content_type {
            signed_headers.push(("Content-Type", content_type));
        }
        if let Some(stage) = &self.stage {
            signed_headers.push(("X-Stage", stage));
        }
        signed_headers.extend_from_slice(request.headers);
        let signed = apig::sign(
            &HttpRequest {
                method: request.method.as_str(),
                path: &path,
                query: request.query,
                headers: &signed_headers,
                body: request.body,
            },
            &host,
            sdk_date,
            &credentials.ak,
            credentials.sk.expose_secret(),
        )
        .map_err(|e| MarketError::Request(e.to_string()))?;
        let mut headers = vec![
            ("Host".to_owned(), host),
            ("X-Sdk-Date".to_owned(), sdk_date.to_owned()),
        ];
        headers.extend(
            signed_headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        headers.push(("Authorization".to_owned(), signed.authorization));
        Ok(Prepared { url, headers })
    }

    fn classify(&self, error: reqwest::Error) -> HostError {
        if error.is_connect() {
            HostError::Connect(error_chain(&error))
        } else {
            HostError::Other(self.failure(error))
        }
    }

    fn failure(&self, error: reqwest::Error) -> MarketError {
        if error.is_timeout() {
            MarketError::Timeout {
                timeout_ms: u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX),
            }
        } else {
            MarketError::Transport(error_chain(&error))
        }
    }
}

/// What one call to one host came to, for the metrics: the answer's status class, or
/// why there was none.
fn outcome(sent: &Result<Answer, HostError>) -> &'static str {
    match sent {
        Ok(answer) => match answer.status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Err(HostError::Connect(_)) => "unreachable",
        Err(HostError::Other(MarketError::Timeout { .. })) => "timeout",
        Err(HostError::Other(_)) => "error",
    }
}

/// An error with its causes, which is where reqwest says what actually went wrong.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Reads an answer of any open API: its JSON when the code says success, otherwise the
/// typed error its code (`resultCode` or `error_code`) and HTTP status mean.
pub fn interpret(answer: &Answer) -> Result<Value, MarketError> {
    let malformed = |detail: String| MarketError::Malformed {
        status: answer.status,
        detail,
    };
    let json: Value = match serde_json::from_slice(&answer.body) {
        Ok(json @ Value::Object(_)) => json,
        Ok(_) => return Err(malformed("not a JSON object".into())),
        Err(e) => return Err(malformed(format!("not JSON: {e}"))),
    };
    let text = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| json.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let Some(code) = text(["resultCode", "error_code"]) else {
        return Err(malformed("no resultCode or error_code".into()));
    };
    let message = text(["resultMsg", "error_msg"]).unwrap_or_default();
    let status = answer.status;
    if SUCCESS_CODES.contains(&code.as_str()) && (200..300).contains(&status) {
        Ok(json)
    } else if code.starts_with("APIGW.") {
        Err(MarketError::Gateway {
            status,
            code,
            message,
        })
    } else {
        Err(MarketError::Api {
            status,
            code: ApiCode::parse(&code),
            message,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            body: body.as_bytes().to_vec(),
            base: Url::parse("https://mkt.myhuaweicloud.com").unwrap(),
        }
    }

    #[test]
    fn every_documented_code_round_trips_with_a_meaning() {
        for (code, ..) in CODES {
            let parsed = ApiCode::parse(code);
            assert_eq!(parsed.as_str(), code);
            assert!(!parsed.meaning().is_empty(), "{code}");
            assert!(!matches!(parsed, ApiCode::Other(_)), "{code}");
        }
        for (code, meaning, _) in LICENSE_REFUSALS {
            assert_eq!(ApiCode::parse(code).meaning(), meaning);
            assert_eq!(ApiCode::parse(code).as_str(), code);
        }
        assert_eq!(
            ApiCode::parse("MKT.4242"),
            ApiCode::Other("MKT.4242".into())
        );
    }

    #[test]
    fn answers_become_typed_errors_that_know_whether_to_retry() {
        let cases: [(u16, &str, &str, bool); 11] = [
            (
                500,
                r#"{"resultCode":"MKT.0999","resultMsg":"x"}"#,
                "MKT.0999 (HTTP 500, internal error)",
                true,
            ),
            (
                406,
                r#"{"resultCode":"MKT.0250","resultMsg":"x"}"#,
                "access frequency over the limit",
                true,
            ),
            (
                401,
                r#"{"resultCode":"MKT.0154","resultMsg":"x"}"#,
                "illegal token",
                false,
            ),
            (
                401,
                r#"{"resultCode":"MKT.0150","resultMsg":"x"}"#,
                "not owned by this AK",
                false,
            ),
            (
                400,
                r#"{"error_code":"MKT.9003","error_msg":"x"}"#,
                "too many records",
                false,
            ),
            (
                401,
                r#"{"error_code":"APIGW.0301","error_msg":"verify aksk signature fail"}"#,
                "APIGW.0301 (HTTP 401, incorrect IAM",
                false,
            ),
            (
                429,
                r#"{"error_code":"APIGW.0308","error_msg":"x"}"#,
                "throttled",
                true,
            ),
            (
                503,
                r#"{"resultCode":"MKT.7777"}"#,
                "undocumented code",
                true,
            ),
            (
                502,
                "<html>bad gateway</html>",
                "malformed body: not JSON",
                true,
            ),
            (
                200,
                r#"{"orderInfo":{}}"#,
                "no resultCode or error_code",
                true,
            ),
            (200, "[]", "not a JSON object", true),
        ];
        for (status, body, expected, retryable) in cases {
            let error = interpret(&answer(status, body)).unwrap_err();
            assert!(error.to_string().contains(expected), "{body}: {error}");
            assert_eq!(error.retryable(), retryable, "{body}");
        }
    }

    #[test]
    fn success_codes_of_every_api_are_success() {
        for body in [
            r#"{"resultCode":"MKT.0000","resultMsg":"Success"}"#,
            r#"{"error_code":"CBC.0000","error_msg":"ok"}"#,
            r#"{"error_code":"92020000","error_msg":"success"}"#,
        ] {
            assert!(interpret(&answer(200, body)).is_ok(), "{body}");
        }
        assert!(
            interpret(&answer(500, r#"{"resultCode":"MKT.0000"}"#)).is_err(),
            "a success code with HTTP 500 is not success"
        );
    }

    /// Calls as the client prepares them, checked against Huawei's official Python SDK
    /// signer (`huaweicloudsdkcore.signer.Signer`, run offline on the same method, host,
    /// path, query list, headers with `X-Sdk-Date: 20240317T144237Z`, and body): its
    /// Authorization header and request URI are the expected values below.
    #[test]
    fn prepared_calls_match_the_official_sdk_signer() {
        let settings = |url: &str| config::Marketplace {
            url: url.into(),
            fallback_url: String::new(),
            connect_timeout_ms: 1000,
            request_timeout_ms: 1000,
            stage: String::new(),
        };
        let credentials = Credentials {
            ak: "HPUAEXAMPLEAK".into(),
            sk: "sk-example-0001".into(),
        };
        let activate_body = br#"{"license":"LIC-1","real_effect_time":"20240317144237"}"#;
        let cases: [(&str, Request<'_>, &str, &str); 2] = [
            (
                "https://mkt.myhuaweicloud.com",
                Request {
                    method: &Method::GET,
                    path: paths::QUERY_ORDER,
                    query: &[
                        ("orderLineId", "MOCKPERIODYEARNEW-000001"),
                        ("orderId", "MOCKPERIODYEARNEW"),
                    ],
                    content_type: None,
                    headers: &[],
                    body: b"",
                },
                "https://mkt.myhuaweicloud.com/api/mkp-openapi-public/global/v1/order/query\
                 ?orderId=MOCKPERIODYEARNEW&orderLineId=MOCKPERIODYEARNEW-000001",
                "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK, SignedHeaders=host;x-sdk-date, \
                 Signature=c235620bc338c4430f21b85d658cf25b7d49203894b86fdd4c2177ae5a104a92",
            ),
            (
                "http://127.0.0.1:9090/",
                Request {
                    method: &Method::POST,
                    path: paths::LICENSE_ACTIVATE,
                    query: &[("lang", "zh_CN")],
                    content_type: Some("application/json;charset=UTF-8"),
                    headers: &[],
                    body: activate_body,
                },
                "http://127.0.0.1:9090/api/mkp-openapi-public/global/v1/license/activate?lang=zh_CN",
                "SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK, SignedHeaders=content-type;host;x-sdk-date, \
                 Signature=5c1f8a333c48a9160b15fc5d61683f1204ca9ad476fb4786dc76cc5986c7f251",
            ),
        ];
        for (base, request, url, authorization) in cases {
            let client = Client::new(&settings(base), Some(credentials.clone()));
            let prepared = client
                .prepare(
                    &Url::parse(base).unwrap(),
                    &request,
                    &credentials,
                    "20240317T144237Z",
                )
                .unwrap();
            assert_eq!(prepared.url.as_str(), url);
            let header = |name: &str| {
                prepared
                    .headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(header("Authorization"), Some(authorization), "{url}");
            assert_eq!(header("X-Sdk-Date"), Some("20240317T144237Z"));
        }
    }

    #[test]
    fn transport_failures_are_retryable_and_setup_failures_are_not() {
        assert!(MarketError::Timeout { timeout_ms: 1 }.retryable());
        assert!(
            MarketError::Unreachable {
                hosts: "h".into(),
                detail: "d".into()
            }
            .retryable()
        );
        assert!(MarketError::Transport("reset".into()).retryable());
        assert!(!MarketError::NotConfigured.retryable());
        assert!(
            MarketError::NotConfigured
                .to_string()
                .contains("KOOGATE_MARKETPLACE_AK")
        );
    }
}
