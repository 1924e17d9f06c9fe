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
    /// Each point's measured window, in seconds (per round).
    pub duration_s: f64,
    /// Times each point was measured on every system (see [`Row`]).
    pub rounds: usize,
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
/// peers: measured `rounds.len()` times, each time on every system in turn.
///
/// Two runs of one system differ by up to 20% on a shared machine, so a
/// ratio from one round can be a round's noise: the row gives each system's
/// median round and the median of the rounds' ratios, with their range.
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
    /// Cairn's median round (by throughput; the lower middle one of an
    /// even number).
    pub cairn: Measurement,
    /// etcd's median round, when the workload has an etcd peer in this run.
    pub etcd: Option<Measurement>,
    /// The median of the rounds' Cairn/etcd throughput ratios.
    pub ratio_etcd: Option<f64>,
    /// The lowest and highest of those ratios.
    pub ratio_etcd_range: Option<(f64, f64)>,
    /// PostgreSQL's median round, when the workload has a PostgreSQL peer.
    pub postgres: Option<Measurement>,
    /// The median of the rounds' Cairn/PostgreSQL throughput ratios.
    pub ratio_postgres: Option<f64>,
    /// The lowest and highest of those ratios.
    pub ratio_postgres_range: Option<(f64, f64)>,
    /// Every round, in the order measured.
    pub rounds: Vec<Round>,
}

/// One round of a point: each system measured once, one after the other.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// Cairn's run, the last of the round.
    pub cairn: Measurement,
    /// etcd's, when the workload has an etcd peer in this run.
    pub etcd: Option<Measurement>,
    /// PostgreSQL's, when the workload has a PostgreSQL peer in this run.
    pub postgres: Option<Measurement>,
}

impl Row {
    /// The row of a point's `rounds` (at least one).
    pub fn new(
        workload: &str,
        description: &str,
        concurrency: usize,
        unit: &str,
        rounds: Vec<Round>,
    ) -> Row {
        assert!(!rounds.is_empty(), "a row has at least one round");
        let cairn = median_round(&rounds, CAIRN).expect("every round measures Cairn");
        let etcd = median_round(&rounds, ETCD);
        let postgres = median_round(&rounds, POSTGRES);
        let (ratio_etcd, ratio_etcd_range) = ratios(&rounds, ETCD);
        let (ratio_postgres, ratio_postgres_range) = ratios(&rounds, POSTGRES);
        Row {
            workload: workload.to_string(),
            description: description.to_string(),
            concurrency,
            unit: unit.to_string(),
            cairn,
            etcd,
            ratio_etcd,
            ratio_etcd_range,
            postgres,
            ratio_postgres,
            ratio_postgres_range,
            rounds,
        }
    }

    /// Each system's name and its measurements in the row's rounds (none
    /// for a peer the workload does not have).
    fn systems(&self) -> [(&'static str, Vec<&Measurement>); 3] {
        [("Cairn", CAIRN), ("etcd", ETCD), ("PostgreSQL", POSTGRES)]
            .map(|(name, pick)| (name, self.rounds.iter().filter_map(pick).collect()))
    }

    /// Operations that failed in the row's windows, all systems and
    /// rounds together.
    pub fn errors(&self) -> u64 {
        self.systems()
            .iter()
            .flat_map(|(_, rounds)| rounds)
            .map(|m| m.errors)
            .sum()
    }
}

/// One system's measurement in a round, if it has one there.
type Pick = fn(&Round) -> Option<&Measurement>;
const CAIRN: Pick = |r| Some(&r.cairn);
const ETCD: Pick = |r| r.etcd.as_ref();
const POSTGRES: Pick = |r| r.postgres.as_ref();

/// The system's measurement with the median throughput among the rounds
/// (the lower middle one of an even number), if any round measured it.
fn median_round(rounds: &[Round], system: Pick) -> Option<Measurement> {
    let mut measured: Vec<&Measurement> = rounds.iter().filter_map(system).collect();
    measured.sort_by(|a, b| a.items_per_sec.total_cmp(&b.items_per_sec));
    measured
        .get(measured.len().saturating_sub(1) / 2)
        .map(|m| (*m).clone())
}

/// The median of the rounds' Cairn/peer throughput ratios (the mean of the
/// two middle ones of an even number) and their range, over the rounds in
/// which the peer measured a throughput.
fn ratios(rounds: &[Round], peer: Pick) -> (Option<f64>, Option<(f64, f64)>) {
    let mut ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|r| {
            peer(r)
                .filter(|p| p.items_per_sec > 0.0)
                .map(|p| r.cairn.items_per_sec / p.items_per_sec)
        })
        .collect();
    if ratios.is_empty() {
        return (None, None);
    }
    ratios.sort_by(f64::total_cmp);
    let n = ratios.len();
    let median = (ratios[(n - 1) / 2] + ratios[n / 2]) / 2.0;
    (Some(median), Some((ratios[0], ratios[n - 1])))
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
            let peer = |m: &Option<Measurement>, ratio: Option<f64>, range| match m {
                Some(m) => format!(
                    "{} | {} | {} | {}",
                    rate(m.items_per_sec),
                    ms(m.p50_us),
                    ms(m.p99_us),
                    ratio_cell(ratio, range)
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
                peer(&row.etcd, row.ratio_etcd, row.ratio_etcd_range),
                peer(&row.postgres, row.ratio_postgres, row.ratio_postgres_range),
            );
        }
        for row in &self.rows {
            for (system, rounds) in row.systems() {
                let sum = |count: fn(&Measurement) -> u64| rounds.iter().map(|m| count(m)).sum();
                let (ops, retries, errors): (u64, u64, u64) =
                    (sum(|m| m.ops), sum(|m| m.retries), sum(|m| m.errors));
                if retries > 0 {
                    let _ = writeln!(
                        out,
                        "\n{system}, {} at {}: {retries} conflicts retried ({:.2} per successful op)",
                        row.workload,
                        row.concurrency,
                        retries as f64 / ops.max(1) as f64
                    );
                }
                if errors > 0 {
                    let first = rounds.iter().find_map(|m| m.first_error.as_deref());
                    let _ = writeln!(
                        out,
                        "\n{system}, {} at {}: {errors} errors, the first: {}",
                        row.workload,
                        row.concurrency,
                        first.unwrap_or("?")
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

/// A ratio column: the median, and the range when the rounds differ.
fn ratio_cell(ratio: Option<f64>, range: Option<(f64, f64)>) -> String {
    match (ratio, range) {
        (None, _) => "–".to_string(),
        (Some(r), Some((low, high))) if high > low => {
            format!("{r:.2}× ({low:.2}–{high:.2})")
        }
        (Some(r), _) => format!("{r:.2}×"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(items_per_sec: f64, errors: u64) -> Measurement {
        Measurement {
            ops: 10,
            items: 10,
            errors,
            retries: 0,
            seconds: 1.0,
            ops_per_sec: items_per_sec,
            items_per_sec,
            p50_us: items_per_sec as u64,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
            mean_us: 0.0,
            first_error: (errors > 0).then(|| format!("failed at {items_per_sec}")),
        }
    }

    fn round(cairn: f64, etcd: f64) -> Round {
        Round {
            cairn: measured(cairn, 0),
            etcd: Some(measured(etcd, 0)),
            postgres: None,
        }
    }

    fn row(rounds: Vec<Round>) -> Row {
        Row::new("append", "append 1×200 B (ops/s)", 16, "ops", rounds)
    }

    #[test]
    fn a_row_gives_each_systems_median_round_and_the_median_ratio() {
        // Round ratios 2.0, 0.5 and 1.5: their median is 1.5, which is not
        // the ratio of the two median throughputs (110 / 100).
        let row = row(vec![
            round(100.0, 50.0),
            round(50.0, 100.0),
            round(150.0, 100.0),
        ]);
        assert_eq!(row.cairn.items_per_sec, 100.0);
        assert_eq!(row.etcd.as_ref().map(|m| m.items_per_sec), Some(100.0));
        assert_eq!(row.ratio_etcd, Some(1.5));
        assert_eq!(row.ratio_etcd_range, Some((0.5, 2.0)));
        assert_eq!((row.postgres.is_none(), row.ratio_postgres), (true, None));
        let table = Report::for_rows(vec![row]).table();
        assert!(table.contains("| 1.50× (0.50–2.00) |"), "{table}");
    }

    #[test]
    fn an_even_number_of_rounds_takes_the_lower_middle_round_and_the_mean_middle_ratio() {
        let row = row(vec![round(300.0, 100.0), round(100.0, 100.0)]);
        assert_eq!(row.cairn.items_per_sec, 100.0);
        assert_eq!(row.ratio_etcd, Some(2.0));
    }

    #[test]
    fn one_round_shows_its_ratio_alone_and_a_peer_at_zero_has_none() {
        let one = row(vec![round(200.0, 100.0)]);
        assert_eq!(
            (one.ratio_etcd, one.ratio_etcd_range),
            (Some(2.0), Some((2.0, 2.0)))
        );
        let table = Report::for_rows(vec![one]).table();
        assert!(table.contains("| 2.00× |"), "{table}");
        let stalled = row(vec![round(200.0, 0.0)]);
        assert_eq!((stalled.ratio_etcd, stalled.ratio_etcd_range), (None, None));
    }

    #[test]
    fn errors_of_every_round_count_and_are_noted() {
        let mut failing = round(100.0, 100.0);
        failing.cairn = measured(100.0, 3);
        let row = row(vec![round(100.0, 100.0), failing]);
        assert_eq!(row.errors(), 3);
        let table = Report::for_rows(vec![row]).table();
        assert!(
            table.contains("Cairn, append at 16: 3 errors, the first: failed at 100"),
            "{table}"
        );
    }

    impl Report {
        fn for_rows(rows: Vec<Row>) -> Report {
            let cluster = ClusterInfo {
                version: "test".to_string(),
                members: 3,
                partitions: 16,
            };
            Report {
                machine: Machine::this(),
                started_unix_ms: 0,
                quick: false,
                warmup_s: 1.0,
                duration_s: 5.0,
                rounds: 3,
                cairn: cluster,
                etcd: None,
                postgres: None,
                rows,
                facts: Vec::new(),
            }
        }
    }
}
