//! Pay-per-use usage on the management API (merchant-api.md §6): the app posts usage
//! records, and reads back each instance's windows and their push.

use super::problem::{FieldError, Problem};
use crate::app::AppState;
use crate::domain::events::rfc3339;
use crate::domain::usage::{self, Incoming, Outcome, Quantity, WindowView};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

/// Records one call may carry (merchant-api.md §6).
pub const MAX_RECORDS: usize = 1000;

/// The body of `POST /api/v1/usage`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UsageBatch {
    /// 1 to 1000 records. Each is read on its own, so that a malformed one is refused
    /// alone and the rest of the batch is taken.
    #[schema(value_type = Vec<UsageRecordInput>)]
    records: Vec<Value>,
}

/// One usage record as the app sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecordInput {
    /// The app's id for the record, unique per instance (1–128 bytes): a repeat is
    /// counted once.
    id: String,
    instance_id: String,
    /// A decimal string greater than 0 with at most 4 decimals, e.g. `"1.5"`; never a
    /// JSON number (it would go through floating point).
    quantity: String,
    /// RFC 3339, e.g. `2026-12-01T08:12:00Z`; not in the future, at most 21 days old.
    occurred_at: String,
}

/// What became of each record, in the order sent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReceipt {
    pub accepted: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    pub errors: usize,
    pub results: Vec<RecordResult>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordResult {
    pub index: usize,
    /// The record's id as sent, when it had one.
    pub id: Option<String>,
    /// `accepted`, `duplicate` (this id was counted before), `conflict` (this id came
    /// before with another quantity, which is kept) or `error` (nothing stored).
    pub result: &'static str,
    /// The window the record is counted in (accepted).
    pub window: Option<String>,
    /// The window it belongs to, when that one had been pushed already and the usage was
    /// carried into the open window.
    pub carried_from: Option<String>,
    /// The refused field (error).
    pub field: Option<String>,
    pub message: Option<String>,
}

impl RecordResult {
    fn new(index: usize, id: Option<String>, result: &'static str) -> Self {
        Self {
            index,
            id,
            result,
            window: None,
            carried_from: None,
            field: None,
            message: None,
        }
    }

    fn error(index: usize, id: Option<String>, field: &str, message: String) -> Self {
        Self {
            field: Some(field.to_owned()),
            message: Some(message),
            ..Self::new(index, id, "error")
        }
    }
}

/// Reads one record field by field, so that a malformed record is refused alone.
fn incoming(item: &Value) -> Result<Incoming, (&'static str, String)> {
    if let Ok(r) = serde_json::from_value::<UsageRecordInput>(item.clone()) {
        return Ok(Incoming {
            id: r.id,
            instance_id: r.instance_id,
            quantity: r.quantity,
            occurred_at: r.occurred_at,
        });
    }
    // Say which field is wrong.
    let Value::Object(map) = item else {
        return Err(("record", "must be an object".into()));
    };
    let text = |name: &'static str| match map.get(name) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(_)) if name == "quantity" => Err((
            name,
            "must be a decimal string such as \"1.5\", not a JSON number".to_owned(),
        )),
        Some(_) => Err((name, "must be a string".to_owned())),
        None => Err((name, "is required".to_owned())),
    };
    for name in ["id", "instanceId", "quantity", "occurredAt"] {
        text(name)?;
    }
    Err(("record", "is not a usage record".into()))
}

#[utoipa::path(post, path = "/api/v1/usage", tag = "usage",
    request_body = UsageBatch,
    responses((status = 200, body = UsageReceipt, description = "one result per record; valid records are stored even when others are refused"),
              (status = 422, body = Problem)))]
#[expect(
    clippy::indexing_slicing,
    reason = "results has one slot per record and index comes from the ingest outcomes, one per record"
)]
pub async fn post_usage(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<UsageReceipt>, Problem> {
    let batch: UsageBatch = serde_json::from_slice(&body).map_err(|e| {
        // JSON that parses but is not `{"records": [...]}` is about the records field.
        let field = if e.is_data() { "records" } else { "body" };
        Problem::invalid(vec![FieldError::new(field, e.to_string())])
    })?;
    let items = &batch.records;
    if items.is_empty() || items.len() > MAX_RECORDS {
        return Err(Problem::invalid(vec![FieldError::new(
            "records",
            format!("must hold 1 to {MAX_RECORDS} records (got {})", items.len()),
        )]));
    }
    let mut results: Vec<Option<RecordResult>> = Vec::with_capacity(items.len());
    let mut valid = Vec::new();
    let mut positions = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match incoming(item) {
            Ok(record) => {
                valid.push(record);
                positions.push(index);
                results.push(None);
            }
            Err((field, message)) => {
                let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
                results.push(Some(RecordResult::error(index, id, field, message)));
            }
        }
    }
    let services = &state.services;
    let now_ms = (services.clock)();
    let mut tx = services
        .store
        .begin()
        .await
        .map_err(|e| Problem::internal(&e))?;
    let outcomes = usage::ingest(tx.as_mut(), &valid, state.usage_window, now_ms)
        .await
        .map_err(|e| Problem::internal(&e))?;
    tx.commit().await.map_err(|e| Problem::internal(&e))?;
    for ((index, record), outcome) in positions.into_iter().zip(valid).zip(outcomes) {
        let id = Some(record.id);
        results[index] = Some(match outcome {
            Outcome::Accepted {
                window_begin_ms,
                carried_from,
            } => RecordResult {
                window: Some(rfc3339(window_begin_ms)),
                carried_from: carried_from.map(rfc3339),
                ..RecordResult::new(index, id, "accepted")
            },
            Outcome::Duplicate => RecordResult::new(index, id, "duplicate"),
            Outcome::Conflict { kept } => RecordResult {
                message: Some(format!(
                    "this id was recorded before with quantity {}, which is kept",
                    kept.to_fixed()
                )),
                ..RecordResult::new(index, id, "conflict")
            },
            Outcome::Invalid { field, message } => RecordResult::error(index, id, field, message),
        });
    }
    let results: Vec<RecordResult> = results.into_iter().flatten().collect();
    let count = |kind: &str| results.iter().filter(|r| r.result == kind).count();
    Ok(Json(UsageReceipt {
        accepted: count("accepted"),
        duplicates: count("duplicate"),
        conflicts: count("conflict"),
        errors: count("error"),
        results,
    }))
}

/// An instance's usage: its total and its windows, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceUsage {
    pub instance_id: String,
    /// Everything counted so far, with 4 decimals (what `queryInstance` reports).
    pub total: String,
    pub windows: Vec<WindowView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Windows shown, newest first: at most 1000; 200 when absent.
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/instances/{id}/usage", tag = "usage",
    params(("id" = String, Path, description = "the instance id"), UsageQuery),
    responses((status = 200, body = InstanceUsage), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
pub async fn get_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<InstanceUsage>, Problem> {
    let limit = match query.limit.unwrap_or(200) {
        n @ 1..=1000 => n,
        _ => {
            return Err(Problem::invalid(vec![FieldError::new(
                "limit",
                "must be between 1 and 1000",
            )]));
        }
    };
    let store = &state.services.store;
    if store
        .instance(&id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .is_none()
    {
        return Err(Problem::not_found(format!("no instance {id}")));
    }
    let report = instance_usage(store.as_ref(), &id, limit)
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(report))
}

/// An instance's usage as the API and `koogate usage show` give it.
pub async fn instance_usage(
    store: &dyn crate::store::Store,
    id: &str,
    limit: u32,
) -> crate::store::StoreResult<InstanceUsage> {
    let mut tx = store.begin().await?;
    let total = tx
        .usage_totals(&[id.to_owned()])
        .await?
        .first()
        .map_or(0, |t| t.total);
    drop(tx);
    let windows = store.usage_windows(id, limit).await?;
    let carried = store.usage_carried(id).await?;
    Ok(InstanceUsage {
        instance_id: id.to_owned(),
        total: Quantity(total).to_fixed(),
        windows: windows
            .iter()
            .map(|w| WindowView::new(w, &carried))
            .collect(),
    })
}
