//! [`ChildProcess`]: a server process the harness started, killed when
//! dropped; [`free_ports`]: ephemeral loopback ports for it;
//! [`member_threads`]: the threads each cluster member may run on.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// How many lines of a failed process's log an error quotes.
const LOG_TAIL_LINES: usize = 20;

/// A process the harness started, with its output in a log file. It is
/// killed when dropped (on an error, a panic or Ctrl-C), so nothing the
/// harness started outlives it; [`ChildProcess::stop`] kills it and waits.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` as `name`, its stdout and stderr appended to `log`
    /// (a restarted server keeps one log).
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<ChildProcess> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.as_std().get_program()))?;
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Fails, quoting the end of its log, if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            ),
        }
    }

    /// Kills the process (SIGKILL) and waits until it is gone.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("stopping {}", self.name))
    }

    /// Asks the process to shut down with `signal` (e.g. `TERM`, `INT`) and
    /// waits up to `grace` for it to exit; kills it (SIGKILL) if it has not.
    pub async fn shut_down(mut self, signal: &str, grace: Duration) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status()
                .await
                .with_context(|| format!("signalling {}", self.name))?;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return Ok(());
            }
            eprintln!("{} did not exit within {grace:?}: killing it", self.name);
        }
        self.stop().await
    }
}

/// The threads each member of a three-member cluster on this one machine
/// runs its work on: a third of the machine's cores, at least one. Cairn
/// nodes get it as `--worker-threads`, etcd members as `GOMAXPROCS`; left to
/// themselves, each would run as many threads as the machine has cores,
/// three times over, and pay for the switches between them (on 2 cores,
/// Cairn nodes with one thread each spent 10-15% less CPU per append under
/// 16 writers: bench/README.md, session 14).
pub fn member_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 3).max(1)
}

/// `n` distinct loopback ports that were free a moment ago (held open
/// together while chosen, so they differ from each other).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding an ephemeral loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// The last lines of a log file, or why it could not be read.
fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(6).expect("loopback ports");
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 6);
    }

    #[tokio::test]
    async fn a_process_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = dir.path().join("sh.log");
        let mut command = Command::new("sh");
        command.args(["-c", "echo boom; exit 3"]);
        let mut child = ChildProcess::spawn("sh", command, &log).expect("sh starts");
        let error = loop {
            match child.check_running() {
                Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
                Err(e) => break e.to_string(),
            }
        };
        assert!(error.contains("sh exited"), "{error}");
        assert!(error.ends_with("boom"), "{error}");
    }
}
