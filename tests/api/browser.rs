//! A headless Chromium for the admin-page tests, driven over WebDriver (chromedriver) with
//! `fantoccini`. Debian's `chromium` and `chromium-driver` are used as installed: nothing
//! is downloaded. No test is skipped for want of them: `Browser::start` panics with what
//! to install.

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The panic message when the browser or its driver is missing.
const NOT_INSTALLED: &str = "the admin-page tests run headless Chromium: install it and its \
    WebDriver (Debian/Ubuntu: apt-get install chromium chromium-driver), or point CHROMIUM \
    and CHROMEDRIVER at them";

/// How long chromedriver may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn program(variable: &str, default: &str) -> String {
    let path = std::env::var(variable).unwrap_or_else(|_| default.to_owned());
    assert!(
        Path::new(&path).exists(),
        "{path} not found: {NOT_INSTALLED}"
    );
    path
}

/// A chromedriver of this test and one browser session in it; both end when dropped
/// (the session is closed by [`Browser::close`], the driver killed on drop).
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    pub async fn start() -> Self {
        let chromium = program("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{chromedriver} does not start ({e}): {NOT_INSTALLED}"));
        let mut capabilities = Capabilities::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // Root in CI and containers: Chromium's sandbox needs user namespaces.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000",
                         "--force-device-scale-factor=1", "--lang=en-US"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        Self {
            client: loop {
                match ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities.clone())
                    .connect(&url)
                    .await
                {
                    Ok(client) => break client,
                    Err(error) if started.elapsed() > START_TIMEOUT => {
                        panic!("no browser session ({error}): {NOT_INSTALLED}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            },
            driver,
        }
    }

    /// Ends the session (the browser exits) and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A test that panicked did not close: the driver, and with it the browser, go now.
        let _ = self.driver.kill();
    }
}
