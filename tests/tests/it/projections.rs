//! Projections and the query bus on a 3-node cluster: exactly-once counts
//! across node loss and a cluster-wide restart, keyed queries, reset.

use std::time::Duration;

use cairn_client::{Client, Error, EventData, ExpectedVersion};
use cairn_node::NodeBuilder;
use cairn_node::projection::{Projection, ProjectionError, ReadModel};
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::{Value, json};

async fn ask(client: &Client, id: &str, command: Value) {
    client
        .ask("user", id, &command)
        .await
        .unwrap_or_else(|e| panic!("user/{id} {command}: {e}"));
}

async fn analytics(client: &Client) -> Value {
    eventually(
        "user-analytics to answer",
        Duration::from_secs(20),
        || async {
            client
                .query("user-analytics", &json!({}))
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_analytics_counts_each_event_once_across_node_loss_and_restarts() {
    let mut cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    for id in ["alice", "bob", "carol", "dave", "erin"] {
        let create = json!({"type":"CREATE_USER","userId": id,"name": id,"email": format!("{id}@example.com")});
        ask(&client, id, create).await;
    }
    for (id, email) in [
        ("alice", "alice@example.com"),
        ("bob", "bob@example.com"),
        ("carol", "nope@example.com"),
    ] {
        ask(
            &client,
            id,
            json!({"type":"LOGIN","credentials":{"email": email,"password":"pw"}}),
        )
        .await;
    }
    ask(&client, "dave", json!({"type":"DELETE_USER"})).await;
    let expected = json!({"totalUsers":5,"activeUsers":4,"totalLogins":3,"failedLogins":1});
    assert_eq!(analytics(&client).await, expected);

    let found = client
        .query("users-by-email", &json!({"email":"bob@example.com"}))
        .await
        .expect("by email");
    assert_eq!(found["userId"], "bob");
    ask(
        &client,
        "bob",
        json!({"type":"UPDATE_USER","changes":{"email":"robert@example.com"}}),
    )
    .await;
    let moved = client
        .query("users-by-email", &json!({"email":"robert@example.com"}))
        .await
        .expect("new email");
    assert_eq!(moved["userId"], "bob");
    let gone = client
        .query("users-by-email", &json!({"email":"bob@example.com"}))
        .await
        .unwrap_err();
    assert!(matches!(gone, Error::NotFound(_)), "{gone:?}");
    let bad = client
        .query("users-by-email", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&bad, Error::InvalidArgument(m) if m.contains("email")),
        "{bad:?}"
    );
    let unknown = client.query("no-such-view", &json!({})).await.unwrap_err();
    assert!(
        matches!(&unknown, Error::InvalidArgument(m) if m.contains("unknown projection")),
        "{unknown:?}"
    );

    // Lose a node, write more, bring it back: still exactly once.
    let victim = cluster.leader_of(0).await;
    cluster.stop(victim).await;
    ask(
        &client,
        "erin",
        json!({"type":"LOGIN","credentials":{"email":"erin@example.com","password":"pw"}}),
    )
    .await;
    let expected = json!({"totalUsers":5,"activeUsers":4,"totalLogins":4,"failedLogins":1});
    assert_eq!(analytics(&client).await, expected);
    cluster.restart(victim).await;
    cluster.wait_for_leaders().await;
    assert_eq!(analytics(&client).await, expected);

    // A cluster-wide restart.
    cluster.restart_all().await;
    assert_eq!(analytics(&client).await, expected);

    // Reset rebuilds from the logs to the same answer.
    let nodes = client
        .reset_projection("user-analytics")
        .await
        .expect("reset");
    assert_eq!(nodes, vec![1, 2, 3]);
    assert_eq!(analytics(&client).await, expected);
    let status = client.projection_status().await.expect("status");
    let caught_up = status
        .iter()
        .filter(|s| s.name == "user-analytics" && s.leader)
        .all(|s| s.lag_events == 0);
    assert!(caught_up, "{status:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_events_are_upcast_for_actors_and_projections_and_newer_ones_refused() {
    use cairn_client::{EventData, ExpectedVersion, StateAt};
    let cluster = TestCluster::start(3, 2, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    // The seed's example: USER_CREATED v1 had no email.
    let v1 = EventData::new("USER_CREATED", json!({"userId":"old","name":"Old Timer"}))
        .with_metadata(json!({"schema_version": 1}));
    client
        .append("user-old", vec![v1], ExpectedVersion::NoStream)
        .await
        .expect("append v1");
    let state = client
        .state("user", "old", StateAt::Latest)
        .await
        .expect("state");
    assert_eq!(state.state["email"], "unknown@example.com");
    let found = client
        .query("users-by-email", &json!({"email":"unknown@example.com"}))
        .await
        .expect("query");
    assert_eq!(found["userId"], "old");
    let read = client.read("user-old", 1, 0).await.expect("read").events;
    assert_eq!(
        (
            read[0].data["email"].as_str(),
            read[0].metadata["schema_version"].as_u64()
        ),
        (Some("unknown@example.com"), Some(2))
    );
    // The stored bytes never change; what the runtime writes now is v2.
    ask(
        &client,
        "new",
        json!({"type":"CREATE_USER","userId":"new","name":"N","email":"n@example.com"}),
    )
    .await;
    let written = client.read("user-new", 1, 0).await.expect("read").events;
    assert_eq!(written[0].metadata["schema_version"], 2);

    let future = EventData::new("USER_UPDATED", json!({"changes":{"name":"X"}}))
        .with_metadata(json!({"schema_version": 9}));
    client
        .append("user-old", vec![future], ExpectedVersion::Exact(1))
        .await
        .expect("append v9");
    let refused = client
        .state("user", "old", StateAt::Latest)
        .await
        .unwrap_err();
    let message = refused.to_string();
    assert!(
        message.contains("USER_UPDATED") && message.contains("schema version 9"),
        "{message}"
    );
    cluster.shutdown().await;
}

/// A projection whose every fold fails.
struct Broken;

impl Projection for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn accepts(&self, _: &cairn_storage::RecordedEvent) -> bool {
        true
    }

    fn apply(
        &self,
        _: &cairn_storage::RecordedEvent,
        _: &mut ReadModel<'_>,
    ) -> Result<(), ProjectionError> {
        Err(ProjectionError::BadQuery(
            "this projection refuses every event".into(),
        ))
    }

    fn query(&self, _: &ReadModel<'_>, _: &Value) -> Result<Value, ProjectionError> {
        Ok(Value::Null)
    }

    fn combine(&self, _: Vec<Value>, _: &Value) -> Result<Value, ProjectionError> {
        Ok(Value::Null)
    }
}

fn with_broken(builder: NodeBuilder) -> NodeBuilder {
    builder.projection(Broken)
}

/// Projections of a partition read its log together, one batch at a time;
/// one that keeps failing must not hold the others at its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_projection_does_not_stall_the_others() {
    const USERS: usize = 1500; // more than one fold batch (1000 events)
    let cluster = TestCluster::start_custom(3, 1, test_tuning(10_000), |_| {}, with_broken).await;
    let client = cluster.client_any().await;
    for chunk in 0..USERS / 100 {
        let events = (chunk * 100..(chunk + 1) * 100)
            .map(|i| {
                let id = format!("u{i}");
                let data = json!({"userId": id, "name": id, "email": format!("{id}@example.com")});
                EventData::new("USER_CREATED", data)
            })
            .collect();
        client
            .append(&format!("user-batch{chunk}"), events, ExpectedVersion::Any)
            .await
            .expect("append");
    }
    let last = format!("u{}@example.com", USERS - 1);
    let found = client
        .query("users-by-email", &json!({ "email": last }))
        .await
        .expect("users-by-email folds past the broken projection's position");
    assert_eq!(found["userId"], format!("u{}", USERS - 1));
    assert_eq!(analytics(&client).await["totalUsers"], USERS);
    cluster.shutdown().await;
}

/// Projections move past the events of streams they do not read (from
/// memory while those are recent) without missing the events of their own
/// streams between them, also when both share Raft entries, and count each
/// once again after a cluster-wide restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn projections_pass_over_other_streams_without_missing_their_own() {
    // One partition: every stream's events interleave in one log.
    let mut cluster = TestCluster::start(3, 1, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let create = |id: &str| json!({"type":"CREATE_USER","userId": id,"name": id,"email": format!("{id}@example.com")});
    let other = |stream: String| {
        let client = client.clone();
        async move {
            let event = EventData::new("Other", json!({ "stream": stream }));
            client
                .append(&stream, vec![event], ExpectedVersion::Any)
                .await
                .expect("append to another stream");
        }
    };
    for round in 0..4 {
        for k in 0..25 {
            other(format!("other-{round}-{k}")).await;
        }
        ask(
            &client,
            &format!("solo{round}"),
            create(&format!("solo{round}")),
        )
        .await;
        let users = analytics(&client).await["totalUsers"].as_u64();
        assert_eq!(users, Some(round + 1));
    }
    // Users created while other streams are written at the same time, so
    // that their events share entries and batches with the others.
    let others = futures::future::join_all((0..100).map(|k| other(format!("busy-{k}"))));
    let users = futures::future::join_all((0..10).map(|k| {
        let (client, id) = (client.clone(), format!("busy{k}"));
        let command = create(&id);
        async move { ask(&client, &id, command).await }
    }));
    tokio::join!(others, users);
    let expected = json!({"totalUsers":14,"activeUsers":14,"totalLogins":0,"failedLogins":0});
    assert_eq!(analytics(&client).await, expected);

    cluster.restart_all().await;
    assert_eq!(analytics(&client).await, expected);
    cluster.shutdown().await;
}
