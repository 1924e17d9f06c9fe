//! [`Peers`]: the systems Cairn is compared with in one run — a 3-member
//! etcd cluster (feature `etcd`) and a single PostgreSQL server — and their
//! side of each workload.

use std::sync::Arc;

use crate::harness::{BATCH_EVENTS, Point, Workload};
use crate::hot::Hot;
use crate::postgres_server::ensure_postgres;
use crate::postgres_target::{PgAppend, PgHotStream};
use crate::report::ClusterInfo;
use crate::{LoadSpec, Measurement, PostgresServer, RunOptions, Target};

/// A peer system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// etcd, 3 members (Raft, fsync per commit): the replicated peer.
    Etcd,
    /// PostgreSQL, one server (fsync per commit, no replication).
    Postgres,
}

impl Peer {
    /// The peer's name in progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Peer::Etcd => "etcd",
            Peer::Postgres => "PG",
        }
    }
}

/// The peers started for a run; either may be absent (not needed, left out
/// with `--no-etcd` / `--no-postgres`, or etcd not built in).
#[derive(Default)]
pub struct Peers {
    #[cfg(feature = "etcd")]
    etcd: Option<crate::EtcdCluster>,
    postgres: Option<PostgresServer>,
}

impl Peers {
    /// Starts the peers that `workloads` need and `options` allow,
    /// installing them if needed.
    pub async fn start(options: &RunOptions, workloads: &[Workload]) -> anyhow::Result<Peers> {
        let needs = |peer| workloads.iter().any(|w| w.peers().contains(&peer));
        let mut peers = Peers::default();
        if needs(Peer::Etcd) && !options.no_etcd {
            peers.start_etcd(options).await?;
        }
        if needs(Peer::Postgres) && !options.no_postgres {
            let bin_dir = ensure_postgres(options.postgres_bin_dir.clone()).await?;
            eprintln!("starting PostgreSQL from {}", bin_dir.display());
            let server = PostgresServer::start(&bin_dir).await?;
            eprintln!(
                "PostgreSQL {} ready, data in {}",
                server.version(),
                server.dir().display()
            );
            peers.postgres = Some(server);
        }
        Ok(peers)
    }

    #[cfg(feature = "etcd")]
    async fn start_etcd(&mut self, options: &RunOptions) -> anyhow::Result<()> {
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
        self.etcd = Some(etcd);
        Ok(())
    }

    /// Without the `etcd` feature: says how to get the peer.
    #[cfg(not(feature = "etcd"))]
    async fn start_etcd(&mut self, _options: &RunOptions) -> anyhow::Result<()> {
        eprintln!(
            "note: this cairn-bench was built without the etcd peer; \
             rebuild with `--features etcd` (needs protoc) to compare with etcd"
        );
        Ok(())
    }

    /// Measures `peer`'s side of `point`, if the peer runs and has one.
    pub async fn measure(
        &self,
        peer: Peer,
        point: Point,
        spec: LoadSpec,
    ) -> anyhow::Result<Option<Measurement>> {
        if !point.workload.peers().contains(&peer) {
            return Ok(None);
        }
        let (c, prefix) = (point.concurrency, point.prefix());
        match peer {
            Peer::Etcd => self.measure_etcd(point, spec).await,
            Peer::Postgres => {
                let Some(pg) = &self.postgres else {
                    return Ok(None);
                };
                let measured = match point.workload {
                    Workload::Append => {
                        measure(
                            peer.name(),
                            point,
                            PgAppend::new(pg, c, 1, &prefix).await?,
                            spec,
                        )
                        .await?
                    }
                    Workload::Batch => {
                        measure(
                            peer.name(),
                            point,
                            PgAppend::new(pg, c, BATCH_EVENTS, &prefix).await?,
                            spec,
                        )
                        .await?
                    }
                    Workload::Hot => {
                        let stream = PgHotStream::new(pg, c, &prefix).await?;
                        measure(peer.name(), point, Hot::new(stream, c), spec).await?
                    }
                    _ => return Ok(None),
                };
                Ok(Some(measured))
            }
        }
    }

    #[cfg(feature = "etcd")]
    async fn measure_etcd(
        &self,
        point: Point,
        spec: LoadSpec,
    ) -> anyhow::Result<Option<Measurement>> {
        let Some(etcd) = &self.etcd else {
            return Ok(None);
        };
        let (c, prefix, endpoints) = (point.concurrency, point.prefix(), etcd.endpoints());
        let measured = match point.workload {
            Workload::Append => {
                measure(
                    Peer::Etcd.name(),
                    point,
                    crate::EtcdPut::new(endpoints, c, &prefix).await?,
                    spec,
                )
                .await?
            }
            Workload::Hot => {
                let key = crate::EtcdHotKey::new(endpoints, c, &prefix).await?;
                measure(Peer::Etcd.name(), point, Hot::new(key, c), spec).await?
            }
            _ => return Ok(None),
        };
        Ok(Some(measured))
    }

    #[cfg(not(feature = "etcd"))]
    async fn measure_etcd(
        &self,
        _point: Point,
        _spec: LoadSpec,
    ) -> anyhow::Result<Option<Measurement>> {
        Ok(None)
    }

    /// Stops the peers; returns what etcd and PostgreSQL were, if they ran.
    pub async fn stop(self) -> anyhow::Result<(Option<ClusterInfo>, Option<ClusterInfo>)> {
        #[cfg(feature = "etcd")]
        let etcd = match self.etcd {
            Some(etcd) => {
                let info = ClusterInfo {
                    version: format!("etcd {}", etcd.version()),
                    members: etcd.endpoints().len(),
                    partitions: 1,
                };
                etcd.stop().await?;
                Some(info)
            }
            None => None,
        };
        #[cfg(not(feature = "etcd"))]
        let etcd = None;
        let postgres = match self.postgres {
            Some(pg) => {
                let info = ClusterInfo {
                    version: format!("PostgreSQL {}", pg.version()),
                    members: 1,
                    partitions: 1,
                };
                pg.stop().await?;
                Some(info)
            }
            None => None,
        };
        Ok((etcd, postgres))
    }
}

/// Measures one point of `system` and prints a progress line.
pub async fn measure<T: Target>(
    system: &str,
    point: Point,
    target: T,
    spec: LoadSpec,
) -> anyhow::Result<Measurement> {
    eprint!(
        "{system:>5} {:<10} {:>4} workers: ",
        point.workload.name(),
        point.concurrency
    );
    let measured = crate::measure(Arc::new(target), spec).await?;
    eprintln!(
        "{:.0} {}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors, {} retries",
        measured.items_per_sec,
        point.workload.unit(),
        measured.p50_us as f64 / 1000.0,
        measured.p99_us as f64 / 1000.0,
        measured.errors,
        measured.retries,
    );
    Ok(measured)
}
