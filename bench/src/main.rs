//! `cairn-bench`: runs Cairn and its peers side by side. See `bench/README.md`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cairn_bench::{RunOptions, Workload};
use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Runs Cairn and its peers side by side under the same load"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a 3-node Cairn cluster, a 3-member etcd cluster and a
    /// PostgreSQL server on loopback, run the workloads against them, print
    /// the tables and write JSON.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// A short run: 2 s per point, one round, 1 and 16 workers, small activation,
    /// failover and storage sizes.
    #[arg(long)]
    quick: bool,
    /// What CI runs: every workload at its smallest (4 workers, 1 s per
    /// point, a few thousand events). Never judges a number; fails only if
    /// an operation failed.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Measured seconds per point and round [default: 5; 2 with --quick; 1 with --smoke].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Times each point is measured, each time on every system in turn; the
    /// table gives each system's median round and the median of the rounds'
    /// ratios, with their range [default: 3; 1 with --quick or --smoke].
    #[arg(long, value_name = "N", value_parser = RangedU64ValueParser::<usize>::new().range(1..=100))]
    rounds: Option<usize>,
    /// Concurrencies to measure [default: 1,16,32,64,256; 1,16 with --quick; 4 with --smoke].
    #[arg(long, value_delimiter = ',', value_name = "N,...")]
    concurrency: Option<Vec<usize>>,
    /// Workloads to run [default: all].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "WORKLOAD,...")]
    workloads: Vec<Workload>,
    /// The `cairn` binary [default: $CARGO_TARGET_DIR/release/cairn, else
    /// beside this binary, else target/release/cairn].
    #[arg(long, value_name = "PATH")]
    cairn_bin: Option<PathBuf>,
    /// The `etcd` binary [default: etcd on the PATH, installed with apt-get if missing].
    #[arg(long, value_name = "PATH")]
    etcd_bin: Option<PathBuf>,
    /// The directory holding PostgreSQL's `initdb` and `postgres` [default:
    /// that of initdb on the PATH, else /usr/lib/postgresql/<newest>/bin,
    /// installed with apt-get if missing].
    #[arg(long, value_name = "DIR")]
    postgres_bin_dir: Option<PathBuf>,
    /// Leave etcd out.
    #[arg(long)]
    no_etcd: bool,
    /// Leave PostgreSQL out.
    #[arg(long)]
    no_postgres: bool,
    /// Where to write the results as JSON.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "target/cairn-bench/results.json"
    )]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Command::Run(args) = Cli::parse().command;
    let duration = match args.duration {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--duration must be a positive number of seconds, not {s}"),
        None => None,
    };
    let options = RunOptions {
        quick: args.quick,
        smoke: args.smoke,
        duration,
        rounds: args.rounds,
        concurrency: args.concurrency,
        workloads: args.workloads,
        cairn_bin: args.cairn_bin,
        etcd_bin: args.etcd_bin,
        postgres_bin_dir: args.postgres_bin_dir,
        no_etcd: args.no_etcd,
        no_postgres: args.no_postgres,
    };
    // On Ctrl-C the run is dropped, which kills every process it started.
    let finished = tokio::select! {
        report = cairn_bench::run(options) => Some(report?),
        _ = tokio::signal::ctrl_c() => None,
    };
    let Some(report) = finished else {
        eprintln!("\ninterrupted: stopped the clusters");
        std::process::exit(130);
    };
    println!("{}", report.table());
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.out, json + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!("results written to {}", args.out.display());
    let errors: u64 = report.rows.iter().map(|row| row.errors()).sum();
    if args.smoke && errors > 0 {
        anyhow::bail!("{errors} operations failed (see the notes under the table)");
    }
    Ok(())
}
