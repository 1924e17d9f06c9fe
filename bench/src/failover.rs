//! The failover workload (issue 4 workload 6), on its own 3-node cluster:
//! under append load, `kill -9` the leader of an actor's partition and time
//! until the actor answers again; then write while that node is down,
//! restart it and time its catch-up.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{Client, EventData};
use serde_json::json;
use tokio::time::Instant;

use crate::bulk::append_events;
use crate::harness::Sizes;
use crate::load::BackgroundLoad;
use crate::report::millis;
use crate::wait::wait_for;
use crate::{CairnAppend, CairnCluster, Fact, Facts, payload};

/// The actor whose partition loses its leader.
const ACTOR_ID: &str = "failover";
/// Timeout of one ask while waiting for the actor to answer again.
const ASK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the actor may take to answer again, and the node to catch up.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);
/// Events per append written while the node is down.
const BATCH: u64 = 1000;

/// Runs the workload on a fresh cluster and stops it.
pub async fn run(cairn_bin: &Path, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    CairnCluster::run_fresh(cairn_bin, &[], async |cluster| {
        measure(cluster, sizes).await
    })
    .await
}

async fn measure(cluster: &mut CairnCluster, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let mut facts = Facts::new("failover");
    let deposit = json!({ "type": "DEPOSIT", "amount": 1 });
    let client = cluster.client_all().await?;
    client
        .ask("account", ACTOR_ID, &json!({ "type": "OPEN" }))
        .await?;
    let victim = cluster.leader_of(&format!("account-{ACTOR_ID}")).await?;

    let writers = sizes.failover_writers;
    let target = CairnAppend::new(cluster.addresses(), writers, 1, "failover-load").await?;
    let load = BackgroundLoad::start(Arc::new(target), writers).await?;
    // The load is running once an append has been acknowledged.
    wait_for(
        "the load is running",
        FAILOVER_TIMEOUT,
        Duration::from_millis(10),
        || {
            let items = load.items();
            async move {
                Ok(if items > 0 {
                    Ok(())
                } else {
                    Err("no append yet".into())
                })
            }
        },
    )
    .await?;

    cluster.kill_node(victim).await?;
    let killed = Instant::now();
    let before_kill = load.items();
    let survivors: Vec<&str> = cluster
        .ids()
        .filter(|&id| id != victim)
        .map(|id| cluster.address(id))
        .collect();
    let survivors = Client::connect(&survivors.join(","))
        .await?
        .with_timeout(ASK_TIMEOUT);
    let what = format!("account/{ACTOR_ID} answers after its leader (node {victim}) was killed");
    wait_for(&what, FAILOVER_TIMEOUT, Duration::ZERO, || {
        let (survivors, deposit) = (&survivors, &deposit);
        async move {
            Ok(survivors
                .ask("account", ACTOR_ID, deposit)
                .await
                .map(drop)
                .map_err(|e| e.to_string()))
        }
    })
    .await?;
    let failover = killed.elapsed();
    let what =
        format!("kill -9 of a partition leader under {writers} writers, until its actor answers");
    facts.record(what, millis(failover), "ms", Some("< 2 s"));

    if let Some(error) = load.first_error() {
        eprintln!("  failover: the first append of the load that failed: {error}");
    }
    let (load_items, load_errors) = load.stop().await?;
    let down_load = load_items - before_kill;
    let written = sizes.catch_up_events;
    let data = payload();
    let stream = |index| format!("catch-up-{index}");
    let event = move || EventData::new("BenchEvent", data.clone());
    let writer = survivors.clone().with_timeout(Duration::from_secs(30));
    append_events(&writer, written, BATCH, stream, event).await?;
    let what = format!("appends of the load that failed (of {load_items} acknowledged)");
    facts.record(what, load_errors as f64, "appends", None);

    cluster.start_node(victim)?;
    let restarted = Instant::now();
    let what = format!("node {victim} has applied every partition's log after its restart");
    wait_for(&what, CATCH_UP_TIMEOUT, Duration::from_millis(50), || {
        cluster.replicas_caught_up()
    })
    .await?;
    let catch_up = restarted.elapsed();
    let behind = written + down_load;
    let what =
        format!("restarted node catches up on the {behind} events written while it was down");
    facts.record_rate(&what, behind as u64, catch_up, Some("≥ 100k events/s"));
    Ok(facts.into_vec())
}
