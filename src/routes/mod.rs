//! HTTP routes, one file per interface family. Routes are thin: read the raw request,
//! verify, parse, hand over to the domain, sign the exact bytes and answer.

mod answer;
mod health;
mod saas_v1;
mod saas_v2;

use crate::app::AppState;
use crate::protocol::v1::AUTH_TOKEN;
use axum::Router;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;

/// Where each interface family is served (spec §B).
pub const SAAS_PATH: &str = "/koogallery/saas";

pub fn router(state: AppState) -> Router {
    let saas_keys = state.keys.saas.clone();
    Router::new()
        .route(
            SAAS_PATH,
            get(saas_v1::handle_get)
                .post(saas_post)
                .fallback(answer::method_not_allowed(saas_keys.clone())),
        )
        .layer(answer::catch_panic(saas_keys))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
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
