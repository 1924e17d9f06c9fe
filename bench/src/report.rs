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
    /// One row per workload and concurrency.
    pub rows: Vec<Row>,
}

/// A cluster the run started.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterInfo {
    /// Its version or binary.
    pub version: String,
    /// Its members.
    pub members: usize,
    /// Its partitions (Cairn) or 1 (etcd: one Raft group).
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

/// One workload at one concurrency, on Cairn and (where it has one) its peer.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Short name: `append`, `batch`, `ask`.
    pub workload: String,
    /// What one operation is, for people.
    pub description: String,
    /// Workers, i.e. operations in flight.
    pub concurrency: usize,
    /// What throughput counts: `ops` or `events`.
    pub unit: String,
    /// Cairn's numbers.
    pub cairn: Measurement,
    /// The peer's numbers, when the workload has a peer in this run.
    pub etcd: Option<Measurement>,
    /// Cairn's throughput divided by the peer's.
    pub ratio: Option<f64>,
}

impl Report {
    /// Milliseconds since the Unix epoch, for [`Report::started_unix_ms`].
    pub fn now_unix_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// The table printed at the end of a run (Markdown, so the README can
    /// quote it as is), followed by a note for every row that had errors.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "| workload | conc. | Cairn /s | p50 ms | p99 ms | etcd /s | p50 ms | p99 ms | Cairn/etcd |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for row in &self.rows {
            let peer = match &row.etcd {
                Some(m) => format!(
                    "{} | {} | {}",
                    rate(m.items_per_sec),
                    ms(m.p50_us),
                    ms(m.p99_us)
                ),
                None => "– | – | –".to_string(),
            };
            let ratio = row.ratio.map_or("–".to_string(), |r| format!("{r:.2}×"));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {peer} | {ratio} |",
                row.description,
                row.concurrency,
                rate(row.cairn.items_per_sec),
                ms(row.cairn.p50_us),
                ms(row.cairn.p99_us),
            );
        }
        for row in &self.rows {
            for (system, m) in [("Cairn", Some(&row.cairn)), ("etcd", row.etcd.as_ref())] {
                if let Some(m) = m.filter(|m| m.errors > 0) {
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
        out
    }
}

/// A throughput, rounded to 3 significant digits for reading.
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
