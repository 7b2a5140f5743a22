//! A local stand-in for the KooGallery open APIs koogate uses, so that the whole order
//! flow runs on one machine with no Huawei account: 查询订单 with the spec's mock order
//! ids and any order registered here, license-code activation and heartbeat, the License
//! string/file upload, and the usage push, each with the request and answer shapes of the
//! spec. Every call's AK/SK signature is checked with the same [`apig::verify`] the spec
//! vectors test, and refused as the gateway does.
//!
//! Control endpoints (no signature; the mock listens on loopback by default):
//! `POST /mock/orders` (an `orderInfo` object), `POST /mock/licenses`,
//! `POST /mock/license-events` (`{"eventId":…}`: a `getLicenseAsync` KooGallery sent, whose
//! License may now be uploaded), `POST /mock/fail`
//! (`{"mode":"http500"|"mkt0999"|"malformed"|"lose_answer","count":N}`, or `{"mode":"code","code":"CBC.0101",
//! "count":N}` for any documented error code with its HTTP status), `POST /mock/delay`
//! (`{"ms":M,"count":N}`), `POST /mock/usage-codes` (`{"code":"003","count":N}`: the next N
//! usage records are refused with that record-level code), `GET /mock/usage` (the usage
//! records taken), `GET /mock/calls`, `POST /mock/reset`.

use crate::protocol::apig::{self, HttpRequest};
use crate::protocol::order::{
    ActivateRequest, BuyerInfo, HeartbeatRequest, LicenseCodeInfo, LicenseInfo, MKT_SUCCESS,
    MOCK_ORDER_IDS, NameValue, OrderInfo, OrderLine, ProductInfo, UploadRequest, UsagePush,
    UsageRecord, paths,
};
use crate::protocol::{time, usage};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;

/// Where `koogate mock-marketplace` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9090";

/// The APIG gateway accepts an `X-Sdk-Date` up to 15 minutes from its clock.
const DATE_WINDOW_SECS: u64 = 900;

/// A license code every mock starts with, bound to `MOCKPERIODYEARNEW`.
pub const MOCK_LICENSE: &str = "MOCK-LICENSE-0001";

/// How the next calls fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// HTTP 500 with a non-JSON body, as a broken proxy answers.
    Http500,
    /// HTTP 500 with the API's `MKT.0999` internal-error answer.
    Mkt0999,
    /// HTTP 200 with a body cut off mid-JSON.
    Malformed,
    /// The call is processed, but its answer is lost: HTTP 504 from a proxy.
    LoseAnswer,
    /// A documented error code (`CBC.0999`, `CBC.0101`, `91381037`, …) with the HTTP
    /// status its table gives, in the shape of the API called.
    Code,
}

/// The HTTP status the spec's tables give an error code (§8.2, §8.3).
fn status_of(code: &str) -> StatusCode {
    match code {
        "CBC.0999" | "MKT.0999" | "MKT.0100" => StatusCode::INTERNAL_SERVER_ERROR,
        "CBC.0150" => StatusCode::FORBIDDEN,
        "MKT.0150" | "MKT.0151" | "MKT.0154" => StatusCode::UNAUTHORIZED,
        "MKT.0250" => StatusCode::NOT_ACCEPTABLE,
        code if code.starts_with("9138") => StatusCode::OK,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// One open-API call the mock received, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub query: String,
    /// The body as text (lossy for binary uploads).
    pub body: String,
    /// The HTTP status answered; 0 while the answer is still being delayed.
    pub status: u16,
    /// The code answered (`MKT.0000`, `APIGW.0301`, …), or `-` for a non-JSON answer.
    pub code: String,
}

/// A license code the mock knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MockLicense {
    pub license: String,
    pub order_id: String,
    pub product_id: String,
    /// `yyyyMMddHHmmss`.
    pub expire_time: String,
    #[serde(default = "one")]
    pub amount: i64,
    /// Set on activation.
    #[serde(default, skip_deserializing)]
    pub activate_time: Option<String>,
}

fn one() -> i64 {
    1
}

#[derive(Debug, Default)]
struct Memory {
    orders: BTreeMap<String, Value>,
    licenses: BTreeMap<String, MockLicense>,
    fail: Option<(FailMode, u32)>,
    /// The code answered by [`FailMode::Code`].
    fail_code: String,
    delay: Option<(Duration, u32)>,
    calls: Vec<Call>,
    metering_sns: HashSet<String>,
    /// Usage records taken, first record per (instance, begin, end) only.
    usage: Vec<UsageRecord>,
    /// A record-level code the next records are refused with, and for how many.
    usage_codes: Option<(String, u32)>,
    /// The `getLicenseAsync` eventIds KooGallery has sent: only these take an upload.
    license_events: HashSet<String>,
}

struct Inner {
    ak: String,
    sk: SecretString,
    merchant_key: Option<SecretString>,
    state: Mutex<Memory>,
}

/// The mock marketplace: cheap to clone, all clones share one state.
#[derive(Clone)]
pub struct Mock(Arc<Inner>);

impl Mock {
    /// A mock that accepts calls signed with this AK/SK. With a merchant key (the
    /// accessKey bound to the basic interface) it also checks the usage push's
    /// `signature` header (§8.4).
    pub fn new(ak: &str, sk: SecretString, merchant_key: Option<SecretString>) -> Self {
        let mock = Self(Arc::new(Inner {
            ak: ak.to_owned(),
            sk,
            merchant_key,
            state: Mutex::new(Memory::default()),
        }));
        mock.reset();
        mock
    }

    /// The mock's routes: the open APIs and the control endpoints.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/mock/orders", post(register_order))
            .route("/mock/licenses", post(register_license))
            .route("/mock/license-events", post(register_license_event))
            .route("/mock/fail", post(fail_next))
            .route("/mock/delay", post(delay_next))
            .route("/mock/calls", get(calls))
            .route("/mock/usage", get(usage_taken))
            .route("/mock/usage-codes", post(usage_codes))
            .route("/mock/reset", post(reset))
            .fallback(open_api)
            .with_state(self.clone())
    }

    /// Forgets registered orders and licenses, faults and calls.
    pub fn reset(&self) {
        let mut state = self.state();
        *state = Memory::default();
        state.licenses.insert(
            MOCK_LICENSE.into(),
            MockLicense {
                license: MOCK_LICENSE.into(),
                order_id: "MOCKPERIODYEARNEW".into(),
                product_id: "OFFI846204237451911168".into(),
                expire_time: "20251121235959".into(),
                amount: 1,
                activate_time: None,
            },
        );
    }

    /// Registers (or replaces) an order: an `orderInfo` object as 查询订单 answers it.
    pub fn register_order(&self, order_info: Value) -> Result<String, String> {
        let order: OrderInfo = serde_json::from_value(order_info.clone())
            .map_err(|e| format!("not an orderInfo object: {e}"))?;
        self.state()
            .orders
            .insert(order.order_id.clone(), order_info);
        Ok(order.order_id)
    }

    /// Makes the next `count` open-API calls fail this way.
    pub fn fail_next(&self, mode: FailMode, count: u32) {
        self.state().fail = Some((mode, count));
    }

    /// Makes the next `count` open-API calls answer this documented error code.
    pub fn fail_with_code(&self, code: &str, count: u32) {
        let mut state = self.state();
        state.fail = Some((FailMode::Code, count));
        state.fail_code = code.to_owned();
    }

    /// Remembers a `getLicenseAsync` eventId, as KooGallery knows the applications it sent.
    pub fn expect_license_event(&self, event_id: &str) {
        self.state().license_events.insert(event_id.to_owned());
    }

    /// Makes the next `count` open-API calls wait this long before answering.
    pub fn delay_next(&self, delay: Duration, count: u32) {
        self.state().delay = Some((delay, count));
    }

    /// Refuses the next `count` usage records with this record-level code.
    pub fn usage_codes_next(&self, code: &str, count: u32) {
        self.state().usage_codes = (count > 0).then(|| (code.to_owned(), count));
    }

    /// The usage records taken so far, oldest first.
    pub fn usage_taken(&self) -> Vec<UsageRecord> {
        self.state().usage.clone()
    }

    /// The open-API calls received so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    fn state(&self) -> MutexGuard<'_, Memory> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take<T: Clone>(slot: &mut Option<(T, u32)>) -> Option<T> {
        let (value, left) = slot.as_mut()?;
        let value = value.clone();
        *left -= 1;
        if *left == 0 {
            *slot = None;
        }
        Some(value)
    }
}

/// Serves the mock until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    mock: Mock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, mock.router())
        .with_graceful_shutdown(shutdown)
        .await
}

/// The mock order of one of the spec's mock ids (§8.2), modelled on the China-site
/// sample: one line `<id>-000001` whose charging mode and period follow the id's name.
pub fn mock_order(order_id: &str) -> Option<OrderInfo> {
    if !MOCK_ORDER_IDS.contains(&order_id) {
        return None;
    }
    let (order_type, charging_mode, period) = match order_id {
        "MOCKPERIODYEARNEW" => ("NEW", "PERIOD", Some(("year", "20251121235959"))),
        "MOCKONETIMENEW" => ("NEW", "ONE_TIME", None),
        "MOCKONDEMAND" => ("NEW", "ON_DEMAND", None),
        "MOCKONDEMANDPKG" => ("NEW", "ON_DEMAND_PKG", None),
        "MOCKPERIODDAYTRIAL" => ("TRIAL", "PERIOD", Some(("day", "20241122235959"))),
        "MOCKMONTYTRIALTOFORMAL" => (
            "TRIAL_TO_FORMAL",
            "PERIOD",
            Some(("month", "20241221235959")),
        ),
        "MOCKMONTYUNSUBSCRIBE" => ("UNSUBSCRIBE", "PERIOD", Some(("month", "20241121235959"))),
        "MOCKMONTYRENEW" => ("RENEW", "PERIOD", Some(("month", "20250121235959"))),
        _ => ("CHANGE", "PERIOD", Some(("month", "20241221235959"))),
    };
    let text = |s: &str| Some(s.to_owned());
    Some(OrderInfo {
        order_id: order_id.to_owned(),
        order_type: text(order_type),
        create_time: text("20241121090846"),
        order_line: vec![OrderLine {
            order_line_id: format!("{order_id}-000001"),
            charging_mode: text(charging_mode),
            expire_time: period.map(|(_, expire)| expire.to_owned()),
            period_type: period.map(|(kind, _)| kind.to_owned()),
            period_number: period.map(|_| 1),
            product_info: vec![ProductInfo {
                product_id: text("OFFI846204237451911168"),
                sku_code: text("0a4d1578-34e4-4b2e-9b6f-5d7f0f3c9e01"),
                linear_value: text("50"),
                product_name: text("MOCK测试商品,测试规格,基础版"),
            }],
            extend_params: vec![NameValue {
                name: "emailDomainName".into(),
                value: text("test.example.com"),
            }],
            currency: text("100"),
            currency_after_discount: text("100"),
        }],
        buyer_info: Some(BuyerInfo {
            mobile_phone: text("18688888888"),
            email: None,
            customer_id: text("459bbbec1bd44a15b3a3d5e0d2a4f7b0"),
            customer_name: text("mock_user_01"),
            customer_real_name: text("测试用户1"),
            customer_type: text("0"),
            user_id: None,
            user_name: None,
        }),
        extend_params: vec![],
    })
}

/// An answer of the mock: status and JSON (or raw) body.
struct Reply {
    status: StatusCode,
    body: Vec<u8>,
    code: String,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        let code = body
            .get("resultCode")
            .or_else(|| body.get("error_code"))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned();
        Self {
            status,
            body: body.to_string().into_bytes(),
            code,
        }
    }

    fn raw(status: StatusCode, body: &str) -> Self {
        Self {
            status,
            body: body.as_bytes().to_vec(),
            code: "-".into(),
        }
    }

    /// An error in the shape of the API at `path`: 查询订单 answers `resultCode`, the others
    /// `error_code`.
    fn error(path: &str, status: StatusCode, code: &str, message: &str) -> Self {
        if path == paths::QUERY_ORDER {
            Self::json(status, json!({"resultCode": code, "resultMsg": message}))
        } else {
            Self::json(status, json!({"error_code": code, "error_msg": message}))
        }
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json;charset=UTF-8")],
            self.body,
        )
            .into_response()
    }
}

/// Every open-API call: delay and faults first (an outage is an outage), then the
/// gateway's signature check, then the API itself.
async fn open_api(
    State(mock): State<Mock>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = percent_decode(uri.path());
    let query = uri.query().unwrap_or_default().to_owned();
    // Recorded on arrival, so that a test can see a call that is still being delayed.
    let (index, delay, fail, fail_code) = {
        let mut state = mock.state();
        state.calls.push(Call {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
            code: "(no answer yet)".into(),
        });
        (
            state.calls.len() - 1,
            Mock::take(&mut state.delay),
            Mock::take(&mut state.fail),
            state.fail_code.clone(),
        )
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let reply = match fail {
        Some(FailMode::Http500) => Reply::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            "<html><body>500 Internal Server Error</body></html>",
        ),
        Some(FailMode::Mkt0999) => Reply::error(
            &path,
            StatusCode::INTERNAL_SERVER_ERROR,
            "MKT.0999",
            "Internal error",
        ),
        Some(FailMode::Malformed) => Reply::raw(StatusCode::OK, r#"{"resultCode":"MKT.00"#),
        Some(FailMode::Code) => Reply::error(
            &path,
            status_of(&fail_code),
            &fail_code,
            "failure injected by the mock marketplace",
        ),
        Some(FailMode::LoseAnswer) | None => {
            let reply = match mock.check_signature(&method, &path, &query, &headers, &body) {
                Err(reply) => reply,
                Ok(()) => {
                    mock.answer(&method, &path, &query, &headers, body.clone())
                        .await
                }
            };
            if fail == Some(FailMode::LoseAnswer) {
                Reply::raw(
                    StatusCode::GATEWAY_TIMEOUT,
                    "<html>504 Gateway Time-out</html>",
                )
            } else {
                reply
            }
        }
    };
    tracing::info!(%method, %path, status = reply.status.as_u16(), code = %reply.code, "mock marketplace call");
    if let Some(call) = mock.state().calls.get_mut(index) {
        call.status = reply.status.as_u16();
        call.code.clone_from(&reply.code);
    }
    reply.into_response()
}

impl Mock {
    /// The gateway's AK/SK check (§8.1): a malformed or wrong signature is the gateway's
    /// `APIGW.0301`; a well-formed signature by an unknown AK is the API's `MKT.0154`.
    fn check_signature(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Reply> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let pairs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let header_list: Vec<(&str, &str)> = headers
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
            .collect();
        let request = HttpRequest {
            method: method.as_str(),
            path,
            query: &pairs,
            headers: &header_list,
            body,
        };
        let inner = &self.0;
        match apig::verify(
            &request,
            &inner.ak,
            inner.sk.expose_secret(),
            chrono::Utc::now(),
            DATE_WINDOW_SECS,
        ) {
            Ok(()) => Ok(()),
            Err(apig::ApigError::WrongAccessKey(ak)) => Err(Reply::error(
                path,
                StatusCode::UNAUTHORIZED,
                "MKT.0154",
                &format!("Illegal token: access key {ak} is unknown"),
            )),
            Err(problem) => Err(Reply::json(
                StatusCode::UNAUTHORIZED,
                json!({
                    "error_code": "APIGW.0301",
                    "error_msg": format!("Incorrect IAM authentication information: {problem}"),
                    "request_id": uuid::Uuid::new_v4().simple().to_string(),
                }),
            )),
        }
    }

    async fn answer(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Reply {
        let event_file = path
            .strip_prefix("/api/mkp-openapi-public/global/v1/market-event/")
            .and_then(|rest| rest.strip_suffix("/file"))
            .filter(|event| !event.is_empty() && !event.contains('/'));
        match (method, path) {
            (&Method::GET, paths::QUERY_ORDER) => self.query_order(query),
            (&Method::POST, paths::LICENSE_ACTIVATE) => self.activate(&body),
            (&Method::POST, paths::LICENSE_HEARTBEAT) => self.heartbeat(&body),
            (&Method::POST, paths::USAGE_DATA) => self.usage(headers, &body),
            (&Method::POST, _) if let Some(event_id) = event_file => {
                if !self.state().license_events.contains(event_id) {
                    return Reply::error(
                        path,
                        StatusCode::OK,
                        "91381034",
                        &format!(
                            "License application invalid: no getLicenseAsync with eventId {event_id}"
                        ),
                    );
                }
                upload(headers, body).await
            }
            _ => Reply::json(
                StatusCode::NOT_FOUND,
                json!({"error_code": "APIGW.0101", "error_msg": "The API does not exist or has not been published in the environment"}),
            ),
        }
    }

    #[expect(
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "mock orders are plain data serialised into JSON objects"
    )]
    fn query_order(&self, query: &str) -> Reply {
        let path = paths::QUERY_ORDER;
        let param = |name: &str| {
            form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let Some(order_id) = param("orderId").filter(|id| !id.is_empty()) else {
            return Reply::error(
                path,
                StatusCode::BAD_REQUEST,
                "MKT.0101",
                "Invalid parameter: orderId is required",
            );
        };
        let registered = self.state().orders.get(&order_id).cloned();
        let Some(mut order) = registered.or_else(|| {
            mock_order(&order_id).map(|o| serde_json::to_value(o).expect("orders serialise"))
        }) else {
            return Reply::error(
                path,
                StatusCode::UNAUTHORIZED,
                "MKT.0150",
                &format!("Illegal operation: order {order_id} does not belong to this account"),
            );
        };
        if let Some(line_id) = param("orderLineId") {
            let lines = order["orderLine"].as_array().cloned().unwrap_or_default();
            let wanted: Vec<Value> = lines
                .into_iter()
                .filter(|l| l["orderLineId"] == line_id.as_str())
                .collect();
            if wanted.is_empty() {
                return Reply::error(
                    path,
                    StatusCode::BAD_REQUEST,
                    "MKT.0101",
                    &format!("Invalid parameter: order {order_id} has no line {line_id}"),
                );
            }
            order["orderLine"] = Value::Array(wanted);
        }
        Reply::json(
            StatusCode::OK,
            json!({"resultCode": MKT_SUCCESS, "resultMsg": "Success", "orderInfo": order}),
        )
    }

    #[expect(clippy::expect_used, reason = "the code info is plain data")]
    fn activate(&self, body: &[u8]) -> Reply {
        let path = paths::LICENSE_ACTIVATE;
        let request: ActivateRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(e) => {
                return Reply::error(
                    path,
                    StatusCode::BAD_REQUEST,
                    "92020002",
                    &format!("invalid parameter: {e}"),
                );
            }
        };
        let mut state = self.state();
        let Some(license) = state.licenses.get_mut(&request.license) else {
            return Reply::error(path, StatusCode::OK, "92020005", "license code not exist.");
        };
        if license.activate_time.is_none() {
            let at = request
                .real_effect_time
                .unwrap_or_else(|| time::format_compact(chrono::Utc::now()));
            license.activate_time = Some(at);
        }
        let info = LicenseCodeInfo {
            status: "ALIVE".into(),
            expire_time: Some(license.expire_time.clone()),
            product_id: Some(license.product_id.clone()),
            order_id: Some(license.order_id.clone()),
            amount: Some(license.amount),
        };
        Reply::json(
            StatusCode::OK,
            json!({"error_code": "92020000", "error_msg": "success",
                   "data": {"license_code_info": serde_json::to_string(&info).expect("serialises")}}),
        )
    }

    fn heartbeat(&self, body: &[u8]) -> Reply {
        let path = paths::LICENSE_HEARTBEAT;
        let request: HeartbeatRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(e) => {
                return Reply::error(
                    path,
                    StatusCode::BAD_REQUEST,
                    "92020002",
                    &format!("invalid parameter: {e}"),
                );
            }
        };
        let state = self.state();
        let Some(license) = state.licenses.get(&request.license) else {
            return Reply::error(path, StatusCode::OK, "92020005", "license code not exist.");
        };
        let Some(activate_time) = license.activate_time.clone() else {
            return Reply::error(
                path,
                StatusCode::BAD_REQUEST,
                "92020002",
                "invalid parameter: the license code is not activated",
            );
        };
        let expired =
            time::parse_compact(&license.expire_time).is_some_and(|t| t < chrono::Utc::now());
        let info = LicenseInfo {
            license_code: license.license.clone(),
            status: if expired { "EXPIRED" } else { "ALIVE" }.into(),
            activate_time,
            expire_time: Some(license.expire_time.clone()),
        };
        Reply::json(
            StatusCode::OK,
            json!({"error_code": "92020000", "error_msg": "success", "data": info}),
        )
    }

    /// 按需使用量推送 (§8.4) as documented, newer rules included: both signatures, the
    /// body in natural (sorted) order exactly as signed, at most 100 records, each record
    /// checked, the first record of a window wins, refusals as `abnormal_usage_data`.
    fn usage(&self, headers: &HeaderMap, body: &[u8]) -> Reply {
        let path = paths::USAGE_DATA;
        let fail = |code: &str, message: String| {
            Reply::error(path, StatusCode::BAD_REQUEST, code, &message)
        };
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        let now = chrono::Utc::now();
        let fresh = header("ts").parse::<i64>().is_ok_and(|ts| {
            (ts - now.timestamp_millis()).unsigned_abs() <= DATE_WINDOW_SECS * 1000
        });
        let nonce = header("nonce");
        if !fresh || nonce.is_empty() || nonce.len() > 64 {
            return fail(
                "MKT.0102",
                "Invalid body sign: ts (Unix milliseconds, recent) and nonce (1-64) are required"
                    .into(),
            );
        }
        if let Some(key) = &self.0.merchant_key {
            let expected = usage::usage_signature(
                key.expose_secret(),
                header("ts"),
                nonce,
                &String::from_utf8_lossy(body),
            );
            if header("signature") != expected {
                return fail("MKT.0102", "Invalid body sign".into());
            }
        }
        let sorted = serde_json::from_slice::<Value>(body)
            .map(|v| usage::canonical_json(&v).into_bytes() == body)
            .unwrap_or(false);
        let push: UsagePush = match serde_json::from_slice(body) {
            Ok(push) => push,
            Err(e) => return fail("MKT.0101", format!("Invalid parameter: {e}")),
        };
        if !sorted {
            return fail(
                "MKT.0102",
                "Invalid body sign: the body is not in natural (sorted-key) order".into(),
            );
        }
        if push.usage_records.len() > 100 {
            return fail("MKT.9003", "too many records: at most 100".into());
        }
        let at = |t: &str| {
            chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%SZ")
                .ok()
                .map(|t| t.and_utc())
        };
        let limit = now - chrono::Duration::days(21);
        if push
            .usage_records
            .iter()
            .any(|r| at(&r.begin_time).is_some_and(|begin| begin < limit))
        {
            return fail("MKT.9004", "beginTime is more than 21 days old".into());
        }
        let mut state = self.state();
        let mut abnormal = Vec::new();
        for record in push.usage_records {
            let value_ok = record.usage_value.parse::<f64>().is_ok_and(|v| v > 0.0)
                && record
                    .usage_value
                    .split_once('.')
                    .is_none_or(|(_, decimals)| decimals.len() <= 4);
            let times = [&record.record_time, &record.begin_time, &record.end_time].map(|t| at(t));
            let window = (
                record.instance_id.clone(),
                record.begin_time.clone(),
                record.end_time.clone(),
            );
            let code = if let Some(code) = Mock::take(&mut state.usage_codes) {
                Some(code)
            } else if record.metering_sn.is_empty() || record.metering_sn.len() > 64 {
                Some("004".to_owned())
            } else if times.iter().any(Option::is_none) {
                Some("002".to_owned())
            } else if !value_ok {
                Some("003".to_owned())
            } else if times[1] >= times[2] || times[2].is_some_and(|end| end > now) {
                Some("011".to_owned())
            } else if state.metering_sns.contains(&record.metering_sn) {
                Some("005".to_owned())
            } else if state.usage.iter().any(|r| {
                (
                    r.instance_id.as_str(),
                    r.begin_time.as_str(),
                    r.end_time.as_str(),
                ) == (window.0.as_str(), window.1.as_str(), window.2.as_str())
            }) {
                Some("010".to_owned())
            } else {
                None
            };
            match code {
                Some(code) => abnormal.push(json!({
                    "metering_sn": record.metering_sn,
                    "error_code": code,
                    "error_msg": crate::protocol::usage::record_code_meaning(&code),
                })),
                None => {
                    state.metering_sns.insert(record.metering_sn.clone());
                    state.usage.push(record);
                }
            }
        }
        if abnormal.is_empty() {
            Reply::json(
                StatusCode::OK,
                json!({"error_code": MKT_SUCCESS, "error_msg": "success"}),
            )
        } else {
            Reply::json(
                StatusCode::OK,
                json!({"error_code": usage::ABNORMAL_DATA, "error_msg": "abnormal usage data",
                       "abnormal_usage_data": abnormal}),
            )
        }
    }
}

/// 字符串/文件流上传 (§8.3): a multipart body with `isvUpdateFileReq` and, for FILE, `file`.
async fn upload(headers: &HeaderMap, body: Bytes) -> Reply {
    let invalid = |message: String| {
        Reply::json(
            StatusCode::BAD_REQUEST,
            json!({"error_code": "CBC.0101", "error_msg": message}),
        )
    };
    let mut request = axum::http::Request::new(axum::body::Body::from(body));
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        request
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type.clone());
    }
    let mut multipart = match Multipart::from_request(request, &()).await {
        Ok(multipart) => multipart,
        Err(e) => return invalid(format!("not multipart/form-data: {e}")),
    };
    let (mut meta, mut file, mut file_name) = (None, None, None);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or_default().to_owned();
                let json_part = field
                    .content_type()
                    .is_some_and(|t| t.starts_with("application/json"));
                let part_file_name = field.file_name().map(str::to_owned);
                let Ok(bytes) = field.bytes().await else {
                    return invalid(format!("part {name} cannot be read"));
                };
                match name.as_str() {
                    "isvUpdateFileReq" if !json_part => {
                        return invalid("isvUpdateFileReq must be application/json".into());
                    }
                    "isvUpdateFileReq" => meta = Some(bytes),
                    "file" => {
                        file = Some(bytes);
                        file_name = part_file_name;
                    }
                    other => return invalid(format!("unexpected part {other:?}")),
                }
            }
            Ok(None) => break,
            Err(e) => return invalid(format!("malformed multipart body: {e}")),
        }
    }
    let Some(meta) = meta else {
        return invalid("isvUpdateFileReq is missing".into());
    };
    let request: UploadRequest = match serde_json::from_slice(&meta) {
        Ok(request) => request,
        Err(e) => return invalid(format!("isvUpdateFileReq: {e}")),
    };
    match request.kind.as_str() {
        "CHARACTERS"
            if request
                .characters
                .as_deref()
                .is_some_and(|c| !c.is_empty() && c.chars().count() <= 1024) => {}
        "CHARACTERS" => return invalid("characters is required, at most 1024 characters".into()),
        "FILE" => {
            let Some(file) = file else {
                return invalid("file is required for type FILE".into());
            };
            if request.file_name.as_deref().is_none_or(str::is_empty) {
                return invalid("file_name is required for type FILE".into());
            }
            if request
                .file_name
                .as_deref()
                .is_some_and(|n| n.chars().count() > 1024)
            {
                return invalid("file_name is longer than 1024 characters".into());
            }
            if file_name.is_none() {
                return invalid("the file part has no filename".into());
            }
            let actual = hex::encode(Sha256::digest(&file));
            if !request
                .sha256
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&actual))
            {
                return invalid("sha256 does not match the file".into());
            }
        }
        other => return invalid(format!("type {other:?} is not CHARACTERS or FILE")),
    }
    Reply::json(
        StatusCode::OK,
        json!({"error_code": "CBC.0000", "error_msg": "success"}),
    )
}

async fn register_order(State(mock): State<Mock>, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|order| mock.register_order(order));
    match parsed {
        Ok(order_id) => {
            (StatusCode::OK, axum::Json(json!({"registered": order_id}))).into_response()
        }
        Err(problem) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": problem})),
        )
            .into_response(),
    }
}

async fn register_license(State(mock): State<Mock>, body: Bytes) -> Response {
    match serde_json::from_slice::<MockLicense>(&body) {
        Ok(license) => {
            let code = license.license.clone();
            mock.state().licenses.insert(code.clone(), license);
            (StatusCode::OK, axum::Json(json!({"registered": code}))).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.to_string()})),
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct FailOrder {
    mode: FailMode,
    count: u32,
    /// For `code`: which.
    #[serde(default)]
    code: String,
}

async fn fail_next(
    State(mock): State<Mock>,
    axum::Json(order): axum::Json<FailOrder>,
) -> StatusCode {
    if order.count == 0 {
        mock.state().fail = None;
    } else if order.mode == FailMode::Code {
        mock.fail_with_code(&order.code, order.count);
    } else {
        mock.fail_next(order.mode, order.count);
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct DelayOrder {
    ms: u64,
    count: u32,
}

async fn delay_next(
    State(mock): State<Mock>,
    axum::Json(order): axum::Json<DelayOrder>,
) -> StatusCode {
    if order.count == 0 {
        mock.state().delay = None;
    } else {
        mock.delay_next(Duration::from_millis(order.ms), order.count);
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct CodeOrder {
    code: String,
    count: u32,
}

async fn usage_codes(
    State(mock): State<Mock>,
    axum::Json(order): axum::Json<CodeOrder>,
) -> StatusCode {
    mock.usage_codes_next(&order.code, order.count);
    StatusCode::NO_CONTENT
}

async fn usage_taken(State(mock): State<Mock>) -> axum::Json<Vec<UsageRecord>> {
    axum::Json(mock.usage_taken())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LicenseEvent {
    event_id: String,
}

async fn register_license_event(
    State(mock): State<Mock>,
    axum::Json(event): axum::Json<LicenseEvent>,
) -> StatusCode {
    mock.expect_license_event(&event.event_id);
    StatusCode::NO_CONTENT
}

async fn calls(State(mock): State<Mock>) -> axum::Json<Vec<Call>> {
    axum::Json(mock.calls())
}

async fn reset(State(mock): State<Mock>) -> StatusCode {
    mock.reset();
    StatusCode::NO_CONTENT
}

/// Decodes `%XX` escapes of a URI path (not `+`, which is a literal in paths).
#[expect(
    clippy::expect_used,
    clippy::indexing_slicing,
    reason = "i < bytes.len() in the loop; two hex digits are at most 255"
)]
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push(u8::try_from(high * 16 + low).expect("two hex digits fit a byte"));
                i += 3;
            }
            (b, ..) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_mock_id_has_an_order_with_one_line() {
        for id in MOCK_ORDER_IDS {
            let order = mock_order(id).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(order.order_line.len(), 1);
            assert_eq!(order.order_line[0].order_line_id, format!("{id}-000001"));
            let round_trip: OrderInfo =
                serde_json::from_value(serde_json::to_value(&order).unwrap()).unwrap();
            assert_eq!(round_trip, order, "{id}");
        }
        assert!(mock_order("CS123").is_none());
        let trial = mock_order("MOCKPERIODDAYTRIAL").unwrap();
        assert_eq!(trial.order_type.as_deref(), Some("TRIAL"));
        assert_eq!(trial.order_line[0].period_type.as_deref(), Some("day"));
        assert_eq!(
            mock_order("MOCKONDEMAND").unwrap().order_line[0].expire_time,
            None
        );
    }

    #[test]
    fn paths_are_percent_decoded_but_plus_is_kept() {
        assert_eq!(percent_decode("/a%20b/c+d/%C3%BC/%zz"), "/a b/c+d/ü/%zz");
    }
}
