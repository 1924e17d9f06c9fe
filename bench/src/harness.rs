//! [`run`]: the whole of `cairn-bench run`, from starting the clusters to the
//! report.

use std::path::PathBuf;
use std::time::Duration;

use crate::cairn_cluster::locate_cairn_bin;
use crate::hot::Hot;
use crate::peers::{Peer, Peers, measure};
use crate::report::{ClusterInfo, Fact, Machine, Round};
use crate::{
    CairnAppend, CairnAsk, CairnCluster, CairnHotStream, LoadSpec, Measurement, Report, Row,
    activation, failover, projection, storage,
};

/// Events in one append of the batch workload.
pub const BATCH_EVENTS: usize = 100;

/// How big and how long: the full run, `--quick` and `--smoke`.
#[derive(Debug, Clone, Copy)]
struct Scale {
    concurrency: &'static [usize],
    /// Rounds of each point (see [`Row`]).
    rounds: usize,
    duration: Duration,
    warmup: Duration,
    sizes: Sizes,
}

const FULL: Scale = Scale {
    concurrency: &[1, 16, 32, 64, 256],
    rounds: 3,
    duration: Duration::from_secs(5),
    warmup: Duration::from_secs(1),
    sizes: Sizes {
        replay_events: 100_000,
        big_events: 1_000_000,
        temporal_queries: 200,
        cold_activations: 20,
        warm_activations: 200,
        failover_writers: 16,
        catch_up_events: 100_000,
        storage_events: 200_000,
        projection_writers: 256,
    },
};

const QUICK_SIZES: Sizes = Sizes {
    replay_events: 5_000,
    big_events: 20_000,
    temporal_queries: 10,
    cold_activations: 3,
    warm_activations: 10,
    failover_writers: 16,
    catch_up_events: 5_000,
    storage_events: 10_000,
    projection_writers: 16,
};

const QUICK: Scale = Scale {
    concurrency: &[1, 16],
    rounds: 1,
    duration: Duration::from_secs(2),
    warmup: Duration::from_millis(500),
    sizes: QUICK_SIZES,
};

const SMOKE: Scale = Scale {
    concurrency: &[4],
    rounds: 1,
    duration: Duration::from_secs(1),
    warmup: Duration::from_millis(200),
    sizes: Sizes {
        replay_events: 1_000,
        big_events: 3_000,
        temporal_queries: 5,
        cold_activations: 1,
        warm_activations: 5,
        failover_writers: 4,
        catch_up_events: 1_000,
        storage_events: 1_000,
        projection_writers: 8,
    },
};

/// The sizes of the workloads that are not a concurrency sweep.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Events of the actor replayed cold without snapshots.
    pub replay_events: u64,
    /// Events of the long actor (cold activation with snapshots, temporal queries).
    pub big_events: u64,
    /// Temporal queries timed on the long stream.
    pub temporal_queries: usize,
    /// Cold activations timed of the long actor, each after a restart of
    /// every node.
    pub cold_activations: usize,
    /// Warm activations timed of the long actor.
    pub warm_activations: usize,
    /// Writers appending while a leader is killed.
    pub failover_writers: usize,
    /// Events written while the killed node is down.
    pub catch_up_events: u64,
    /// Events written before measuring the bytes on disk.
    pub storage_events: u64,
    /// Writers asking `user` actors while the projections' lag is read.
    pub projection_writers: usize,
}

/// A workload of issue 4 (and issue 3's projection lag) that the harness runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Durable single-event appends of 200 bytes, each to a new stream
    /// (etcd: puts to new keys; PostgreSQL: one-row inserts).
    Append,
    /// One hot stream, appends with an exact expected version, retried on
    /// conflict (etcd: txn on a key's mod revision; PostgreSQL: insert of
    /// version + 1 under the primary key).
    Hot,
    /// Appends of 100 events of 200 bytes, each to a new stream
    /// (PostgreSQL: 100 rows in one statement).
    Batch,
    /// `BALANCE` asks (a turn that records nothing) to active `account`
    /// actors, one per worker, all through node 1.
    Ask,
    /// The same asks, each worker's calls spread over all three nodes.
    AskSpread,
    /// Cold replay, cold and warm activation, temporal queries (not a sweep).
    Activation,
    /// Leader killed under load; restarted node's catch-up (not a sweep).
    Failover,
    /// Bytes on disk per event after compaction (not a sweep).
    Storage,
    /// Lag and rate of the built-in projections under load (not a sweep).
    Projection,
}

impl Workload {
    /// Every workload, in the order they run.
    pub const ALL: [Workload; 9] = [
        Workload::Append,
        Workload::Hot,
        Workload::Batch,
        Workload::Ask,
        Workload::AskSpread,
        Workload::Activation,
        Workload::Failover,
        Workload::Storage,
        Workload::Projection,
    ];

    /// The name on the command line and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Append => "append",
            Workload::Hot => "hot",
            Workload::Batch => "batch",
            Workload::Ask => "ask",
            Workload::AskSpread => "ask-spread",
            Workload::Activation => "activation",
            Workload::Failover => "failover",
            Workload::Storage => "storage",
            Workload::Projection => "projection",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Workload::Append => "append 1×200 B (ops/s)",
            Workload::Hot => "hot stream, expected version (appends/s)",
            Workload::Batch => "append 100×200 B (events/s)",
            Workload::Ask => "ask BALANCE, 1 node (asks/s)",
            Workload::AskSpread => "ask BALANCE, 3 nodes (asks/s)",
            _ => "",
        }
    }

    /// What a sweep's throughput counts.
    pub fn unit(self) -> &'static str {
        match self {
            Workload::Batch => "events",
            _ => "ops",
        }
    }

    /// Whether the load generator sweeps it over the concurrencies (the
    /// others each report their own facts).
    fn is_sweep(self) -> bool {
        !self.description().is_empty()
    }

    /// The peers that run the same shape.
    pub fn peers(self) -> &'static [Peer] {
        match self {
            Workload::Append | Workload::Hot => &[Peer::Etcd, Peer::Postgres],
            Workload::Batch => &[Peer::Postgres],
            _ => &[],
        }
    }
}

/// What `cairn-bench run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// 2 s per point, 1 and 16 workers, small activation/failover/storage sizes.
    pub quick: bool,
    /// What CI runs: every workload at its smallest (4 workers, 1 s per
    /// point, a few thousand events); fails if any operation failed.
    pub smoke: bool,
    /// The measured window per point and round, instead of the scale's.
    pub duration: Option<Duration>,
    /// Rounds of each point, instead of the scale's.
    pub rounds: Option<usize>,
    /// Concurrencies to measure, instead of the scale's.
    pub concurrency: Option<Vec<usize>>,
    /// Workloads to run; empty means all.
    pub workloads: Vec<Workload>,
    /// The `cairn` binary; found in the release target directory if `None`.
    pub cairn_bin: Option<PathBuf>,
    /// The `etcd` binary; `etcd` on the PATH (installed if missing) if `None`.
    pub etcd_bin: Option<PathBuf>,
    /// The directory of PostgreSQL's `initdb` and `postgres`; found (or
    /// installed) if `None`.
    pub postgres_bin_dir: Option<PathBuf>,
    /// Leave etcd out.
    pub no_etcd: bool,
    /// Leave PostgreSQL out.
    pub no_postgres: bool,
}

/// One round of a sweep workload at one concurrency.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// The workload.
    pub workload: Workload,
    /// Its workers.
    pub concurrency: usize,
    /// Which round (from 0).
    pub round: usize,
}

impl Point {
    /// The prefix of the streams, keys or actor ids this round of the point
    /// writes: each round writes new ones.
    pub fn prefix(&self) -> String {
        format!(
            "{}-c{}-r{}",
            self.workload.name(),
            self.concurrency,
            self.round
        )
    }
}

/// Runs the benchmark. Each sweep workload gets fresh peers and a fresh
/// 3-node Cairn cluster, so no system carries the data (and the compactions
/// it brings) of the workloads before it: the batch point, measured on the
/// cluster the single appends had filled, swung between 76k and 110k
/// events/s across runs of one build (bench/README.md, session 18). Every
/// point of a sweep is measured on them (the peers' runs of a point right
/// before Cairn's: only one system is under load at a time, and noise from
/// other work on a shared machine falls on all alike), then they stop; each
/// other workload runs on a fresh Cairn cluster of its own.
/// Progress goes to stderr.
pub async fn run(options: RunOptions) -> anyhow::Result<Report> {
    let cairn_bin = locate_cairn_bin(options.cairn_bin.clone())?;
    let scale = match (options.smoke, options.quick) {
        (true, _) => SMOKE,
        (false, true) => QUICK,
        (false, false) => FULL,
    };
    let duration = options.duration.unwrap_or(scale.duration);
    let rounds = options.rounds.unwrap_or(scale.rounds);
    anyhow::ensure!(rounds > 0, "rounds must be at least 1");
    let concurrency = options
        .concurrency
        .clone()
        .unwrap_or_else(|| scale.concurrency.to_vec());
    anyhow::ensure!(
        concurrency.iter().all(|&c| c > 0),
        "concurrency must be at least 1"
    );
    let workloads = if options.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        options.workloads.clone()
    };
    let sweeps: Vec<Workload> = workloads.iter().copied().filter(|w| w.is_sweep()).collect();
    let spec = |concurrency| LoadSpec {
        concurrency,
        warmup: scale.warmup,
        duration,
    };
    let started_unix_ms = Report::now_unix_ms();

    let mut rows = Vec::with_capacity(sweeps.len() * concurrency.len());
    let (mut etcd_info, mut postgres_info, mut partitions) = (None, None, 0);
    for &workload in &sweeps {
        let peers = Peers::start(&options, &[workload]).await?;
        eprintln!(
            "{}: on a fresh 3-node Cairn cluster from {}",
            workload.name(),
            cairn_bin.display()
        );
        let cairn = CairnCluster::start(&cairn_bin).await?;
        eprintln!(
            "Cairn ready: {} partitions, data in {}",
            cairn.partitions(),
            cairn.dir().display()
        );
        partitions = cairn.partitions();
        for &concurrency in &concurrency {
            let spec = spec(concurrency);
            let mut measured = Vec::with_capacity(rounds);
            for round in 0..rounds {
                let point = Point {
                    workload,
                    concurrency,
                    round,
                };
                measured.push(Round {
                    etcd: peers.measure(Peer::Etcd, point, spec).await?,
                    postgres: peers.measure(Peer::Postgres, point, spec).await?,
                    cairn: measure_cairn(&cairn, point, spec).await?,
                });
            }
            rows.push(Row::new(
                workload.name(),
                workload.description(),
                concurrency,
                workload.unit(),
                measured,
            ));
        }
        cairn.stop().await?;
        let (etcd, postgres) = peers.stop().await?;
        etcd_info = etcd.or(etcd_info);
        postgres_info = postgres.or(postgres_info);
    }

    let mut facts: Vec<Fact> = Vec::new();
    for workload in workloads.iter().filter(|w| !w.is_sweep()) {
        eprintln!("{}: on a fresh 3-node Cairn cluster", workload.name());
        let sizes = &scale.sizes;
        facts.extend(match workload {
            Workload::Activation => activation::run(&cairn_bin, sizes).await?,
            Workload::Failover => failover::run(&cairn_bin, sizes).await?,
            Workload::Storage => storage::run(&cairn_bin, sizes).await?,
            Workload::Projection => projection::run(&cairn_bin, sizes, duration).await?,
            _ => unreachable!("sweeps are measured above"),
        });
    }

    Ok(Report {
        machine: Machine::this(),
        started_unix_ms,
        quick: options.quick || options.smoke,
        warmup_s: scale.warmup.as_secs_f64(),
        duration_s: duration.as_secs_f64(),
        rounds,
        cairn: ClusterInfo {
            version: cairn_bin.display().to_string(),
            members: 3,
            partitions,
        },
        etcd: etcd_info,
        postgres: postgres_info,
        rows,
        facts,
    })
}

/// Cairn's side of one point.
async fn measure_cairn(
    cairn: &CairnCluster,
    point: Point,
    spec: LoadSpec,
) -> anyhow::Result<Measurement> {
    let (servers, c, prefix) = (cairn.addresses(), point.concurrency, point.prefix());
    match point.workload {
        Workload::Append => {
            let target = CairnAppend::new(servers, c, 1, &prefix).await?;
            measure("Cairn", point, target, spec).await
        }
        Workload::Hot => {
            let stream = CairnHotStream::new(servers, c, &prefix).await?;
            measure("Cairn", point, Hot::new(stream, c), spec).await
        }
        Workload::Batch => {
            let target = CairnAppend::new(servers, c, BATCH_EVENTS, &prefix).await?;
            measure("Cairn", point, target, spec).await
        }
        Workload::Ask => {
            let target = CairnAsk::new(&servers[..1], c, &prefix).await?;
            measure("Cairn", point, target, spec).await
        }
        Workload::AskSpread => {
            let target = CairnAsk::spread(servers, c, &prefix).await?;
            measure("Cairn", point, target, spec).await
        }
        _ => unreachable!("not a sweep"),
    }
}
