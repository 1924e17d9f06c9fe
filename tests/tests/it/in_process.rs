//! In-process 3-node clusters: the actor and stream API as a user sees it,
//! and what Raft must guarantee under leader loss, restarts and partitions.

use std::time::Duration;

use cairn_client::{Error, EventData, ExpectedVersion, StateAt};
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::{Value, json};

async fn ask(client: &cairn_client::Client, actor: &str, id: &str, command: Value) -> Value {
    client
        .ask(actor, id, &command)
        .await
        .unwrap_or_else(|e| panic!("{actor}/{id} {command}: {e}"))
        .reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn actors_answer_from_every_node_and_bad_commands_write_nothing() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let (c1, c2, c3) = (
        cluster.client(1).await,
        cluster.client(2).await,
        cluster.client(3).await,
    );

    ask(
        &c1,
        "user",
        "alice",
        json!({"type":"CREATE_USER","userId":"alice","name":"Alice","email":"alice@example.com"}),
    )
    .await;
    ask(
        &c2,
        "user",
        "alice",
        json!({"type":"UPDATE_USER","changes":{"name":"Alice Liddell"}}),
    )
    .await;
    let login = ask(
        &c3,
        "user",
        "alice",
        json!({"type":"LOGIN","credentials":{"email":"alice@example.com","password":"pw"}}),
    )
    .await;
    assert_eq!(login, json!({"success": true}));
    for client in [&c1, &c2, &c3] {
        let state = client
            .state("user", "alice", StateAt::Latest)
            .await
            .expect("state");
        assert_eq!(state.version, 3);
        assert_eq!(state.state["name"], "Alice Liddell");
        assert_eq!(state.state["loginAttempts"], 1);
        assert_eq!(state.state["isActive"], true);
    }

    ask(&c1, "account", "bob", json!({"type":"OPEN"})).await;
    ask(
        &c2,
        "account",
        "bob",
        json!({"type":"DEPOSIT","amount":100}),
    )
    .await;
    let refused = c3
        .ask("account", "bob", &json!({"type":"WITHDRAW","amount":150}))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, Error::Rejected(m) if m.contains("insufficient funds")),
        "{refused:?}"
    );
    let unknown = c1
        .ask("account", "bob", &json!({"type":"STEAL"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, Error::InvalidArgument(m) if m.contains("unknown variant `STEAL`")),
        "{unknown:?}"
    );
    let no_type = c1
        .ask("robot", "r2", &json!({"type":"BEEP"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&no_type, Error::InvalidArgument(m) if m.contains("unknown actor type `robot`")),
        "{no_type:?}"
    );
    let state = c2
        .state("account", "bob", StateAt::Latest)
        .await
        .expect("state");
    assert_eq!(
        (state.state["balance"].as_f64(), state.version),
        (Some(100.0), 2)
    );
    assert_eq!(
        c3.read("account-bob", 1, 0)
            .await
            .expect("read")
            .events
            .len(),
        2
    );

    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_check_expected_versions_and_are_idempotent() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let first = EventData::new("OrderPlaced", json!({"sku": "a"})).with_id("e-1");
    let written = client
        .append("orders-1", vec![first.clone()], ExpectedVersion::NoStream)
        .await
        .expect("append");
    assert_eq!(
        (
            written.first_version,
            written.last_version,
            written.duplicate
        ),
        (1, 1, false)
    );

    let again = client
        .append("orders-1", vec![first], ExpectedVersion::NoStream)
        .await
        .expect("idempotent");
    assert!(again.duplicate);
    assert_eq!(
        (again.first_version, again.first_position),
        (1, written.first_position)
    );

    let wrong = client
        .append(
            "orders-1",
            vec![EventData::new("OrderPaid", json!({}))],
            ExpectedVersion::Exact(0),
        )
        .await
        .unwrap_err();
    match &wrong {
        Error::WrongExpectedVersion {
            expected,
            actual,
            message,
        } => {
            assert_eq!((expected.as_str(), *actual), ("0", 1));
            assert!(
                message.contains("expected 0") && message.contains("version 1"),
                "{message}"
            );
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
    let info = client.info("orders-1").await.expect("info");
    assert_eq!(
        (info.version, info.last_event_id.as_deref(), info.deleted),
        (1, Some("e-1"), false)
    );

    let second = client
        .append(
            "orders-1",
            vec![EventData::new("OrderPaid", json!({"amount": 3}))],
            ExpectedVersion::Exact(1),
        )
        .await
        .expect("append at 1");
    assert_eq!(second.last_version, 2);
    assert!(second.first_position > written.first_position);
    let read = client.read("orders-1", 2, 0).await.expect("read from 2");
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].event_type, "OrderPaid");
    assert_eq!(read.events[0].data, json!({"amount": 3}));

    client
        .delete("orders-1", false, ExpectedVersion::Any)
        .await
        .expect("soft delete");
    assert!(matches!(
        client.read("orders-1", 1, 0).await,
        Err(Error::StreamDeleted(_))
    ));
    let revived = client
        .append(
            "orders-1",
            vec![EventData::new("OrderPlaced", json!({}))],
            ExpectedVersion::NoStream,
        )
        .await
        .expect("append after soft delete");
    assert_eq!(revived.first_version, 3);
    assert_eq!(
        client
            .read("orders-1", 1, 0)
            .await
            .expect("read")
            .events
            .len(),
        1
    );

    client
        .delete("orders-1", true, ExpectedVersion::Any)
        .await
        .expect("hard delete");
    let refused = client
        .append(
            "orders-1",
            vec![EventData::new("X", json!({}))],
            ExpectedVersion::Any,
        )
        .await;
    assert!(
        matches!(refused, Err(Error::StreamDeleted(_))),
        "{refused:?}"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_the_leader_keeps_every_acknowledged_event() {
    let mut cluster = TestCluster::start(3, 2, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    ask(&client, "account", "acc", json!({"type":"OPEN"})).await;
    let group = cluster.partition_of_actor("account", "acc");
    let leader = cluster.leader_of(group).await;
    let followers = cluster.running_except(leader);
    let early = |cluster: &TestCluster| {
        [leader, followers[0], followers[1]].map(|id| cluster.early_appends(id, group))
    };
    let before = early(&cluster);
    for _ in 0..25 {
        ask(
            &client,
            "account",
            "acc",
            json!({"type":"DEPOSIT","amount":2}),
        )
        .await;
    }
    // The leader's fsyncs ran alongside its followers' (it reported its
    // own appends before them); a follower reports an append only once it
    // is durable.
    let after = early(&cluster);
    assert!(after[0] > before[0], "leader: {before:?} -> {after:?}");
    assert_eq!(after[1..], before[1..], "followers");
    cluster.stop(leader).await;

    let survivor = *cluster.running().first().expect("two nodes left");
    let client = cluster.client(survivor).await;
    let reply = ask(
        &client,
        "account",
        "acc",
        json!({"type":"DEPOSIT","amount":1}),
    )
    .await;
    assert_eq!(reply["balance"], 51.0);
    let state = client
        .state("account", "acc", StateAt::Latest)
        .await
        .expect("state");
    assert_eq!(state.version, 27);

    cluster.restart(leader).await;
    let new_leader = cluster.leader_of(group).await;
    eventually(
        "the restarted node to catch up",
        Duration::from_secs(20),
        || async {
            let (caught_up, target) = (
                cluster.applied(leader, group),
                cluster.applied(new_leader, group),
            );
            if caught_up >= target {
                Ok(())
            } else {
                Err(format!("{caught_up} < {target}"))
            }
        },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_follower_catches_up_by_snapshot() {
    // Compact after 20 entries, keeping none: the follower must get a snapshot.
    let mut cluster = TestCluster::start(3, 1, test_tuning(20)).await;
    let leader = cluster.leader_of(0).await;
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    cluster.stop(follower).await;

    let client = cluster.client(leader).await;
    for i in 0..120 {
        let event = EventData::new("Tick", json!({ "i": i }));
        client
            .append(
                &format!("ticks-{}", i % 7),
                vec![event],
                ExpectedVersion::Any,
            )
            .await
            .expect("append");
    }
    let leader_metrics = cluster
        .node(leader)
        .cluster()
        .partition(0)
        .expect("replica")
        .metrics();
    eventually(
        "the leader to compact its log",
        Duration::from_secs(20),
        || async {
            let m = leader_metrics.borrow().clone();
            if m.purged.is_some() {
                Ok(())
            } else {
                Err(format!("purged {:?}", m.purged))
            }
        },
    )
    .await;

    cluster.restart(follower).await;
    let target = cluster.applied(leader, 0);
    eventually(
        "the follower to install a snapshot and catch up",
        Duration::from_secs(30),
        || async {
            let m = cluster
                .node(follower)
                .cluster()
                .partition(0)
                .expect("replica")
                .metrics()
                .borrow()
                .clone();
            let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
            if m.snapshot.is_some() && applied >= target {
                Ok(())
            } else {
                Err(format!("{m:?}"))
            }
        },
    )
    .await;
    let events = cluster
        .node(follower)
        .cluster()
        .partition(0)
        .expect("replica")
        .read_local(|reader, group| reader.read_partition_log(group, 1, 1000))
        .await
        .expect("read local log");
    assert_eq!(events.len(), 120, "the follower holds every event");
    let status = client.status().await.expect("status");
    assert!(
        status.partitions[0].snapshots_sent >= 1 && status.partitions[0].snapshot_bytes_sent > 0,
        "the leader counts the snapshot it sent, and its bytes: {:?}",
        status.partitions[0]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_minority_cannot_commit() {
    let cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let (old, others) = cluster.isolate_leader(0).await;

    let minority = cluster
        .client(old)
        .await
        .with_timeout(Duration::from_secs(3));
    let lost = minority
        .append(
            "split",
            vec![EventData::new("Minority", json!({}))],
            ExpectedVersion::Any,
        )
        .await;
    assert!(
        lost.is_err(),
        "a leader cut off from the majority must not acknowledge: {lost:?}"
    );

    let majority = cluster.client(others[0]).await;
    majority
        .append(
            "split",
            vec![EventData::new("Majority", json!({}))],
            ExpectedVersion::Any,
        )
        .await
        .expect("the majority elects a leader and commits");

    cluster.network().heal();
    let leader = cluster.leader_of(0).await;
    let read = cluster
        .client(leader)
        .await
        .read("split", 1, 0)
        .await
        .expect("read");
    let types: Vec<_> = read.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["Majority"],
        "nothing the minority was sent may survive"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_leaders_activation_cannot_write() {
    let cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let first = cluster.client(cluster.leader_of(0).await).await;
    ask(&first, "account", "stale", json!({"type":"OPEN"})).await;
    ask(
        &first,
        "account",
        "stale",
        json!({"type":"DEPOSIT","amount":5}),
    )
    .await;

    // The ask below must reach the old leader's own activation, not be
    // forwarded to a new leader: `isolate_leader` cuts off a node that
    // still leads.
    let (old, others) = cluster.isolate_leader(0).await;
    let at_old = cluster
        .client(old)
        .await
        .with_timeout(Duration::from_secs(3));
    let refused = at_old
        .ask("account", "stale", &json!({"type":"DEPOSIT","amount":1}))
        .await;
    assert!(
        refused.is_err(),
        "the stale activation acknowledged a write: {refused:?}"
    );

    let majority = cluster.client(others[0]).await;
    let reply = ask(
        &majority,
        "account",
        "stale",
        json!({"type":"DEPOSIT","amount":7}),
    )
    .await;
    assert_eq!(reply["balance"], 12.0);

    cluster.network().heal();
    cluster.leader_of(0).await;
    let everywhere = cluster.client(old).await;
    let state = everywhere
        .state("account", "stale", StateAt::Latest)
        .await
        .expect("state");
    assert_eq!(
        (state.state["balance"].as_f64(), state.version),
        (Some(12.0), 3)
    );
    let reply = ask(
        &everywhere,
        "account",
        "stale",
        json!({"type":"DEPOSIT","amount":1}),
    )
    .await;
    assert_eq!(reply["balance"], 13.0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_actors_are_passivated_and_activations_are_bounded() {
    let cluster = TestCluster::start_with(1, 2, test_tuning(10_000), |config| {
        config.passivate_after = Duration::from_millis(300);
        config.max_activations = 3;
    })
    .await;
    let client = cluster.client(1).await;
    for i in 0..8 {
        ask(&client, "account", &format!("a{i}"), json!({"type":"OPEN"})).await;
        let active = cluster.node(1).runtime().active();
        assert!(active <= 3, "{active} activations held, the bound is 3");
    }
    eventually(
        "idle activations to be passivated",
        Duration::from_secs(10),
        || async {
            match cluster.node(1).runtime().active() {
                0 => Ok(()),
                n => Err(format!("{n} still active")),
            }
        },
    )
    .await;
    // A passivated actor comes back with its state (12 events: snapshot at 10 + tail).
    for _ in 0..11 {
        ask(
            &client,
            "account",
            "a0",
            json!({"type":"DEPOSIT","amount":1}),
        )
        .await;
    }
    eventually("passivation", Duration::from_secs(10), || async {
        match cluster.node(1).runtime().active() {
            0 => Ok(()),
            n => Err(format!("{n} still active")),
        }
    })
    .await;
    let reply = ask(
        &client,
        "account",
        "a0",
        json!({"type":"DEPOSIT","amount":1}),
    )
    .await;
    assert_eq!(reply["balance"], 12.0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn temporal_state_queries_match_a_replay_from_zero() {
    let cluster = TestCluster::start(3, 2, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    ask(&client, "account", "t", json!({"type":"OPEN"})).await;
    for i in 1..=25 {
        ask(
            &client,
            "account",
            "t",
            json!({"type":"DEPOSIT","amount": i}),
        )
        .await;
    }
    // Balance after version v: deposits 1..=v-1 (version 1 is OPEN).
    let balance_at = |v: u64| (1..v).sum::<u64>() as f64;
    for v in 1..=26 {
        let state = client
            .state("account", "t", StateAt::Version(v))
            .await
            .expect("state at version");
        assert_eq!(
            (state.version, state.state["balance"].as_f64()),
            (v, Some(balance_at(v))),
            "version {v}"
        );
    }
    let events = client.read("account-t", 1, 0).await.expect("read").events;
    for event in &events {
        let last_at_that_time = events
            .iter()
            .filter(|e| e.timestamp <= event.timestamp)
            .map(|e| e.version)
            .max();
        let state = client
            .state("account", "t", StateAt::Timestamp(event.timestamp))
            .await
            .expect("state at time");
        assert_eq!(Some(state.version), last_at_that_time);
        assert_eq!(
            state.state["balance"].as_f64(),
            Some(balance_at(state.version))
        );
    }
    let before = client
        .state("account", "t", StateAt::Timestamp(events[0].timestamp - 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&before, Error::NotFound(m) if m.contains("did not exist")),
        "{before:?}"
    );
    cluster.shutdown().await;
}

/// A node that does not lead an actor's partition forwards its asks to the
/// leader over one stream: concurrent asks each get their own reply,
/// rejections come back with their kind, and asks through the same node keep
/// working once that leader stops (the stream ends; a new leader answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asks_through_a_node_that_does_not_lead_are_forwarded() {
    let mut cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    cluster.wait_for_leaders().await;
    let mut id = String::new();
    for k in 0.. {
        id = format!("forwarded-{k}");
        let group = cluster.partition_of_actor("account", &id);
        if cluster.leader_of(group).await != 1 {
            break;
        }
    }
    let group = cluster.partition_of_actor("account", &id);
    let via_1 = cluster.client(1).await.without_leader_routing();

    ask(&via_1, "account", &id, json!({"type": "OPEN"})).await;
    let deposits = (1..=40).map(|amount| {
        let via_1 = via_1.clone();
        let id = id.clone();
        async move {
            let deposit = json!({"type": "DEPOSIT", "amount": amount});
            via_1.ask("account", &id, &deposit).await
        }
    });
    let replies = futures::future::join_all(deposits).await;
    let balances: Vec<f64> = replies
        .into_iter()
        .map(|r| {
            r.expect("deposit").reply["balance"]
                .as_f64()
                .expect("balance")
        })
        .collect();
    let distinct: std::collections::BTreeSet<u64> = balances.iter().map(|b| *b as u64).collect();
    assert_eq!(
        distinct.len(),
        40,
        "each ask got its own reply: {balances:?}"
    );
    assert_eq!(
        ask(&via_1, "account", &id, json!({"type": "BALANCE"})).await["balance"],
        820.0
    );
    let overdraft = via_1
        .ask("account", &id, &json!({"type": "WITHDRAW", "amount": 1000}))
        .await;
    match overdraft {
        Err(Error::Rejected(message)) => {
            assert!(message.contains("insufficient funds"), "{message}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // Concurrent rejections, each naming its own amount: an outcome handed
    // to the wrong ask would show here.
    let overdrafts = (1001..=1020).map(|amount| {
        let via_1 = via_1.clone();
        let id = id.clone();
        async move {
            let withdraw = json!({"type": "WITHDRAW", "amount": amount});
            (amount, via_1.ask("account", &id, &withdraw).await)
        }
    });
    for (amount, overdraft) in futures::future::join_all(overdrafts).await {
        match overdraft {
            Err(Error::Rejected(message)) => {
                assert!(
                    message.contains(&format!("withdraw {amount} ")),
                    "{amount}: {message}"
                )
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    let leader = cluster.leader_of(group).await;
    cluster.stop(leader).await;
    // One command id for every try: a try that timed out after it was
    // applied is not applied again.
    let ids = cairn_client::AskIds {
        command_id: "after-the-leader-stopped".into(),
        correlation_id: String::new(),
    };
    let deposit = json!({"type": "DEPOSIT", "amount": 1});
    eventually(
        "an ask through node 1 after the leader stopped",
        Duration::from_secs(30),
        || async {
            via_1
                .ask_with("account", &id, &deposit, ids.clone())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    assert_eq!(
        ask(&via_1, "account", &id, json!({"type": "BALANCE"})).await["balance"],
        821.0
    );
    cluster.shutdown().await;
}

/// The metadata group's leader records the cluster's topology (members and
/// partition table) in the group, so every replica of it holds the same one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_metadata_group_records_the_topology_on_every_replica() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let expected = serde_json::to_vec(&*cluster.node(1).cluster().topology()).expect("json");
    for id in [1, 2, 3] {
        let node = cluster.node(id).cluster();
        eventually(
            &format!("node {id} to hold the recorded topology"),
            Duration::from_secs(30),
            || async {
                let recorded = node
                    .store()
                    .reader()
                    .meta_get(
                        cairn_storage::META_GROUP,
                        cairn_cluster::node::META_TOPOLOGY_KEY,
                    )
                    .map_err(|e| e.to_string())?;
                match recorded {
                    Some(r) if r.as_ref() == expected.as_slice() => Ok(()),
                    other => Err(format!("recorded: {other:?}")),
                }
            },
        )
        .await;
    }
    cluster.shutdown().await;
}
