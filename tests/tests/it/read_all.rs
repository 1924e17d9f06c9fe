//! Reading all streams and subscriptions on a 3-node cluster, as a user sees
//! them: read-all pages resumed from checkpoints across a leader stop and a
//! restart equal the union of every stream, exactly once; live
//! subscriptions deliver every event exactly once while a node stops;
//! filters; the command line.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_client::{
    Checkpoint, Client, Error, EventData, EventFilter, ExpectedVersion, ReadAll, RecordedEvent,
    SubscribeTo, SubscriptionEvent,
};
use cairn_tests::in_process::test_tuning;
use cairn_tests::process::json;
use cairn_tests::{ProcessCluster, TestCluster, eventually};
use futures::StreamExt;
use serde_json::{Value, json};

const PARTITIONS: u32 = 4;

/// Appends `n` events to each of `streams` (alternating types `A` and `B`),
/// one append per event; returns the ids written.
async fn write(client: &Client, streams: &[String], n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        for stream in streams {
            let event_type = if i % 2 == 0 { "A" } else { "B" };
            let event = EventData::new(event_type, json!({"tag": tag, "i": i}));
            ids.push(event.id.clone().expect("an id"));
            client
                .append(stream, vec![event], ExpectedVersion::Any)
                .await
                .unwrap_or_else(|e| panic!("append to {stream}: {e}"));
        }
    }
    ids
}

fn streams(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every event of every stream in `streams`, read stream by stream.
async fn union(client: &Client, streams: &[String]) -> Vec<RecordedEvent> {
    let mut all = Vec::new();
    for stream in streams {
        all.extend(client.read(stream, 1, 0).await.expect("read").events);
    }
    all
}

/// Reads pages of `read.limit` from `read.from` until the end; returns the
/// events and the final checkpoint.
async fn read_to_end(client: &Client, mut read: ReadAll) -> (Vec<RecordedEvent>, Checkpoint) {
    let mut events = Vec::new();
    for _ in 0..10_000 {
        let page = client.read_all(&read).await.expect("read-all");
        assert!(read.limit == 0 || page.events.len() <= read.limit as usize);
        events.extend(page.events);
        read.from = page.checkpoint;
        if page.end {
            return (events, read.from);
        }
    }
    panic!("read-all never reached the end");
}

fn ids(events: &[RecordedEvent]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

/// No id twice.
fn assert_unique(events: &[RecordedEvent]) {
    let mut seen = HashSet::new();
    for e in events {
        assert!(
            seen.insert(&e.id),
            "{} ({}@{}) delivered twice",
            e.id,
            e.stream,
            e.version
        );
    }
}

/// The same events, whatever the order.
fn assert_same_set(got: &[RecordedEvent], want: &[RecordedEvent]) {
    let got: HashSet<_> = got.iter().map(|e| &e.id).collect();
    let want: HashSet<_> = want.iter().map(|e| &e.id).collect();
    let missing: Vec<_> = want.difference(&got).collect();
    let extra: Vec<_> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?}"
    );
}

/// In (timestamp, partition, position) order.
fn assert_merge_order(events: &[RecordedEvent]) {
    for pair in events.windows(2) {
        let key = |e: &RecordedEvent| (e.timestamp, e.partition, e.position);
        assert!(
            key(&pair[0]) < key(&pair[1]),
            "out of order: {:?} then {:?}",
            key(&pair[0]),
            key(&pair[1])
        );
    }
}

/// Within each partition, positions only go up; within each stream, versions.
fn assert_log_order(events: &[RecordedEvent]) {
    let mut partitions = BTreeMap::new();
    let mut streams = BTreeMap::new();
    for e in events {
        let last = partitions.insert(e.partition, e.position).unwrap_or(0);
        assert!(e.position > last, "partition {} went back", e.partition);
        let last = streams.insert(e.stream.clone(), e.version).unwrap_or(0);
        assert!(e.version > last, "stream {} went back", e.stream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_all_pages_are_the_union_of_all_streams_across_a_leader_stop_and_restart() {
    let mut cluster = TestCluster::start(3, PARTITIONS, test_tuning(10_000)).await;
    let writer = cluster.client_any().await;
    let mut all_streams = streams("user", 6);
    all_streams.extend(streams("order", 6));
    write(&writer, &all_streams, 4, "before").await;

    // Paged reads from one node, small pages: the union, once, in merge order.
    let reader = cluster.client(1).await;
    let (paged, end) = read_to_end(&reader, ReadAll::new().limit(7)).await;
    let expected = union(&writer, &all_streams).await;
    assert_eq!(paged.len(), 48);
    assert_unique(&paged);
    assert_same_set(&paged, &expected);
    assert_merge_order(&paged);
    // The same order in one page, from another node.
    let whole = cluster
        .client(3)
        .await
        .read_all(&ReadAll::new().limit(1000))
        .await
        .expect("read-all");
    assert!(whole.end);
    assert_eq!(ids(&whole.events), ids(&paged));
    assert_eq!(whole.checkpoint, end);
    assert_eq!(end.positions().iter().sum::<u64>(), 48);

    // Resume from a checkpoint in the middle of new writes, across a stop
    // of the leader of partition 0 and its restart.
    write(&writer, &all_streams, 3, "second").await;
    let mut seen = paged;
    let mut read = ReadAll::new().from(end).limit(10);
    for _ in 0..2 {
        let page = reader.read_all(&read).await.expect("read-all");
        assert_eq!(page.events.len(), 10);
        seen.extend(page.events);
        read.from = page.checkpoint;
    }
    let leader = cluster.leader_of(0).await;
    cluster.stop(leader).await;
    let survivors: Vec<_> = cluster.running();
    let reader = cluster.client(survivors[0]).await;
    write(&reader, &all_streams, 2, "leader down").await;
    let (more, checkpoint) = read_to_end(&reader, read.clone()).await;
    seen.extend(more);
    cluster.restart(leader).await;
    cluster.wait_for_leaders().await;
    write(&writer, &all_streams, 2, "restarted").await;
    read.from = checkpoint;
    let (rest, _) = read_to_end(&cluster.client(leader).await, read).await;
    seen.extend(rest);

    let expected = union(&writer, &all_streams).await;
    assert_eq!(expected.len(), 12 * (4 + 3 + 2 + 2));
    assert_unique(&seen);
    assert_same_set(&seen, &expected);
    assert_log_order(&seen);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_all_filters_by_type_stream_prefix_and_time() {
    let cluster = TestCluster::start(3, PARTITIONS, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let mut all_streams = streams("user", 4);
    all_streams.extend(streams("order", 4));
    write(&client, &all_streams, 6, "x").await;
    let (all, _) = read_to_end(&client, ReadAll::new()).await;
    assert_eq!(all.len(), 48);

    type Keep = Box<dyn Fn(&RecordedEvent) -> bool>;
    let cases: [(EventFilter, Keep); 4] = [
        (
            EventFilter::all().with_type("B"),
            Box::new(|e| e.event_type == "B"),
        ),
        (
            EventFilter::all().with_stream_prefix("user-"),
            Box::new(|e| e.stream.starts_with("user-")),
        ),
        (
            EventFilter::all()
                .with_type("A")
                .with_stream_prefix("order-1")
                .with_stream_prefix("user-3"),
            Box::new(|e| e.event_type == "A" && (e.stream == "order-1" || e.stream == "user-3")),
        ),
        (
            EventFilter::all().with_type("NO_SUCH_TYPE"),
            Box::new(|_| false),
        ),
    ];
    for (filter, keep) in cases {
        let want: Vec<_> = all.iter().filter(|e| keep(e)).cloned().collect();
        let read = ReadAll::new().limit(3).filter(filter.clone());
        let (got, _) = read_to_end(&client, read).await;
        assert_eq!(ids(&got), ids(&want), "filter {filter:?}");
    }

    let middle = all[all.len() / 2].timestamp;
    let want: Vec<_> = all
        .iter()
        .filter(|e| e.timestamp >= middle)
        .cloned()
        .collect();
    assert!(want.len() < all.len() && !want.is_empty());
    let (got, _) = read_to_end(&client, ReadAll::new().from_timestamp(middle).limit(5)).await;
    assert_eq!(ids(&got), ids(&want));
    cluster.shutdown().await;
}

/// Collects a subscription's events in the background.
fn collect(
    mut subscription: cairn_client::Subscription,
) -> (
    Arc<Mutex<Vec<SubscriptionEvent>>>,
    tokio::task::JoinHandle<Error>,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let task = tokio::spawn(async move {
        loop {
            match subscription.next().await {
                Some(Ok(event)) => sink.lock().expect("lock").push(event),
                Some(Err(e)) => return e,
                None => return Error::Other("the subscription ended".into()),
            }
        }
    });
    (events, task)
}

async fn wait_for_count(events: &Arc<Mutex<Vec<SubscriptionEvent>>>, n: usize) {
    eventually(
        &format!("{n} events from the subscription"),
        Duration::from_secs(60),
        || async {
            let got = events.lock().expect("lock").len();
            if got >= n {
                Ok(())
            } else {
                Err(format!("{got} so far"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_subscription_sees_every_event_once_while_its_node_stops() {
    let mut cluster = TestCluster::start(3, PARTITIONS, test_tuning(10_000)).await;
    let all_streams = streams("acct", 8);
    // The subscriber talks to node 1 first; the writer never needs node 1.
    let subscriber = cluster.client_any().await;
    let writer = Client::connect(&format!(
        "{},{}",
        cluster.node(2).addr(),
        cluster.node(3).addr()
    ))
    .await
    .expect("client")
    .with_timeout(Duration::from_secs(15));
    write(&writer, &all_streams, 2, "before").await;

    let subscription = subscriber
        .subscribe(SubscribeTo::all(Checkpoint::start()), EventFilter::all())
        .await
        .expect("subscribe");
    let (events, task) = collect(subscription);
    wait_for_count(&events, 16).await;

    let writing = {
        let writer = writer.clone();
        let all_streams = all_streams.clone();
        tokio::spawn(async move { write(&writer, &all_streams, 12, "during").await })
    };
    wait_for_count(&events, 40).await;
    cluster.stop(1).await;
    writing.await.expect("writer");
    write(&writer, &all_streams, 2, "after").await;
    let total = 8 * (2 + 12 + 2);
    wait_for_count(&events, total).await;
    assert!(
        !task.is_finished(),
        "the subscription ended: {:?}",
        task.await
    );

    let delivered: Vec<RecordedEvent> = events
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.event.clone())
        .collect();
    let expected = union(&writer, &all_streams).await;
    assert_eq!(expected.len(), total);
    assert_unique(&delivered);
    assert_same_set(&delivered, &expected);
    assert_log_order(&delivered);
    // Each event's checkpoint covers it.
    for e in events.lock().expect("lock").iter() {
        let checkpoint = e.checkpoint.as_ref().expect("a checkpoint");
        assert!(checkpoint.position(e.event.partition) >= e.event.position);
    }
    task.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_catch_up_then_go_live_with_filters() {
    let cluster = TestCluster::start(3, PARTITIONS, test_tuning(10_000)).await;
    let client = cluster.client_any().await;
    let orders = vec!["orders-1".to_string()];
    write(&client, &orders, 4, "old").await; // versions 1..=4: A B A B

    // One stream, from version 2, type B only: catch-up, then live.
    let subscription = client
        .subscribe(
            SubscribeTo::stream("orders-1", 2),
            EventFilter::all().with_type("B"),
        )
        .await
        .expect("subscribe");
    let (stream_events, stream_task) = collect(subscription);
    wait_for_count(&stream_events, 2).await;
    write(&client, &orders, 4, "new").await; // versions 5..=8: A B A B
    wait_for_count(&stream_events, 4).await;
    let versions: Vec<u64> = stream_events
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.event.version)
        .collect();
    assert_eq!(versions, [2, 4, 6, 8]);

    // All streams with a prefix, from the checkpoint of an earlier read.
    let users = streams("user", 3);
    write(&client, &users, 2, "old").await;
    let (_, now) = read_to_end(&client, ReadAll::new()).await;
    let subscription = client
        .subscribe(
            SubscribeTo::all(now),
            EventFilter::all().with_stream_prefix("user-"),
        )
        .await
        .expect("subscribe");
    let (all_events, all_task) = collect(subscription);
    write(&client, &orders, 2, "ignored").await;
    let fresh = write(&client, &users, 2, "new").await;
    wait_for_count(&all_events, fresh.len()).await;
    let got: HashSet<String> = all_events
        .lock()
        .expect("lock")
        .iter()
        .map(|e| e.event.id.clone())
        .collect();
    assert_eq!(got, fresh.into_iter().collect::<HashSet<_>>());

    // A deleted stream ends its subscription with a clear error.
    client
        .delete("orders-1", false, ExpectedVersion::Any)
        .await
        .expect("delete");
    let ended = tokio::time::timeout(Duration::from_secs(20), stream_task)
        .await
        .expect("the subscription ends")
        .expect("task");
    assert!(
        matches!(&ended, Error::StreamDeleted(m) if m.contains("orders-1")),
        "{ended:?}"
    );
    let mut deleted = client
        .subscribe(SubscribeTo::stream("orders-1", 1), EventFilter::all())
        .await
        .expect("subscribe");
    let first = deleted.next().await.expect("a message");
    assert!(matches!(first, Err(Error::StreamDeleted(_))), "{first:?}");
    all_task.abort();
    cluster.shutdown().await;
}

fn ok(output: std::process::Output) -> Value {
    json(&output).unwrap_or_else(|e| panic!("cairn failed: {e}"))
}

/// Runs `cairn stream subscribe <args> --server <all>` and returns its lines as JSON.
fn subscribe_lines(cluster: &ProcessCluster, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["stream", "subscribe"];
    full.extend_from_slice(args);
    let output = cluster.cli(&full);
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_reads_all_and_subscribes() {
    let cluster = ProcessCluster::start(3).await;
    for (stream, event_type) in [
        ("user-a", "USER_CREATED"),
        ("order-1", "OrderPlaced"),
        ("user-b", "USER_CREATED"),
        ("order-1", "OrderPaid"),
        ("user-a", "USER_UPDATED"),
    ] {
        let event = format!(r#"{{"type":"{event_type}","data":{{"s":"{stream}"}}}}"#);
        ok(cluster.cli(&["stream", "append", stream, &event]));
    }

    let first = ok(cluster.cli_on(1, &["stream", "read-all", "--limit", "2"]));
    assert_eq!(first["events"].as_array().map(Vec::len), Some(2), "{first}");
    assert_eq!(first["end"], false);
    let checkpoint = first["checkpoint"]
        .as_str()
        .expect("a checkpoint")
        .to_string();
    assert!(
        checkpoint.starts_with('p') && checkpoint.contains(':'),
        "{checkpoint}"
    );
    let rest = ok(cluster.cli_on(2, &["stream", "read-all", "--from", &checkpoint]));
    assert_eq!(rest["end"], true, "{rest}");
    let mut ids: Vec<Value> = first["events"].as_array().expect("events").clone();
    ids.extend(rest["events"].as_array().expect("events").iter().cloned());
    let ids: HashSet<_> = ids.iter().map(|e| e["id"].to_string()).collect();
    assert_eq!(ids.len(), 5);

    let users = ok(cluster.cli(&[
        "stream",
        "read-all",
        "--prefix",
        "user-",
        "--type",
        "USER_CREATED",
    ]));
    let streams: Vec<_> = users["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["stream"].as_str().expect("stream").to_string())
        .collect();
    let mut sorted = streams.clone();
    sorted.sort();
    assert_eq!(sorted, ["user-a", "user-b"]);

    let bad = cluster.cli(&["stream", "read-all", "--from", "p0=1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("p<partition>:<position>"));

    let lines = subscribe_lines(&cluster, &["--all", "--count", "5"]);
    assert_eq!(lines.len(), 5);
    assert!(
        lines.iter().all(|l| l["checkpoint"].is_string()),
        "{lines:?}"
    );
    let last = lines[4]["checkpoint"]
        .as_str()
        .expect("checkpoint")
        .to_string();
    // Resuming from the last line's checkpoint gives only what is new.
    ok(cluster.cli(&["stream", "append", "order-1", r#"{"type":"OrderShipped"}"#]));
    let lines = subscribe_lines(&cluster, &["--all", "--from", &last, "--count", "1"]);
    assert_eq!(lines[0]["type"], "OrderShipped", "{lines:?}");

    let lines = subscribe_lines(&cluster, &["order-1", "--from", "2", "--count", "2"]);
    let versions: Vec<_> = lines.iter().map(|l| l["version"].as_u64()).collect();
    assert_eq!(versions, [Some(2), Some(3)]);
    assert!(lines[0].get("checkpoint").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_line_subscription_survives_kill_9_of_its_node() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let mut cluster = ProcessCluster::start(3).await;
    let all: Vec<String> = (1..=3).map(|id| cluster.addr(id).to_string()).collect();
    let writer = Client::connect(&format!("{},{}", all[1], all[2]))
        .await
        .expect("client")
        .with_timeout(Duration::from_secs(20));
    let all_streams = streams("item", 6);
    write(&writer, &all_streams, 2, "before").await;
    let total = 6 * (2 + 4 + 2);

    // Node 1 serves the subscription (it is first in --server).
    let mut child = Command::new(cairn_tests::process::cairn_binary())
        .args([
            "stream",
            "subscribe",
            "--all",
            "--count",
            &total.to_string(),
        ])
        .args(["--server", &all.join(","), "--timeout", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn stream subscribe");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                lines.lock().expect("lock").push(line);
            }
        })
    };
    let count = || lines.lock().expect("lock").len();
    let lines_at_least = |what: &'static str, n: usize| {
        eventually(what, Duration::from_secs(30), move || async move {
            if count() >= n {
                Ok(())
            } else {
                Err(format!("{} lines", count()))
            }
        })
    };
    lines_at_least("the catch-up", 12).await;
    write(&writer, &all_streams, 4, "live").await;
    lines_at_least("live events", 24).await;
    cluster.kill(1);
    write(&writer, &all_streams, 2, "after the kill").await;
    let status = eventually("the subscriber to exit", Duration::from_secs(60), || {
        let exited = child.try_wait();
        let so_far = count();
        async move {
            match exited {
                Ok(Some(status)) => Ok(status),
                _ => Err(format!("{so_far} lines so far")),
            }
        }
    })
    .await;
    reader.join().expect("reader thread");
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut stderr).expect("stderr");
    }
    assert!(status.success(), "{status}: {stderr}");

    let delivered: Vec<RecordedEvent> = lines
        .lock()
        .expect("lock")
        .iter()
        .map(|line| {
            serde_json::from_str::<SubscriptionEvent>(line)
                .expect("an event line")
                .event
        })
        .collect();
    let expected = union(&writer, &all_streams).await;
    assert_eq!(expected.len(), total);
    assert_unique(&delivered);
    assert_same_set(&delivered, &expected);
    assert_log_order(&delivered);
}
