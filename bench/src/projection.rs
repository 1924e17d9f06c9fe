//! The projection-lag workload (issue 3), on its own 3-node cluster: while
//! writers ask `user` actors, how far the built-in projections fall behind
//! and how fast they fold.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cairn_client::{Client, ProjectionStatus};
use tokio::time::Instant;

use crate::harness::Sizes;
use crate::load::BackgroundLoad;
use crate::report::millis;
use crate::wait::wait_for;
use crate::{CairnCluster, CairnUserAsk, Fact, Facts};

/// The built-in projections measured.
const PROJECTIONS: [&str; 2] = ["user-analytics", "users-by-email"];
/// How often the projections' status is read.
const POLL: Duration = Duration::from_secs(1);
/// How long the projections may take to catch up once the load stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the workload on a fresh cluster for `duration` and stops it.
pub async fn run(cairn_bin: &Path, sizes: &Sizes, duration: Duration) -> anyhow::Result<Vec<Fact>> {
    CairnCluster::run_fresh(cairn_bin, &[], async |cluster| {
        measure(cluster, sizes, duration).await
    })
    .await
}

/// The worst lag seen for one projection, over every node and partition.
#[derive(Default, Clone, Copy)]
struct Lag {
    events: u64,
    ms: i64,
}

async fn measure(
    cluster: &CairnCluster,
    sizes: &Sizes,
    duration: Duration,
) -> anyhow::Result<Vec<Fact>> {
    let writers = sizes.projection_writers;
    let client = cluster.client_all().await?;
    let target = CairnUserAsk::new(cluster.addresses(), writers, "projection").await?;
    let load = BackgroundLoad::start(Arc::new(target), writers).await?;
    let started = Instant::now();
    let folded_before = folded(&client).await?;
    let mut max: BTreeMap<String, Lag> = BTreeMap::new();
    let mut last = BTreeMap::new();
    let mut ticks = tokio::time::interval(POLL);
    while started.elapsed() < duration {
        ticks.tick().await;
        last = lags(&client).await?;
        for (name, lag) in &last {
            let worst = max.entry(name.clone()).or_default();
            worst.events = worst.events.max(lag.events);
            worst.ms = worst.ms.max(lag.ms);
        }
    }
    let elapsed = started.elapsed();
    let folded_after = folded(&client).await?;
    let (asks, errors) = load.stop().await?;
    anyhow::ensure!(
        errors == 0 || asks > 0,
        "every ask of the projection load failed"
    );

    let drain_started = Instant::now();
    wait_for(
        "the projections have caught up",
        DRAIN_TIMEOUT,
        Duration::from_millis(50),
        || {
            let client = &client;
            async move {
                let lags = lags(client).await?;
                Ok(match lags.iter().find(|(_, lag)| lag.events > 0) {
                    Some((name, lag)) => Err(format!("{name} is {} events behind", lag.events)),
                    None => Ok(()),
                })
            }
        },
    )
    .await?;
    let drain = drain_started.elapsed();

    let mut facts = Facts::new("projection");
    let what = format!("load: asks (LOGIN, UPDATE_USER) by {writers} writers");
    facts.record(what, asks as f64 / elapsed.as_secs_f64(), "asks/s", None);
    for name in PROJECTIONS {
        let worst = max.get(name).copied().unwrap_or_default();
        let end = last.get(name).copied().unwrap_or_default();
        let before = folded_before.get(name).copied().unwrap_or(0);
        let after = folded_after.get(name).copied().unwrap_or(0);
        let rate = after.saturating_sub(before) as f64 / elapsed.as_secs_f64();
        facts.record(
            format!("{name}: max lag under load"),
            worst.events as f64,
            "events",
            None,
        );
        facts.record(
            format!("{name}: max lag under load"),
            worst.ms as f64,
            "ms",
            None,
        );
        facts.record(
            format!("{name}: lag at the end of the load"),
            end.events as f64,
            "events",
            None,
        );
        facts.record(
            format!("{name}: lag at the end of the load"),
            end.ms as f64,
            "ms",
            None,
        );
        facts.record(
            format!("{name}: folded on the leaders"),
            rate,
            "events/s",
            None,
        );
    }
    facts.record(
        "both caught up after the load stopped, in",
        millis(drain),
        "ms",
        None,
    );
    Ok(facts.into_vec())
}

/// The worst lag of each built-in projection over every node and partition
/// (one call: the node asked gathers every node's view).
async fn lags(client: &Client) -> anyhow::Result<BTreeMap<String, Lag>> {
    let mut worst: BTreeMap<String, Lag> = BTreeMap::new();
    for status in builtin(client.projection_status().await?) {
        let lag = worst.entry(status.name).or_default();
        lag.events = lag.events.max(status.lag_events);
        lag.ms = lag.ms.max(status.lag_ms);
    }
    Ok(worst)
}

/// Partition-log positions each built-in projection has folded on the
/// partitions' leaders, summed over the partitions.
async fn folded(client: &Client) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut sums = BTreeMap::new();
    for status in builtin(client.projection_status().await?).filter(|s| s.leader) {
        *sums.entry(status.name).or_default() += status.checkpoint;
    }
    Ok(sums)
}

fn builtin(statuses: Vec<ProjectionStatus>) -> impl Iterator<Item = ProjectionStatus> {
    statuses
        .into_iter()
        .filter(|s| PROJECTIONS.contains(&s.name.as_str()))
}
