//! [`Report`]: what a run measured, as a table for people and JSON for
//! tracking.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Measurement;

/// Everything one `cairn-bench run` measured, and where.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine the run was on.
    pub machine: Machine,
    /// When the run started, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// Whether this was the `--quick` configuration.
    pub quick: bool,
    /// Warm-up before each point's measured window, in seconds.
    pub warmup_s: f64,
    /// Each point's measured window, in seconds.
    pub duration_s: f64,
    /// The Cairn cluster measured.
    pub cairn: ClusterInfo,
    /// The etcd cluster measured, if the run included etcd.
    pub etcd: Option<ClusterInfo>,
    /// The PostgreSQL server measured, if the run included PostgreSQL.
    pub postgres: Option<ClusterInfo>,
    /// One row per workload and concurrency (the load-generator workloads).
    pub rows: Vec<Row>,
    /// What the other workloads (activation, failover, storage, projection
    /// lag) measured, one value each.
    pub facts: Vec<Fact>,
}

/// A cluster the run started.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    /// Its version or binary.
    pub version: String,
    /// Its members.
    pub members: usize,
    /// Its partitions (Cairn), or 1 (etcd: one Raft group; PostgreSQL).
    pub partitions: u32,
}

/// The machine a run was on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs available to the harness.
    pub cpus: usize,
    /// The CPU's model name from `/proc/cpuinfo`, when known.
    pub cpu_model: Option<String>,
    /// The kernel release, when known.
    pub kernel: Option<String>,
}

impl Machine {
    /// The machine this process runs on.
    pub fn this() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, model)| model.trim().to_string());
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|k| k.trim().to_string()),
        }
    }
}

/// One workload at one concurrency, on Cairn and (where they have one) its
/// peers.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Short name: `append`, `hot`, `batch`, `ask`, `ask-spread`.
    pub workload: String,
    /// What one operation is, for people.
    pub description: String,
    /// Workers, i.e. operations in flight.
    pub concurrency: usize,
    /// What throughput counts: `ops` or `events`.
    pub unit: String,
    /// Cairn's numbers.
    pub cairn: Measurement,
    /// etcd's numbers, when the workload has an etcd peer in this run.
    pub etcd: Option<Measurement>,
    /// Cairn's throughput divided by etcd's.
    pub ratio_etcd: Option<f64>,
    /// PostgreSQL's numbers, when the workload has a PostgreSQL peer in this run.
    pub postgres: Option<Measurement>,
    /// Cairn's throughput divided by PostgreSQL's.
    pub ratio_postgres: Option<f64>,
}

impl Row {
    /// The row of `cairn`'s and the peers' measurements of one point.
    pub fn new(
        workload: &str,
        description: &str,
        concurrency: usize,
        unit: &str,
        cairn: Measurement,
        etcd: Option<Measurement>,
        postgres: Option<Measurement>,
    ) -> Row {
        let ratio = |peer: &Option<Measurement>| {
            peer.as_ref()
                .filter(|p| p.items_per_sec > 0.0)
                .map(|p| cairn.items_per_sec / p.items_per_sec)
        };
        Row {
            workload: workload.to_string(),
            description: description.to_string(),
            concurrency,
            unit: unit.to_string(),
            ratio_etcd: ratio(&etcd),
            ratio_postgres: ratio(&postgres),
            cairn,
            etcd,
            postgres,
        }
    }

    /// The measurements of the row, by system.
    fn systems(&self) -> [(&'static str, Option<&Measurement>); 3] {
        [
            ("Cairn", Some(&self.cairn)),
            ("etcd", self.etcd.as_ref()),
            ("PostgreSQL", self.postgres.as_ref()),
        ]
    }

    /// Operations that failed in the row's windows, all systems together.
    pub fn errors(&self) -> u64 {
        self.systems()
            .iter()
            .filter_map(|(_, m)| m.map(|m| m.errors))
            .sum()
    }
}

/// One value a non-sweep workload measured (e.g. the cold activation time
/// of a 1M-event actor), with issue 4's target for it when it has one.
#[derive(Debug, Clone, Serialize)]
pub struct Fact {
    /// The workload: `activation`, `failover`, `storage`, `projection`.
    pub workload: String,
    /// What was measured, for people.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Its unit: `ms`, `events/s`, `bytes/event`, …
    pub unit: String,
    /// Issue 4's target, e.g. `< 5 ms`, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Fact {
    /// A progress line for stderr.
    pub fn line(&self) -> String {
        format!(
            "{:>10}: {} = {} {}",
            self.workload,
            self.metric,
            number(self.value),
            self.unit
        )
    }
}

/// The facts one workload measured, each printed as a progress line when
/// recorded.
#[derive(Debug)]
pub struct Facts {
    workload: &'static str,
    facts: Vec<Fact>,
}

impl Facts {
    /// No facts yet of `workload`.
    pub fn new(workload: &'static str) -> Facts {
        Facts {
            workload,
            facts: Vec::new(),
        }
    }

    /// Records `metric = value unit`, with issue 4's `target` for it if any.
    pub fn record(
        &mut self,
        metric: impl Into<String>,
        value: f64,
        unit: &str,
        target: Option<&str>,
    ) {
        let fact = Fact {
            workload: self.workload.to_string(),
            metric: metric.into(),
            value,
            unit: unit.to_string(),
            target: target.map(str::to_string),
        };
        eprintln!("{}", fact.line());
        self.facts.push(fact);
    }

    /// Records how long `what` took over `count` events, and the rate:
    /// `<what>: time` in ms and `<what>: rate` in events/s (with `target`).
    pub fn record_rate(
        &mut self,
        what: &str,
        count: u64,
        took: std::time::Duration,
        target: Option<&str>,
    ) {
        self.record(format!("{what}: time"), millis(took), "ms", None);
        let rate = count as f64 / took.as_secs_f64();
        self.record(format!("{what}: rate"), rate, "events/s", target);
    }

    /// The facts recorded, in order.
    pub fn into_vec(self) -> Vec<Fact> {
        self.facts
    }
}

impl Report {
    /// Milliseconds since the Unix epoch, for [`Report::started_unix_ms`].
    pub fn now_unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The tables printed at the end of a run (Markdown, so the README can
    /// quote them as is): the load-generator workloads with a note for every
    /// row that had errors or retries, then the other workloads' facts.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| workload | conc. | Cairn /s | p50 ms | p99 ms \
             | etcd /s | p50 ms | p99 ms | Cairn/etcd \
             | PG /s | p50 ms | p99 ms | Cairn/PG |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let peer = |m: &Option<Measurement>, ratio: Option<f64>| match m {
                Some(m) => format!(
                    "{} | {} | {} | {}",
                    rate(m.items_per_sec),
                    ms(m.p50_us),
                    ms(m.p99_us),
                    ratio.map_or("–".to_string(), |r| format!("{r:.2}×"))
                ),
                None => "– | – | – | –".to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.description,
                row.concurrency,
                rate(row.cairn.items_per_sec),
                ms(row.cairn.p50_us),
                ms(row.cairn.p99_us),
                peer(&row.etcd, row.ratio_etcd),
                peer(&row.postgres, row.ratio_postgres),
            );
        }
        for row in &self.rows {
            for (system, m) in row.systems() {
                let Some(m) = m else { continue };
                if m.retries > 0 {
                    let _ = writeln!(
                        out,
                        "\n{system}, {} at {}: {} conflicts retried ({:.2} per successful op)",
                        row.workload,
                        row.concurrency,
                        m.retries,
                        m.retries as f64 / m.ops.max(1) as f64
                    );
                }
                if m.errors > 0 {
                    let _ = writeln!(
                        out,
                        "\n{system}, {} at {}: {} errors, the first: {}",
                        row.workload,
                        row.concurrency,
                        m.errors,
                        m.first_error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        if !self.facts.is_empty() {
            out.push_str("\n| workload | measured | value | target |\n|---|---|---:|---|\n");
            for fact in &self.facts {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} {} | {} |",
                    fact.workload,
                    fact.metric,
                    number(fact.value),
                    fact.unit,
                    fact.target.as_deref().unwrap_or("")
                );
            }
        }
        out
    }
}

/// A throughput, rounded for reading.
fn rate(per_sec: f64) -> String {
    if per_sec >= 1000.0 {
        format!("{:.0}", per_sec)
    } else if per_sec >= 10.0 {
        format!("{:.1}", per_sec)
    } else {
        format!("{:.2}", per_sec)
    }
}

fn ms(micros: u64) -> String {
    format!("{:.2}", micros as f64 / 1000.0)
}

/// A measured value, rounded for reading like [`rate`], exact when whole.
fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        rate(value)
    } else {
        format!("{value:.2}")
    }
}

/// A duration in milliseconds, as facts report it.
pub fn millis(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
