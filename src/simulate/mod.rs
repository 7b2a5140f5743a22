//! `koogate simulate`: plays KooGallery against any production interface address, as the
//! seller-center debugging page (接口调试) and the twice-daily dial test (拨测) do, and says
//! precisely where an answer differs from what KooGallery expects.
//!
//! Requests are signed, and answers verified, with the same `protocol` code the server uses,
//! so the two sides cannot drift apart.

mod checks;
mod client;
mod report;
mod scenarios;

pub use report::{Check, Exchanged, Human, Quiet, Report, ScenarioReport, Sink};

use crate::protocol::crypto::KeySize;
use reqwest::Url;
use secrecy::SecretString;
use serde::Serialize;
use std::time::Duration;

/// How long KooGallery waits for an answer before it counts the call as failed (spec §1).
pub const KOOGALLERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The default V1 `timeStamp` window koogate applies (decision D3).
pub const DEFAULT_V1_WINDOW: Duration = Duration::from_secs(600);

/// The interface family the production address serves (spec §0, §B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Interface {
    /// SaaS 2.0: POST JSON, `signature`/`timestamp`/`nonce` URL parameters (§3).
    SaasV2,
    /// SaaS 1.0: GET with query parameters and `authToken` (§4).
    SaasV1,
    /// Order notifications (订单通知, §7).
    OrderNotify,
    /// License-code 2.0 merchant activities (§6.3).
    LicenseCode,
    /// Online License (§6.2): the SaaS 2.0 instance activities and `getLicenseAsync`.
    License,
}

impl Interface {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::SaasV2 => "saas-v2",
            Self::SaasV1 => "saas-v1",
            Self::OrderNotify => "order-notify",
            Self::LicenseCode => "license-code",
            Self::License => "license",
        }
    }
}

/// A named list of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Every activity in the order an instance lives through, with the code each must get.
    Lifecycle,
    /// Repeats and simultaneous duplicates: one instance, byte-identical answers.
    Idempotency,
    /// Forged, stale and replayed requests: each must get `000001`.
    Security,
    /// Malformed and out-of-spec requests: each must get `000002`, and the server must keep answering.
    BadInput,
    /// What real implementations get wrong: the form of the body the signature covers (D1a),
    /// forged and unknown-instance requests for every activity, bad times, and the inputs
    /// KooGallery really sends.
    Strict,
    /// The saved debugging cases, replayed as the dial test replays them.
    DialTest,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Self; 6] = [
        Self::Lifecycle,
        Self::Idempotency,
        Self::Security,
        Self::BadInput,
        Self::Strict,
        Self::DialTest,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Lifecycle => "lifecycle",
            Self::Idempotency => "idempotency",
            Self::Security => "security",
            Self::BadInput => "bad-input",
            Self::Strict => "strict",
            Self::DialTest => "dial-test",
        }
    }
}

/// What to simulate, against which address.
#[derive(Debug, Clone)]
pub struct Options {
    /// The production address exactly as bound in seller center, path included. Signature
    /// parameters are appended to it, after any query it already has.
    pub url: Url,
    /// The access key bound in seller center to this interface type.
    pub key: SecretString,
    pub interface: Interface,
    pub scenarios: Vec<Scenario>,
    /// Send `testFlag=0`, as real orders do, instead of the debugging page's `testFlag=1`.
    /// The dial test always sends `testFlag=1`: it replays debugging cases.
    pub real: bool,
    /// The V1 `timeStamp` window the server applies (D3); zero when it does not check.
    pub v1_window: Duration,
    /// SaaS 1.0: send every `newInstance` with an encrypted `mobilePhone` and `email`, as
    /// KooGallery does for a product that creates the buyer's account from them (§4.1).
    pub v1_contact: bool,
    /// SaaS 1.0: the key size chosen when the product was published, which encrypts
    /// `mobilePhone` and `email` (§2.5).
    pub v1_key_size: KeySize,
    /// A license code the server knows (activated through it), for the License-code scenarios
    /// that need an existing code.
    pub license_code: Option<String>,
    /// How long to wait for each answer: KooGallery's timeout unless a test shortens it.
    pub timeout: Duration,
}

impl Options {
    /// Every scenario of `interface` against `url`, as the debugging page would call it.
    pub fn new(url: Url, key: SecretString, interface: Interface) -> Self {
        Self {
            url,
            key,
            interface,
            scenarios: Scenario::ALL.to_vec(),
            real: false,
            v1_window: DEFAULT_V1_WINDOW,
            v1_contact: false,
            v1_key_size: KeySize::default(),
            license_code: None,
            timeout: KOOGALLERY_TIMEOUT,
        }
    }
}

/// Runs the chosen scenarios, telling `sink` about each request and check as it happens, and
/// returns the whole report. Never panics on what the server does: an unreachable address, a
/// TLS failure or an HTML answer is a failed check with its cause.
pub async fn run(options: &Options, sink: &mut dyn Sink) -> Report {
    scenarios::run(options, sink).await
}
