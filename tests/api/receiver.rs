//! A stand-in for the merchant's application: a webhook endpoint on port 0 that checks
//! every delivery with the Standard Webhooks reference crate (an oracle independent of
//! koogate's signer), keeps what it received, and misbehaves on demand.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The secret the test servers sign with and the receiver verifies with.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One delivery attempt as the app saw it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub body: Value,
    /// The reference crate accepted the signature.
    pub verified: bool,
    /// What the receiver answered.
    pub status: u16,
}

impl Delivery {
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    pub fn subject(&self) -> &str {
        self.body["data"]["subject"].as_str().unwrap_or_default()
    }

    pub fn sequence(&self) -> i64 {
        self.body["data"]["sequence"].as_i64().unwrap_or_default()
    }
}

#[derive(Default)]
struct Script {
    /// Failures (HTTP 500) still to give each subject.
    failures: HashMap<String, u32>,
    /// Answer every delivery with this status instead.
    status: Option<u16>,
    /// Wait this long before answering.
    delay: Option<Duration>,
    /// The body to answer `instance.provision_requested` with.
    provision_answer: Option<String>,
    /// The body to answer `license.requested` with.
    license_answer: Option<String>,
}

#[derive(Default)]
struct Shared {
    deliveries: Vec<Delivery>,
    script: Script,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hooks", post(receive))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Settings that deliver events here, with a compressed retry schedule.
    pub fn options(&self, options: crate::helpers::Options) -> crate::helpers::Options {
        options
            .env("KOOGATE_EVENTS_URL", &self.url())
            .env("KOOGATE_EVENTS_SECRET", SECRET)
            .env("KOOGATE_EVENTS_RETRY_SCHEDULE", "50ms")
            .env("KOOGATE_EVENTS_TIMEOUT_MS", "1000")
            .env("KOOGATE_JOBS_POLL_INTERVAL_MS", "50")
    }

    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.shared.lock().unwrap())
    }

    /// Fails the next `n` deliveries about `subject` with HTTP 500.
    pub fn fail(&self, subject: &str, n: u32) {
        self.with(|s| s.script.failures.insert(subject.into(), n));
    }

    /// Answers every delivery with `status` (`None`: the normal 204).
    pub fn answer_status(&self, status: Option<u16>) {
        self.with(|s| s.script.status = status);
    }

    pub fn delay(&self, delay: Option<Duration>) {
        self.with(|s| s.script.delay = delay);
    }

    /// Answers `instance.provision_requested` with this JSON body.
    pub fn provision_with(&self, body: Option<&str>) {
        self.with(|s| s.script.provision_answer = body.map(str::to_owned));
    }

    /// Answers `license.requested` with this JSON body.
    pub fn license_with(&self, body: Option<&str>) {
        self.with(|s| s.script.license_answer = body.map(str::to_owned));
    }

    /// Every attempt received so far.
    pub fn attempts(&self) -> Vec<Delivery> {
        self.with(|s| s.deliveries.clone())
    }

    /// The deliveries the receiver accepted (2xx), once per `webhook-id`, in order of
    /// arrival: what an app that dedupes on the id processes.
    pub fn processed(&self) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        self.attempts()
            .into_iter()
            .filter(|d| (200..300).contains(&d.status) && seen.insert(d.id.clone()))
            .collect()
    }
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let verified = standardwebhooks::Webhook::new(SECRET)
        .expect("the test secret parses")
        .verify(&body, &headers)
        .is_ok();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let subject = json["data"]["subject"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, delay, answer) = {
        let mut shared = shared.lock().unwrap();
        let script = &mut shared.script;
        let failing = script.failures.get_mut(&subject).filter(|n| **n > 0);
        let status = match (script.status, failing) {
            (Some(status), _) => status,
            (None, Some(n)) => {
                *n -= 1;
                500
            }
            (None, None) if !verified => 400,
            (None, None) => 200,
        };
        let answer = match json["type"].as_str() {
            Some("instance.provision_requested") => script.provision_answer.clone(),
            Some("license.requested") => script.license_answer.clone(),
            _ => None,
        };
        (status, script.delay, answer)
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    shared.lock().unwrap().deliveries.push(Delivery {
        id,
        body: json,
        verified,
        status,
    });
    let status = StatusCode::from_u16(status).unwrap();
    match answer {
        Some(answer) if status.is_success() => (status, answer).into_response(),
        _ => status.into_response(),
    }
}
