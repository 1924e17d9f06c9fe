//! End to end with real openraft: single-node Raft groups sharing one
//! `Store` commit, apply, snapshot, and come back after a restart.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cairn_storage::{CommandResult, ExpectedVersion, GroupId, NodeId, Store, TypeConfig};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, Config, Raft};

use crate::event_store::append_cmd;

/// A network for single-node groups: there is never anyone to talk to.
struct Alone;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, BasicNode, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
        "single-node test group",
    )))
}

impl RaftNetworkFactory<TypeConfig> for Alone {
    type Network = Alone;
    async fn new_client(&mut self, _target: NodeId, _node: &BasicNode) -> Alone {
        Alone
    }
}

impl RaftNetwork<TypeConfig> for Alone {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

const GROUPS: [GroupId; 3] = [0, 1, 2];
const WRITERS: usize = 20;
const WAIT: Option<Duration> = Some(Duration::from_secs(10));
const CLOSE_WAIT: Duration = Duration::from_secs(10);

async fn start(store: &Store, group: GroupId) -> Result<Raft<TypeConfig>> {
    let config = Config {
        cluster_name: format!("group-{group}"),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    }
    .validate()?;
    let raft = Raft::new(
        1,
        Arc::new(config),
        Alone,
        store.leader_log_store(group, 1),
        store.state_machine(group)?,
    )
    .await?;
    Ok(raft)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_node_groups_commit_apply_snapshot_and_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path())?;
    let mut rafts = Vec::new();
    for g in GROUPS {
        let raft = start(&store, g).await?;
        raft.initialize(BTreeMap::from([(1, BasicNode::default())]))
            .await?;
        raft.wait(WAIT).current_leader(1, "leader elected").await?;
        rafts.push(raft);
    }

    // Concurrent writers on every group.
    let mut tasks = tokio::task::JoinSet::new();
    for (g, raft) in GROUPS.iter().zip(&rafts) {
        for w in 0..WRITERS {
            let raft = raft.clone();
            let g = *g;
            tasks.spawn(async move {
                let cmd = append_cmd(
                    1_000,
                    &format!("s{w}"),
                    ExpectedVersion::NoStream,
                    &[&format!("{g}-{w}")],
                );
                (g, raft.client_write(cmd).await)
            });
        }
    }
    while let Some(joined) = tasks.join_next().await {
        let (g, written) = joined?;
        let CommandResult::Appended(r) = written?.data else {
            bail!("group {g}: not an append result")
        };
        let outcome = r.into_iter().next().context("one result")??;
        assert_eq!(outcome.first_version, 1);
    }

    let reader = store.reader();
    for g in GROUPS {
        // The leader reported its appends before their fsync, and applied
        // each only once it was durable.
        assert!(
            store.log_durability(g).early_appends() > 0,
            "group {g}: the leader's appends took the early path"
        );
        assert_eq!(reader.last_position(g)?, WRITERS as u64, "group {g}");
        let positions: Vec<u64> = reader
            .read_partition_log(g, 1, 1000)?
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(positions, (1..=WRITERS as u64).collect::<Vec<_>>());
        for w in 0..WRITERS {
            let ids: Vec<String> = reader
                .read_stream(g, &format!("s{w}"), 0, 10)?
                .into_iter()
                .map(|e| e.id)
                .collect();
            assert_eq!(ids, [format!("{g}-{w}")]);
        }
    }

    // A snapshot of group 0, built by openraft through our builder.
    let applied = rafts[0]
        .metrics()
        .borrow()
        .last_applied
        .context("applied")?;
    rafts[0].trigger().snapshot().await?;
    rafts[0]
        .wait(WAIT)
        .snapshot(applied, "snapshot built")
        .await?;
    let current = store
        .state_machine(0)?
        .get_current_snapshot()
        .await?
        .context("current snapshot")?;
    assert_eq!(current.meta.last_log_id, Some(applied));

    // Restart everything on the same directory. Openraft's detached tasks
    // may still hold store handles after `shutdown` returns: `close` waits
    // until the database is really closed and its directory unlocked.
    for raft in rafts.drain(..) {
        raft.shutdown().await?;
    }
    drop(reader);
    store.close(CLOSE_WAIT).await?;
    let store = Store::open(dir.path())?;
    for g in GROUPS {
        let raft = start(&store, g).await?;
        raft.wait(WAIT)
            .current_leader(1, "leader after restart")
            .await?;
        let cmd = append_cmd(1_000, "s0", ExpectedVersion::Exact(1), &["after-restart"]);
        let CommandResult::Appended(r) = raft.client_write(cmd).await?.data else {
            bail!("not an append result")
        };
        let outcome = r.into_iter().next().context("one result")??;
        assert_eq!(
            (outcome.first_version, outcome.first_position),
            (2, WRITERS as u64 + 1),
            "group {g}"
        );
        assert_eq!(store.reader().read_stream(g, "s0", 0, 10)?.len(), 2);
        assert!(
            store.log_durability(g).early_appends() > 0,
            "group {g}: the leader after a restart"
        );
        raft.shutdown().await?;
    }
    store.close(CLOSE_WAIT).await?;
    Ok(())
}
