//! [`CairnCluster`]: three `cairn serve` processes on loopback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, Status};
use tempfile::TempDir;
use tokio::process::Command;
use tokio::time::Instant;

use crate::{ChildProcess, free_ports};

/// Members of the cluster.
const NODES: usize = 3;
/// How long the cluster may take to elect a leader for every group.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(200);

/// A 3-node Cairn cluster of the real binary, on ephemeral loopback ports,
/// with its data in a temporary directory (removed when dropped). Every node
/// gets the same `--peers` list and default settings (16 partitions,
/// replication 3, fsync on every Raft log write).
#[derive(Debug)]
pub struct CairnCluster {
    // Declared before `dir`: the processes go before their data directory.
    nodes: Vec<ChildProcess>,
    addresses: Vec<String>,
    partitions: u32,
    dir: TempDir,
}

impl CairnCluster {
    /// Starts the cluster from `cairn_bin` and waits until every partition
    /// and the metadata group have a leader.
    pub async fn start(cairn_bin: &Path) -> anyhow::Result<CairnCluster> {
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
        let mut nodes = Vec::with_capacity(NODES);
        for (i, address) in addresses.iter().enumerate() {
            let id = i + 1;
            let data_dir = dir.path().join(format!("node{id}"));
            let mut command = Command::new(cairn_bin);
            command
                .arg("serve")
                .args(["--id", &id.to_string()])
                .args(["--listen", address])
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--peers", &peers]);
            let log = dir.path().join(format!("node{id}.log"));
            nodes.push(ChildProcess::spawn(
                &format!("cairn node {id}"),
                command,
                &log,
            )?);
        }
        let mut cluster = CairnCluster {
            nodes,
            addresses,
            partitions: 0,
            dir,
        };
        cluster.partitions = cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The nodes' client addresses, `host:port`, node 1 first.
    pub fn addresses(&self) -> &[String] {
        &self.addresses
    }

    /// Number of partitions the cluster was created with.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Where the nodes keep their data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every node and waits until they are gone.
    pub async fn stop(self) -> anyhow::Result<()> {
        for node in self.nodes {
            node.stop().await?;
        }
        Ok(())
    }

    /// Polls the cluster status until every group has a leader; returns the
    /// number of partitions. Fails early if a node exits.
    async fn wait_ready(&mut self) -> anyhow::Result<u32> {
        let client = Client::connect(&self.addresses.join(","))
            .await?
            .with_timeout(Duration::from_secs(2));
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            for node in &mut self.nodes {
                node.check_running()?;
            }
            let last = match client.status().await {
                Ok(status) if all_led(&status) => return Ok(status.partition_count),
                Ok(status) => {
                    let led = status.partitions.iter().filter(|p| p.leader.is_some());
                    format!(
                        "{} of {} partitions have a leader",
                        led.count(),
                        status.partition_count
                    )
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the Cairn cluster was not ready after {READY_TIMEOUT:?} ({last}); logs in {}",
                    self.dir.path().display()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
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
