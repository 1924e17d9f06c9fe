//! The activation workload (issue 4 workload 5): how fast an actor with a
//! long stream comes back — cold replay without snapshots, cold activation
//! with snapshots, warm activation, and temporal queries — on its own
//! 3-node cluster.

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, Error, EventData, StateAt};
use rand::Rng;
use serde_json::json;
use tokio::time::Instant;

use crate::bulk::{WRITERS, append_events};
use crate::harness::Sizes;
use crate::report::millis;
use crate::wait::wait_for;
use crate::{CairnCluster, Fact, Facts};

/// Events per append while writing the streams.
const BATCH: u64 = 1000;
/// Actor snapshot interval, Cairn's default (`cairn serve --snapshot-every`).
const SNAPSHOT_EVERY: u64 = 100;
/// The long actor.
const BIG_ID: &str = "big";
/// Actors without snapshots, each replayed cold after a restart of its own.
/// One such call lasts ~100–200 ms right after a restart and swung from
/// 480k to 1M events/s between runs of one build (bench/README.md, session
/// 29): the rate reported is their median's.
const REPLAY_STREAMS: usize = 3;
/// Timeout of a timed call: a cold replay of 1M events may take a while.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the replicas may take to apply the snapshots the first
/// activation of the long stream saved.
const SNAPSHOTS_TIMEOUT: Duration = Duration::from_secs(120);

/// A command that activates the actor and runs a turn that writes nothing:
/// withdrawing more than any balance is rejected.
fn probe() -> serde_json::Value {
    json!({ "type": "WITHDRAW", "amount": 1e15 })
}

/// Runs the workload on a fresh cluster (snapshots every 100 events, at
/// most one activation per node, so that activating another actor of the
/// same partition passivates the long one) and stops it.
pub async fn run(cairn_bin: &Path, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let every = SNAPSHOT_EVERY.to_string();
    let args = ["--snapshot-every", &every, "--max-activations", "1"];
    CairnCluster::run_fresh(cairn_bin, &args, async |cluster| {
        measure(cluster, sizes).await
    })
    .await
}

async fn measure(cluster: &mut CairnCluster, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let mut facts = Facts::new("activation");
    let client = cluster.client_all().await?;

    // Every stream through the plain event-store API: no actor turn, so no
    // snapshot of their own.
    let (replay, big) = (sizes.replay_events, sizes.big_events);
    let replay_ids: Vec<String> = (1..=REPLAY_STREAMS)
        .map(|n| format!("replay-{n}"))
        .collect();
    let streams = replay_ids.iter().map(|id| (id.as_str(), replay));
    let mut took = Duration::ZERO;
    for (id, events) in streams.chain([(BIG_ID, big)]) {
        took += write_account(&client, id, events).await?;
    }
    facts.record(
        format!("append account events, {BATCH} per append, {WRITERS} in flight"),
        (replay * REPLAY_STREAMS as u64 + big) as f64 / took.as_secs_f64(),
        "events/s",
        None,
    );

    cluster.restart().await?;
    let mut replays = vec![millis(time_ask(cluster, &replay_ids[0]).await?)];

    let took = time_ask(cluster, BIG_ID).await?;
    let what = format!(
        "first call to the {big}-event actor, replaying all (saves the snapshots it crosses)"
    );
    facts.record(
        format!("{what}: rate"),
        big as f64 / took.as_secs_f64(),
        "events/s",
        Some("≥ 1M events/s"),
    );
    wait_until_applied_everywhere(cluster, "the snapshots of the first activation").await?;

    for id in &replay_ids[1..] {
        cluster.restart().await?;
        replays.push(millis(time_ask(cluster, id).await?));
    }
    record_replays(&mut facts, replay, &replays);

    // One sample per restart of every node, which varies a lot (the nodes
    // are still recovering when it runs): several, and their spread.
    let mut cold = Vec::with_capacity(sizes.cold_activations);
    for _ in 0..sizes.cold_activations {
        cluster.restart().await?;
        cold.push(millis(time_ask(cluster, BIG_ID).await?));
    }
    let what = format!(
        "cold activation of the {big}-event actor with snapshots (first call once every group has a leader)"
    );
    record_quantiles(&mut facts, &what, &cold, Some("< 5 ms"));

    // An activation starts with a linearizable read, which waits until the
    // leader has committed and applied the first entry of its term: right
    // after an election, the call above times that too. The same call once
    // every replica applied what its leader logged times the activation
    // alone (nothing read since the restart: every cache still cold).
    let mut settled = Vec::with_capacity(sizes.cold_activations);
    for _ in 0..sizes.cold_activations {
        cluster.restart().await?;
        wait_until_applied_everywhere(cluster, "the restarted leaders' first entries").await?;
        settled.push(millis(time_ask(cluster, BIG_ID).await?));
    }
    let what = format!(
        "cold activation of the {big}-event actor with snapshots (first call once the new leaders' first entries are applied)"
    );
    record_quantiles(&mut facts, &what, &settled, Some("< 5 ms"));

    let leader = leader_client(cluster, BIG_ID).await?;
    let latencies = temporal_queries(&leader, sizes.temporal_queries).await?;
    let what = format!("temporal query of the {big}-event actor at a random time");
    record_quantiles(&mut facts, &what, &latencies, Some("< 10 ms"));

    let latencies = warm_activations(cluster, &leader, sizes.warm_activations).await?;
    let what = format!("warm activation of the {big}-event actor (passivated, caches warm)");
    record_quantiles(&mut facts, &what, &latencies, Some("< 5 ms"));
    Ok(facts.into_vec())
}

/// Records the median of the cold replays of `events` events that took
/// `times` (ms), and the rate at that median.
fn record_replays(facts: &mut Facts, events: u64, times: &[f64]) {
    let what = format!("cold replay of {events} events without snapshots (first call)");
    let samples: Vec<String> = times.iter().map(|ms| format!("{ms:.2}")).collect();
    eprintln!("{what}: samples in ms, in order: {}", samples.join(" "));
    let median = quantile(times, 0.5);
    let n = times.len();
    facts.record(format!("{what}: time, median of {n}"), median, "ms", None);
    facts.record(
        format!("{what}: rate at the median"),
        events as f64 / (median / 1000.0),
        "events/s",
        Some("≥ 1M events/s"),
    );
}

/// Records the p50 and p99 of `latencies` (ms).
fn record_quantiles(facts: &mut Facts, what: &str, latencies: &[f64], target: Option<&str>) {
    let n = latencies.len();
    // The p99 of a few samples is their slowest: show where it fell.
    let samples: Vec<String> = latencies.iter().map(|ms| format!("{ms:.2}")).collect();
    eprintln!("{what}: samples in ms, in order: {}", samples.join(" "));
    for (name, q) in [("p50", 0.5), ("p99", 0.99)] {
        facts.record(
            format!("{what}: {name} of {n}"),
            quantile(latencies, q),
            "ms",
            target,
        );
    }
}

/// Writes `events` events of `account/<id>` (an `ACCOUNT_OPENED`, then
/// `MONEY_DEPOSITED {amount: 1}`s) in appends of [`BATCH`]; returns how long
/// the deposits took.
async fn write_account(client: &Client, id: &str, events: u64) -> anyhow::Result<Duration> {
    let stream = format!("account-{id}");
    let opened = EventData::new("ACCOUNT_OPENED", json!({}));
    client
        .append(
            &stream,
            vec![opened],
            cairn_client::ExpectedVersion::NoStream,
        )
        .await
        .with_context(|| format!("opening {stream}"))?;
    let deposit = || EventData::new("MONEY_DEPOSITED", json!({ "amount": 1 }));
    let deposits = events.saturating_sub(1);
    append_events(client, deposits, BATCH, move |_| stream.clone(), deposit).await
}

/// A client for the node leading `account/<id>`'s partition, its
/// connection already open.
async fn leader_client(cluster: &CairnCluster, id: &str) -> anyhow::Result<Client> {
    let leader = cluster.leader_of(&format!("account-{id}")).await?;
    let client = cluster.client(leader).await?.with_timeout(CALL_TIMEOUT);
    client.status().await?;
    Ok(client)
}

/// Times one [`probe`] ask to `account/<id>`, sent to its partition's
/// leader over an open connection.
async fn time_ask(cluster: &CairnCluster, id: &str) -> anyhow::Result<Duration> {
    let client = leader_client(cluster, id).await?;
    let started = Instant::now();
    ask_probe(&client, id).await?;
    Ok(started.elapsed())
}

/// The [`probe`] ask: the rejection is its expected answer.
async fn ask_probe(client: &Client, id: &str) -> anyhow::Result<()> {
    match client.ask("account", id, &probe()).await {
        Err(Error::Rejected(_)) => Ok(()),
        Ok(reply) => anyhow::bail!("account/{id} accepted the probe: {reply:?}"),
        Err(e) => Err(e).with_context(|| format!("asking account/{id}")),
    }
}

/// Waits until every replica applied everything its leader logged, twice in
/// a row with nothing new: `what` (the snapshots the first activation of the
/// long stream saved, say) is then committed and applied on every node.
async fn wait_until_applied_everywhere(cluster: &CairnCluster, what: &str) -> anyhow::Result<()> {
    let last = Cell::new(None);
    wait_for(
        &format!("{what} are applied everywhere"),
        SNAPSHOTS_TIMEOUT,
        Duration::from_millis(500),
        || {
            let last = &last;
            async move {
                Ok(match cluster.replicas_caught_up().await? {
                    Ok(logs) if last.get() == Some(logs) => Ok(()),
                    Ok(logs) => {
                        last.set(Some(logs));
                        Err(format!("leaders' logs at {logs} entries, still moving"))
                    }
                    Err(why) => Err(why),
                })
            }
        },
    )
    .await
}

/// `n` states of `account/big` as of a random time between its first and
/// last event; the latency of each, in ms.
async fn temporal_queries(client: &Client, n: usize) -> anyhow::Result<Vec<f64>> {
    let stream = format!("account-{BIG_ID}");
    let first = client.read(&stream, 1, 1).await?;
    let first = first
        .events
        .first()
        .context("the long stream has events")?
        .timestamp;
    let last = client
        .info(&stream)
        .await?
        .last_event_timestamp
        .context("the long stream has a last event")?;
    let mut rng = rand::rng();
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let at = rng.random_range(first..=last);
        let started = Instant::now();
        client
            .state("account", BIG_ID, StateAt::Timestamp(at))
            .await
            .with_context(|| format!("reading account/{BIG_ID} as of {at}"))?;
        latencies.push(millis(started.elapsed()));
    }
    Ok(latencies)
}

/// `n` activations of `account/big` with the node's caches warm: before
/// each, activating another account of the same partition passivates it
/// (the nodes hold one activation). The latency of each, in ms.
async fn warm_activations(
    cluster: &CairnCluster,
    leader: &Client,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let evictor = same_partition_id(cluster.partitions(), BIG_ID);
    leader
        .ask("account", &evictor, &json!({ "type": "OPEN" }))
        .await
        .with_context(|| format!("opening account/{evictor}"))?;
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        ask_probe(leader, &evictor).await?;
        let started = Instant::now();
        ask_probe(leader, BIG_ID).await?;
        latencies.push(millis(started.elapsed()));
    }
    Ok(latencies)
}

/// An account id other than `id` whose stream is in the same partition
/// (Cairn's placement: xxh3 of the stream name, mod the partitions).
fn same_partition_id(partitions: u32, id: &str) -> String {
    let partition = |id: &str| {
        xxhash_rust::xxh3::xxh3_64(format!("account-{id}").as_bytes())
            % u64::from(partitions.max(1))
    };
    let target = partition(id);
    (0..)
        .map(|k| format!("evictor-{k}"))
        .find(|candidate| partition(candidate) == target)
        .expect("some id falls in every partition")
}

/// The `q` quantile of `values` (nearest rank).
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}
