//! [`PostgresServer`]: one PostgreSQL server from Debian's `postgresql`
//! package (installed by [`ensure_postgres`] when missing), with the event
//! table the PostgreSQL peer writes to.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;
use tokio::process::Command;
use tokio_postgres::NoTls;

use crate::install::{apt_install, is_root, on_path, user_ids};
use crate::wait::wait_for;
use crate::{ChildProcess, free_ports};

/// How long the server may take to accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// How long a fast shutdown (SIGINT) may take before the server is killed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Connections the server accepts: one per worker at 256 workers, and more.
pub const MAX_CONNECTIONS: usize = 300;
/// Where Debian installs each major version's server binaries.
const DEBIAN_LIB: &str = "/usr/lib/postgresql";
/// The system user that owns the server's files when the harness is root
/// (PostgreSQL refuses to run as root); Debian's package creates it.
const SERVER_USER: &str = "postgres";

/// The table every PostgreSQL workload writes: one row per event, the
/// stream's version in the primary key, as an event store on PostgreSQL
/// keeps it.
const SCHEMA: &str = "CREATE TABLE events (
    stream_id text NOT NULL,
    version bigint NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (stream_id, version)
)";

/// One PostgreSQL server on an ephemeral loopback port, its data in a
/// temporary directory (removed when dropped). It runs with PostgreSQL's
/// durable defaults, set explicitly: `fsync=on`, `synchronous_commit=on`,
/// `full_page_writes=on` — a commit is acknowledged once its WAL is flushed
/// to disk. It is a single server: nothing is replicated.
#[derive(Debug)]
pub struct PostgresServer {
    // Declared before `dir`: the process goes before its data directory.
    server: Option<ChildProcess>,
    port: u16,
    version: String,
    dir: TempDir,
}

impl PostgresServer {
    /// Creates a database cluster with `initdb` in a temporary directory,
    /// starts `postgres` on it (as the `postgres` user when the harness is
    /// root), waits until it accepts a connection and creates the table.
    pub async fn start(bin_dir: &Path) -> anyhow::Result<PostgresServer> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-bench-postgres-")
            .tempdir()
            .context("creating a temporary directory for PostgreSQL's data")?;
        let owner = if is_root().await? {
            let (uid, gid) = user_ids(SERVER_USER).await.with_context(|| {
                format!("PostgreSQL refuses to run as root, and there is no `{SERVER_USER}` user to run it as")
            })?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("giving {} to {SERVER_USER}", dir.path().display()))?;
            Some((uid, gid))
        } else {
            None
        };
        let command = |program: &str| {
            let mut command = Command::new(bin_dir.join(program));
            if let Some((uid, gid)) = owner {
                command.uid(uid).gid(gid);
            }
            command
        };
        let data = dir.path().join("data");
        let initdb = command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .output()
            .await
            .context("running initdb")?;
        anyhow::ensure!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        let port = free_ports(1)?[0];
        let mut postgres = command("postgres");
        postgres
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string()])
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", &format!("max_connections={MAX_CONNECTIONS}")])
            .args(["-c", "fsync=on", "-c", "synchronous_commit=on"])
            .args(["-c", "full_page_writes=on"]);
        let log = dir.path().join("postgres.log");
        let server = ChildProcess::spawn("postgres", postgres, &log)?;
        let mut server = PostgresServer {
            server: Some(server),
            port,
            version: String::new(),
            dir,
        };
        server.version = server.wait_ready().await?;
        let client = server.connect().await?;
        client
            .batch_execute(SCHEMA)
            .await
            .context("creating the events table")?;
        Ok(server)
    }

    /// A new connection to the server, its connection task spawned.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(self.port).await
    }

    /// The server's version, e.g. `15.14 (Debian 15.14-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the server keeps its data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Shuts the server down (a fast shutdown: SIGINT) and waits until it
    /// is gone.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.server.take() {
            Some(server) => server.shut_down("INT", SHUTDOWN_GRACE).await,
            None => Ok(()),
        }
    }

    /// Retries a connection until one succeeds; returns the server's
    /// version. Fails early if the server exits.
    async fn wait_ready(&mut self) -> anyhow::Result<String> {
        let what = format!(
            "PostgreSQL accepts a connection (log in {})",
            self.dir.path().display()
        );
        let (server, port) = (&mut self.server, self.port);
        wait_for(&what, READY_TIMEOUT, POLL, || {
            let running = server.as_mut().map_or(Ok(()), ChildProcess::check_running);
            async move {
                running?;
                let attempt = async {
                    let client = connect(port).await?;
                    let row = client.query_one("SHOW server_version", &[]).await?;
                    anyhow::Ok(row.get::<_, String>(0))
                };
                Ok(attempt.await.map_err(|e| format!("{e:#}")))
            }
        })
        .await
    }
}

/// Connects to the server on `port` as `postgres`, spawning the
/// connection's task (it ends when the client is dropped).
async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let config = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    let (client, connection) = tokio_postgres::connect(&config, NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

/// The directory holding `initdb` and `postgres`: `explicit` if given, else
/// that of `initdb` on the PATH, else Debian's `/usr/lib/postgresql/<major>/bin`
/// (the newest), installing Debian's `postgresql` package when none is found.
pub async fn ensure_postgres(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(dir) = explicit {
        anyhow::ensure!(
            dir.join("postgres").is_file() && dir.join("initdb").is_file(),
            "no postgres and initdb in {}",
            dir.display()
        );
        return Ok(dir);
    }
    if let Some(dir) = find_postgres() {
        return Ok(dir);
    }
    eprintln!("PostgreSQL not found");
    apt_install(&["postgresql"]).await?;
    find_postgres().context("postgresql was installed but no initdb was found")
}

/// The directory of `initdb` on the PATH (resolving a symbolic link), or
/// the newest of Debian's `/usr/lib/postgresql/<major>/bin`.
fn find_postgres() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("postgres").is_file() && dir.join("initdb").is_file();
    if let Some(initdb) = on_path("initdb")
        && let Some(dir) = std::fs::canonicalize(initdb).ok()?.parent()
        && has_both(dir)
    {
        return Some(dir.to_path_buf());
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir(DEBIAN_LIB)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    majors.sort();
    majors.pop().map(|(_, dir)| dir)
}
