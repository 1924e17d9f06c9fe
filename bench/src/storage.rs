//! The storage workload (issue 4 workload 7), on its own 3-node cluster:
//! bytes on disk per 200-byte JSON event after compaction.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use cairn_client::EventData;

use crate::bulk::append_events;
use crate::harness::Sizes;
use crate::wait::wait_for;
use crate::{CairnCluster, Fact, Facts, random_payload};

/// Events per append (and per stream).
const BATCH: u64 = 100;
/// How long the replicas may take to apply everything.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the workload on a fresh cluster and stops it.
pub async fn run(cairn_bin: &Path, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    CairnCluster::run_fresh(cairn_bin, &[], async |cluster| {
        measure(cluster, sizes).await
    })
    .await
}

async fn measure(cluster: &mut CairnCluster, sizes: &Sizes) -> anyhow::Result<Vec<Fact>> {
    let events = sizes.storage_events;
    let client = cluster.client_all().await?;
    let stream = |index| format!("storage-{index}");
    let event = || EventData::new("BenchEvent", random_payload());
    append_events(&client, events, BATCH, stream, event).await?;
    let c: &CairnCluster = cluster;
    wait_for(
        "every replica has applied the events",
        APPLY_TIMEOUT,
        Duration::from_millis(100),
        || c.replicas_caught_up(),
    )
    .await?;
    wait_for(
        "every replica has truncated its Raft log",
        APPLY_TIMEOUT,
        Duration::from_millis(100),
        || c.logs_truncated(),
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
    let mut facts = Facts::new("storage");
    let what =
        format!("data dirs after compaction / 3 / {events} events of 200 B JSON (random letters)");
    facts.record(
        what,
        per_event(total),
        "bytes/event",
        Some("≤ 150 bytes/event"),
    );
    let what = "of which SST files (as the nodes report them)";
    facts.record(what, per_event(sst), "bytes/event", None);
    let family = |name: &str| -> u64 {
        let bytes = compacted.iter().map(|c| c.sst_bytes_by_family.get(name));
        bytes.map(|b| b.copied().unwrap_or(0)).sum()
    };
    for (name, what) in [
        (
            "sm",
            "of which the event store (events, indexes, stream info)",
        ),
        ("log", "of which Raft logs"),
    ] {
        facts.record(what, per_event(family(name)), "bytes/event", None);
    }
    Ok(facts.into_vec())
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
