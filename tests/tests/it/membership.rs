//! `cairn admin add-node | remove-node | transfer-leader | rebalance` on a
//! cluster of real processes: replicas move and leaders change while every
//! acknowledged event stays readable.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_client::{Client, EventData, ExpectedVersion};
use cairn_tests::process::json;
use cairn_tests::{ProcessCluster, eventually};
use serde_json::{Value, json};

fn ok(output: std::process::Output) -> Value {
    json(&output).unwrap_or_else(|e| panic!("cairn failed: {e}"))
}

/// Runs a command that must fail; returns its stderr.
fn refused(output: std::process::Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure, got {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Appends `events` events to each of `streams` streams named `prefix-<i>`.
async fn write(client: &Client, prefix: &str, streams: usize, events: usize) {
    for i in 0..streams {
        let batch = (0..events)
            .map(|n| EventData::new("Counted", json!({ "n": n })))
            .collect();
        client
            .append(&format!("{prefix}-{i}"), batch, ExpectedVersion::Any)
            .await
            .unwrap_or_else(|e| panic!("append to {prefix}-{i}: {e}"));
    }
}

/// Every stream `prefix-<i>` holds `events` events, read through `client`.
async fn all_there(client: &Client, prefix: &str, streams: usize, events: usize) {
    for i in 0..streams {
        let stream = format!("{prefix}-{i}");
        let read = client
            .read(&stream, 1, 1000)
            .await
            .unwrap_or_else(|e| panic!("read {stream}: {e}"));
        assert_eq!(read.events.len(), events, "{stream}");
    }
}

/// Partitions whose replicas include `node`, per the status of node `via`.
fn partitions_on(status: &Value, node: u64) -> Vec<u64> {
    status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| {
            p["replicas"]
                .as_array()
                .expect("replicas")
                .contains(&json!(node))
        })
        .map(|p| p["id"].as_u64().expect("id"))
        .collect()
}

/// Every group's voters and wanted replicas, as one node's status has them
/// (partitions first, then the metadata group).
fn voters(status: &Value) -> Vec<(BTreeSet<u64>, BTreeSet<u64>)> {
    let ids = |v: &Value| -> BTreeSet<u64> {
        v.as_array()
            .map(|v| v.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default()
    };
    status["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .chain([&status["metadata"]])
        .map(|g| (ids(&g["voters"]), ids(&g["replicas"])))
        .collect()
}

/// Node `via`'s status once every group there passes `check(voters,
/// replicas)`: right after `--wait`, a node that does not lead a group may
/// not have heard of its last membership change yet.
async fn settled(
    cluster: &ProcessCluster,
    via: u64,
    check: impl Fn(&BTreeSet<u64>, &BTreeSet<u64>) -> bool,
) -> Value {
    eventually(
        &format!("node {via} to see every group settled"),
        Duration::from_secs(15),
        || async {
            let status = cluster.status(via)?;
            match voters(&status).iter().position(|(v, r)| !check(v, r)) {
                None => Ok(status),
                Some(group) => Err(format!("group {group} not yet: {status}")),
            }
        },
    )
    .await
}

/// Starts node `id` as an operator would and adds it through node `via`
/// with `--wait` (tried again while the new node is not answering yet);
/// returns its address and what `add-node` printed.
async fn start_and_add(cluster: &mut ProcessCluster, id: u64, via: u64) -> (String, Value) {
    let addr = cluster.spawn_new(id);
    let added = eventually(
        &format!("node {id} to be added"),
        Duration::from_secs(30),
        || async {
            json(&cluster.cli_on(
                via,
                &["admin", "add-node", &id.to_string(), &addr, "--wait"],
            ))
        },
    )
    .await;
    (addr, added)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_takes_its_share_and_a_node_removed_hands_its_share_over() {
    let mut cluster = ProcessCluster::start(3).await;
    let all = |cluster: &ProcessCluster, ids: &[u64]| {
        ids.iter()
            .map(|id| cluster.addr(*id).to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let client = Client::connect(&all(&cluster, &[1, 2, 3]))
        .await
        .expect("client");
    write(&client, "before", 48, 5).await;

    // Bad changes are refused, and change nothing.
    let err = refused(cluster.cli_on(1, &["admin", "add-node", "2", "127.0.0.1:1"]));
    assert!(err.contains("node 2 is already a member"), "{err}");
    let err = refused(cluster.cli_on(1, &["admin", "add-node", "9", "127.0.0.1:1"]));
    assert!(err.contains("does not answer at 127.0.0.1:1"), "{err}");
    let err = refused(cluster.cli_on(1, &["admin", "remove-node", "9"]));
    assert!(err.contains("node 9 is not a member"), "{err}");
    assert_eq!(cluster.status(2).expect("status")["epoch"], 1);
    let joiner = tempfile::TempDir::new().expect("temp dir");
    let wrong = std::process::Command::new(cairn_tests::process::cairn_binary())
        .args([
            "serve",
            "--id",
            "5",
            "--listen",
            "127.0.0.1:0",
            "--partitions",
            "8",
        ])
        .args(["--peers", &format!("1={},5=127.0.0.1:1", cluster.addr(1))])
        .arg("--data-dir")
        .arg(joiner.path())
        .output()
        .expect("run cairn serve");
    let err = refused(wrong);
    assert!(
        err.contains("has 16 partitions, not 8: start it with --partitions 16"),
        "{err}"
    );

    // Node 4 starts, learns it is not a member yet, and is added.
    let (addr4, added) = start_and_add(&mut cluster, 4, 2).await;
    assert_eq!(added["epoch"], 2, "{added}");
    assert!(
        added["replicasMoved"].as_u64().expect("moved") > 0,
        "{added}"
    );
    // Adding it again (a retry whose answer was lost) changes nothing.
    let again = ok(cluster.cli_on(3, &["admin", "add-node", "4", &addr4]));
    assert_eq!(again["epoch"], 2, "{again}");
    assert_eq!(again["replicasMoved"], 0, "{again}");
    let status = settled(&cluster, 4, |v, r| v == r).await;
    assert_eq!(status["epoch"], 2, "{status}");
    let on4 = partitions_on(&status, 4);
    assert!(!on4.is_empty() && on4.len() < 16, "node 4 holds {on4:?}");
    assert_eq!(voters(&status)[16].0.len(), 4, "metadata group: {status}");

    // Node 4 serves what was written before it came: lead one of its
    // partitions there and read everything through it alone.
    let moved = ok(cluster.cli_on(1, &["admin", "transfer-leader", &on4[0].to_string(), "4"]));
    assert_eq!(moved["to"], 4, "{moved}");
    let via4 = Client::connect(&addr4).await.expect("client of node 4");
    all_there(&via4, "before", 48, 5).await;
    write(&via4, "after-add", 16, 3).await;

    // A restarted member follows the new topology.
    cluster.kill(2);
    cluster.spawn(2);
    eventually(
        "node 2 back on epoch 2",
        Duration::from_secs(30),
        || async {
            let status = cluster.status(2)?;
            (status["epoch"] == 2)
                .then_some(())
                .ok_or(format!("{status}"))
        },
    )
    .await;

    // Node 1 leaves: its replicas move to the others, then it stops.
    let removed = ok(cluster.cli_on(3, &["admin", "remove-node", "1", "--wait"]));
    assert_eq!(removed["epoch"], 3, "{removed}");
    let status = settled(&cluster, 3, |v, r| v == r && !v.contains(&1)).await;
    assert!(partitions_on(&status, 1).is_empty(), "{status}");
    // Node 1 let go of every replica it held.
    eventually(
        "node 1 to stop its replicas",
        Duration::from_secs(30),
        || async {
            let status = cluster.status(1)?;
            let held = status["partitions"]
                .as_array()
                .ok_or("no partitions")?
                .iter()
                .filter(|p| p["appliedIndex"].as_u64().unwrap_or(0) > 0)
                .count();
            (held == 0)
                .then_some(())
                .ok_or(format!("node 1 still holds {held}"))
        },
    )
    .await;

    // Node 1 comes back: added again, it gets a share anew (it dropped the
    // data of the replicas it let go, so it starts them empty).
    let readded = ok(cluster.cli_on(2, &["admin", "add-node", "1", cluster.addr(1), "--wait"]));
    assert_eq!(readded["epoch"], 4, "{readded}");
    let status = settled(&cluster, 1, |v, r| v == r).await;
    assert!(!partitions_on(&status, 1).is_empty(), "{status}");
    // Any one node can go: every group keeps a majority of replicas that
    // hold its data, node 1's new ones among them.
    cluster.kill(3);
    let rest = Client::connect(&all(&cluster, &[1, 2, 4]))
        .await
        .expect("client");
    all_there(&rest, "before", 48, 5).await;
    all_there(&rest, "after-add", 16, 3).await;
    write(&rest, "after-remove", 16, 2).await;
    all_there(&rest, "after-remove", 16, 2).await;
}

/// Appends to `streams` in turn, one event at a time, until `stop`; returns
/// every acknowledged (stream, version).
fn keep_writing(
    client: Client,
    streams: Vec<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<(String, u64)>> {
    tokio::spawn(async move {
        let mut acknowledged = Vec::new();
        for round in 0.. {
            if *stop.borrow() {
                break;
            }
            let stream = &streams[round % streams.len()];
            let event = EventData::new("Tick", json!({ "round": round }));
            if let Ok(r) = client
                .append(stream, vec![event], ExpectedVersion::Any)
                .await
            {
                acknowledged.push((stream.clone(), r.last_version));
            }
        }
        acknowledged
    })
}

/// Every acknowledged append is there.
async fn none_lost(client: &Client, acknowledged: &[(String, u64)]) {
    let mut newest = std::collections::BTreeMap::new();
    for (stream, version) in acknowledged {
        let v = newest.entry(stream.clone()).or_insert(0);
        *v = (*v).max(*version);
    }
    for (stream, version) in newest {
        let read = client.read(&stream, 1, 10_000).await.expect("read");
        assert!(
            read.stream_version >= version,
            "{stream} lost version {version}"
        );
        assert_eq!(
            read.events.len() as u64,
            read.stream_version,
            "{stream} has gaps"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_is_replaced_while_writes_go_on() {
    let mut cluster = ProcessCluster::start(3).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let servers = format!("{},{}", cluster.addr(1), cluster.addr(2));
    let client = Client::connect(&servers).await.expect("client");
    let busy = (0..64).map(|i| format!("busy-{i}")).collect();
    let writer = keep_writing(client.clone(), busy, stopped);
    eventually("some writes", Duration::from_secs(10), || async {
        let info = client
            .read("busy-3", 1, 1)
            .await
            .map_err(|e| e.to_string())?;
        (info.stream_version > 0)
            .then_some(())
            .ok_or("none yet".to_string())
    })
    .await;

    // Node 3's machine dies; node 4 takes its place.
    cluster.kill(3);
    // Removing another member now would leave a group no majority to change with.
    let err = refused(cluster.cli_on(1, &["admin", "remove-node", "2"]));
    assert!(
        err.contains("removing node 2 leaves 2 members of which only 1 answer"),
        "{err}"
    );
    let (_, added) = start_and_add(&mut cluster, 4, 1).await;
    assert_eq!(added["epoch"], 2, "{added}");
    let removed = ok(cluster.cli_on(2, &["admin", "remove-node", "3", "--wait"]));
    assert_eq!(removed["epoch"], 3, "{removed}");

    stop.send_replace(true);
    let acknowledged = writer.await.expect("writer");
    assert!(
        acknowledged.len() > 10,
        "only {} writes",
        acknowledged.len()
    );
    let want: BTreeSet<u64> = [1, 2, 4].into();
    settled(&cluster, 4, |v, r| v == r && *v == want).await;
    // Nodes 1 and 2 alone could not answer for a group without node 4's replica.
    cluster.kill(1);
    let via = format!("{},{}", cluster.addr(2), cluster.addr(4));
    none_lost(&Client::connect(&via).await.expect("client"), &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request_and_rebalances_without_losing_a_write() {
    let cluster = ProcessCluster::start(3).await;
    let servers = format!(
        "{},{},{}",
        cluster.addr(1),
        cluster.addr(2),
        cluster.addr(3)
    );
    let client = Client::connect(&servers).await.expect("client");

    let status = cluster.status(1).expect("status");
    let partition = 0u64;
    let leader = status["partitions"][0]["leader"].as_u64().expect("leader");
    let target = [1, 2, 3]
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");

    // Appends keep coming while the leadership moves; every acknowledged
    // one must be readable afterwards.
    let streams: Vec<String> = (0..200)
        .map(|i| format!("moving-{i}"))
        .filter(|s| cairn_client::partition_of(s, 16) == partition as u32)
        .take(8)
        .collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer = keep_writing(client.clone(), streams.clone(), stopped);
    let version_of = |stream: String| {
        let client = client.clone();
        async move {
            let read = client
                .read(&stream, 1, 10_000)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<u64, String>(read.stream_version)
        }
    };
    eventually(
        "writes before the transfer",
        Duration::from_secs(10),
        || {
            let v = version_of(streams[0].clone());
            async move { (v.await? > 0).then_some(()).ok_or("none yet".to_string()) }
        },
    )
    .await;
    let moved = ok(cluster.cli_on(
        3,
        &[
            "admin",
            "transfer-leader",
            &partition.to_string(),
            &target.to_string(),
        ],
    ));
    assert_eq!(moved["from"], leader, "{moved}");
    assert_eq!(moved["to"], target, "{moved}");
    for via in 1..=3 {
        eventually(
            "every node to see the new leader",
            Duration::from_secs(10),
            || async {
                let status = cluster.status(via)?;
                let now = &status["partitions"][0]["leader"];
                (*now == target)
                    .then_some(())
                    .ok_or(format!("leader {now}"))
            },
        )
        .await;
    }
    // The writer went on after the transfer, at the new leader.
    let after = version_of(streams[0].clone()).await.expect("read");
    eventually("writes after the transfer", Duration::from_secs(10), || {
        let v = version_of(streams[0].clone());
        async move {
            (v.await? > after)
                .then_some(())
                .ok_or("none yet".to_string())
        }
    })
    .await;
    stop.send_replace(true);
    let acknowledged = writer.await.expect("writer");
    none_lost(&client, &acknowledged).await;

    // Moving to a node without a replica, or a partition that does not exist, is refused.
    let err = refused(cluster.cli_on(1, &["admin", "transfer-leader", "0", "7"]));
    assert!(
        err.contains("node 7 holds no voting replica of partition 0"),
        "{err}"
    );
    let err = refused(cluster.cli_on(1, &["admin", "transfer-leader", "16", "1"]));
    assert!(err.contains("partition 16 does not exist"), "{err}");

    // Rebalance puts every partition's leadership on its preferred replica.
    let rebalanced = ok(cluster.cli_on(2, &["admin", "rebalance"]));
    assert_eq!(rebalanced["failed"], json!([]), "{rebalanced}");
    eventually(
        "every partition led by its preferred replica",
        Duration::from_secs(10),
        || async {
            let status = cluster.status(1)?;
            let partitions = status["partitions"].as_array().ok_or("no partitions")?;
            match partitions.iter().find(|p| p["leader"] != p["replicas"][0]) {
                None => Ok(()),
                Some(p) => Err(format!(
                    "partition {} led by {}: {status}",
                    p["id"], p["leader"]
                )),
            }
        },
    )
    .await;
    let again = ok(cluster.cli_on(2, &["admin", "rebalance"]));
    assert_eq!(again["unchanged"], 16, "{again}");
}
