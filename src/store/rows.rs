//! Row shapes shared by both backends, and their conversion to domain types. The
//! column types (TEXT, 64-bit integers, booleans, bytes) decode the same way from
//! SQLite and PostgreSQL, so the mapping is written once.

use super::{CallbackRecord, Job, JobState, OrderLineRecord, StoreError, StoreResult};
use crate::domain::instance::{Family, Instance, State};
use crate::domain::license_code::LicenseCode;

/// The columns of `instances`, in the order [`InstanceRow`] and `bind_instance!` use.
macro_rules! instance_columns {
    () => {
        "instance_id, family, order_id, order_line_id, test, created_ms, product_id, sku_code, charging_mode, \
         period_type, period_number, linear_value, customer_id, customer_name, details, state, app_info, \
         expire_ms, last_order_id, updated_ms, released_ms, provisioning_error"
    };
}
pub(super) use instance_columns;

/// Binds an instance's fields to a query: the identity columns first when `all`, then
/// the mutable ones, in the order of `instance_columns!`. A macro rather than a
/// generic function, so one list serves both backends' query types.
macro_rules! bind_instance {
    ($query:expr, $i:expr, identity) => {
        $crate::store::rows::bind_instance!(
            $query
                .bind(&$i.id)
                .bind($i.family.as_str())
                .bind(&$i.order_id)
                .bind(&$i.order_line_id)
                .bind($i.test)
                .bind($i.created_ms),
            $i
        )
    };
    ($query:expr, $i:expr) => {
        $query
            .bind(&$i.product_id)
            .bind(&$i.sku_code)
            .bind(&$i.charging_mode)
            .bind(&$i.period_type)
            .bind($i.period_number)
            .bind(&$i.linear_value)
            .bind(&$i.customer_id)
            .bind(&$i.customer_name)
            .bind($crate::store::rows::details_json($i))
            .bind($i.state.as_str())
            .bind($crate::store::rows::app_info_json($i))
            .bind($i.expire_ms)
            .bind(&$i.last_order_id)
            .bind($i.updated_ms)
            .bind($i.released_ms)
            .bind($crate::store::rows::provisioning_error_json($i))
    };
}
pub(super) use bind_instance;

#[derive(sqlx::FromRow)]
pub(super) struct InstanceRow {
    instance_id: String,
    family: String,
    order_id: String,
    order_line_id: Option<String>,
    product_id: Option<String>,
    sku_code: Option<String>,
    charging_mode: Option<String>,
    period_type: Option<String>,
    period_number: Option<i64>,
    linear_value: Option<String>,
    customer_id: Option<String>,
    customer_name: Option<String>,
    details: String,
    test: bool,
    state: String,
    app_info: Option<String>,
    expire_ms: Option<i64>,
    last_order_id: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    released_ms: Option<i64>,
    provisioning_error: Option<String>,
}

impl InstanceRow {
    pub(super) fn into_instance(self) -> StoreResult<Instance> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("instance {}: {what}", self.instance_id));
        let family = Family::parse(&self.family).ok_or_else(|| corrupt("family"))?;
        let state = State::parse(&self.state).ok_or_else(|| corrupt("state"))?;
        let details = match serde_json::from_str(&self.details) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(corrupt("details")),
        };
        let app_info = match &self.app_info {
            Some(json) => Some(serde_json::from_str(json).map_err(|_| corrupt("app_info"))?),
            None => None,
        };
        let provisioning_error = match &self.provisioning_error {
            Some(json) => {
                Some(serde_json::from_str(json).map_err(|_| corrupt("provisioning_error"))?)
            }
            None => None,
        };
        Ok(Instance {
            id: self.instance_id,
            family,
            order_id: self.order_id,
            order_line_id: self.order_line_id,
            product_id: self.product_id,
            sku_code: self.sku_code,
            charging_mode: self.charging_mode,
            period_type: self.period_type,
            period_number: self.period_number,
            linear_value: self.linear_value,
            customer_id: self.customer_id,
            customer_name: self.customer_name,
            details,
            test: self.test,
            state,
            app_info,
            expire_ms: self.expire_ms,
            last_order_id: self.last_order_id,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
            released_ms: self.released_ms,
            provisioning_error,
        })
    }
}

/// The JSON form of what the app reported when provisioning failed, as stored.
#[expect(clippy::expect_used, reason = "plain data with string keys")]
pub(crate) fn provisioning_error_json(instance: &Instance) -> Option<String> {
    instance
        .provisioning_error
        .as_ref()
        .map(|e| serde_json::to_string(e).expect("a provisioning error serialises"))
}

/// The JSON form of an instance's details, as stored.
#[expect(clippy::expect_used, reason = "a JSON map serialises")]
pub(crate) fn details_json(instance: &Instance) -> String {
    serde_json::to_string(&instance.details).expect("a JSON map serialises")
}

/// The JSON form of an instance's app info, as stored.
#[expect(clippy::expect_used, reason = "plain data with string keys")]
pub(crate) fn app_info_json(instance: &Instance) -> Option<String> {
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

/// The columns of `license_codes`, in the order [`LicenseCodeRow`] and `bind_license_code!` use.
macro_rules! license_code_columns {
    () => {
        "license, activated_ms, order_id, order_line_id, product_id, state, expire_ms, last_order_id, \
         released_by_test, updated_ms, released_ms"
    };
}
pub(super) use license_code_columns;

/// Binds a license code's fields: the identity columns first when `identity`, then the
/// mutable ones, in the order of `license_code_columns!`.
macro_rules! bind_license_code {
    ($query:expr, $c:expr, identity) => {
        $crate::store::rows::bind_license_code!($query.bind(&$c.license).bind($c.activated_ms), $c)
    };
    ($query:expr, $c:expr) => {
        $query
            .bind(&$c.order_id)
            .bind(&$c.order_line_id)
            .bind(&$c.product_id)
            .bind($c.state.as_str())
            .bind($c.expire_ms)
            .bind(&$c.last_order_id)
            .bind($c.released_by_test)
            .bind($c.updated_ms)
            .bind($c.released_ms)
    };
}
pub(super) use bind_license_code;

#[derive(sqlx::FromRow)]
pub(super) struct LicenseCodeRow {
    license: String,
    activated_ms: i64,
    order_id: Option<String>,
    order_line_id: Option<String>,
    product_id: Option<String>,
    state: String,
    expire_ms: Option<i64>,
    last_order_id: Option<String>,
    released_by_test: bool,
    updated_ms: i64,
    released_ms: Option<i64>,
}

impl LicenseCodeRow {
    pub(super) fn into_license_code(self) -> StoreResult<LicenseCode> {
        let state = State::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("license code {}: state", self.license)))?;
        Ok(LicenseCode {
            license: self.license,
            order_id: self.order_id,
            order_line_id: self.order_line_id,
            product_id: self.product_id,
            state,
            expire_ms: self.expire_ms,
            last_order_id: self.last_order_id,
            released_by_test: self.released_by_test,
            activated_ms: self.activated_ms,
            updated_ms: self.updated_ms,
            released_ms: self.released_ms,
        })
    }
}
/// The columns of `jobs`, in the order of [`JobRow`].
macro_rules! job_columns {
    () => {
        "id, kind, payload, dedup_key, subject, state, attempts, run_at_ms, lease_token, lease_until_ms, \
         last_error, created_ms, updated_ms"
    };
}
pub(super) use job_columns;

#[derive(sqlx::FromRow)]
pub(super) struct JobRow {
    id: i64,
    kind: String,
    payload: String,
    dedup_key: Option<String>,
    subject: Option<String>,
    state: String,
    attempts: i64,
    run_at_ms: i64,
    lease_token: Option<String>,
    lease_until_ms: Option<i64>,
    last_error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl JobRow {
    pub(super) fn into_job(self) -> StoreResult<Job> {
        let state = JobState::parse(&self.state).ok_or_else(|| {
            StoreError::Corrupt(format!("job {}: state {:?}", self.id, self.state))
        })?;
        Ok(Job {
            id: self.id,
            kind: self.kind,
            payload: self.payload,
            dedup_key: self.dedup_key,
            subject: self.subject,
            state,
            attempts: self.attempts,
            run_at_ms: self.run_at_ms,
            lease_token: self.lease_token,
            lease_until_ms: self.lease_until_ms,
            last_error: self.last_error,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

/// The columns of `order_lines`, in the order of [`OrderLineRow`].
macro_rules! order_line_columns {
    () => {
        "order_id, order_line_id, test, source, created_ms, order_info, fetched_ms"
    };
}
pub(super) use order_line_columns;

#[derive(sqlx::FromRow)]
pub(super) struct OrderLineRow {
    order_id: String,
    order_line_id: String,
    test: bool,
    source: String,
    created_ms: i64,
    order_info: Option<String>,
    fetched_ms: Option<i64>,
}

impl From<OrderLineRow> for OrderLineRecord {
    fn from(row: OrderLineRow) -> Self {
        Self {
            order_id: row.order_id,
            order_line_id: row.order_line_id,
            test: row.test,
            source: row.source,
            created_ms: row.created_ms,
            order_info: row.order_info,
            fetched_ms: row.fetched_ms,
        }
    }
}
