//! `GET` and `PUT /api/v1/license-requests/{eventId}` (merchant-api.md §5): an online
//! License application, its License and its uploads; and the app's License for it.

use super::problem::{FieldError, Problem};
use crate::app::AppState;
use crate::domain::events::rfc3339;
use crate::domain::license_request::{self, LicenseInput, LicenseRequestView, Provided};
use crate::jobs::follow_up;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// An application with its upload attempts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LicenseRequestDetail {
    #[serde(flatten)]
    pub request: LicenseRequestView,
    pub uploads: Vec<UploadView>,
}

/// One attempt at 字符串/文件流上传.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadView {
    pub attempted_at: String,
    /// The HTTP status; absent when no answer came.
    pub status: Option<i64>,
    /// `error_code` as KooGallery answered it.
    pub code: Option<String>,
    pub message: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ContentQuery {
    /// `true` adds the License itself (`characters` or `contentBase64`).
    content: Option<bool>,
}

#[utoipa::path(get, path = "/api/v1/license-requests/{eventId}", tag = "licenses",
    params(("eventId" = String, Path, description = "KooGallery's eventId of the getLicenseAsync"), ContentQuery),
    responses((status = 200, body = LicenseRequestDetail), (status = 404, body = Problem)))]
pub async fn get_license_request(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    Query(query): Query<ContentQuery>,
) -> Result<Json<LicenseRequestDetail>, Problem> {
    detail(&state, &event_id, query.content.unwrap_or(false)).await
}

#[utoipa::path(put, path = "/api/v1/license-requests/{eventId}", tag = "licenses",
    params(("eventId" = String, Path, description = "KooGallery's eventId of the getLicenseAsync")),
    request_body = LicenseInput,
    responses((status = 200, body = LicenseRequestDetail), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn put_license_request(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
    body: Bytes,
) -> Result<Json<LicenseRequestDetail>, Problem> {
    let services = &state.services;
    let input: LicenseInput = serde_json::from_slice(&body)
        .map_err(|e| Problem::invalid(vec![FieldError::new("body", e.to_string())]))?;
    let license = input
        .license(&event_id, services.licensing.max_bytes)
        .map_err(|problems| {
            Problem::invalid(
                problems
                    .into_iter()
                    .map(|p| FieldError::new(p.field, p.message))
                    .collect(),
            )
        })?
        .ok_or_else(|| {
            Problem::invalid(vec![FieldError::new("license", "give license or file")])
        })?;
    let now_ms = (services.clock)();
    let mut tx = services
        .store
        .begin()
        .await
        .map_err(|e| Problem::internal(&e))?;
    let provided = license_request::provide(tx.as_mut(), &event_id, license, now_ms)
        .await
        .map_err(|e| Problem::internal(&e))?;
    follow_up::record(
        tx.as_mut(),
        &provided.events,
        &provided.follow_up,
        services.deliver_events,
        now_ms,
    )
    .await
    .map_err(|e| Problem::internal(&e))?;
    match provided.answer {
        Provided::Queued => {
            tx.commit()
                .await
                .map_err(|e| Problem::internal(&e))?
                .wake(&services.wake_jobs);
        }
        Provided::Unchanged => {}
        Provided::Unknown => {
            return Err(Problem::not_found(format!(
                "no License application {event_id}"
            )));
        }
        Provided::Conflict => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "License already issued",
                "this application already has another License; Licenses are never replaced",
            ));
        }
    }
    detail(&state, &event_id, false).await
}

async fn detail(
    state: &AppState,
    event_id: &str,
    with_content: bool,
) -> Result<Json<LicenseRequestDetail>, Problem> {
    let store = &state.services.store;
    let request = store
        .license_request(event_id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found(format!("no License application {event_id}")))?;
    let uploads = store
        .license_uploads(event_id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(LicenseRequestDetail {
        request: LicenseRequestView::new(&request, with_content),
        uploads: uploads
            .into_iter()
            .map(|u| UploadView {
                attempted_at: rfc3339(u.attempted_ms),
                status: u.status,
                code: u.code,
                message: u.message,
                error: u.error,
                duration_ms: u.duration_ms,
            })
            .collect(),
    }))
}
