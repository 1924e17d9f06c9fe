//! Raft log truncation on a real 3-node in-process cluster: every replica
//! drops the log once no replica needs it (followers after keeping 500 ms of
//! it, see `test_tuning`), the leader keeps it for a follower that is down,
//! and everything stays readable on every replica.

use std::time::Duration;

use cairn_client::{EventData, ExpectedVersion};
use cairn_cluster::Partition;
use cairn_storage::NodeId;
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::json;

fn replica(cluster: &TestCluster, id: NodeId) -> Partition {
    cluster.node(id).cluster().partition(0).expect("replica")
}

fn purged(cluster: &TestCluster, id: NodeId) -> u64 {
    let metrics = replica(cluster, id).metrics();
    metrics.borrow().purged.map_or(0, |p| p.index)
}

/// The last log index the leader `leader` has seen `follower` match.
fn matched_by(cluster: &TestCluster, leader: NodeId, follower: NodeId) -> u64 {
    let metrics = replica(cluster, leader).metrics();
    let metrics = metrics.borrow();
    metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&follower).copied().flatten())
        .map_or(0, |log_id| log_id.index)
}

async fn append_ticks(client: &cairn_client::Client, range: std::ops::Range<u32>) {
    for i in range {
        let event = EventData::new("Tick", json!({ "i": i }));
        client
            .append(
                &format!("ticks-{}", i % 5),
                vec![event],
                ExpectedVersion::Any,
            )
            .await
            .expect("append");
    }
}

async fn wait_applied(cluster: &TestCluster, id: NodeId, target: u64, what: &str) {
    eventually(what, Duration::from_secs(30), || async {
        let applied = cluster.applied(id, 0);
        if applied >= target {
            Ok(())
        } else {
            Err(format!("applied {applied} of {target}"))
        }
    })
    .await;
}

async fn wait_purged(cluster: &TestCluster, id: NodeId, target: u64, what: &str) {
    eventually(what, Duration::from_secs(20), || async {
        let purged = purged(cluster, id);
        if purged >= target {
            Ok(())
        } else {
            Err(format!("purged {purged}, applied {target}"))
        }
    })
    .await;
}

async fn events_on(cluster: &TestCluster, id: NodeId) -> usize {
    replica(cluster, id)
        .read_local(|reader, group| reader.read_partition_log(group, 1, 10_000))
        .await
        .expect("read the local partition log")
        .len()
}

/// A leader tells a follower of a commit on the next message it sends it,
/// not in one of its own (cairn_cluster's `commit_notice`): once writes
/// stop, the heartbeats still bring every follower the last commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn followers_apply_the_last_write_once_writes_stop() {
    let cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let leader = cluster.leader_of(0).await;
    let term = || replica(&cluster, leader).metrics().borrow().current_term;
    let term_before = term();
    append_ticks(&cluster.client(leader).await, 0..30).await;
    let target = cluster.applied(leader, 0);
    for id in cluster.running_except(leader) {
        wait_applied(&cluster, id, target, "a follower to apply the last write").await;
        assert_eq!(
            events_on(&cluster, id).await,
            30,
            "node {id} reads every event"
        );
    }
    // From the leader's messages, not from an election (a new leader
    // applies all that was committed too).
    assert_eq!(term(), term_before, "no election");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_drops_its_log_once_all_have_applied_it() {
    let cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let leader = cluster.leader_of(0).await;
    append_ticks(&cluster.client(leader).await, 0..150).await;
    let target = cluster.applied(leader, 0);
    assert!(target >= 150, "one entry per append at least");

    eventually(
        "every replica to truncate its log",
        Duration::from_secs(20),
        || async {
            let states: Vec<_> = cluster
                .running()
                .into_iter()
                .map(|id| (id, purged(&cluster, id)))
                .collect();
            let done = states.iter().all(|&(_, purged)| purged >= target);
            if done {
                Ok(())
            } else {
                Err(format!("purged by node: {states:?}, applied {target}"))
            }
        },
    )
    .await;
    for id in cluster.running() {
        assert_eq!(
            events_on(&cluster, id).await,
            150,
            "node {id} reads every event"
        );
    }
    // Still a working group: it appends and replicates after truncation.
    append_ticks(&cluster.client(leader).await, 150..160).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_leader_keeps_the_log_for_a_follower_that_is_down() {
    let mut cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let leader = cluster.leader_of(0).await;
    let client = cluster.client(leader).await;
    append_ticks(&client, 0..20).await;
    let followers = cluster.running_except(leader);
    let (down, up) = (followers[0], followers[1]);
    let caught_up = cluster.applied(leader, 0);
    wait_applied(
        &cluster,
        down,
        caught_up,
        "the follower to apply everything",
    )
    .await;
    cluster.stop(down).await;
    // What the stopped follower holds, as the leader saw it matched: at
    // least what it applied, and more if an entry reached it after that.
    let held = matched_by(&cluster, leader, down);
    assert!(
        held >= caught_up,
        "the follower matched {held} < {caught_up}"
    );

    append_ticks(&client, 20..120).await;
    let target = cluster.applied(leader, 0);
    wait_purged(&cluster, up, target, "the live follower to truncate").await;
    let kept_from = purged(&cluster, leader) + 1;
    assert!(
        kept_from <= held + 1,
        "the leader dropped entries the stopped follower lacks: it keeps from {kept_from}, \
         the follower has up to {held}"
    );

    cluster.restart(down).await;
    wait_applied(&cluster, down, target, "the restarted follower to catch up").await;
    assert_eq!(events_on(&cluster, down).await, 120);
    // Once it has everything, the leader lets the rest of its log go.
    wait_purged(&cluster, leader, target, "the leader to truncate").await;
    cluster.shutdown().await;
}

/// After a restart of every node, a leader whose log is truncated does not
/// know how far its followers match it and has no entry to probe them with:
/// openraft would stream each of them the whole partition as a snapshot,
/// which they hold already. None is sent, and the groups work at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_cluster_sends_no_snapshot_to_replicas_that_hold_everything() {
    let partitions = 3;
    let mut cluster = TestCluster::start(3, partitions, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    append_ticks(&client, 0..60).await;
    let mut targets = Vec::new();
    for group in 0..partitions {
        let leader = cluster.leader_of(group).await;
        targets.push((group, cluster.applied(leader, group)));
    }
    eventually(
        "every replica to apply and truncate its whole log",
        Duration::from_secs(20),
        || async {
            let behind: Vec<_> = cluster
                .running()
                .into_iter()
                .flat_map(|id| {
                    targets
                        .iter()
                        .map(move |&(group, target)| (id, group, target))
                })
                .filter_map(|(id, group, target)| {
                    let partition = cluster.node(id).cluster().partition(group)?;
                    let m = partition.metrics().borrow().clone();
                    let purged = m.purged.map_or(0, |p| p.index);
                    let last = m.last_log_index.unwrap_or(0);
                    (purged < target || last > purged).then_some((id, group, purged, last))
                })
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "(node, partition, purged, last log index): {behind:?}"
                ))
            }
        },
    )
    .await;

    cluster.restart_all().await;
    let client = cluster.client_any().await;
    append_ticks(&client, 60..90).await;
    for id in cluster.running() {
        let status = cluster.client(id).await.status().await.expect("status");
        for partition in &status.partitions {
            assert_eq!(
                partition.snapshots_sent, 0,
                "node {id} streamed a snapshot of partition {}: {partition:?}",
                partition.id
            );
        }
    }
    for id in cluster.running() {
        let mut events = 0;
        for group in 0..partitions {
            let leader = cluster.leader_of(group).await;
            let target = cluster.applied(leader, group);
            eventually(
                "every replica to apply",
                Duration::from_secs(20),
                || async {
                    let applied = cluster.applied(id, group);
                    if applied >= target {
                        Ok(())
                    } else {
                        Err(format!(
                            "node {id} applied {applied} of {target} in {group}"
                        ))
                    }
                },
            )
            .await;
            events += cluster
                .node(id)
                .cluster()
                .partition(group)
                .expect("replica")
                .read_local(|reader, group| reader.read_partition_log(group, 1, 10_000))
                .await
                .expect("read the local partition log")
                .len();
        }
        assert_eq!(events, 90, "node {id} holds every event");
    }
    cluster.shutdown().await;
}
