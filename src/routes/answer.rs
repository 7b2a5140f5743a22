//! What every production-interface answer shares: JSON bytes signed with `Body-Sign`
//! (D4), HTTP 200 for every protocol answer and 405/413 only for requests that are not
//! valid HTTP for the route (D5), and the audit record started for each callback.

use crate::domain::callback::{self, Answer, Services, Work};
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
    tracing::warn!(%problem, "request refused before its signature was checked");
    record.verdict = "not-checked".into();
    record.bound_unverified();
    record.http_status = status.as_u16();
    let reply = Reply::new(ResultCode::InvalidParam, problem);
    let answer =
        callback::refuse_unverified(services, record, Answer::reply(&reply), reason, started);
    Err(signed(status, keys.primary(), answer.body))
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
