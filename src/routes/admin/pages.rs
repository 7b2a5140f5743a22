//! The admin pages and their buttons. Each reads or acts through `app::ops`, the layer
//! the CLI uses too, and renders an askama template under `templates/admin/`; askama
//! escapes every value, and nothing from outside is ever marked safe.

use super::{mask, render};
use crate::app::AppState;
use crate::app::ops::{self, Item, Retried};
use crate::domain::events::{rfc3339, state_name};
use crate::domain::instance::Instance;
use crate::store::{Job, JobState, STATE_FILTERS, Search, StoreError};
use askama::Template;
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use super::session::Session;

/// Rows per page of the lists.
const PAGE: u32 = 50;

/// The families the lists filter on.
const FAMILIES: [&str; 2] = ["saas_v2", "saas_v1"];

/// A failure to read the store: logged once, answered without detail.
fn unavailable(error: StoreError) -> Response {
    tracing::warn!(%error, "admin: cannot read the database");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the database cannot be read\n",
    )
        .into_response()
}

fn not_found(what: &str) -> Response {
    (StatusCode::NOT_FOUND, format!("no such {what}\n")).into_response()
}

fn now(state: &AppState) -> i64 {
    (state.services.clock)()
}

/// A time to the second, UTC.
fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
    )
}

/// A value as one percent-encoded path segment (ids come from outside: a `/` or a `?`
/// in one must not change the path).
fn segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A span as hours and minutes (`2h 05m`), or minutes and seconds under an hour.
fn span(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    if secs >= 3600 {
        format!("{}h {:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}m {:02}s", secs / 60, secs % 60)
    }
}

// ---- overview ------------------------------------------------------------------

struct CountRow {
    family: String,
    code: String,
    count: i64,
}

struct DialRow {
    family: String,
    last: String,
    /// `ok`, `late` (no success for 13 hours: the alert fires) or `never`.
    health: &'static str,
}

struct RiskRow {
    order_id: String,
    first_failed: String,
    failures: i64,
    left: String,
}

struct JobRow {
    id: i64,
    kind: String,
    subject: Option<String>,
    attempts: i64,
    error: String,
    since: String,
    /// Where its button posts: a delivery is resent by its event, any other job retried.
    retry_url: String,
    retry_label: &'static str,
}

struct WindowRow {
    instance_id: String,
    window: String,
    deadline: String,
    left: String,
    state: String,
    late: bool,
}

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    csrf: String,
    counts: Vec<CountRow>,
    total: i64,
    dial: Vec<DialRow>,
    risks: Vec<RiskRow>,
    jobs: Vec<JobRow>,
    paused: Option<String>,
    windows: Vec<WindowRow>,
    refused: Vec<RefusedRow>,
}

struct RefusedRow {
    id: i64,
    received: String,
    family: String,
    verdict: String,
    code: String,
}

/// A dial test is late when no test callback has succeeded for this long (the alert
/// rule's threshold, well before KooGallery's 5 days).
const DIAL_LATE_MS: i64 = 13 * 3_600_000;

fn job_row(job: &Job) -> JobRow {
    let (retry_url, retry_label) = match &job.dedup_key {
        Some(event) if job.kind == crate::domain::events::DELIVER_KIND => {
            (format!("/admin/events/{}/retry", segment(event)), "Resend")
        }
        _ => (format!("/admin/jobs/{}/retry", job.id), "Retry"),
    };
    JobRow {
        id: job.id,
        kind: job.kind.clone(),
        subject: job.subject.clone(),
        attempts: job.attempts,
        error: job.last_error.clone().unwrap_or_default(),
        since: at(job.updated_ms),
        retry_url,
        retry_label,
    }
}

pub async fn overview(State(state): State<AppState>, Extension(s): Extension<Session>) -> Response {
    let now_ms = now(&state);
    let overview = match ops::overview(state.services.store.as_ref(), now_ms).await {
        Ok(overview) => overview,
        Err(error) => return unavailable(error),
    };
    render(&OverviewPage {
        csrf: s.csrf,
        total: overview.callbacks.iter().map(|c| c.count).sum(),
        counts: overview
            .callbacks
            .iter()
            .map(|c| CountRow {
                family: c.interface.clone(),
                code: c.result_code.clone().unwrap_or_else(|| "refused".into()),
                count: c.count,
            })
            .collect(),
        dial: overview
            .dial_tests
            .iter()
            .map(|d| DialRow {
                family: d.family.clone(),
                last: d.last_success_ms.map_or_else(|| "never".into(), at),
                health: match d.last_success_ms {
                    None => "never",
                    Some(ms) if now_ms - ms > DIAL_LATE_MS => "late",
                    Some(_) => "ok",
                },
            })
            .collect(),
        risks: overview
            .at_risk
            .iter()
            .map(|r| RiskRow {
                order_id: r.order_id.clone(),
                first_failed: at(r.first_failed_ms),
                failures: r.failures,
                left: span(r.first_failed_ms + ops::REFUND_AFTER_MS - now_ms),
            })
            .collect(),
        jobs: overview.failed_jobs.iter().map(job_row).collect(),
        paused: overview
            .pause
            .map(|p| format!("since {}: {}", at(p.paused_ms), p.reason)),
        windows: overview
            .usage
            .iter()
            .map(|w| WindowRow {
                instance_id: w.window.instance_id.clone(),
                window: format!("{} – {}", at(w.window.begin_ms), at(w.window.end_ms)),
                deadline: at(w.deadline_ms),
                left: span(w.deadline_ms - now_ms),
                state: w.window.state.clone(),
                late: w.deadline_ms - now_ms < ops::USAGE_WARNING_MS,
            })
            .collect(),
        refused: overview
            .refused
            .into_iter()
            .map(|c| RefusedRow {
                id: c.id,
                received: at(c.record.received_ms),
                family: c.record.interface,
                verdict: c.record.verdict,
                code: c.record.result_code.unwrap_or_else(|| "—".into()),
            })
            .collect(),
    })
}

// ---- lists ---------------------------------------------------------------------

/// What the list pages are asked for.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    family: String,
    #[serde(default)]
    page: u32,
}

impl ListQuery {
    /// The store's search, one row more than a page to know whether another follows.
    /// An unknown state or family is ignored rather than refused: the select offers
    /// only known ones, and a page is better than an error.
    fn search(&self) -> Search {
        let known = |value: &str, names: &[&str]| {
            names
                .contains(&value)
                .then(|| value.to_owned())
                .filter(|v| !v.is_empty())
        };
        let states: Vec<&str> = STATE_FILTERS.iter().map(|(name, _)| *name).collect();
        Search {
            text: Some(self.q.clone()).filter(|q| !q.trim().is_empty()),
            state: known(&self.state, &states),
            family: known(&self.family, &FAMILIES),
            offset: self.page.saturating_mul(PAGE),
            limit: PAGE + 1,
        }
    }

    /// The query string of another page of the same search.
    fn page_link(&self, page: u32) -> String {
        form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &self.q)
            .append_pair("state", &self.state)
            .append_pair("family", &self.family)
            .append_pair("page", &page.to_string())
            .finish()
    }
}

/// The search form and the pagination the two lists share.
struct Filters {
    q: String,
    state: String,
    family: String,
    states: Vec<&'static str>,
    families: [&'static str; 2],
    previous: Option<String>,
    next: Option<String>,
}

fn filters(query: &ListQuery, more: bool) -> Filters {
    Filters {
        q: query.q.clone(),
        state: query.state.clone(),
        family: query.family.clone(),
        states: STATE_FILTERS.iter().map(|(name, _)| *name).collect(),
        families: FAMILIES,
        previous: (query.page > 0).then(|| query.page_link(query.page - 1)),
        next: more.then(|| query.page_link(query.page + 1)),
    }
}

struct InstanceRow {
    id: String,
    order_id: String,
    family: &'static str,
    state: &'static str,
    customer: String,
    created: String,
    test: bool,
}

fn instance_row(i: &Instance) -> InstanceRow {
    InstanceRow {
        id: i.id.clone(),
        order_id: i.order_id.clone(),
        family: i.family.as_str(),
        state: state_name(i),
        customer: format!(
            "{} ({})",
            mask::name(i.customer_name.as_deref()),
            i.customer_id.as_deref().unwrap_or("—")
        ),
        created: at(i.created_ms),
        test: i.test,
    }
}

#[derive(Template)]
#[template(path = "admin/instances.html")]
struct InstancesPage {
    csrf: String,
    filters: Filters,
    rows: Vec<InstanceRow>,
}

pub async fn instances(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Response {
    let mut found = match state.services.store.search_instances(&query.search()).await {
        Ok(found) => found,
        Err(error) => return unavailable(error),
    };
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    render(&InstancesPage {
        csrf: s.csrf,
        filters: filters(&query, more),
        rows: found.iter().map(instance_row).collect(),
    })
}

struct OrderRow {
    order_id: String,
    first: String,
    instances: i64,
}

#[derive(Template)]
#[template(path = "admin/orders.html")]
struct OrdersPage {
    csrf: String,
    filters: Filters,
    rows: Vec<OrderRow>,
}

pub async fn orders(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Response {
    let mut found = match state.services.store.search_orders(&query.search()).await {
        Ok(found) => found,
        Err(error) => return unavailable(error),
    };
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    render(&OrdersPage {
        csrf: s.csrf,
        filters: filters(&query, more),
        rows: found
            .into_iter()
            .map(|o| OrderRow {
                order_id: o.order_id,
                first: at(o.first_ms),
                instances: o.instances,
            })
            .collect(),
    })
}

// ---- timeline ------------------------------------------------------------------

/// One line of a timeline.
struct Entry {
    at: String,
    /// The CSS class: `callback`, `refused`, `event`, `job`, `fetch`, `license`, `usage`,
    /// `code`.
    class: &'static str,
    title: String,
    facts: Vec<(&'static str, String)>,
    /// A callback's detail page.
    link: Option<String>,
    /// A body shown folded, masked.
    body: Option<String>,
    retry: Option<i64>,
}

fn entry(item: &Item) -> Entry {
    let mut e = Entry {
        at: at(item.at_ms()),
        class: "event",
        title: String::new(),
        facts: Vec::new(),
        link: None,
        body: None,
        retry: None,
    };
    match item {
        Item::Callback(c) => {
            let r = &c.record;
            // Refused: by its signature, or answered with anything but success or
            // "processing".
            let accepted = r.verdict.starts_with("ok")
                && matches!(r.result_code.as_deref(), Some("000000" | "000004"));
            e.class = if accepted { "callback" } else { "refused" };
            e.title = format!(
                "{} {} → {}",
                r.interface,
                r.activity.as_deref().unwrap_or("(not parsed)"),
                r.result_code.as_deref().unwrap_or("no code")
            );
            e.facts = vec![
                ("verdict", r.verdict.clone()),
                ("HTTP", r.http_status.to_string()),
                ("took", format!("{:.1} ms", r.duration_us as f64 / 1000.0)),
                ("answer", mask::body(&r.response_body)),
            ];
            if r.test {
                e.facts.push(("test", "yes".into()));
            }
            e.link = Some(format!("/admin/callbacks/{}", c.id));
        }
        Item::Event(ev) => {
            e.title = format!(
                "{} #{} of {}",
                ev.event.kind, ev.event.sequence, ev.event.subject
            );
            e.facts.push(("event", ev.event.event_id.clone()));
            if ev.attempts.is_empty() {
                e.facts.push(("delivered", "no attempt yet".into()));
            }
            for a in &ev.attempts {
                e.facts.push((
                    "attempt",
                    format!(
                        "{}: {} in {} ms{}",
                        at(a.attempted_ms),
                        a.status
                            .map_or_else(|| "no answer".into(), |s| format!("HTTP {s}")),
                        a.duration_ms,
                        a.error
                            .as_deref()
                            .map(|err| format!(" ({err})"))
                            .unwrap_or_default()
                    ),
                ));
            }
            e.body = Some(mask::body(&ev.body));
        }
        Item::Job(job) => {
            e.class = "job";
            e.title = format!("job #{} {} {}", job.id, job.kind, job.state.as_str());
            e.facts = vec![
                ("attempts", job.attempts.to_string()),
                ("updated", at(job.updated_ms)),
            ];
            if let Some(error) = &job.last_error {
                e.facts.push(("last error", error.clone()));
            }
            e.retry = (job.state == JobState::Failed).then_some(job.id);
        }
        Item::Fetched(line) => {
            e.class = "fetch";
            e.title = format!("查询订单 answered for line {}", line.order_line_id);
            e.body = line
                .order_info
                .as_deref()
                .map(|info| mask::body(info.as_bytes()));
        }
        Item::License(l) => {
            let r = &l.request;
            e.class = "license";
            e.title = format!("License application {} ({})", r.event_id, r.state.as_str());
            e.facts.push(("instance", r.instance_id.clone()));
            if let Some(sha) = &l.license_sha256 {
                e.facts.push(("License SHA-256", sha.clone()));
            }
            if let Some(error) = &r.error {
                e.facts.push(("error", error.clone()));
            }
            for u in &l.uploads {
                e.facts.push((
                    "upload",
                    format!(
                        "{}: {} {} in {} ms{}",
                        at(u.attempted_ms),
                        u.status
                            .map_or_else(|| "no answer".into(), |s| format!("HTTP {s}")),
                        u.code.as_deref().unwrap_or(""),
                        u.duration_ms,
                        u.error
                            .as_deref()
                            .map(|err| format!(" ({err})"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        Item::Usage(w) => {
            e.class = "usage";
            e.title = format!("usage window of {} ({})", w.instance_id, w.state);
            e.facts = vec![
                ("window", format!("{} – {}", at(w.begin_ms), at(w.end_ms))),
                (
                    "total",
                    format!("{} ({} records)", w.total as f64 / 10_000.0, w.records),
                ),
            ];
            if let Some(code) = &w.code {
                e.facts.push(("push answer", code.clone()));
            }
        }
        Item::Activation(a) => {
            e.class = "code";
            e.title = format!("license code {} {}", a.code.license, a.code.state.as_str());
        }
    }
    e
}

struct LineRow {
    id: String,
    source: String,
    fetched: String,
}

#[derive(Template)]
#[template(path = "admin/order.html")]
struct OrderPage {
    csrf: String,
    order_id: String,
    refetch_url: String,
    lines: Vec<LineRow>,
    instances: Vec<InstanceRow>,
    entries: Vec<Entry>,
}

pub async fn order(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(order_id): Path<String>,
) -> Response {
    let timeline = match ops::timeline(state.services.store.as_ref(), &order_id).await {
        Ok(Some(timeline)) => timeline,
        Ok(None) => return not_found("order"),
        Err(error) => return unavailable(error),
    };
    render(&OrderPage {
        csrf: s.csrf,
        refetch_url: format!("/admin/orders/{}/refetch", segment(&order_id)),
        order_id,
        lines: timeline
            .evidence
            .lines
            .iter()
            .map(|l| LineRow {
                id: l.order_line_id.clone(),
                source: l.source.clone(),
                fetched: l.fetched_ms.map_or_else(|| "not yet".into(), at),
            })
            .collect(),
        instances: timeline
            .evidence
            .instances
            .iter()
            .map(instance_row)
            .collect(),
        entries: timeline.items.iter().map(entry).collect(),
    })
}

#[derive(Template)]
#[template(path = "admin/instance.html")]
struct InstancePage {
    csrf: String,
    row: InstanceRow,
    facts: Vec<(&'static str, String)>,
    app_info: Vec<(&'static str, String)>,
    details: String,
    entries: Vec<Entry>,
}

pub async fn instance(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let store = state.services.store.as_ref();
    let instance = match store.instance(&id).await {
        Ok(Some(instance)) => instance,
        Ok(None) => return not_found("instance"),
        Err(error) => return unavailable(error),
    };
    let entries = match ops::timeline(store, &instance.order_id).await {
        Ok(timeline) => timeline.map(|t| t.items).unwrap_or_default(),
        Err(error) => return unavailable(error),
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let facts = vec![
        ("order line", text(&instance.order_line_id)),
        ("product", text(&instance.product_id)),
        ("SKU", text(&instance.sku_code)),
        ("charging", text(&instance.charging_mode)),
        ("linear value", text(&instance.linear_value)),
        ("expires", instance.expire_ms.map_or_else(|| "—".into(), at)),
        ("last order", text(&instance.last_order_id)),
        (
            "provisioning error",
            instance.provisioning_error.as_ref().map_or_else(
                || "—".into(),
                |e| format!("{}: {}", e.result_code, e.message),
            ),
        ),
    ];
    let app_info = instance.app_info.as_ref().map_or_else(Vec::new, |info| {
        vec![
            ("frontEndUrl", info.front_end_url.clone()),
            ("adminUrl", text(&info.admin_url)),
            (
                "userName",
                info.user_name
                    .as_deref()
                    .map_or_else(|| "—".into(), |u| mask::mask_value("userName", u)),
            ),
            (
                "password",
                info.password
                    .as_deref()
                    .map_or_else(|| "—".into(), |p| mask::mask_value("password", p)),
            ),
        ]
    });
    render(&InstancePage {
        csrf: s.csrf,
        row: instance_row(&instance),
        facts,
        app_info,
        details: mask::object(&instance.details),
        entries: entries
            .iter()
            .filter(|item| about_instance(item, &instance.id))
            .map(entry)
            .collect(),
    })
}

/// Whether a timeline item of the order concerns this instance (or the whole order).
fn about_instance(item: &Item, id: &str) -> bool {
    match item {
        Item::Callback(c) => c.record.instance_id.as_deref().is_none_or(|i| i == id),
        Item::Event(e) => {
            !e.event.subject.starts_with("instance:") || e.event.subject == format!("instance:{id}")
        }
        Item::License(l) => l.request.instance_id == id,
        Item::Usage(w) => w.instance_id == id,
        Item::Job(_) | Item::Fetched(_) | Item::Activation(_) => true,
    }
}

#[derive(Template)]
#[template(path = "admin/callback.html")]
struct CallbackPage {
    csrf: String,
    id: i64,
    received: String,
    interface: String,
    activity: String,
    method: String,
    request_id: String,
    verdict: String,
    accepted: bool,
    order_id: Option<String>,
    instance_id: Option<String>,
    query: String,
    body: String,
    body_sha256: String,
    http_status: u16,
    result_code: String,
    duration: String,
    answer: String,
    answer_sha256: String,
    body_sign: String,
}

pub async fn callback(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
) -> Response {
    let stored = match state.services.store.callback(id).await {
        Ok(Some(stored)) => stored,
        Ok(None) => return not_found("callback"),
        Err(error) => return unavailable(error),
    };
    let r = stored.record;
    let keys = match r.interface.as_str() {
        "license_code" => &state.keys.license_code,
        "order_notify" => &state.keys.order_notify,
        _ => &state.keys.saas,
    };
    // The header is not stored; it is a function of the key and the exact bytes, which the
    // audit copy still is unless credentials were redacted from it.
    let exact = crate::protocol::crypto::sha256_hex(&r.response_body) == r.response_sha256;
    let body_sign = match keys.primary() {
        None => "not signed (no key for this family)".into(),
        Some(_) if !exact => "not shown: it was computed over the exact answer, whose credentials \
            this copy has redacted"
            .into(),
        Some(key) => crate::protocol::signature::body_sign(key.expose_secret(), &r.response_body),
    };
    render(&CallbackPage {
        csrf: s.csrf,
        id,
        received: rfc3339(r.received_ms),
        interface: r.interface,
        activity: r.activity.unwrap_or_else(|| "(not parsed)".into()),
        method: r.method,
        request_id: r.request_id,
        accepted: r.verdict.starts_with("ok"),
        verdict: r.verdict,
        order_id: r.order_id,
        instance_id: r.instance_id,
        query: mask::query(&r.raw_query),
        body: mask::body(&r.raw_body),
        body_sha256: crate::protocol::crypto::sha256_hex(&r.raw_body),
        http_status: r.http_status,
        result_code: r.result_code.unwrap_or_else(|| "—".into()),
        duration: format!("{:.1} ms", r.duration_us as f64 / 1000.0),
        answer: mask::body(&r.response_body),
        answer_sha256: r.response_sha256,
        body_sign,
    })
}

pub async fn evidence(State(state): State<AppState>, Path(order_id): Path<String>) -> Response {
    match crate::cli::evidence::page(state.services.store.as_ref(), &order_id, now(&state)).await {
        Ok(html) => {
            let name = format!(
                "attachment; filename=\"evidence-{}.html\"",
                order_id
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
            );
            (
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8".to_owned()),
                    (header::CONTENT_DISPOSITION, name),
                ],
                html,
            )
                .into_response()
        }
        Err(error) => (StatusCode::NOT_FOUND, format!("{error}\n")).into_response(),
    }
}

// ---- buttons -------------------------------------------------------------------

/// What a button did, as the fragment htmx swaps in for it.
#[derive(Template)]
#[template(path = "admin/done.html")]
struct Done {
    message: String,
}

/// What a button did, as a page (a form posted without script).
#[derive(Template)]
#[template(path = "admin/done_page.html")]
struct DonePage {
    csrf: String,
    message: String,
}

fn done(headers: &HeaderMap, session: Session, message: String) -> Response {
    if super::htmx_request(headers) {
        render(&Done { message })
    } else {
        render(&DonePage {
            csrf: session.csrf,
            message,
        })
    }
}

/// Wakes this replica's worker, so that what was queued runs now rather than at the
/// next poll.
fn wake(state: &AppState) {
    state.services.wake_jobs.notify_one();
}

fn outcome(state: &AppState, what: String, retried: Retried) -> String {
    if retried == Retried::Queued {
        wake(state);
    }
    format!("{what}: {}", retried.describe())
}

pub async fn retry_job(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    match ops::retry_job(state.services.store.as_ref(), id, now(&state)).await {
        Ok(retried) => done(&headers, s, outcome(&state, format!("job #{id}"), retried)),
        Err(error) => unavailable(error),
    }
}

pub async fn retry_event(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match ops::retry_event(state.services.store.as_ref(), &id, now(&state)).await {
        Ok(retried) => done(&headers, s, outcome(&state, format!("event {id}"), retried)),
        Err(error) => unavailable(error),
    }
}

pub async fn retry_all_jobs(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    match ops::retry_all(state.services.store.as_ref(), None, now(&state)).await {
        Ok(n) => {
            wake(&state);
            done(&headers, s, format!("{n} failed jobs queued again"))
        }
        Err(error) => unavailable(error),
    }
}

pub async fn retry_all_events(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    match ops::retry_all_events(state.services.store.as_ref(), now(&state)).await {
        Ok(n) => {
            wake(&state);
            done(&headers, s, format!("{n} parked deliveries queued again"))
        }
        Err(error) => unavailable(error),
    }
}

pub async fn resume(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    match ops::resume_endpoint(state.services.store.as_ref(), now(&state)).await {
        Ok((paused, n)) => {
            wake(&state);
            let resumed = if paused { "endpoint resumed; " } else { "" };
            done(&headers, s, format!("{resumed}{n} deliveries due now"))
        }
        Err(error) => unavailable(error),
    }
}

pub async fn refetch(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    headers: HeaderMap,
    Path(order_id): Path<String>,
) -> Response {
    match ops::refetch_order(state.services.store.as_ref(), &order_id, now(&state)).await {
        Ok(0) => done(
            &headers,
            s,
            format!("order {order_id}: no order line known, nothing to fetch"),
        ),
        Ok(n) => {
            wake(&state);
            done(&headers, s, format!("order {order_id}: {n} fetches queued"))
        }
        Err(error) => unavailable(error),
    }
}
