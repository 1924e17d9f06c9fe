//! `cairn admin status|compact`.

use clap::{Args, Subcommand};

use super::{ServerArgs, output};

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print the cluster as the node reached sees it: nodes, partitions,
    /// leaders, replicas and their lag.
    Status,
    /// Flush and fully compact the RocksDB of every node in --server (one
    /// after another), so deleted and purged events leave the disk; prints
    /// each node's SST bytes before and after.
    Compact,
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    match args.command {
        AdminCommand::Status => {
            let status = args.server.client().await?.status().await?;
            output::json(&status)
        }
        AdminCommand::Compact => {
            let compacted = args.server.client().await?.compact().await?;
            output::json(&compacted)
        }
    }
}
