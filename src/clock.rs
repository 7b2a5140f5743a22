//! The current time, as every layer reads it: a parameter rather than a call, so that
//! tests can replay the spec's signed vectors at the instant they were made.

use std::sync::Arc;

/// A source of the current time in Unix milliseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| chrono::Utc::now().timestamp_millis())
}
