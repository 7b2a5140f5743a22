//! What the `koogate` process writes, and where: logs on standard error, plain text
//! without colour codes when it is not a terminal, standard output left to commands.

use crate::helpers::KEY;
use std::process::{Command, Stdio};

/// Runs `serve` with both streams captured apart, until it has said it is serving, then
/// stops it with SIGTERM.
fn serve_and_stop(extra: &[(&str, &str)]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_koogate"));
    command
        .arg("serve")
        .env("KOOGATE_LISTEN", "127.0.0.1:0")
        .env("KOOGATE_ADMIN_LISTEN", "127.0.0.1:0")
        .env(
            "KOOGATE_DATABASE_URL",
            format!("sqlite://{}/k.db", dir.path().display()),
        )
        .env("KOOGATE_ACCESS_KEY", KEY)
        .env("KOOGATE_LOG_FILTER", "info")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut server = command.spawn().unwrap();
    let mut stderr = server.stderr.take().unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // Read until the server says it serves (or stops), then stop it as an orchestrator does.
    while !text.contains("koogate is serving") {
        use std::io::Read;
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let output = server.wait_with_output().unwrap();
    {
        use std::io::Read;
        let _ = stderr.read_to_string(&mut text);
    }
    (String::from_utf8_lossy(&output.stdout).into_owned(), text)
}

#[test]
fn logs_go_to_standard_error_without_colour_codes() {
    for extra in [
        vec![],
        vec![("NO_COLOR", "1")],
        vec![("KOOGATE_LOG_FORMAT", "json")],
    ] {
        let (stdout, stderr) = serve_and_stop(&extra);
        assert!(stdout.is_empty(), "{extra:?}: standard output: {stdout}");
        assert!(stderr.contains("koogate is serving"), "{extra:?}: {stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "{extra:?}: escape codes in {stderr:?}"
        );
    }
}
