//! The actor runtime: activations on the partition leader, one turn at a
//! time, appends with the activation's version as the expected version,
//! snapshots, passivation and the bound on activations.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_cluster::{ClusterError, ClusterNode, Partition};
use cairn_storage::{ExpectedVersion, GroupId, NewEvent, Rejection, StreamAppend};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, warn};

use crate::actor::{ActorError, AnyState, DynActor};
use crate::error::NodeError;
use crate::ids::CommandIds;
use crate::limits::check_actor_id;
use crate::registry::{RegisteredType, Registry};
use crate::replay::{self, StateAt};
use crate::upcast::Upcasters;

/// How activations are managed.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Idle activations are passivated after this long.
    pub passivate_after: Duration,
    /// At most this many activations; the least recently used are dropped first.
    pub max_activations: usize,
}

/// An actor's address: type and id.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ActorKey {
    pub actor_type: String,
    pub id: String,
}

impl ActorKey {
    /// The actor's stream: `<type>-<id>`.
    pub fn stream(&self) -> String {
        format!("{}-{}", self.actor_type, self.id)
    }
}

/// The result of a command.
#[derive(Clone, Debug)]
pub struct AskOutcome {
    pub reply: Value,
    /// The actor's stream version after the command.
    pub version: u64,
    /// The command's id had already been applied: nothing was written, and
    /// `reply` is null.
    pub duplicate: bool,
}

impl AskOutcome {
    /// The answer to a command id that was already applied: nothing written,
    /// a null reply, the stream's current version.
    fn duplicate(version: u64) -> AskOutcome {
        AskOutcome {
            reply: Value::Null,
            version,
            duplicate: true,
        }
    }
}

struct Turn {
    command: Bytes,
    ids: CommandIds,
    reply: oneshot::Sender<Result<AskOutcome, NodeError>>,
}

struct Activation {
    turns: mpsc::Sender<Turn>,
    partition: GroupId,
    generation: u64,
    last_used: Instant,
}

type Activations = Arc<Mutex<HashMap<ActorKey, Activation>>>;

/// Runs the actors whose partitions this node leads.
#[derive(Clone)]
pub struct ActorRuntime {
    node: Arc<ClusterNode>,
    registry: Arc<Registry>,
    activations: Activations,
    config: RuntimeConfig,
    generation: Arc<std::sync::atomic::AtomicU64>,
    stop: CancellationToken,
}

/// Turns queued per activation before callers wait.
const TURN_QUEUE: usize = 1024;
/// Most bytes of crossed snapshots replicated in one Raft entry.
const SNAPSHOT_ENTRY_BYTES: usize = 1 << 20;
/// How many times a call is retried when its activation went away under it.
const REACTIVATIONS: usize = 3;

impl ActorRuntime {
    /// A runtime over `node`'s partitions. Drops a partition's activations
    /// whenever this node stops leading it.
    pub fn new(
        node: Arc<ClusterNode>,
        registry: Arc<Registry>,
        config: RuntimeConfig,
    ) -> ActorRuntime {
        let runtime = ActorRuntime {
            node,
            registry,
            activations: Arc::default(),
            config,
            generation: Arc::default(),
            stop: CancellationToken::new(),
        };
        runtime.watch_leadership();
        runtime
    }

    /// The registered actor types.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Number of activations held.
    pub fn active(&self) -> usize {
        self.activations.lock().expect("activations poisoned").len()
    }

    /// Resolves an actor type and id to its key and type, or a clear error.
    pub fn resolve(
        &self,
        actor_type: &str,
        id: &str,
    ) -> Result<(ActorKey, RegisteredType), NodeError> {
        let registered =
            self.registry
                .get(actor_type)
                .cloned()
                .ok_or_else(|| NodeError::UnknownActorType {
                    name: actor_type.to_string(),
                    known: self.registry.names().join(", "),
                })?;
        check_actor_id(id)?;
        Ok((
            ActorKey {
                actor_type: actor_type.to_string(),
                id: id.to_string(),
            },
            registered,
        ))
    }

    /// The local replica of the actor's partition, if this node leads it.
    pub fn leading_partition(&self, key: &ActorKey) -> Result<Partition, ClusterError> {
        let group = self.node.topology().partition_of(&key.stream());
        let partition = self
            .node
            .partition(group)
            .ok_or(ClusterError::NotReplica { group })?;
        if partition.leader() != Some(self.node.node_id()) {
            return Err(ClusterError::NotLeader {
                group,
                leader: self.node.leader_of(group),
            });
        }
        Ok(partition)
    }

    /// Runs `command` on the actor, activating it here if needed. This node
    /// must lead the actor's partition.
    pub async fn ask(
        &self,
        actor_type: &str,
        id: &str,
        command: Bytes,
        ids: CommandIds,
    ) -> Result<AskOutcome, NodeError> {
        let (key, registered) = self.resolve(actor_type, id)?;
        // The actor decodes (and so validates) the command; only its size is checked here.
        crate::limits::check_size("command", &command)?;
        for (what, id) in [
            ("command id", &ids.command_id),
            ("correlation id", &ids.correlation_id),
            ("causation id", &ids.causation_id),
        ] {
            crate::limits::check_metadata_id(what, id)?;
        }
        let ids = ids.complete();
        for _ in 0..REACTIVATIONS {
            let partition = self.leading_partition(&key)?;
            let turns = self.activation(&key, &registered, partition);
            let (reply, rx) = oneshot::channel();
            let turn = Turn {
                command: command.clone(),
                ids: ids.clone(),
                reply,
            };
            if turns.send(turn).await.is_err() {
                continue; // passivated or dropped meanwhile: activate anew
            }
            if let Ok(result) = rx.await {
                return result;
            }
        }
        Err(ClusterError::NoLeader {
            group: self.node.topology().partition_of(&key.stream()),
        }
        .into())
    }

    /// The actor's state: the latest (linearizable), or as of a version or time.
    pub async fn state(
        &self,
        actor_type: &str,
        id: &str,
        at: StateAt,
    ) -> Result<(Value, u64), NodeError> {
        let (key, registered) = self.resolve(actor_type, id)?;
        let partition = self.leading_partition(&key)?;
        let actor = registered.actor.clone();
        let (state, version) = replay::load(
            &partition,
            actor.clone(),
            self.registry.upcasters().clone(),
            key.stream(),
            at,
        )
        .await?;
        let json = serde_json::from_slice(&actor.encode_state(&state)).map_err(|e| {
            ActorError::Corrupt {
                actor_type: key.actor_type.clone(),
                what: "state".into(),
                message: e.to_string(),
            }
        })?;
        Ok((json, version))
    }

    /// Stops every activation.
    pub fn shutdown(&self) {
        self.stop.cancel();
        self.activations
            .lock()
            .expect("activations poisoned")
            .clear();
    }

    /// The activation's turn queue, spawning it if there is none.
    fn activation(
        &self,
        key: &ActorKey,
        registered: &RegisteredType,
        partition: Partition,
    ) -> mpsc::Sender<Turn> {
        let mut activations = self.activations.lock().expect("activations poisoned");
        if let Some(existing) = activations.get_mut(key).filter(|a| !a.turns.is_closed()) {
            existing.last_used = Instant::now();
            return existing.turns.clone();
        }
        if activations.len() >= self.config.max_activations {
            evict_least_recently_used(&mut activations);
        }
        let (tx, rx) = mpsc::channel(TURN_QUEUE);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        activations.insert(
            key.clone(),
            Activation {
                turns: tx.clone(),
                partition: partition.group(),
                generation,
                last_used: Instant::now(),
            },
        );
        let run = ActivationTask {
            key: key.clone(),
            actor: registered.actor.clone(),
            snapshot_every: registered.snapshot_every,
            upcasters: self.registry.upcasters().clone(),
            partition,
            passivate_after: self.config.passivate_after,
            activations: self.activations.clone(),
            generation,
            stop: self.stop.clone(),
        };
        let span = tracing::debug_span!("actor", actor = %format!("{}/{}", key.actor_type, key.id));
        tokio::spawn(run.run(rx).instrument(span));
        tx
    }

    /// Drops all activations of a partition as soon as this node stops
    /// leading it, or no longer holds a replica of it.
    fn watch_leadership(&self) {
        let me = self.node.node_id();
        let activations = self.activations.clone();
        let stop = self.stop.clone();
        crate::local_partitions::follow(&self.node, self.stop.clone(), move |partition| {
            let group = partition.group();
            let mut metrics = partition.leadership();
            let removed = partition.removed().clone();
            let activations = activations.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    if metrics.borrow_and_update().current_leader != Some(me)
                        || removed.is_cancelled()
                    {
                        drop_partition(&activations, group);
                    }
                    if removed.is_cancelled() {
                        return;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = removed.cancelled() => {}
                        changed = metrics.changed() => if changed.is_err() { return },
                    }
                }
            });
        });
    }
}

/// Drops every activation of partition `group`.
fn drop_partition(activations: &Mutex<HashMap<ActorKey, Activation>>, group: GroupId) {
    let mut map = activations.lock().expect("activations poisoned");
    let before = map.len();
    map.retain(|_, a| a.partition != group);
    if map.len() != before {
        debug!(
            partition = group,
            dropped = before - map.len(),
            "leadership lost: activations dropped"
        );
    }
}

fn evict_least_recently_used(activations: &mut HashMap<ActorKey, Activation>) {
    if let Some(oldest) = activations
        .iter()
        .min_by_key(|(_, a)| a.last_used)
        .map(|(k, _)| k.clone())
    {
        activations.remove(&oldest);
    }
}

/// One activation: loads the state, then runs turns one at a time.
struct ActivationTask {
    key: ActorKey,
    actor: Arc<dyn DynActor>,
    snapshot_every: u64,
    upcasters: Arc<Upcasters>,
    partition: Partition,
    passivate_after: Duration,
    activations: Activations,
    generation: u64,
    stop: CancellationToken,
}

impl ActivationTask {
    async fn run(self, mut turns: mpsc::Receiver<Turn>) {
        let stream = self.key.stream();
        let loaded = replay::activate(
            &self.partition,
            self.actor.clone(),
            self.upcasters.clone(),
            stream.clone(),
            self.snapshot_every,
        )
        .await;
        match loaded {
            Ok(activated) => {
                self.save_crossed(&stream, activated.crossed);
                let (mut state, mut version) = (activated.state, activated.version);
                loop {
                    let turn = tokio::select! {
                        turn = turns.recv() => turn,
                        _ = tokio::time::sleep(self.passivate_after) => None,
                        _ = self.stop.cancelled() => None,
                    };
                    let Some(turn) = turn else { break };
                    let (result, keep) = self.turn(&stream, &mut state, &mut version, &turn).await;
                    let _ = turn.reply.send(result);
                    if !keep {
                        break;
                    }
                }
            }
            Err(e) => {
                warn!("activation failed: {e}");
                // Fail the calls already waiting with the same error.
                turns.close();
                while let Ok(turn) = turns.try_recv() {
                    let _ = turn.reply.send(Err(clone_error(&e)));
                }
            }
        }
        let mut map = self.activations.lock().expect("activations poisoned");
        if map
            .get(&self.key)
            .is_some_and(|a| a.generation == self.generation)
        {
            map.remove(&self.key);
        }
    }

    /// Runs one command. Returns its result and whether the activation may
    /// live on (a failed append means memory may be wrong: drop it).
    async fn turn(
        &self,
        stream: &str,
        state: &mut AnyState,
        version: &mut u64,
        turn: &Turn,
    ) -> (Result<AskOutcome, NodeError>, bool) {
        let decision = self.actor.handle(&self.key.id, state, &turn.command);
        // A command that decides to write nothing is answered as is (running
        // it again changes nothing). Otherwise, if its id was already applied
        // (a retry) its first event is in the stream: answer "duplicate",
        // with a null reply, rather than write again or refuse on the state
        // that already includes it.
        if !matches!(&decision, Ok((events, _)) if events.is_empty()) {
            match self.already_applied(stream, &turn.ids).await {
                Ok(false) => {}
                Ok(true) => return (Ok(AskOutcome::duplicate(*version)), true),
                Err(e) => return (Err(e.into()), false),
            }
        }
        let (events, reply) = match decision {
            Ok(decision) => decision,
            Err(e) => return (Err(e.into()), true),
        };
        let outcome = |version| AskOutcome {
            reply: reply.clone(),
            version,
            duplicate: false,
        };
        if events.is_empty() {
            return (Ok(outcome(*version)), true);
        }
        let ids = &turn.ids;
        let append = StreamAppend {
            stream: stream.to_string(),
            expected: ExpectedVersion::Exact(*version),
            events: events
                .iter()
                .enumerate()
                .map(|(i, e)| NewEvent {
                    id: ids.event_id(i),
                    event_type: e.event_type.clone(),
                    data: Bytes::from(e.data.clone()),
                    metadata: self.upcasters.metadata_for(&e.event_type),
                    correlation_id: ids.correlation_id.clone(),
                    causation_id: ids.causation_id.clone(),
                })
                .collect(),
        };
        match self.partition.append(append).await {
            // Already applied (a retry): the state includes it; nothing changes.
            Ok(written) if written.duplicate => (Ok(AskOutcome::duplicate(*version)), true),
            Err(ClusterError::Rejected(Rejection::IdempotencyConflict { .. })) => {
                (Ok(AskOutcome::duplicate(*version)), true)
            }
            Ok(written) => {
                for e in &events {
                    if let Err(err) = self.actor.apply(state, &e.event_type, &e.data) {
                        return (Err(err.into()), false);
                    }
                }
                let before = *version;
                *version = written.last_version;
                if before / self.snapshot_every != *version / self.snapshot_every {
                    self.snapshot(stream, state, *version);
                }
                (Ok(outcome(*version)), true)
            }
            Err(ClusterError::Rejected(r @ Rejection::WrongExpectedVersion { .. })) => {
                let actor = format!("{}/{}", self.key.actor_type, self.key.id);
                (
                    Err(NodeError::Conflict {
                        actor,
                        reason: r.to_string(),
                    }),
                    false,
                )
            }
            Err(e) => (Err(e.into()), false),
        }
    }

    /// Whether the command with these ids already wrote its events here.
    async fn already_applied(&self, stream: &str, ids: &CommandIds) -> Result<bool, ClusterError> {
        let first_id = ids.event_id(0);
        let stream = stream.to_string();
        self.partition
            .read_local(move |reader, group| reader.event_version(group, &stream, &first_id))
            .await
            .map(|found| found.is_some())
    }

    /// Replicates, in the background, the snapshots the activation's replay
    /// crossed, in entries of at most [`SNAPSHOT_ENTRY_BYTES`].
    fn save_crossed(&self, stream: &str, mut crossed: Vec<(u64, Bytes)>) {
        if crossed.is_empty() {
            return;
        }
        debug!(
            snapshots = crossed.len(),
            "saving the snapshots the replay crossed"
        );
        let partition = self.partition.clone();
        let stream = stream.to_string();
        tokio::spawn(async move {
            while !crossed.is_empty() {
                let mut bytes = 0;
                let take = crossed
                    .iter()
                    .take_while(|(_, s)| {
                        bytes += s.len();
                        bytes <= SNAPSHOT_ENTRY_BYTES
                    })
                    .count()
                    .max(1);
                let chunk: Vec<_> = crossed.drain(..take).collect();
                if let Err(e) = partition.save_actor_snapshots(stream.clone(), chunk).await {
                    debug!("crossed snapshots not saved: {e}");
                    return;
                }
            }
        });
    }

    /// Replicates a snapshot of the state in the background; a lost snapshot
    /// only means a longer replay.
    fn snapshot(&self, stream: &str, state: &AnyState, version: u64) {
        let bytes = Bytes::from(self.actor.encode_state(state));
        let partition = self.partition.clone();
        let stream = stream.to_string();
        tokio::spawn(async move {
            if let Err(e) = partition.save_actor_snapshot(stream, version, bytes).await {
                debug!("actor snapshot at version {version} not saved: {e}");
            }
        });
    }
}

fn clone_error(e: &NodeError) -> NodeError {
    match e {
        NodeError::Cluster(c) => NodeError::Cluster(c.clone()),
        NodeError::Actor(a) => NodeError::Actor(a.clone()),
        other => NodeError::Cluster(ClusterError::Raft(other.to_string())),
    }
}
