//! Secrets and personal data at rest: after a scripted flow, neither the generated
//! password nor the buyer's phone or e-mail is anywhere in the database in plain text;
//! a database written by the previous release is encrypted in place when opened; the
//! buyer data of released instances is cleared after its retention; a key rotation
//! keeps everything readable.

use crate::helpers::{
    Backend, Database, KEY, TEST_DATA_KEY, TestApp, V1Params, eventually, java_aes, new_instance,
    order_id, test_sealer,
};
use crate::mock_market::{self, MockServer};
use crate::on_both_backends;
use koogate::store::seal::{DataKey, Sealer};
use koogate::store::{Claim, IdempotencyKey, PoolOptions, Store};
use sqlx::Connection;
use std::sync::Arc;
use std::time::Duration;

on_both_backends!(
    no_secret_or_buyer_datum_is_stored_in_plain_text,
    the_buyer_data_of_released_instances_is_cleared_after_the_retention,
    a_database_of_the_previous_release_is_encrypted_in_place,
);

/// Every text and byte column of every table, searched for `needle`: for SQLite the
/// database file and its WAL as bytes, for PostgreSQL every column through SQL.
async fn found_in_database(db: &Database, needle: &str) -> Vec<String> {
    if let Some(path) = db.url.strip_prefix("sqlite://") {
        let folder = std::path::Path::new(path).parent().unwrap();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(folder).unwrap() {
            let file = entry.unwrap().path();
            // The WAL and its index go when the last connection closes, which a dropped
            // store does in the background.
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                found.push(file.display().to_string());
            }
        }
        return found;
    }
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let columns: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut found = Vec::new();
    for (table, column, kind) in columns {
        let test = if kind == "bytea" {
            format!(r#"position(convert_to($1, 'UTF8') in "{column}") > 0"#)
        } else {
            format!(r#"strpos("{column}"::text, $1) > 0"#)
        };
        let (n,): (i64,) =
            sqlx::query_as(&format!(r#"SELECT count(*) FROM "{table}" WHERE {test}"#))
                .bind(needle)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        if n > 0 {
            found.push(format!("{table}.{column}"));
        }
    }
    found
}

/// A server that hands out generated passwords and fetches order details (with the
/// buyer's phone and e-mail) from the mock marketplace.
async fn spawn(db: Database, mock: &MockServer) -> TestApp {
    TestApp::spawn_with(
        db,
        mock_market::options(mock)
            .env("KOOGATE_APP_USER_NAME", "admin")
            .env("KOOGATE_APP_GENERATE_PASSWORD", "true"),
    )
    .await
}

const V1_PHONE: &str = "13912345678";
const V1_EMAIL: &str = "v1buyer@example.net";
/// What the mock marketplace's order says of the buyer (`mock_market::order`).
const ORDER_PHONE: &str = "18600000000";
const ORDER_EMAIL: &str = "buyer@example.org";

/// Buys an instance through SaaS 2.0 (its order details fetched) and one through SaaS
/// 1.0 (with an encrypted phone and e-mail); returns the generated password and the
/// two instance ids.
async fn scripted_flow(app: &TestApp, mock: &MockServer) -> (String, String, String) {
    let order = order_id();
    mock.register(mock_market::order(&order, "sku-secret", "20270101000000"))
        .await;
    let created = app.saas(&new_instance(&order, "sec-v2")).await;
    assert_eq!(created.code(), "000000");
    eventually("the order details to be stored", || async {
        let i = app.store.instance("sec-v2").await.unwrap()?;
        i.details.contains_key("buyer").then_some(())
    })
    .await;
    let queried = app
        .saas(r#"{"activity":"queryInstance","instanceId":"sec-v2"}"#)
        .await;
    let password = queried.json()["info"][0]["appInfo"]["password"]
        .as_str()
        .expect("queryInstance answers the password")
        .to_owned();
    let again = app.saas(&new_instance(&order, "sec-v2")).await;
    assert_eq!(again.body, created.body, "the replay is byte-identical");
    app.records(1).await;
    let evidence = koogate::app::evidence::gather(app.store.as_ref(), &order)
        .await
        .unwrap()
        .unwrap();
    let sent = koogate::protocol::crypto::sha256_hex(&created.body);
    let shown = evidence
        .callbacks
        .iter()
        .find(|c| c.answer_sha256 == sent)
        .expect("the evidence has the hash of the exact answer sent");
    assert!(
        !String::from_utf8_lossy(&shown.record.response_body).contains(&password),
        "and its copy without the password"
    );

    let v1 = V1Params::new("newInstance")
        .with("businessId", "sec-v1")
        .with("orderId", &order_id())
        .with("productId", "00301-666666-0--0")
        .with("customerId", "68cbc86abc2018ab880d92f36422fa0e")
        .with("mobilePhone", &java_aes::encrypt(KEY, "1", V1_PHONE))
        .with("email", &java_aes::encrypt(KEY, "1", V1_EMAIL))
        .with("testFlag", "0");
    let answer = app.v1_get(&v1).await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    let v1_id = answer.json()["instanceId"].as_str().unwrap().to_owned();
    (password, "sec-v2".into(), v1_id)
}

async fn no_secret_or_buyer_datum_is_stored_in_plain_text(backend: Backend) {
    let mock = MockServer::start().await;
    let app = spawn(Database::fresh(backend).await, &mock).await;
    let (password, v2, v1) = scripted_flow(&app, &mock).await;
    // An order notification: its order.received event carries 查询订单's buyerInfo.
    let notified = order_id();
    mock.register(mock_market::order(
        &notified,
        "sku-notify",
        "20270101000000",
    ))
    .await;
    let body = format!(
        r#"{{"activity":"orderNotify","orderId":"{notified}","orderLineId":"{notified}-000001"}}"#
    );
    let answer = app
        .post_signed("/koogallery/order-notify", KEY, &body)
        .await;
    assert_eq!(answer.code(), "000000", "{}", answer.msg());
    let subject = format!("order:{notified}/{notified}-000001");
    let received = eventually("the order.received event", || async {
        let events = app.store.events_of(&subject).await.unwrap();
        events.into_iter().find(|e| e.kind == "order.received")
    })
    .await;
    assert!(
        received.snapshot.contains(ORDER_PHONE),
        "the event reads back whole: {}",
        received.snapshot
    );

    // What koogate reads back is what it was given.
    let v2 = app.store.instance(&v2).await.unwrap().unwrap();
    assert_eq!(
        v2.app_info.unwrap().password.as_deref(),
        Some(password.as_str())
    );
    assert_eq!(v2.details["buyer"]["mobilePhone"], ORDER_PHONE);
    let v1 = app.store.instance(&v1).await.unwrap().unwrap();
    assert_eq!(v1.details["email"], V1_EMAIL);
    assert!(
        !format!("{v1:?}").contains(V1_EMAIL),
        "Debug hides the buyer's e-mail"
    );
    let records = app.records(10).await;
    assert!(
        records
            .iter()
            .any(|r| String::from_utf8_lossy(&r.response_body).contains("[redacted]")),
        "the audit copies carry the password redacted"
    );

    let db = app.stop().await;
    for needle in [
        password.as_str(),
        V1_PHONE,
        V1_EMAIL,
        ORDER_PHONE,
        ORDER_EMAIL,
        "测试买家",
    ] {
        let found = found_in_database(&db, needle).await;
        assert!(found.is_empty(), "{needle:?} in plain text in {found:?}");
    }
}

async fn the_buyer_data_of_released_instances_is_cleared_after_the_retention(backend: Backend) {
    let mock = MockServer::start().await;
    let app = spawn(Database::fresh(backend).await, &mock).await;
    let (_, v2, v1) = scripted_flow(&app, &mock).await;
    let released = app
        .saas(r#"{"activity":"releaseInstance","instanceId":"sec-v2"}"#)
        .await;
    assert_eq!(released.code(), "000000");
    let released_ms = app
        .store
        .instance(&v2)
        .await
        .unwrap()
        .unwrap()
        .released_ms
        .unwrap();

    assert_eq!(
        app.store.purge_buyer_data(released_ms, 100).await.unwrap(),
        0,
        "kept until the retention has passed"
    );
    assert_eq!(
        app.store
            .purge_buyer_data(released_ms + 1, 100)
            .await
            .unwrap(),
        1
    );

    let cleared = app.store.instance(&v2).await.unwrap().unwrap();
    assert!(!cleared.details.contains_key("buyer"), "{cleared:?}");
    assert!(cleared.app_info.is_some(), "the rest of the instance stays");
    let line = &app.store.order_lines(&cleared.order_id).await.unwrap()[0];
    let info: serde_json::Value = serde_json::from_str(line.order_info.as_ref().unwrap()).unwrap();
    assert!(info.get("buyerInfo").is_none(), "{info}");
    assert!(
        info.get("orderLine").is_some(),
        "the rest of the order stays"
    );
    let active = app.store.instance(&v1).await.unwrap().unwrap();
    assert_eq!(
        active.details["email"], V1_EMAIL,
        "an active instance keeps it"
    );
    let db = app.stop().await;
    assert!(found_in_database(&db, ORDER_PHONE).await.is_empty());
}

const OLD_PASSWORD: &str = "OldPlainPass123";
const OLD_EMAIL: &str = "old@example.com";
const OLD_BUYER_PHONE: &str = "13700000000";
const OLD_ANSWER: &[u8] = br#"{"resultCode":"000000","resultMsg":"success.","instanceId":"old-1","appInfo":{"frontEndUrl":"https://app.example.net/old-1","userName":"admin","password":"OldPlainPass123"}}"#;

/// A value bound to a statement written once for both backends.
enum Value {
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

macro_rules! bind_all {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Text(text) => query.bind(text),
                Value::Bytes(bytes) => query.bind(bytes),
                Value::Bool(flag) => query.bind(flag),
            };
        }
        query
    }};
}

/// The schema and rows of the previous release: every migration before this change,
/// then plain-text app info, details, answers, order info and audit copies.
async fn previous_release(db: &Database) {
    let folder = match backend_of(db) {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let mut migrator = sqlx::migrate::Migrator::new(std::path::Path::new(&format!(
        "{}/migrations/{folder}",
        env!("CARGO_MANIFEST_DIR")
    )))
    .await
    .unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 20261202010000)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let statements: [(&str, Vec<Value>); 4] = [
        (
            "INSERT INTO instances (instance_id, family, order_id, order_line_id, details, test, state, \
             app_info, created_ms, updated_ms) VALUES ($1, 'saas_v2', 'O-OLD', 'O-OLD-1', $2, $3, 'active', $4, 1, 1)",
            vec![
                Value::Text("old-1".into()),
                Value::Text(format!(r#"{{"email":"{OLD_EMAIL}","trialFlag":"1"}}"#)),
                Value::Bool(false),
                Value::Text(format!(
                    r#"{{"frontEndUrl":"https://app.example.net/old-1","userName":"admin","password":"{OLD_PASSWORD}"}}"#
                )),
            ],
        ),
        (
            "INSERT INTO idempotency (scope, key, result_code, instance_id, body, created_ms) \
             VALUES ('saas_v2.newInstance', 'O-OLD/O-OLD-1', '000000', 'old-1', $1, 1)",
            vec![Value::Bytes(OLD_ANSWER.to_vec())],
        ),
        (
            "INSERT INTO order_lines (order_id, order_line_id, test, source, created_ms, order_info, fetched_ms) \
             VALUES ('O-OLD', 'O-OLD-1', $1, 'newInstance', 1, $2, 2)",
            vec![
                Value::Bool(false),
                Value::Text(format!(
                    r#"{{"buyerInfo":{{"mobilePhone":"{OLD_BUYER_PHONE}"}},"orderId":"O-OLD"}}"#
                )),
            ],
        ),
        (
            "INSERT INTO callbacks (request_id, received_ms, interface, activity, method, raw_query, raw_body, \
             verdict, result_code, http_status, response_body, duration_us, test, order_id, instance_id) \
             VALUES ('r-old', 1, 'saas_v2', 'newInstance', 'POST', '', $1, 'ok:A', '000000', 200, $2, 1, $3, 'O-OLD', 'old-1')",
            vec![
                Value::Bytes(b"{}".to_vec()),
                Value::Bytes(OLD_ANSWER.to_vec()),
                Value::Bool(false),
            ],
        ),
    ];
    match backend_of(db) {
        Backend::Sqlite => {
            let path = db.url.strip_prefix("sqlite://").unwrap();
            std::fs::create_dir_all(std::path::Path::new(path).parent().unwrap()).unwrap();
            let options =
                <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
                    .unwrap()
                    .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            migrator.run(&mut conn).await.unwrap();
            for (sql, values) in statements {
                bind_all!(sqlx::query(sql), values)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            migrator.run(&mut conn).await.unwrap();
            for (sql, values) in statements {
                bind_all!(sqlx::query(sql), values)
                    .execute(&mut conn)
                    .await
                    .unwrap();
            }
        }
    }
}

fn backend_of(db: &Database) -> Backend {
    if db.url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    }
}

async fn open(db: &Database, sealer: Sealer) -> Arc<dyn Store> {
    let options = PoolOptions {
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let store = koogate::store::connect(&db.url, &options, sealer)
        .await
        .unwrap();
    store
        .migrate()
        .await
        .expect("migrations and the pass apply");
    store
}

/// What the previous release stored still reads the same through the store.
async fn reads_as_before(store: &dyn Store) {
    let instance = store.instance("old-1").await.unwrap().unwrap();
    assert_eq!(
        instance.app_info.unwrap().password.as_deref(),
        Some(OLD_PASSWORD)
    );
    assert_eq!(instance.details["email"], OLD_EMAIL);
    assert_eq!(instance.details["trialFlag"], "1");
    let mut tx = store.begin().await.unwrap();
    let key = IdempotencyKey {
        scope: "saas_v2.newInstance",
        key: "O-OLD/O-OLD-1".into(),
    };
    match tx.claim_idempotency(&key, 5).await.unwrap() {
        Claim::Answered(answer) => assert_eq!(answer.body, OLD_ANSWER, "replayed byte for byte"),
        Claim::Claimed => panic!("the stored answer is lost"),
    }
    drop(tx);
    let line = &store.order_lines("O-OLD").await.unwrap()[0];
    assert_eq!(
        line.order_info.as_deref(),
        Some(r#"{"buyerInfo":{"mobilePhone":"13700000000"},"orderId":"O-OLD"}"#)
    );
}

async fn a_database_of_the_previous_release_is_encrypted_in_place(backend: Backend) {
    let db = Database::fresh(backend).await;
    previous_release(&db).await;

    let store = open(&db, test_sealer()).await;
    reads_as_before(store.as_ref()).await;
    let record = store.recent_callbacks(1).await.unwrap().remove(0);
    assert_eq!(
        record.response_sha256,
        koogate::protocol::crypto::sha256_hex(OLD_ANSWER),
        "the hash of the exact bytes that were sent"
    );
    assert!(String::from_utf8_lossy(&record.response_body).contains(r#""password":"[redacted]""#));
    let again = store.seal_at_rest(10).await.unwrap();
    assert!(!again.ran, "the pass runs once per key: {again:?}");
    drop(store);
    for needle in [OLD_PASSWORD, OLD_EMAIL, OLD_BUYER_PHONE] {
        let found = found_in_database(&db, needle).await;
        assert!(found.is_empty(), "{needle:?} in plain text in {found:?}");
    }

    // A rotation: the new key with the old one listed re-encrypts everything, after
    // which the old key is no longer needed.
    let old = DataKey::parse(TEST_DATA_KEY).unwrap();
    let new_text = DataKey::generate();
    let new = || DataKey::parse(&new_text).unwrap();
    let rotated = open(&db, Sealer::new(new(), vec![old])).await;
    reads_as_before(rotated.as_ref()).await;
    drop(rotated);
    let only_new = open(&db, Sealer::new(new(), Vec::new())).await;
    reads_as_before(only_new.as_ref()).await;
    drop(only_new);

    // Without the key, nothing is readable, and the error says what is missing.
    let options = PoolOptions {
        max_connections: 1,
        acquire_timeout: Duration::from_secs(5),
    };
    let stranger = koogate::store::connect(
        &db.url,
        &options,
        Sealer::new(DataKey::parse(&DataKey::generate()).unwrap(), Vec::new()),
    )
    .await
    .unwrap();
    let error = stranger.instance("old-1").await.unwrap_err().to_string();
    assert!(error.contains("KOOGATE_DATA_KEY"), "{error}");
}

/// On SQLite without a configured key, the first start creates one beside the database
/// (readable by its owner only) and later starts use it; PostgreSQL refuses to start
/// without one, naming the setting.
#[tokio::test]
async fn a_key_file_is_created_beside_sqlite_and_postgres_needs_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db/koogate.db", dir.path().display());
    let migrate = |url: &str, key: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_koogate"));
        command
            .arg("migrate")
            .env_remove("RUST_LOG")
            .env_remove("KOOGATE_CONFIG")
            .env_remove("KOOGATE_DATA_KEY")
            .env("KOOGATE_DATABASE_URL", url);
        if let Some(key) = key {
            command.env("KOOGATE_DATA_KEY", key);
        }
        command.output().unwrap()
    };
    let first = migrate(&url, None);
    assert!(first.status.success(), "{first:?}");
    let key_file = dir
        .path()
        .join("db")
        .join(koogate::config::DATA_KEY_FILE_NAME);
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert!(DataKey::parse(&text).is_ok());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(
        !String::from_utf8_lossy(&first.stderr).contains(text.trim()),
        "the key is never logged"
    );
    let second = migrate(&url, None);
    assert!(second.status.success(), "{second:?}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), text, "kept");

    let postgres = migrate("postgres://koogate:pw@127.0.0.1:1/k", None);
    assert!(!postgres.status.success());
    let said = String::from_utf8_lossy(&postgres.stderr);
    assert!(said.contains("KOOGATE_DATA_KEY"), "{said}");
    assert!(
        !said.contains(":pw@"),
        "the password is never shown: {said}"
    );
}

/// `Debug` of every type that holds a password, a key or a buyer's personal datum shows
/// none of them: logs and panic messages print these types.
#[test]
fn debug_shows_no_secret_or_personal_datum() {
    use koogate::domain::answer::Answer;
    use koogate::domain::instance::{Family, Instance};
    use koogate::protocol::order::BuyerInfo;
    use koogate::protocol::personal::Personal;
    use koogate::protocol::reply::{AppInfo, Credentials, Reply};
    use koogate::store::{CallbackRecord, OrderLineRecord, StoredAnswer};

    const PASSWORD: &str = "Pw-0123456789abc";
    const PHONE: &str = "13800001111";
    const EMAIL: &str = "someone@example.com";
    let key = DataKey::generate();
    let info = AppInfo {
        front_end_url: "https://app.example.net/i".into(),
        admin_url: None,
        user_name: Some("admin".into()),
        password: Some(PASSWORD.into()),
        memo: None,
    };
    let mut instance = Instance::new("i".into(), Family::SaasV1, "o".into(), false, 0);
    instance.app_info = Some(info.clone());
    instance.details.insert("mobilePhone".into(), PHONE.into());
    instance
        .details
        .insert("buyer".into(), serde_json::json!({ "email": EMAIL }));
    let answer = Answer::reply(&Reply::success().with_app_info(&info, &Credentials::Plain));
    let stored = StoredAnswer {
        result_code: "000000".into(),
        instance_id: Some("i".into()),
        body: answer.body.clone(),
    };
    let line = OrderLineRecord {
        order_id: "o".into(),
        order_line_id: "l".into(),
        test: false,
        source: "newInstance".into(),
        created_ms: 0,
        order_info: Some(format!(r#"{{"buyerInfo":{{"email":"{EMAIL}"}}}}"#)),
        fetched_ms: None,
    };
    let buyer = BuyerInfo {
        mobile_phone: Some(Personal::new(PHONE)),
        email: Some(Personal::new(EMAIL)),
        customer_id: Some("c".into()),
        customer_name: Some("n".into()),
        customer_real_name: None,
        customer_type: None,
        user_id: None,
        user_name: None,
    };
    let mut record = CallbackRecord {
        request_id: "r".into(),
        received_ms: 0,
        interface: "saas_v2".into(),
        activity: None,
        method: "POST".into(),
        raw_query: String::new(),
        raw_body: Vec::new(),
        verdict: "ok:A".into(),
        result_code: None,
        http_status: 200,
        response_body: Vec::new(),
        response_sha256: String::new(),
        duration_us: 0,
        test: false,
        order_id: None,
        instance_id: None,
    };
    record.answered_with(&answer.body);
    let settings = koogate::config::Settings::load_with(None, |name| match name {
        "KOOGATE_DATA_KEY" => Some(key.clone()),
        "KOOGATE_DATABASE_URL" => Some("postgres://koogate:Db-s3cret@db/k".into()),
        _ => None,
    })
    .unwrap();
    let (sealer, _) = settings.sealer().unwrap();

    let printed = [
        format!("{instance:?}"),
        format!("{info:?}"),
        format!("{answer:?}"),
        format!("{stored:?}"),
        format!("{:?}", Claim::Answered(stored.clone())),
        format!("{line:?}"),
        format!("{buyer:?}"),
        format!("{record:?}"),
        format!("{settings:?}"),
        format!("{sealer:?}"),
    ];
    for text in &printed {
        for secret in [PASSWORD, PHONE, EMAIL, key.as_str(), "Db-s3cret"] {
            assert!(!text.contains(secret), "{secret:?} printed in {text}");
        }
    }
    assert!(printed[0].contains("[redacted]"), "{}", printed[0]);
}
