//! Deadlines and outages: one time budget per callback, and a database that is not
//! there (koogate keeps starting, answers at once while it is known to be down, and
//! serves once it comes).

use crate::helpers::{Backend, Database, KEY, Options, TestApp, new_instance, order_id};
use koogate::protocol::signature::{self, Variant};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Forwards every connection on `listener` to `target`.
async fn forward(listener: TcpListener, target: String) {
    while let Ok((mut client, _)) = listener.accept().await {
        let target = target.clone();
        tokio::spawn(async move {
            if let Ok(mut server) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            }
        });
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_unreachable_at_start_is_waited_for() {
    // Arrange: a real database behind a port on which nothing listens yet.
    let real = crate::postgres::fresh_database().await;
    let real_addr = real
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("host:port in the test URL")
        .to_owned();
    let gate = free_port();
    let url = real.replacen(&real_addr, &format!("127.0.0.1:{gate}"), 1);
    let port = free_port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_koogate"))
        .arg("serve")
        .env("KOOGATE_LISTEN", format!("127.0.0.1:{port}"))
        // Any free port: the default one may be another server's.
        .env("KOOGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env("KOOGATE_DATABASE_URL", &url)
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "500")
        .env("KOOGATE_ACCESS_KEY", KEY)
        .env("KOOGATE_LOG_FILTER", "error")
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    crate::helpers::eventually("the server to answer /healthz", || async {
        client.get(format!("{base}/healthz")).send().await.ok()
    })
    .await;
    let callback = || {
        let body = new_instance(&order_id(), &format!("outage-{}", uuid::Uuid::new_v4()));
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let sig = signature::sign(KEY, &nonce, &ts, body.as_bytes(), Variant::A);
        client
            .post(format!(
                "{base}/koogallery/saas?signature={sig}&timestamp={ts}&nonce={nonce}"
            ))
            .body(body)
            .send()
    };
    let code = |answer: reqwest::Response| async move {
        let json: serde_json::Value = answer.json().await.expect("JSON answer");
        json["resultCode"].as_str().unwrap_or_default().to_owned()
    };

    // Act and assert: while the database is away, quick answers.
    let asked = Instant::now();
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let answer = callback().await.unwrap();
    assert_eq!(code(answer).await, "000005");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(server.try_wait().unwrap().is_none(), "still running");

    // The database comes: migrations are applied and callbacks served.
    let listener = TcpListener::bind(("127.0.0.1", gate)).await.unwrap();
    tokio::spawn(forward(listener, real_addr));
    crate::helpers::eventually("the server to be ready", || async {
        let ready = client.get(format!("{base}/readyz")).send().await.ok()?;
        (ready.status().as_u16() == 200).then_some(())
    })
    .await;
    let answer = callback().await.unwrap();
    assert_eq!(code(answer).await, "000000");

    let _ = server.kill();
    let _ = server.wait();
}

/// Reading the body and the transaction share one budget: a body that takes 600 ms and
/// a transaction that then waits for a row lock are answered `000005` when the 1 s
/// deadline passes, not after 600 ms + 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reading_the_body_and_processing_share_one_deadline() {
    use sqlx::{Connection, Executor};
    let db = Database::fresh(Backend::Postgres).await;
    let url = db.url.clone();
    let options = Options::default()
        .env("KOOGATE_HTTP_CALLBACK_DEADLINE_MS", "1000")
        .env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "500");
    let app = TestApp::spawn_with(db, options).await;
    let order = order_id();
    let created = app
        .saas(&new_instance(&order, &format!("locked-{order}")))
        .await;
    assert_eq!(created.code(), "000000");
    // Another session holds the instance's row.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute(
            format!("SELECT 1 FROM instances WHERE instance_id = 'locked-{order}' FOR UPDATE")
                .as_str(),
        )
        .await
        .unwrap();
    let body = format!(
        r#"{{"activity":"updateInstanceStatus","instanceId":"locked-{order}","status":"FREEZE","testFlag":"0"}}"#
    );
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(KEY, &nonce, &ts, body.as_bytes(), Variant::A);
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let started = Instant::now();

    stream
        .write_all(
            format!(
                "POST /koogallery/saas?signature={sig}&timestamp={ts}&nonce={nonce} HTTP/1.1\r\n\
                 Host: koogate\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let took = started.elapsed();
    holder.execute("ROLLBACK").await.unwrap();

    assert!(answer.contains(r#""resultCode":"000005""#), "{answer}");
    assert!(
        took < Duration::from_millis(1300),
        "answered after {took:?}"
    );
    let instance = app
        .store
        .instance(&format!("locked-{order}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(instance.state.as_str(), "active", "rolled back");
}

/// A deadline that passes while COMMIT is under way does not turn a committed callback
/// into `000005`, nor add a second, contradictory record: COMMIT's outcome is the answer.
/// A deferred trigger on the new instance makes this database's COMMIT take 1.5 s, past
/// the 1 s deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadline_during_commit_answers_what_was_committed() {
    use sqlx::{Connection, Executor};
    let db = Database::fresh(Backend::Postgres).await;
    let url = db.url.clone();
    let options = Options::default()
        .env("KOOGATE_HTTP_CALLBACK_DEADLINE_MS", "1000")
        .env("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "500");
    let app = TestApp::spawn_with(db, options).await;
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    admin
        .execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN PERFORM pg_sleep(1.5); RETURN NULL; END $$",
        )
        .await
        .unwrap();
    admin
        .execute(
            "CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON instances \
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()",
        )
        .await
        .unwrap();
    let order = order_id();
    let started = Instant::now();

    let first = app
        .saas(&new_instance(&order, &format!("slow-{order}")))
        .await;
    let took = started.elapsed();
    let retry = app
        .saas(&new_instance(&order, &format!("retry-{order}")))
        .await;

    assert!(took >= Duration::from_millis(1500), "COMMIT took {took:?}");
    assert_eq!(first.code(), "000000", "{}", first.msg());
    assert_eq!(first.json()["instanceId"], format!("slow-{order}"));
    assert_eq!(
        retry.body, first.body,
        "the retry replays the committed answer"
    );
    let records: Vec<_> = app
        .records(20)
        .await
        .into_iter()
        .filter(|r| r.order_id.as_deref() == Some(order.as_str()))
        .collect();
    let codes: Vec<_> = records
        .iter()
        .map(|r| r.result_code.clone().unwrap_or_default())
        .collect();
    assert_eq!(
        codes,
        ["000000", "000000"],
        "one record per callback, none contradicting the commit"
    );
    app.stop().await;
}
