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

/// The body of `PUT /api/v1/instances/{id}/usage-info`: a pay-per-use package's fee
/// items, the whole list at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageUsageReport {
    /// 0 to 100 entries, one per fee item; they replace the ones reported before, and
    /// `queryInstance` answers them in this order.
    #[schema(value_type = Vec<PackageItemInput>)]
    usage_info: Vec<Value>,
}

/// One fee item of a package as the app reports it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageItemInput {
    /// The pay-per-use instance the consumption belongs to (1–64 bytes), once per list.
    related_instance_id: String,
    /// What the package has consumed for it: a decimal string of at least 0 with at most 4
    /// decimals, e.g. `"12.5"`; never a JSON number.
    usage_value: String,
    /// RFC 3339, when the app counted it; not in the future. When absent, the time of
    /// this report.
    statistical_time: Option<String>,
}

/// A package instance's fee items as koogate keeps them and `queryInstance` answers them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageUsageView {
    pub instance_id: String,
    pub usage_info: Vec<PackageItemView>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PackageItemView {
    pub related_instance_id: String,
    /// With exactly 4 decimals, as `queryInstance` writes it.
    pub usage_value: String,
    pub statistical_time: String,
    pub reported_at: String,
}

impl PackageUsageView {
    fn new(instance_id: &str, entries: &[crate::store::PackageUsage]) -> Self {
        Self {
            instance_id: instance_id.to_owned(),
            usage_info: entries
                .iter()
                .map(|e| PackageItemView {
                    related_instance_id: e.related_instance_id.clone(),
                    usage_value: Quantity(e.usage_value).to_fixed(),
                    statistical_time: rfc3339(e.statistical_ms),
                    reported_at: rfc3339(e.updated_ms),
                })
                .collect(),
        }
    }
}

/// Reads one fee item, and when it is malformed, field by field to name what is wrong.
fn package_item(index: usize, item: &Value) -> Result<usage::PackageItem, FieldError> {
    if let Ok(i) = serde_json::from_value::<PackageItemInput>(item.clone()) {
        return Ok(usage::PackageItem {
            related_instance_id: i.related_instance_id,
            usage_value: i.usage_value,
            statistical_time: i.statistical_time,
        });
    }
    let field = |name: &str| format!("usageInfo[{index}].{name}");
    let Value::Object(map) = item else {
        return Err(FieldError::new(
            format!("usageInfo[{index}]"),
            "must be an object",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| {
        !matches!(
            k.as_str(),
            "relatedInstanceId" | "usageValue" | "statisticalTime"
        )
    }) {
        return Err(FieldError::new(
            field(unknown),
            "is not a field of a fee item",
        ));
    }
    let text = |name: &str, required: bool| match map.get(name) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) if !required => Ok(None),
        None | Some(Value::Null) => Err(FieldError::new(field(name), "is required")),
        Some(Value::Number(_)) if name == "usageValue" => Err(FieldError::new(
            field(name),
            "must be a decimal string such as \"12.5\", not a JSON number",
        )),
        Some(_) => Err(FieldError::new(field(name), "must be a string")),
    };
    text("relatedInstanceId", true)?;
    text("usageValue", true)?;
    text("statisticalTime", false)?;
    Err(FieldError::new(
        format!("usageInfo[{index}]"),
        "is not a fee item",
    ))
}

/// 409 for an instance whose usage is not reported per fee item.
fn not_a_package(instance: &crate::domain::instance::Instance) -> Option<Problem> {
    use crate::domain::instance::State as InstanceState;
    let detail = if instance.state == InstanceState::Released {
        format!("instance {} is released", instance.id)
    } else if usage::is_package(instance) {
        return None;
    } else if instance.charging_mode.is_none() {
        format!(
            "instance {} is not known to be a pay-per-use package: its charging mode is not known yet (查询订单 has not answered)",
            instance.id
        )
    } else {
        format!(
            "instance {} is not a pay-per-use package (ON_DEMAND_PKG) instance; pay-per-use usage goes to POST /api/v1/usage",
            instance.id
        )
    };
    Some(Problem::new(
        axum::http::StatusCode::CONFLICT,
        "not a package instance",
        detail,
    ))
}

#[utoipa::path(put, path = "/api/v1/instances/{id}/usage-info", tag = "usage",
    params(("id" = String, Path, description = "the package instance's id")),
    request_body = PackageUsageReport,
    responses((status = 200, body = PackageUsageView, description = "the fee items now kept"),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "not a pay-per-use package instance, or released"),
              (status = 422, body = Problem)))]
pub async fn put_package_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<PackageUsageView>, Problem> {
    let report: PackageUsageReport = serde_json::from_slice(&body).map_err(|e| {
        let field = if e.is_data() { "usageInfo" } else { "body" };
        Problem::invalid(vec![FieldError::new(field, e.to_string())])
    })?;
    let items = &report.usage_info;
    if items.len() > usage::MAX_PACKAGE_ITEMS {
        return Err(Problem::invalid(vec![FieldError::new(
            "usageInfo",
            format!(
                "must hold at most {} fee items (got {})",
                usage::MAX_PACKAGE_ITEMS,
                items.len()
            ),
        )]));
    }
    let mut errors = Vec::new();
    let mut read = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        match package_item(index, item) {
            Ok(item) => read.push(item),
            Err(error) => errors.push(error),
        }
    }
    if !errors.is_empty() {
        return Err(Problem::invalid(errors));
    }
    let services = &state.services;
    let now_ms = (services.clock)();
    let entries = usage::check_package(&id, &read, now_ms).map_err(|errors| {
        Problem::invalid(
            errors
                .into_iter()
                .map(|(index, field, message)| {
                    FieldError::new(format!("usageInfo[{index}].{field}"), message)
                })
                .collect(),
        )
    })?;
    let mut tx = services
        .store
        .begin()
        .await
        .map_err(|e| Problem::internal(&e))?;
    // The instance's row is locked, so two reports at once are applied one after the
    // other, each list whole.
    let instance = tx
        .instance_for_update(&id)
        .await
        .map_err(|e| Problem::internal(&e))?
        .ok_or_else(|| Problem::not_found(format!("no instance {id}")))?;
    if let Some(problem) = not_a_package(&instance) {
        return Err(problem);
    }
    tx.replace_package_usage(&id, &entries)
        .await
        .map_err(|e| Problem::internal(&e))?;
    tx.commit().await.map_err(|e| Problem::internal(&e))?;
    Ok(Json(PackageUsageView::new(&id, &entries)))
}

#[utoipa::path(get, path = "/api/v1/instances/{id}/usage-info", tag = "usage",
    params(("id" = String, Path, description = "the package instance's id")),
    responses((status = 200, body = PackageUsageView), (status = 404, body = Problem),
              (status = 409, body = Problem, description = "not a pay-per-use package instance, or released")))]
pub async fn get_package_usage(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PackageUsageView>, Problem> {
    let mut tx = state
        .services
        .store
        .begin()
        .await
        .map_err(|e| Problem::internal(&e))?;
    let instance = tx
        .instances(std::slice::from_ref(&id))
        .await
        .map_err(|e| Problem::internal(&e))?
        .pop()
        .ok_or_else(|| Problem::not_found(format!("no instance {id}")))?;
    if let Some(problem) = not_a_package(&instance) {
        return Err(problem);
    }
    let entries = tx
        .package_usage(std::slice::from_ref(&id))
        .await
        .map_err(|e| Problem::internal(&e))?;
    Ok(Json(PackageUsageView::new(&id, &entries)))
}
