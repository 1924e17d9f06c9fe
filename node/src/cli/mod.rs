//! The `cairn` command line: flags, and what each subcommand does. Client
//! commands print one JSON document on stdout; errors are returned to
//! `main`, which prints them on stderr.
//!
//! # Layout
//! - [`serve`]: `cairn serve`, flags to [`cairn_node::ServeConfig`], signals.
//! - [`actor`]: `cairn actor ask|state`.
//! - [`stream`]: `cairn stream append|read|info|delete|read-all|subscribe`.
//! - [`query`]: `cairn query`, `cairn projection status|reset`.
//! - [`admin`]: `cairn admin status|compact|add-node|remove-node|transfer-leader|rebalance`.
//! - [`bench`]: `cairn bench append|ask`, the load generator.
//! - [`parse`]: validating arguments (JSON commands and events, versions, addresses).
//! - [`output`]: printing JSON on stdout.

mod actor;
mod admin;
mod bench;
mod output;
mod parse;
mod query;
mod serve;
mod stream;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use parse::UsageError;

/// Cairn: a distributed virtual-actor cluster with event sourcing.
#[derive(Debug, Parser)]
#[command(name = "cairn", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (a single-node cluster by default).
    Serve(serve::ServeArgs),
    /// Send commands to actors and read their state.
    Actor(actor::ActorArgs),
    /// Append to, read and delete event streams.
    Stream(stream::StreamArgs),
    /// Ask a projection (read model), e.g. `cairn query user-analytics`.
    Query(query::QueryArgs),
    /// Projections' status, and rebuilding one from the start.
    Projection(query::ProjectionArgs),
    /// Inspect the cluster, change its members, move leaders.
    Admin(admin::AdminArgs),
    /// Generate load and report throughput and latency.
    Bench(bench::BenchArgs),
}

impl Command {
    /// The log filter when `RUST_LOG` is not set: a server logs what it does
    /// (openraft's own chatter only when it matters), a client command only
    /// what went wrong.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info,openraft=warn",
            _ => "warn",
        }
    }

    /// The runtime's worker threads, when the command sets them.
    pub fn worker_threads(&self) -> Option<usize> {
        match self {
            Command::Serve(args) => args.worker_threads,
            _ => None,
        }
    }
}

/// Runs the parsed command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Actor(args) => actor::run(args).await,
        Command::Stream(args) => stream::run(args).await,
        Command::Query(args) => query::run_query(args).await,
        Command::Projection(args) => query::run_projection(args).await,
        Command::Admin(args) => admin::run(args).await,
        Command::Bench(args) => bench::run(args).await,
    }
}

/// How client commands reach the cluster.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The node(s) to talk to; any node serves any call. A comma-separated
    /// list is tried in turn.
    #[arg(
        long,
        global = true,
        env = "CAIRN_SERVER",
        default_value = cairn_client::DEFAULT_SERVER,
        value_name = "HOST:PORT[,HOST:PORT...]"
    )]
    pub server: String,
    /// Give up on a call after retrying for this many seconds.
    #[arg(long, global = true, default_value = "10", value_name = "SECONDS", value_parser = parse::seconds)]
    pub timeout: Duration,
}

impl ServerArgs {
    /// A client for `--server` (no connection is made until the first call).
    pub async fn client(&self) -> anyhow::Result<cairn_client::Client> {
        let client = cairn_client::Client::connect(&self.server)
            .await
            .map_err(|e| UsageError(format!("invalid --server: {e}")))?;
        Ok(client.with_timeout(self.timeout))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cairn").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn server_flag_goes_anywhere_after_the_group() {
        for args in [
            &["actor", "ask", "account", "a", "{}", "--server", "h:1"][..],
            &["actor", "--server", "h:1", "ask", "account", "a", "{}"][..],
        ] {
            let Command::Actor(actor) = parse(args).unwrap().command else {
                panic!("not an actor command");
            };
            assert_eq!(actor.server.server, "h:1");
        }
    }

    #[test]
    fn at_and_version_are_exclusive() {
        let err = parse(&[
            "actor",
            "state",
            "user",
            "u1",
            "--at",
            "5",
            "--version",
            "2",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["actor", "state", "user", "u1", "--version", "2"]).is_ok());
    }

    #[test]
    fn append_needs_an_event() {
        assert!(parse(&["stream", "append", "s"]).is_err());
    }

    #[test]
    fn subscribe_takes_a_stream_or_all() {
        assert!(parse(&["stream", "subscribe", "s"]).is_ok());
        assert!(parse(&["stream", "subscribe", "--all", "--from", "p0:1"]).is_ok());
        let err = parse(&["stream", "subscribe"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&["stream", "subscribe", "s", "--all"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["stream", "subscribe", "s", "--from-timestamp", "5"]).is_err());
        assert!(
            parse(&[
                "stream",
                "read-all",
                "--from",
                "p0:1",
                "--type",
                "A",
                "--type",
                "B",
                "--prefix",
                "user-",
                "--limit",
                "5",
                "--from-timestamp",
                "7"
            ])
            .is_ok()
        );
        let err = parse(&["stream", "read-all", "--from", "nope"]).unwrap_err();
        assert!(err.to_string().contains("p<partition>:<position>"), "{err}");
    }

    #[test]
    fn timeout_must_be_positive() {
        assert!(parse(&["admin", "status", "--timeout", "0"]).is_err());
        assert!(parse(&["admin", "status", "--timeout", "0.5"]).is_ok());
    }
}
