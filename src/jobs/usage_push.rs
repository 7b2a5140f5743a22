//! The `usage.push` job (按需使用量推送, spec §8.4; merchant-api.md §6): close the usage
//! windows that are due, fix each one's record (deterministic `metering_sn`, times clipped
//! to the instance's life), and push them, oldest first, in batches of at most 100, with
//! the APIG signature and the `ts`/`nonce`/`signature` headers over the exact body sent.
//! Transient failures are retried with backoff for as long as KooGallery accepts the
//! window; refusals park the window with the reason. A scheduler enqueues one job per
//! hour (at :05, shared by every replica) and one at start, so a koogate that was down
//! catches up on every window it missed, in order.

use super::{Handler, JobError, Outcome, Policy, Retry};
use crate::clock::Clock;
use crate::domain::events::{self, EventType};
use crate::domain::instance::Instance;
use crate::domain::usage::{self, PUSH_LIMIT_MS, Quantity};
use crate::jobs::follow_up;
use crate::marketplace::{Client, MarketError, Request, interpret};
use crate::protocol::order::paths;
use crate::protocol::time;
use crate::protocol::usage::{
    ABNORMAL_DATA, already_accepted, canonical_json, record_code_meaning, usage_signature,
};
use crate::store::{Job, Store, StoreError, StoreResult, UsageWindow, window_state};
use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// The job kind.
pub const PUSH_KIND: &str = "usage.push";

/// Records per call: the newer pages state 100 (others 1000); koogate keeps to the smaller.
pub const BATCH: usize = 100;

/// What a push job is asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOrder {
    /// Close windows as soon as they have ended, not waiting for :05 (`usage push --now`).
    #[serde(default)]
    pub early: bool,
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub closed: usize,
    pub pushed: usize,
    pub parked: usize,
}

/// Pushes usage windows to the open API.
pub struct UsagePush {
    pub client: Client,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
    /// The accessKey bound to the basic interface: it keys the `signature` header.
    pub merchant_key: Option<SecretString>,
    pub deliver_events: bool,
    /// Its backoff spaces the retries of a push that failed transiently.
    pub policy: Policy,
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Self(error.to_string())
    }
}

/// A push that may succeed later: the windows stay closed and are sent again.
#[derive(Debug)]
pub struct Failure(pub String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[async_trait]
impl Handler for UsagePush {
    async fn run(&self, job: &Job) -> Result<Outcome, JobError> {
        let order: PushOrder = serde_json::from_str(&job.payload).unwrap_or_default();
        match self.push(order.early).await {
            Ok(report) => {
                tracing::info!(?report, "usage push finished");
                Ok(Outcome::Done)
            }
            Err(failure) => {
                let attempts = u32::try_from(job.attempts).unwrap_or(u32::MAX);
                let wait = self.policy.backoff(attempts, &mut rand::rng());
                Err(JobError {
                    message: failure.0,
                    retry: Retry::After(wait),
                })
            }
        }
    }

    /// Windows are retried until pushed or too old for KooGallery, however many attempts
    /// that takes; the windows, not the job, are what gets parked.
    fn keeps_own_schedule(&self) -> bool {
        true
    }
}

impl UsagePush {
    /// Closes the due windows and pushes every closed one.
    pub async fn push(&self, early: bool) -> Result<Report, Failure> {
        let mut report = Report {
            closed: self.close(early).await?,
            ..Report::default()
        };
        loop {
            let batch = self.store.closed_usage_windows(BATCH as u32).await?;
            if batch.is_empty() {
                return Ok(report);
            }
            let (pushed, parked) = self.send(batch).await?;
            report.pushed += pushed;
            report.parked += parked;
        }
    }

    /// Fixes the record of every window due now (parking those KooGallery would refuse
    /// as too old), in one transaction; returns how many were closed.
    #[expect(
        clippy::indexing_slicing,
        reason = "starts holds every instance of the due windows, read just above"
    )]
    async fn close(&self, early: bool) -> Result<usize, Failure> {
        let now_ms = (self.clock)();
        let ended_by = if early {
            now_ms
        } else {
            now_ms - usage::PUSH_DELAY_MS
        };
        let mut tx = self.store.begin().await?;
        let due = tx.ended_usage_windows(ended_by).await?;
        if due.is_empty() {
            return Ok(0);
        }
        let instances = self.instances(tx.as_mut(), &due).await?;
        let mut starts = HashMap::new();
        for instance in instances.values() {
            starts.insert(instance.id.clone(), self.started_ms(instance).await?);
        }
        let mut events_out = Vec::new();
        for mut window in due.iter().cloned() {
            let Some(instance) = instances.get(&window.instance_id) else {
                continue;
            };
            window.metering_sn = Some(usage::metering_sn(&instance.id, window.window()));
            let pushed = usage::clip(
                window.window(),
                starts[&instance.id],
                instance.released_ms,
                now_ms,
            );
            window.push_begin_ms = Some(pushed.begin_ms);
            window.push_end_ms = Some(pushed.end_ms);
            window.record_ms = Some(now_ms);
            window.updated_ms = now_ms;
            window.state = window_state::CLOSED.into();
            if pushed.begin_ms < now_ms - PUSH_LIMIT_MS {
                park(&mut window, Some("MKT.9004"), too_old());
                events_out.push(usage::event(EventType::UsagePushFailed, instance, &window));
            }
            tx.close_usage_window(&window).await?;
        }
        follow_up::record(tx.as_mut(), &events_out, &[], self.deliver_events, now_ms).await?;
        tx.commit().await?;
        Ok(due.len())
    }

    /// The windows' instances, locked in id order (events about them follow).
    async fn instances(
        &self,
        tx: &mut dyn crate::store::Tx,
        windows: &[UsageWindow],
    ) -> StoreResult<HashMap<String, Instance>> {
        let mut ids: Vec<&str> = windows.iter().map(|w| w.instance_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut found = HashMap::new();
        for id in ids {
            if let Some(instance) = tx.instance_for_update(id).await? {
                found.insert(id.to_owned(), instance);
            }
        }
        Ok(found)
    }

    /// When the instance started, for clipping (merchant-api.md §6): the order's
    /// effective time as 查询订单 gave it, else its `createTime`, else the instance's
    /// creation in koogate.
    #[expect(
        clippy::indexing_slicing,
        reason = "serde_json::Value gives Null for a missing key: reading it never panics"
    )]
    async fn started_ms(&self, instance: &Instance) -> StoreResult<i64> {
        let lines = self.store.order_lines(&instance.order_id).await?;
        let line = lines
            .iter()
            .find(|l| Some(&l.order_line_id) == instance.order_line_id.as_ref())
            .or(lines.first());
        let info: Option<Value> = line
            .and_then(|l| l.order_info.as_deref())
            .and_then(|text| serde_json::from_str(text).ok());
        let from_order = info.and_then(|info| {
            let order_line = info["orderLine"]
                .as_array()
                .and_then(|lines| {
                    lines
                        .iter()
                        .find(|l| instance.order_line_id.as_deref() == l["orderLineId"].as_str())
                })
                .cloned()
                .unwrap_or(Value::Null);
            [
                &order_line["effectiveTime"],
                &info["effectiveTime"],
                &order_line["createTime"],
                &info["createTime"],
            ]
            .into_iter()
            .find_map(|v| v.as_str().and_then(time::parse_compact))
        });
        Ok(from_order.map_or(instance.created_ms, |t| t.timestamp_millis()))
    }

    /// Sends one batch and records what became of each window; returns (pushed, parked).
    async fn send(&self, batch: Vec<UsageWindow>) -> Result<(usize, usize), Failure> {
        let now_ms = (self.clock)();
        let (stale, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|w| w.push_begin_ms.unwrap_or(w.begin_ms) < now_ms - PUSH_LIMIT_MS);
        let mut settled = Vec::new();
        for mut window in stale {
            park(&mut window, Some("MKT.9004"), too_old());
            settled.push(window);
        }
        if !batch.is_empty() {
            settled.extend(self.call(batch).await?);
        }
        self.settle(settled).await
    }

    /// One call to the open API; the windows with their outcome, or a failure to retry.
    #[expect(
        clippy::indexing_slicing,
        reason = "serde_json::Value gives Null for a missing key: reading it never panics"
    )]
    async fn call(&self, batch: Vec<UsageWindow>) -> Result<Vec<UsageWindow>, Failure> {
        let Some(key) = &self.merchant_key else {
            return Err(Failure(
                "no access key bound to the basic interface (KOOGATE_ACCESS_KEY) to sign the usage push with"
                    .into(),
            ));
        };
        let body = canonical_json(&push_body(&batch));
        // `ts` is the wire clock of this attempt, like X-Sdk-Date, not the record's time.
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let signature = usage_signature(key.expose_secret(), &ts, &nonce, &body);
        let sent = self
            .client
            .send(&Request {
                method: &Method::POST,
                path: paths::USAGE_DATA,
                query: &[],
                content_type: Some("application/json"),
                headers: &[
                    ("ts", ts.as_str()),
                    ("nonce", nonce.as_str()),
                    ("signature", signature.as_str()),
                ],
                body: body.as_bytes(),
            })
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(error) => return refused(batch, &error),
        };
        let json: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if answer.status == 200 && json["error_code"] == ABNORMAL_DATA {
            return Ok(abnormal(batch, &json));
        }
        match interpret(&answer) {
            Ok(_) => Ok(batch
                .into_iter()
                .map(|mut w| {
                    w.state = window_state::PUSHED.into();
                    w
                })
                .collect()),
            Err(error) => refused(batch, &error),
        }
    }

    /// Writes the outcomes with their events, one transaction for the batch.
    async fn settle(&self, windows: Vec<UsageWindow>) -> Result<(usize, usize), Failure> {
        let now_ms = (self.clock)();
        let mut tx = self.store.begin().await?;
        let instances = self.instances(tx.as_mut(), &windows).await?;
        let (mut pushed, mut parked) = (0, 0);
        let mut events_out = Vec::new();
        for mut window in windows {
            window.updated_ms = now_ms;
            let kind = if window.state == window_state::PUSHED {
                window.pushed_ms = Some(now_ms);
                EventType::UsagePushed
            } else {
                EventType::UsagePushFailed
            };
            // Another push (an operator's `usage push --now`) may have settled it first.
            if !tx.settle_usage_window(&window).await? {
                continue;
            }
            match kind {
                EventType::UsagePushed => pushed += 1,
                _ => {
                    parked += 1;
                    tracing::error!(
                        instance_id = %window.instance_id,
                        window = %events::rfc3339(window.begin_ms),
                        reason = window.reason.as_deref().unwrap_or("-"),
                        "usage window parked: revenue at risk"
                    );
                }
            }
            if let Some(instance) = instances.get(&window.instance_id) {
                events_out.push(usage::event(kind, instance, &window));
            }
        }
        follow_up::record(tx.as_mut(), &events_out, &[], self.deliver_events, now_ms).await?;
        tx.commit().await?;
        Ok((pushed, parked))
    }
}

fn too_old() -> String {
    "begin_time is more than 21 days old: KooGallery refuses it (MKT.9004); revenue at risk".into()
}

fn park(window: &mut UsageWindow, code: Option<&str>, reason: String) {
    window.state = window_state::PARKED.into();
    window.code = code.map(str::to_owned);
    window.reason = Some(reason);
}

/// A failed call: retried when another attempt may succeed (network, `MKT.0999`,
/// `MKT.0250`, gateway errors), else every window of the batch is parked with the reason.
fn refused(batch: Vec<UsageWindow>, error: &MarketError) -> Result<Vec<UsageWindow>, Failure> {
    if error.retryable() {
        return Err(Failure(error.to_string()));
    }
    let code = match error {
        MarketError::Api { code, .. } => Some(code.as_str().to_owned()),
        MarketError::Gateway { code, .. } => Some(code.clone()),
        _ => None,
    };
    Ok(batch
        .into_iter()
        .map(|mut w| {
            park(&mut w, code.as_deref(), format!("{error}; revenue at risk"));
            w
        })
        .collect())
}

/// `94060999`: the records listed in `abnormal_usage_data` were refused one by one, the
/// others taken. `005`/`010` say KooGallery has the window already, so it counts as
/// pushed, its code kept.
fn abnormal(batch: Vec<UsageWindow>, json: &Value) -> Vec<UsageWindow> {
    let entries = json["abnormal_usage_data"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let text = |entry: &Value, names: &[&str]| {
        names
            .iter()
            .find_map(|name| entry.get(*name).and_then(Value::as_str))
            .map(str::to_owned)
    };
    let codes: HashMap<String, (String, Option<String>)> = entries
        .iter()
        .filter_map(|entry| {
            let sn = text(entry, &["metering_sn", "meteringSn"])?;
            let code = text(entry, &["error_code", "code", "errorCode"])?;
            Some((
                sn,
                (code, text(entry, &["error_msg", "message", "errorMsg"])),
            ))
        })
        .collect();
    batch
        .into_iter()
        .map(|mut w| {
            match w.metering_sn.as_ref().and_then(|sn| codes.get(sn)) {
                None => w.state = window_state::PUSHED.into(),
                Some((code, _)) if already_accepted(code) => {
                    w.state = window_state::PUSHED.into();
                    w.code = Some(code.clone());
                }
                Some((code, message)) => park(
                    &mut w,
                    Some(code),
                    format!(
                        "KooGallery refused the record: {code} ({}){}; revenue at risk",
                        record_code_meaning(code),
                        message
                            .as_deref()
                            .map(|m| format!(": {m}"))
                            .unwrap_or_default()
                    ),
                ),
            }
            w
        })
        .collect()
}

/// The body of a push: one record per window (spec §8.4), before canonical serialisation.
pub fn push_body(batch: &[UsageWindow]) -> Value {
    let records: Vec<Value> = batch
        .iter()
        .map(|w| {
            json!({
                "instance_id": w.instance_id,
                "record_time": usage::wire_time(w.record_ms.unwrap_or(w.updated_ms)),
                "begin_time": usage::wire_time(w.push_begin_ms.unwrap_or(w.begin_ms)),
                "end_time": usage::wire_time(w.push_end_ms.unwrap_or(w.end_ms)),
                "usage_value": Quantity(w.total).to_fixed(),
                "metering_sn": w.metering_sn,
            })
        })
        .collect();
    json!({ "usage_records": records })
}

/// The job of one hourly slot: shared by every replica through its dedup key, and in one
/// lane, so that pushes run one at a time, in order.
pub fn push_job(key: String, order: &PushOrder, now_ms: i64) -> crate::store::NewJob {
    let mut job = super::new_job(PUSH_KIND, order, Some(key), None, now_ms);
    job.lane = Some(PUSH_KIND.to_owned());
    job
}

/// How often the scheduler looks at the clock; it writes only when the hour's slot changes.
const TICK: Duration = Duration::from_secs(1);

/// Enqueues the push job of each hour once its :05 has passed, and one at start (the
/// catch-up of a koogate that was down), until `stop` changes.
pub async fn schedule(
    store: Arc<dyn Store>,
    clock: Clock,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<()>,
) {
    let hour = 3_600_000;
    let mut last = None;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now_ms = clock();
        let slot = (now_ms - usage::PUSH_DELAY_MS).div_euclid(hour) * hour;
        if last == Some(slot) {
            continue;
        }
        let key = format!("slot:{}", events::rfc3339(slot));
        let enqueued = async {
            let mut tx = store.begin().await?;
            tx.enqueue_job(&push_job(key, &PushOrder::default(), now_ms))
                .await?;
            tx.commit().await
        };
        match enqueued.await {
            Ok(committed) => {
                last = Some(slot);
                committed.wake(&wake);
            }
            Err(error) => tracing::warn!(%error, "cannot enqueue the usage push; trying again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::usage::Window;

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    /// The window of spec vector 5, closed as the job closes it.
    fn vector_window() -> UsageWindow {
        let window = Window {
            begin_ms: ms("2022-08-09T08:00:00Z"),
            end_ms: ms("2022-08-09T09:00:00Z"),
        };
        let mut w = UsageWindow::open("7f141bf1-aec8-4859-8323-fb3a8ad50721", window, 0);
        w.total = 99 * 10_000;
        w.state = window_state::CLOSED.into();
        w.metering_sn = Some("a1b2c3".into());
        w.push_begin_ms = Some(window.begin_ms);
        w.push_end_ms = Some(window.end_ms);
        w.record_ms = Some(ms("2022-08-09T09:10:00Z"));
        w
    }

    #[test]
    fn the_push_body_is_spec_vector_5_with_four_decimals_and_signed_as_sent() {
        let body = canonical_json(&push_body(&[vector_window()]));

        // Vector 5's body, except that koogate always writes usage_value with 4 decimals.
        assert_eq!(
            body,
            r#"{"usage_records":[{"begin_time":"20220809T080000Z","end_time":"20220809T090000Z","instance_id":"7f141bf1-aec8-4859-8323-fb3a8ad50721","metering_sn":"a1b2c3","record_time":"20220809T091000Z","usage_value":"99.0000"}]}"#
        );
        let vector_body = body.replace("\"99.0000\"", "\"99\"");
        assert_eq!(
            usage_signature(
                "test-access-key-0001",
                "1709690865879",
                "6c63c221-1f6b-4141-8ff4-22f5dfe82b65",
                &vector_body
            ),
            "/xDQTk5sp/TJDZDKF4tMdpUX7J5K+bchndMrKAsCI/E="
        );
    }

    #[test]
    fn record_level_codes_park_or_accept_each_window() {
        let mut other = vector_window();
        other.metering_sn = Some("d4e5f6".into());
        let mut third = vector_window();
        third.metering_sn = Some("g7h8".into());
        let answer = json!({"error_code": ABNORMAL_DATA, "abnormal_usage_data": [
            {"metering_sn": "a1b2c3", "error_code": "005"},
            {"metering_sn": "d4e5f6", "error_code": "003", "error_msg": "bad value"},
        ]});

        let settled = abnormal(vec![vector_window(), other, third], &answer);

        let states: Vec<(&str, Option<&str>)> = settled
            .iter()
            .map(|w| (w.state.as_str(), w.code.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("pushed", Some("005")),
                ("parked", Some("003")),
                ("pushed", None)
            ]
        );
        assert!(
            settled[1]
                .reason
                .as_deref()
                .unwrap()
                .contains("003 (usage value is wrong): bad value"),
            "{:?}",
            settled[1].reason
        );
    }
}
