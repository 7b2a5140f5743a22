//! `koogate orders …`: what koogate knows of an order (its lines, instances and jobs),
//! and what the marketplace says of it now.

use crate::app::ops;
use crate::domain::instance::Instance;
use crate::marketplace::Client;
use crate::protocol::order::OrderInfo;
use crate::protocol::time;
use crate::store::{Job, OrderLineRecord, Store, StoreResult};
use std::fmt::Write;

/// The report `koogate orders show ORDER_ID` prints; `None` when koogate has never heard
/// of the order.
pub async fn show(store: &dyn Store, order_id: &str) -> StoreResult<Option<String>> {
    let Some(report) = ops::order(store, order_id).await? else {
        return Ok(None);
    };
    let mut out = format!("order {order_id}\n");
    section(&mut out, "lines", &report.lines, line);
    section(&mut out, "instances", &report.instances, instance);
    section(&mut out, "jobs", &report.jobs, job);
    Ok(Some(out))
}

/// What `koogate orders fetch` prints: the marketplace's answer, as pretty JSON.
#[expect(
    clippy::expect_used,
    reason = "query_order returns only answers it parsed as JSON"
)]
pub async fn fetch(
    client: &Client,
    order_id: &str,
    order_line_id: Option<&str>,
) -> Result<String, crate::marketplace::MarketError> {
    let answer = client.query_order(order_id, order_line_id).await?;
    let json: serde_json::Value =
        serde_json::from_slice(&answer.body).expect("query_order only returns JSON answers");
    Ok(serde_json::to_string_pretty(&json).expect("JSON values serialise"))
}

fn section<T>(out: &mut String, title: &str, items: &[T], write: fn(&mut String, &T)) {
    let _ = writeln!(out, "{title}:");
    if items.is_empty() {
        out.push_str("  (none)\n");
    }
    for item in items {
        write(out, item);
    }
}

fn line(out: &mut String, line: &OrderLineRecord) {
    let _ = writeln!(
        out,
        "  {}  first named by {} at {}{}",
        line.order_line_id,
        line.source,
        at(line.created_ms),
        if line.test { " (test)" } else { "" }
    );
    let info = line
        .order_info
        .as_deref()
        .and_then(|json| serde_json::from_str::<OrderInfo>(json).ok());
    match (line.fetched_ms, info) {
        (Some(fetched), Some(order)) => {
            let _ = writeln!(
                out,
                "    fetched at {}: {}",
                at(fetched),
                summary(&order, &line.order_line_id)
            );
        }
        (Some(fetched), None) => {
            let _ = writeln!(
                out,
                "    fetched at {}, but the stored answer cannot be read",
                at(fetched)
            );
        }
        (None, _) => out.push_str("    not fetched yet\n"),
    }
}

fn summary(order: &OrderInfo, line_id: &str) -> String {
    let mut parts = vec![format!("order type {}", text(order.order_type.as_deref()))];
    if let Some(line) = order.line(Some(line_id)) {
        let product = line.product_info.first();
        parts.push(format!(
            "product {} sku {} linear value {}",
            text(product.and_then(|p| p.product_id.as_deref())),
            text(product.and_then(|p| p.sku_code.as_deref())),
            text(product.and_then(|p| p.linear_value.as_deref())),
        ));
        parts.push(charging(
            line.charging_mode.as_deref(),
            line.period_type.as_deref(),
            line.period_number,
        ));
        if let Some(expire) = line.expire_time.as_deref() {
            let shown = time::parse_compact(expire)
                .map_or_else(|| expire.to_owned(), |t| at(t.timestamp_millis()));
            parts.push(format!("expires {shown}"));
        }
    }
    if let Some(buyer) = &order.buyer_info {
        parts.push(format!(
            "buyer {} ({})",
            text(buyer.customer_name.as_deref()),
            text(buyer.customer_id.as_deref())
        ));
    }
    parts.join(", ")
}

fn instance(out: &mut String, i: &Instance) {
    let _ = writeln!(
        out,
        "  {}  line {}  {}{}",
        i.id,
        text(i.order_line_id.as_deref()),
        i.state.as_str(),
        if i.test { " (test)" } else { "" },
    );
    let _ = writeln!(
        out,
        "    product {} sku {} linear value {}, {}, expires {}, buyer {} ({})",
        text(i.product_id.as_deref()),
        text(i.sku_code.as_deref()),
        text(i.linear_value.as_deref()),
        charging(
            i.charging_mode.as_deref(),
            i.period_type.as_deref(),
            i.period_number
        ),
        i.expire_ms.map_or("-".into(), at),
        text(i.customer_name.as_deref()),
        text(i.customer_id.as_deref()),
    );
}

pub(super) fn job(out: &mut String, job: &Job) {
    let _ = writeln!(
        out,
        "  #{} {}  {}  attempts {}  {}",
        job.id,
        job.kind,
        job.state.as_str(),
        job.attempts,
        match job.state {
            crate::store::JobState::Pending => format!("next attempt at {}", at(job.run_at_ms)),
            crate::store::JobState::Waiting => "behind an earlier job of its lane".to_owned(),
            crate::store::JobState::Running =>
                format!("held until {}", job.lease_until_ms.map_or("-".into(), at)),
            _ => format!("since {}", at(job.updated_ms)),
        }
    );
    if let Some(error) = &job.last_error {
        let _ = writeln!(out, "    last error: {error}");
    }
}

/// `PERIOD month×3`, or the charging mode alone when there is no period.
fn charging(mode: Option<&str>, period_type: Option<&str>, period_number: Option<i64>) -> String {
    match (period_type, period_number) {
        (Some(kind), Some(n)) => format!("{} {kind}×{n}", text(mode)),
        (Some(kind), None) => format!("{} {kind}", text(mode)),
        _ => text(mode).to_owned(),
    }
}

fn text(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// A Unix-millisecond time as UTC, to the second.
fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    )
}
