//! The management API (merchant-api.md §4) on the internal listener: the merchant's app
//! and operators read instances, orders and events, and the app reports provisioning.
//! Bearer tokens compared in constant time; errors are RFC 9457 problem documents.

mod license;
mod problem;
pub mod usage;

use crate::app::AppState;
use crate::domain::events::{InstanceView, OrderLineView};
use crate::domain::provision::{self, Applied, FailedAnswer, Refusal, Report};
use crate::protocol::reply::AppInfo;
use crate::store::{Cursor, InstanceFilter, STATE_FILTERS, StoredEvent};
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use problem::{FieldError, Problem};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, OpenApi, ToSchema};

/// The OpenAPI document of this API (`GET /api/v1/openapi.json`), generated from the
/// handlers below; `docs/openapi.json` is a committed copy that a test keeps in step.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "koogate management API",
        description = "The contract between koogate and the merchant's application: instances, orders, events, provisioning, online Licenses and pay-per-use usage (merchant-api.md §4, §5, §6).",
        version = "1"
    ),
    paths(
        get_instance,
        list_instances,
        put_provisioning,
        get_order,
        list_events,
        get_event,
        usage::post_usage,
        usage::get_usage,
        usage::put_package_usage,
        usage::get_package_usage,
        license::get_license_request,
        license::put_license_request
    ),
    components(schemas(
        InstanceView,
        InstanceList,
        ProvisioningReport,
        AppInfoInput,
        OrderView,
        EventItem,
        EventFeed,
        EventDetail,
        AttemptView,
        usage::UsageBatch,
        usage::UsageRecordInput,
        usage::UsageReceipt,
        usage::RecordResult,
        usage::InstanceUsage,
        usage::PackageUsageReport,
        usage::PackageItemInput,
        usage::PackageUsageView,
        usage::PackageItemView,
        crate::domain::usage::WindowView,
        crate::domain::usage::CarriedView,
        license::LicenseRequestDetail,
        license::UploadView,
        crate::domain::license_request::LicenseRequestView,
        crate::domain::license_request::LicenseView,
        crate::domain::license_request::LicenseInput,
        crate::domain::license_request::FileInput,
        Problem,
        FieldError
    )),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// Refuses a request whose path or query decodes to a control character (`%00`, `%0A` …)
/// with a 400 problem before any route runs: ids are never control characters, and
/// PostgreSQL cannot even compare a text with a NUL in it.
pub async fn refuse_control_characters(
    request: axum::extract::Request,
) -> Result<axum::extract::Request, Problem> {
    let uri = request.uri();
    let escaped = |text: &str| {
        let bytes = text.as_bytes();
        bytes.iter().enumerate().any(|(i, b)| {
            *b == b'%'
                && bytes
                    .get(i + 1..i + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .is_some_and(|byte| byte < 0x20 || byte == 0x7f)
        })
    };
    if escaped(uri.path()) || uri.query().is_some_and(escaped) {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid request",
            "the path or query holds a control character (such as %00): no id or filter does",
        ));
    }
    Ok(request)
}

/// The routes of the internal listener.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/instances", get(list_instances))
        .route("/api/v1/instances/{id}", get(get_instance))
        .route("/api/v1/instances/{id}/provisioning", put(put_provisioning))
        .route("/api/v1/orders/{order_id}", get(get_order))
        .route("/api/v1/events", get(list_events))
        .route("/api/v1/events/{event_id}", get(get_event))
        .route("/api/v1/usage", post(usage::post_usage))
        .route("/api/v1/instances/{id}/usage", get(usage::get_usage))
        .route(
            "/api/v1/instances/{id}/usage-info",
            get(usage::get_package_usage).put(usage::put_package_usage),
        )
        .route(
            "/api/v1/license-requests/{event_id}",
            get(license::get_license_request).put(license::put_license_request),
        )
        .fallback(|| async { Problem::not_found("no such route") })
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .merge(api)
        .with_state(state)
}

async fn openapi() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}

/// Lets a request through with a configured bearer token; every token is compared, in
/// constant time, so that the answer's timing says nothing about which part matched.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let tokens = &state.api_tokens.0;
    if tokens.is_empty() {
        return Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "API token not configured",
            "set KOOGATE_API_TOKEN (or KOOGATE_API_TOKEN_FILE) to use the management API",
        )
        .into_response();
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .as_bytes();
    let mut ok = subtle::Choice::from(0);
    for token in tokens {
        ok |= token.expose_secret().as_bytes().ct_eq(presented);
    }
    if !bool::from(ok) {
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer with a token from KOOGATE_API_TOKEN",
        )
        .into_response();
    }
    next.run(request).await
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceList {
    pub items: Vec<InstanceView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InstanceQuery {
    /// `provisioning`, `active`, `frozen`, `released` or `provisioning_failed`.
    state: Option<String>,
    customer_id: Option<String>,
    order_id: Option<String>,
    test: Option<bool>,
    /// The `next` of the previous page.
    after: Option<String>,
    /// At most 1000; 100 when absent.
    limit: Option<u32>,
}

/// Items per page when not asked, and at most.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

fn page_size(limit: Option<u32>) -> Result<u32, Problem> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n),
        _ => Err(Problem::invalid(vec![FieldError::new(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )])),
    }
}

#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "the instance id")),
    responses((status = 200, body = InstanceView), (status = 404, body = Problem)))]
async fn get_instance(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.services.store.instance(&id).await {
        Ok(Some(instance)) => Json(InstanceView::from(&instance)).into_response(),
        Ok(None) => Problem::not_found(format!("no instance {id}")).into_response(),
        Err(error) => Problem::internal(&error).into_response(),
    }
}

#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", params(InstanceQuery),
    responses((status = 200, body = InstanceList), (status = 422, body = Problem)))]
async fn list_instances(
    State(state): State<AppState>,
    Query(query): Query<InstanceQuery>,
) -> Result<Json<InstanceList>, Problem> {
    let limit = page_size(query.limit)?;
    let mut errors = Vec::new();
    if let Some(s) = &query.state
        && !STATE_FILTERS.iter().any(|(name, _)| name == s)
    {
        errors.push(FieldError::new(
            "state",
            "must be provisioning, active, frozen, released or provisioning_failed",
        ));
    }
    let before = match query.after.as_deref().map(decode_instance_cursor) {
        Some(None) => {
            errors.push(FieldError::new("after", "is not a cursor this API gave"));
            None
        }
        Some(cursor) => cursor,
        None => None,
    };
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let filter = InstanceFilter {
        state: query.state,
        customer_id: query.customer_id,
        order_id: query.order_id,
        test: query.test,
        before,
        limit: limit + 1,
    };
    let mut instances = state
        .services
        .store
        .list_instances(&filter)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let more = instances.len() > limit as usize;
    instances.truncate(limit as usize);
    let next = more
        .then(|| {
            instances
                .last()
                .map(|i| format!("{}-{}", i.created_ms, hex::encode(&i.id)))
        })
        .flatten();
    Ok(Json(InstanceList {
        items: instances.iter().map(InstanceView::from).collect(),
        next,
    }))
}

fn decode_instance_cursor(text: &str) -> Option<(i64, String)> {
    let (ms, id) = text.split_once('-')?;
    let id = String::from_utf8(hex::decode(id).ok()?).ok()?;
    Some((ms.parse().ok()?, id))
}

/// The body of `PUT /api/v1/instances/{id}/provisioning` (merchant-api.md §3).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningReport {
    /// `succeeded` (with `appInfo`) or `failed` (with `resultCode` and `message`).
    state: String,
    app_info: Option<AppInfoInput>,
    /// `000100` to `000107`.
    result_code: Option<String>,
    message: Option<String>,
}

/// App info as the app writes it. The password is write-only: never returned.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppInfoInput {
    front_end_url: String,
    admin_url: Option<String>,
    user_name: Option<String>,
    password: Option<String>,
    memo: Option<String>,
}

impl ProvisioningReport {
    fn report(self) -> Result<Report, Vec<FieldError>> {
        let report = match (self.state.as_str(), self.app_info, self.result_code) {
            ("succeeded", Some(info), None) => Report::Succeeded(AppInfo {
                front_end_url: info.front_end_url,
                admin_url: info.admin_url,
                user_name: info.user_name,
                password: info.password,
                memo: info.memo,
            }),
            ("succeeded", None, _) => {
                return Err(vec![FieldError::new(
                    "appInfo",
                    "is required when state is succeeded",
                )]);
            }
            ("failed", None, Some(code)) => Report::failed(FailedAnswer {
                result_code: code,
                message: self.message.unwrap_or_default(),
            })
            .map_err(|p| vec![FieldError::new(p.field, p.message)])?,
            ("failed", _, None) => {
                return Err(vec![FieldError::new(
                    "resultCode",
                    "is required when state is failed",
                )]);
            }
            ("succeeded" | "failed", _, _) => {
                return Err(vec![FieldError::new(
                    "state",
                    "succeeded takes appInfo only, failed takes resultCode and message only",
                )]);
            }
            _ => {
                return Err(vec![FieldError::new(
                    "state",
                    "must be succeeded or failed",
                )]);
            }
        };
        report.check().map_err(|problems| {
            problems
                .into_iter()
                .map(|p| FieldError::new(p.field, p.message))
                .collect::<Vec<_>>()
        })?;
        Ok(report)
    }
}

#[utoipa::path(put, path = "/api/v1/instances/{id}/provisioning", tag = "instances",
    params(("id" = String, Path, description = "the instance id"),
           ("Idempotency-Key" = Option<String>, Header, description = "a repeat with the same key and body is answered again; another body is 409")),
    request_body = ProvisioningReport,
    responses((status = 200, body = InstanceView), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn put_provisioning(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<InstanceView>, Problem> {
    let report: ProvisioningReport = serde_json::from_slice(&body)
        .map_err(|e| Problem::invalid(vec![FieldError::new("body", e.to_string())]))?;
    let report = report.report().map_err(Problem::invalid)?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 255 => Some(key.to_owned()),
            _ => {
                return Err(Problem::invalid(vec![FieldError::new(
                    "Idempotency-Key",
                    "must be 1 to 255 visible ASCII characters",
                )]));
            }
        },
    };
    let services = &state.services;
    let now_ms = (services.clock)();
    let store = &services.store;
    let mut tx = store.begin().await.map_err(|e| Problem::internal(&e))?;
    if let Some(key) = idempotency {
        // The key and a hash of the body are kept, so a repeat is recognised and another
        // body under the same key refused.
        let key = crate::store::IdempotencyKey {
            scope: "api.provisioning",
            key: format!("{}\n{key}", hex::encode(&id)),
        };
        let digest = Sha256::digest(&body).to_vec();
        match tx
            .claim_idempotency(&key, now_ms)
            .await
            .map_err(|e| Problem::internal(&e))?
        {
            crate::store::Claim::Answered(earlier) if earlier.body == digest => {
                drop(tx);
                return current(&state, &id).await;
            }
            crate::store::Claim::Answered(_) => {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "idempotency key reused",
                    "this Idempotency-Key was used with another body",
                ));
            }
            crate::store::Claim::Claimed => tx
                .complete_idempotency(
                    &key,
                    &crate::store::StoredAnswer {
                        result_code: "200".into(),
                        instance_id: Some(id.clone()),
                        body: digest,
                    },
                )
                .await
                .map_err(|e| Problem::internal(&e))?,
        }
    }
    let applied = provision::apply_report(tx.as_mut(), &id, &report, now_ms)
        .await
        .map_err(|e| Problem::internal(&e))?;
    match applied {
        Applied::Changed(events) => {
            crate::jobs::follow_up::record(
                tx.as_mut(),
                &events,
                &[],
                services.deliver_events,
                now_ms,
            )
            .await
            .map_err(|e| Problem::internal(&e))?;
            tx.commit()
                .await
                .map_err(|e| Problem::internal(&e))?
                .wake(&services.wake_jobs);
            services.provisioned.notify_waiters();
        }
        Applied::Unchanged => {
            tx.commit().await.map_err(|e| Problem::internal(&e))?;
        }
        Applied::Refused(Refusal::Unknown) => {
            return Err(Problem::not_found(format!("no instance {id}")));
        }
        Applied::Refused(refusal) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "cannot apply",
                refusal.to_string(),
            ));
        }
    }
    current(&state, &id).await
}

async fn current(state: &AppState, id: &str) -> Result<Json<InstanceView>, Problem> {
    match state.services.store.instance(id).await {
        Ok(Some(instance)) => Ok(Json(InstanceView::from(&instance))),
        Ok(None) => Err(Problem::not_found(format!("no instance {id}"))),
        Err(error) => Err(Problem::internal(&error)),
    }
}

/// An order: its lines as koogate heard of them, and the instances created for it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: String,
    pub lines: Vec<OrderLineView>,
    pub instances: Vec<InstanceView>,
}

#[utoipa::path(get, path = "/api/v1/orders/{orderId}", tag = "orders",
    params(("orderId" = String, Path, description = "KooGallery's order id")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem)))]
async fn get_order(
    State(state): State<AppState>,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, Problem> {
    // The same report `koogate orders show` and the admin pages read.
    let report = crate::app::ops::order(state.services.store.as_ref(), &order_id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found(format!("no order {order_id}")))?;
    Ok(Json(OrderView {
        order_id,
        lines: report.lines.iter().map(OrderLineView::from).collect(),
        instances: report.instances.iter().map(InstanceView::from).collect(),
    }))
}

/// An event as the feed gives it: the delivery envelope and its feed position.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventItem {
    #[serde(rename = "type")]
    pub kind: String,
    pub timestamp: String,
    #[schema(value_type = Object)]
    pub data: Value,
    pub cursor: String,
}

impl From<&StoredEvent> for EventItem {
    #[expect(
        clippy::indexing_slicing,
        reason = "serde_json::Value gives Null for a missing key: reading it never panics"
    )]
    fn from(event: &StoredEvent) -> Self {
        let envelope = event.envelope();
        Self {
            kind: event.kind.clone(),
            timestamp: envelope["timestamp"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            data: envelope["data"].clone(),
            cursor: event.cursor().encode(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventFeed {
    pub items: Vec<EventItem>,
    /// The cursor to pass as `after` next time (the same as `after` when nothing is new).
    pub next: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// The `next` of the previous call; absent starts from the oldest event kept.
    after: Option<String>,
    /// At most 1000; 100 when absent.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(FeedQuery),
    responses((status = 200, body = EventFeed), (status = 422, body = Problem)))]
async fn list_events(
    State(state): State<AppState>,
    Query(query): Query<FeedQuery>,
) -> Result<Json<EventFeed>, Problem> {
    let limit = page_size(query.limit)?;
    let after = match query.after.as_deref() {
        None | Some("") => Cursor::default(),
        Some(text) => Cursor::decode(text).ok_or_else(|| {
            Problem::invalid(vec![FieldError::new(
                "after",
                "is not a cursor this API gave",
            )])
        })?,
    };
    let events = state
        .services
        .store
        .events_after(after, limit)
        .await
        .map_err(|e| Problem::internal(&e))?;
    let next = events.last().map_or(after, StoredEvent::cursor).encode();
    Ok(Json(EventFeed {
        items: events.iter().map(EventItem::from).collect(),
        next,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub attempted_at: String,
    /// The HTTP status; absent when no answer came.
    pub status: Option<i64>,
    pub duration_ms: i64,
    /// The first 4 KiB of the answer.
    pub response: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventItem,
    pub attempts: Vec<AttemptView>,
}

#[utoipa::path(get, path = "/api/v1/events/{eventId}", tag = "events",
    params(("eventId" = String, Path, description = "the event id, as in webhook-id")),
    responses((status = 200, body = EventDetail), (status = 404, body = Problem)))]
async fn get_event(
    State(state): State<AppState>,
    Path(event_id): Path<String>,
) -> Result<Json<EventDetail>, Problem> {
    let store = &state.services.store;
    let event = store
        .event(&event_id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found(format!("no event {event_id}")))?;
    let attempts = store
        .event_attempts(&event_id)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(EventDetail {
        event: EventItem::from(&event),
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                attempted_at: crate::domain::events::rfc3339(a.attempted_ms),
                status: a.status,
                duration_ms: a.duration_ms,
                response: a.response,
                error: a.error,
            })
            .collect(),
    }))
}
