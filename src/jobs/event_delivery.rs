//! The `event.deliver` job: POST one event to the merchant's webhook endpoint, signed as
//! Standard Webhooks 1.0 (merchant-api.md §2.2), record the attempt, and retry on the
//! documented schedule until the event is parked. The events of one subject share a job
//! lane, so they go one at a time, in sequence; `410 Gone` pauses the endpoint.

use super::{Handler, JobError, Outcome, Retry};
use crate::clock::Clock;
use crate::domain::events::EventType;
use crate::domain::license_request::{self, License, LicenseInput, Licensing, Mode, Provided};
use crate::domain::provision::{self, Applied, Report};
use crate::jobs::follow_up::{self, Delivery};
use crate::protocol::webhook::{WebhookSecret, signature_header};
use crate::store::{Attempt, Job, Store};
use async_trait::async_trait;
use rand::Rng;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How much of an answer is kept with the attempt (merchant-api.md §2.2).
pub const KEPT_ANSWER: usize = 4096;

/// The longest answer read: enough for app info or a License (issue of `license.requested`).
const MAX_ANSWER: usize = 1 << 20;

/// How long a paused endpoint's deliveries wait before looking again; `events resume`
/// makes them due at once.
const PAUSED_RECHECK: Duration = Duration::from_secs(60);

/// When deliveries are retried (merchant-api.md §2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// `None`: the documented schedule. Otherwise these waits, the last one repeating.
    pub waits: Option<Vec<Duration>>,
    /// An event is parked once waiting again would take it past this age.
    pub max_age: Duration,
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DOCUMENTED: [u64; 6] = [5, 30, 2 * MINUTE, 5 * MINUTE, 15 * MINUTE, 30 * MINUTE];

impl Schedule {
    /// The wait after `failed` failed attempts (1 for the first), before jitter, and the
    /// time spent waiting before it; `None` once the schedule is over.
    pub fn wait(&self, failed: u32) -> Option<Duration> {
        let n = usize::try_from(failed.max(1)).unwrap_or(usize::MAX);
        let mut elapsed = Duration::ZERO;
        let mut wait = Duration::ZERO;
        for k in 1..=n {
            wait = self.nth(k, elapsed);
            if k < n {
                elapsed = elapsed.saturating_add(wait);
            }
        }
        (elapsed.saturating_add(wait) <= self.max_age).then_some(wait)
    }

    /// The k-th wait (1-based), given the time already spent waiting.
    fn nth(&self, k: usize, elapsed: Duration) -> Duration {
        match &self.waits {
            Some(waits) => waits
                .get(k - 1)
                .or(waits.last())
                .copied()
                .unwrap_or(Duration::from_secs(5)),
            None => match DOCUMENTED.get(k - 1) {
                Some(secs) => Duration::from_secs(*secs),
                // Hourly up to a day, then every six hours.
                None if elapsed < Duration::from_secs(24 * HOUR) => Duration::from_secs(HOUR),
                None => Duration::from_secs(6 * HOUR),
            },
        }
    }

    /// The documented floor for `429` and `5xx`: at least a minute, unless a configured
    /// schedule says less (a test's compressed schedule, or an operator's choice).
    fn floor_for_overload(&self, wait: Duration) -> Duration {
        match self.waits {
            None => wait.max(Duration::from_secs(MINUTE)),
            Some(_) => wait,
        }
    }
}

/// ±20 % jitter, so that events failed together by one outage do not come back at once.
fn jitter(wait: Duration, rng: &mut impl Rng) -> Duration {
    wait.mul_f64(rng.random_range(0.8..=1.2))
}

/// `Retry-After` in seconds, honoured within [the schedule's wait, twice it].
fn retry_after(headers: &reqwest::header::HeaderMap, wait: Duration) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).clamp(wait, wait.saturating_mul(2)))
}

/// Delivers events to the configured endpoint.
pub struct EventDelivery {
    pub store: Arc<dyn Store>,
    pub http: reqwest::Client,
    pub url: String,
    pub secrets: Arc<Vec<WebhookSecret>>,
    pub schedule: Schedule,
    pub clock: Clock,
    /// Woken when the app's answer completed a provisioning, for a waiting callback.
    pub provisioned: Arc<tokio::sync::Notify>,
    /// In `app` License mode, the answer to `license.requested` may carry the License.
    pub licensing: Arc<Licensing>,
    pub metrics: crate::metrics::Metrics,
}

impl EventDelivery {
    /// An HTTP client for deliveries: no redirects (a 3xx is a failed attempt, never a
    /// signed body sent elsewhere), TLS verified, a timeout per attempt.
    pub fn client(timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .build()
            .unwrap_or_default()
    }
}

/// What one attempt came to.
struct Sent {
    status: Option<u16>,
    headers: reqwest::header::HeaderMap,
    answer: Vec<u8>,
    error: Option<String>,
}

impl EventDelivery {
    async fn send(&self, event_id: &str, body: Vec<u8>) -> Sent {
        let timestamp = (self.clock)() / 1000;
        let signature = signature_header(&self.secrets, event_id, timestamp, &body);
        let request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("webhook-id", event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return Sent {
                    status: None,
                    headers: Default::default(),
                    answer: Vec::new(),
                    error: Some(describe(&error)),
                };
            }
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut answer = Vec::new();
        let mut error = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if answer.len() + chunk.len() <= MAX_ANSWER => {
                    answer.extend_from_slice(&chunk)
                }
                Ok(Some(_)) => {
                    error = Some(format!("the answer is longer than {MAX_ANSWER} bytes"));
                    break;
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("reading the answer: {}", describe(&e)));
                    break;
                }
            }
        }
        Sent {
            status: Some(status),
            headers,
            answer,
            error,
        }
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        format!("cannot connect: {error}")
    } else {
        error.to_string()
    }
}

#[async_trait]
impl Handler for EventDelivery {
    fn keeps_own_schedule(&self) -> bool {
        true
    }

    async fn run(&self, job: &Job) -> Result<Outcome, JobError> {
        let delivery: Delivery = serde_json::from_str(&job.payload)
            .map_err(|e| JobError::park(format!("the job's payload is not a delivery: {e}")))?;
        if let Some(pause) = self.store.webhook_pause().await? {
            return Err(JobError {
                message: format!("the endpoint is paused: {}", pause.reason),
                retry: Retry::Deferred(PAUSED_RECHECK),
            });
        }
        let Some(event) = self.store.event(&delivery.event_id).await? else {
            tracing::info!(event_id = %delivery.event_id, "event deleted past its retention: nothing to deliver");
            return Ok(Outcome::Done);
        };
        let started = Instant::now();
        let sent = self.send(&event.event_id, event.body()).await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now_ms = (self.clock)();
        let success = sent.status.is_some_and(|s| (200..300).contains(&s));
        // The app's answer to the two events that carry one (§2.3); a bad answer is a
        // failed attempt whose error says why.
        let mut error = sent.error.clone();
        let mut applied = None;
        let mut license = None;
        let answered = success && error.is_none();
        if answered && event.event_type() == Some(EventType::InstanceProvisionRequested) {
            match Report::from_answer(&sent.answer) {
                Ok(Some(report)) => applied = Some(report),
                Ok(None) => {}
                Err(problem) => error = Some(format!("the answer is not usable: {problem}")),
            }
        }
        let license_subject = event.subject.strip_prefix("license-request:");
        if answered
            && self.licensing.mode == Mode::App
            && event.event_type() == Some(EventType::LicenseRequested)
            && let Some(event_id) = license_subject
        {
            let max = self.licensing.max_bytes;
            match LicenseInput::from_answer(&sent.answer, event_id, max) {
                Ok(Some(given)) => license = Some((event_id.to_owned(), given)),
                Ok(None) => {}
                Err(problem) => error = Some(format!("the answer is not usable: {problem}")),
            }
        }
        if !success && error.is_none() {
            error = sent.status.map(|s| format!("answered HTTP {s}"));
        }
        let attempt = Attempt {
            event_id: event.event_id.clone(),
            attempted_ms: now_ms,
            status: sent.status.map(i64::from),
            duration_ms,
            response: (!sent.answer.is_empty()).then(|| {
                String::from_utf8_lossy(sent.answer.get(..KEPT_ANSWER).unwrap_or(&sent.answer))
                    .into_owned()
            }),
            error: error.clone(),
        };
        let outcome = crate::metrics::delivery_outcome(sent.status, error.is_some());
        self.metrics.delivery(&event.kind, outcome);
        let Some(error) = error else {
            // The attempt commits with the job's completion (and the app's answer).
            let mut tx = self.store.begin().await?;
            tx.record_attempt(&attempt).await?;
            if let Some(report) = applied
                && self
                    .apply(tx.as_mut(), &event.subject, report, now_ms)
                    .await?
            {
                return Ok(Outcome::CommitAndNotify(tx, self.provisioned.clone()));
            }
            if let Some((event_id, given)) = license {
                self.provide(tx.as_mut(), &event_id, given, now_ms).await?;
            }
            return Ok(Outcome::Commit(tx));
        };
        self.store.record_attempt(&attempt).await?;
        if sent.status == Some(410) {
            self.store
                .pause_webhook(now_ms, "the endpoint answered 410 Gone")
                .await?;
            tracing::error!(
                "the webhook endpoint answered 410 Gone: deliveries are paused until `koogate events resume`"
            );
            return Err(JobError {
                message: error,
                retry: Retry::Deferred(PAUSED_RECHECK),
            });
        }
        let failed = u32::try_from(job.attempts).unwrap_or(u32::MAX);
        let Some(wait) = self.schedule.wait(failed) else {
            return Err(JobError::park(format!(
                "{error}; parked after {failed} attempts (the retry schedule is over)"
            )));
        };
        let overloaded = sent.status.is_some_and(|s| s == 429 || s >= 500);
        let wait = match retry_after(&sent.headers, wait) {
            Some(asked) => asked,
            None if overloaded => self
                .schedule
                .floor_for_overload(jitter(wait, &mut rand::rng())),
            None => jitter(wait, &mut rand::rng()),
        };
        Err(JobError {
            message: error,
            retry: Retry::After(wait),
        })
    }
}

impl EventDelivery {
    /// Applies the app's answer to `instance.provision_requested` in the delivery's
    /// transaction, so that it commits with the job; `true` when it changed the instance
    /// (a waiting `newInstance` is then woken after the commit).
    async fn apply(
        &self,
        tx: &mut dyn crate::store::Tx,
        subject: &str,
        report: Report,
        now_ms: i64,
    ) -> Result<bool, JobError> {
        let Some(instance_id) = subject.strip_prefix("instance:") else {
            return Ok(false);
        };
        match provision::apply_report(tx, instance_id, &report, now_ms).await? {
            Applied::Changed(events) => {
                // Deliveries are on: this job is one.
                follow_up::record(tx, &events, &[], true, now_ms).await?;
                Ok(true)
            }
            Applied::Unchanged => Ok(false),
            Applied::Refused(reason) => {
                tracing::warn!(%instance_id, %reason, "the app's provisioning answer was not applied");
                Ok(false)
            }
        }
    }
}

impl EventDelivery {
    /// Stores the License the app answered `license.requested` with, and queues its
    /// upload, in the delivery's transaction.
    async fn provide(
        &self,
        tx: &mut dyn crate::store::Tx,
        event_id: &str,
        given: License,
        now_ms: i64,
    ) -> Result<(), JobError> {
        let provided = license_request::provide(tx, event_id, given, now_ms).await?;
        // Deliveries are on: this job is one.
        follow_up::record(tx, &provided.events, &provided.follow_up, true, now_ms).await?;
        match provided.answer {
            Provided::Queued | Provided::Unchanged => {}
            refused @ (Provided::Unknown | Provided::Conflict) => {
                tracing::warn!(%event_id, ?refused, "the app's License answer was not applied");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented() -> Schedule {
        Schedule {
            waits: None,
            max_age: Duration::from_secs(72 * HOUR),
        }
    }

    #[test]
    fn the_documented_schedule() {
        let s = documented();
        let secs = |n| s.wait(n).map(|d| d.as_secs());
        assert_eq!(
            (1..=7).map(secs).collect::<Vec<_>>(),
            [5, 30, 120, 300, 900, 1800, 3600].map(Some)
        );
        // Hourly until a day has been spent waiting, then every six hours, then parked.
        let mut elapsed = 0;
        let mut n = 1;
        while let Some(wait) = secs(n) {
            if elapsed >= 24 * HOUR && n > 6 {
                assert_eq!(wait, 6 * HOUR, "attempt {n} after {elapsed} s");
            } else if n > 6 {
                assert_eq!(wait, HOUR, "attempt {n} after {elapsed} s");
            }
            elapsed += wait;
            n += 1;
        }
        assert!(
            elapsed <= 72 * HOUR && elapsed + 6 * HOUR > 72 * HOUR,
            "{elapsed}"
        );
    }

    #[test]
    fn a_configured_schedule_repeats_its_last_wait_until_the_maximum_age() {
        let s = Schedule {
            waits: Some(vec![Duration::from_millis(100), Duration::from_millis(200)]),
            max_age: Duration::from_millis(700),
        };
        let waits: Vec<_> = (1..=5).map(|n| s.wait(n).map(|d| d.as_millis())).collect();
        // 100 + 200 + 200 + 200 = 700: the fifth would pass the maximum age.
        assert_eq!(waits, [Some(100), Some(200), Some(200), Some(200), None]);
    }

    #[test]
    fn retry_after_is_honoured_within_bounds() {
        let mut headers = reqwest::header::HeaderMap::new();
        let wait = Duration::from_secs(30);
        for (asked, honoured) in [("45", 45), ("1", 30), ("3600", 60)] {
            headers.insert(reqwest::header::RETRY_AFTER, asked.parse().unwrap());
            assert_eq!(
                retry_after(&headers, wait),
                Some(Duration::from_secs(honoured))
            );
        }
        headers.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&headers, wait), None);
    }

    #[test]
    fn overload_waits_at_least_a_minute_on_the_documented_schedule_only() {
        assert_eq!(
            documented().floor_for_overload(Duration::from_secs(5)),
            Duration::from_secs(60)
        );
        let compressed = Schedule {
            waits: Some(vec![Duration::from_millis(50)]),
            max_age: Duration::from_secs(1),
        };
        assert_eq!(
            compressed.floor_for_overload(Duration::from_millis(50)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        let mut rng = rand::rng();
        for _ in 0..500 {
            let w = jitter(Duration::from_secs(100), &mut rng);
            assert!(
                w >= Duration::from_secs(80) && w <= Duration::from_secs(120),
                "{w:?}"
            );
        }
    }
}
