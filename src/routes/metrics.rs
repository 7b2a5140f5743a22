//! `GET /metrics` on the internal listener (merchant-api.md §7): no token, as
//! Prometheus scrapes it; nothing in it names an order, an instance or a key.

use crate::app::AppState;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The media type of what `prometheus-client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The server's counters and what the database says now. A database that cannot be
/// read fails the scrape (503), so that Prometheus marks the target down rather than
/// showing an empty queue.
async fn metrics(State(state): State<AppState>) -> Response {
    let now_ms = (state.services.clock)();
    match state.services.store.operations().await {
        Ok(operations) => (
            [(header::CONTENT_TYPE, OPENMETRICS)],
            state.metrics.render(&operations, now_ms),
        )
            .into_response(),
        Err(error) => {
            tracing::warn!(%error, "metrics: cannot read the database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database cannot be read\n",
            )
                .into_response()
        }
    }
}
