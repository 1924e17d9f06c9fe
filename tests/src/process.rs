//! A cluster of real `cairn serve` processes on loopback. Every process is
//! held by handle: killed with SIGKILL on demand and on drop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::wait::eventually;

/// N `cairn serve` processes forming one cluster.
pub struct ProcessCluster {
    root: TempDir,
    peers: BTreeMap<u64, String>,
    /// Flags every node is started with beyond the ones it must have.
    extra_args: Vec<String>,
    children: BTreeMap<u64, Child>,
}

/// The `cairn` binary built with the tests (`target/<profile>/cairn`).
pub fn cairn_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/it-<hash> -> target/<profile>/cairn
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("cairn");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        bin.display()
    );
    bin
}

/// Ports that are free right now (bound to port 0, then released).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound").port())
        .collect()
}

impl ProcessCluster {
    /// Starts `n` nodes and waits until every partition has a leader.
    pub async fn start(n: u64) -> ProcessCluster {
        ProcessCluster::start_with(n, &[]).await
    }

    /// [`ProcessCluster::start`], every node started (and restarted) with
    /// `extra_args` on top of its id, address, data directory and peers.
    pub async fn start_with(n: u64, extra_args: &[&str]) -> ProcessCluster {
        let ports = free_ports(n as usize);
        let peers = (1..=n)
            .zip(ports)
            .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
            .collect();
        let mut cluster = ProcessCluster {
            root: TempDir::new().expect("temp dir"),
            peers,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            children: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster.wait_ready().await;
        cluster
    }

    /// Starts node `id`, not yet a member, on a free port, with every known
    /// node and itself in `--peers` (as an operator starts a node to add);
    /// returns its address.
    pub fn spawn_new(&mut self, id: u64) -> String {
        let port = free_ports(1)[0];
        let addr = format!("127.0.0.1:{port}");
        self.peers.insert(id, addr.clone());
        self.spawn(id);
        addr
    }

    /// Address of node `id`.
    pub fn addr(&self, id: u64) -> &str {
        &self.peers[&id]
    }

    /// Data directory of node `id`.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    /// `--peers` as every node is started with.
    pub fn peers_flag(&self) -> String {
        self.peers
            .iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) node `id` with its address and data directory.
    pub fn spawn(&mut self, id: u64) {
        let log = std::fs::File::create(self.root.path().join(format!("node-{id}.log")))
            .expect("log file");
        let child = Command::new(cairn_binary())
            .args([
                "serve",
                "--id",
                &id.to_string(),
                "--listen",
                &self.peers[&id],
            ])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--peers", &self.peers_flag()])
            .args(&self.extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn cairn serve");
        self.children.insert(id, child);
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends node `id` SIGTERM (a clean shutdown) and waits up to `within`
    /// for it to exit; returns whether it exited successfully.
    pub async fn terminate(&mut self, id: u64, within: Duration) -> bool {
        let mut child = self.children.remove(&id).expect("node is running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                return status.success();
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} did not exit within {within:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The node's log so far (for failure messages).
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.root.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Runs `cairn <args> --server <node id>`.
    pub fn cli_on(&self, id: u64, args: &[&str]) -> Output {
        cli(args, &self.peers[&id])
    }

    /// Runs `cairn <args>` with every node in `--server`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let all: Vec<_> = self.peers.values().cloned().collect();
        cli(args, &all.join(","))
    }

    /// `admin status` from node `id`, parsed.
    pub fn status(&self, id: u64) -> Result<Value, String> {
        json(&self.cli_on(id, &["admin", "status"]))
    }

    /// Waits until node `id`... every running node reports a leader for every
    /// partition and the metadata group.
    pub async fn wait_ready(&self) {
        for id in self.children.keys() {
            eventually(
                &format!("node {id} to see a leader for every group"),
                Duration::from_secs(60),
                || async {
                    let status = self.status(*id)?;
                    let partitions = status["partitions"].as_array().ok_or("no partitions")?;
                    let leaderless = partitions.iter().filter(|p| p["leader"].is_null()).count();
                    if leaderless == 0 && !status["metadata"]["leader"].is_null() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{leaderless} partitions without a leader: {status}"
                        ))
                    }
                },
            )
            .await;
        }
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        let ids: Vec<_> = self.children.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
    }
}

/// Runs the `cairn` binary with `--server`.
pub fn cli(args: &[&str], server: &str) -> Output {
    Command::new(cairn_binary())
        .args(args)
        .args(["--server", server])
        .output()
        .expect("run cairn")
}

/// Stdout of a successful command as JSON, or a message with its stderr.
pub fn json(output: &Output) -> Result<Value, String> {
    if !output.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| {
        format!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}
