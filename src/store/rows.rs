//! Row shapes shared by both backends, and their conversion to domain types. The
//! column types (TEXT, 64-bit integers, booleans, bytes) decode the same way from
//! SQLite and PostgreSQL, so the mapping is written once.

use super::{CallbackRecord, StoreError, StoreResult};
use crate::domain::instance::{Family, Instance, State};

#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    instance_id: String,
    family: String,
    order_id: String,
    order_line_id: Option<String>,
    product_id: Option<String>,
    test: bool,
    state: String,
    app_info: Option<String>,
    expire_ms: Option<i64>,
    last_order_id: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    released_ms: Option<i64>,
}

impl InstanceRow {
    pub(super) fn into_instance(self) -> StoreResult<Instance> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("instance {}: {what}", self.instance_id));
        let family = Family::parse(&self.family).ok_or_else(|| corrupt("family"))?;
        let state = State::parse(&self.state).ok_or_else(|| corrupt("state"))?;
        let app_info = match &self.app_info {
            Some(json) => Some(serde_json::from_str(json).map_err(|_| corrupt("app_info"))?),
            None => None,
        };
        Ok(Instance {
            id: self.instance_id,
            family,
            order_id: self.order_id,
            order_line_id: self.order_line_id,
            product_id: self.product_id,
            test: self.test,
            state,
            app_info,
            expire_ms: self.expire_ms,
            last_order_id: self.last_order_id,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            released_ms: self.released_ms,
        })
    }
}

/// The JSON form of an instance's app info, as stored.
pub(super) fn app_info_json(instance: &Instance) -> Option<String> {
    instance
        .app_info
        .as_ref()
        .map(|info| serde_json::to_string(info).expect("app info serialises"))
}

#[derive(sqlx::FromRow)]
pub(super) struct CallbackRow {
    request_id: String,
    received_ms: i64,
    interface: String,
    activity: Option<String>,
    method: String,
    raw_query: String,
    raw_body: Vec<u8>,
    verdict: String,
    result_code: Option<String>,
    http_status: i64,
    response_body: Vec<u8>,
    duration_us: i64,
    test: bool,
    order_id: Option<String>,
    instance_id: Option<String>,
}

impl From<CallbackRow> for CallbackRecord {
    fn from(row: CallbackRow) -> Self {
        Self {
            request_id: row.request_id,
            received_ms: row.received_ms,
            interface: row.interface,
            activity: row.activity,
            method: row.method,
            raw_query: row.raw_query,
            raw_body: row.raw_body,
            verdict: row.verdict,
            result_code: row.result_code,
            http_status: u16::try_from(row.http_status).unwrap_or(0),
            response_body: row.response_body,
            duration_us: row.duration_us,
            test: row.test,
            order_id: row.order_id,
            instance_id: row.instance_id,
        }
    }
}
