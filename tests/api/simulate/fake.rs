//! A small in-memory merchant server for the simulator to test: every interface family, correct
//! by default (built on the same protocol module as koogate), with faults that can be switched
//! on one at a time to break it the ways real merchant servers break.

use crate::helpers::KEY;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use koogate::protocol::canonical;
use koogate::protocol::codes::ResultCode;
use koogate::protocol::crypto::{FieldCipher, KeySize};
use koogate::protocol::fields::{FieldError, Fields};
use koogate::protocol::reply::{AppInfo, InstanceInfo, Reply};
use koogate::protocol::saas_v2::{Activity, Request};
use koogate::protocol::signature::{self, KeyRing, SignedParams, Variant};
use koogate::protocol::time;
use koogate::protocol::v1::V1Request;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The license code the fake has activated.
pub const LICENSE: &str = "LICENSE-TEST-0001";

/// Ways to break the fake, one per flag.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Body-Sign keyed with key + timestamp instead of the key alone.
    pub body_sign_with_timestamp: bool,
    /// Body-Sign over `{"a": "b"}` while `{"a":"b"}` is sent.
    pub reserialised_after_signing: bool,
    pub no_body_sign: bool,
    /// Body-Sign written `signature="…"`, without the documented space.
    pub body_sign_without_space: bool,
    /// A nonce may be used again.
    pub accepts_replayed_nonce: bool,
    /// The timestamp window is not checked.
    pub accepts_stale_timestamp: bool,
    /// Each newInstance creates an instance, duplicates included.
    pub instance_per_call: bool,
    /// Every answer is a proxy's HTML error page.
    pub html: bool,
    /// After answering one bad request, every answer is an HTTP 500.
    pub breaks_after_bad_input: bool,
    /// V1 credentials are sent in plain text.
    pub plain_v1_credentials: bool,
    /// The V2 signature is checked over the fake's own re-serialisation of the JSON (keys
    /// sorted, nulls kept, escapes rewritten), never over the bytes received.
    pub verifies_reserialised: bool,
    /// The V2 signature is checked over the canonical form only (D1a), as Huawei's sample
    /// server checks it.
    pub verifies_canonical_only: bool,
    /// The V2 payload hash is a plain SHA-256 (variant B); variant A is refused.
    pub expects_variant_b: bool,
    /// A forged updateInstanceStatus is answered 000004 instead of being refused.
    pub forged_status_processing: bool,
    /// V2 fields are validated before the signature is checked.
    pub validates_before_authenticating: bool,
    /// An unknown instance is answered 000004 instead of 000003.
    pub unknown_instance_processing: bool,
    /// Releases are ignored: a released instance keeps being answered.
    pub answers_after_release: bool,
    /// An expireTime that is not yyyyMMddHHmmss crashes the handler (HTTP 500).
    pub crashes_on_bad_time: bool,
    /// V1 newInstance requires mobilePhone.
    pub requires_mobile_phone: bool,
    /// V1 newInstance answers its instanceId encrypted under a fresh random IV each time.
    pub random_iv_instance_id: bool,
    /// Invalid requests are answered 000999, a code outside the spec's table.
    pub unlisted_result_code: bool,
    /// Each answer waits this long first.
    pub delay: Duration,
}

#[derive(Default)]
struct Memory {
    nonces: HashSet<String>,
    /// Idempotency key → the first answer's bytes.
    answers: HashMap<String, Vec<u8>>,
    instances: HashSet<String>,
    /// Instances a real (testFlag 0) releaseInstance released (D9); a debugging release
    /// keeps the instance for later debugging calls (D11).
    released: HashSet<String>,
    /// V1 order → the instanceId its first newInstance named.
    first_ids: HashMap<String, String>,
    broken: bool,
}

#[derive(Clone)]
struct Fake {
    faults: Faults,
    memory: Arc<Mutex<Memory>>,
}

/// Starts the fake on port 0 and returns its base URL (`http://127.0.0.1:PORT`). It serves
/// `/saas` (V2 POST, V1 GET), `/order-notify` and `/license-code` until the test ends.
pub async fn start(faults: Faults) -> String {
    let fake = Fake {
        faults,
        memory: Arc::default(),
    };
    let router = Router::new()
        .route("/saas", post(saas_v2).get(saas_v1))
        .route("/order-notify", post(order_notify))
        .route("/license-code", post(license_code))
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

impl Fake {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().expect("fake memory")
    }

    /// §2.2 verification with the nonce store, unless a fault skips part of it: the signed
    /// timestamp, or the bytes of the refusal.
    fn verify(&self, query: &str, body: &[u8]) -> Result<String, Vec<u8>> {
        let params = SignedParams::from_query(query);
        let now = chrono::Utc::now().timestamp_millis();
        let now = match (&params.timestamp, self.faults.accepts_stale_timestamp) {
            (Some(ts), true) => signature::timestamp_millis(ts).unwrap_or(now),
            _ => now,
        };
        let refused = |why: String| Reply::new(ResultCode::AuthFailed, why).to_bytes();
        // What the faulty servers verify instead of the bytes received; a body that is not
        // JSON leaves them nothing to re-serialise, so its bytes are verified.
        let signed = if self.faults.verifies_reserialised {
            serde_json::from_slice::<serde_json::Value>(body)
                .map(|value| value.to_string().into_bytes())
                .ok()
        } else if self.faults.verifies_canonical_only {
            canonical::canonical_form(body)
        } else {
            None
        };
        let signed = signed.as_deref().unwrap_or(body);
        let nonce = if self.faults.expects_variant_b {
            match (&params.signature, &params.timestamp, &params.nonce) {
                (Some(sig), Some(ts), Some(nonce))
                    if sig.eq_ignore_ascii_case(&signature::sign(
                        KEY,
                        nonce,
                        ts,
                        signed,
                        Variant::B,
                    )) =>
                {
                    nonce.clone()
                }
                _ => return Err(refused("signature does not match".into())),
            }
        } else {
            let keys = KeyRing::from_list(KEY);
            let verify = |bytes: &[u8]| signature::verify(&keys, &params, bytes, false, now);
            // D1a: the raw bytes, then (unless a fault re-serialises) the canonical form.
            let canonical_too =
                !self.faults.verifies_reserialised && !self.faults.verifies_canonical_only;
            verify(signed)
                .or_else(|e| match canonical::canonical_form(body) {
                    Some(form) if canonical_too => verify(&form),
                    _ => Err(e),
                })
                .map_err(|e| refused(e.to_string()))?
                .nonce
        };
        if !self.memory().nonces.insert(nonce) && !self.faults.accepts_replayed_nonce {
            return Err(refused("nonce was already used".into()));
        }
        Ok(params.timestamp.unwrap_or_default())
    }

    fn invalid(&self, error: FieldError) -> Vec<u8> {
        self.memory().broken |= self.faults.breaks_after_bad_input;
        if self.faults.unlisted_result_code {
            let reply = serde_json::json!({"resultCode": "000999", "resultMsg": error.to_string()});
            return reply.to_string().into_bytes();
        }
        Reply::new(ResultCode::InvalidParam, error.to_string()).to_bytes()
    }

    /// Answers `body`, signed (or mis-signed) as the faults say.
    async fn answer(&self, body: Vec<u8>, time: &str) -> Response {
        tokio::time::sleep(self.faults.delay).await;
        if self.faults.html {
            let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
            return ([(header::CONTENT_TYPE, "text/html")], page).into_response();
        }
        let signed_bytes = if self.faults.reserialised_after_signing {
            String::from_utf8_lossy(&body)
                .replace("\":", "\": ")
                .replace(",\"", ", \"")
                .into_bytes()
        } else {
            body.clone()
        };
        let key = if self.faults.body_sign_with_timestamp {
            format!("{KEY}{time}")
        } else {
            KEY.to_owned()
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
        if !self.faults.no_body_sign {
            let mut value = signature::body_sign(&key, &signed_bytes);
            if self.faults.body_sign_without_space {
                value = value.replace("signature= ", "signature=");
            }
            headers.insert("Body-Sign", HeaderValue::from_str(&value).expect("ASCII"));
        }
        (StatusCode::OK, headers, body).into_response()
    }

    fn broken(&self) -> bool {
        self.memory().broken
    }

    /// Whether `id` is an instance callbacks may still change (D9).
    fn live(&self, id: &str) -> bool {
        let memory = self.memory();
        memory.instances.contains(id)
            && (self.faults.answers_after_release || !memory.released.contains(id))
    }

    fn not_found(&self, id: &str) -> Reply {
        if self.faults.unknown_instance_processing && !self.memory().instances.contains(id) {
            return Reply::new(ResultCode::Processing, "processing");
        }
        Reply::new(
            ResultCode::NotFound,
            format!("instance {id} does not exist"),
        )
    }

    /// The answer to a change of `id`; a release is final only when it is real (D9, D11),
    /// and a release of a released instance succeeds again.
    fn change(&self, id: &str, release: bool, test: bool) -> Reply {
        if release && self.memory().instances.contains(id) {
            if !test {
                self.memory().released.insert(id.to_owned());
            }
            return Reply::success();
        }
        if self.live(id) {
            Reply::success()
        } else {
            self.not_found(id)
        }
    }

    /// D7: the first answer for `key`, made by `first` and stored, or the stored one.
    fn once(&self, key: String, id: &str, first: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
        let mut memory = self.memory();
        if self.faults.instance_per_call {
            memory.instances.insert(id.to_owned());
            return first();
        }
        if let Some(stored) = memory.answers.get(&key) {
            return stored.clone();
        }
        let bytes = first();
        memory.instances.insert(id.to_owned());
        memory.answers.insert(key, bytes.clone());
        bytes
    }
}

fn app_info(id: &str) -> AppInfo {
    AppInfo {
        front_end_url: format!("https://app.example.net/{id}"),
        admin_url: None,
        user_name: None,
        password: None,
        memo: None,
    }
}

const SERVER_ERROR: (StatusCode, &str) = (StatusCode::INTERNAL_SERVER_ERROR, "");

async fn saas_v2(State(fake): State<Fake>, RawQuery(query): RawQuery, body: Bytes) -> Response {
    if fake.broken() {
        return SERVER_ERROR.into_response();
    }
    if fake.faults.validates_before_authenticating
        && let Err(error) = Request::parse(&body)
    {
        return fake.answer(fake.invalid(error), "").await;
    }
    let time = match fake.verify(query.as_deref().unwrap_or_default(), &body) {
        Ok(time) => time,
        Err(_)
            if fake.faults.forged_status_processing
                && activity(&body) == "updateInstanceStatus" =>
        {
            let processing = Reply::new(ResultCode::Processing, "processing");
            return fake.answer(processing.to_bytes(), "").await;
        }
        Err(refusal) => return fake.answer(refusal, "").await,
    };
    if fake.faults.crashes_on_bad_time && bad_time(&body) {
        return SERVER_ERROR.into_response();
    }
    let bytes = match Request::parse(&body) {
        Err(error) => fake.invalid(error),
        Ok(request) => match request.activity {
            Activity::NewInstance {
                order_id,
                order_line_id,
                business_id,
            } => fake.once(format!("{order_id}\n{order_line_id}"), &business_id, || {
                Reply::success()
                    .with_instance_id(business_id.as_str())
                    .to_bytes()
            }),
            Activity::QueryInstance { instance_ids } => {
                let info: Vec<InstanceInfo> = instance_ids
                    .into_iter()
                    .filter(|id| fake.live(id))
                    .map(|id| InstanceInfo {
                        app_info: Some(app_info(&id)),
                        instance_id: id.into(),
                        usage_info: None,
                    })
                    .collect();
                if info.is_empty() {
                    Reply::new(ResultCode::NotFound, "no such instance").to_bytes()
                } else {
                    let mut reply = Reply::success();
                    reply.info = Some(info);
                    reply.to_bytes()
                }
            }
            other => {
                let release = matches!(other, Activity::ReleaseInstance { .. });
                let id = other.instance_id().unwrap_or_default();
                fake.change(id, release, request.test).to_bytes()
            }
        },
    };
    fake.answer(bytes, &time).await
}

/// The body's `activity`, or nothing.
fn activity(body: &[u8]) -> String {
    Fields::parse(body)
        .ok()
        .and_then(|f| f.optional("activity", 64).ok().flatten())
        .unwrap_or_default()
}

/// Whether the body carries an `expireTime` that is not `yyyyMMddHHmmss`.
fn bad_time(body: &[u8]) -> bool {
    Fields::parse(body)
        .ok()
        .and_then(|f| f.optional("expireTime", 64).ok().flatten())
        .is_some_and(|t| time::parse_compact(&t).is_none())
}

async fn saas_v1(State(fake): State<Fake>, RawQuery(query): RawQuery) -> Response {
    if fake.broken() {
        return SERVER_ERROR.into_response();
    }
    let request = V1Request::from_query(query.as_deref().unwrap_or_default());
    let time = request.get("timeStamp").unwrap_or_default().to_owned();
    if let Err(error) = request.verify([KEY], chrono::Utc::now(), 600) {
        let reply = Reply::new(ResultCode::AuthFailed, error.to_string());
        return fake.answer(reply.to_bytes(), &time).await;
    }
    let bytes = match v1_activity(&fake, &request) {
        Ok(bytes) => bytes,
        Err(error) => fake.invalid(error),
    };
    fake.answer(bytes, &time).await
}

fn v1_activity(fake: &Fake, request: &V1Request) -> Result<Vec<u8>, FieldError> {
    let required = |field: &'static str| match request.get(field) {
        None | Some("") => Err(FieldError::Missing(field)),
        Some(value) if value.chars().count() > 64 => Err(FieldError::TooLong { field, max: 64 }),
        Some(value) => Ok(value.to_owned()),
    };
    let cipher = FieldCipher::new(KEY, KeySize::Aes256);
    let credentials = |id: &str| {
        let mut info = app_info(id);
        let seal = |text: &str| {
            if fake.faults.plain_v1_credentials {
                text.to_owned()
            } else {
                cipher.encrypt(text)
            }
        };
        info.user_name = Some(seal("admin"));
        info.password = Some(seal("s3cret-pass"));
        info
    };
    let activity = required("activity")?;
    let test = request.get("testFlag") == Some("1");
    if let Some(expire) = request.get("expireTime")
        && time::parse_compact(expire).is_none()
    {
        return Err(FieldError::Invalid {
            field: "expireTime",
            reason: format!("{expire:?} is not yyyyMMddHHmmss"),
        });
    }
    Ok(match activity.as_str() {
        "newInstance" => {
            let (order, id) = (required("orderId")?, required("businessId")?);
            required("customerId")?;
            if fake.faults.requires_mobile_phone && request.get("mobilePhone").is_none() {
                return Err(FieldError::Missing("mobilePhone"));
            }
            if fake.faults.random_iv_instance_id {
                let id = {
                    let mut memory = fake.memory();
                    let id = memory.first_ids.entry(order).or_insert(id).clone();
                    memory.instances.insert(id.clone());
                    id
                };
                let mut reply = Reply::success().with_instance_id(cipher.encrypt(&id));
                reply.encrypt_type = Some("1");
                reply.app_info = Some(credentials(&id));
                return Ok(reply.to_bytes());
            }
            fake.once(order, &id, || {
                let mut reply = Reply::success().with_instance_id(&id);
                reply.encrypt_type = Some("1");
                reply.app_info = Some(credentials(&id));
                reply.to_bytes()
            })
        }
        "queryInstance" => {
            let id = required("instanceId")?;
            if !fake.live(&id) {
                return Ok(fake.not_found(&id).to_bytes());
            }
            let mut reply = Reply::success();
            reply.encrypt_type = Some("1");
            reply.info = Some(vec![InstanceInfo {
                app_info: Some(credentials(&id)),
                instance_id: id,
                usage_info: None,
            }]);
            reply.to_bytes()
        }
        "refreshInstance" | "expireInstance" | "instanceStatus" | "upgrade" | "releaseInstance" => {
            let id = required("instanceId")?;
            fake.change(&id, activity == "releaseInstance", test)
                .to_bytes()
        }
        _ => return Err(FieldError::UnknownActivity(activity)),
    })
}

async fn order_notify(
    State(fake): State<Fake>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if fake.broken() {
        return SERVER_ERROR.into_response();
    }
    let time = match fake.verify(query.as_deref().unwrap_or_default(), &body) {
        Ok(time) => time,
        Err(refusal) => return fake.answer(refusal, "").await,
    };
    let parsed = Fields::parse(&body).and_then(|f| {
        match f.required("activity", 20)?.as_str() {
            "orderNotify" => {}
            other => return Err(FieldError::UnknownActivity(other.to_owned())),
        }
        f.required("orderId", 64)?;
        f.required("orderLineId", 64)?;
        f.test_flag()
    });
    let bytes = match parsed {
        Ok(_) => Reply::new(ResultCode::Success, "success").to_bytes(),
        Err(error) => fake.invalid(error),
    };
    fake.answer(bytes, &time).await
}

async fn license_code(
    State(fake): State<Fake>,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    if fake.broken() {
        return SERVER_ERROR.into_response();
    }
    let time = match fake.verify(query.as_deref().unwrap_or_default(), &body) {
        Ok(time) => time,
        Err(refusal) => return fake.answer(refusal, "").await,
    };
    let parsed = Fields::parse(&body).and_then(|f| {
        let license = f.required("license", 64)?;
        match f.required("activity", 32)?.as_str() {
            "refreshLicenseCode" => {
                for field in ["scene", "orderId", "orderLineId"] {
                    f.required(field, 64)?;
                }
                f.compact_time("expireTime")?;
            }
            "updateLicenseCodeStatus" => {
                f.required("status", 32)?;
            }
            "releaseLicenseCode" => {}
            other => return Err(FieldError::UnknownActivity(other.to_owned())),
        }
        Ok(license)
    });
    let bytes = match parsed {
        Ok(license) if license == LICENSE => Reply::success().to_bytes(),
        Ok(license) => Reply::new(
            ResultCode::NotFound,
            format!("license code {license} does not exist"),
        )
        .to_bytes(),
        Err(error) => fake.invalid(error),
    };
    fake.answer(bytes, &time).await
}
