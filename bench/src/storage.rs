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
    // RocksDB deletes the write-ahead logs the flushes made obsolete in the
    // background, after `compact` returned: wait until each node is down to
    // its live one (a run measured 0 or 65-80 bytes/event of WAL otherwise).
    wait_for(
        "every node has deleted its obsolete write-ahead logs",
        APPLY_TIMEOUT,
        Duration::from_millis(100),
        || async {
            for id in c.ids() {
                let mut files = FileBytes::default();
                files.add_dir(&c.data_dir(id))?;
                if files.wal_files > 1 {
                    return Ok(Err(format!("node {id} has {} WAL files", files.wal_files)));
                }
            }
            Ok(Ok(()))
        },
    )
    .await?;
    // Everything on disk, with the nodes still running: SST files, RocksDB's
    // WAL and manifest, Raft's log.
    let mut files = FileBytes::default();
    for id in cluster.ids() {
        files.add_dir(&cluster.data_dir(id))?;
    }
    let total = files.total();
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
    let what = "of which RocksDB write-ahead logs";
    facts.record(what, per_event(files.wal), "bytes/event", None);
    let what = "of which RocksDB info logs, manifests, options";
    facts.record(what, per_event(files.other), "bytes/event", None);
    Ok(facts.into_vec())
}

/// Bytes of the files under data directories, by kind.
#[derive(Default)]
struct FileBytes {
    sst: u64,
    /// RocksDB's write-ahead logs (`NNNNNN.log`).
    wal: u64,
    wal_files: usize,
    other: u64,
}

impl FileBytes {
    fn total(&self) -> u64 {
        self.sst + self.wal + self.other
    }

    /// Adds every file under `dir`, recursively.
    fn add_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                self.add_dir(&entry.path())?;
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let kind = if name.ends_with(".sst") {
                &mut self.sst
            } else if name.ends_with(".log") {
                self.wal_files += 1;
                &mut self.wal
            } else {
                &mut self.other
            };
            *kind += meta.len();
        }
        Ok(())
    }
}
