//! kill -9 under signed load, on both backends: after a restart, re-sending every request
//! gets every `000000` answered before the crash back byte for byte, and no order line
//! has two instances.

use crate::helpers::{Backend, Database, KEY, new_instance, order_id};
use crate::on_both_backends;
use koogate::protocol::signature::{self, Variant};
use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

on_both_backends!(nothing_answered_is_lost_or_changed_by_a_crash);

/// `koogate serve` on a free port over `db`.
async fn start(db: &Database) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_koogate"))
        .arg("serve")
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env("KOOGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("KOOGATE_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("KOOGATE_DATABASE_URL", &db.url)
        .env("KOOGATE_ACCESS_KEY", KEY)
        .env(
            "KOOGATE_FRONTEND_URL",
            "https://app.example.net/{instanceId}",
        )
        // Its jobs park for want of marketplace credentials; that is not this test's matter.
        .env("KOOGATE_LOG_FILTER", "off")
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    crate::helpers::eventually("the server to be ready", || async {
        let ready = client.get(format!("{base}/readyz")).send().await.ok()?;
        (ready.status().as_u16() == 200).then_some(())
    })
    .await;
    (child, base)
}

/// Sends `body` signed with a fresh nonce, as KooGallery (re)sends it; `None` when no
/// answer came.
async fn send(client: &reqwest::Client, base: &str, body: &str) -> Option<(String, Vec<u8>)> {
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(KEY, &nonce, &ts, body.as_bytes(), Variant::A);
    let answer = client
        .post(format!(
            "{base}/koogallery/saas?signature={sig}&timestamp={ts}&nonce={nonce}"
        ))
        .body(body.to_owned())
        .send()
        .await
        .ok()?;
    let bytes = answer.bytes().await.ok()?.to_vec();
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Some((json["resultCode"].as_str()?.to_owned(), bytes))
}

async fn nothing_answered_is_lost_or_changed_by_a_crash(backend: Backend) {
    let db = Database::fresh(backend).await;
    let (mut server, base) = start(&db).await;
    let client = reqwest::Client::new();
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let answered: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();

    // Eight senders, each re-sending some of its orders, until the server is killed.
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (client, base, sent, answered) =
                (client.clone(), base.clone(), sent.clone(), answered.clone());
            tokio::spawn(async move {
                loop {
                    let order = order_id();
                    let body = new_instance(&order, &format!("crash-{order}"));
                    sent.lock().unwrap().push(body.clone());
                    for _ in 0..2 {
                        match send(&client, &base, &body).await {
                            Some((code, bytes)) if code == "000000" => {
                                answered.lock().unwrap().insert(body.clone(), bytes);
                            }
                            Some(_) => {}
                            None => return,
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().unwrap(); // SIGKILL: no graceful anything.
    server.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
    let sent = sent.lock().unwrap().clone();
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= 10,
        "only {} answered before the crash",
        answered.len()
    );

    // Restart on the same data and re-send everything.
    let (mut server, base) = start(&db).await;
    for body in &sent {
        let (code, bytes) = send(&client, &base, body)
            .await
            .expect("answered after restart");
        assert_eq!(code, "000000", "{}", String::from_utf8_lossy(&bytes));
        if let Some(before) = answered.get(body) {
            assert_eq!(
                &bytes, before,
                "the answer given before the crash is kept: {body}"
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();

    let options = koogate::store::PoolOptions {
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = koogate::store::connect(&db.url, &options, crate::helpers::test_sealer())
        .await
        .unwrap();
    for body in &sent {
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let order = json["orderId"].as_str().unwrap();
        assert_eq!(
            store.instances_for_order(order).await.unwrap().len(),
            1,
            "{order}"
        );
    }
}
