//! `koogate evidence`: the file for an order holds every callback of that order (those
//! that name only its instance too) with hashes of the exact stored bytes, nothing of
//! another order, and escapes everything that came from outside.

use crate::helpers::{Backend, Database, TestApp, eventually, new_instance, order_id};
use crate::online_license::{application, event_id, new_product, setup};
use koogate::protocol::crypto::sha256_hex;
use std::process::Command;

/// The text a browser shows for `html`'s character references (enough for what askama
/// writes: numeric references and the few named ones).
fn unescape(html: &str) -> String {
    let mut out = String::new();
    let mut rest = html;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn the_file_of_an_order_holds_its_callbacks_and_nothing_of_another() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (ours, theirs) = (order_id(), order_id());
    let instance = format!("ev-{}", &ours[2..10]);
    // An extra field with markup, which KooGallery never sends but a forger might.
    let created = new_instance(&ours, &instance).replace(
        r#""testFlag":"0""#,
        r#""testFlag":"0","memo":"<script>alert('x')</script> & \u00e9""#,
    );
    assert_eq!(app.saas(&created).await.code(), "000000");
    assert_eq!(
        app.saas(&created).await.code(),
        "000000",
        "a repeat, replayed"
    );
    let freeze = format!(
        r#"{{"activity":"updateInstanceStatus","instanceId":"{instance}","status":"FREEZE"}}"#
    );
    assert_eq!(app.saas(&freeze).await.code(), "000000");
    assert_eq!(
        app.saas(&new_instance(&theirs, "ev-other")).await.code(),
        "000000"
    );

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("evidence.html");
    let run = Command::new(env!("CARGO_BIN_EXE_koogate"))
        .args(["evidence", &ours, "--out"])
        .arg(&file)
        .env("KOOGATE_DATABASE_URL", &app.db.url)
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env("KOOGATE_LOG_FILTER", "info")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        format!("{}\n", file.display()),
        "standard output says only where the file is"
    );
    let html = std::fs::read_to_string(&file).unwrap();
    let text = unescape(&html);

    let records = app.records(100).await;
    let (mine, others): (Vec<_>, Vec<_>) = records.iter().partition(|r| {
        r.order_id.as_deref() == Some(ours.as_str())
            || r.instance_id.as_deref() == Some(instance.as_str())
    });
    assert_eq!(
        mine.len(),
        3,
        "two newInstance and the freeze, which names only the instance"
    );
    for record in &mine {
        let body = String::from_utf8(record.raw_body.clone()).unwrap();
        assert!(text.contains(&body), "the body as received: {body}");
        assert!(html.contains(&sha256_hex(&record.raw_body)), "its hash");
        assert!(html.contains(&record.response_sha256), "its answer's hash");
        assert!(text.contains(&record.raw_query), "the query as received");
    }
    assert_eq!(html.matches(r#"class="callback""#).count(), 3);
    for record in &others {
        assert!(
            !html.contains(&sha256_hex(&record.raw_body)),
            "another order's callback"
        );
    }
    assert!(!html.contains(&theirs), "another order's id");
    assert!(!html.contains("ev-other"), "another order's instance");
    assert!(text.contains("instance.created"), "the state changes");
    assert!(text.contains("instance.frozen"));

    // Nothing from outside is markup, and nothing is fetched from elsewhere.
    assert!(!html.contains("<script"), "the memo is escaped");
    assert!(text.contains("<script>alert('x')</script> & \\u00e9"));
    for external in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(external), "self-contained: {external}");
    }
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_order_is_an_error_on_standard_error() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let run = Command::new(env!("CARGO_BIN_EXE_koogate"))
        .args(["evidence", "NO-SUCH-ORDER"])
        .env("KOOGATE_DATABASE_URL", &app.db.url)
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(run.stdout.is_empty());
    assert!(String::from_utf8_lossy(&run.stderr).contains("no order NO-SUCH-ORDER is known here"));
    app.stop().await;
}

/// Runs `koogate evidence ORDER_ID` against the app's database; the page it printed.
fn evidence_of(db: &Database, order_id: &str) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_koogate"))
        .args(["evidence", order_id])
        .env("KOOGATE_DATABASE_URL", &db.url)
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8(run.stdout).unwrap()
}

#[tokio::test]
async fn the_file_holds_the_online_license_applications_and_their_uploads() {
    let s = setup(Backend::Sqlite, &[]).await;
    let ours = event_id();
    s.mock.expect_license_event(&ours).await;
    let applied = s
        .app
        .saas(&application(&s.instance, &ours, Some("00:11:22:33:44:55|DISK-1")).to_string())
        .await;
    assert_eq!(applied.code(), "000000", "{}", applied.msg());
    // Another order's application, which must not appear.
    let (other_order, other_instance) = new_product(&s.app, &s.mock, "20991231235959").await;
    let theirs = event_id();
    s.mock.expect_license_event(&theirs).await;
    let other = application(&other_instance, &theirs, Some("AA|B")).to_string();
    assert_eq!(s.app.saas(&other).await.code(), "000000");
    let request = eventually("the License to be delivered", || async {
        let r = s.app.store.license_request(&ours).await.unwrap()?;
        r.delivered_ms.is_some().then_some(r)
    })
    .await;
    let uploads = s.app.store.license_uploads(&ours).await.unwrap();
    assert_eq!(uploads.len(), 1);

    let text = unescape(&evidence_of(&s.app.db, &s.order));

    assert!(
        text.contains(&format!("{ours} for instance {}", s.instance)),
        "{text}"
    );
    assert!(text.contains("00:11:22:33:44:55|DISK-1"), "the fingerprint");
    assert!(text.contains("delivered"), "its state");
    let license = request.license.expect("signed mode makes the License");
    assert!(
        text.contains(&sha256_hex(license.content.bytes())),
        "the hash of the License as uploaded"
    );
    assert!(text.contains("CBC.0000"), "the upload's answer");
    assert!(text.contains("200"), "its HTTP status");
    assert!(!text.contains(&theirs), "another order's application");
    assert!(!text.contains(&other_order));
    s.app.stop().await;
}
