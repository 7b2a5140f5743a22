//! The test application: the real server on port 0 over a fresh SQLite file or a fresh
//! PostgreSQL database, and a client that signs requests exactly as KooGallery does,
//! with the same protocol module the server uses.

use koogate::app::{self, AppState};
use koogate::clock::Clock;
use koogate::config::Settings;
use koogate::domain::provision::Provisioner;
use koogate::protocol::signature::{self, Variant};
use koogate::protocol::v1::V1Request;
use koogate::store::refused::RefusedLog;
use koogate::store::{CallbackRecord, Store};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The key bound in seller center in these tests (the spec's test key).
pub const KEY: &str = "test-access-key-0001";

/// The data key of every test database (hex of 32 bytes), so that a store opened by a
/// test and a server started as a process read each other's encrypted columns.
pub const TEST_DATA_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

/// What seals data at rest under [`TEST_DATA_KEY`], for tests that open a store directly.
pub fn test_sealer() -> koogate::store::seal::Sealer {
    let key = koogate::store::seal::DataKey::parse(TEST_DATA_KEY).expect("the test key parses");
    koogate::store::seal::Sealer::new(key, Vec::new())
}

/// The management API's bearer token in these tests.
pub const API_TOKEN: &str = "test-api-token-0001";

/// Opens and migrates the store of a test database directly, without a server.
pub async fn open_store(db: &Database) -> Arc<dyn Store> {
    let options = koogate::store::PoolOptions {
        max_connections: 8,
        acquire_timeout: std::time::Duration::from_secs(5),
    };
    let store = koogate::store::connect(&db.url, &options, test_sealer())
        .await
        .expect("store opens");
    store.migrate().await.expect("migrations apply");
    store
}

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
    /// The same database, for a second replica; the first keeps owning its files.
    pub fn shared(&self) -> Self {
        Self {
            url: self.url.clone(),
            _dir: None,
        }
    }

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
        env.insert("KOOGATE_API_TOKEN".into(), API_TOKEN.into());
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
    /// The internal listener: the management API.
    pub admin: SocketAddr,
    pub store: Arc<dyn Store>,
    pub client: reqwest::Client,
    pub db: Database,
    /// The buffer the records of refused requests wait in before they are written.
    pub refused: RefusedLog,
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
        env.entry("KOOGATE_DATA_KEY".into())
            .or_insert_with(|| TEST_DATA_KEY.into());
        env.entry("KOOGATE_LOG_FILTER".into())
            .or_insert_with(|| "warn".into());
        let mut settings =
            Settings::load_with(None, |name| env.get(name).cloned()).expect("test settings load");
        settings
            .prepare_license_key()
            .expect("the License signing key can be kept beside the database");
        if std::env::var_os("TEST_LOG").is_some() {
            koogate::telemetry::init(settings.log.format, "debug");
        }
        let store = app::open_store(&settings)
            .await
            .expect("store opens and migrates");
        let provisioner = options
            .provisioner
            .unwrap_or_else(|| settings.configured_provisioner());
        let mut state = AppState::new(&settings, store.clone(), provisioner);
        if let Some(clock) = options.clock {
            state.services.clock = clock;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let admin = admin_listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = app::Listeners {
            public: listener,
            admin: admin_listener,
        };
        let refused = state.services.refused.clone();
        let server = tokio::spawn(app::serve(listeners, state, async {
            let _ = rx.await;
        }));
        Self {
            addr,
            admin,
            store,
            client: reqwest::Client::new(),
            db,
            refused,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// The newest `limit` callback records, once the refused ones buffered so far are
    /// written.
    pub async fn records(&self, limit: u32) -> Vec<CallbackRecord> {
        self.refused.flushed().await;
        self.store
            .recent_callbacks(limit)
            .await
            .expect("records read")
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

    /// Kills the server as a crash would, its job worker included (nothing finishes),
    /// and gives back its database.
    pub async fn crash(mut self) -> Database {
        let server = self.server.take().expect("running");
        server.abort();
        assert!(
            server.await.expect_err("aborted").is_cancelled(),
            "the server was killed, not stopped"
        );
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

    /// GETs exactly this query string.
    pub async fn get_raw(&self, path: &str, query: &str) -> Received {
        let response = self
            .client
            .get(format!("{}?{query}", self.url(path)))
            .send()
            .await
            .expect("server answers");
        Self::received(response).await
    }

    /// A SaaS 1.0 GET callback, its authToken computed under the test key.
    pub async fn v1_get(&self, params: &V1Params) -> Received {
        self.get_raw("/koogallery/saas", &params.signed_query(KEY))
            .await
    }

    /// A SaaS 1.0 POST-body callback of exactly these bytes, its authToken header computed
    /// under the test key from the body's fields.
    pub async fn v1_post(&self, body: &str) -> Received {
        let token = V1Request::from_json_body(body.as_bytes(), None)
            .expect("test body is a JSON object")
            .sign(KEY)
            .expect("test body has a timeStamp");
        self.v1_post_raw(Some(&token), body.as_bytes().to_vec())
            .await
    }

    /// POSTs these bytes to the SaaS path with this `authToken` header (none: an empty one).
    pub async fn v1_post_raw(&self, token: Option<&str>, body: Vec<u8>) -> Received {
        let response = self
            .client
            .post(self.url("/koogallery/saas"))
            .header("authToken", token.unwrap_or_default())
            .header("Content-Type", "application/json;charset=utf8")
            .body(body)
            .send()
            .await
            .expect("server answers");
        Self::received(response).await
    }

    /// `GET` on the management API with the test token: status and JSON body.
    pub async fn api_get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("http://{}{path}", self.admin))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .expect("the internal listener answers");
        api_answer(response).await
    }

    /// The feed's first page once it holds `n` events. On PostgreSQL an event shows once
    /// every older transaction of the server has ended, so it may lag a commit briefly.
    pub async fn feed(&self, n: usize) -> Vec<Value> {
        eventually(&format!("{n} events in the feed"), || async {
            let (status, page) = self.api_get("/api/v1/events?limit=1000").await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            (items.len() >= n).then_some(items)
        })
        .await
    }

    /// `PUT` a JSON body on the management API with the test token.
    pub async fn api_put(
        &self,
        path: &str,
        body: &str,
        idempotency_key: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .put(format!("http://{}{path}", self.admin))
            .bearer_auth(API_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        api_answer(request.send().await.expect("the internal listener answers")).await
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

async fn api_answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.bytes().await.expect("the answer arrives");
    let json = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, json)
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

/// `yyyyMMddHHmmssSSS`, UTC, now: a fresh SaaS 1.0 `timeStamp`.
pub fn v1_now() -> String {
    koogate::protocol::time::format_millis(chrono::Utc::now())
}

/// The parameters of one SaaS 1.0 callback, in the order given.
#[derive(Debug, Clone)]
pub struct V1Params(Vec<(String, String)>);

impl V1Params {
    pub fn new(activity: &str) -> Self {
        Self(vec![("activity".into(), activity.into())])
    }

    /// Sets a parameter, replacing an earlier value.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.into(), value.into()));
        self
    }

    pub fn without(mut self, name: &str) -> Self {
        self.0.retain(|(n, _)| n != name);
        self
    }

    /// The form-encoded query, with `timeStamp` = now unless set, and no authToken.
    pub fn query(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in &self.0 {
            query.append_pair(name, value);
        }
        if !self.0.iter().any(|(n, _)| n == "timeStamp") {
            query.append_pair("timeStamp", &v1_now());
        }
        query.finish()
    }

    /// The query with the authToken KooGallery would append under `key`.
    pub fn signed_query(&self, key: &str) -> String {
        let query = self.query();
        let token = V1Request::from_query(&query)
            .sign(key)
            .expect("the query has a timeStamp");
        let token: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
        format!("{query}&authToken={token}")
    }

    /// The same parameters as a POST body of string fields, `timeStamp` = now unless set.
    pub fn json(&self) -> String {
        let mut body: serde_json::Map<String, Value> = self
            .0
            .iter()
            .map(|(n, v)| (n.clone(), Value::String(v.clone())))
            .collect();
        body.entry("timeStamp")
            .or_insert_with(|| Value::String(v1_now()));
        Value::Object(body).to_string()
    }
}

/// The sensitive-field encryption of spec §2.5, written again from the spec for the test
/// client, independently of the server's `protocol::crypto`: Java's SHA1PRNG as a state
/// machine over signed bytes, CBC chaining and PKCS#5 padding by hand around the bare
/// AES block cipher. Checked against the spec's vector 6 (Java's own output) in the tests.
pub mod java_aes {
    use aes::cipher::generic_array::GenericArray;
    use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use rand::Rng;
    use sha1::{Digest, Sha1};

    /// The first `len` bytes of `SecureRandom.getInstance("SHA1PRNG")` seeded with `seed`.
    pub fn sha1prng(seed: &[u8], len: usize) -> Vec<u8> {
        let mut state: Vec<i8> = Sha1::digest(seed).iter().map(|&b| b as i8).collect();
        let mut out = Vec::new();
        while out.len() < len {
            let bytes: Vec<u8> = state.iter().map(|&b| b as u8).collect();
            let output: Vec<i8> = Sha1::digest(&bytes).iter().map(|&b| b as i8).collect();
            // sun.security.provider.SecureRandom.updateState: state += output + 1, Java ints.
            let mut last: i32 = 1;
            let mut changed = false;
            for (s, o) in state.iter_mut().zip(&output) {
                let v = i32::from(*s) + i32::from(*o) + last;
                let t = v as i8;
                changed |= *s != t;
                *s = t;
                last = v >> 8;
            }
            if !changed {
                state[0] = state[0].wrapping_add(1);
            }
            out.extend(output.iter().map(|&b| b as u8));
        }
        out.truncate(len);
        out
    }

    fn key(access_key: &str, encrypt_type: &str) -> Vec<u8> {
        let bits = match encrypt_type {
            "1" => 256,
            "2" => 128,
            other => panic!("encryptType {other:?}"),
        };
        sha1prng(access_key.as_bytes(), bits / 8)
    }

    fn blocks(key: &[u8], block: &mut [u8; 16], encrypt: bool) {
        let block = GenericArray::from_mut_slice(block);
        match (key.len(), encrypt) {
            (16, true) => aes::Aes128::new(GenericArray::from_slice(key)).encrypt_block(block),
            (16, false) => aes::Aes128::new(GenericArray::from_slice(key)).decrypt_block(block),
            (32, true) => aes::Aes256::new(GenericArray::from_slice(key)).encrypt_block(block),
            (32, false) => aes::Aes256::new(GenericArray::from_slice(key)).decrypt_block(block),
            (n, _) => panic!("key of {n} bytes"),
        }
    }

    /// `iv + Base64(AES-CBC-PKCS5(plaintext))` under the key derived from `access_key`.
    pub fn encrypt_with_iv(
        access_key: &str,
        encrypt_type: &str,
        iv: &str,
        plaintext: &str,
    ) -> String {
        let key = key(access_key, encrypt_type);
        let mut data = plaintext.as_bytes().to_vec();
        let pad = 16 - data.len() % 16;
        data.extend(std::iter::repeat_n(pad as u8, pad));
        let mut previous: [u8; 16] = iv.as_bytes().try_into().expect("16-character IV");
        let mut out = Vec::new();
        for chunk in data.chunks(16) {
            let mut block = [0u8; 16];
            for i in 0..16 {
                block[i] = chunk[i] ^ previous[i];
            }
            blocks(&key, &mut block, true);
            out.extend_from_slice(&block);
            previous = block;
        }
        format!("{iv}{}", STANDARD.encode(out))
    }

    /// As [`encrypt_with_iv`], with a random IV of 16 letters and digits.
    pub fn encrypt(access_key: &str, encrypt_type: &str, plaintext: &str) -> String {
        let iv: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(16)
            .map(char::from)
            .collect();
        encrypt_with_iv(access_key, encrypt_type, &iv, plaintext)
    }

    /// Reverses [`encrypt_with_iv`]; panics on anything malformed (a test failure).
    pub fn decrypt(access_key: &str, encrypt_type: &str, field: &str) -> String {
        let key = key(access_key, encrypt_type);
        let (iv, encoded) = field.split_at(16);
        let data = STANDARD.decode(encoded).expect("Base64 after the IV");
        assert!(
            !data.is_empty() && data.len() % 16 == 0,
            "whole blocks: {field}"
        );
        let mut previous: [u8; 16] = iv.as_bytes().try_into().expect("16-byte IV");
        let mut out = Vec::new();
        for chunk in data.chunks(16) {
            let mut block: [u8; 16] = chunk.try_into().unwrap();
            blocks(&key, &mut block, false);
            for i in 0..16 {
                out.push(block[i] ^ previous[i]);
            }
            previous = chunk.try_into().unwrap();
        }
        let pad = usize::from(*out.last().unwrap());
        assert!((1..=16).contains(&pad), "PKCS#5 padding: {field}");
        assert!(
            out[out.len() - pad..]
                .iter()
                .all(|&b| usize::from(b) == pad),
            "PKCS#5 padding"
        );
        out.truncate(out.len() - pad);
        String::from_utf8(out).expect("UTF-8 plaintext")
    }
}

/// Waits until `probe` returns `Some`, polling every 20 ms for at most 20 s, and returns
/// what it found; panics naming `what` when the time is up.
pub async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
