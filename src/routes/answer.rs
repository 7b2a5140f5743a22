//! What every production-interface answer shares: JSON bytes signed with `Body-Sign`
//! (D4), HTTP 200 for every protocol answer and 405/413 only for requests that are not
//! valid HTTP for the route (D5), and the audit record started for each callback.

use crate::app::callback::{self, Services};
use crate::domain::answer::{Answer, Work};
use crate::metrics::Refusal;
use crate::protocol::codes::ResultCode;
use crate::protocol::reply::Reply;
use crate::protocol::signature::{self, KeyRing};
use crate::store::CallbackRecord;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use secrecy::{ExposeSecret, SecretString};
use std::time::Instant;
use tower_http::catch_panic::CatchPanicLayer;
use tracing::Span;

/// The response header that carries the body signature.
pub const BODY_SIGN: &str = "Body-Sign";

/// The request id header, kept from the client when fit (see [`fit_request_id`]).
pub const REQUEST_ID: &str = "x-request-id";

/// Longest client request id kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a client's request id is kept: a short printable token, at most
/// [`MAX_REQUEST_ID_LEN`] visible ASCII characters. Anything else is replaced by an id
/// koogate generates, so no sender decides what is logged and stored under its name.
pub fn fit_request_id(value: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&value.len()) && value.iter().all(u8::is_ascii_graphic)
}

/// Removes a client request id that is not fit to keep, before one is generated.
pub async fn drop_unfit_request_id(mut request: axum::extract::Request) -> axum::extract::Request {
    let headers = request.headers_mut();
    let unfit = headers.get_all(REQUEST_ID).iter().count() > 1
        || headers
            .get(REQUEST_ID)
            .is_some_and(|value| !fit_request_id(value.as_bytes()));
    if unfit {
        headers.remove(REQUEST_ID);
    }
    request
}

/// Sends `body` as JSON, signed with `key` when there is one (with no key configured
/// nothing can be signed; the answer then says so in `resultMsg`).
#[expect(clippy::expect_used, reason = "Base64 is a valid header value")]
pub fn signed(status: StatusCode, key: Option<&SecretString>, body: Vec<u8>) -> Response {
    let body_sign = key.map(|key| signature::body_sign(key.expose_secret(), &body));
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    if let Some(value) = body_sign {
        headers.insert(
            BODY_SIGN,
            HeaderValue::from_str(&value).expect("Base64 is a valid header value"),
        );
    }
    response
}

/// An audit record for a callback that has just arrived.
pub fn record(
    interface: &str,
    method: &Method,
    raw_query: &str,
    headers: &HeaderMap,
    now_ms: i64,
) -> CallbackRecord {
    CallbackRecord {
        // Set by the router's request-id layers: koogate's own, or a short token.
        request_id: headers
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        received_ms: now_ms,
        interface: interface.to_owned(),
        activity: None,
        method: method.to_string(),
        raw_query: raw_query.to_owned(),
        raw_body: Vec::new(),
        verdict: String::new(),
        result_code: None,
        http_status: 200,
        response_body: Vec::new(),
        response_sha256: String::new(),
        duration_us: 0,
        test: false,
        order_id: None,
        instance_id: None,
    }
}

/// Adds what the parsed request says to the request's span.
pub fn trace(work: &Work) {
    let span = Span::current();
    span.record("activity", work.activity());
    if let Some(order_id) = work.order_id() {
        span.record("order_id", order_id);
    }
    if let Some(instance_id) = work.instance_id() {
        span.record("instance_id", instance_id);
    }
}

/// Reads the body up to `limit` bytes, within the callback deadline, into the record too. A larger body is
/// answered 413 (D5) as soon as the limit is passed, without reading the rest; a body
/// that breaks off or does not arrive in time is answered 400 or 408. All three answers
/// are signed JSON, and recorded.
pub async fn read_body(
    services: &Services,
    body: Body,
    limit: usize,
    keys: &KeyRing,
    mut record: CallbackRecord,
    started: Instant,
) -> Result<(Bytes, CallbackRecord), Response> {
    let read = tokio::time::timeout(services.deadline, axum::body::to_bytes(body, limit)).await;
    let (status, problem, reason) = match read {
        Ok(Ok(bytes)) => {
            record.raw_body = bytes.to_vec();
            return Ok((bytes, record));
        }
        Ok(Err(error))
            if std::error::Error::source(&error)
                .is_some_and(|cause| cause.is::<LengthLimitError>()) =>
        {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {limit} bytes"),
                Refusal::TooLarge,
            )
        }
        Ok(Err(_)) => (
            StatusCode::BAD_REQUEST,
            "request body could not be read".to_owned(),
            Refusal::Malformed,
        ),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "request body did not arrive within {} ms",
                services.deadline.as_millis()
            ),
            Refusal::SlowBody,
        ),
    };
    record.verdict = "not-checked".into();
    record.bound_unverified();
    record.http_status = status.as_u16();
    let refusal = (
        reason,
        format!("{problem}, before the signature was checked"),
    );
    let reply = Reply::new(ResultCode::InvalidParam, problem);
    let answer = callback::refuse_unverified(
        services,
        record,
        Answer::reply(&reply),
        (refusal.0, &refusal.1),
        started,
    );
    Err(signed(status, keys.primary(), answer.body))
}

/// Longest request target (path and query, in bytes) koogate reads: just under the HTTP
/// library's own limit of 65,534, so that nearly every target too long to serve gets a
/// signed answer. The longest SaaS 1.0 query the field tables allow is under 8 KiB (two
/// encrypted fields of 1,024 characters, `saasExtendParams` of 2,048, the ids); what a
/// refused request leaves in its record is bounded on its own.
pub const MAX_URI_BYTES: usize = 63 * 1024;

/// Most bytes of header fields (names, values and their separators) koogate reads.
/// KooGallery sends a handful of short headers; the HTTP library's own limit (its read
/// buffer, about 400 KiB) is far above this, so a head between the two is refused here,
/// as signed JSON.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Refuses a request head larger than koogate reads, before routing: a request target over
/// [`MAX_URI_BYTES`] with 414, header fields over [`MAX_HEADER_BYTES`] with 431. Both are
/// JSON `000002`, signed with the primary key of the family whose path was asked (unsigned
/// elsewhere, where no key applies). Heads beyond the HTTP library's own limits never get
/// here: it answers those itself, without a body.
pub async fn refuse_oversized_head(
    axum::extract::State(keys): axum::extract::State<std::sync::Arc<crate::config::Keys>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match oversized_head(&keys, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

fn oversized_head(
    keys: &crate::config::Keys,
    request: &axum::extract::Request,
) -> Option<Response> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let (status, problem) = if target > MAX_URI_BYTES {
        (
            StatusCode::URI_TOO_LONG,
            format!("request target is longer than {MAX_URI_BYTES} bytes"),
        )
    } else if header_bytes > MAX_HEADER_BYTES {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("header fields are larger than {MAX_HEADER_BYTES} bytes"),
        )
    } else {
        return None;
    };
    tracing::warn!(%problem, target, header_bytes, "request head refused");
    let key = match request.uri().path() {
        super::SAAS_PATH => keys.saas.primary(),
        super::LICENSE_CODE_PATH => keys.license_code.primary(),
        super::ORDER_NOTIFY_PATH => keys.order_notify.primary(),
        _ => None,
    };
    let reply = Reply::new(ResultCode::InvalidParam, problem);
    Some(signed(status, key, reply.to_bytes()))
}

/// Answers a method the route does not serve with 405 and a signed JSON body (D5).
pub fn method_not_allowed(
    keys: KeyRing,
) -> impl Fn(Method) -> std::future::Ready<Response> + Clone + Send + 'static {
    move |method: Method| {
        let reply = Reply::new(
            ResultCode::InvalidParam,
            format!("method {method} is not allowed here"),
        );
        std::future::ready(signed(
            StatusCode::METHOD_NOT_ALLOWED,
            keys.primary(),
            reply.to_bytes(),
        ))
    }
}

/// Turns a panic into a signed `000005` answer instead of a dropped connection.
pub fn catch_panic(
    keys: KeyRing,
) -> CatchPanicLayer<impl Fn(Box<dyn std::any::Any + Send>) -> Response + Clone> {
    CatchPanicLayer::custom(move |_panic: Box<dyn std::any::Any + Send>| {
        tracing::error!("handler panicked");
        let reply = Reply::new(ResultCode::Internal, "internal error");
        signed(StatusCode::OK, keys.primary(), reply.to_bytes())
    })
}
