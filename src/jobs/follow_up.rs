//! What a decision leaves behind, written in its transaction: the events it caused and
//! the jobs they and its follow-up work imply. This is the one place that turns domain
//! outcomes into queued work, so the callback pipeline, the jobs and the management API
//! all queue the same jobs for the same outcome.

use crate::domain::events::{DELIVER_KIND, Event, FETCH_KIND, FollowUp, UPLOAD_KIND};
use crate::domain::order::Fetch;
use crate::store::{NewEvent, NewJob, StoreResult, Tx};
use serde::{Deserialize, Serialize};

/// What a delivery job carries: the event to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub event_id: String,
}

/// What an upload job carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    pub event_id: String,
}

/// Queues a decision's follow-up work, then writes its events and, when a webhook
/// endpoint is configured (`deliver`), the job that delivers each. Delivery jobs of one
/// subject share a lane, so they run one at a time in sequence order.
pub async fn record(
    tx: &mut dyn Tx,
    events: &[Event],
    follow_up: &[FollowUp],
    deliver: bool,
    now_ms: i64,
) -> StoreResult<()> {
    for work in follow_up {
        let job = match work {
            FollowUp::FetchOrder(fetch) => fetch_job(fetch, now_ms),
            FollowUp::UploadLicense { event_id, order_id } => {
                upload_job(event_id, order_id, now_ms)
            }
        };
        tx.enqueue_job(&job).await?;
    }
    for event in events {
        // Time-ordered (UUID v7, 74 random bits): the indexes keyed by event id (the
        // events', the delivery jobs' and their attempts') grow at their right edge
        // instead of taking each new id on a random page, which after every checkpoint
        // PostgreSQL writes to its WAL whole.
        let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        tx.record_event(&NewEvent {
            event_id: event_id.clone(),
            kind: event.kind.as_str(),
            subject: event.subject.clone(),
            test: event.test,
            snapshot: event.snapshot.to_string(),
            created_ms: now_ms,
        })
        .await?;
        if deliver {
            tx.enqueue_job(&delivery_job(&event_id, &event.subject, now_ms))
                .await?;
        }
    }
    Ok(())
}

/// The job that fetches an order line, deduplicated on what it fetches and fills in: a
/// callback retried by KooGallery does not fetch again.
pub fn fetch_job(fetch: &Fetch, now_ms: i64) -> NewJob {
    let dedup = format!(
        "{}\n{}\n{}",
        fetch.order_id,
        fetch.order_line_id,
        fetch.instance_id.as_deref().unwrap_or_default()
    );
    super::new_job(
        FETCH_KIND,
        fetch,
        Some(dedup),
        Some(fetch.order_id.clone()),
        now_ms,
    )
}

/// The delivery job of one event.
pub fn delivery_job(event_id: &str, subject: &str, now_ms: i64) -> NewJob {
    let mut job = super::new_job(
        DELIVER_KIND,
        &Delivery {
            event_id: event_id.to_owned(),
        },
        Some(event_id.to_owned()),
        Some(subject.to_owned()),
        now_ms,
    );
    job.lane = Some(format!("event:{subject}"));
    job
}

/// The upload job of an application: one per eventId; listed with its order's jobs.
fn upload_job(event_id: &str, order_id: &str, now_ms: i64) -> NewJob {
    super::new_job(
        UPLOAD_KIND,
        &Upload {
            event_id: event_id.to_owned(),
        },
        Some(event_id.to_owned()),
        Some(order_id.to_owned()),
        now_ms,
    )
}
