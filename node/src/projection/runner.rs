//! The tasks that fold each local partition's log into each projection's
//! read model, and the local side of queries, status and reset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::{ClusterError, ClusterNode, Partition, now_ms};
use cairn_storage::{GroupId, Store};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, warn};

use super::{Projection, ProjectionError, ReadModel};
use crate::error::NodeError;
use crate::upcast::Upcasters;

/// Events folded per committed batch.
const BATCH: usize = 1000;
/// How long a query waits for a read model to catch up with the partition.
const CATCH_UP: Duration = Duration::from_secs(5);
/// How long a caught-up fold waits after new entries are applied, to take
/// the entries that follow in the same batch.
const LINGER: Duration = Duration::from_millis(20);
/// Pause after a failed batch before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// One projection on one local partition.
struct Slot {
    projection: Arc<dyn Projection>,
    partition: Partition,
    /// Serializes folding with reset.
    lock: Arc<Mutex<()>>,
    /// The checkpoint after the last committed batch.
    checkpoint: watch::Sender<u64>,
    /// A query is waiting for this read model: fold now, without lingering.
    wanted: Arc<Notify>,
}

/// Where a projection stands on one partition of this node.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectionStatus {
    pub name: String,
    pub partition: GroupId,
    pub node_id: u64,
    /// Last partition-log position folded.
    pub checkpoint: u64,
    /// Last position in this replica's partition log.
    pub last_position: u64,
    /// Events not yet folded.
    pub lag_events: u64,
    /// Age of the oldest event not yet folded (0 when caught up).
    pub lag_ms: i64,
}

/// Runs every projection over every partition this node replicates.
#[derive(Clone)]
pub struct ProjectionRunner {
    node: Arc<ClusterNode>,
    slots: Arc<HashMap<(&'static str, GroupId), Slot>>,
    projections: Arc<Vec<Arc<dyn Projection>>>,
    upcasters: Arc<Upcasters>,
    stop: CancellationToken,
}

impl ProjectionRunner {
    /// Starts folding `projections` on every local partition.
    pub fn start(
        node: Arc<ClusterNode>,
        projections: Vec<Arc<dyn Projection>>,
        upcasters: Arc<Upcasters>,
    ) -> Result<ProjectionRunner, NodeError> {
        let store = node.store().clone();
        let mut slots = HashMap::new();
        for group in 0..node.topology().partitions {
            let Some(partition) = node.partition(group) else {
                continue;
            };
            for projection in &projections {
                let checkpoint = store
                    .projection_checkpoint(projection.name(), group)
                    .map_err(ClusterError::from)?;
                let slot = Slot {
                    projection: projection.clone(),
                    partition: partition.clone(),
                    lock: Arc::default(),
                    checkpoint: watch::Sender::new(checkpoint),
                    wanted: Arc::default(),
                };
                slots.insert((projection.name(), group), slot);
            }
        }
        let runner = ProjectionRunner {
            node,
            slots: Arc::new(slots),
            projections: Arc::new(projections),
            upcasters,
            stop: CancellationToken::new(),
        };
        for key in runner.slots.keys() {
            let span = tracing::debug_span!("projection", name = key.0, partition = key.1);
            tokio::spawn(runner.clone().fold(*key).instrument(span));
        }
        Ok(runner)
    }

    /// The projection called `name`.
    pub fn projection(&self, name: &str) -> Result<Arc<dyn Projection>, NodeError> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .cloned()
            .ok_or_else(|| {
                let known: Vec<_> = self.projections.iter().map(|p| p.name()).collect();
                NodeError::UnknownProjection {
                    name: name.to_string(),
                    known: known.join(", "),
                }
            })
    }

    /// Stops folding.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }

    /// Keeps the read model of `key` caught up with its partition's log.
    async fn fold(self, key: (&'static str, GroupId)) {
        let slot = &self.slots[&key];
        let mut applied = slot.partition.metrics();
        loop {
            let folded = {
                let _guard = slot.lock.lock().await;
                let store = self.node.store().clone();
                let projection = slot.projection.clone();
                let reader = store.reader();
                let upcasters = self.upcasters.clone();
                tokio::task::spawn_blocking(move || {
                    fold_batch(&store, &reader, &upcasters, projection.as_ref(), key.1)
                })
                .await
            };
            match folded {
                Ok(Ok(Some(checkpoint))) => {
                    slot.checkpoint.send_replace(checkpoint);
                    continue;
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => {
                    warn!("folding failed, retrying: {e}");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_AFTER) => continue,
                    }
                }
                Err(_) => return,
            }
            // Caught up: wait for the partition to apply more, then linger a
            // little so that a busy partition is folded in batches rather
            // than once per Raft entry (each fold is a scan and a write),
            // unless a query is waiting for this model.
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
                _ = slot.wanted.notified() => continue,
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(LINGER) => {}
                _ = slot.wanted.notified() => {}
            }
        }
    }

    /// Answers `args` from this node's read model of partition `group`, which
    /// this node must lead: confirms leadership, then waits (up to 5 s) until
    /// the read model has folded everything applied so far, so a query after
    /// an acknowledged write sees it.
    pub async fn query_partition(
        &self,
        name: &str,
        group: GroupId,
        args: &Value,
    ) -> Result<Value, NodeError> {
        let projection = self.projection(name)?;
        let slot = self
            .slots
            .get(&(projection.name(), group))
            .ok_or(ClusterError::NotReplica { group })?;
        slot.partition.ensure_leader().await?;
        let target = slot
            .partition
            .read_local(|reader, group| reader.last_position(group))
            .await?;
        let mut checkpoint = slot.checkpoint.subscribe();
        if *checkpoint.borrow() < target {
            slot.wanted.notify_one();
        }
        tokio::time::timeout(CATCH_UP, checkpoint.wait_for(|c| *c >= target))
            .await
            .map_err(|_| NodeError::ProjectionBehind {
                name: name.to_string(),
                partition: group,
            })?
            .map_err(|_| ClusterError::ShuttingDown)?;
        let store = self.node.store().clone();
        let args = args.clone();
        let name = projection.name();
        tokio::task::spawn_blocking(move || {
            projection.query(&ReadModel::new(&store, name, group), &args)
        })
        .await
        .map_err(|_| ClusterError::ShuttingDown)?
        .map_err(NodeError::from)
    }

    /// Where every projection stands on every local partition.
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>, NodeError> {
        let mut all = Vec::with_capacity(self.slots.len());
        for ((name, group), slot) in self.slots.iter() {
            let checkpoint = *slot.checkpoint.borrow();
            let (last_position, oldest) = slot
                .partition
                .read_local(move |reader, group| {
                    let last = reader.last_position(group)?;
                    let oldest = reader
                        .read_partition_log(group, checkpoint + 1, 1)?
                        .first()
                        .map(|e| e.timestamp_ms);
                    Ok((last, oldest))
                })
                .await?;
            all.push(ProjectionStatus {
                name: name.to_string(),
                partition: *group,
                node_id: self.node.node_id(),
                checkpoint,
                last_position,
                lag_events: last_position.saturating_sub(checkpoint),
                lag_ms: oldest.map(|t| (now_ms() - t).max(0)).unwrap_or(0),
            });
        }
        all.sort_by(|a, b| (&a.name, a.partition).cmp(&(&b.name, b.partition)));
        Ok(all)
    }

    /// Forgets projection `name`'s read models on this node; they are rebuilt
    /// from the start of each partition log.
    pub async fn reset(&self, name: &str) -> Result<(), NodeError> {
        let projection = self.projection(name)?;
        for ((slot_name, group), slot) in self.slots.iter() {
            if *slot_name != projection.name() {
                continue;
            }
            let _guard = slot.lock.lock().await;
            let store = self.node.store().clone();
            let (name, group) = (*slot_name, *group);
            tokio::task::spawn_blocking(move || store.projection_reset(name, group))
                .await
                .map_err(|_| ClusterError::ShuttingDown)?
                .map_err(ClusterError::from)?;
            slot.checkpoint.send_replace(0);
        }
        Ok(())
    }
}

/// Folds the next batch of the partition log; returns the new checkpoint, or
/// `None` when there was nothing to fold.
fn fold_batch(
    store: &Store,
    reader: &cairn_storage::Reader,
    upcasters: &Upcasters,
    projection: &dyn Projection,
    group: GroupId,
) -> Result<Option<u64>, ProjectionError> {
    let name = projection.name();
    let checkpoint = store.projection_checkpoint(name, group)?;
    let events = reader.read_partition_log(group, checkpoint + 1, BATCH)?;
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(None);
    };
    let mut model = ReadModel::new(store, name, group);
    for mut event in events.into_iter().filter(|e| projection.accepts(e)) {
        upcasters.upcast(&mut event)?;
        projection.apply(&event, &mut model)?;
    }
    store.projection_commit(name, group, last, model.into_changes())?;
    Ok(Some(last))
}
