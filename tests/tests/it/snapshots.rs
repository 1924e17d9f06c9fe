//! Actor snapshots for streams that have none of their own, and compaction,
//! on a 3-node cluster.

use std::time::Duration;

use cairn_client::{EventData, ExpectedVersion, StateAt};
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::json;

/// An account stream written through the plain event-store API has no actor
/// snapshots; the first activation replays it all and saves a snapshot at
/// every interval it crossed, on every replica, so later activations and
/// temporal queries start from one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_activation_saves_the_snapshots_its_replay_crossed() {
    // The harness snapshots every 10 events.
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let mut events = vec![EventData::new("ACCOUNT_OPENED", json!({}))];
    events.extend((1..=254).map(|_| EventData::new("MONEY_DEPOSITED", json!({"amount": 1.0}))));
    client
        .append("account-raw", events, ExpectedVersion::NoStream)
        .await
        .expect("append 255 events");

    let balance = client
        .ask("account", "raw", &json!({"type":"BALANCE"}))
        .await
        .expect("the first ask activates the actor");
    assert_eq!(balance.reply["balance"], json!(254.0));
    assert_eq!(balance.version, 255, "BALANCE writes nothing");

    let group = cluster.partition_of_actor("account", "raw");
    for node in cluster.running() {
        let reader = cluster.node(node).cluster().store().reader();
        eventually(
            &format!("node {node} to hold the crossed snapshots"),
            Duration::from_secs(20),
            || async {
                let version_at = |max| {
                    reader
                        .actor_snapshot(group, "account-raw", max)
                        .map_err(|e| e.to_string())
                        .map(|s| s.map(|s| s.version))
                };
                match (version_at(u64::MAX)?, version_at(129)?, version_at(9)?) {
                    (Some(250), Some(120), None) => Ok(()),
                    other => Err(format!("newest, <=129, <=9: {other:?}")),
                }
            },
        )
        .await;
    }
    // A temporal query from the snapshot at 120 equals the replay from zero.
    let at = client
        .state("account", "raw", StateAt::Version(129))
        .await
        .expect("state at version 129");
    assert_eq!(at.state["balance"], json!(128.0));
    assert_eq!(at.version, 129);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_runs_on_every_node_listed() {
    let cluster = TestCluster::start(3, 2, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let events = (0..200)
        .map(|i| EventData::new("Filler", json!({ "n": i, "pad": "x".repeat(200) })))
        .collect();
    client
        .append("filler", events, ExpectedVersion::Any)
        .await
        .expect("append");
    client
        .delete("filler", true, ExpectedVersion::Any)
        .await
        .expect("hard delete");
    let compacted = client.compact().await.expect("compact");
    let mut nodes: Vec<_> = compacted.iter().map(|c| c.node_id).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, [1, 2, 3]);
    assert!(
        compacted.iter().all(|c| c.sst_bytes_after > 0),
        "every node keeps its Raft log and state in SST files after the flush: {compacted:?}"
    );
    cluster.shutdown().await;
}
