//! HTTP routes, one file per interface family. Routes are thin: read the raw request,
//! verify, parse, hand over to the domain, sign the exact bytes and answer.

mod answer;
mod health;
mod saas_v2;

use crate::app::AppState;
use axum::Router;
use axum::routing::{get, post};

/// Where each interface family is served (spec §B).
pub const SAAS_PATH: &str = "/koogallery/saas";

pub fn router(state: AppState) -> Router {
    let saas_keys = state.keys.saas.clone();
    Router::new()
        .route(
            SAAS_PATH,
            post(saas_v2::handle).fallback(answer::method_not_allowed(saas_keys.clone())),
        )
        .layer(answer::catch_panic(saas_keys))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}
