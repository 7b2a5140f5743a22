//! What one callback costs PostgreSQL, counted on the wire: a proxy between koogate and
//! the database counts the round trips (each time koogate speaks again after the server
//! answered) and the statements (`Execute` and simple-query messages) of every callback.
//! The server runs without its background work, so nothing else talks to the database.
//!
//! sqlx checks each connection going back to its pool with an empty `Sync` after the
//! callback is done with it (not on its way to the answer); those are counted apart, as
//! pool checks.

use crate::helpers::{Backend, Database, KEY, TEST_DATA_KEY, new_instance, order_id};
use koogate::app::{self, AppState};
use koogate::config::Settings;
use koogate::protocol::signature::{self, Variant};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Round trips, statements and pool checks seen since the last [`Wire::take`].
#[derive(Default)]
struct Wire {
    round_trips: AtomicU64,
    statements: AtomicU64,
    pool_checks: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cost {
    round_trips: u64,
    statements: u64,
    pool_checks: u64,
}

impl Wire {
    fn take(&self) -> Cost {
        Cost {
            round_trips: self.round_trips.swap(0, Ordering::SeqCst),
            statements: self.statements.swap(0, Ordering::SeqCst),
            pool_checks: self.pool_checks.swap(0, Ordering::SeqCst),
        }
    }
}

/// Who spoke last on one connection.
const NOBODY: u8 = 0;
const CLIENT: u8 = 1;
const SERVER: u8 = 2;

/// Listens on a local port and forwards every connection to `upstream`, counting.
async fn proxy(upstream: String, wire: Arc<Wire>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let server = TcpStream::connect(&upstream).await.unwrap();
            let wire = wire.clone();
            tokio::spawn(async move {
                let last = Arc::new(AtomicU8::new(NOBODY));
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let upward = {
                    let last = last.clone();
                    async move {
                        let mut messages = Frontend::default();
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match client_read.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let fed = messages.feed(&buf[..n]);
                            if last.swap(CLIENT, Ordering::SeqCst) != CLIENT {
                                let counter = if fed.only_sync {
                                    &wire.pool_checks
                                } else {
                                    &wire.round_trips
                                };
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            wire.statements.fetch_add(fed.statements, Ordering::SeqCst);
                            if server_write.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                };
                let downward = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match server_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        last.store(SERVER, Ordering::SeqCst);
                        if client_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                };
                tokio::join!(upward, downward);
            });
        }
    });
    port
}

/// Splits the client's side of the PostgreSQL protocol into messages: the untyped
/// startup packets (an SSL request, the startup message) first, then typed ones.
#[derive(Default)]
struct Frontend {
    started: bool,
    pending: Vec<u8>,
}

/// What a chunk of the client's bytes held.
struct Fed {
    statements: u64,
    /// Nothing but `Sync` messages: the pool's check of a connection.
    only_sync: bool,
}

impl Frontend {
    /// Takes more bytes; says how many statements they completed.
    fn feed(&mut self, bytes: &[u8]) -> Fed {
        self.pending.extend_from_slice(bytes);
        let mut fed = Fed {
            statements: 0,
            only_sync: self.started,
        };
        loop {
            let header = if self.started { 5 } else { 4 };
            if self.pending.len() < header {
                return fed;
            }
            let at = header - 4;
            let len = u32::from_be_bytes(self.pending[at..at + 4].try_into().unwrap()) as usize;
            let total = at + len;
            if self.pending.len() < total {
                return fed;
            }
            if self.started {
                // `E`xecute runs a prepared statement; `Q` a simple query.
                if matches!(self.pending[0], b'E' | b'Q') {
                    fed.statements += 1;
                }
                fed.only_sync &= self.pending[0] == b'S';
            } else {
                let code = u32::from_be_bytes(self.pending[4..8].try_into().unwrap());
                // 80877103 asks for TLS; anything else is the startup message.
                self.started = code != 80_877_103;
            }
            self.pending.drain(..total);
        }
    }
}

/// koogate's public router over the counted connection, with one pooled connection so
/// that every statement it has prepared stays prepared.
async fn serve_counted(db: &Database, wire: Arc<Wire>) -> std::net::SocketAddr {
    let url = reqwest::Url::parse(&db.url).unwrap();
    let upstream = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let port = proxy(upstream, wire).await;
    let mut counted = url.clone();
    counted.set_host(Some("127.0.0.1")).unwrap();
    counted.set_port(Some(port)).unwrap();
    let env = [
        ("KOOGATE_DATABASE_URL", counted.to_string()),
        ("KOOGATE_DATABASE_MAX_CONNECTIONS", "1".into()),
        ("KOOGATE_DATA_KEY", TEST_DATA_KEY.into()),
        ("KOOGATE_ACCESS_KEY", KEY.into()),
        ("KOOGATE_LOG_FILTER", "warn".into()),
    ];
    let settings = Settings::load_with(None, |name| {
        env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
    })
    .unwrap();
    let store = app::open_store(&settings).await.unwrap();
    let provisioner = settings.configured_provisioner();
    // The public router alone: no job worker, purges or probe share the connection.
    let router = app::router(AppState::new(&settings, store, provisioner));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

async fn new_instance_code(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    body: &str,
) -> String {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(KEY, &nonce, &ts, body.as_bytes(), Variant::A);
    let answer: serde_json::Value = client
        .post(format!(
            "http://{addr}/koogallery/saas?signature={sig}&timestamp={ts}&nonce={nonce}"
        ))
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["resultCode"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_instance_costs_two_round_trips_and_a_duplicate_two() {
    let db = Database::fresh(Backend::Postgres).await;
    let wire = Arc::new(Wire::default());
    let addr = serve_counted(&db, wire.clone()).await;
    let client = reqwest::Client::new();
    // Prepares each statement once on the one connection (the first use of a statement
    // costs a round trip of its own, once per connection).
    for n in 0..3 {
        let body = new_instance(&order_id(), &format!("warm{n}"));
        assert_eq!(new_instance_code(&client, addr, &body).await, "000000");
        assert_eq!(new_instance_code(&client, addr, &body).await, "000000");
    }

    // The pool checks a connection after the answer: wait for it before counting on.
    let settle = || tokio::time::sleep(std::time::Duration::from_millis(200));
    settle().await;
    wire.take();
    let order = order_id();
    let body = new_instance(&order, "fresh");
    assert_eq!(new_instance_code(&client, addr, &body).await, "000000");
    settle().await;
    let fresh = wire.take();
    assert_eq!(new_instance_code(&client, addr, &body).await, "000000");
    settle().await;
    let duplicate = wire.take();
    println!("fresh newInstance: {fresh:?}; duplicate: {duplicate:?}");
    assert!(fresh.round_trips <= 2, "a fresh newInstance took {fresh:?}");
    assert!(duplicate.round_trips <= 3, "a duplicate took {duplicate:?}");
    assert!(
        fresh.pool_checks <= 1 && duplicate.pool_checks <= 1,
        "one connection per callback: {fresh:?} {duplicate:?}"
    );

    // Those round trips did all of it: the instance, its events and its fetch, the answer
    // kept, both callbacks recorded.
    let store = crate::helpers::open_store(&db).await;
    let instances = store.instances_for_order(&order).await.unwrap();
    assert_eq!(instances.len(), 1);
    let subject = format!("instance:{}", instances[0].id);
    assert!(!store.events_of(&subject).await.unwrap().is_empty());
    assert_eq!(
        store.jobs_about(&order).await.unwrap().len(),
        1,
        "the order fetch"
    );
    let records = store.recent_callbacks(2).await.unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.order_id.as_deref() == Some(order.as_str()))
    );
    assert_eq!(records.len(), 2);
}
