//! `koogate jobs`: the background jobs parked as failed, and putting them back in the
//! queue once their cause is fixed (AK/SK configured, marketplace reachable again).

use super::orders;
use crate::store::{Store, StoreResult};
use std::fmt::Write;

/// How many parked jobs one listing shows.
const LISTED: u32 = 200;

/// The jobs parked as failed, with their last error.
pub async fn failed(store: &dyn Store) -> StoreResult<String> {
    let jobs = store.failed_jobs(LISTED).await?;
    if jobs.is_empty() {
        return Ok("no failed jobs\n".into());
    }
    let mut out = String::new();
    for job in &jobs {
        orders::job(&mut out, job);
        let _ = writeln!(out, "    about {}", job.subject.as_deref().unwrap_or("-"));
    }
    Ok(out)
}

/// Requeues the given parked jobs, saying what happened to each, or every parked job
/// (in one statement) when `all` is set.
pub async fn retry(store: &dyn Store, ids: &[i64], all: bool, now_ms: i64) -> StoreResult<String> {
    if all {
        return Ok(match store.requeue_failed(None, now_ms).await? {
            0 => "no failed jobs\n".into(),
            n => format!("{n} failed jobs queued again\n"),
        });
    }
    let mut out = String::new();
    for &id in ids {
        let outcome = if store.requeue_job(id, now_ms).await? {
            "queued again"
        } else if store.job(id).await?.is_some() {
            "not failed: left as it is"
        } else {
            "no such job"
        };
        let _ = writeln!(out, "#{id}  {outcome}");
    }
    if out.is_empty() {
        out.push_str("no failed jobs\n");
    }
    Ok(out)
}
