//! The test application: the real server on port 0 over a fresh SQLite file or a fresh
//! PostgreSQL database, and a client that signs requests exactly as KooGallery does,
//! with the same protocol module the server uses.

use koogate::app::{self, AppState};
use koogate::config::Settings;
use koogate::domain::callback::Clock;
use koogate::domain::provision::Provisioner;
use koogate::protocol::signature::{self, Variant};
use koogate::store::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The key bound in seller center in these tests (the spec's test key).
pub const KEY: &str = "test-access-key-0001";

/// Which store the server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an `async fn(Backend)` test once per backend, as two named tests.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use $crate::helpers::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(Backend::Postgres).await
            }
        }
    )*};
}

/// Where a test's data lives; kept across restarts of the server.
pub struct Database {
    pub url: String,
    // Holds the SQLite file's folder until the test ends.
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    pub async fn fresh(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/nested/koogate.db", dir.path().display());
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => Self {
                url: crate::postgres::fresh_database().await,
                _dir: None,
            },
        }
    }
}

/// How to start a test server.
pub struct Options {
    pub env: HashMap<String, String>,
    pub provisioner: Option<Arc<dyn Provisioner>>,
    pub clock: Option<Clock>,
}

impl Default for Options {
    fn default() -> Self {
        let mut env = HashMap::new();
        env.insert("KOOGATE_ACCESS_KEY".into(), KEY.into());
        env.insert(
            "KOOGATE_FRONTEND_URL".into(),
            "https://app.example.net/{instanceId}".into(),
        );
        Self {
            env,
            provisioner: None,
            clock: None,
        }
    }
}

impl Options {
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    pub fn without_env(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub db: Database,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// One answer, as received.
#[derive(Debug)]
pub struct Received {
    pub status: u16,
    pub body_sign: Option<String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn code(&self) -> String {
        self.json()["resultCode"]
            .as_str()
            .expect("resultCode is a string")
            .to_owned()
    }

    pub fn msg(&self) -> String {
        self.json()["resultMsg"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Whether `Body-Sign` is valid for the exact bytes received, under `key`.
    pub fn signed_with(&self, key: &str) -> bool {
        self.body_sign
            .as_deref()
            .is_some_and(|header| signature::verify_body_sign(key, &self.body, header))
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(Database::fresh(backend).await, Options::default()).await
    }

    pub async fn spawn_with(db: Database, options: Options) -> Self {
        let mut env = options.env;
        env.insert("KOOGATE_DATABASE_URL".into(), db.url.clone());
        env.entry("KOOGATE_LOG_FILTER".into())
            .or_insert_with(|| "warn".into());
        let settings =
            Settings::load_with(None, |name| env.get(name).cloned()).expect("test settings load");
        if std::env::var_os("TEST_LOG").is_some() {
            koogate::telemetry::init(settings.log.format, "debug");
        }
        let store = app::open_store(&settings)
            .await
            .expect("store opens and migrates");
        let provisioner = options
            .provisioner
            .unwrap_or_else(|| Arc::new(settings.provisioner()));
        let mut state = AppState::new(&settings, store.clone(), provisioner);
        if let Some(clock) = options.clock {
            state.services.clock = clock;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app::serve(listener, state, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            store,
            client: reqwest::Client::new(),
            db,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server gracefully and gives back its database.
    pub async fn stop(mut self) -> Database {
        let _ = self.shutdown.take().expect("running").send(());
        self.server
            .take()
            .expect("running")
            .await
            .expect("server task")
            .expect("server stops cleanly");
        std::mem::replace(
            &mut self.db,
            Database {
                url: String::new(),
                _dir: None,
            },
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to `path` signed with `key` at the current time and a fresh nonce.
    pub async fn post_signed(&self, path: &str, key: &str, body: &str) -> Received {
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let sig = signature::sign(key, &nonce, &ts, body.as_bytes(), Variant::A);
        self.post_raw(
            path,
            &format!("signature={sig}&timestamp={ts}&nonce={nonce}"),
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// A SaaS 2.0 callback signed with the test key.
    pub async fn saas(&self, body: &str) -> Received {
        self.post_signed("/koogallery/saas", KEY, body).await
    }

    /// POSTs exactly these query and body bytes.
    pub async fn post_raw(&self, path: &str, query: &str, body: Vec<u8>) -> Received {
        let response = self
            .client
            .post(format!("{}?{query}", self.url(path)))
            .header("Content-Type", "application/json;charset=utf8")
            .body(body)
            .send()
            .await
            .expect("server answers");
        Self::received(response).await
    }

    pub async fn received(response: reqwest::Response) -> Received {
        let status = response.status().as_u16();
        let body_sign = response
            .headers()
            .get("Body-Sign")
            .map(|v| v.to_str().expect("ASCII header").to_owned());
        let body = response.bytes().await.expect("body").to_vec();
        Received {
            status,
            body_sign,
            body,
        }
    }
}

/// A `newInstance` body for an order line.
pub fn new_instance(order_id: &str, business_id: &str) -> String {
    format!(
        r#"{{"activity":"newInstance","businessId":"{business_id}","orderId":"{order_id}","orderLineId":"{order_id}-000001","testFlag":"0"}}"#
    )
}

/// A unique order id for a test.
pub fn order_id() -> String {
    format!(
        "CS{}",
        &uuid::Uuid::new_v4().simple().to_string()[..15].to_uppercase()
    )
}
