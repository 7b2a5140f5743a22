//! The operational service: what an operator reads and does — parked jobs and
//! deliveries and putting them back in the queue, resuming the webhook endpoint, an
//! order and its timeline, re-fetching an order, the overview of what KooGallery will
//! punish next. The CLI's commands and the admin pages both go through here, so the two
//! always agree on what they show and what an action changes.

use crate::app::evidence::{self, CallbackEvidence, EventEvidence, Evidence, LicenseEvidence};
use crate::domain::events::DELIVER_KIND;
use crate::domain::instance::Instance;
use crate::domain::order::Fetch;
use crate::domain::usage;
use crate::jobs::follow_up;
use crate::store::{
    CallbackCount, CodeActivation, FailingOrder, Job, OrderLineRecord, Pause, Store, StoreResult,
    StoredCallback, UsageWindow,
};

/// How many parked jobs one listing shows.
pub const LISTED: u32 = 200;

/// KooGallery refunds an order whose `newInstance` has failed for 3 hours (koogallery.md
/// §9); the overview shows those still inside that window.
pub const REFUND_AFTER_MS: i64 = 3 * HOUR_MS;

/// The overview's span of callbacks.
pub const OVERVIEW_SPAN_MS: i64 = 24 * HOUR_MS;

/// A usage window is "near its deadline" within this long of it.
pub const USAGE_WARNING_MS: i64 = HOUR_MS;

const HOUR_MS: i64 = 3_600_000;

/// What happened to one job or event asked to be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    Queued,
    NotParked,
    /// An event recorded while no endpoint was configured has no delivery to retry.
    NeverQueued,
    Missing,
}

impl Retried {
    pub const fn describe(self) -> &'static str {
        match self {
            Self::Queued => "queued again",
            Self::NotParked => "not parked: left as it is",
            Self::NeverQueued => {
                "never queued for delivery (no endpoint was configured when it was recorded)"
            }
            Self::Missing => "not found",
        }
    }
}

/// Jobs parked as failed, oldest first.
pub async fn failed_jobs(store: &dyn Store) -> StoreResult<Vec<Job>> {
    store.failed_jobs(LISTED).await
}

/// The endpoint's pause, if any, and the deliveries parked after their schedule.
pub async fn failed_deliveries(store: &dyn Store) -> StoreResult<(Option<Pause>, Vec<Job>)> {
    let parked = failed_jobs(store)
        .await?
        .into_iter()
        .filter(|job| job.kind == DELIVER_KIND)
        .collect();
    Ok((store.webhook_pause().await?, parked))
}

/// Puts one parked job back in the queue, due now.
pub async fn retry_job(store: &dyn Store, id: i64, now_ms: i64) -> StoreResult<Retried> {
    Ok(if store.requeue_job(id, now_ms).await? {
        Retried::Queued
    } else if store.job(id).await?.is_some() {
        Retried::NotParked
    } else {
        Retried::Missing
    })
}

/// Every parked job (of `kind`, or of every kind) back in the queue; how many.
pub async fn retry_all(store: &dyn Store, kind: Option<&str>, now_ms: i64) -> StoreResult<u64> {
    store.requeue_failed(kind, now_ms).await
}

/// Every parked delivery back in the queue; how many.
pub async fn retry_all_events(store: &dyn Store, now_ms: i64) -> StoreResult<u64> {
    retry_all(store, Some(DELIVER_KIND), now_ms).await
}

/// Sends the delivery of one event again, if it was parked.
pub async fn retry_event(store: &dyn Store, event_id: &str, now_ms: i64) -> StoreResult<Retried> {
    Ok(match store.job_by_key(DELIVER_KIND, event_id).await? {
        Some(job) if store.requeue_job(job.id, now_ms).await? => Retried::Queued,
        Some(_) => Retried::NotParked,
        None if store.event(event_id).await?.is_some() => Retried::NeverQueued,
        None => Retried::Missing,
    })
}

/// Lifts the endpoint's pause and makes every waiting and parked delivery due now:
/// whether it was paused, and how many deliveries are due.
pub async fn resume_endpoint(store: &dyn Store, now_ms: i64) -> StoreResult<(bool, u64)> {
    let paused = store.webhook_pause().await?.is_some();
    Ok((paused, store.resume_webhook(DELIVER_KIND, now_ms).await?))
}

/// What koogate knows of an order: its lines, instances and jobs.
#[derive(Debug, Clone)]
pub struct OrderReport {
    pub lines: Vec<OrderLineRecord>,
    pub instances: Vec<Instance>,
    pub jobs: Vec<Job>,
}

/// The order's report; `None` when koogate has never heard of it.
pub async fn order(store: &dyn Store, order_id: &str) -> StoreResult<Option<OrderReport>> {
    let report = OrderReport {
        lines: store.order_lines(order_id).await?,
        instances: store.instances_for_order(order_id).await?,
        jobs: store.jobs_about(order_id).await?,
    };
    let empty = report.lines.is_empty() && report.instances.is_empty() && report.jobs.is_empty();
    Ok((!empty).then_some(report))
}

/// Enqueues a fresh 查询订单 of every known line of the order, due now; how many. Each
/// gets a key of its own, so the fetches a callback queued earlier do not stand in its
/// way.
pub async fn refetch_order(store: &dyn Store, order_id: &str, now_ms: i64) -> StoreResult<u64> {
    let lines = store.order_lines(order_id).await?;
    if lines.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let mut queued = 0;
    for line in &lines {
        let fetch = Fetch {
            order_id: line.order_id.clone(),
            order_line_id: line.order_line_id.clone(),
            instance_id: None,
            source: "admin".into(),
            test: line.test,
        };
        let mut job = follow_up::fetch_job(&fetch, now_ms);
        job.dedup_key = job.dedup_key.map(|key| format!("{key}\nrefetch {now_ms}"));
        if tx.enqueue_job(&job).await? {
            queued += 1;
        }
    }
    tx.commit().await?;
    Ok(queued)
}

/// One thing that happened to an order, for its timeline.
#[derive(Debug, Clone)]
pub enum Item {
    Callback(Box<CallbackEvidence>),
    Event(Box<EventEvidence>),
    Job(Job),
    /// 查询订单 answered for this line (an open-API call koogate keeps the answer of).
    Fetched(OrderLineRecord),
    License(Box<LicenseEvidence>),
    Usage(UsageWindow),
    Activation(CodeActivation),
}

impl Item {
    /// When it happened: received, recorded, queued, fetched, applied for, or ended.
    pub fn at_ms(&self) -> i64 {
        match self {
            Self::Callback(c) => c.record.received_ms,
            Self::Event(e) => e.event.created_ms,
            Self::Job(j) => j.created_ms,
            Self::Fetched(l) => l.fetched_ms.unwrap_or(l.created_ms),
            Self::License(l) => l.request.created_ms,
            Self::Usage(w) => w.end_ms,
            Self::Activation(a) => a.code.activated_ms,
        }
    }
}

/// An order's evidence and everything else about it, merged in time order.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub evidence: Evidence,
    pub items: Vec<Item>,
}

/// How many usage windows of one instance a timeline shows.
const TIMELINE_WINDOWS: u32 = 100;

/// The timeline of `order_id`; `None` when nothing is known of it.
pub async fn timeline(store: &dyn Store, order_id: &str) -> StoreResult<Option<Timeline>> {
    let Some(evidence) = evidence::gather(store, order_id).await? else {
        return Ok(None);
    };
    let mut items: Vec<Item> = Vec::new();
    items.extend(
        evidence
            .callbacks
            .iter()
            .cloned()
            .map(|c| Item::Callback(Box::new(c))),
    );
    items.extend(
        evidence
            .events
            .iter()
            .cloned()
            .map(|e| Item::Event(Box::new(e))),
    );
    items.extend(store.jobs_about(order_id).await?.into_iter().map(Item::Job));
    items.extend(
        evidence
            .lines
            .iter()
            .filter(|l| l.fetched_ms.is_some())
            .cloned()
            .map(Item::Fetched),
    );
    items.extend(
        evidence
            .license_requests
            .iter()
            .cloned()
            .map(|l| Item::License(Box::new(l))),
    );
    items.extend(evidence.activations.iter().cloned().map(Item::Activation));
    for instance in &evidence.instances {
        items.extend(
            store
                .usage_windows(&instance.id, TIMELINE_WINDOWS)
                .await?
                .into_iter()
                .map(Item::Usage),
        );
    }
    // Stable: items of the same millisecond keep the order above (a callback before the
    // events it caused).
    items.sort_by_key(Item::at_ms);
    Ok(Some(Timeline { evidence, items }))
}

/// A family's dial test: when a test callback last answered `000000`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialTest {
    pub family: String,
    pub last_success_ms: Option<i64>,
}

/// The families KooGallery dial-tests, by the callback record's interface.
pub const FAMILIES: [&str; 4] = ["saas_v2", "saas_v1", "license_code", "order_notify"];

/// A usage window closed and not yet accepted, with its push deadline.
#[derive(Debug, Clone)]
pub struct PendingWindow {
    pub window: UsageWindow,
    pub deadline_ms: i64,
}

/// What needs attention now.
#[derive(Debug, Clone)]
pub struct Overview {
    pub callbacks: Vec<CallbackCount>,
    pub dial_tests: Vec<DialTest>,
    /// Failing `newInstance` orders not yet past the refund, the soonest refunded first.
    pub at_risk: Vec<FailingOrder>,
    pub failed_jobs: Vec<Job>,
    pub pause: Option<Pause>,
    /// Closed windows not yet pushed, the nearest deadline first.
    pub usage: Vec<PendingWindow>,
    /// The newest callbacks of the span refused before any activity ran.
    pub refused: Vec<StoredCallback>,
}

/// How many refused callbacks the overview lists.
const OVERVIEW_REFUSED: u32 = 20;

/// How many closed windows the overview looks at.
const OVERVIEW_WINDOWS: u32 = 200;

/// The overview at `now_ms`.
pub async fn overview(store: &dyn Store, now_ms: i64) -> StoreResult<Overview> {
    let operations = store.operations().await?;
    let dial_tests = FAMILIES
        .iter()
        .map(|family| DialTest {
            family: (*family).to_owned(),
            last_success_ms: operations
                .last_test_success
                .iter()
                .find(|(f, _)| f == family)
                .map(|(_, at)| *at),
        })
        .collect();
    let mut usage: Vec<PendingWindow> = store
        .closed_usage_windows(OVERVIEW_WINDOWS)
        .await?
        .into_iter()
        .map(|window| PendingWindow {
            deadline_ms: usage::deadline_ms(window.window()),
            window,
        })
        .collect();
    usage.sort_by_key(|w| w.deadline_ms);
    Ok(Overview {
        callbacks: store.callback_counts(now_ms - OVERVIEW_SPAN_MS).await?,
        dial_tests,
        at_risk: store.failing_orders(now_ms - REFUND_AFTER_MS).await?,
        failed_jobs: failed_jobs(store).await?,
        pause: store.webhook_pause().await?,
        usage,
        refused: store
            .refused_callbacks(now_ms - OVERVIEW_SPAN_MS, OVERVIEW_REFUSED)
            .await?,
    })
}
