//! `koogate events`: a new signing secret, the deliveries parked or paused, and sending
//! them again in order once the merchant's endpoint is back (merchant-api.md §2.2).

use crate::app::ops;
use crate::protocol::webhook::WebhookSecret;
use crate::store::{Store, StoreResult};
use std::fmt::Write;

/// A new `whsec_…` secret for `KOOGATE_EVENTS_SECRET` (and the receiving app).
pub fn secret() -> String {
    WebhookSecret::generate()
}

/// The endpoint's pause, and the deliveries parked after their schedule, each with the
/// event it carries and its last error. Later events of a parked subject wait behind it.
pub async fn failed(store: &dyn Store) -> StoreResult<String> {
    let mut out = String::new();
    let (pause, parked) = ops::failed_deliveries(store).await?;
    if let Some(pause) = pause {
        let _ = writeln!(
            out,
            "endpoint paused since {}: {} (`koogate events resume` sends again)",
            crate::domain::events::rfc3339(pause.paused_ms),
            pause.reason
        );
    }
    for job in &parked {
        let _ = writeln!(
            out,
            "{}  {}  after {} attempts: {}",
            job.dedup_key.as_deref().unwrap_or("-"),
            job.subject.as_deref().unwrap_or("-"),
            job.attempts,
            job.last_error.as_deref().unwrap_or("-")
        );
    }
    if out.is_empty() {
        out.push_str("no parked deliveries, endpoint not paused\n");
    }
    Ok(out)
}

/// Queues the deliveries of these events again, or of every parked one with `all`.
pub async fn retry(
    store: &dyn Store,
    event_ids: &[String],
    all: bool,
    now_ms: i64,
) -> StoreResult<String> {
    if all {
        let n = ops::retry_all_events(store, now_ms).await?;
        return Ok(format!("{n} parked deliveries queued again\n"));
    }
    let mut out = String::new();
    for id in event_ids {
        let outcome = match ops::retry_event(store, id, now_ms).await? {
            ops::Retried::Missing => "no such event",
            retried => retried.describe(),
        };
        let _ = writeln!(out, "{id}  {outcome}");
    }
    Ok(out)
}

/// Lifts the endpoint's pause and sends every waiting and parked delivery again, each
/// subject's in order.
pub async fn resume(store: &dyn Store, now_ms: i64) -> StoreResult<String> {
    let (paused, n) = ops::resume_endpoint(store, now_ms).await?;
    Ok(format!(
        "{}{n} deliveries due now\n",
        if paused { "endpoint resumed; " } else { "" }
    ))
}
