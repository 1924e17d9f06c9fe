//! `cairn serve`: run a node until SIGINT or SIGTERM.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use cairn_cluster::DEFAULT_ELECTION_TIMEOUT;
use cairn_node::ServeConfig;
use cairn_node::config::{
    DEFAULT_MAX_ACTIVATIONS, DEFAULT_PARTITIONS, DEFAULT_PASSIVATE_AFTER, DEFAULT_REPLICATION,
    DEFAULT_SNAPSHOT_EVERY,
};
use clap::Args;
use clap::builder::RangedU64ValueParser;

use super::parse::{self, UsageError};

/// Exit status after a second shutdown signal (as for a shell's Ctrl-C).
const EXIT_ON_SECOND_SIGNAL: i32 = 130;
/// Bounds of `--election-timeout`, in ms: heartbeats (a third of it) must
/// still be frequent enough, and a longer one only delays failover.
const MIN_ELECTION_TIMEOUT_MS: u64 = 50;
const MAX_ELECTION_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// This node's id (>= 1): unique in the cluster, fixed for its data directory.
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// The address to serve gRPC on.
    #[arg(long, default_value = "127.0.0.1:7400", value_name = "HOST:PORT")]
    pub listen: String,
    /// The address other nodes and clients reach this node at [default: its
    /// entry in --peers, else --listen].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// Where the node keeps its data; created if missing.
    #[arg(long, default_value = "./cairn-data", value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Every member of the initial cluster, this node included. Nodes started
    /// with the same list form the cluster once a majority is up [default:
    /// just this node].
    #[arg(long, value_name = "ID=HOST:PORT,...")]
    pub peers: Option<String>,
    /// Number of partitions, fixed when the cluster is created.
    #[arg(long, default_value_t = DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// Replicas per partition (fewer while the cluster is smaller).
    #[arg(long, default_value_t = DEFAULT_REPLICATION)]
    pub replication: usize,
    /// Snapshot an actor's state every this many of its events.
    #[arg(long, default_value_t = DEFAULT_SNAPSHOT_EVERY, value_name = "EVENTS")]
    pub snapshot_every: u64,
    /// Passivate an actor after this many seconds without a call.
    #[arg(long, default_value_t = DEFAULT_PASSIVATE_AFTER.as_secs_f64(), value_name = "SECONDS")]
    pub passivate_after: f64,
    /// Hold at most this many activations; the least recently used go first.
    #[arg(long, default_value_t = DEFAULT_MAX_ACTIVATIONS, value_name = "N")]
    pub max_activations: usize,
    /// Raft election timeout in milliseconds: a follower stands for election
    /// after hearing nothing from its leader for 3-4 times this. Raise it on
    /// machines that stall for seconds; all nodes should use the same.
    #[arg(long, default_value_t = DEFAULT_ELECTION_TIMEOUT.as_millis() as u64, value_name = "MS")]
    pub election_timeout: u64,
    /// Threads that run the node's tasks [default: one per core]. Lower it
    /// where several nodes share a machine: each then wakes its tasks on
    /// fewer threads, with fewer context switches between them.
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub worker_threads: Option<usize>,
}

impl ServeArgs {
    /// The node configuration these flags describe, or what is wrong with them.
    pub fn config(&self) -> Result<ServeConfig, UsageError> {
        if self.id == 0 {
            return Err(UsageError("invalid --id 0: node ids start at 1".into()));
        }
        let listen = parse::host_port(&self.listen)
            .map_err(|why| UsageError(format!("invalid --listen: {why}")))?;
        let advertise = match &self.advertise {
            Some(a) => Some(
                parse::host_port(a)
                    .map_err(|why| UsageError(format!("invalid --advertise: {why}")))?,
            ),
            None => None,
        };
        let (peers, advertise) = match &self.peers {
            None => {
                let advertise = advertise.unwrap_or_else(|| listen.clone());
                ([(self.id, advertise.clone())].into(), advertise)
            }
            Some(text) => {
                let peers = parse::peers(text)?;
                let Some(own) = peers.get(&self.id).cloned() else {
                    let ids = peers
                        .keys()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(UsageError(format!(
                        "--id {id} is not in --peers (which names nodes {ids}): start this node with one of those ids, or add `{id}=<host:port>` to --peers",
                        id = self.id
                    )));
                };
                if let Some(a) = advertise.as_ref().filter(|a| **a != own) {
                    return Err(UsageError(format!(
                        "--advertise {a} differs from this node's entry in --peers ({}={own}); other nodes reach it at the --peers address, so make them the same",
                        self.id
                    )));
                }
                (peers, own)
            }
        };
        if self.partitions == 0 {
            return Err(UsageError(
                "invalid --partitions 0: a cluster needs at least one partition".into(),
            ));
        }
        if self.replication == 0 {
            return Err(UsageError(
                "invalid --replication 0: each partition needs at least one replica".into(),
            ));
        }
        if self.snapshot_every == 0 {
            return Err(UsageError(
                "invalid --snapshot-every 0: use a number of events >= 1".into(),
            ));
        }
        if !(self.passivate_after.is_finite() && self.passivate_after > 0.0) {
            return Err(UsageError(format!(
                "invalid --passivate-after {}: use a number of seconds > 0, e.g. 300",
                self.passivate_after
            )));
        }
        if self.max_activations == 0 {
            return Err(UsageError(
                "invalid --max-activations 0: use a number >= 1".into(),
            ));
        }
        if !(MIN_ELECTION_TIMEOUT_MS..=MAX_ELECTION_TIMEOUT_MS).contains(&self.election_timeout) {
            return Err(UsageError(format!(
                "invalid --election-timeout {}: use {MIN_ELECTION_TIMEOUT_MS} to {MAX_ELECTION_TIMEOUT_MS} milliseconds (default {})",
                self.election_timeout,
                DEFAULT_ELECTION_TIMEOUT.as_millis()
            )));
        }
        let mut config = ServeConfig::single(&listen, self.data_dir.clone());
        config.node_id = self.id;
        config.advertise = advertise;
        config.peers = peers;
        config.partitions = self.partitions;
        config.replication = self.replication;
        config.snapshot_every = self.snapshot_every;
        config.passivate_after = Duration::from_secs_f64(self.passivate_after);
        config.max_activations = self.max_activations;
        config.election_timeout = Duration::from_millis(self.election_timeout);
        Ok(config)
    }
}

/// Runs the node until the first SIGINT or SIGTERM, then shuts it down in
/// order; a second signal exits at once.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    tracing::info!(
        node_id = config.node_id,
        listen = %config.listen,
        advertise = %config.advertise,
        data_dir = %config.data_dir.display(),
        peers = ?config.peers,
        partitions = config.partitions,
        replication = config.replication,
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "starting cairn node"
    );
    let shutdown = shutdown_signal()?;
    cairn_node::server::run(config, shutdown).await
}

/// A future that resolves on the first SIGINT or SIGTERM. A second signal
/// exits the process at once with status 130.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut signals = Signals::new()?;
    let (first, first_received) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = signals.next().await;
        tracing::info!("received {name}, shutting down (send it again to exit at once)");
        let _ = first.send(());
        let name = signals.next().await;
        tracing::warn!("received {name} while shutting down, exiting at once");
        std::process::exit(EXIT_ON_SECOND_SIGNAL);
    });
    Ok(async move {
        // An error means the watcher is gone, which can only happen as the
        // runtime shuts down: stop either way.
        let _ = first_received.await;
    })
}

/// SIGINT and SIGTERM as one stream of signal names.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    #[cfg(unix)]
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(unix)]
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }

    #[cfg(not(unix))]
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {})
    }

    #[cfg(not(unix))]
    async fn next(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn config(args: &[&str]) -> Result<ServeConfig, String> {
        let wrapper = Wrapper::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        wrapper.args.config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_a_single_node() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.node_id, c.listen.as_str(), c.advertise.as_str()),
            (1, "127.0.0.1:7400", "127.0.0.1:7400")
        );
        assert_eq!(c.data_dir, PathBuf::from("./cairn-data"));
        assert_eq!(c.peers, [(1, "127.0.0.1:7400".to_string())].into());
        assert_eq!(
            (c.partitions, c.replication, c.snapshot_every),
            (16, 3, 100)
        );
        assert_eq!(c.election_timeout, Duration::from_millis(300));
    }

    #[test]
    fn a_member_of_a_three_node_cluster() {
        let c = config(&[
            "--id",
            "2",
            "--listen",
            "0.0.0.0:7402",
            "--data-dir",
            "d2",
            "--peers",
            "1=10.0.0.1:7402,2=10.0.0.2:7402,3=10.0.0.3:7402",
            "--partitions",
            "8",
            "--election-timeout",
            "1000",
        ])
        .unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.listen, "0.0.0.0:7402");
        assert_eq!(c.advertise, "10.0.0.2:7402");
        assert_eq!(c.peers.len(), 3);
        assert_eq!(c.partitions, 8);
        assert_eq!(c.election_timeout, Duration::from_secs(1));
    }

    #[test]
    fn bad_flags_say_what_to_fix() {
        for (args, want) in [
            (&["--id", "0"][..], "invalid --id 0: node ids start at 1"),
            (
                &["--listen", "7400"][..],
                "invalid --listen: `7400` is not host:port",
            ),
            (&["--peers", "1=a:1,2"][..], "expected id=host:port"),
            (&["--peers", "1=a:1,1=b:1"][..], "node id 1 appears twice"),
            (
                &["--id", "4", "--peers", "1=a:1,2=b:1"][..],
                "--id 4 is not in --peers (which names nodes 1, 2)",
            ),
            (
                &["--advertise", "c:1", "--peers", "1=a:1"][..],
                "--advertise c:1 differs from this node's entry in --peers (1=a:1)",
            ),
            (&["--partitions", "0"][..], "invalid --partitions 0"),
            (&["--replication", "0"][..], "invalid --replication 0"),
            (&["--snapshot-every", "0"][..], "invalid --snapshot-every 0"),
            (
                &["--election-timeout", "10"][..],
                "invalid --election-timeout 10: use 50 to 60000 milliseconds (default 300)",
            ),
        ] {
            let err = config(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
