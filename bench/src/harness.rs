//! [`run`]: the whole of `cairn-bench run`, from starting the clusters to the
//! report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cairn_cluster::locate_cairn_bin;
use crate::report::{ClusterInfo, Machine};
use crate::{CairnAppend, CairnAsk, CairnCluster, LoadSpec, Measurement, Report, Row, Target};

/// Events in one append of the batch workload.
pub const BATCH_EVENTS: usize = 100;
/// Concurrencies measured by default, and with `--quick`.
const FULL_CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
const QUICK_CONCURRENCY: [usize; 2] = [1, 16];
/// Measured window per point by default, and with `--quick`.
const FULL_DURATION: Duration = Duration::from_secs(10);
const QUICK_DURATION: Duration = Duration::from_secs(2);
/// Warm-up before each point's window.
const FULL_WARMUP: Duration = Duration::from_secs(1);
const QUICK_WARMUP: Duration = Duration::from_millis(500);

/// A workload shape of issue 4 that the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Durable single-event appends of 200 bytes, each to a new stream
    /// (etcd: puts of 200-byte values, each to a new key).
    Append,
    /// Appends of 100 events of 200 bytes, each to a new stream (Cairn only).
    Batch,
    /// `DEPOSIT` asks to `account` actors, one per worker, all through node 1
    /// (Cairn only).
    Ask,
}

impl Workload {
    /// Every workload, in the order they run.
    pub const ALL: [Workload; 3] = [Workload::Append, Workload::Batch, Workload::Ask];

    fn name(self) -> &'static str {
        match self {
            Workload::Append => "append",
            Workload::Batch => "batch",
            Workload::Ask => "ask",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Workload::Append => "append 1×200 B (ops/s)",
            Workload::Batch => "append 100×200 B (events/s)",
            Workload::Ask => "ask DEPOSIT, 1 node (asks/s)",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Workload::Batch => "events",
            Workload::Append | Workload::Ask => "ops",
        }
    }

    /// Whether etcd runs the same shape (in builds with the `etcd` feature).
    pub fn has_etcd_peer(self) -> bool {
        self == Workload::Append
    }
}

/// What `cairn-bench run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// 2 s per point, 1 and 16 workers only (what CI runs).
    pub quick: bool,
    /// The measured window per point, instead of 10 s (2 s with `quick`).
    pub duration: Option<Duration>,
    /// Concurrencies to measure, instead of 1, 16, 64, 256 (1, 16 with `quick`).
    pub concurrency: Option<Vec<usize>>,
    /// Workloads to run; empty means all.
    pub workloads: Vec<Workload>,
    /// The `cairn` binary; found in the release target directory if `None`.
    pub cairn_bin: Option<PathBuf>,
    /// The `etcd` binary; `etcd` on the PATH (installed if missing) if `None`.
    pub etcd_bin: Option<PathBuf>,
    /// Leave etcd out.
    pub no_etcd: bool,
}

/// One workload at one concurrency.
#[derive(Debug, Clone, Copy)]
struct Point {
    workload: Workload,
    concurrency: usize,
}

/// Runs the benchmark. Starts a 3-member etcd cluster (when a workload has
/// the etcd peer) and a 3-node Cairn cluster, then measures every point, the
/// peer's run of a point right before Cairn's: only one system is under load
/// at a time, and noise from other work on a shared machine falls on both
/// alike. Stops both clusters at the end. Progress goes to stderr.
pub async fn run(options: RunOptions) -> anyhow::Result<Report> {
    let cairn_bin = locate_cairn_bin(options.cairn_bin.clone())?;
    let (duration, warmup, default_concurrency) = if options.quick {
        (QUICK_DURATION, QUICK_WARMUP, &QUICK_CONCURRENCY[..])
    } else {
        (FULL_DURATION, FULL_WARMUP, &FULL_CONCURRENCY[..])
    };
    let duration = options.duration.unwrap_or(duration);
    let concurrency = options
        .concurrency
        .clone()
        .unwrap_or_else(|| default_concurrency.to_vec());
    anyhow::ensure!(
        concurrency.iter().all(|&c| c > 0),
        "concurrency must be at least 1"
    );
    let workloads = if options.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        options.workloads.clone()
    };
    let points: Vec<Point> = workloads
        .iter()
        .flat_map(|&workload| {
            concurrency.iter().map(move |&concurrency| Point {
                workload,
                concurrency,
            })
        })
        .collect();
    let spec = |concurrency| LoadSpec {
        concurrency,
        warmup,
        duration,
    };
    let started_unix_ms = Report::now_unix_ms();

    let peer = if workloads.iter().any(|w| w.has_etcd_peer()) {
        Peer::start(&options).await?
    } else {
        None
    };
    eprintln!(
        "starting a 3-node Cairn cluster from {}",
        cairn_bin.display()
    );
    let cairn = CairnCluster::start(&cairn_bin).await?;
    eprintln!(
        "Cairn ready: {} partitions, data in {}",
        cairn.partitions(),
        cairn.dir().display()
    );

    let mut rows = Vec::with_capacity(points.len());
    for point in &points {
        let spec = spec(point.concurrency);
        let etcd = match &peer {
            Some(peer) if point.workload.has_etcd_peer() => Some(peer.measure(*point, spec).await?),
            _ => None,
        };
        let prefix = point.prefix();
        let servers = cairn.addresses();
        let measured = match point.workload {
            Workload::Append => {
                let target = CairnAppend::new(servers, point.concurrency, 1, &prefix).await?;
                measure_point("Cairn", *point, target, spec).await?
            }
            Workload::Batch => {
                let target =
                    CairnAppend::new(servers, point.concurrency, BATCH_EVENTS, &prefix).await?;
                measure_point("Cairn", *point, target, spec).await?
            }
            Workload::Ask => {
                let target = CairnAsk::new(&servers[..1], point.concurrency, &prefix).await?;
                measure_point("Cairn", *point, target, spec).await?
            }
        };
        let ratio = etcd
            .as_ref()
            .filter(|e| e.items_per_sec > 0.0)
            .map(|e| measured.items_per_sec / e.items_per_sec);
        rows.push(Row {
            workload: point.workload.name().to_string(),
            description: point.workload.description().to_string(),
            concurrency: point.concurrency,
            unit: point.workload.unit().to_string(),
            cairn: measured,
            etcd,
            ratio,
        });
    }

    let cairn_info = ClusterInfo {
        version: cairn_bin.display().to_string(),
        members: cairn.addresses().len(),
        partitions: cairn.partitions(),
    };
    cairn.stop().await?;
    let etcd_info = match peer {
        Some(peer) => Some(peer.stop().await?),
        None => None,
    };
    Ok(Report {
        machine: Machine::this(),
        started_unix_ms,
        quick: options.quick,
        warmup_s: warmup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        cairn: cairn_info,
        etcd: etcd_info,
        rows,
    })
}

impl Point {
    /// The prefix of the streams, keys or actor ids this point writes.
    fn prefix(&self) -> String {
        format!("{}-c{}", self.workload.name(), self.concurrency)
    }
}

/// The system Cairn is compared with. Without the `etcd` feature there is
/// none, and this enum has no values.
enum Peer {
    #[cfg(feature = "etcd")]
    Etcd(crate::EtcdCluster),
}

impl Peer {
    /// Starts etcd (installing it if needed), unless told not to.
    #[cfg(feature = "etcd")]
    async fn start(options: &RunOptions) -> anyhow::Result<Option<Peer>> {
        if options.no_etcd {
            return Ok(None);
        }
        let etcd_bin = crate::etcd_cluster::ensure_etcd(options.etcd_bin.clone()).await?;
        eprintln!(
            "starting a 3-member etcd cluster from {}",
            etcd_bin.display()
        );
        let etcd = crate::EtcdCluster::start(&etcd_bin).await?;
        eprintln!(
            "etcd {} ready, data in {}",
            etcd.version(),
            etcd.dir().display()
        );
        Ok(Some(Peer::Etcd(etcd)))
    }

    /// Without the `etcd` feature: says how to get the peer.
    #[cfg(not(feature = "etcd"))]
    async fn start(options: &RunOptions) -> anyhow::Result<Option<Peer>> {
        if !options.no_etcd {
            eprintln!(
                "note: this cairn-bench was built without the etcd peer; \
                 rebuild with `--features etcd` (needs protoc) to compare with etcd"
            );
        }
        Ok(None)
    }

    /// Measures the peer's version of `point` (one it has: see
    /// [`Workload::has_etcd_peer`]).
    #[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
    async fn measure(&self, point: Point, spec: LoadSpec) -> anyhow::Result<Measurement> {
        match *self {
            #[cfg(feature = "etcd")]
            Peer::Etcd(ref etcd) => {
                let target =
                    crate::EtcdPut::new(etcd.endpoints(), point.concurrency, &point.prefix())
                        .await?;
                measure_point("etcd", point, target, spec).await
            }
        }
    }

    /// Stops the peer; returns what it was.
    async fn stop(self) -> anyhow::Result<ClusterInfo> {
        match self {
            #[cfg(feature = "etcd")]
            Peer::Etcd(etcd) => {
                let info = ClusterInfo {
                    version: format!("etcd {}", etcd.version()),
                    members: etcd.endpoints().len(),
                    partitions: 1,
                };
                etcd.stop().await?;
                Ok(info)
            }
        }
    }
}

/// Measures one point and prints a progress line.
async fn measure_point<T: Target>(
    system: &str,
    point: Point,
    target: T,
    spec: LoadSpec,
) -> anyhow::Result<Measurement> {
    eprint!(
        "{system:>5} {:<6} {:>4} workers: ",
        point.workload.name(),
        point.concurrency
    );
    let measured = crate::measure(Arc::new(target), spec).await?;
    eprintln!(
        "{:.0} {}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        measured.items_per_sec,
        point.workload.unit(),
        measured.p50_us as f64 / 1000.0,
        measured.p99_us as f64 / 1000.0,
        measured.errors
    );
    Ok(measured)
}
