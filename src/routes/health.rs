//! Liveness and readiness for load balancers and orchestrators.

use crate::app::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// The process is up and serving.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// The database answers; 503 otherwise, so a load balancer stops sending callbacks here.
/// A database known to be down is not asked (the background probe does that), and one
/// that is asked gets a second to answer.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = &state.services.store;
    let health = &state.services.health;
    let answered = if health.is_down() {
        Err("known to be down".to_owned())
    } else {
        match tokio::time::timeout(Duration::from_secs(1), store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                health.observe(&error);
                Err(error.to_string())
            }
            Err(_) => Err("no answer within 1 s".to_owned()),
        }
    };
    match answered {
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
