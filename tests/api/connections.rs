//! The public listener under clients that do not behave: idle and slow connections, a
//! connection cap, half-closed sockets, and a stop while such clients are connected.

use crate::helpers::{Backend, Database, KEY, Options, TestApp, new_instance, order_id};
use koogate::protocol::signature::{self, Variant};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server with short connection timeouts, so that the tests take little time.
async fn spawn(max_connections: &str) -> TestApp {
    let options = Options::default()
        .env("KOOGATE_HTTP_HEADER_READ_TIMEOUT_MS", "400")
        .env("KOOGATE_HTTP_KEEP_ALIVE_TIMEOUT_MS", "400")
        .env("KOOGATE_HTTP_MAX_CONNECTIONS", max_connections);
    TestApp::spawn_with(Database::fresh(Backend::Sqlite).await, options).await
}

/// A signed `newInstance` as the raw bytes of one HTTP/1.1 request.
fn signed_request(order: &str) -> Vec<u8> {
    let body = new_instance(order, &format!("{order}-b"));
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(KEY, &nonce, &ts, body.as_bytes(), Variant::A);
    format!(
        "POST /koogallery/saas?signature={sig}&timestamp={ts}&nonce={nonce} HTTP/1.1\r\n\
         Host: koogate\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Everything the server sends until it closes the connection, within 5 s.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection in time")
        .expect("read");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_do_not_starve_callbacks() {
    // Arrange: every connection the server allows is taken by a client that sends nothing.
    let app = spawn("4").await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }

    // Act
    let started = Instant::now();
    let answer = app.saas(&new_instance(&order_id(), "starved")).await;

    // Assert: the idle clients were closed at the header timeout, and the callback served.
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered after {:?}",
        started.elapsed()
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_head_that_does_not_arrive_in_time_gets_a_signed_408() {
    let app = spawn("16").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();

    // Half a request head, then nothing.
    stream
        .write_all(b"POST /koogallery/saas HTTP/1.1\r\nHost: koogate\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let sign = head
        .lines()
        .find_map(|line| line.strip_prefix("Body-Sign: "))
        .expect("Body-Sign header");
    assert!(signature::verify_body_sign(KEY, body.as_bytes(), sign));
    let reply: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(reply["resultCode"], "000002");
    app.stop().await;
}

/// The status line and the JSON body of a raw answer, after checking its body against
/// the `Body-Sign` header with `key`.
fn signed_json(answer: &str, key: &str) -> (String, serde_json::Value) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("head and body");
    let sign = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(": ")?;
            name.eq_ignore_ascii_case("body-sign").then_some(value)
        })
        .unwrap_or_else(|| panic!("Body-Sign header in {head}"));
    assert!(
        signature::verify_body_sign(key, body.as_bytes(), sign),
        "signed with the family's key: {answer}"
    );
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, serde_json::from_str(body).expect("JSON body"))
}

/// Sends `request` on a new connection and reads the answer until the server closes.
async fn exchange(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_to_close(&mut stream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_target_too_long_gets_a_signed_414() {
    let app = spawn("16").await;
    // Over koogate's 63 KiB, under the 65,534 bytes past which hyper answers itself.
    let query = format!("activity=newInstance&pad={}", "x".repeat(63 * 1024 + 512));

    let answer = exchange(
        &app,
        format!(
            "GET /koogallery/saas?{query} HTTP/1.1\r\nHost: koogate\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;

    let (status, reply) = signed_json(&answer, KEY);
    assert!(status.starts_with("HTTP/1.1 414 "), "{answer}");
    assert_eq!(reply["resultCode"], "000002", "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn header_fields_too_large_get_a_431_signed_with_the_family_key() {
    let options = Options::default().env("KOOGATE_ACCESS_KEY_LICENSE_CODE", "license-code-key");
    let app = TestApp::spawn_with(Database::fresh(Backend::Sqlite).await, options).await;
    let padding: String = (0..70)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)))
        .collect();

    let answer = exchange(
        &app,
        format!(
            "POST /koogallery/license-code HTTP/1.1\r\nHost: koogate\r\n{padding}\
             Connection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .await;

    let (status, reply) = signed_json(&answer, "license-code-key");
    assert!(status.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(reply["resultCode"], "000002", "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_head_of_ordinary_size_is_not_refused_by_the_limits() {
    let app = spawn("16").await;
    let padding: String = (0..8)
        .map(|i| format!("X-Pad-{i}: {}\r\n", "p".repeat(1000)))
        .collect();

    let answer = exchange(
        &app,
        format!(
            "GET /healthz?{} HTTP/1.1\r\nHost: koogate\r\n{padding}Connection: close\r\n\r\n",
            "q".repeat(8 * 1024)
        )
        .as_bytes(),
    )
    .await;

    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_malformed_head_is_answered_by_the_http_library_without_a_body() {
    // The README says so: hyper answers a head it cannot parse before any koogate code
    // runs, and writes no body.
    let app = spawn("16").await;

    let answer = exchange(
        &app,
        b"POST /koogallery/saas HTTP/1.1\r\nBad Header\r\n\r\n",
    )
    .await;

    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").expect("a head");
    assert_eq!(body, "", "no body");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_kept_alive_connection_is_closed() {
    let app = spawn("16").await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: koogate\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    // After the answer the client sends nothing more: the server closes the connection.
    let rest = read_to_close(&mut stream).await;

    assert!(!rest.contains("HTTP/1.1"), "no second answer: {rest}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let app = spawn("16").await;
    let order = order_id();
    let mut stream = TcpStream::connect(app.addr).await.unwrap();

    stream.write_all(&signed_request(&order)).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_to_close(&mut stream).await;

    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.contains(r#""resultCode":"000000""#), "{answer}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_completes_at_once_with_idle_clients_connected() {
    // Long timeouts: only the stop may close these connections.
    let options = Options::default()
        .env("KOOGATE_HTTP_HEADER_READ_TIMEOUT_MS", "60000")
        .env("KOOGATE_HTTP_KEEP_ALIVE_TIMEOUT_MS", "60000");
    let app = TestApp::spawn_with(Database::fresh(Backend::Sqlite).await, options).await;
    let mut kept_alive = TcpStream::connect(app.addr).await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: koogate\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept_alive.read_exact(&mut first).await.unwrap();
    let _silent = TcpStream::connect(app.addr).await.unwrap();

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(3), app.stop())
        .await
        .expect("the stop does not wait for idle clients");

    assert!(started.elapsed() < Duration::from_secs(3));
    let rest = read_to_close(&mut kept_alive).await;
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
}

/// A flood of forged requests (bounded here to what a shared test machine bears) while
/// genuine callbacks flow: no genuine one waits behind the forged ones' records.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn genuine_callbacks_are_served_during_a_forged_flood() {
    let app = spawn("4096").await;
    let url = app.url("/koogallery/saas");
    let forged = (0..8).map(|worker| {
        let (client, url) = (app.client.clone(), url.clone());
        tokio::spawn(async move {
            for n in 0..150 {
                let _ = client
                    .post(format!(
                        "{url}?signature=00&timestamp=1&nonce=f{worker}-{n}"
                    ))
                    .body(new_instance("CSFORGED", "forged"))
                    .send()
                    .await;
            }
        })
    });
    let forged: Vec<_> = forged.collect();

    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let answer = app
            .saas(&new_instance(
                &order_id(),
                &uuid::Uuid::new_v4().to_string(),
            ))
            .await;
        slowest = slowest.max(started.elapsed());
        assert_eq!(answer.code(), "000000", "{}", answer.msg());
    }
    for flood in forged {
        flood.await.unwrap();
    }

    assert!(
        slowest < Duration::from_secs(1),
        "slowest genuine callback: {slowest:?}"
    );
    app.stop().await;
}
