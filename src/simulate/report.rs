//! The report: one line per check with ✓, ! (passed with a warning) or ✗, what was sent and
//! what came back for each failure, a summary with counts; the same as JSON for machines. A
//! `Sink` hears about each request and check as it happens, so a person watches a slow server
//! being tested live. A fault that fails every check is stated once, not under each check.

use super::{Interface, Scenario};
use serde::Serialize;
use std::io::Write;

/// A request and its answer, kept for failed checks.
#[derive(Debug, Clone, Serialize)]
pub struct Exchanged {
    /// The request as a `curl` command (URL with signature parameters, headers, body).
    pub sent: String,
    /// HTTP status, when an answer came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_sign: Option<String>,
    /// The answer body, as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Why no answer came back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One check: a request (or a set of them) and what its answer must be.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// Each fault found, one sentence each; empty when the check passed. A fault every check
    /// had is in the report's `common_problems` instead.
    pub problems: Vec<String>,
    /// What passed but would break if KooGallery behaves in a way the spec leaves open (D1a:
    /// which form of the body it signs); a warning never fails the check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The slowest answer the check waited for.
    pub duration_ms: u64,
    /// Whether that answer took more than half of KooGallery's timeout: too little margin.
    pub slow: bool,
    /// What was sent and what came back; kept for failed checks only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<Exchanged>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: Scenario,
    pub checks: Vec<Check>,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub url: String,
    pub interface: Interface,
    /// The `testFlag` sent (`1` unless `--real`; the dial test always sends `1`).
    pub test_flag: &'static str,
    /// Remarks about the address itself (for example, KooGallery calls only HTTPS).
    pub notes: Vec<String>,
    pub scenarios: Vec<ScenarioReport>,
    /// Why the run stopped before every scenario ran, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// The faults every check that got an answer had, when every one of them failed (no
    /// `Body-Sign`, HTTP 400 everywhere): said once here, and left out of each check.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub common_problems: Vec<String>,
    pub checks: usize,
    pub passed: usize,
    pub failed: usize,
    /// How many checks passed with a warning.
    pub warnings: usize,
}

impl Report {
    /// Whether the interface answered every check as KooGallery expects.
    pub fn all_passed(&self) -> bool {
        self.failed == 0 && self.checks > 0 && self.stopped.is_none()
    }

    /// Every check, in the order they ran.
    pub fn all_checks(&self) -> impl Iterator<Item = &Check> {
        self.scenarios.iter().flat_map(|s| s.checks.iter())
    }

    /// Counts the checks, and moves the faults every answered check had to `common_problems`.
    pub(super) fn count(&mut self) {
        self.checks = self.all_checks().count();
        self.passed = self.all_checks().filter(|c| c.passed).count();
        self.failed = self.checks - self.passed;
        self.warnings = self
            .all_checks()
            .filter(|c| c.passed && !c.warnings.is_empty())
            .count();
        self.common_problems = common_problems(self.all_checks());
        let common = &self.common_problems;
        for check in self.scenarios.iter_mut().flat_map(|s| s.checks.iter_mut()) {
            check.problems.retain(|p| !common.contains(p));
        }
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let plural = if self.checks == 1 { "" } else { "s" };
        let mut line = format!(
            "{} check{plural}, {} passed, {} failed",
            self.checks, self.passed, self.failed
        );
        if self.warnings > 0 {
            line.push_str(&format!(", {} with a warning", self.warnings));
        }
        if !self.common_problems.is_empty() {
            line.push_str(", all with the fault stated at the first check");
        }
        if let Some(reason) = &self.stopped {
            line.push_str(&format!("; stopped early: {reason}"));
        }
        line
    }
}

/// The problems every check that got an answer had, when there are at least two such checks and
/// every check failed. A check that did not run (it has no exchange) is left out: it failed
/// because an earlier one did.
fn common_problems<'a>(checks: impl Iterator<Item = &'a Check>) -> Vec<String> {
    let mut common: Option<Vec<String>> = None;
    let mut answered = 0;
    for check in checks {
        if check.passed {
            return Vec::new();
        }
        if check.exchanges.is_empty() {
            continue;
        }
        answered += 1;
        let shared = common.get_or_insert_with(|| check.problems.clone());
        shared.retain(|p| check.problems.contains(p));
    }
    if answered < 2 {
        return Vec::new();
    }
    common.unwrap_or_default()
}

/// Hears about a run as it happens.
pub trait Sink {
    fn started(&mut self, _report: &Report) {}
    fn scenario(&mut self, _scenario: Scenario) {}
    /// A request about to be sent, as a `curl` command.
    fn request(&mut self, _curl: &str) {}
    fn check(&mut self, _check: &Check) {}
    fn finished(&mut self, _report: &Report) {}
}

/// Hears nothing: for callers that only want the returned report.
pub struct Quiet;

impl Sink for Quiet {}

/// The report for people, written as the run goes.
pub struct Human<W: Write> {
    out: W,
    verbose: bool,
    report: bool,
    /// The problems every answered check so far had while every check failed (`None` before
    /// the first): printed in full at the first check, and only referred to after it.
    shared: Option<Vec<String>>,
}

impl<W: Write> Human<W> {
    /// The full report, with every request when `verbose`.
    pub fn report(out: W, verbose: bool) -> Self {
        Self {
            out,
            verbose,
            report: true,
            shared: None,
        }
    }

    /// Only the requests, for `--verbose` next to a JSON report.
    pub fn requests_only(out: W) -> Self {
        Self {
            out,
            verbose: true,
            report: false,
            shared: None,
        }
    }

    // A report that cannot be written (a closed pipe) has no one to tell; the exit status
    // still says whether every check passed.
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }
}

impl<W: Write> Sink for Human<W> {
    fn started(&mut self, report: &Report) {
        if !self.report {
            return;
        }
        self.line(&format!(
            "koogate simulate: {} at {} (testFlag={})",
            report.interface.as_str(),
            report.url,
            report.test_flag
        ));
        for note in &report.notes {
            self.line(&format!("note: {note}"));
        }
    }

    fn scenario(&mut self, scenario: Scenario) {
        if self.report {
            self.line("");
            self.line(scenario.as_str());
        }
    }

    fn request(&mut self, curl: &str) {
        if self.verbose {
            self.line(&format!("    → {curl}"));
        }
    }

    fn check(&mut self, check: &Check) {
        if !self.report {
            return;
        }
        let mark = match (check.passed, check.warnings.is_empty()) {
            (false, _) => '✗',
            (true, true) => '✓',
            (true, false) => '!',
        };
        let slow = if check.slow {
            ", slow: KooGallery gives up after 5 s"
        } else {
            ""
        };
        self.line(&format!(
            "  {mark} {} ({}{slow})",
            check.name,
            duration(check.duration_ms)
        ));
        let (repeated, own) = self.split_shared(check);
        for problem in own {
            self.line(&format!("      - {problem}"));
        }
        if repeated {
            self.line("      - the same fault as every check above");
        }
        for warning in &check.warnings {
            self.line(&format!("      - warning: {warning}"));
        }
        for exchange in &check.exchanges {
            self.line(&format!("      sent: {}", exchange.sent));
            match (&exchange.status, &exchange.error) {
                (Some(status), _) => {
                    let sign = exchange
                        .body_sign
                        .as_deref()
                        .map(|s| format!(", Body-Sign: {s}"))
                        .unwrap_or_else(|| ", no Body-Sign".into());
                    self.line(&format!("      got:  HTTP {status}{sign}"));
                    self.line(&format!(
                        "            {}",
                        exchange.body.as_deref().unwrap_or_default()
                    ));
                }
                (None, Some(error)) => self.line(&format!("      got:  nothing: {error}")),
                (None, None) => {}
            }
        }
    }

    fn finished(&mut self, report: &Report) {
        if self.report {
            self.line("");
            self.line(&format!("summary: {}", report.summary()));
        }
        let _ = self.out.flush();
    }
}

impl<W: Write> Human<W> {
    /// The check's problems not shared by every check before it, and whether it had any that
    /// were; keeps `shared` up to date.
    fn split_shared<'c>(&mut self, check: &'c Check) -> (bool, Vec<&'c String>) {
        if check.passed {
            self.shared = Some(Vec::new());
            return (false, Vec::new());
        }
        if check.exchanges.is_empty() {
            return (false, check.problems.iter().collect());
        }
        let Some(shared) = self.shared.as_mut() else {
            self.shared = Some(check.problems.clone());
            return (false, check.problems.iter().collect());
        };
        let (repeated, own): (Vec<&String>, Vec<&String>) =
            check.problems.iter().partition(|p| shared.contains(p));
        shared.retain(|p| check.problems.contains(p));
        (!repeated.is_empty(), own)
    }
}

fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}
