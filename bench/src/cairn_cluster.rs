//! [`CairnCluster`]: three `cairn serve` processes on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, GroupStatus, Status};
use tempfile::TempDir;
use tokio::process::Command;

use crate::wait::wait_for;
use crate::{ChildProcess, free_ports};

/// Members of the cluster.
const NODES: usize = 3;
/// How long the cluster may take to elect a leader for every group.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(100);
/// Timeout of one status call while polling.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a node may take to shut down cleanly before it is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// A 3-node Cairn cluster of the real binary, on ephemeral loopback ports,
/// with its data in a temporary directory (removed when dropped). Every node
/// gets the same `--peers` list and default settings (16 partitions,
/// replication 3, fsync on every Raft log write) plus the extra `serve`
/// arguments it was started with. Nodes can be killed and started again with
/// their data, one at a time or all together.
#[derive(Debug)]
pub struct CairnCluster {
    // Declared before `dir`: the processes go before their data directory.
    /// Node `id` at index `id - 1`; `None` while it is down.
    nodes: Vec<Option<ChildProcess>>,
    bin: PathBuf,
    extra_args: Vec<String>,
    addresses: Vec<String>,
    peers: String,
    partitions: u32,
    dir: TempDir,
}

impl CairnCluster {
    /// Starts the cluster from `cairn_bin` with default settings and waits
    /// until every partition and the metadata group have a leader.
    pub async fn start(cairn_bin: &Path) -> anyhow::Result<CairnCluster> {
        CairnCluster::start_with(cairn_bin, &[]).await
    }

    /// [`CairnCluster::start`], passing `extra_args` to every `cairn serve`
    /// (e.g. `--snapshot-every 100`).
    pub async fn start_with(cairn_bin: &Path, extra_args: &[&str]) -> anyhow::Result<CairnCluster> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-bench-cairn-")
            .tempdir()
            .context("creating a temporary directory for Cairn's data")?;
        let ports = free_ports(NODES)?;
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let peers = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = CairnCluster {
            nodes: (0..NODES).map(|_| None).collect(),
            bin: cairn_bin.to_path_buf(),
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            addresses,
            peers,
            partitions: 0,
            dir,
        };
        for id in cluster.ids() {
            cluster.start_node(id)?;
        }
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// Starts a cluster (as [`CairnCluster::start_with`]), runs `work` on
    /// it, and stops it, whether `work` succeeded or not.
    pub async fn run_fresh<T>(
        cairn_bin: &Path,
        extra_args: &[&str],
        work: impl AsyncFnOnce(&mut CairnCluster) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let mut cluster = CairnCluster::start_with(cairn_bin, extra_args).await?;
        let result = work(&mut cluster).await;
        cluster.stop().await?;
        result
    }

    /// The nodes' client addresses, `host:port`, node 1 first.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// The client address of node `id`.
    pub fn address(&self, id: u64) -> &str {
        &self.addresses[index(id)]
    }

    /// The node ids, 1 to 3.
    pub fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.addresses.len() as u64
    }

    /// A client for node `id` alone.
    pub async fn client(&self, id: u64) -> anyhow::Result<Client> {
        Ok(Client::connect(self.address(id)).await?)
    }

    /// A client for every node (it goes to node 1 first and moves on when
    /// a node does not answer).
    pub async fn client_all(&self) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.addresses.join(",")).await?)
    }

    /// The node leading the partition of `stream` (which must exist).
    /// Retried until known: right after a restart a node may still fail a
    /// call it forwards.
    pub async fn leader_of(&self, stream: &str) -> anyhow::Result<u64> {
        let client = self.client_all().await?.with_timeout(STATUS_TIMEOUT);
        let what = format!("the leader of {stream}'s partition is known");
        wait_for(&what, READY_TIMEOUT, POLL, || {
            let client = &client;
            async move {
                let partition = match client.info(stream).await {
                    Ok(info) => info.partition,
                    Err(e) => return Ok(Err(format!("info: {e}"))),
                };
                Ok(match client.status().await {
                    Ok(status) => status
                        .partitions
                        .iter()
                        .find(|p| p.id == partition)
                        .and_then(|p| p.leader)
                        .ok_or_else(|| format!("partition {partition} has no leader")),
                    Err(e) => Err(format!("status: {e}")),
                })
            }
        })
        .await
    }

    /// Whether every replica of every partition has applied all of its
    /// leader's log, as each node reports its own applied index:
    /// `Ok(total length of the leaders' logs)`, or `Err(what lags)`.
    pub async fn replicas_caught_up(&self) -> anyhow::Result<Result<u64, String>> {
        let statuses = match self.statuses().await? {
            Ok(statuses) => statuses,
            Err(why) => return Ok(Err(why)),
        };
        let mut logs = 0;
        for partition in &statuses[0].partitions {
            let Some(leader) = partition.leader else {
                return Ok(Err(format!("partition {} has no leader", partition.id)));
            };
            let last = applied(&statuses, leader, partition.id).map(|p| p.last_log_index);
            let Some(last) = last else {
                return Ok(Err(format!("leader {leader} of {} unknown", partition.id)));
            };
            for status in &statuses {
                let at = applied(&statuses, status.node_id, partition.id).map(|p| p.applied_index);
                if at.is_none_or(|at| at < last) {
                    return Ok(Err(format!(
                        "node {} applied {at:?} of partition {}, whose leader's log is at {last}",
                        status.node_id, partition.id
                    )));
                }
            }
            logs += last;
        }
        Ok(Ok(logs))
    }

    /// `Ok(Ok(()))` once every replica has truncated its Raft log up to what
    /// it applied (the cluster's steady state once writes pause: see
    /// `cluster/src/log_truncation.rs`), else why not.
    pub async fn logs_truncated(&self) -> anyhow::Result<Result<(), String>> {
        let statuses = match self.statuses().await? {
            Ok(statuses) => statuses,
            Err(why) => return Ok(Err(why)),
        };
        for status in &statuses {
            for p in &status.partitions {
                let holds = p.replicas.contains(&status.node_id);
                if holds && p.purged_index < p.applied_index {
                    return Ok(Err(format!(
                        "node {} keeps partition {}'s log from {} (applied {})",
                        status.node_id,
                        p.id,
                        p.purged_index + 1,
                        p.applied_index
                    )));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Every node's status, or which node did not answer.
    async fn statuses(&self) -> anyhow::Result<Result<Vec<Status>, String>> {
        let mut statuses = Vec::new();
        for id in self.ids() {
            let client = self.client(id).await?.with_timeout(STATUS_TIMEOUT);
            match client.status().await {
                Ok(status) => statuses.push(status),
                Err(e) => return Ok(Err(format!("node {id}: {e}"))),
            }
        }
        Ok(Ok(statuses))
    }

    /// Number of partitions the cluster was created with.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Where the nodes keep their data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    /// Starts node `id` (again, with its data directory) without waiting
    /// for it to be ready.
    pub fn start_node(&mut self, id: u64) -> anyhow::Result<()> {
        anyhow::ensure!(self.nodes[index(id)].is_none(), "node {id} is running");
        let mut command = Command::new(&self.bin);
        command
            .arg("serve")
            .args(["--id", &id.to_string()])
            .args(["--listen", self.address(id)])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--peers", &self.peers])
            .args(["--worker-threads", &crate::member_threads().to_string()])
            .args(&self.extra_args);
        let log = self.dir.path().join(format!("node{id}.log"));
        let node = ChildProcess::spawn(&format!("cairn node {id}"), command, &log)?;
        self.nodes[index(id)] = Some(node);
        Ok(())
    }

    /// Kills node `id` with SIGKILL (no shutdown of any kind) and waits
    /// until it is gone.
    pub async fn kill_node(&mut self, id: u64) -> anyhow::Result<()> {
        match self.nodes[index(id)].take() {
            Some(node) => node.stop().await,
            None => Ok(()),
        }
    }

    /// Kills every node (SIGKILL), starts them all again with their data,
    /// and waits until every group has a leader: a truly cold cluster (the
    /// operating system's page cache aside).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.kill_node(id).await?;
        }
        for id in self.ids() {
            self.start_node(id)?;
        }
        self.wait_ready().await
    }

    /// Shuts every node down cleanly (SIGTERM, so RocksDB closes) and waits
    /// until they are gone; the data directories stay until the cluster is
    /// dropped.
    pub async fn shut_down(&mut self) -> anyhow::Result<()> {
        for node in self.nodes.iter_mut().filter_map(Option::take) {
            node.shut_down("TERM", SHUTDOWN_GRACE).await?;
        }
        Ok(())
    }

    /// Stops every node and waits until they are gone.
    pub async fn stop(self) -> anyhow::Result<()> {
        for node in self.nodes.into_iter().flatten() {
            node.stop().await?;
        }
        Ok(())
    }

    /// Polls the cluster status (through the running nodes) until every
    /// group has a leader; records the number of partitions. Fails early if
    /// a node exits.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let running: Vec<&str> = self
            .ids()
            .filter(|&id| self.nodes[index(id)].is_some())
            .map(|id| self.address(id))
            .collect();
        let client = Client::connect(&running.join(","))
            .await?
            .with_timeout(Duration::from_secs(2));
        let what = format!(
            "every group of the Cairn cluster has a leader (logs in {})",
            self.dir.path().display()
        );
        let nodes = &mut self.nodes;
        let partitions = wait_for(&what, READY_TIMEOUT, POLL, || {
            let running = nodes
                .iter_mut()
                .flatten()
                .try_for_each(ChildProcess::check_running);
            let client = &client;
            async move {
                running?;
                Ok(match client.status().await {
                    Ok(status) if all_led(&status) => Ok(status.partition_count),
                    Ok(status) => {
                        let led = status.partitions.iter().filter(|p| p.leader.is_some());
                        Err(format!(
                            "{} of {} partitions have a leader",
                            led.count(),
                            status.partition_count
                        ))
                    }
                    Err(e) => Err(e.to_string()),
                })
            }
        })
        .await?;
        self.partitions = partitions;
        Ok(())
    }
}

/// Partition `partition` as node `node` reports it, in `statuses`.
fn applied(statuses: &[Status], node: u64, partition: u32) -> Option<&GroupStatus> {
    statuses
        .iter()
        .find(|s| s.node_id == node)?
        .partitions
        .iter()
        .find(|p| p.id == partition)
}

/// Index of node `id` in the cluster's vectors.
fn index(id: u64) -> usize {
    usize::try_from(id).expect("node ids are small") - 1
}

/// Whether the metadata group and every partition have a leader.
fn all_led(status: &Status) -> bool {
    status.partition_count > 0
        && status.partitions.len() == status.partition_count as usize
        && status.partitions.iter().all(|p| p.leader.is_some())
        && status.metadata.as_ref().is_some_and(|m| m.leader.is_some())
}

/// The `cairn` binary to run: `explicit` if given, else the first that
/// exists of `$CARGO_TARGET_DIR/release/cairn`, `cairn` beside this
/// executable when it is a release build, and `target/release/cairn`.
pub fn locate_cairn_bin(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.is_file(), "no cairn binary at {}", path.display());
        return Ok(path);
    }
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(dir).join("release").join("cairn"));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
        && dir.ends_with("release")
    {
        candidates.push(dir.join("cairn"));
    }
    candidates.push(PathBuf::from("target/release/cairn"));
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no release build of cairn found (looked at {}); build it with \
             `cargo build --release --workspace --bins` or pass --cairn-bin",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}
