//! The Prometheus metrics of one server (merchant-api.md §7): what happens in this
//! process (callbacks, refusals, deliveries, open-API calls) counted as it happens in a
//! registry owned by its `AppState`, and what the database knows (the queue, the
//! backlog, the pause, the dial test) read at scrape time, so that every replica reports
//! the same shared state and a restart loses none of it.
//!
//! Every label comes from a bounded set: a family, an activity or an event type koogate
//! names itself, a result code of the spec's table, a reason of [`Refusal`], a configured
//! host. Nothing a sender chose (an order id, an instance id, an unverified activity) is
//! ever a label.

use crate::protocol::signature::AuthError;
use crate::protocol::v1::V1Error;
use crate::store::Operations;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// The prefix of every metric name.
const PREFIX: &str = "koogate";

/// Callback durations, in seconds: KooGallery gives up after 5 s, and a callback held up
/// by a slow database can take up to the deadline plus the record's grace, so the
/// buckets reach 20 s to show how far past.
const DURATION_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 10.0, 20.0,
];

/// Why a request was refused before it was acted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MissingSignature,
    BadSignature,
    StaleTimestamp,
    FutureTimestamp,
    ReplayedNonce,
    TooLarge,
    /// A body or parameter that cannot be read: broken off, not JSON, an invalid field.
    Malformed,
    /// The body did not arrive within the callback deadline.
    SlowBody,
    /// No access key is configured for the interface: every request is refused.
    NoKey,
}

impl Refusal {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::ReplayedNonce => "replayed_nonce",
            Self::TooLarge => "too_large",
            Self::Malformed => "malformed",
            Self::SlowBody => "slow_body",
            Self::NoKey => "no_key",
        }
    }

    /// The reason of a refused SaaS 2.0, License-code or order-notification signature.
    pub fn of_signature(error: &AuthError) -> Self {
        match error {
            AuthError::NoKey => Self::NoKey,
            AuthError::Missing(_) => Self::MissingSignature,
            AuthError::Stale(_) => Self::StaleTimestamp,
            AuthError::Future(_) => Self::FutureTimestamp,
            AuthError::BadSignature => Self::BadSignature,
            AuthError::ReplayedNonce => Self::ReplayedNonce,
            AuthError::MalformedTimestamp | AuthError::NonceTooLong | AuthError::NonceControl => {
                Self::Malformed
            }
        }
    }

    /// The reason of a refused SaaS 1.0 request.
    pub fn of_v1(error: &V1Error) -> Self {
        match error {
            V1Error::MissingAuthToken | V1Error::MissingTimeStamp => Self::MissingSignature,
            V1Error::BadToken => Self::BadSignature,
            V1Error::StaleTimeStamp { skew_ms, .. } if *skew_ms < 0 => Self::FutureTimestamp,
            V1Error::StaleTimeStamp { .. } => Self::StaleTimestamp,
            V1Error::MalformedTimeStamp | V1Error::BadBody(_) | V1Error::UnsupportedValue(_) => {
                Self::Malformed
            }
        }
    }
}

/// What one delivery attempt came to: `delivered`, `gone` (a 410, which pauses the
/// endpoint), `refused` (another status), `unusable_answer` (a 2xx whose answer could
/// not be used) or `no_answer` (no connection, a timeout).
pub fn delivery_outcome(status: Option<u16>, failed: bool) -> &'static str {
    match (status, failed) {
        (Some(200..=299), false) => "delivered",
        (Some(200..=299), true) => "unusable_answer",
        (Some(410), _) => "gone",
        (Some(_), _) => "refused",
        (None, _) => "no_answer",
    }
}

/// The open API a path calls, by name; an event's upload path carries its event id,
/// which must not become a label.
pub fn open_api_name(path: &str) -> &'static str {
    use crate::protocol::order::paths;
    match path {
        paths::QUERY_ORDER => "query_order",
        paths::LICENSE_ACTIVATE => "license_activate",
        paths::LICENSE_HEARTBEAT => "license_heartbeat",
        paths::USAGE_DATA => "usage_data",
        _ if path.contains("/market-event/") => "market_event_file",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallbackLabels {
    family: &'static str,
    activity: &'static str,
    result_code: &'static str,
    test: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    family: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    r#type: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenApiLabels {
    api: &'static str,
    host: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

type DurationFamily = Family<FamilyLabel, Histogram, fn() -> Histogram>;

/// The metrics of one server. Cheap to clone: clones count into the same values.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: std::sync::Arc<Registry>,
    callbacks: Family<CallbackLabels, Counter>,
    durations: DurationFamily,
    refusals: Family<RefusalLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    open_api: Family<OpenApiLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One answered callback, as the metrics and the log see it.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// The audit record's interface (`saas_v2`, `saas_v1`, `license_code`, `order_notify`).
    pub family: &'a str,
    /// The activity, when the request was verified and parsed.
    pub activity: Option<&'static str>,
    pub result_code: &'static str,
    pub test: bool,
    pub duration: Duration,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let callbacks = Family::<CallbackLabels, Counter>::default();
        registry.register(
            "callbacks",
            "Callbacks answered, by family, activity (unknown when not verified), result code and test flag",
            callbacks.clone(),
        );
        let durations: DurationFamily =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        registry.register(
            "callback_duration_seconds",
            "Time from a callback's arrival to its answer",
            durations.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Requests refused before they were acted on, by family and reason",
            refusals.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "event_deliveries",
            "Attempts to deliver an event to the webhook endpoint, by event type and outcome",
            deliveries.clone(),
        );
        let open_api = Family::<OpenApiLabels, Counter>::default();
        registry.register(
            "openapi_calls",
            "Calls to KooGallery's open APIs, by API, host and outcome",
            open_api.clone(),
        );
        Self {
            registry: std::sync::Arc::new(registry),
            callbacks,
            durations,
            refusals,
            deliveries,
            open_api,
        }
    }

    /// Counts an answered callback.
    pub fn answered(&self, callback: &Answered<'_>) {
        let family = family(callback.family);
        self.callbacks
            .get_or_create(&CallbackLabels {
                family,
                activity: callback.activity.unwrap_or("unknown"),
                result_code: callback.result_code,
                test: if callback.test { "true" } else { "false" },
            })
            .inc();
        self.durations
            .get_or_create(&FamilyLabel { family })
            .observe(callback.duration.as_secs_f64());
    }

    /// Counts a refused request.
    pub fn refused(&self, family_name: &str, reason: Refusal) {
        self.refusals
            .get_or_create(&RefusalLabels {
                family: family(family_name),
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts one delivery attempt; `event_type` is a stored type, checked against the
    /// known ones.
    pub fn delivery(&self, event_type: &str, outcome: &'static str) {
        let r#type =
            crate::domain::events::EventType::parse(event_type).map_or("unknown", |t| t.as_str());
        self.deliveries
            .get_or_create(&DeliveryLabels { r#type, outcome })
            .inc();
    }

    /// Counts one open-API call to one host. `host` is a configured base URL's host.
    pub fn open_api(&self, api: &'static str, host: &str, outcome: &'static str) {
        self.open_api
            .get_or_create(&OpenApiLabels {
                api,
                host: host.to_owned(),
                outcome,
            })
            .inc();
    }

    /// The OpenMetrics text of this server: its own counters, then what the database
    /// said at `now_ms`.
    #[expect(clippy::expect_used, reason = "writing to a String cannot fail")]
    pub fn render(&self, operations: &Operations, now_ms: i64) -> String {
        let mut text = String::new();
        encode_registry(&mut text, &self.registry).expect("writing to a String cannot fail");
        encode_registry(&mut text, &scraped(operations, now_ms))
            .expect("writing to a String cannot fail");
        encode_eof(&mut text).expect("writing to a String cannot fail");
        text
    }
}

/// The families koogate serves; anything else (which cannot happen) is `other`, so that
/// no caller can widen the label set.
fn family(name: &str) -> &'static str {
    match name {
        "saas_v2" => "saas_v2",
        "saas_v1" => "saas_v1",
        "license_code" => "license_code",
        "order_notify" => "order_notify",
        _ => "other",
    }
}

/// A duration in milliseconds as the seconds of a gauge; never negative (a clock behind).
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// A registry of the gauges read from the database, built afresh at each scrape so that
/// a kind or state that is gone leaves no stale series behind.
fn scraped(operations: &Operations, now_ms: i64) -> Registry {
    let mut registry = Registry::with_prefix(PREFIX);
    let jobs = Family::<JobLabels, Gauge>::default();
    for (kind, state, count) in &operations.jobs {
        jobs.get_or_create(&JobLabels {
            kind: kind.clone(),
            state: state.as_str(),
        })
        .set(*count);
    }
    registry.register(
        "jobs",
        "Unfinished background jobs, by kind and state (failed: parked, waiting for `jobs retry`)",
        jobs,
    );
    let oldest_due = Family::<KindLabel, Gauge<f64, AtomicU64>>::default();
    for (kind, age_ms) in &operations.oldest_due_age_ms {
        oldest_due
            .get_or_create(&KindLabel { kind: kind.clone() })
            .set(seconds(*age_ms));
    }
    registry.register(
        "job_oldest_due_age_seconds",
        "How long the job of each kind that has been due longest has waited for a worker",
        oldest_due,
    );
    let backlog = Gauge::<i64>::default();
    backlog.set(operations.backlog);
    registry.register(
        "event_backlog",
        "Events not yet delivered to the webhook endpoint (pending, retried or parked)",
        backlog,
    );
    let backlog_age = Gauge::<f64, AtomicU64>::default();
    if let Some(created_ms) = operations.backlog_oldest_ms {
        backlog_age.set(seconds(now_ms.saturating_sub(created_ms)));
    }
    registry.register(
        "event_backlog_oldest_age_seconds",
        "Age of the oldest event not yet delivered (0 when there is none)",
        backlog_age,
    );
    let paused = Gauge::<i64>::default();
    paused.set(i64::from(operations.webhook_paused));
    registry.register(
        "webhook_paused",
        "1 while the webhook endpoint is paused (a 410 Gone) until `events resume`",
        paused,
    );
    let dial = Family::<FamilyLabel, Gauge<f64, AtomicU64>>::default();
    for (name, received_ms) in &operations.last_test_success {
        dial.get_or_create(&FamilyLabel {
            family: family(name),
        })
        .set(*received_ms as f64 / 1000.0);
    }
    registry.register(
        "dial_test_last_success_timestamp_seconds",
        "When a test callback (seller-center debugging or the dial test) last answered 000000, per family",
        dial,
    );
    register_usage(&mut registry, operations, now_ms);
    registry
}

/// Usage windows KooGallery has not taken yet, and how close the most urgent is to the
/// time after which KooGallery no longer bills it on its cadence (spec §8.4).
fn register_usage(registry: &mut Registry, operations: &Operations, now_ms: i64) {
    use crate::domain::usage::{Window, deadline_ms};
    use crate::store::window_state::{CLOSED, OPEN, PARKED};
    let state = |stored: &str| [OPEN, CLOSED, PARKED].into_iter().find(|s| *s == stored);
    let unpushed = Family::<StateLabel, Gauge>::default();
    // Every state is exported, 0 included, so that "none" and "not scraped" differ.
    for state in [OPEN, CLOSED, PARKED] {
        let count = operations
            .usage_unpushed
            .iter()
            .find(|(stored, _)| stored == state)
            .map_or(0, |(_, count)| *count);
        unpushed.get_or_create(&StateLabel { state }).set(count);
    }
    registry.register(
        "usage_windows_unpushed",
        "Usage windows not yet taken by KooGallery, by state (open: taking usage; closed: being pushed; parked: refused, revenue at risk)",
        unpushed,
    );
    let mut first: Vec<(&'static str, i64)> = Vec::new();
    for (stored, length_ms, end_ms) in &operations.usage_first_end {
        let Some(state) = state(stored) else { continue };
        let deadline = deadline_ms(Window {
            begin_ms: end_ms - length_ms,
            end_ms: *end_ms,
        });
        match first.iter_mut().find(|(s, _)| *s == state) {
            Some((_, earliest)) => *earliest = (*earliest).min(deadline),
            None => first.push((state, deadline)),
        }
    }
    let deadline = Family::<StateLabel, Gauge<f64, AtomicU64>>::default();
    for (state, deadline_ms) in first {
        deadline
            .get_or_create(&StateLabel { state })
            .set((deadline_ms - now_ms) as f64 / 1000.0);
    }
    registry.register(
        "usage_window_deadline_seconds",
        "Seconds left until the push deadline of the most urgent open or closed usage window (2 h after an hourly window, 01:00 UTC after a daily one; negative once passed)",
        deadline,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_path_is_named_without_its_event_id() {
        let path = crate::marketplace::client::market_event_file_path("evt-123").unwrap();
        assert_eq!(open_api_name(&path), "market_event_file");
        assert_eq!(
            open_api_name(crate::protocol::order::paths::QUERY_ORDER),
            "query_order"
        );
    }

    #[test]
    fn an_unknown_family_cannot_widen_the_label_set() {
        assert_eq!(family("saas_v2"), "saas_v2");
        assert_eq!(family("ORDER-123"), "other");
    }

    #[test]
    fn a_v1_time_stamp_ahead_of_the_clock_is_a_future_timestamp() {
        let ahead = V1Error::StaleTimeStamp {
            skew_ms: -700_000,
            window_secs: 600,
        };
        let behind = V1Error::StaleTimeStamp {
            skew_ms: 700_000,
            window_secs: 600,
        };
        assert_eq!(Refusal::of_v1(&ahead), Refusal::FutureTimestamp);
        assert_eq!(Refusal::of_v1(&behind), Refusal::StaleTimestamp);
    }
}
