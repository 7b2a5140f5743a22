//! The session every scenario runs in (sending, checking, recording), the steps the families
//! share, and the dispatch to each family's scenarios.

mod license_code;
mod online_license;
mod order_notify;
mod saas_v1;
mod saas_v2;
mod signed;

use super::checks::{self, Answer, Credentials, Expect};
use super::client::{self, Exchange, Failure, Request};
use super::report::{Check, Exchanged, Report, ScenarioReport, Sink};
use super::{Interface, Options};
use reqwest::Url;
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// How many identical `newInstance` calls the idempotency scenario sends at the same moment.
pub const SIMULTANEOUS: usize = 20;

/// The run stopped: the address cannot be reached, so nothing further can be checked.
pub struct Stopped(String);

pub type Flow<T = ()> = Result<T, Stopped>;

pub async fn run(options: &Options, sink: &mut dyn Sink) -> Report {
    let mut report = Report {
        url: options.url.to_string(),
        interface: options.interface,
        test_flag: if options.real { "0" } else { "1" },
        notes: notes(&options.url),
        scenarios: Vec::new(),
        stopped: None,
        checks: 0,
        passed: 0,
        failed: 0,
    };
    sink.started(&report);
    match client::build(options.timeout) {
        Ok(client) => {
            let mut session = Session::new(options, client, sink);
            for &scenario in &options.scenarios {
                session.sink.scenario(scenario);
                let flow = match options.interface {
                    Interface::SaasV2 => saas_v2::run(&mut session, scenario).await,
                    Interface::SaasV1 => saas_v1::run(&mut session, scenario).await,
                    Interface::OrderNotify => order_notify::run(&mut session, scenario).await,
                    Interface::LicenseCode => license_code::run(&mut session, scenario).await,
                    Interface::License => online_license::run(&mut session, scenario).await,
                };
                report.scenarios.push(ScenarioReport {
                    scenario,
                    checks: std::mem::take(&mut session.checks),
                });
                if let Err(Stopped(reason)) = flow {
                    report.stopped = Some(reason);
                    break;
                }
            }
        }
        Err(error) => report.stopped = Some(format!("no HTTP client could be built: {error}")),
    }
    report.count();
    sink.finished(&report);
    report
}

/// What KooGallery would refuse about the address itself (spec §1).
fn notes(url: &Url) -> Vec<String> {
    let mut notes = Vec::new();
    if url.scheme() != "https" {
        notes.push(format!(
            "KooGallery calls only https:// production addresses (spec §1); this one is {}://",
            url.scheme()
        ));
    }
    let host = url.host_str().unwrap_or_default();
    if host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        notes.push("KooGallery calls domain names only, not IP addresses (spec §1)".to_owned());
    }
    notes
}

/// Sends requests, checks answers, and records each check as it completes.
pub struct Session<'a> {
    options: &'a Options,
    client: reqwest::Client,
    sink: &'a mut dyn Sink,
    checks: Vec<Check>,
    /// Makes this run's order ids unique, so runs against a real server can repeat.
    run_id: String,
    serial: u32,
}

impl<'a> Session<'a> {
    fn new(options: &'a Options, client: reqwest::Client, sink: &'a mut dyn Sink) -> Self {
        Self {
            options,
            client,
            sink,
            checks: Vec::new(),
            run_id: uuid::Uuid::new_v4().simple().to_string()[..10].to_uppercase(),
            serial: 0,
        }
    }

    pub fn key(&self) -> &str {
        self.options.key.expose_secret()
    }

    pub fn url(&self) -> &Url {
        &self.options.url
    }

    pub fn options(&self) -> &Options {
        self.options
    }

    /// `testFlag` for everything but the dial test.
    pub fn test_flag(&self) -> &'static str {
        if self.options.real { "0" } else { "1" }
    }

    /// A new order id, unique to this run, in KooGallery's style.
    pub fn fresh_order(&mut self) -> String {
        self.serial += 1;
        format!("CSSIM{}{:03}", self.run_id, self.serial)
    }

    /// A V2-signed POST of `body`, signed now with a fresh nonce.
    pub fn signed(&self, body: Vec<u8>) -> Request {
        Request::signed_post(self.url(), self.key(), body, now_ms())
    }

    /// Sends one request, printing it first when verbose.
    pub async fn send(&mut self, request: Request) -> Exchange {
        self.sink.request(&request.curl());
        client::send(&self.client, self.options.timeout, request).await
    }

    /// Sends all `requests` at the same moment; the exchanges come back in the same order.
    pub async fn send_together(&mut self, requests: Vec<Request>) -> Vec<Exchange> {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, request) in requests.into_iter().enumerate() {
            self.sink.request(&request.curl());
            let client = self.client.clone();
            let timeout = self.options.timeout;
            tasks.spawn(async move { (i, client::send(&client, timeout, request).await) });
        }
        let mut exchanges: Vec<(usize, Exchange)> = tasks.join_all().await.into_iter().collect();
        exchanges.sort_by_key(|(i, _)| *i);
        exchanges.into_iter().map(|(_, e)| e).collect()
    }

    pub fn inspect(&self, exchange: &Exchange, expect: &Expect) -> Answer {
        let credentials = match self.options.interface {
            Interface::SaasV1 => Credentials::Encrypted,
            _ => Credentials::PlainUnlessTyped,
        };
        checks::inspect(exchange, expect, self.key(), credentials)
    }

    /// Sends `request` and records whether its answer meets `expect`.
    pub async fn step(
        &mut self,
        name: impl Into<String>,
        request: Request,
        expect: Expect,
    ) -> Flow<Answer> {
        let exchange = self.send(request).await;
        let answer = self.inspect(&exchange, &expect);
        self.record(name, answer.problems.clone(), &[&exchange])?;
        Ok(answer)
    }

    /// Records one check; stops the run when an exchange could not reach the server.
    pub fn record(
        &mut self,
        name: impl Into<String>,
        problems: Vec<String>,
        exchanges: &[&Exchange],
    ) -> Flow {
        let passed = problems.is_empty();
        let slowest = exchanges
            .iter()
            .map(|e| e.elapsed)
            .max()
            .unwrap_or_default();
        let check = Check {
            name: name.into(),
            passed,
            problems,
            duration_ms: u64::try_from(slowest.as_millis()).unwrap_or(u64::MAX),
            slow: slowest > self.options.timeout / 2,
            exchanges: if passed {
                Vec::new()
            } else {
                exchanges.iter().map(|e| exchanged(e)).collect()
            },
        };
        self.sink.check(&check);
        self.checks.push(check);
        match exchanges.iter().find_map(|e| e.result.as_ref().err()) {
            Some(failure @ Failure::Unreachable(_)) => Err(Stopped(format!(
                "{}: {}",
                self.options.url,
                failure.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// Records a check that could not run because an earlier one failed.
    pub fn skipped(&mut self, name: impl Into<String>, why: &str) -> Flow {
        self.record(name, vec![format!("not run: {why}")], &[])
    }

    /// Sends `request` again and checks that its answer repeats `first`'s: the same
    /// instanceId, byte for byte the same body (D7).
    pub async fn repeat(
        &mut self,
        name: impl Into<String>,
        first: &Answer,
        request: Request,
        expect: Expect,
    ) -> Flow<Answer> {
        let exchange = self.send(request).await;
        let mut answer = self.inspect(&exchange, &expect);
        let differences = same_as_first(first, &answer);
        answer.problems.extend(differences);
        self.record(name, answer.problems.clone(), &[&exchange])?;
        Ok(answer)
    }

    /// Sends `requests` at the same moment and checks that every answer meets `expect` with one
    /// instanceId and byte-identical bodies.
    pub async fn simultaneous(
        &mut self,
        name: impl Into<String>,
        requests: Vec<Request>,
        expect: Expect,
    ) -> Flow {
        let exchanges = self.send_together(requests).await;
        let answers: Vec<Answer> = exchanges.iter().map(|e| self.inspect(e, &expect)).collect();
        let mut problems = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            for problem in &answer.problems {
                let problem = format!("call {}: {problem}", i + 1);
                if problems.len() < 5 {
                    problems.push(problem);
                }
            }
        }
        let mut ids: Vec<&str> = answers
            .iter()
            .filter_map(|a| a.instance_id.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 {
            problems.push(format!(
                "{} calls for one order got {} different instanceIds ({}): a second instance was \
                 created for a duplicate (spec §1: the same instanceId, never a second instance)",
                answers.len(),
                ids.len(),
                ids.join(", ")
            ));
        }
        let mut bodies: Vec<&[u8]> = answers.iter().filter_map(|a| a.body.as_deref()).collect();
        bodies.sort_unstable();
        bodies.dedup();
        if bodies.len() > 1 {
            problems.push(format!(
                "{} calls got {} different bodies: every duplicate must get the first answer byte \
                 for byte (D7)",
                answers.len(),
                bodies.len()
            ));
        }
        // The first exchange and the first that differs from it show the fault.
        let first_body = answers.first().and_then(|a| a.body.clone());
        let shown: Vec<&Exchange> = exchanges
            .iter()
            .zip(&answers)
            .enumerate()
            .filter(|(i, (_, a))| *i == 0 || a.body != first_body || !a.ok())
            .take(2)
            .map(|(_, (e, _))| e)
            .collect();
        self.record(name, problems, &shown)
    }
}

/// How `later` differs from `first`: another instanceId, other bytes.
fn same_as_first(first: &Answer, later: &Answer) -> Vec<String> {
    let mut problems = Vec::new();
    if let (Some(a), Some(b)) = (&first.instance_id, &later.instance_id)
        && a != b
    {
        problems.push(format!(
            "instanceId {b} differs from the first answer's {a}: a second instance was created \
             for the same order (spec §1, D7)"
        ));
    }
    if let (Some(a), Some(b)) = (&first.body, &later.body)
        && a != b
    {
        problems.push(format!(
            "the body differs from the first answer's {}: a repeat must get the first answer \
             byte for byte (D7)",
            checks::excerpt(a)
        ));
    }
    problems
}

fn exchanged(exchange: &Exchange) -> Exchanged {
    let duration_ms = u64::try_from(exchange.elapsed.as_millis()).unwrap_or(u64::MAX);
    match &exchange.result {
        Ok(received) => Exchanged {
            sent: exchange.request.curl(),
            status: Some(received.status),
            body_sign: received.body_sign.clone(),
            body: Some(checks::excerpt(&received.body)),
            error: None,
            duration_ms,
        },
        Err(failure) => Exchanged {
            sent: exchange.request.curl(),
            status: None,
            body_sign: None,
            body: None,
            error: Some(failure.describe()),
            duration_ms,
        },
    }
}

/// A compact JSON object with its keys in ascending order, as KooGallery sends them (§2.2).
pub fn body(fields: &[(&str, &str)]) -> Vec<u8> {
    let map: BTreeMap<&str, &str> = fields.iter().copied().collect();
    serde_json::to_vec(&map).expect("a map of strings always serialises")
}

/// The first order line of an order, as KooGallery numbers them.
pub fn line(order: &str) -> String {
    format!("{order}-000001")
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn business_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An expiry a year from now, `yyyyMMddHHmmss` UTC (D10).
pub fn next_year() -> String {
    crate::protocol::time::format_compact(chrono::Utc::now() + chrono::Duration::days(365))
}

/// The saved debugging cases replayed twice, as the morning and afternoon dial tests
/// replay them (spec §9): the saved create case (`create`, its check named `create_name`),
/// byte-identical in the second round, then the other saved cases, which `cases` builds
/// from the instanceId the create case answered.
pub async fn dial_test_rounds(
    s: &mut Session<'_>,
    create_name: &str,
    create: impl Fn(&Session<'_>) -> Request,
    created_codes: &'static [&'static str],
    cases: impl Fn(&Session<'_>, &str) -> Vec<(&'static str, Request, Expect)>,
) -> Flow {
    let mut first: Option<Answer> = None;
    for label in ["dial test 1", "dial test 2, on the existing instance"] {
        let name = format!("{label}: {create_name}");
        let request = create(s);
        let created = match &first {
            None => {
                s.step(name, request, Expect::created(created_codes))
                    .await?
            }
            Some(earlier) => {
                s.repeat(name, earlier, request, Expect::created(created_codes))
                    .await?
            }
        };
        let Some(id) = created.instance_id.clone() else {
            return s.skipped(
                format!("{label}: the other saved cases"),
                "the create case gave no instanceId to replay them with",
            );
        };
        first.get_or_insert(created);
        for (name, request, expect) in cases(s, &id) {
            s.step(format!("{label}: {name}"), request, expect).await?;
        }
    }
    Ok(())
}
