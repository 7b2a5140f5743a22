//! `POST /koogallery/saas`: the SaaS 2.0 activities (spec §3), signed as in §2.2.

use super::answer;
use crate::app::AppState;
use crate::domain::callback::{self, Answer, Work};
use crate::protocol::codes::ResultCode;
use crate::protocol::crypto::FieldCipher;
use crate::protocol::reply::{Credentials, Reply};
use crate::protocol::saas_v2::Request;
use crate::protocol::signature::{self, SignedParams, Variant};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use secrecy::ExposeSecret;
use std::time::Instant;
use tracing::Span;

pub async fn handle(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let now_ms = (state.services.clock)();
    let keys = &state.keys.saas;
    let store = state.services.store.as_ref();
    let query = query.unwrap_or_default();
    let record = answer::record("saas_v2", &Method::POST, &query, &headers, now_ms);
    let (body, mut record) =
        match answer::read_body(store, body, state.max_body_bytes, keys, record, started).await {
            Ok(read) => read,
            Err(response) => return response,
        };
    record.raw_body = body.to_vec();

    let params = SignedParams::from_query(&query);
    let verified = match signature::verify(keys, &params, &body, state.accept_variant_b, now_ms) {
        Ok(verified) => verified,
        Err(problem) => {
            tracing::warn!(%problem, "signature refused");
            record.verdict = problem.to_string();
            let reply = Reply::new(
                ResultCode::AuthFailed,
                format!("authentication failed: {problem}"),
            );
            let answer = callback::refuse(store, record, Answer::reply(&reply), started).await;
            return answer::signed(StatusCode::OK, keys.primary(), answer.body);
        }
    };
    if verified.variant == Variant::B {
        tracing::info!("signature matched variant B (plain SHA-256 payload hash)");
    }
    record.verdict = format!("ok:{:?}", verified.variant);

    let key = keys.get(verified.key_index);
    let credentials = match (state.saas_v2_key_size, key) {
        (Some(size), Some(key)) => {
            Credentials::Encrypted(FieldCipher::new(key.expose_secret(), size))
        }
        _ => Credentials::Plain,
    };
    let work = Request::parse(&body).map(|request| Work::SaasV2 {
        request,
        credentials,
    });
    if let Ok(work) = &work {
        answer::trace(work);
    }
    let answer = callback::process(
        &state.services,
        Some(&verified),
        work,
        record,
        started,
        now_ms,
    )
    .await;
    Span::current().record("result_code", answer.code.as_str());
    answer::signed(StatusCode::OK, key, answer.body)
}
