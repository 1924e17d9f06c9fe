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

use crate::bulk::append_batches;
use crate::harness::Sizes;
use crate::load::BackgroundLoad;
use crate::report::millis;
use crate::wait::wait_for;
use crate::{CairnAppend, CairnCluster, Fact, payload};

const WORKLOAD: &str = "failover";
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
    let mut cluster = CairnCluster::start(cairn_bin).await?;
    let facts = measure(&mut cluster, sizes).await;
    cluster.stop().await?;
    facts
}

async fn measure(cluster: &mut CairnCluster, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let mut facts = Vec::new();
    let mut fact = |f: Fact| {
        eprintln!("{}", f.line());
        facts.push(f);
    };
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
    fact(
        Fact::new(
            WORKLOAD,
            format!("kill -9 of a partition leader under {writers} writers → its actor answers"),
            millis(failover),
            "ms",
        )
        .target("< 2 s"),
    );

    let (load_items, load_errors) = load.stop().await?;
    let down_load = load_items - before_kill;
    let written = sizes.catch_up_events;
    let data = payload();
    append_batches(
        &survivors.clone().with_timeout(Duration::from_secs(30)),
        written.div_ceil(BATCH),
        move |index: u64| {
            let count = BATCH.min(written - index * BATCH);
            let events = (0..count)
                .map(|_| EventData::new("BenchEvent", data.clone()))
                .collect();
            (format!("catch-up-{index}"), events)
        },
    )
    .await?;
    fact(Fact::new(
        WORKLOAD,
        format!("appends that failed while the leader was down (of {load_items} acknowledged)"),
        load_errors as f64,
        "appends",
    ));

    cluster.start_node(victim)?;
    let restarted = Instant::now();
    let what = format!("node {victim} has applied every partition's log after its restart");
    wait_for(&what, CATCH_UP_TIMEOUT, Duration::from_millis(50), || {
        cluster.replicas_caught_up()
    })
    .await?;
    let catch_up = restarted.elapsed();
    let behind = written + down_load;
    fact(Fact::new(
        WORKLOAD,
        format!("restarted node catches up on {behind} events: time"),
        millis(catch_up),
        "ms",
    ));
    fact(
        Fact::new(
            WORKLOAD,
            format!("restarted node catches up on {behind} events: rate"),
            behind as f64 / catch_up.as_secs_f64(),
            "events/s",
        )
        .target("≥ 100k events/s"),
    );
    Ok(facts)
}
