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
use crate::protocol::signature::Variant;
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
        common_problems: Vec::new(),
        checks: 0,
        passed: 0,
        failed: 0,
        warnings: 0,
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
    /// Whether the server accepted variant B (D1) where it refused variant A: asked once, at
    /// the first correctly signed request refused `000001`.
    variant_b: Option<bool>,
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
            variant_b: None,
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

    /// What was found in one answer, without asking the server anything more.
    pub fn answer(&self, exchange: &Exchange, expect: &Expect) -> Answer {
        let credentials = match self.options.interface {
            Interface::SaasV1 => Credentials::Encrypted,
            _ => Credentials::PlainUnlessTyped,
        };
        checks::inspect(exchange, expect, self.key(), credentials)
    }

    /// What was found in one answer. A correctly signed request refused `000001` is sent
    /// again signed with variant B (D1), once per run, to say which variant the server expects.
    pub async fn inspect(&mut self, exchange: &Exchange, expect: &Expect) -> Answer {
        let mut answer = self.answer(exchange, expect);
        let refused = answer.code.as_deref() == Some("000001")
            && !expect.codes.contains(&"000001")
            && exchange.request.variant == Some(Variant::A);
        if !refused {
            return answer;
        }
        if self.variant_b.is_none() {
            let body = exchange.request.body.clone().unwrap_or_default();
            let probe =
                Request::signed_post_with(self.url(), self.key(), body, now_ms(), Variant::B);
            let probed = self.send(probe).await;
            let code = self.answer(&probed, expect).code;
            self.variant_b = Some(code.is_some_and(|c| c != "000001"));
        }
        if self.variant_b == Some(true) {
            answer.problems.push(
                "the server expects variant B: it refused this request, signed with variant A \
                 (payload hash keyed with the access key), and accepted it signed with variant B \
                 (a plain SHA-256 payload hash); KooGallery's documented algorithm keys the \
                 payload hash with the access key (variant A, D1, §2.2)"
                    .into(),
            );
        }
        answer
    }

    /// Sends `request` and records whether its answer meets `expect`.
    pub async fn step(
        &mut self,
        name: impl Into<String>,
        request: Request,
        expect: Expect,
    ) -> Flow<Answer> {
        let exchange = self.send(request).await;
        let answer = self.inspect(&exchange, &expect).await;
        self.record(name, answer.problems.clone(), &[&exchange])?;
        Ok(answer)
    }

    /// Records one check that passed with `warnings`.
    pub fn warn(
        &mut self,
        name: impl Into<String>,
        warnings: Vec<String>,
        exchanges: &[&Exchange],
    ) -> Flow {
        self.record_check(name, Vec::new(), warnings, exchanges)
    }

    /// Records one check; stops the run when an exchange could not reach the server.
    pub fn record(
        &mut self,
        name: impl Into<String>,
        problems: Vec<String>,
        exchanges: &[&Exchange],
    ) -> Flow {
        self.record_check(name, problems, Vec::new(), exchanges)
    }

    fn record_check(
        &mut self,
        name: impl Into<String>,
        problems: Vec<String>,
        warnings: Vec<String>,
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
            warnings,
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
        let mut answer = self.inspect(&exchange, &expect).await;
        let differences = same_as_first(self.key(), first, &answer);
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
        let mut answers = Vec::with_capacity(exchanges.len());
        for exchange in &exchanges {
            answers.push(self.inspect(exchange, &expect).await);
        }
        // A fault every call had is said once; the others name their call, five at most.
        let mut problems: Vec<String> = answers
            .first()
            .map(|first| first.problems.clone())
            .unwrap_or_default();
        problems.retain(|p| answers.iter().all(|a| a.problems.contains(p)));
        let mut by_call = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            for problem in answer.problems.iter().filter(|p| !problems.contains(p)) {
                if by_call.len() < 5 {
                    by_call.push(format!("call {}: {problem}", i + 1));
                }
            }
        }
        problems.extend(by_call);
        let mut ids: Vec<&str> = answers
            .iter()
            .filter_map(|a| a.instance_id.as_deref())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > 1 {
            problems.push(match checks::one_id_encrypted(self.key(), &ids) {
                Some(plain) => random_iv(&plain),
                None => format!(
                    "{} calls for one order got {} different instanceIds ({}): a second instance \
                     was created for a duplicate (spec §1: the same instanceId, never a second \
                     instance)",
                    answers.len(),
                    ids.len(),
                    ids.join(", ")
                ),
            });
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

/// How `later` differs from `first`: another instanceId (or the same one encrypted under
/// another IV, which `key` tells apart), other bytes.
fn same_as_first(key: &str, first: &Answer, later: &Answer) -> Vec<String> {
    let mut problems = Vec::new();
    if let (Some(a), Some(b)) = (&first.instance_id, &later.instance_id)
        && a != b
    {
        problems.push(match checks::one_id_encrypted(key, &[a, b]) {
            Some(plain) => random_iv(&plain),
            None => format!(
                "instanceId {b} differs from the first answer's {a}: a second instance was \
                 created for the same order (spec §1, D7)"
            ),
        });
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

fn random_iv(plain: &str) -> String {
    format!(
        "instanceId changes between repeats: encrypted with a random IV each time (every one \
         decrypts under the access key to {plain:?}); KooGallery needs the same instanceId on \
         every repeat (spec §1, D7): send it as it is, or store the first answer's bytes"
    )
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
#[expect(clippy::expect_used, reason = "a map of strings always serialises")]
pub fn body(fields: &[(&str, &str)]) -> Vec<u8> {
    let map: BTreeMap<&str, &str> = fields.iter().copied().collect();
    serde_json::to_vec(&map).expect("a map of strings always serialises")
}

/// Names the fault when a forged `activity` (signed with another key) was not refused: the
/// signature must be checked before anything else (§2.2, D5).
pub fn forged_not_refused(activity: &str, answer: &mut Answer) {
    if let Some(code) = answer.code.as_deref()
        && code != "000001"
    {
        answer.problems.push(format!(
            "a forged {activity} was answered {code} instead of being refused: every activity \
             must check the signature before anything else (§2.2, D5)"
        ));
    }
}

/// Names the fault when a forged request that is also invalid got `000002`.
pub fn validated_before_authenticated(answer: &mut Answer) {
    if answer.code.as_deref() == Some("000002") {
        answer.problems.push(
            "the server validates the request before authenticating it: it tells an \
             unauthenticated caller which fields it wants; check the signature first, then the \
             fields (§11)"
                .into(),
        );
    }
}

/// An `expireTime` in a format KooGallery never sends (D10: `yyyyMMddHHmmss`): a server must
/// answer it `000002`, not fail.
pub const BAD_TIME: &str = "2099-12-31 23:59:59";
/// Fourteen digits, but 31 February.
pub const IMPOSSIBLE_TIME: &str = "20990231120000";

/// The first order line of an order, as KooGallery numbers them.
pub fn line(order: &str) -> String {
    format!("{order}-000001")
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A key no server holds, for forged requests.
pub fn other_key() -> String {
    uuid::Uuid::new_v4().to_string()
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
