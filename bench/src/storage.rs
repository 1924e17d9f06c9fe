//! The storage workload (issue 4 workload 7), on its own 3-node cluster:
//! bytes on disk per 200-byte JSON event after compaction.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cairn_client::EventData;

use crate::bulk::append_batches;
use crate::harness::Sizes;
use crate::wait::wait_for;
use crate::{CairnCluster, Fact, payload};

const WORKLOAD: &str = "storage";
/// Events per append (and per stream).
const BATCH: u64 = 100;
/// How long the replicas may take to apply everything.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the workload on a fresh cluster and stops it.
pub async fn run(cairn_bin: &Path, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let mut cluster = CairnCluster::start(cairn_bin).await?;
    let facts = measure(&mut cluster, sizes).await;
    cluster.stop().await?;
    facts
}

async fn measure(cluster: &mut CairnCluster, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let events = sizes.storage_events;
    let client = cluster.client_all().await?;
    let data = payload();
    append_batches(&client, events.div_ceil(BATCH), move |index: u64| {
        let count = BATCH.min(events - index * BATCH);
        let batch = (0..count)
            .map(|_| EventData::new("BenchEvent", data.clone()))
            .collect();
        (format!("storage-{index}"), batch)
    })
    .await?;
    let c: &CairnCluster = cluster;
    wait_for(
        "every replica has applied the events",
        APPLY_TIMEOUT,
        Duration::from_millis(100),
        || c.replicas_caught_up(),
    )
    .await?;
    let compacted = client
        .with_timeout(Duration::from_secs(600))
        .compact()
        .await
        .context("compacting every node")?;
    let sst: u64 = compacted.iter().map(|c| c.sst_bytes_after).sum();
    // Everything on disk, with the nodes still running: SST files, RocksDB's
    // WAL and manifest, Raft's log.
    let mut total = 0;
    for id in cluster.ids() {
        total += dir_bytes(&cluster.data_dir(id))?;
    }
    let per_event = |bytes: u64| bytes as f64 / cluster.ids().count() as f64 / events as f64;
    let facts = vec![
        Fact::new(
            WORKLOAD,
            format!("data dirs after compaction / 3 / {events} events of 200 B JSON"),
            per_event(total),
            "bytes/event",
        )
        .target("≤ 150 bytes/event"),
        Fact::new(
            WORKLOAD,
            "of which SST files (as the nodes report them)",
            per_event(sst),
            "bytes/event",
        ),
    ];
    for fact in &facts {
        eprintln!("{}", fact.line());
    }
    Ok(facts)
}

/// Bytes of all files under `dir`, recursively.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
