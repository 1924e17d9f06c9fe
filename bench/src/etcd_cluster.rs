//! [`EtcdCluster`]: a 3-member etcd cluster on loopback, from Debian's
//! `etcd-server` package (installed by [`ensure_etcd`] when missing).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;

use crate::install::{apt_install, on_path};
use crate::wait::wait_for;
use crate::{ChildProcess, free_ports};

/// Members of the cluster.
const MEMBERS: usize = 3;
/// How long the cluster may take to accept a write.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);
/// The Debian packages holding `etcd` and `etcdctl`.
const PACKAGES: [&str; 2] = ["etcd-server", "etcd-client"];

/// A 3-member etcd cluster on ephemeral loopback ports, with its data in a
/// temporary directory (removed when dropped). Members run with etcd's
/// defaults, which fsync the WAL before acknowledging every commit.
#[derive(Debug)]
pub struct EtcdCluster {
    // Declared before `dir`: the processes go before their data directory.
    members: Vec<ChildProcess>,
    endpoints: Vec<String>,
    version: String,
    dir: TempDir,
}

impl EtcdCluster {
    /// Starts the cluster from `etcd_bin` and waits until it accepts a put.
    pub async fn start(etcd_bin: &Path) -> anyhow::Result<EtcdCluster> {
        let version = etcd_version(etcd_bin).await?;
        let dir = tempfile::Builder::new()
            .prefix("cairn-bench-etcd-")
            .tempdir()
            .context("creating a temporary directory for etcd's data")?;
        let ports = free_ports(2 * MEMBERS)?;
        let (client_ports, peer_ports) = ports.split_at(MEMBERS);
        let url = |port: &u16| format!("http://127.0.0.1:{port}");
        let initial_cluster = peer_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("e{}={}", i + 1, url(p)))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(MEMBERS);
        for i in 0..MEMBERS {
            let name = format!("e{}", i + 1);
            let (client_url, peer_url) = (url(&client_ports[i]), url(&peer_ports[i]));
            let mut command = Command::new(etcd_bin);
            command
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(dir.path().join(&name))
                .args(["--listen-client-urls", &client_url])
                .args(["--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial_cluster])
                .args(["--initial-cluster-token", "cairn-bench"])
                .args(["--initial-cluster-state", "new"])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .env("GOMAXPROCS", crate::member_threads().to_string());
            let log = dir.path().join(format!("{name}.log"));
            members.push(ChildProcess::spawn(&format!("etcd {name}"), command, &log)?);
        }
        let mut cluster = EtcdCluster {
            members,
            endpoints: client_ports.iter().map(url).collect(),
            version,
            dir,
        };
        cluster.wait_ready().await?;
        Ok(cluster)
    }

    /// The members' client URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// What `etcd --version` said, e.g. `3.4.23`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the members keep their data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every member and waits until they are gone.
    pub async fn stop(self) -> anyhow::Result<()> {
        for member in self.members {
            member.stop().await?;
        }
        Ok(())
    }

    /// Retries a put until one succeeds. Fails early if a member exits.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(2));
        let what = format!(
            "the etcd cluster accepts a put (logs in {})",
            self.dir.path().display()
        );
        let (members, endpoints) = (&mut self.members, &self.endpoints);
        wait_for(&what, READY_TIMEOUT, POLL, || {
            let running = members.iter_mut().try_for_each(ChildProcess::check_running);
            let options = options.clone();
            async move {
                running?;
                let attempt = async {
                    let mut client = etcd_client::Client::connect(endpoints, Some(options)).await?;
                    client.put("cairn-bench/ready", "1", None).await
                };
                Ok(attempt.await.map(drop).map_err(|e| e.to_string()))
            }
        })
        .await
    }
}

/// The `etcd` binary to run: `explicit` if given, else `etcd` on the PATH,
/// installing Debian's `etcd-server` and `etcd-client` packages with apt-get
/// (through sudo unless root) when it is missing.
pub async fn ensure_etcd(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        anyhow::ensure!(path.is_file(), "no etcd binary at {}", path.display());
        return Ok(path);
    }
    if let Some(path) = on_path("etcd") {
        return Ok(path);
    }
    eprintln!("etcd not found");
    apt_install(&PACKAGES).await?;
    on_path("etcd").context("etcd was installed but is not on the PATH")
}

/// The version `etcd --version` reports (its first line, `etcd Version: X`).
async fn etcd_version(etcd_bin: &Path) -> anyhow::Result<String> {
    let output = Command::new(etcd_bin)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", etcd_bin.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or_default();
    Ok(first
        .strip_prefix("etcd Version:")
        .unwrap_or(first)
        .trim()
        .to_string())
}
