//! The mock marketplace on port 0, driven through its HTTP control endpoints as a person
//! would, and the settings that point a test server at it.

use crate::helpers::{KEY, Options};
use koogate::marketplace::mock::{Call, Mock};
use koogate::protocol::order::UsageRecord;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// The AK/SK the mock accepts and the test servers sign with.
pub const AK: &str = "HPUAEXAMPLEAK";
pub const SK: &str = "mock-secret-key-0001";

/// A running mock marketplace.
pub struct MockServer {
    pub addr: SocketAddr,
    http: reqwest::Client,
}

impl MockServer {
    pub async fn start() -> Self {
        let mock = Mock::new(AK, SecretString::from(SK), Some(SecretString::from(KEY)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind port 0");
        let addr = listener.local_addr().unwrap();
        tokio::spawn(koogate::marketplace::mock::serve(
            listener,
            mock,
            std::future::pending(),
        ));
        Self {
            addr,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn control(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.url()))
            .json(&body)
            .send()
            .await
            .expect("mock answers");
        assert!(response.status().is_success(), "{path}: {response:?}");
    }

    /// Registers an order (an `orderInfo` object).
    pub async fn register(&self, order_info: Value) {
        self.control("/mock/orders", order_info).await;
    }

    /// Makes the next `count` calls fail: `http500`, `mkt0999` or `malformed`.
    pub async fn fail_next(&self, mode: &str, count: u32) {
        self.control("/mock/fail", json!({"mode": mode, "count": count}))
            .await;
    }

    /// Makes the next `count` calls answer a documented error code (`CBC.0999`, …).
    pub async fn fail_with_code(&self, code: &str, count: u32) {
        self.control(
            "/mock/fail",
            json!({"mode": "code", "code": code, "count": count}),
        )
        .await;
    }

    /// Tells the mock of a `getLicenseAsync` KooGallery sent, so that its upload is taken.
    pub async fn expect_license_event(&self, event_id: &str) {
        self.control("/mock/license-events", json!({"eventId": event_id}))
            .await;
    }

    /// Makes the next `count` calls wait `ms` before answering.
    pub async fn delay_next(&self, ms: u64, count: u32) {
        self.control("/mock/delay", json!({"ms": ms, "count": count}))
            .await;
    }

    /// Refuses the next `count` usage records with this record-level code (`003`, …).
    pub async fn usage_codes(&self, code: &str, count: u32) {
        self.control("/mock/usage-codes", json!({"code": code, "count": count}))
            .await;
    }

    /// The usage records the mock has taken (the first of each window), oldest first.
    pub async fn usage_taken(&self) -> Vec<UsageRecord> {
        self.http
            .get(format!("{}/mock/usage", self.url()))
            .send()
            .await
            .expect("mock answers")
            .json()
            .await
            .expect("usage records are JSON")
    }

    /// The open-API calls received so far.
    pub async fn calls(&self) -> Vec<Call> {
        self.http
            .get(format!("{}/mock/calls", self.url()))
            .send()
            .await
            .expect("mock answers")
            .json()
            .await
            .expect("calls are JSON")
    }

    /// The 查询订单 calls received for one order.
    pub async fn queries_for(&self, order_id: &str) -> Vec<Call> {
        let wanted = format!("orderId={order_id}&");
        self.calls()
            .await
            .into_iter()
            .filter(|c| format!("{}&", c.query).contains(&wanted))
            .collect()
    }
}

/// Test-server settings that call this mock with the right AK/SK, with small timeouts
/// and retry knobs so that retries, parking and lease expiry happen within a test.
pub fn options(mock: &MockServer) -> Options {
    Options::default()
        .env("KOOGATE_MARKETPLACE_URL", &mock.url())
        .env("KOOGATE_MARKETPLACE_FALLBACK_URL", "")
        .env("KOOGATE_MARKETPLACE_AK", AK)
        .env("KOOGATE_MARKETPLACE_SK", SK)
        .env("KOOGATE_MARKETPLACE_CONNECT_TIMEOUT_MS", "200")
        .env("KOOGATE_MARKETPLACE_REQUEST_TIMEOUT_MS", "1000")
        .env("KOOGATE_JOBS_MAX_ATTEMPTS", "4")
        .env("KOOGATE_JOBS_BACKOFF_BASE_MS", "50")
        .env("KOOGATE_JOBS_BACKOFF_MAX_MS", "200")
        .env("KOOGATE_JOBS_POLL_INTERVAL_MS", "50")
        .env("KOOGATE_JOBS_LEASE_MS", "2000")
}

/// An order with one line, `<id>-000001`, and distinctive facts to look for.
pub fn order(order_id: &str, sku: &str, expire: &str) -> Value {
    json!({
        "orderId": order_id,
        "orderType": "NEW",
        "createTime": "20261121090846",
        "orderLine": [{
            "orderLineId": format!("{order_id}-000001"),
            "chargingMode": "PERIOD",
            "periodType": "month",
            "periodNumber": 3,
            "expireTime": expire,
            "productInfo": [{"productId": "OFFI-TEST-1", "skuCode": sku, "linearValue": 20,
                             "productName": "Test product"}],
            "extendParams": [{"name": "emailDomainName", "value": "buyer.example.org"}],
            "currency": "300",
            "currencyAfterDiscount": "270"
        }],
        "buyerInfo": {"mobilePhone": "18600000000", "email": "buyer@example.org",
                      "customerId": "cust-0001", "customerName": "buyer_01",
                      "customerRealName": "测试买家", "customerType": 1},
        "extendParams": []
    })
}
