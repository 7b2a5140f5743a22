//! `koogate bench`: a load generator that plays KooGallery delivering signed
//! `newInstance` callbacks over HTTP — fresh orders and re-deliveries of earlier ones —
//! and reports throughput and latency. A tool to run against a server, not a timed test.
//! With `--forged-rate`, it also floods the server with forged callbacks at a fixed rate while
//! the genuine ones flow, the way an anonymous sender would try to take the address down.

use crate::protocol::signature::{self, Variant};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The production interface address, path included.
    #[arg(long, default_value = "http://127.0.0.1:8080/koogallery/saas")]
    pub url: String,
    /// The access key the server verifies with.
    #[arg(long, env = "KOOGATE_ACCESS_KEY", hide_env_values = true)]
    pub key: String,
    /// How many callbacks to send.
    #[arg(long, default_value_t = 10_000)]
    pub requests: usize,
    /// How many callbacks are in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Share of callbacks that re-deliver an order line already sent (0.0–1.0).
    #[arg(long, default_value_t = 0.5)]
    pub duplicates: f64,
    /// Forged callbacks (signed with another key) per second sent beside the genuine ones;
    /// 0 sends none.
    #[arg(long, default_value_t = 0)]
    pub forged_rate: u32,
    /// How long the forged flood lasts. The genuine callbacks stop with it when `--requests`
    /// have not all been sent by then, so that every latency reported was measured under it.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub forged_for: Duration,
    /// Genuine callbacks per second, paced across the senders (0: as fast as answers come).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
}

/// Measured results of a run.
#[derive(Debug)]
pub struct BenchReport {
    pub requests: usize,
    pub elapsed: Duration,
    /// Every answer's latency, sorted.
    pub latencies: Vec<Duration>,
    /// The callbacks of new orders, and the re-deliveries of earlier ones.
    pub fresh: Phase,
    pub duplicate: Phase,
    /// Answers received in each whole minute from the start, to see whether the rate holds
    /// as the history grows.
    pub per_minute: Vec<usize>,
    /// Answers by result code (or by the transport error).
    pub outcomes: BTreeMap<String, usize>,
    /// The forged flood, when one was asked for.
    pub flood: Option<FloodReport>,
}

/// One kind of callback in a run.
#[derive(Debug, Default)]
pub struct Phase {
    /// From the first one sent to the last one answered.
    pub elapsed: Duration,
    /// Sorted.
    pub latencies: Vec<Duration>,
}

impl Phase {
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which `q` (0–1) of the answers arrived.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }

    fn from(samples: &[&Sample]) -> Self {
        let first = samples.iter().map(|s| s.sent).min().unwrap_or_default();
        let last = samples
            .iter()
            .map(|s| s.sent + s.latency)
            .max()
            .unwrap_or_default();
        let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        latencies.sort_unstable();
        Self {
            elapsed: last.saturating_sub(first),
            latencies,
        }
    }
}

/// One callback: when it was sent (from the start of the run) and how long its answer took.
struct Sample {
    sent: Duration,
    latency: Duration,
    duplicate: bool,
}

/// The latency below which `q` (0–1) of the sorted `latencies` arrived.
fn quantile(latencies: &[Duration], q: f64) -> Duration {
    let index = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len().max(1)) - 1;
    latencies.get(index).copied().unwrap_or_default()
}

/// What the forged flood sent and got back.
#[derive(Debug)]
pub struct FloodReport {
    pub sent: usize,
    pub elapsed: Duration,
    /// Answers by result code (or by the transport error).
    pub outcomes: BTreeMap<String, usize>,
}

impl FloodReport {
    pub fn per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64()
    }
}

impl BenchReport {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which `q` (0–1) of the answers arrived.
    pub fn quantile(&self, q: f64) -> Duration {
        quantile(&self.latencies, q)
    }
}

/// What a refused connection is reported as, by name.
const REFUSED: &str = "connection refused";

impl BenchReport {
    /// `Err` saying why, when no server answered or an answer was not `000000` (a wrong
    /// `--key` gets `000001` every time): a run that measured failures is no benchmark.
    pub fn verdict(&self, url: &str) -> Result<(), String> {
        if self.outcomes.keys().all(|outcome| outcome == REFUSED) {
            return Err(format!("no server answered at {url}: {REFUSED}"));
        }
        // A forged callback that is not refused with 000001 (a transport error is a refusal
        // too: the connection cap or a timeout) was let in, which no load excuses.
        if let Some(flood) = &self.flood {
            let admitted: usize = flood
                .outcomes
                .iter()
                .filter(|(outcome, _)| outcome.len() == 6 && *outcome != "000001")
                .map(|(_, n)| n)
                .sum();
            if admitted > 0 {
                return Err(format!(
                    "{admitted} forged callbacks were not refused with 000001"
                ));
            }
        }
        let expected = self.outcomes.get("000000").copied().unwrap_or(0);
        if expected == self.requests {
            return Ok(());
        }
        let wrong: Vec<String> = self
            .outcomes
            .iter()
            .filter(|(outcome, _)| *outcome != "000000")
            .map(|(outcome, n)| format!("{outcome} × {n}"))
            .collect();
        Err(format!(
            "{} of {} answers were not the expected 000000: {}",
            self.requests - expected,
            self.requests,
            wrong.join(", ")
        ))
    }
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        writeln!(
            f,
            "requests     {} in {:.2} s",
            self.requests,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "throughput   {:.0} requests/s", self.per_second())?;
        writeln!(
            f,
            "latency      p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
            ms(self.quantile(0.50)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0))
        )?;
        for (name, phase) in [("fresh", &self.fresh), ("duplicate", &self.duplicate)] {
            if phase.latencies.is_empty() {
                continue;
            }
            writeln!(
                f,
                "{name:<12} {} in {:.2} s ({:.0}/s)   p50 {:.2} ms   p99 {:.2} ms",
                phase.latencies.len(),
                phase.elapsed.as_secs_f64(),
                phase.per_second(),
                ms(phase.quantile(0.50)),
                ms(phase.quantile(0.99)),
            )?;
        }
        // Whole minutes only: the last, partial one would read low.
        let whole = (self.elapsed.as_secs() / 60) as usize;
        if whole >= 2 {
            let minute = |n: usize| self.per_minute.get(n).copied().unwrap_or(0);
            let (first, last) = (minute(0), minute(whole - 1));
            writeln!(
                f,
                "per minute   first {:.0}/s   last {:.0}/s ({:+.1} %) over {whole} minutes",
                first as f64 / 60.0,
                last as f64 / 60.0,
                (last as f64 / first.max(1) as f64 - 1.0) * 100.0
            )?;
        }
        let outcomes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(code, n)| format!("{code} × {n}"))
            .collect();
        write!(f, "answers      {}", outcomes.join(", "))?;
        if let Some(flood) = &self.flood {
            let outcomes: Vec<String> = flood
                .outcomes
                .iter()
                .map(|(code, n)| format!("{code} × {n}"))
                .collect();
            write!(
                f,
                "\nforged       {} in {:.2} s ({:.0}/s)\nforged got   {}",
                flood.sent,
                flood.elapsed.as_secs_f64(),
                flood.per_second(),
                outcomes.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Runs the load and measures every answer.
pub async fn run(args: &BenchArgs) -> Result<BenchReport, String> {
    if args.requests == 0 || args.concurrency == 0 {
        return Err("--requests and --concurrency must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.duplicates) {
        return Err("--duplicates must be between 0.0 and 1.0".into());
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    // Every run gets its own order ids, so runs against one database never collide.
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase();
    let unique = ((args.requests as f64 * (1.0 - args.duplicates)).ceil() as usize).max(1);
    let next = Arc::new(AtomicUsize::new(0));
    let flood_over = Arc::new(AtomicBool::new(false));
    let flood = if args.forged_rate > 0 {
        let senders = FLOOD_SENDERS.min(args.forged_rate);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(senders as usize)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Some(tokio::spawn(flood(
            client,
            senders,
            args.clone(),
            flood_over.clone(),
        )))
    } else {
        None
    };
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|worker| {
            // With `--rate`, each sender sends every `concurrency / rate` seconds, the
            // senders spread over one period.
            let pace = (args.rate > 0).then(|| {
                let period =
                    Duration::from_secs_f64(args.concurrency as f64 / f64::from(args.rate));
                (
                    period,
                    period.mul_f64(worker as f64 / args.concurrency as f64),
                )
            });
            let (client, next, args, run_id, flood_over) = (
                client.clone(),
                next.clone(),
                args.clone(),
                run_id.clone(),
                flood_over.clone(),
            );
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
                let mut ticks = pace.map(|(period, offset)| {
                    let mut ticks =
                        tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                    // A tick missed while an answer is awaited is skipped, never sent in a
                    // burst: the rate reported is the rate sent.
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                    ticks
                });
                loop {
                    if let Some(ticks) = &mut ticks {
                        ticks.tick().await;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= args.requests || flood_over.load(Ordering::Relaxed) {
                        break;
                    }
                    // The first `unique` callbacks are new orders; the rest re-deliver them.
                    let order = format!("BENCH{run_id}{:08}", i % unique);
                    let sent = Instant::now();
                    let outcome = send(&client, &args, &order, i).await;
                    samples.push(Sample {
                        sent: sent.duration_since(started),
                        latency: sent.elapsed(),
                        duplicate: i >= unique,
                    });
                    *outcomes.entry(outcome).or_default() += 1;
                }
                (samples, outcomes)
            })
        })
        .collect();
    let mut samples = Vec::new();
    let mut outcomes = BTreeMap::new();
    for worker in workers {
        let (some, theirs) = worker.await.map_err(|e| format!("a worker failed: {e}"))?;
        samples.extend(some);
        for (code, n) in theirs {
            *outcomes.entry(code).or_default() += n;
        }
    }
    let elapsed = started.elapsed();
    let mut per_minute = vec![0; (elapsed.as_secs() / 60) as usize + 1];
    for sample in &samples {
        let minute = ((sample.sent + sample.latency).as_secs() / 60) as usize;
        if let Some(count) = per_minute.get_mut(minute) {
            *count += 1;
        }
    }
    let (duplicates, fresh): (Vec<&Sample>, Vec<&Sample>) =
        samples.iter().partition(|s| s.duplicate);
    let mut latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    latencies.sort_unstable();
    let mut report = BenchReport {
        requests: samples.len(),
        elapsed,
        latencies,
        fresh: Phase::from(&fresh),
        duplicate: Phase::from(&duplicates),
        per_minute,
        outcomes,
        flood: None,
    };
    if let Some(flood) = flood {
        report.flood = Some(
            flood
                .await
                .map_err(|e| format!("the flood failed: {e}"))??,
        );
    }
    Ok(report)
}

/// Forged callbacks in flight at once at most: enough that a slow answer does not lower the
/// rate, few enough to stay under the server's connection cap.
const FLOOD_SENDERS: u32 = 256;

/// Sends `--forged-rate` forged callbacks per second for `--forged-for`, paced per sender so
/// the rate holds whatever the answers' latency; a tick missed while an answer is awaited is
/// skipped, never sent in a burst, so the reported rate is what was really sent.
async fn flood(
    client: reqwest::Client,
    senders: u32,
    args: BenchArgs,
    over: Arc<AtomicBool>,
) -> Result<FloodReport, String> {
    let period = Duration::from_secs_f64(f64::from(senders) / f64::from(args.forged_rate));
    let forged = BenchArgs {
        key: format!("forged-{}", args.key),
        ..args.clone()
    };
    let forged = Arc::new(forged);
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.forged_for;
    let senders: Vec<_> = (0..senders)
        .map(|sender| {
            let (client, forged) = (client.clone(), forged.clone());
            tokio::spawn(async move {
                // Senders start spread over one period, not all on the same tick.
                let offset = period.mul_f64(f64::from(sender) / f64::from(senders));
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
                let mut i = 0;
                while ticks.tick().await < deadline {
                    let order = format!("FORGED{sender:03}{i:08}");
                    let outcome = send(&client, &forged, &order, i).await;
                    *outcomes.entry(outcome).or_default() += 1;
                    i += 1;
                }
                outcomes
            })
        })
        .collect();
    let mut report = FloodReport {
        sent: 0,
        elapsed: Duration::ZERO,
        outcomes: BTreeMap::new(),
    };
    for sender in senders {
        let outcomes = sender
            .await
            .map_err(|e| format!("a flood sender failed: {e}"))?;
        for (code, n) in outcomes {
            report.sent += n;
            *report.outcomes.entry(code).or_default() += n;
        }
    }
    report.elapsed = started.elapsed();
    over.store(true, Ordering::Relaxed);
    Ok(report)
}

async fn send(client: &reqwest::Client, args: &BenchArgs, order: &str, i: usize) -> String {
    let body = format!(
        r#"{{"activity":"newInstance","businessId":"bench-{order}-{i}","orderId":"{order}","orderLineId":"{order}-000001","testFlag":"1"}}"#
    );
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let sig = signature::sign(&args.key, &nonce, &ts, body.as_bytes(), Variant::A);
    let url = format!("{}?signature={sig}&timestamp={ts}&nonce={nonce}", args.url);
    let response = match client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(e) => return transport_error(&e),
    };
    match response.bytes().await {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("resultCode")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "not JSON".into()),
        Err(e) => transport_error(&e),
    }
}

/// A failed request by its cause: reqwest's own message says only that sending failed.
fn transport_error(error: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.iter().any(|c| c.to_lowercase().contains(REFUSED)) {
        REFUSED.to_owned()
    } else if error.is_timeout() {
        "timed out".to_owned()
    } else {
        format!(
            "transport error: {}",
            causes
                .last()
                .map_or_else(|| error.to_string(), Clone::clone)
        )
    }
}
