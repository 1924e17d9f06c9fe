//! Real `cairn` processes: the seed's user scenario through different nodes,
//! `kill -9` of a partition leader, restart and catch-up.

use std::time::Duration;

use cairn_client::{Client, EventData, ExpectedVersion};
use cairn_tests::process::json;
use cairn_tests::{ProcessCluster, eventually};
use serde_json::Value;

const PARTITIONS: u32 = 16;

fn ok(output: std::process::Output) -> Value {
    json(&output).unwrap_or_else(|e| panic!("cairn failed: {e}"))
}

/// The leader of `stream`'s partition according to node `via`.
fn leader_of(cluster: &ProcessCluster, via: u64, stream: &str) -> Result<u64, String> {
    let partition = cairn_cluster::partition_of(stream, PARTITIONS) as usize;
    let status = cluster.status(via)?;
    status["partitions"][partition]["leader"]
        .as_u64()
        .ok_or_else(|| format!("no leader: {status}"))
}

/// Asks node `via` to create user `id`; returns the reply.
fn create_user(cluster: &ProcessCluster, via: u64, id: &str, name: &str) -> Value {
    let command = serde_json::json!({
        "type": "CREATE_USER",
        "userId": id,
        "name": name,
        "email": format!("{id}@example.com"),
    });
    ok(cluster.cli_on(via, &["actor", "ask", "user", id, &command.to_string()]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_scenario_survives_kill_9_of_the_leader_and_a_restart() {
    let mut cluster = ProcessCluster::start(3).await;

    let created = create_user(&cluster, 1, "alice", "Alice");
    assert_eq!(created["version"], 1, "{created}");
    ok(cluster.cli_on(
        2,
        &[
            "actor",
            "ask",
            "user",
            "alice",
            r#"{"type":"UPDATE_USER","changes":{"name":"Alice L."}}"#,
        ],
    ));
    let login = ok(cluster.cli_on(
        3,
        &[
            "actor",
            "ask",
            "user",
            "alice",
            r#"{"type":"LOGIN","credentials":{"email":"alice@example.com","password":"pw"}}"#,
        ],
    ));
    assert_eq!(login["reply"]["success"], true, "{login}");
    let state = ok(cluster.cli_on(1, &["actor", "state", "user", "alice"]));
    assert_eq!(state["name"], "Alice L.", "{state}");
    assert_eq!(state["loginAttempts"], 1, "{state}");

    ok(cluster.cli_on(2, &["actor", "ask", "account", "acc", r#"{"type":"OPEN"}"#]));
    ok(cluster.cli_on(
        3,
        &[
            "actor",
            "ask",
            "account",
            "acc",
            r#"{"type":"DEPOSIT","amount":40}"#,
        ],
    ));
    let refused = cluster.cli_on(
        1,
        &[
            "actor",
            "ask",
            "account",
            "acc",
            r#"{"type":"WITHDRAW","amount":100}"#,
        ],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("insufficient funds"));

    // kill -9 the leader of alice's partition; another node takes over.
    let leader = leader_of(&cluster, 1, "user-alice").expect("a leader");
    cluster.kill(leader);
    let other = (1..=3).find(|id| *id != leader).expect("a survivor");
    let after = eventually(
        "the actor to answer from another node",
        Duration::from_secs(15),
        || async {
            json(&cluster.cli_on(other, &[
            "actor", "ask", "user", "alice",
            r#"{"type":"LOGIN","credentials":{"email":"wrong@example.com","password":"pw"}}"#,
        ]))
        },
    )
    .await;
    assert_eq!(after["reply"]["success"], false);
    assert_eq!(
        after["version"], 4,
        "every acknowledged event survived: {after}"
    );
    let state = ok(cluster.cli_on(other, &["actor", "state", "user", "alice"]));
    assert_eq!(
        (state["name"].as_str(), state["loginAttempts"].as_u64()),
        (Some("Alice L."), Some(2))
    );
    let account = ok(cluster.cli_on(other, &["actor", "state", "account", "acc"]));
    assert_eq!(account["balance"], 40.0);

    // Restart it with the same command: it rejoins and catches up.
    cluster.spawn(leader);
    let partition = cairn_cluster::partition_of("user-alice", PARTITIONS) as usize;
    eventually(
        "the restarted node to catch up",
        Duration::from_secs(30),
        || async {
            let mine = cluster.status(leader)?;
            let theirs = cluster.status(other)?;
            let applied = mine["partitions"][partition]["appliedIndex"]
                .as_u64()
                .unwrap_or(0);
            let target = theirs["partitions"][partition]["appliedIndex"]
                .as_u64()
                .unwrap_or(u64::MAX);
            if applied >= target && target > 0 {
                Ok(())
            } else {
                Err(format!("{applied} < {target}"))
            }
        },
    )
    .await;

    // With the restarted node holding the data, losing another node is fine too.
    let second = (1..=3)
        .find(|id| *id != leader && *id != other)
        .expect("third node");
    cluster.kill(second);
    let state = eventually(
        "the actor to answer with one node down",
        Duration::from_secs(15),
        || async { json(&cluster.cli_on(leader, &["actor", "state", "user", "alice"])) },
    )
    .await;
    assert_eq!(state["loginAttempts"], 2, "{state}");
}

/// `kill -9` of every node at once, under load: all three replicas come
/// back from what their stores kept (the fsynced Raft log, the state
/// machine's unsynced applies) and elect again, often the same leader in
/// the same term, which commits nothing new at once. The writes go on for
/// longer than a follower keeps its log for the other (2 s), so log
/// truncation runs while they do. Every acknowledged event is there after
/// the restart, at its version, with its payload, read linearizably right
/// away (`Partition::read_index` covers what the restored leader held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_kill_9_of_every_node() {
    const STREAMS: usize = 16;
    const EVENTS: usize = 5;
    const WRITING: Duration = Duration::from_secs(4);
    let mut cluster = ProcessCluster::start(3).await;
    let all = (1..=3)
        .map(|id| cluster.addr(id))
        .collect::<Vec<_>>()
        .join(",");
    let client = Client::connect(&all)
        .await
        .expect("client")
        .with_timeout(Duration::from_secs(20));
    // Each stream's appends one after the other, the streams side by side,
    // so that many appends share each Raft entry; each writer returns how
    // many events were acknowledged.
    let started = std::time::Instant::now();
    let writes = (0..STREAMS).map(|s| {
        let client = client.clone();
        async move {
            let mut written = 0;
            while started.elapsed() < WRITING {
                let events = (written..written + EVENTS)
                    .map(|n| EventData::new("Tick", serde_json::json!({ "n": n })))
                    .collect();
                client
                    .append(
                        &format!("tick-{s}"),
                        events,
                        ExpectedVersion::Exact(written as u64),
                    )
                    .await
                    .expect("append");
                written += EVENTS;
            }
            written
        }
    });
    let written = futures::future::join_all(writes).await;

    for id in 1..=3 {
        cluster.kill(id);
    }
    for id in 1..=3 {
        cluster.spawn(id);
    }
    cluster.wait_ready().await;
    for (s, written) in written.into_iter().enumerate() {
        let stream = format!("tick-{s}");
        let mut numbers = Vec::new();
        loop {
            let from = numbers.len() as u64 + 1;
            let page = eventually(
                "the stream to read back",
                Duration::from_secs(30),
                || async {
                    client
                        .read(&stream, from, 0)
                        .await
                        .map_err(|e| e.to_string())
                },
            )
            .await;
            assert_eq!(page.stream_version, written as u64, "{stream}");
            numbers.extend(page.events.iter().map(|e| e.data["n"].clone()));
            if page.events.is_empty() || numbers.len() >= written {
                break;
            }
        }
        let expected: Vec<_> = (0..written).map(serde_json::Value::from).collect();
        assert_eq!(numbers, expected, "{stream}");
    }
}

/// `cairn bench append --events N` makes every append carry N events, and
/// its last line reports the appends it made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_append_writes_appends_of_the_asked_size() {
    let cluster = ProcessCluster::start(3).await;
    let args = [
        "bench",
        "append",
        "--concurrency",
        "2",
        "--duration",
        "1",
        "--events",
        "7",
        "--keys",
        "1",
    ];
    let output = cluster.cli_on(1, &args);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let report: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(report["errors"], 0, "{report}");
    let appends = report["ops"].as_u64().unwrap_or_default();
    assert!(appends > 0, "{report}");
    let info = ok(cluster.cli_on(2, &["stream", "info", "bench-0"]));
    assert_eq!(
        info["version"].as_u64(),
        Some(7 * appends),
        "{info} {report}"
    );
}

/// A node asked to stop (SIGTERM) ends the streams its peers (Raft) and
/// clients (asks) keep open to it rather than waiting for them, and exits
/// cleanly; the other two keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_streams_held_open_to_a_node_and_it_exits_cleanly() {
    let mut cluster = ProcessCluster::start(3).await;
    // A client whose asks all go through node 3, over one open AskStream.
    let client = cairn_client::Client::connect(cluster.addr(3))
        .await
        .expect("connect")
        .without_leader_routing();
    client
        .ask("account", "held", &serde_json::json!({"type": "OPEN"}))
        .await
        .expect("an ask through node 3");

    let exited_ok = cluster.terminate(3, Duration::from_secs(60)).await;
    let log = cluster.log(3);
    assert!(exited_ok, "node 3 exited with a failure: {log}");
    assert!(
        log.contains("stopped"),
        "node 3 did not finish stopping: {log}"
    );
    assert!(
        !log.contains("still open"),
        "node 3 waited out open streams instead of ending them: {log}"
    );

    let deposit = ok(cluster.cli_on(
        1,
        &[
            "actor",
            "ask",
            "account",
            "held",
            r#"{"type":"DEPOSIT","amount":5}"#,
        ],
    ));
    assert_eq!(deposit["version"], 2, "{deposit}");
}

/// `--worker-threads`: nodes that each run their tasks on one thread serve
/// appends and actor calls through any node, also after one of them is
/// killed and restarted; a count of 0 is refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_one_worker_thread_each_serve_and_recover() {
    let mut cluster = ProcessCluster::start_with(3, &["--worker-threads", "1"]).await;
    for id in 1..=3 {
        let log = cluster.log(id);
        assert!(log.contains("worker_threads=1"), "node {id}: {log}");
    }
    for (via, n) in [(1, 1), (2, 2), (3, 3)] {
        let appended = ok(cluster.cli_on(
            via,
            &[
                "stream",
                "append",
                "threads",
                &format!(r#"{{"type":"N","data":{{"n":{n}}}}}"#),
            ],
        ));
        assert_eq!(appended["lastVersion"], n, "{appended}");
    }
    cluster.kill(2);
    cluster.spawn(2);
    cluster.wait_ready().await;
    let read = ok(cluster.cli_on(2, &["stream", "read", "threads"]));
    assert_eq!(read["events"].as_array().map(Vec::len), Some(3), "{read}");
    let created = create_user(&cluster, 2, "bob", "Bob");
    assert_eq!(created["version"], 1, "{created}");

    let refused = std::process::Command::new(cairn_tests::process::cairn_binary())
        .args(["serve", "--worker-threads", "0"])
        .output()
        .expect("run cairn serve");
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--worker-threads"), "{stderr}");
}
