//! `GET /koogallery/saas`, and `POST /koogallery/saas` with an `authToken` header: the
//! SaaS 1.0 activities (spec §4), authenticated by `authToken` and `timeStamp` (§2.1, D3).

use super::answer;
use crate::app::AppState;
use crate::app::callback;
use crate::domain::answer::{Answer, Work};
use crate::metrics::Refusal;
use crate::protocol::codes::ResultCode;
use crate::protocol::crypto::FieldCipher;
use crate::protocol::reply::Reply;
use crate::protocol::saas_v1::Request;
use crate::protocol::signature::AuthError;
use crate::protocol::v1::{AUTH_TOKEN, V1Error, V1Request};
use crate::store::CallbackRecord;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use secrecy::ExposeSecret;
use std::time::Instant;
use tracing::Span;

/// The GET form: every parameter, `authToken` included, in the query string.
pub async fn handle_get(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let now_ms = (state.services.clock)();
    let query = query.unwrap_or_default();
    let record = answer::record("saas_v1", &Method::GET, &query, &headers, now_ms);
    let request = V1Request::from_query(&query);
    respond(&state, Ok(request), record, started, now_ms).await
}

/// The POST-body form: the parameters in a JSON body, `authToken` in a header.
pub async fn handle_post(
    state: AppState,
    query: String,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let now_ms = (state.services.clock)();
    let keys = &state.keys.saas;
    let record = answer::record("saas_v1", &Method::POST, &query, &headers, now_ms);
    let (body, record) = match answer::read_body(
        &state.services,
        body,
        state.max_body_bytes,
        keys,
        record,
        started,
    )
    .await
    {
        Ok(read) => read,
        Err(response) => return response,
    };
    // A token that is not visible ASCII cannot match a Base64 HMAC: treat it as absent.
    let token = headers.get(AUTH_TOKEN).and_then(|v| v.to_str().ok());
    let request = V1Request::from_json_body(&body, token);
    respond(&state, request, record, started, now_ms).await
}

/// Authenticates, parses, processes and answers a request in either form.
async fn respond(
    state: &AppState,
    request: Result<V1Request, V1Error>,
    mut record: CallbackRecord,
    started: Instant,
    now_ms: i64,
) -> Response {
    let keys = &state.keys.saas;
    // A clock outside chrono's range cannot happen; were it to, every timeStamp is stale.
    let now = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    let window = state.saas_v1_window_secs;
    let verified = if keys.is_empty() {
        Err((
            ResultCode::AuthFailed,
            AuthError::NoKey.to_string(),
            Refusal::NoKey,
        ))
    } else {
        request
            .and_then(|request| {
                let key_index =
                    request.verify(keys.iter().map(|k| k.expose_secret()), now, window)?;
                Ok((request, key_index))
            })
            .map_err(|problem| {
                let reason = Refusal::of_v1(&problem);
                (problem.result_code(), problem.to_string(), reason)
            })
    };
    let (request, key_index) = match verified {
        Ok(verified) => verified,
        Err((code, problem, reason)) => {
            record.refused(&problem);
            let msg = match code {
                ResultCode::AuthFailed => format!("authentication failed: {problem}"),
                _ => problem.clone(),
            };
            let refused = Answer::reply(&Reply::new(code, msg));
            let answer = callback::refuse_unverified(
                &state.services,
                record,
                refused,
                (reason, &problem),
                started,
            );
            return answer::signed(StatusCode::OK, keys.primary(), answer.body);
        }
    };
    record.verdict = "ok".into();

    // `verify` returned the index of a configured key, so `key` is always there.
    let key = keys.get(key_index);
    let access_key = key.map_or("", |k| k.expose_secret());
    let cipher = FieldCipher::new(access_key, state.saas_v1_key_size);
    let work = Request::parse(&request, &cipher).map(|request| Work::SaasV1 { request, cipher });
    if let Ok(work) = &work {
        answer::trace(work);
    }
    let answer = callback::process(&state.services, None, work, record, started, now_ms).await;
    Span::current().record("result_code", answer.code.as_str());
    answer::signed(StatusCode::OK, key, answer.body)
}
