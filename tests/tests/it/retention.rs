//! Deletion and retention on a 3-node cluster, as a user sees them: a
//! `max-count` trims what reads (and read-all) return, an actor stream with a
//! `max-count` below its snapshot interval stays rebuildable, and a hard
//! delete refuses writes for good.

use std::time::Duration;

use cairn_client::{Client, Error, EventData, ExpectedVersion, ReadAll, StateAt};
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::{Value, json};

/// The versions `read` returns for `stream` from its start.
async fn versions(client: &Client, stream: &str) -> Result<Vec<u64>, String> {
    let read = client.read(stream, 1, 0).await.map_err(|e| e.to_string())?;
    Ok(read.events.iter().map(|e| e.version).collect())
}

/// The versions of `stream`'s events that read-all returns, in order.
async fn versions_in_read_all(client: &Client, stream: &str) -> Vec<u64> {
    let mut read = ReadAll::new().limit(1000);
    let mut out = Vec::new();
    loop {
        let page = client.read_all(&read).await.expect("read-all");
        out.extend(
            page.events
                .iter()
                .filter(|e| e.stream == stream)
                .map(|e| e.version),
        );
        if page.end {
            return out;
        }
        read = read.from(page.checkpoint);
    }
}

async fn ask(client: &Client, id: &str, command: Value) -> Value {
    client
        .ask("account", id, &command)
        .await
        .unwrap_or_else(|e| panic!("account/{id} {command}: {e}"))
        .reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_count_trims_a_raw_stream_on_every_node() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let events = (1..=10)
        .map(|i| EventData::new("Placed", json!({ "n": i })))
        .collect();
    client
        .append("orders-1", events, ExpectedVersion::NoStream)
        .await
        .expect("append");
    assert_eq!(
        client
            .set_stream_metadata("orders-1", Some(3), None)
            .await
            .expect("set metadata"),
        10
    );
    for id in cluster.running() {
        let c = cluster.client(id).await;
        assert_eq!(
            versions(&c, "orders-1").await,
            Ok(vec![8, 9, 10]),
            "node {id}"
        );
        let info = c.info("orders-1").await.expect("info");
        assert_eq!(
            (info.version, info.max_count, info.max_age_ms),
            (10, Some(3), None)
        );
    }
    assert_eq!(
        versions_in_read_all(&client, "orders-1").await,
        vec![8, 9, 10],
        "purged events are gone from the partition log too"
    );

    client
        .append(
            "orders-1",
            vec![EventData::new("Placed", json!({ "n": 11 }))],
            ExpectedVersion::Exact(10),
        )
        .await
        .expect("append");
    assert_eq!(versions(&client, "orders-1").await, Ok(vec![9, 10, 11]));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_actor_with_max_count_below_its_snapshot_interval_stays_rebuildable() {
    // TestCluster snapshots actors every 10 events; keep only 5.
    let mut cluster = TestCluster::start(3, 2, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    client
        .set_stream_metadata("account-ret", Some(5), None)
        .await
        .expect("set metadata");
    ask(&client, "ret", json!({"type":"OPEN"})).await;
    let mut balance = 0.0;
    for amount in 1..=32 {
        balance += f64::from(amount);
        let reply = ask(&client, "ret", json!({"type":"DEPOSIT","amount":amount})).await;
        assert_eq!(reply["balance"], balance);
    }
    // 33 events; the newest snapshot will be at 30: it and the 5 newest
    // events bound what stays (29..=33), never anything after the snapshot.
    eventually(
        "the snapshot at 30 to let reads trim to the newest 5",
        Duration::from_secs(20),
        || async {
            match versions(&client, "account-ret").await? {
                v if v == (29..=33).collect::<Vec<_>>() => Ok(()),
                // An older snapshot still newest: everything after it shows.
                v if [11, 21].iter().any(|&f| v == (f..=33).collect::<Vec<_>>()) => {
                    Err(format!("{v:?}: snapshot at 30 not applied yet"))
                }
                v => panic!("reads show {v:?}: beyond max-count or a hole after the snapshot"),
            }
        },
    )
    .await;

    // Drop the activation: a new leader rebuilds from snapshot + tail.
    let group = cluster.partition_of_actor("account", "ret");
    let leader = cluster.leader_of(group).await;
    cluster.stop(leader).await;
    let survivor = *cluster.running().first().expect("two nodes left");
    let client = cluster.client(survivor).await;
    let state = client
        .state("account", "ret", StateAt::Latest)
        .await
        .expect("state");
    assert_eq!(state.version, 33);
    assert_eq!(state.state, json!({"balance": balance, "open": true}));
    let reply = ask(&client, "ret", json!({"type":"DEPOSIT","amount":100})).await;
    assert_eq!(reply["balance"], balance + 100.0);
    let shown = versions(&client, "account-ret").await.expect("read");
    assert!(shown.len() <= 5, "reads show {shown:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hard_deleted_stream_refuses_writes_and_reads_say_deleted() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let one = || vec![EventData::new("Noted", json!({}))];
    client
        .append("doomed", one(), ExpectedVersion::NoStream)
        .await
        .expect("append");
    assert_eq!(
        client
            .delete("doomed", true, ExpectedVersion::Any)
            .await
            .expect("delete"),
        1
    );
    for id in cluster.running() {
        let c = cluster.client(id).await;
        for expected in [ExpectedVersion::Any, ExpectedVersion::NoStream] {
            let refused = c.append("doomed", one(), expected).await.unwrap_err();
            assert!(matches!(refused, Error::StreamDeleted(_)), "{refused:?}");
        }
        let read = c.read("doomed", 1, 0).await.unwrap_err();
        assert!(matches!(read, Error::StreamDeleted(_)), "{read:?}");
        assert!(c.info("doomed").await.expect("info").tombstoned);
    }
    assert_eq!(
        versions_in_read_all(&client, "doomed").await,
        Vec::<u64>::new()
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_set_before_an_actors_first_snapshot_keeps_it_rebuildable() {
    let mut cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    ask(&client, "young", json!({"type":"OPEN"})).await;
    for _ in 0..4 {
        ask(&client, "young", json!({"type":"DEPOSIT","amount":10})).await;
    }
    // No actor snapshot yet (every 10 events in these clusters): a max-count
    // of 2 must not cut the history the actor is rebuilt from.
    client
        .set_stream_metadata("account-young", Some(2), None)
        .await
        .expect("set metadata");
    ask(&client, "young", json!({"type":"DEPOSIT","amount":10})).await;
    let leader = cluster.leader_of(0).await;
    cluster.stop(leader).await;
    let state = eventually(
        "the actor to be rebuilt on another node",
        Duration::from_secs(20),
        || async {
            client
                .state("account", "young", StateAt::Latest)
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    assert_eq!(
        (state.state["balance"].as_f64(), state.version),
        (Some(50.0), 6)
    );
    cluster.shutdown().await;
}
