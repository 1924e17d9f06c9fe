//! Bad input, as a user meets it: a clear message, a non-zero exit or a
//! fitting gRPC status, nothing written, and the node stays up.

use std::process::{Command, Output};
use std::time::Duration;

use cairn_client::{Client, Error, EventData, ExpectedVersion, StateAt};
use cairn_tests::in_process::test_tuning;
use cairn_tests::process::{cairn_binary, cli, json};
use cairn_tests::{ProcessCluster, TestCluster, eventually};
use serde_json::json;

/// Asserts the command failed with a non-zero exit and `needle` in its stderr.
fn refused(output: Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "expected a failure mentioning {needle:?}, got success: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        stderr.contains(needle),
        "stderr should mention {needle:?}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_refuses_bad_input_and_writes_nothing() {
    let mut cluster = ProcessCluster::start(1).await;
    let on = |args: &[&str]| cluster.cli_on(1, args);

    refused(on(&["actor", "ask", "user", "bob", "{not json"]), "JSON");
    refused(
        on(&["actor", "ask", "robot", "r2", r#"{"type":"BEEP"}"#]),
        "unknown actor type `robot`",
    );
    refused(
        on(&["actor", "ask", "user", "bob", r#"{"type":"FLY"}"#]),
        "unknown variant `FLY`",
    );
    refused(
        on(&[
            "actor",
            "ask",
            "user",
            "bob",
            r#"{"type":"CREATE_USER","userId":"bob","name":"Bob"}"#,
        ]),
        "missing field `email`",
    );
    refused(
        on(&["stream", "append", "", r#"{"type":"X","data":{}}"#]),
        "empty",
    );
    let long = "s".repeat(300);
    refused(
        on(&["stream", "append", &long, r#"{"type":"X","data":{}}"#]),
        "256",
    );
    refused(on(&["stream", "append", "s1", r#"{"data":{}}"#]), "type");
    refused(on(&["bench", "append", "--events", "0"]), "--events");
    refused(on(&["bench", "append", "--events", "10001"]), "--events");
    for bad_version in ["-1", "abc"] {
        let event = r#"{"type":"X","data":{}}"#;
        let args = [
            "stream",
            "append",
            "s1",
            event,
            "--expected-version",
            bad_version,
        ];
        refused(on(&args), bad_version);
    }

    // Nothing of the above was written.
    let info = json(&on(&["stream", "info", "s1"])).expect("info");
    assert_eq!(info["version"], 0, "{info}");
    let bob = json(&on(&["stream", "info", "user-bob"])).expect("info");
    assert_eq!(bob["version"], 0, "{bob}");

    // An unreachable server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    refused(
        cli(&["stream", "info", "s1"], &format!("127.0.0.1:{port}")),
        "could not reach",
    );

    // A data directory of another node id, or of another cluster.
    cluster.kill(1);
    let serve = |id: &str, peers: &str| {
        Command::new(cairn_binary())
            .args([
                "serve",
                "--id",
                id,
                "--listen",
                "127.0.0.1:0",
                "--peers",
                peers,
            ])
            .arg("--data-dir")
            .arg(cluster.data_dir(1))
            .output()
            .expect("run cairn serve")
    };
    refused(
        serve("2", &format!("2={}", cluster.addr(1))),
        "belongs to node 1",
    );
    refused(
        serve("1", &format!("1={},2=127.0.0.1:1", cluster.addr(1))),
        "another cluster",
    );

    // The node comes back with its data, unharmed.
    cluster.spawn(1);
    cluster.wait_ready().await;
    let info = json(&cluster.cli_on(1, &["stream", "info", "s1"])).expect("info");
    assert_eq!(info["version"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_grpc_api_refuses_oversized_and_malformed_events() {
    let cluster = TestCluster::start(1, 2, test_tuning(10_000)).await;
    let client: Client = cluster.client(1).await;
    let big = "x".repeat(1 << 20);
    let too_big = client
        .append(
            "big",
            vec![EventData::new("Big", json!({ "blob": big }))],
            ExpectedVersion::Any,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&too_big, Error::InvalidArgument(m) if m.contains("1 MiB")),
        "{too_big:?}"
    );
    let command = json!({"type":"CREATE_USER","userId":"u","name": "x".repeat(1 << 20),"email":"u@example.com"});
    let too_big = client.ask("user", "u", &command).await.unwrap_err();
    assert!(
        matches!(&too_big, Error::InvalidArgument(m) if m.contains("1 MiB")),
        "{too_big:?}"
    );
    let empty_id = client
        .ask("user", "", &json!({"type":"DELETE_USER"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&empty_id, Error::InvalidArgument(m) if m.contains("empty")),
        "{empty_id:?}"
    );

    assert_eq!(client.info("big").await.expect("info").version, 0);
    assert_eq!(
        client
            .state("user", "u", StateAt::Latest)
            .await
            .expect("state")
            .version,
        0
    );
    // The node is still serving.
    eventually("the node to serve", Duration::from_secs(5), || async {
        client.status().await.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    cluster.shutdown().await;
}
