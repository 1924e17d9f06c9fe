//! Appends sent to a node that does not lead the stream's partition: the
//! node forwards them to the leader over one `AppendStream`, and every
//! caller gets its own outcome.

use std::time::Duration;

use cairn_client::{Client, Error, EventData, ExpectedVersion};
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::json;

const PARTITIONS: u32 = 4;

/// A stream whose partition node 1 does not lead.
async fn stream_not_led_by_node_1(cluster: &TestCluster) -> String {
    for k in 0.. {
        let stream = format!("forwarded-{k}");
        let group = cairn_cluster::partition_of(&stream, PARTITIONS);
        if cluster.leader_of(group).await != 1 {
            return stream;
        }
    }
    unreachable!("some partition has a leader other than node 1")
}

fn deposit(amount: u64) -> Vec<EventData> {
    vec![EventData::new("Deposited", json!({ "amount": amount }))]
}

/// Concurrent appends through a non-leader each get their own version; a
/// conflict comes back to the caller that caused it, naming its own
/// expected version; appends through the same node keep working once the
/// leader stops (the stream to it ends; the new leader answers), and none
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_through_a_node_that_does_not_lead_are_forwarded() {
    let mut cluster = TestCluster::start(3, PARTITIONS, test_tuning(10_000)).await;
    cluster.wait_for_leaders().await;
    let stream = stream_not_led_by_node_1(&cluster).await;
    let group = cairn_cluster::partition_of(&stream, PARTITIONS);
    let via_1 = cluster.client(1).await.without_leader_routing();

    let appends = (1..=40).map(|amount| {
        let (via_1, stream) = (via_1.clone(), stream.clone());
        async move {
            via_1
                .append(&stream, deposit(amount), ExpectedVersion::Any)
                .await
        }
    });
    let mut versions: Vec<u64> = futures::future::join_all(appends)
        .await
        .into_iter()
        .map(|r| r.expect("append through node 1").first_version)
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=40).collect::<Vec<_>>());

    // Concurrent conflicts, each with its own expected version: an outcome
    // handed to the wrong caller would show here.
    let conflicts = (100..120).map(|expected| {
        let (via_1, stream) = (via_1.clone(), stream.clone());
        async move {
            let result = via_1
                .append(&stream, deposit(1), ExpectedVersion::Exact(expected))
                .await;
            (expected, result)
        }
    });
    for (expected, result) in futures::future::join_all(conflicts).await {
        match result {
            Err(Error::WrongExpectedVersion {
                expected: sent,
                actual,
                ..
            }) => {
                assert_eq!(sent, expected.to_string());
                assert_eq!(actual, 40);
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    let leader = cluster.leader_of(group).await;
    cluster.stop(leader).await;
    // The same event id on every try: a try that timed out after it was
    // applied is not written again.
    let after = EventData::new("Deposited", json!({ "amount": 41 })).with_id("after-the-stop");
    eventually(
        "an append through node 1 after the leader stopped",
        Duration::from_secs(30),
        || async {
            via_1
                .append(&stream, vec![after.clone()], ExpectedVersion::Any)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    let version = stream_version_as_read(&via_1, &stream).await;
    assert_eq!(
        version, 41,
        "every acknowledged append is in the stream once"
    );
    cluster.shutdown().await;
}

/// The version of `stream`, having checked that a read from version 1
/// returns that many events.
async fn stream_version_as_read(client: &Client, stream: &str) -> u64 {
    let read = client.read(stream, 1, 0).await.expect("read");
    assert_eq!(read.events.len() as u64, read.stream_version);
    read.stream_version
}
