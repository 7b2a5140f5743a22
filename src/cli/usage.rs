//! `koogate usage`: an instance's usage windows with their push state, and pushing the
//! windows that have ended now rather than at the next :05 (merchant-api.md §6).

use crate::jobs::usage_push::{Failure, UsagePush};
use crate::routes::api::usage::instance_usage;
use crate::store::{Store, StoreResult};
use std::fmt::Write;

/// Windows one listing shows, newest first.
const LISTED: u32 = 1000;

/// The instance's total and its windows, one a line; `None` for an unknown instance.
pub async fn show(store: &dyn Store, instance_id: &str) -> StoreResult<Option<String>> {
    if store.instance(instance_id).await?.is_none() {
        return Ok(None);
    }
    let usage = instance_usage(store, instance_id, LISTED).await?;
    let mut out = format!(
        "instance  {}\ntotal     {}\n",
        usage.instance_id, usage.total
    );
    if usage.windows.is_empty() {
        out.push_str("no usage recorded\n");
    }
    for w in &usage.windows {
        let _ = writeln!(
            out,
            "{} – {}  {:>18}  {:>5} records  {:<6}  {}",
            w.begin,
            w.end,
            w.value,
            w.records,
            w.state,
            match w.state.as_str() {
                "open" | "closed" => format!("due {}, deadline {}", w.due_at, w.deadline),
                _ => format!(
                    "pushed {} ({} – {}) as {}",
                    w.pushed_at.as_deref().unwrap_or("-"),
                    w.pushed_begin.as_deref().unwrap_or("-"),
                    w.pushed_end.as_deref().unwrap_or("-"),
                    w.metering_sn.as_deref().unwrap_or("-"),
                ),
            }
        );
        if let Some(code) = &w.code {
            let _ = writeln!(out, "    code {code}");
        }
        if let Some(reason) = &w.reason {
            let _ = writeln!(out, "    {reason}");
        }
        for c in &w.carried_in {
            let _ = writeln!(
                out,
                "    carried in: {} from the window of {} ({} records)",
                c.value, c.from, c.records
            );
        }
    }
    Ok(Some(out))
}

/// Closes every window that has ended and pushes every closed one now; with
/// `retry_parked`, parked windows (their cause fixed) are pushed again first.
pub async fn push(pusher: &UsagePush, retry_parked: bool, now_ms: i64) -> Result<String, Failure> {
    let mut out = String::new();
    if retry_parked {
        let mut tx = pusher.store.begin().await?;
        let n = tx.unpark_usage(None, now_ms).await?;
        tx.commit().await?;
        let _ = writeln!(out, "{n} parked windows queued again");
    }
    let report = pusher.push(true).await?;
    let _ = writeln!(
        out,
        "{} windows closed, {} pushed, {} parked (`koogate usage show INSTANCE` says why)",
        report.closed, report.pushed, report.parked
    );
    Ok(out)
}
