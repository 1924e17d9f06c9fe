//! `cairn bench append|ask`: a load generator over [`cairn_client`].
//!
//! `--concurrency` workers (tokio tasks) share `--connections` clients and
//! run operations back to back for `--duration`, each against a key chosen at
//! random among `--keys`. A progress line is printed every second and, as the
//! last line on stdout, one compact JSON report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, Error, EventData, ExpectedVersion};
use clap::builder::RangedU64ValueParser;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::distr::Alphanumeric;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{ServerArgs, output, parse};

/// Accounts opened in parallel before the `ask` workload, at least.
const OPEN_PARALLELISM: usize = 32;
/// Most client connections opened by default.
const MAX_DEFAULT_CONNECTIONS: usize = 8;
/// Highest latency the histogram tracks exactly (1 hour), in µs.
const MAX_TRACKED_US: u64 = 3_600_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Append single events with a `payload` of --event-size bytes to streams `bench-<k>`.
    Append,
    /// Send `DEPOSIT {amount:1}` to `account` actors `bench-<k>` (opened first).
    Ask,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Append => "append",
            Workload::Ask => "ask",
        }
    }
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The workload to run.
    #[arg(value_enum)]
    pub workload: Workload,
    /// Operations in flight at once (one worker task each).
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub concurrency: usize,
    /// Seconds to measure for.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = parse::seconds)]
    pub duration: Duration,
    /// Size of each appended event's payload, in bytes.
    #[arg(long, default_value_t = 200, value_name = "BYTES")]
    pub event_size: usize,
    /// Events in each append (`append` only); throughput still counts appends.
    #[arg(long, default_value_t = 1, value_parser = RangedU64ValueParser::<usize>::new().range(1..=cairn_node::limits::MAX_EVENTS_PER_APPEND as u64))]
    pub events: usize,
    /// Number of distinct streams or actors to spread the load over.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub keys: u64,
    /// Seconds to run the workload unmeasured before measuring.
    #[arg(long, value_name = "SECONDS", value_parser = parse::seconds)]
    pub warmup: Option<Duration>,
    /// Client connections the workers share [default: concurrency, at most 8].
    #[arg(long, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub connections: Option<usize>,
}

/// The last line `cairn bench` prints.
#[derive(Debug, Serialize)]
struct Report {
    workload: &'static str,
    concurrency: usize,
    duration_s: f64,
    ops: u64,
    ops_per_sec: f64,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    max_us: u64,
    errors: u64,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let connections = args
        .connections
        .unwrap_or(args.concurrency.min(MAX_DEFAULT_CONNECTIONS));
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(args.server.client().await?);
    }
    let bench = Arc::new(Bench {
        workload: args.workload,
        clients,
        keys: args.keys,
        event_size: args.event_size,
        events: args.events,
    });
    if args.workload == Workload::Ask {
        bench
            .open_accounts(args.concurrency.max(OPEN_PARALLELISM))
            .await?;
    }
    if let Some(warmup) = args.warmup {
        output::line(&format!("warming up for {:.1}s", warmup.as_secs_f64()))?;
        bench.phase(warmup, args.concurrency, false).await?;
    }
    let measured = bench.phase(args.duration, args.concurrency, true).await?;
    let report = measured.report(args.workload, args.concurrency);
    output::json_line(&report)?;
    if report.ops == 0 && report.errors > 0 {
        anyhow::bail!(
            "every operation failed; the first error: {}",
            measured.first_error.unwrap_or_default()
        );
    }
    Ok(())
}

struct Bench {
    workload: Workload,
    clients: Vec<Client>,
    keys: u64,
    event_size: usize,
    events: usize,
}

/// Counts shared by a phase's workers, read by the progress line.
#[derive(Default)]
struct Counters {
    ops: AtomicU64,
    errors: AtomicU64,
    first_error: OnceLock<String>,
}

/// What a phase measured.
struct Measured {
    histogram: Histogram<u64>,
    elapsed: Duration,
    errors: u64,
    first_error: Option<String>,
}

impl Measured {
    fn report(&self, workload: Workload, concurrency: usize) -> Report {
        let ops = self.histogram.len();
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        Report {
            workload: workload.name(),
            concurrency,
            duration_s: (secs * 1000.0).round() / 1000.0,
            ops,
            ops_per_sec: (ops as f64 / secs * 10.0).round() / 10.0,
            p50_us: self.histogram.value_at_quantile(0.50),
            p90_us: self.histogram.value_at_quantile(0.90),
            p99_us: self.histogram.value_at_quantile(0.99),
            max_us: self.histogram.max(),
            errors: self.errors,
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("the bounds are valid")
}

impl Bench {
    /// Opens every `account` `bench-<k>`, `parallelism` at a time; an account
    /// that is already open is fine.
    async fn open_accounts(self: &Arc<Self>, parallelism: usize) -> anyhow::Result<()> {
        output::line(&format!("opening {} accounts", self.keys))?;
        let started = Instant::now();
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for worker in 0..parallelism.min(self.keys as usize) {
            let bench = Arc::clone(self);
            let next = Arc::clone(&next);
            tasks.spawn(async move {
                let client = bench.client(worker);
                loop {
                    let key = next.fetch_add(1, Ordering::Relaxed);
                    if key >= bench.keys {
                        return Ok(());
                    }
                    let id = format!("bench-{key}");
                    match client.ask("account", &id, &json!({"type": "OPEN"})).await {
                        Ok(_) | Err(Error::Rejected(_)) => {}
                        Err(e) => return Err(e).with_context(|| format!("opening account {id}")),
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined??;
        }
        output::line(&format!(
            "opened {} accounts in {:.1}s",
            self.keys,
            started.elapsed().as_secs_f64()
        ))
    }

    /// Runs the workload on `concurrency` workers for `duration`, printing a
    /// progress line each second when `progress`.
    async fn phase(
        self: &Arc<Self>,
        duration: Duration,
        concurrency: usize,
        progress: bool,
    ) -> anyhow::Result<Measured> {
        let counters = Arc::new(Counters::default());
        let start = Instant::now();
        let end = start + duration;
        let mut workers = JoinSet::new();
        for worker in 0..concurrency {
            let bench = Arc::clone(self);
            let counters = Arc::clone(&counters);
            workers.spawn(async move { bench.work(worker, end, &counters).await });
        }
        let second = Duration::from_secs(1);
        let mut ticker = tokio::time::interval_at(start + second, second);
        let mut histogram = new_histogram();
        let mut ops_before = 0;
        loop {
            tokio::select! {
                joined = workers.join_next() => match joined {
                    Some(worker) => histogram
                        .add(worker?)
                        .map_err(|e| anyhow::anyhow!("merging latencies: {e:?}"))?,
                    None => break,
                },
                _ = ticker.tick(), if progress => {
                    let ops = counters.ops.load(Ordering::Relaxed);
                    output::line(&format!(
                        "t={}s ops={ops} ops/s={} errors={}",
                        start.elapsed().as_secs_f64().round(),
                        ops - ops_before,
                        counters.errors.load(Ordering::Relaxed),
                    ))?;
                    ops_before = ops;
                }
            }
        }
        Ok(Measured {
            histogram,
            elapsed: start.elapsed(),
            errors: counters.errors.load(Ordering::Relaxed),
            first_error: counters.first_error.get().cloned(),
        })
    }

    /// One worker: operations back to back until `end`; returns their latencies.
    async fn work(&self, worker: usize, end: Instant, counters: &Counters) -> Histogram<u64> {
        let client = self.client(worker);
        let mut rng = new_rng();
        let events: Vec<EventData> = (0..self.events)
            .map(|_| EventData {
                id: None,
                event_type: "BenchEvent".into(),
                data: json!({"payload": random_text(&mut rng, self.event_size)}),
                metadata: None,
                correlation_id: None,
                causation_id: None,
            })
            .collect();
        let deposit = json!({"type": "DEPOSIT", "amount": 1});
        let mut histogram = new_histogram();
        while Instant::now() < end {
            let key = format!("bench-{}", rng.random_range(0..self.keys.max(1)));
            let started = Instant::now();
            let outcome = match self.workload {
                Workload::Append => client
                    .append(&key, events.clone(), ExpectedVersion::Any)
                    .await
                    .map(drop),
                Workload::Ask => client.ask("account", &key, &deposit).await.map(drop),
            };
            match outcome {
                Ok(()) => {
                    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    histogram.saturating_record(micros.max(1));
                    counters.ops.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    if counters.first_error.set(e.to_string()).is_ok() {
                        tracing::warn!(
                            "bench {} failed: {e} (later failures are only counted)",
                            self.workload.name()
                        );
                    }
                }
            }
        }
        histogram
    }

    fn client(&self, worker: usize) -> &Client {
        &self.clients[worker % self.clients.len()]
    }
}

/// A fast per-worker random generator (workers never contend on it).
fn new_rng() -> SmallRng {
    SmallRng::from_os_rng()
}

/// `len` random alphanumeric characters (so the payload does not compress away).
fn random_text(rng: &mut SmallRng, len: usize) -> Value {
    Value::String(
        (0..len)
            .map(|_| char::from(rng.sample(Alphanumeric)))
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn report_is_one_line_with_the_agreed_fields() {
        let mut histogram = new_histogram();
        for us in 1..=100 {
            histogram.record(us).unwrap();
        }
        let measured = Measured {
            histogram,
            elapsed: Duration::from_secs(2),
            errors: 3,
            first_error: None,
        };
        let line = serde_json::to_string(&measured.report(Workload::Append, 4)).unwrap();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["workload"], "append");
        assert_eq!(v["concurrency"], 4);
        assert_eq!(v["ops"], 100);
        assert_eq!(v["ops_per_sec"], 50.0);
        assert_eq!(v["p50_us"], 50);
        assert_eq!(v["p99_us"], 99);
        assert_eq!(v["max_us"], 100);
        assert_eq!(v["errors"], 3);
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 10, "{keys:?}");
    }

    #[test]
    fn keys_and_payloads() {
        let mut rng = new_rng();
        let Value::String(text) = random_text(&mut rng, 200) else {
            panic!("payload is a string");
        };
        assert_eq!(text.len(), 200);
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
