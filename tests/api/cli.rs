//! The command line as a user meets it: results on standard output and nothing else
//! there, errors that name the setting or path that is wrong, `bench` failing loudly,
//! `simulate --config` refused, and one log line per answered callback.

use crate::helpers::{Backend, KEY, TestApp, new_instance, order_id};
use std::process::{Command, Output};

/// Runs `koogate ARGS` with these variables (and nothing of the caller's logging).
fn koogate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_koogate"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("KOOGATE_CONFIG")
        .env("KOOGATE_DATA_KEY", crate::helpers::TEST_DATA_KEY)
        .env("KOOGATE_LOG_FILTER", "info");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_bad_setting_is_named_by_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    for (name, value, expected) in [
        (
            "KOOGATE_LOG_FORMAT",
            "xml",
            "log.format (KOOGATE_LOG_FORMAT)",
        ),
        ("KOOGATE_LISTEN", "nonsense", "listen (KOOGATE_LISTEN)"),
    ] {
        let run = koogate(
            &["migrate"],
            &[(name, value), ("KOOGATE_DATABASE_URL", &db)],
        );
        assert_eq!(run.status.code(), Some(2), "{name}");
        assert!(stderr(&run).contains(expected), "{name}: {}", stderr(&run));
        assert!(run.stdout.is_empty());
    }
}

#[test]
fn a_database_path_that_cannot_be_used_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "").unwrap();
    let cases = [
        (
            format!("sqlite://{}/k.db", file.display()),
            format!(
                "cannot create the folder {} of the database file",
                file.display()
            ),
        ),
        (
            format!("sqlite://{}", dir.path().display()),
            format!("cannot open the database file {}", dir.path().display()),
        ),
    ];
    for (url, expected) in cases {
        let run = koogate(&["migrate"], &[("KOOGATE_DATABASE_URL", &url)]);
        assert!(!run.status.success(), "{url}");
        let said = stderr(&run);
        assert!(said.contains(&expected), "{url}: {said}");
        assert!(said.contains("KOOGATE_DATABASE_URL"), "{said}");
    }
}

#[test]
fn simulate_refuses_a_settings_file_it_would_not_read() {
    let run = koogate(
        &[
            "simulate",
            "--config",
            "koogate.toml",
            "--url",
            "http://127.0.0.1:9/x",
            "--key",
            "k",
        ],
        &[],
    );
    assert_eq!(run.status.code(), Some(2));
    assert!(
        stderr(&run).contains("simulate reads no settings file"),
        "{}",
        stderr(&run)
    );
}

#[test]
fn bench_with_no_server_fails_naming_the_refused_connection() {
    let nobody = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/koogallery/saas", nobody.local_addr().unwrap());
    drop(nobody);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let run = koogate(
        &[
            "bench",
            "--url",
            &url,
            "--key",
            KEY,
            "--requests",
            "4",
            "--concurrency",
            "2",
        ],
        &[("KOOGATE_DATABASE_URL", &db)],
    );
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains(&format!("no server answered at {url}: connection refused")),
        "{}",
        stderr(&run)
    );
}

#[tokio::test]
async fn bench_fails_when_an_answer_is_not_000000_and_passes_when_all_are() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = app.url("/koogallery/saas");
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let bench = |key: &'static str| {
        let (url, db) = (url.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            koogate(
                &[
                    "bench",
                    "--url",
                    &url,
                    "--key",
                    key,
                    "--requests",
                    "6",
                    "--concurrency",
                    "2",
                ],
                &[("KOOGATE_DATABASE_URL", &db)],
            )
        })
    };
    let wrong = bench("not-the-key").await.unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("6 of 6 answers were not the expected 000000: 000001 × 6"),
        "{}",
        stderr(&wrong)
    );
    let right = bench(KEY).await.unwrap();
    assert!(right.status.success(), "{}", stderr(&right));
    let report = String::from_utf8(right.stdout).unwrap();
    assert!(report.contains("answers      000000 × 6"), "{report}");
    app.stop().await;
}

#[test]
fn a_command_prints_its_result_alone_on_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/k.db", dir.path().display());
    let run = koogate(&["jobs", "failed"], &[("KOOGATE_DATABASE_URL", &db)]);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = String::from_utf8(run.stdout).unwrap();
    assert!(
        !out.contains("INFO") && !out.contains("WARN"),
        "no log line: {out}"
    );
    let run = koogate(&["migrate"], &[("KOOGATE_DATABASE_URL", &db)]);
    assert!(
        run.stdout.is_empty(),
        "migrate logs, and only on standard error"
    );
    assert!(stderr(&run).contains("migrations applied"));
}

/// A free loopback address (nothing listens on it once returned).
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

#[tokio::test]
async fn every_answered_callback_has_one_info_line() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let listen = free_addr();
    let mut server = Command::new(env!("CARGO_BIN_EXE_koogate"))
        .arg("serve")
        .env("KOOGATE_LISTEN", &listen)
        .env("KOOGATE_ADMIN_LISTEN", free_addr())
        .env(
            "KOOGATE_DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .env("KOOGATE_ACCESS_KEY", KEY)
        .env("KOOGATE_LOG_FILTER", "info")
        .env_remove("RUST_LOG")
        .env_remove("KOOGATE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = server.stderr.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("koogate is serving") {
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => panic!("the server stopped: {text}"),
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let order = order_id();
    let body = new_instance(&order, "log-1");
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = koogate::protocol::signature::sign(
        KEY,
        "nonce-log-1",
        &ts,
        body.as_bytes(),
        koogate::protocol::signature::Variant::A,
    );
    let client = reqwest::Client::new();
    let url = format!("http://{listen}/koogallery/saas");
    for query in [
        format!("signature={sig}&timestamp={ts}&nonce=nonce-log-1"),
        String::new(),
    ] {
        let answer = client
            .post(format!("{url}?{query}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    server.wait().unwrap();
    let _ = stderr.read_to_string(&mut text);

    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("callback answered"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    for field in [
        " INFO ",
        "family=\"saas_v2\"",
        "activity=\"newInstance\"",
        "result_code=\"000000\"",
        "duration_ms=",
        &format!("order_id=\"{order}\""),
        "instance_id=\"log-1\"",
    ] {
        assert!(lines[0].contains(field), "{field} in {}", lines[0]);
    }
    assert!(lines[1].contains("result_code=\"000001\""), "{}", lines[1]);
}
