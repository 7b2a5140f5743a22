//! The `license.upload` job: deliver one application's License through 字符串/文件流上传
//! (koogallery.md §8.3), record the attempt, and mark the application delivered
//! (`license.delivered`) or, once the upload cannot succeed, parked
//! (`license.delivery_failed`) — each in one transaction with the job's completion.
//!
//! Retries follow the worker's backoff, but this handler counts the attempts itself, so
//! that an upload parked after its last attempt — even one whose replica died mid-call —
//! is always reported with its event.

use super::{Handler, JobError, Outcome, Policy, Retry};
use crate::clock::Clock;
use crate::domain::license_request::{self, RequestState};
use crate::jobs::follow_up::{self, Upload};
use crate::marketplace::{ApiCode, Client, MarketError, interpret};
use crate::protocol::license_upload;
use crate::store::{Job, LicenseUpload, Store};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Instant;

/// Runs `license.upload` jobs against the open APIs.
pub struct LicenseUploads {
    pub client: Client,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    pub policy: Policy,
    /// A webhook endpoint is configured: events are queued for delivery too.
    pub deliver_events: bool,
    /// Woken after an upload succeeded, for a waiting `getLicenseAsync` (D13).
    pub licensed: Arc<tokio::sync::Notify>,
}

/// Whether another attempt may succeed (§8.3 and the rules): `CBC.0999` and
/// failures to get an answer retry; `CBC.0101`, `CBC.0150` and the `9138xxxx` refusals
/// say the upload itself is wrong, and park it.
fn retryable(error: &MarketError) -> bool {
    match error {
        MarketError::Api {
            code:
                ApiCode::UploadInvalidParameter
                | ApiCode::UploadIllegalOperation
                | ApiCode::LicenseRefused(_),
            ..
        } => false,
        other => other.retryable(),
    }
}

/// What the attempt record keeps of an answer: HTTP status, `error_code`, `error_msg`.
fn answered(error: &MarketError) -> (Option<i64>, Option<String>, Option<String>) {
    match error {
        MarketError::Api {
            status,
            code,
            message,
        } => (
            Some(i64::from(*status)),
            Some(code.as_str().to_owned()),
            Some(message.clone()),
        ),
        MarketError::Gateway {
            status,
            code,
            message,
        } => (
            Some(i64::from(*status)),
            Some(code.clone()),
            Some(message.clone()),
        ),
        MarketError::Malformed { status, .. } => (Some(i64::from(*status)), None, None),
        _ => (None, None, None),
    }
}

#[async_trait]
impl Handler for LicenseUploads {
    fn keeps_own_schedule(&self) -> bool {
        true
    }

    async fn run(&self, job: &Job) -> Result<Outcome, JobError> {
        let upload: Upload = serde_json::from_str(&job.payload)
            .map_err(|e| JobError::park(format!("the job's payload is not an upload: {e}")))?;
        let event_id = upload.event_id;
        let Some(request) = self.store.license_request(&event_id).await? else {
            return Err(JobError::park(format!("no License application {event_id}")));
        };
        if request.state == RequestState::Delivered {
            return Ok(Outcome::Done);
        }
        let Some(license) = request.license else {
            return Err(JobError::park(format!(
                "application {event_id} has no License yet"
            )));
        };
        let max = i64::from(self.policy.max_attempts);
        if job.attempts > max {
            let reason = format!(
                "abandoned: the replica running upload attempt {max} stopped before finishing it"
            );
            return Err(self.park(&event_id, reason).await);
        }
        let body = license_upload::body(&license.content);
        let started = Instant::now();
        let result = match self.client.upload_license(&event_id, &body).await {
            Ok(answer) => interpret(&answer).map(|_| answer.status),
            Err(error) => Err(error),
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let now_ms = (self.clock)();
        let (status, code, message, error) = match &result {
            Ok(status) => (
                Some(i64::from(*status)),
                Some("CBC.0000".to_owned()),
                None,
                None,
            ),
            Err(error) => {
                let (status, code, message) = answered(error);
                (status, code, message, Some(error.to_string()))
            }
        };
        self.store
            .record_license_upload(&LicenseUpload {
                event_id: event_id.clone(),
                attempted_ms: now_ms,
                status,
                code,
                message,
                error,
                duration_ms,
            })
            .await?;
        match result {
            Ok(_) => {
                let mut tx = self.store.begin().await?;
                let events = license_request::delivered(tx.as_mut(), &event_id, now_ms).await?;
                follow_up::record(tx.as_mut(), &events, &[], self.deliver_events, now_ms).await?;
                tracing::info!(%event_id, kind = license.content.kind(), "License delivered to KooGallery");
                // A waiting `getLicenseAsync` is woken once this has committed.
                Ok(Outcome::CommitAndNotify(tx, self.licensed.clone()))
            }
            Err(error) if retryable(&error) && job.attempts < max => {
                let attempts = u32::try_from(job.attempts).unwrap_or(u32::MAX);
                Err(JobError {
                    message: error.to_string(),
                    retry: Retry::After(self.policy.backoff(attempts, &mut rand::rng())),
                })
            }
            Err(error) => {
                let reason = if retryable(&error) {
                    format!("{error}; parked after {} attempts", job.attempts)
                } else {
                    error.to_string()
                };
                Err(self.park(&event_id, reason).await)
            }
        }
    }
}

impl LicenseUploads {
    /// Records the application as parked, with `license.delivery_failed`, and gives the
    /// error that parks the job. If the record cannot be written the job is retried
    /// instead, so the event is never lost.
    async fn park(&self, event_id: &str, reason: String) -> JobError {
        let now_ms = (self.clock)();
        let recorded = async {
            let mut tx = self.store.begin().await?;
            let events =
                license_request::delivery_failed(tx.as_mut(), event_id, &reason, now_ms).await?;
            follow_up::record(tx.as_mut(), &events, &[], self.deliver_events, now_ms).await?;
            tx.commit().await
        }
        .await;
        match recorded {
            Ok(_) => {
                tracing::error!(%event_id, %reason, "License upload parked: `koogate jobs retry` sends it again");
                JobError::park(reason)
            }
            Err(error) => JobError {
                message: format!("{reason}; and recording it failed: {error}"),
                retry: Retry::After(self.policy.backoff_base),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, status: u16) -> MarketError {
        MarketError::Api {
            status,
            code: ApiCode::parse(code),
            message: "m".into(),
        }
    }

    #[test]
    fn internal_errors_and_outages_retry_and_refusals_park() {
        assert!(retryable(&api("CBC.0999", 500)));
        assert!(retryable(&MarketError::Timeout { timeout_ms: 1 }));
        for code in [
            "CBC.0101", "CBC.0150", "91381033", "91381036", "91381037", "91380150",
        ] {
            assert!(!retryable(&api(code, 200)), "{code}");
        }
        assert_eq!(
            answered(&api("91381037", 200)),
            (Some(200), Some("91381037".into()), Some("m".into()))
        );
    }
}
