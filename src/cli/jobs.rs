//! `koogate jobs`: the background jobs parked as failed, and putting them back in the
//! queue once their cause is fixed (AK/SK configured, marketplace reachable again).

use super::orders;
use crate::app::ops;
use crate::store::{Store, StoreResult};
use std::fmt::Write;

/// The jobs parked as failed, with their last error.
pub async fn failed(store: &dyn Store) -> StoreResult<String> {
    let jobs = ops::failed_jobs(store).await?;
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
        return Ok(match ops::retry_all(store, None, now_ms).await? {
            0 => "no failed jobs\n".into(),
            n => format!("{n} failed jobs queued again\n"),
        });
    }
    let mut out = String::new();
    for &id in ids {
        let outcome = match ops::retry_job(store, id, now_ms).await? {
            ops::Retried::NotParked => "not failed: left as it is",
            ops::Retried::Missing => "no such job",
            retried => retried.describe(),
        };
        let _ = writeln!(out, "#{id}  {outcome}");
    }
    if out.is_empty() {
        out.push_str("no failed jobs\n");
    }
    Ok(out)
}
