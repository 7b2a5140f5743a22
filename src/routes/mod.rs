//! The HTTP layer: routes, one file per interface family. Routes are thin: read the raw
//! request, verify, parse, hand over to the application layer's callback pipeline, sign
//! the exact bytes and answer.

pub mod admin;
mod answer;
pub mod api;
mod health;
mod license_code;
pub mod metrics;
mod order_notify;
mod saas_v1;
mod saas_v2;
mod signed;

pub use answer::{BODY_SIGN, REQUEST_ID, drop_unfit_request_id};

use crate::app::AppState;
use crate::protocol::signature::KeyRing;
use crate::protocol::v1::AUTH_TOKEN;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{MethodRouter, get};

/// Where each interface family is served (spec §B).
pub const SAAS_PATH: &str = "/koogallery/saas";
pub const LICENSE_CODE_PATH: &str = "/koogallery/license-code";
pub const ORDER_NOTIFY_PATH: &str = "/koogallery/order-notify";

pub fn router(state: AppState) -> Router {
    let keys = state.keys.clone();
    Router::new()
        .merge(family(
            SAAS_PATH,
            // axum runs a GET route for HEAD too: a HEAD must not run a SaaS 1.0 activity.
            get(saas_v1::handle_get)
                .head(answer::method_not_allowed(keys.saas.clone()))
                .post(saas_post),
            &keys.saas,
        ))
        .merge(family(
            LICENSE_CODE_PATH,
            signed::post_route(&license_code::FAMILY),
            &keys.license_code,
        ))
        .merge(family(
            ORDER_NOTIFY_PATH,
            signed::post_route(&order_notify::FAMILY),
            &keys.order_notify,
        ))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // Around every route and the fallback: an oversized head is refused the same
        // whatever its path or method, before any handler reads it.
        .layer(axum::middleware::from_fn_with_state(
            keys.clone(),
            answer::refuse_oversized_head,
        ))
        .with_state(state)
}

/// One interface family's route: other methods get a signed 405, and a panic becomes a
/// signed `000005`, both with the family's primary key (D4, D5).
fn family(path: &str, methods: MethodRouter<AppState>, keys: &KeyRing) -> Router<AppState> {
    Router::new()
        .route(
            path,
            methods.fallback(answer::method_not_allowed(keys.clone())),
        )
        .layer(answer::catch_panic(keys.clone()))
}

/// `POST /koogallery/saas` (spec §B): with an `authToken` header it is the SaaS 1.0
/// POST-body form, otherwise SaaS 2.0.
async fn saas_post(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if headers.contains_key(AUTH_TOKEN) {
        saas_v1::handle_post(state, query.unwrap_or_default(), headers, body).await
    } else {
        saas_v2::handle(State(state), RawQuery(query), headers, body).await
    }
}
