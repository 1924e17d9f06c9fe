//! The tasks that fold each local partition's log into each projection's
//! read model, and the local side of queries, status and reset.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn_cluster::{ClusterError, ClusterNode, Partition, now_ms};
use cairn_storage::{GroupId, LogPage, RecordedEvent, Store};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{Mutex, Notify, watch};
use tokio::time::Instant;
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
/// A batch that changes a read model commits its checkpoint with the
/// changes; one that changes nothing (events the projection ignores) records
/// it only once it is this far ahead of the stored one. After a restart a
/// projection re-reads at most this many ignored events.
const PERSIST_EVERY: u64 = 4096;

/// One projection on one local partition.
struct Slot {
    projection: Arc<dyn Projection>,
    partition: Partition,
    /// Serializes folding with reset.
    lock: Arc<Mutex<()>>,
    /// The checkpoint after the last folded batch (in memory).
    checkpoint: watch::Sender<u64>,
    /// The checkpoint stored with the read model (at most `checkpoint`).
    persisted: AtomicU64,
    /// A query is waiting for a read model of this partition: fold now,
    /// without lingering (shared by the partition's slots).
    wanted: Arc<Notify>,
}

/// The slots of the partitions being folded here, by projection and partition.
type Slots = Arc<RwLock<HashMap<(&'static str, GroupId), Arc<Slot>>>>;

/// A partition's slots, listed while its fold runs.
struct Registered {
    slots: Slots,
    mine: Vec<((&'static str, GroupId), Arc<Slot>)>,
}

impl Registered {
    fn new(slots: &Slots, group: GroupId, of: &[Arc<Slot>]) -> Registered {
        let mine: Vec<_> = of
            .iter()
            .map(|s| ((s.projection.name(), group), s.clone()))
            .collect();
        let mut map = slots.write().expect("slots lock poisoned");
        for (key, slot) in &mine {
            map.insert(*key, slot.clone());
        }
        Registered {
            slots: slots.clone(),
            mine,
        }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut map = self.slots.write().expect("slots lock poisoned");
        for (key, slot) in &self.mine {
            // Not a successor's: the partition may have come back already.
            if map.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                map.remove(key);
            }
        }
    }
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
    slots: Slots,
    projections: Arc<Vec<Arc<dyn Projection>>>,
    upcasters: Arc<Upcasters>,
    stop: CancellationToken,
}

impl ProjectionRunner {
    /// Starts folding `projections` on every local partition, and on each
    /// partition that moves here later.
    pub fn start(
        node: Arc<ClusterNode>,
        projections: Vec<Arc<dyn Projection>>,
        upcasters: Arc<Upcasters>,
    ) -> ProjectionRunner {
        let runner = ProjectionRunner {
            node: node.clone(),
            slots: Arc::default(),
            projections: Arc::new(projections),
            upcasters,
            stop: CancellationToken::new(),
        };
        if !runner.projections.is_empty() {
            let serving = runner.clone();
            crate::local_partitions::follow(&node, runner.stop.clone(), move |partition| {
                let span = tracing::debug_span!("projections", partition = partition.group());
                let run = serving.clone().serve(partition.clone()).instrument(span);
                crate::local_partitions::spawn_while_local(&partition, run);
            });
        }
        runner
    }

    /// Folds every projection on `partition` while it is local: its slots
    /// come from the checkpoints stored with the read models, and go when
    /// the partition leaves (or the runner stops).
    async fn serve(self, partition: Partition) {
        let group = partition.group();
        let slots = loop {
            match self.slots_of(&partition).await {
                Ok(slots) => break slots,
                Err(e) => {
                    warn!("reading projection checkpoints, retrying: {e}");
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_AFTER) => {}
                    }
                }
            }
        };
        let _registered = Registered::new(&self.slots, group, &slots);
        self.fold(group, slots).await;
    }

    /// One slot per projection for `partition`, at its stored checkpoint.
    async fn slots_of(&self, partition: &Partition) -> Result<Vec<Arc<Slot>>, NodeError> {
        let group = partition.group();
        let names: Vec<&'static str> = self.projections.iter().map(|p| p.name()).collect();
        let store = self.node.store().clone();
        let checkpoints = tokio::task::spawn_blocking(move || {
            names
                .into_iter()
                .map(|name| store.projection_checkpoint(name, group))
                .collect::<Result<Vec<u64>, _>>()
        })
        .await
        .map_err(|_| ClusterError::ShuttingDown)?
        .map_err(ClusterError::from)?;
        let wanted = Arc::new(Notify::new());
        Ok(self
            .projections
            .iter()
            .zip(checkpoints)
            .map(|(projection, checkpoint)| {
                Arc::new(Slot {
                    projection: projection.clone(),
                    partition: partition.clone(),
                    lock: Arc::default(),
                    checkpoint: watch::Sender::new(checkpoint),
                    persisted: AtomicU64::new(checkpoint),
                    wanted: wanted.clone(),
                })
            })
            .collect())
    }

    /// The slot of projection `name` on partition `group`, if local.
    fn slot(&self, name: &'static str, group: GroupId) -> Option<Arc<Slot>> {
        let slots = self.slots.read().expect("slots lock poisoned");
        slots.get(&(name, group)).cloned()
    }

    /// Every local slot, in no particular order.
    fn all_slots(&self) -> Vec<((&'static str, GroupId), Arc<Slot>)> {
        let slots = self.slots.read().expect("slots lock poisoned");
        slots.iter().map(|(k, v)| (*k, v.clone())).collect()
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

    /// Keeps every projection's read model of partition `group` caught up
    /// with its log: each batch of the log is read once for all of them.
    /// A projection that fails is retried on its own every [`RETRY_AFTER`],
    /// so that it never holds the others back.
    async fn fold(&self, group: GroupId, slots: Vec<Arc<Slot>>) {
        let slots: Vec<&Slot> = slots.iter().map(|s| &**s).collect();
        let Some(first) = slots.first() else { return };
        let mut applied = first.partition.applied();
        let wanted = first.wanted.clone();
        let mut failing = vec![false; slots.len()];
        let mut retry_at = Instant::now();
        loop {
            let Some(mut moved) = self.fold_some(group, &slots, &mut failing, false).await else {
                return;
            };
            if failing.contains(&true) && Instant::now() >= retry_at {
                let Some(retried) = self.fold_some(group, &slots, &mut failing, true).await else {
                    return;
                };
                moved |= retried;
                retry_at = Instant::now() + RETRY_AFTER;
            }
            if moved {
                continue;
            }
            // Caught up: wait for the partition to apply more (or for the
            // next retry of a failing projection), then linger a little so
            // that a busy partition is folded in batches rather than once per
            // Raft entry (each fold is a scan and a write), unless a query is
            // waiting for a read model.
            let retry = failing.contains(&true);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
                _ = wanted.notified() => continue,
                _ = tokio::time::sleep_until(retry_at), if retry => continue,
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(LINGER) => {}
                _ = wanted.notified() => {}
            }
        }
    }

    /// Folds one batch of `group`'s log into the slots whose `failing` flag
    /// equals `retrying`, holding their locks, and updates their flags;
    /// returns whether any moved, or `None` once the node shuts down.
    async fn fold_some(
        &self,
        group: GroupId,
        slots: &[&Slot],
        failing: &mut [bool],
        retrying: bool,
    ) -> Option<bool> {
        let picked: Vec<usize> = (0..slots.len())
            .filter(|&i| failing[i] == retrying)
            .collect();
        if picked.is_empty() {
            return Some(false);
        }
        let mut guards = Vec::with_capacity(picked.len());
        for &i in &picked {
            guards.push(slots[i].lock.lock().await);
        }
        let behind: Vec<Behind> = picked
            .iter()
            .map(|&i| Behind {
                projection: slots[i].projection.clone(),
                checkpoint: *slots[i].checkpoint.borrow(),
                persisted: slots[i].persisted.load(Ordering::Relaxed),
            })
            .collect();
        let store = self.node.store().clone();
        // When the log's traffic is for other streams, most batches have
        // nothing to fold. Deciding that here, from memory, spares a wake-up
        // of a blocking-pool thread per applied entry and partition (with
        // 256 writers appending to other streams, those wake-ups were over
        // a quarter of the nodes' context switches: bench/README.md, session 11).
        // A batch it cannot pass over, if read from memory here, is folded
        // as read, not read again.
        let recent = store.reader().read_recent_partition_log_where(
            group,
            first_unfolded(&behind),
            BATCH,
            wanted_by(&behind),
        );
        let folded = match recent.as_ref().and_then(|page| pass_over(page, &behind)) {
            Some(outcomes) => Ok(outcomes),
            None => {
                let upcasters = self.upcasters.clone();
                tokio::task::spawn_blocking(move || {
                    fold_batch(&store, &upcasters, group, behind, recent)
                })
                .await
                .ok()?
            }
        };
        let outcomes = match folded {
            Ok(outcomes) => outcomes,
            Err(e) => {
                warn!("reading the partition log failed, retrying: {e}");
                picked.iter().for_each(|&i| failing[i] = true);
                return Some(false);
            }
        };
        let mut moved = false;
        for (&i, outcome) in picked.iter().zip(outcomes) {
            let slot = slots[i];
            failing[i] = outcome.is_err();
            match outcome {
                Ok(Some(done)) => {
                    slot.persisted.store(done.persisted, Ordering::Relaxed);
                    slot.checkpoint.send_replace(done.checkpoint);
                    moved = true;
                }
                Ok(None) => {}
                Err(e) => {
                    let name = slot.projection.name();
                    warn!(projection = name, "folding failed, retrying: {e}");
                }
            }
        }
        Some(moved)
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
            .slot(projection.name(), group)
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
        let slots = self.all_slots();
        let mut all = Vec::with_capacity(slots.len());
        for ((name, group), slot) in &slots {
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
        for ((slot_name, group), slot) in self.all_slots() {
            if slot_name != projection.name() {
                continue;
            }
            let _guard = slot.lock.lock().await;
            let store = self.node.store().clone();
            let name = slot_name;
            tokio::task::spawn_blocking(move || store.projection_reset(name, group))
                .await
                .map_err(|_| ClusterError::ShuttingDown)?
                .map_err(ClusterError::from)?;
            slot.persisted.store(0, Ordering::Relaxed);
            slot.checkpoint.send_replace(0);
        }
        Ok(())
    }
}

/// A projection's place in a partition log, as a batch starts.
struct Behind {
    projection: Arc<dyn Projection>,
    checkpoint: u64,
    persisted: u64,
}

/// Where a projection stands after a batch that moved it.
struct Folded {
    checkpoint: u64,
    persisted: u64,
}

/// Folds the next batch of partition `group`'s log, read once, into every
/// projection in `behind` that has not folded it yet (`read`: the batch,
/// when already read from memory); returns, for each, where it got to
/// (`None`: nothing new). A failing projection fails alone (and the
/// others' progress in this batch stands); the outer error is a failed read
/// of the log.
fn fold_batch(
    store: &Store,
    upcasters: &Upcasters,
    group: GroupId,
    behind: Vec<Behind>,
    read: Option<LogPage>,
) -> Result<Vec<Result<Option<Folded>, ProjectionError>>, ProjectionError> {
    let page = match read {
        Some(page) => page,
        None => store.reader().read_partition_log_where(
            group,
            first_unfolded(&behind),
            BATCH,
            wanted_by(&behind),
        )?,
    };
    let Some(last) = page.last_position else {
        return Ok(behind.iter().map(|_| Ok(None)).collect());
    };
    Ok(behind
        .iter()
        .map(|b| fold_into(store, upcasters, group, b, &page.events, last))
        .collect())
}

/// What [`fold_batch`] would return for `page`, the next batch, when it
/// holds no event any of `behind` wants and none of them is due to persist
/// its checkpoint: each just moves past it. `None` when the batch must be
/// folded or a checkpoint stored.
fn pass_over(
    page: &LogPage,
    behind: &[Behind],
) -> Option<Vec<Result<Option<Folded>, ProjectionError>>> {
    if !page.events.is_empty() {
        return None;
    }
    let Some(last) = page.last_position else {
        return Some(behind.iter().map(|_| Ok(None)).collect());
    };
    behind
        .iter()
        .map(|b| {
            if last <= b.checkpoint {
                Some(Ok(None))
            } else if due_to_persist(b, last) {
                None
            } else {
                Some(Ok(Some(Folded {
                    checkpoint: last,
                    persisted: b.persisted,
                })))
            }
        })
        .collect()
}

/// The first position of the partition log some of `behind` has not folded.
fn first_unfolded(behind: &[Behind]) -> u64 {
    behind.iter().map(|b| b.checkpoint).min().unwrap_or(0) + 1
}

/// Whether an event of `stream` is for any of `behind`.
fn wanted_by(behind: &[Behind]) -> impl Fn(&str) -> bool + '_ {
    |stream: &str| behind.iter().any(|b| b.projection.accepts_stream(stream))
}

/// Whether `b`, folded up to `last`, must write its checkpoint even with
/// no change to its read model (so that a restart does not re-fold far).
fn due_to_persist(b: &Behind, last: u64) -> bool {
    last - b.persisted >= PERSIST_EVERY
}

/// Folds the `events` after `b.checkpoint` into `b`'s read model.
fn fold_into(
    store: &Store,
    upcasters: &Upcasters,
    group: GroupId,
    b: &Behind,
    events: &[RecordedEvent],
    last: u64,
) -> Result<Option<Folded>, ProjectionError> {
    if last <= b.checkpoint {
        return Ok(None);
    }
    let name = b.projection.name();
    let mut model = ReadModel::new(store, name, group);
    let new = events.iter().filter(|e| e.position > b.checkpoint);
    let accepted =
        |e: &&RecordedEvent| b.projection.accepts_stream(&e.stream) && b.projection.accepts(e);
    for event in new.filter(accepted) {
        let mut event = event.clone();
        upcasters.upcast(&mut event)?;
        b.projection.apply(&event, &mut model)?;
    }
    let changes = model.into_changes();
    let persisted = if changes.is_empty() && !due_to_persist(b, last) {
        b.persisted
    } else {
        store.projection_commit(name, group, last, changes)?;
        last
    };
    Ok(Some(Folded {
        checkpoint: last,
        persisted,
    }))
}
