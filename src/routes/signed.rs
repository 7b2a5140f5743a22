//! The callbacks KooGallery signs with `signature`/`timestamp`/`nonce` URL parameters
//! (spec §2.2): SaaS 2.0, License codes and order notifications share this path — raw
//! body, signature check, parse, one transaction in the callback pipeline, `Body-Sign` with the
//! key that verified the request.

use super::answer;
use crate::app::AppState;
use crate::app::callback;
use crate::domain::answer::{Answer, Work};
use crate::metrics::Refusal;
use crate::protocol::codes::ResultCode;
use crate::protocol::fields::FieldError;
use crate::protocol::reply::Reply;
use crate::protocol::signature::{self, Form, KeyRing, SignedParams, Variant};
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::routing::{MethodRouter, post};
use secrecy::SecretString;
use std::time::Instant;
use tracing::Span;

/// One interface family served on this path.
pub struct Family {
    /// The audit record's `interface`.
    pub interface: &'static str,
    /// The keys of the family's seller-center interface type.
    pub keys: fn(&AppState) -> &KeyRing,
    /// Reads a verified body; the key that verified it is given for answers that
    /// encrypt with it.
    pub parse: fn(&AppState, &[u8], &SecretString) -> Result<Work, FieldError>,
}

/// The POST route of a family that has nothing else on its path.
pub fn post_route(family: &'static Family) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              RawQuery(query): RawQuery,
              headers: HeaderMap,
              body: Body| async move { handle(&state, family, query, headers, body).await },
    )
}

/// Serves one signed callback of `family`.
#[expect(clippy::expect_used, reason = "the verifying key came from this ring")]
pub async fn handle(
    state: &AppState,
    family: &Family,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let now_ms = (state.services.clock)();
    let keys = (family.keys)(state);
    let query = query.unwrap_or_default();
    let record = answer::record(family.interface, &Method::POST, &query, &headers, now_ms);
    let (body, mut record) = match answer::read_body(
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

    let params = SignedParams::from_query(&query);
    let verified = match signature::verify_with(keys, &params, &body, state.accept, now_ms) {
        Ok(verified) => verified,
        Err(problem) => {
            record.refused(&problem);
            let reply = Reply::new(
                ResultCode::AuthFailed,
                format!("authentication failed: {problem}"),
            );
            let answer = callback::refuse_unverified(
                &state.services,
                record,
                Answer::reply(&reply),
                (Refusal::of_signature(&problem), &problem.to_string()),
                started,
            );
            return answer::signed(StatusCode::OK, keys.primary(), answer.body);
        }
    };
    if verified.variant == Variant::B {
        tracing::info!("signature matched variant B (plain SHA-256 payload hash)");
    }
    record.verdict = format!("ok:{:?}", verified.variant);
    if verified.form == Form::Canonical {
        // D1a: the raw bytes did not match, their canonical form did.
        tracing::info!("signature matched the body's canonical form, not its raw bytes");
        record.verdict.push_str(":canonical");
    }

    let key = keys
        .get(verified.key_index)
        .expect("the verifying key is in the ring");
    let work = (family.parse)(state, &body, key);
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
    answer::signed(StatusCode::OK, Some(key), answer.body)
}
