//! The command bus, idempotent commands, and event handlers on a 3-node
//! cluster: commands reach actors from any node, a command id is applied
//! once however often it is sent, and the commands a handler sends in
//! reaction to events are applied exactly once across the loss of a
//! partition leader, with the event as causation. Also: the client routes a
//! stream's calls to the partition the cluster puts it in.

use std::time::Duration;

use cairn_client::{AskIds, Client, RecordedEvent};
use cairn_node::{ActorCommand, EventHandler, HandlerError, NodeBuilder};
use cairn_tests::in_process::test_tuning;
use cairn_tests::{TestCluster, eventually};
use serde_json::json;

/// Opens an account with a welcome bonus for every user created.
struct WelcomeBonus;

impl EventHandler for WelcomeBonus {
    fn name(&self) -> &'static str {
        "welcome-bonus"
    }

    fn accepts(&self, event: &cairn_storage::RecordedEvent) -> bool {
        event.event_type == "USER_CREATED"
    }

    fn accepts_stream(&self, stream: &str) -> bool {
        stream.starts_with("user-")
    }

    fn handle(
        &self,
        event: &cairn_storage::RecordedEvent,
    ) -> Result<Vec<ActorCommand>, HandlerError> {
        let data: serde_json::Value = serde_json::from_slice(&event.data)
            .map_err(|e| HandlerError(format!("USER_CREATED data: {e}")))?;
        let user = data["userId"]
            .as_str()
            .ok_or_else(|| HandlerError("USER_CREATED without userId".into()))?;
        let command = |body| {
            ActorCommand::new("account", user, &body).map_err(|e| HandlerError(e.to_string()))
        };
        Ok(vec![
            command(json!({"type":"OPEN"}))?,
            command(json!({"type":"DEPOSIT","amount":100}))?,
        ])
    }
}

fn with_welcome_bonus(builder: NodeBuilder) -> NodeBuilder {
    builder.event_handler(WelcomeBonus)
}

async fn create_user(client: &Client, id: &str, correlation: &str) -> RecordedEvent {
    let command =
        json!({"type":"CREATE_USER","userId": id,"name": id,"email": format!("{id}@example.com")});
    client
        .ask_with(
            "user",
            id,
            &command,
            AskIds::default().with_correlation_id(correlation),
        )
        .await
        .unwrap_or_else(|e| panic!("create user {id}: {e}"));
    let read = client
        .read(&format!("user-{id}"), 1, 1)
        .await
        .expect("read");
    read.events.into_iter().next().expect("USER_CREATED")
}

/// Waits until `account-<id>` holds its two bonus events and returns them.
async fn bonus_events(client: &Client, id: &str) -> Vec<RecordedEvent> {
    eventually(
        &format!("account {id} to get its welcome bonus"),
        Duration::from_secs(30),
        || async {
            let read = client
                .read(&format!("account-{id}"), 1, 100)
                .await
                .map_err(|e| e.to_string())?;
            if read.events.len() < 2 {
                return Err(format!("{} events so far", read.events.len()));
            }
            Ok(read.events)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_handler_reacts_once_to_each_event_with_the_event_as_causation_across_leader_loss() {
    let mut cluster =
        TestCluster::start_custom(3, 4, test_tuning(10_000), |_| {}, with_welcome_bonus).await;
    let client = cluster.client_any().await;

    let mut created = Vec::new();
    for id in ["ann", "ben", "cat", "dan"] {
        created.push((id, create_user(&client, id, &format!("signup-{id}")).await));
    }
    // Stop the node that leads the first user's partition (its handler runs
    // there) while more users sign up; another node takes over the handler.
    let group = cluster.partition_of_actor("user", "ann");
    let leader = cluster.leader_of(group).await;
    cluster.stop(leader).await;
    let client = cluster.client(cluster.running()[0]).await;
    for id in ["eve", "fay", "gus"] {
        created.push((id, create_user(&client, id, &format!("signup-{id}")).await));
    }
    cluster.restart(leader).await;

    for (id, user_created) in &created {
        let events = bonus_events(&client, id).await;
        let types: Vec<_> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(
            types,
            ["ACCOUNT_OPENED", "MONEY_DEPOSITED"],
            "account {id} got exactly one bonus"
        );
        for event in &events {
            assert_eq!(
                event.causation_id.as_deref(),
                Some(user_created.id.as_str())
            );
            assert_eq!(
                event.correlation_id.as_deref(),
                Some(format!("signup-{id}").as_str()),
                "the user's correlation id flows on"
            );
        }
        let state = client
            .state("account", id, cairn_client::StateAt::Latest)
            .await
            .expect("state");
        assert_eq!(state.state["balance"], json!(100.0), "account {id}");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_command_id_is_applied_once_however_often_it_is_sent() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    client
        .ask("account", "once", &json!({"type":"OPEN"}))
        .await
        .expect("open");
    let deposit = json!({"type":"DEPOSIT","amount":5});
    let first = client
        .ask_with("account", "once", &deposit, AskIds::command("deposit-1"))
        .await
        .expect("first send");
    assert!(!first.duplicate);
    // Again through every node: the second and later sends write nothing.
    for node in cluster.running() {
        let again = cluster
            .client(node)
            .await
            .ask_with("account", "once", &deposit, AskIds::command("deposit-1"))
            .await
            .expect("send again");
        assert!(
            again.duplicate,
            "a resend through node {node} is a duplicate"
        );
        assert_eq!(again.version, first.version);
    }
    let other = client
        .ask_with("account", "once", &deposit, AskIds::command("deposit-2"))
        .await
        .expect("another command id");
    assert!(!other.duplicate);
    let state = client
        .state("account", "once", cairn_client::StateAt::Latest)
        .await
        .expect("state");
    assert_eq!(state.state["balance"], json!(10.0));
    assert_eq!(state.version, 3, "OPEN and two deposits");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_command_bus_reaches_an_actor_from_a_node_that_does_not_lead_it() {
    let cluster = TestCluster::start(3, 4, test_tuning(10_000)).await;
    let group = cluster.partition_of_actor("account", "bus");
    let leader = cluster.leader_of(group).await;
    let elsewhere = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("another node");
    let bus = cluster.node(elsewhere).command_bus();
    let send = |body| async move {
        bus.send(
            ActorCommand::new("account", "bus", &body)
                .expect("a JSON command")
                .with_correlation_id("bus-test"),
        )
        .await
    };
    send(json!({"type":"OPEN"})).await.expect("open");
    let deposit = send(json!({"type":"DEPOSIT","amount":7}))
        .await
        .expect("deposit");
    assert_eq!(deposit.version, 2);
    let refused = send(json!({"type":"WITHDRAW","amount":70})).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("insufficient")),
        "the actor's refusal comes back through the bus: {refused:?}"
    );
    let events = cluster
        .client(leader)
        .await
        .read("account-bus", 1, 10)
        .await
        .expect("read");
    assert_eq!(events.events.len(), 2, "the refused command wrote nothing");
    assert!(
        events
            .events
            .iter()
            .all(|e| e.correlation_id.as_deref() == Some("bus-test"))
    );
    cluster.shutdown().await;
}

#[test]
fn the_client_places_streams_in_the_partitions_the_cluster_does() {
    for partitions in [1, 7, 16, 64] {
        for i in 0..1000 {
            let stream = format!("stream-{i}");
            assert_eq!(
                cairn_client::partition_of(&stream, partitions),
                cairn_cluster::partition_of(&stream, partitions),
                "{stream} with {partitions} partitions"
            );
        }
    }
}
