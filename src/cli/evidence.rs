//! `koogate evidence ORDER_ID [--out FILE]`: the evidence of an order as one
//! self-contained HTML file — no external assets, readable offline and printable — for a
//! 服务监管 appeal. Everything in it came from outside (ids, bodies, the app's answers)
//! and is escaped by the template.

use crate::app::evidence::{self, Evidence, LicenseEvidence};
use crate::domain::events::{rfc3339, state_name};
use crate::protocol::license_upload::Content;
use crate::store::Store;
use askama::Template;

#[derive(Template)]
#[template(path = "evidence.html")]
struct Page {
    order_id: String,
    version: &'static str,
    generated: String,
    lines: Vec<Line>,
    instances: Vec<InstanceRow>,
    callbacks: Vec<Callback>,
    events: Vec<Event>,
    activations: Vec<Activation>,
    license_requests: Vec<LicenseRow>,
}

struct LicenseRow {
    event_id: String,
    instance_id: String,
    test: bool,
    created: String,
    fingerprint: String,
    state: &'static str,
    error: String,
    delivered: String,
    /// What the License is (its bytes are the application's, so only their hash is shown).
    license: String,
    license_sha256: String,
    uploads: Vec<UploadRow>,
}

struct UploadRow {
    at: String,
    status: String,
    code: String,
    duration_ms: i64,
    message: String,
}

struct Line {
    id: String,
    source: String,
    created: String,
    test: bool,
    fetched: String,
}

struct InstanceRow {
    id: String,
    line: String,
    state: &'static str,
    test: bool,
    created: String,
    released: String,
}

struct Callback {
    received: String,
    interface: String,
    activity: String,
    method: String,
    test: bool,
    request_id: String,
    verdict: String,
    query: String,
    body: String,
    body_hex: bool,
    body_sha256: String,
    http_status: u16,
    result_code: String,
    duration_ms: String,
    answer: String,
    answer_hex: bool,
    answer_sha256: String,
}

struct Event {
    kind: String,
    sequence: i64,
    subject: String,
    event_id: String,
    test: bool,
    created: String,
    body: String,
    body_sha256: String,
    attempts: Vec<AttemptRow>,
}

struct AttemptRow {
    at: String,
    status: String,
    duration_ms: i64,
    error: String,
}

struct Activation {
    code: String,
    state: &'static str,
    activated: String,
    started: String,
    completed: String,
}

/// The bytes as text when they are UTF-8 (they always are for JSON), otherwise as hex,
/// so that what is shown is always exactly what was received; `true` for hex.
fn shown(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), false),
        Err(_) => (hex::encode(bytes), true),
    }
}

fn time(ms: Option<i64>) -> String {
    ms.map(rfc3339).unwrap_or_else(|| "—".into())
}

fn license_row(l: &LicenseEvidence) -> LicenseRow {
    let r = &l.request;
    LicenseRow {
        event_id: r.event_id.clone(),
        instance_id: r.instance_id.clone(),
        test: r.test,
        created: rfc3339(r.created_ms),
        fingerprint: r.device_fingerprint.clone().unwrap_or_else(|| "—".into()),
        state: r.state.as_str(),
        error: r.error.clone().unwrap_or_default(),
        delivered: time(r.delivered_ms),
        license: r.license.as_ref().map_or_else(
            || "not known yet".into(),
            |license| match &license.content {
                Content::Characters(text) => {
                    format!("characters ({} bytes), from {}", text.len(), license.source)
                }
                Content::File { name, bytes } => {
                    format!(
                        "file {name} ({} bytes), from {}",
                        bytes.len(),
                        license.source
                    )
                }
            },
        ),
        license_sha256: l.license_sha256.clone().unwrap_or_else(|| "—".into()),
        uploads: l
            .uploads
            .iter()
            .map(|u| UploadRow {
                at: rfc3339(u.attempted_ms),
                status: u
                    .status
                    .map_or_else(|| "no answer".into(), |s| s.to_string()),
                code: u.code.clone().unwrap_or_else(|| "—".into()),
                duration_ms: u.duration_ms,
                message: u
                    .error
                    .clone()
                    .or_else(|| u.message.clone())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

/// The page of `evidence`, generated at `now_ms`.
pub fn render(evidence: &Evidence, now_ms: i64) -> Result<String, askama::Error> {
    let page = Page {
        order_id: evidence.order_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        generated: rfc3339(now_ms),
        lines: evidence
            .lines
            .iter()
            .map(|l| Line {
                id: l.order_line_id.clone(),
                source: l.source.clone(),
                created: rfc3339(l.created_ms),
                test: l.test,
                fetched: time(l.fetched_ms),
            })
            .collect(),
        instances: evidence
            .instances
            .iter()
            .map(|i| InstanceRow {
                id: i.id.clone(),
                line: i.order_line_id.clone().unwrap_or_else(|| "—".into()),
                state: state_name(i),
                test: i.test,
                created: rfc3339(i.created_ms),
                released: time(i.released_ms),
            })
            .collect(),
        callbacks: evidence
            .callbacks
            .iter()
            .map(|c| {
                let r = &c.record;
                let (body, body_hex) = shown(&r.raw_body);
                let (answer, answer_hex) = shown(&r.response_body);
                Callback {
                    received: rfc3339(r.received_ms),
                    interface: r.interface.clone(),
                    activity: r.activity.clone().unwrap_or_else(|| "(not parsed)".into()),
                    method: r.method.clone(),
                    test: r.test,
                    request_id: r.request_id.clone(),
                    verdict: r.verdict.clone(),
                    query: r.raw_query.clone(),
                    body,
                    body_hex,
                    body_sha256: c.body_sha256.clone(),
                    http_status: r.http_status,
                    result_code: r.result_code.clone().unwrap_or_else(|| "—".into()),
                    duration_ms: format!("{:.1}", r.duration_us as f64 / 1000.0),
                    answer,
                    answer_hex,
                    answer_sha256: c.answer_sha256.clone(),
                }
            })
            .collect(),
        events: evidence
            .events
            .iter()
            .map(|e| Event {
                kind: e.event.kind.clone(),
                sequence: e.event.sequence,
                subject: e.event.subject.clone(),
                event_id: e.event.event_id.clone(),
                test: e.event.test,
                created: rfc3339(e.event.created_ms),
                body: shown(&e.body).0,
                body_sha256: e.body_sha256.clone(),
                attempts: e
                    .attempts
                    .iter()
                    .map(|a| AttemptRow {
                        at: rfc3339(a.attempted_ms),
                        status: a
                            .status
                            .map_or_else(|| "no answer".into(), |s| s.to_string()),
                        duration_ms: a.duration_ms,
                        error: a.error.clone().unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        activations: evidence
            .activations
            .iter()
            .map(|a| Activation {
                code: a.code.license.clone(),
                state: a.code.state.as_str(),
                activated: rfc3339(a.code.activated_ms),
                started: time(a.started_ms),
                completed: time(a.completed_ms),
            })
            .collect(),
        license_requests: evidence.license_requests.iter().map(license_row).collect(),
    };
    page.render()
}

/// The evidence page of `order_id`, or why there is none.
pub async fn page(
    store: &dyn Store,
    order_id: &str,
    now_ms: i64,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let evidence = evidence::gather(store, order_id)
        .await?
        .ok_or_else(|| format!("no order {order_id} is known here"))?;
    Ok(render(&evidence, now_ms)?)
}
