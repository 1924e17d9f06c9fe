//! `cairn admin status|compact|add-node|remove-node|transfer-leader|rebalance`.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::{ServerArgs, output, parse};

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
    /// Add a node to the cluster. Start it first (`cairn serve --id <id>
    /// --listen <host:port> --peers <the members and itself>`); it then takes
    /// about 1/N of the replicas, copied from their leaders.
    AddNode {
        /// The new node's id.
        id: u64,
        /// The address it serves on (host:port).
        #[arg(value_parser = parse::host_port)]
        address: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove a node (running or not) from the cluster; its replicas move
    /// to the other nodes. Stop it once the move is done.
    RemoveNode {
        /// The node's id.
        id: u64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Hand a partition's leadership to another of its replicas. Writes to
    /// the partition pause for about one election timeout.
    TransferLeader {
        /// The partition (0..P).
        partition: u32,
        /// The node to lead it: one holding a replica of it.
        node: u64,
    },
    /// Move each partition's leadership to its preferred replica, so that
    /// leaders spread evenly over the nodes (after failures or restarts).
    Rebalance,
}

/// Waiting for a membership change to finish moving replicas.
#[derive(Debug, Args)]
pub struct Wait {
    /// Return only once every group has the replicas the change wants.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "300", value_name = "SECONDS", value_parser = parse::seconds)]
    wait_timeout: Duration,
}

impl Wait {
    async fn run(&self, client: &cairn_client::Client, epoch: u64) -> anyhow::Result<()> {
        if self.wait {
            client.wait_converged(epoch, self.wait_timeout).await?;
        }
        Ok(())
    }
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let client = args.server.client().await?;
    match args.command {
        AdminCommand::Status => output::json(&client.status().await?),
        AdminCommand::Compact => output::json(&client.compact().await?),
        AdminCommand::AddNode { id, address, wait } => {
            let changed = client.add_node(id, &address).await?;
            wait.run(&client, changed.epoch).await?;
            output::json(&changed)
        }
        AdminCommand::RemoveNode { id, wait } => {
            let changed = client.remove_node(id).await?;
            wait.run(&client, changed.epoch).await?;
            output::json(&changed)
        }
        AdminCommand::TransferLeader { partition, node } => {
            output::json(&client.transfer_leader(partition, node).await?)
        }
        AdminCommand::Rebalance => output::json(&client.rebalance().await?),
    }
}
