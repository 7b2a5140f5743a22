//! Liveness and readiness for load balancers and orchestrators.

use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

/// The process is up and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers; 503 otherwise, so a load balancer stops sending callbacks here.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = &state.services.store;
    match store.ping().await {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": store.backend()})),
        ),
        Err(error) => {
            tracing::warn!(%error, "not ready: database unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "unavailable", "database": store.backend(), "error": "database unreachable"}),
                ),
            )
        }
    }
}
