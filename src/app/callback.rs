//! The life of one callback after its signature check: one transaction that claims the
//! nonce, does the activity, stores the answer and the audit record, and commits — or,
//! when anything fails, an answer that says so and an audit record written on its own.

use crate::clock::Clock;
use crate::domain::answer::{Answer, Work};
use crate::domain::events::Decision;
use crate::domain::license_request::Licensing;
use crate::domain::provision::Provisioner;
use crate::domain::{license_code, order_notify, saas_v1, saas_v2};
use crate::jobs::follow_up;
use crate::metrics::{Answered, Metrics, Refusal};
use crate::protocol::codes::ResultCode;
use crate::protocol::fields::FieldError;
use crate::protocol::reply::Reply;
use crate::protocol::saas_v2 as v2;
use crate::protocol::signature::{AuthError, Verified};
use crate::store::health::Health;
use crate::store::refused::RefusedLog;
use crate::store::{CallbackRecord, Store, StoreError, StoreResult};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// What the pipeline needs to run callbacks.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub provisioner: Arc<dyn Provisioner>,
    /// Longest a callback may take before it is answered `000005` (KooGallery gives up
    /// after 5 s, spec §1).
    pub deadline: Duration,
    /// The current time in Unix milliseconds; a parameter so tests can replay the
    /// spec's signed vectors at the instant they were made.
    pub clock: Clock,
    /// Woken after each committed callback, so that the jobs it enqueued start at once
    /// rather than at the next poll.
    pub wake_jobs: Arc<tokio::sync::Notify>,
    /// Whether the database is known to be down.
    pub health: Arc<Health>,
    /// Where requests refused before verification are recorded, off the hot path.
    pub refused: RefusedLog,
    /// A webhook endpoint is configured: every event is also queued for delivery.
    pub deliver_events: bool,
    /// Woken when the merchant's app completes a provisioning on this replica, so that a
    /// `newInstance` waiting for it answers at once.
    pub provisioned: Arc<tokio::sync::Notify>,
    /// How long a SaaS 2.0 `newInstance` waits for the app (`app` provisioning only), and
    /// a `getLicenseAsync` for its upload (D13).
    pub provisioning_wait: Duration,
    /// Online License products: who makes Licenses, and the signing key.
    pub licensing: Arc<Licensing>,
    /// Woken when a License upload succeeds on this replica, so that a waiting
    /// `getLicenseAsync` answers at once.
    pub licensed: Arc<tokio::sync::Notify>,
    pub metrics: Metrics,
}

/// Processes an authenticated callback. `nonce` (SaaS 2.0; 1.0 has none) is claimed in
/// the same transaction as everything else; `work` is the parsed request, or why it
/// could not be parsed.
///
/// One budget: reading the body (since `started`), the transaction and the record share
/// the callback deadline. The transaction runs in its own task, so that a client that
/// goes away cannot cut it off between COMMIT and the answer, and the deadline covers
/// everything up to COMMIT but not COMMIT itself: once COMMIT is sent, its outcome
/// decides the answer, so a committed callback is never answered `000005` nor recorded
/// twice.
pub async fn process(
    services: &Services,
    nonce: Option<&Verified>,
    work: Result<Work, FieldError>,
    record: CallbackRecord,
    started: Instant,
    now_ms: i64,
) -> Answer {
    let family = record.interface.clone();
    let (activity, test) = match &work {
        Ok(work) => (Some(work.activity()), work.test()),
        Err(_) => (None, false),
    };
    let (order_id, instance_id) = match &work {
        Ok(work) => (
            work.order_id().map(str::to_owned),
            work.instance_id().map(str::to_owned),
        ),
        Err(_) => (None, None),
    };
    if work.is_err() {
        services.metrics.refused(&family, Refusal::Malformed);
    }
    let answer = decide(services, nonce, work, record, started, now_ms).await;
    if answer.code == ResultCode::AuthFailed {
        // A verified request is refused only for its nonce.
        services.metrics.refused(&family, Refusal::ReplayedNonce);
    }
    let instance_id = instance_id.as_deref().or(answer.instance_id.as_deref());
    answered(services, &family, activity, test, &answer, started);
    tracing::info!(
        family,
        activity = activity.unwrap_or("unknown"),
        result_code = answer.code.as_str(),
        duration_ms = started.elapsed().as_millis() as u64,
        order_id = order_id.as_deref().unwrap_or_default(),
        instance_id = instance_id.unwrap_or_default(),
        "callback answered"
    );
    answer
}

/// Counts an answered callback.
fn answered(
    services: &Services,
    family: &str,
    activity: Option<&'static str>,
    test: bool,
    answer: &Answer,
    started: Instant,
) {
    services.metrics.answered(&Answered {
        family,
        activity,
        result_code: answer.code.as_str(),
        test,
        duration: started.elapsed(),
    });
}

async fn decide(
    services: &Services,
    nonce: Option<&Verified>,
    work: Result<Work, FieldError>,
    mut record: CallbackRecord,
    started: Instant,
    now_ms: i64,
) -> Answer {
    if let Ok(work) = &work {
        record.activity = Some(work.activity().to_owned());
        record.test = work.test();
        record.order_id = work.order_id().map(str::to_owned);
        record.instance_id = work.instance_id().map(str::to_owned);
    }
    if services.health.is_down() {
        // Waiting for a connection would only make KooGallery's retry come later.
        tracing::warn!("database known to be down: answered 000005 at once");
        return Answer::reply(&Reply::new(
            ResultCode::Internal,
            "internal error: database unavailable",
        ));
    }
    let deadline = tokio::time::Instant::from_std(started + services.deadline);
    let phase = Arc::new(AtomicU8::new(RUNNING));
    let mut task = {
        let services = services.clone();
        let nonce = nonce.cloned();
        let mut record = record.clone();
        let phase = phase.clone();
        tokio::spawn(async move {
            let outcome = run(
                &services,
                nonce.as_ref(),
                work,
                &mut record,
                started,
                now_ms,
                deadline,
                &phase,
            )
            .await;
            if let Err(Failure::Store(error)) = &outcome {
                services.health.observe(error);
            }
            (outcome, record)
        })
    };
    // The task's own timeout covers its waits; this one also covers work that does not
    // yield (a provisioner). Past the deadline, a task that has not begun COMMIT is told
    // to roll back; one that has is waited for, as its outcome is the answer.
    let joined = match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => joined,
        Err(_) if abandon(&phase) => Ok((Err(Failure::TimedOut), record.clone())),
        Err(_) => task.await,
    };
    let (outcome, record) = match joined {
        Ok((outcome, record)) => (outcome, record),
        // The task panicked: nothing was committed (its transaction rolled back).
        Err(_) => (Err(Failure::Panicked), record),
    };
    let failure = match outcome {
        Ok(Some(answer)) => return answer,
        Ok(None) => {
            tracing::warn!("replayed nonce refused");
            let answer = Answer::reply(&Reply::new(
                ResultCode::AuthFailed,
                AuthError::ReplayedNonce.to_string(),
            ));
            let mut record = record;
            record.verdict = "replayed-nonce".into();
            return refuse(services, record, answer, started).await;
        }
        Err(Failure::Store(error)) => {
            tracing::error!(%error, "callback failed");
            "internal error"
        }
        Err(Failure::Panicked) => {
            tracing::error!("callback panicked");
            "internal error"
        }
        Err(Failure::TimedOut) => {
            tracing::error!(
                deadline_ms = services.deadline.as_millis() as u64,
                "callback timed out"
            );
            "internal error: timed out"
        }
    };
    let answer = Answer::reply(&Reply::new(ResultCode::Internal, failure));
    refuse(services, record, answer, started).await
}

/// Why a callback's transaction did not commit.
enum Failure {
    Store(StoreError),
    /// The deadline passed before COMMIT.
    TimedOut,
    Panicked,
}

/// Where a callback's task is: still working, committing (its outcome is the answer), or
/// abandoned at the deadline (it must roll back).
const RUNNING: u8 = 0;
const COMMITTING: u8 = 1;
const ABANDONED: u8 = 2;

/// Marks a still-running task as abandoned; `false` if it has begun COMMIT.
fn abandon(phase: &AtomicU8) -> bool {
    phase
        .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

#[allow(clippy::too_many_arguments)] // The parts of one callback, owned by its task.
async fn run(
    services: &Services,
    nonce: Option<&Verified>,
    work: Result<Work, FieldError>,
    record: &mut CallbackRecord,
    started: Instant,
    now_ms: i64,
    deadline: tokio::time::Instant,
    phase: &AtomicU8,
) -> Result<Option<Answer>, Failure> {
    // First in a transaction that may hold its writes back to send them at once; if a
    // twin took one of its keys meanwhile, again in an ordinary one, which sees the twin.
    let mut begin = Begin::Callback;
    // The record as it came, for a second try: the first one filled it in.
    let unrecorded = record.clone();
    let (wait_for, answer) = loop {
        let prepared = tokio::time::timeout_at(
            deadline,
            prepare(
                services,
                begin,
                nonce,
                work.clone(),
                record,
                started,
                now_ms,
            ),
        )
        .await;
        // A held-back write may meet its twin when something sends it early (a row
        // lock taken mid-way) or at commit: either way nothing was written.
        let outcome = match prepared {
            Ok(Ok(Some(Prepared {
                tx,
                answer,
                wait_for,
            }))) => {
                // Dropping the transaction rolls it back: the caller has answered 000005.
                if phase
                    .compare_exchange(RUNNING, COMMITTING, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return Err(Failure::TimedOut);
                }
                tx.commit()
                    .await
                    .map(|committed| (committed, wait_for, answer))
            }
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(error)) => Err(error),
            Err(_) => return Err(Failure::TimedOut),
        };
        match outcome {
            Ok((committed, wait_for, answer)) => {
                committed.wake(&services.wake_jobs);
                break (wait_for, answer);
            }
            Err(StoreError::ReplayedNonce) => return Ok(None),
            Err(StoreError::Conflict(what)) if begin == Begin::Callback => {
                tracing::info!(what, "a twin callback committed first: running again");
                // Nothing was committed, so the deadline may still abandon the retry.
                phase.store(RUNNING, Ordering::Release);
                begin = Begin::Ordinary;
                record.clone_from(&unrecorded);
            }
            Err(error) => return Err(Failure::Store(error)),
        }
    };
    let Some(wait) = wait_for else {
        return Ok(Some(answer));
    };
    // The answer sent may be the app's, so the record is written once it is known.
    let answered = match wait {
        Wait::App(instance_id) => wait_for_app(services, &instance_id, started).await,
        Wait::License(event_id) => wait_for_upload(services, &event_id, started).await,
    };
    let answer = answered.unwrap_or(answer);
    fill(record, &answer, started);
    if let Err(error) = services.store.record_callback(record).await {
        tracing::error!(%error, "could not record the callback");
    }
    Ok(Some(answer))
}

/// Which transaction a callback runs in (see [`crate::store::Store::begin_callback`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// The first try: writes may be held back until commit.
    Callback,
    /// After a twin committed first.
    Ordinary,
}

/// A callback's transaction, ready to commit.
struct Prepared {
    tx: Box<dyn crate::store::Tx>,
    answer: Answer,
    /// What is awaited after COMMIT (the app's provisioning, a License upload); the
    /// record is then written on its own, once the answer sent is known.
    wait_for: Option<Wait>,
}

/// Everything of a callback's transaction up to COMMIT; `None` for a replayed nonce.
async fn prepare(
    services: &Services,
    begin: Begin,
    nonce: Option<&Verified>,
    work: Result<Work, FieldError>,
    record: &mut CallbackRecord,
    started: Instant,
    now_ms: i64,
) -> StoreResult<Option<Prepared>> {
    // `app` provisioning: a fresh SaaS 2.0 newInstance waits for the app (merchant-api.md §3).
    let waits_for_app = services.provisioner.asks_app()
        && matches!(&work, Ok(Work::SaasV2 { request, .. })
            if matches!(request.activity, v2::Activity::NewInstance { .. }));
    // D13: a `getLicenseAsync` waits for its upload.
    let license_event = match &work {
        Ok(Work::SaasV2 { request, .. }) => match &request.activity {
            v2::Activity::GetLicenseAsync(application) => Some(application.event_id.to_string()),
            _ => None,
        },
        _ => None,
    };
    let mut tx = match begin {
        Begin::Callback => services.store.begin_callback().await?,
        Begin::Ordinary => services.store.begin().await?,
    };
    if let Some(verified) = nonce
        && !tx
            .claim_nonce(&verified.nonce, verified.nonce_expires_ms)
            .await?
    {
        return Ok(None);
    }
    let decision = match work {
        Err(problem) => {
            tracing::warn!(%problem, "invalid request");
            Decision::quiet(Answer::reply(&Reply::new(
                ResultCode::InvalidParam,
                problem.to_string(),
            )))
        }
        Ok(Work::SaasV2 {
            request,
            credentials,
        }) => {
            let provisioner = services.provisioner.as_ref();
            let licensing = services.licensing.as_ref();
            saas_v2::act(
                tx.as_mut(),
                provisioner,
                licensing,
                request,
                &credentials,
                now_ms,
            )
            .await?
        }
        Ok(Work::LicenseCode(request)) => license_code::act(tx.as_mut(), request, now_ms).await?,
        Ok(Work::SaasV1 { request, cipher }) => {
            let provisioner = services.provisioner.as_ref();
            saas_v1::act(tx.as_mut(), provisioner, request, &cipher, now_ms).await?
        }
        Ok(Work::OrderNotify(request)) => order_notify::act(tx.as_mut(), request, now_ms).await?,
    };
    follow_up::record(
        tx.as_mut(),
        &decision.events,
        &decision.follow_up,
        services.deliver_events,
        now_ms,
    )
    .await?;
    let answer = decision.answer;
    let wait_for = match (&answer.instance_id, answer.code, license_event) {
        (_, ResultCode::Processing, Some(event_id)) => Some(Wait::License(event_id)),
        (Some(id), ResultCode::Processing, _) if waits_for_app && !decision.events.is_empty() => {
            Some(Wait::App(id.clone()))
        }
        _ => None,
    };
    if wait_for.is_none() {
        fill(record, &answer, started);
        tx.record_callback(record).await?;
    }
    Ok(Some(Prepared {
        tx,
        answer,
        wait_for,
    }))
}

/// What an answered `000004` may still become within the callback's deadline.
enum Wait {
    /// A SaaS 2.0 `newInstance` in `app` provisioning, by instance id.
    App(String),
    /// A `getLicenseAsync`, by eventId.
    License(String),
}

/// What a waiting callback found when it looked.
enum Looked {
    Answer(Answer),
    Pending,
    GiveUp,
}

/// What the fast path leaves of the callback deadline for recording and answering.
const ANSWER_MARGIN: Duration = Duration::from_millis(400);

/// How often a waiting callback looks again when no local completion wakes it (the work
/// may have been done by another replica).
const WAIT_POLL: Duration = Duration::from_millis(100);

/// Looks with `look` until it gives an answer or gives up, for at most `provisioning_wait`
/// within the callback deadline; woken early by `notify` after a local completion.
async fn wait_for<F, Fut>(
    services: &Services,
    notify: &tokio::sync::Notify,
    started: Instant,
    mut look: F,
) -> Option<Answer>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Looked>,
{
    let budget = services.provisioning_wait.min(
        services
            .deadline
            .saturating_sub(started.elapsed() + ANSWER_MARGIN),
    );
    let until = tokio::time::Instant::now() + budget;
    loop {
        // Registered before looking, so a completion between the look and the wait wakes it.
        let woken = notify.notified();
        // The look itself is bounded too: a read that is stuck (a locked table, a pool
        // with no connection free) must not carry the answer past the deadline.
        let looked = tokio::select! {
            looked = look() => looked,
            () = tokio::time::sleep_until(until) => return None,
        };
        match looked {
            Looked::Answer(answer) => return Some(answer),
            Looked::GiveUp => return None,
            Looked::Pending => {}
        }
        tokio::select! {
            () = woken => {}
            () = tokio::time::sleep(WAIT_POLL) => {}
            () = tokio::time::sleep_until(until) => return None,
        }
    }
}

/// Waits for the License upload of an application: `000000` once KooGallery answered
/// `CBC.0000` (D13), `None` when the wait is over or the upload was parked.
async fn wait_for_upload(services: &Services, event_id: &str, started: Instant) -> Option<Answer> {
    use crate::domain::license_request::{RequestState, answer_for};
    wait_for(services, &services.licensed, started, || async {
        match services.store.license_request(event_id).await {
            Ok(Some(request)) if request.state == RequestState::Delivered => {
                Looked::Answer(answer_for(request.state))
            }
            Ok(Some(request)) if request.state != RequestState::Failed => Looked::Pending,
            Ok(_) => Looked::GiveUp,
            Err(error) => {
                tracing::warn!(%error, "cannot read the License application while waiting for its upload");
                Looked::GiveUp
            }
        }
    })
    .await
}

/// Waits for the merchant's app to provide or refuse the instance: `000000` once it is
/// provided, the app's `000100`–`000107` once it failed, `None` when the wait is over.
async fn wait_for_app(services: &Services, instance_id: &str, started: Instant) -> Option<Answer> {
    wait_for(services, &services.provisioned, started, || async {
        match services.store.instance(instance_id).await {
            Ok(Some(instance)) if instance.app_info.is_some() => {
                let reply = crate::domain::provision::provided_answer(instance_id);
                Looked::Answer(Answer::reply(&reply).with_instance(instance_id.to_owned()))
            }
            Ok(Some(instance)) => match &instance.provisioning_error {
                Some(error) => match ResultCode::unavailable(&error.result_code) {
                    Some(code) => {
                        Looked::Answer(Answer::reply(&Reply::new(code, error.message.clone())))
                    }
                    None => Looked::Pending,
                },
                None => Looked::Pending,
            },
            Ok(None) => Looked::GiveUp,
            Err(error) => {
                tracing::warn!(%error, "cannot read the instance while waiting for the app");
                Looked::GiveUp
            }
        }
    })
    .await
}

/// How long recording a refused or failed callback may take past the deadline.
const RECORD_GRACE: Duration = Duration::from_millis(250);

/// Answers a callback that changes nothing (refused signature, replayed nonce, failure)
/// and records it on its own. The record may take what is left of the deadline and a
/// short grace, no more, so that a database that is down or overloaded never holds the
/// answer past KooGallery's 5 s; a record that cannot be written is logged instead.
pub async fn refuse(
    services: &Services,
    mut record: CallbackRecord,
    answer: Answer,
    started: Instant,
) -> Answer {
    fill(&mut record, &answer, started);
    if services.health.is_down() {
        tracing::warn!("database known to be down: the callback is not recorded");
        return answer;
    }
    let left = services
        .deadline
        .saturating_sub(started.elapsed())
        .max(RECORD_GRACE);
    match tokio::time::timeout(left, services.store.record_callback(&record)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            services.health.observe(&error);
            tracing::error!(%error, "could not record the callback");
        }
        Err(_) => tracing::error!(
            waited_ms = left.as_millis() as u64,
            "could not record the callback in time"
        ),
    }
    answer
}

/// Answers a request refused before its signature was verified (or that could not be
/// read). Its record (bounded by [`CallbackRecord::bound_unverified`]) goes into the
/// refused-request buffer instead of being written now, so that anonymous senders never
/// take the database from callbacks.
pub fn refuse_unverified(
    services: &Services,
    mut record: CallbackRecord,
    answer: Answer,
    (reason, problem): (Refusal, &str),
    started: Instant,
) -> Answer {
    fill(&mut record, &answer, started);
    services.metrics.refused(&record.interface, reason);
    answered(services, &record.interface, None, false, &answer, started);
    // Anyone can send these: their log lines are rationed, their count is not.
    if services.refused.admit_log() {
        tracing::warn!(%problem, "request refused");
        tracing::info!(
            family = record.interface,
            activity = "unknown",
            result_code = answer.code.as_str(),
            duration_ms = started.elapsed().as_millis() as u64,
            "callback answered"
        );
    }
    if !services.health.is_down() {
        services.refused.record(record);
    }
    answer
}

fn fill(record: &mut CallbackRecord, answer: &Answer, started: Instant) {
    record.result_code = Some(answer.code.as_str().to_owned());
    record.answered_with(&answer.body);
    if record.instance_id.is_none() {
        record.instance_id.clone_from(&answer.instance_id);
    }
    record.duration_us = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
}
