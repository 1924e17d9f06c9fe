//! Rebuilding an actor's state from its newest snapshot plus the events after it.

use std::sync::Arc;

use bytes::Bytes;
use cairn_cluster::Partition;
use cairn_storage::{EventRef, GroupId, Reader};

use crate::actor::{AnyState, DynActor};
use crate::error::NodeError;
use crate::upcast::Upcasters;

/// Which state of an actor to rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateAt {
    /// All events.
    Latest,
    /// Events up to and including this stream version.
    Version(u64),
    /// Events with a timestamp at or before this time (ms since the epoch).
    Timestamp(i64),
}

/// Folds the actor's stream: the newest snapshot at or below the target
/// version, then the events after it. Returns the state and the version it
/// reflects. The read is linearizable ([`Partition::read`]): this replica
/// must lead the partition.
pub async fn load(
    partition: &Partition,
    actor: Arc<dyn DynActor>,
    upcasters: Arc<Upcasters>,
    stream: String,
    at: StateAt,
) -> Result<(AnyState, u64), NodeError> {
    let loaded = load_with(partition, actor, upcasters, stream, at, None).await?;
    Ok((loaded.state, loaded.version))
}

/// An actor's latest state, with the snapshots its replay crossed.
pub struct Activated {
    pub state: AnyState,
    pub version: u64,
    /// `(version, state)` at every multiple of the snapshot interval that the
    /// replay passed after the newest stored snapshot: saving them makes the
    /// next activation, and temporal queries, touch at most one interval of
    /// events (streams written through the plain event-store API, or before
    /// the type had snapshots, have none of their own).
    pub crossed: Vec<(u64, Bytes)>,
}

/// At most this many bytes of crossed snapshots are kept from one replay;
/// past it the replay only folds (the later intervals are snapshotted by
/// the actor's own turns, or by its next activation).
const CROSSED_BYTES: usize = 64 << 20;

/// The actor's latest state for an activation, collecting the snapshots the
/// replay crosses every `snapshot_every` events.
pub async fn activate(
    partition: &Partition,
    actor: Arc<dyn DynActor>,
    upcasters: Arc<Upcasters>,
    stream: String,
    snapshot_every: u64,
) -> Result<Activated, NodeError> {
    load_with(
        partition,
        actor,
        upcasters,
        stream,
        StateAt::Latest,
        Some(snapshot_every),
    )
    .await
}

async fn load_with(
    partition: &Partition,
    actor: Arc<dyn DynActor>,
    upcasters: Arc<Upcasters>,
    stream: String,
    at: StateAt,
    snapshot_every: Option<u64>,
) -> Result<Activated, NodeError> {
    let name = stream.clone();
    let folded = partition
        .read(move |reader, group| {
            let max_version = match at {
                StateAt::Latest => u64::MAX,
                StateAt::Version(v) => v,
                StateAt::Timestamp(t) => match reader.version_at(group, &stream, t)? {
                    Some(v) => v,
                    None => return Ok(Err(NotThen)),
                },
            };
            let fold = Fold {
                reader,
                group,
                actor: actor.as_ref(),
                upcasters: &upcasters,
                stream: &stream,
                snapshot_every,
            };
            Ok(Ok(fold.run(max_version)?))
        })
        .await?;
    match folded {
        Ok(result) => Ok(result?),
        Err(NotThen) => Err(NodeError::DidNotExist {
            stream: name,
            at: describe(at),
        }),
    }
}

struct NotThen;

fn describe(at: StateAt) -> String {
    match at {
        StateAt::Latest => "now".into(),
        StateAt::Version(v) => format!("version {v}"),
        StateAt::Timestamp(t) => format!("{t} ms since the epoch"),
    }
}

struct Fold<'a> {
    reader: &'a Reader,
    group: GroupId,
    actor: &'a dyn DynActor,
    upcasters: &'a Upcasters,
    stream: &'a str,
    /// Collect the snapshots crossed at this interval.
    snapshot_every: Option<u64>,
}

impl Fold<'_> {
    fn run(&self, max_version: u64) -> Result<Result<Activated, NodeError>, cairn_storage::Error> {
        let actor = self.actor;
        let snapshot = self
            .reader
            .actor_snapshot(self.group, self.stream, max_version)?;
        let (mut state, mut version) = match snapshot {
            Some(snapshot) => match actor.decode_state(&snapshot.state) {
                Ok(state) => (state, snapshot.version),
                Err(e) => return Ok(Err(e.into())),
            },
            None => (actor.initial_state(), 0),
        };
        let mut crossed = Vec::new();
        let mut crossed_bytes = 0;
        let mut failed = None;
        if version < max_version {
            let limit = (max_version - version).try_into().unwrap_or(usize::MAX);
            // Events are folded as borrowed from storage: only an event that
            // needs upcasting is copied.
            self.reader
                .visit_stream(self.group, self.stream, version + 1, limit, |event| {
                    if let Err(e) = self.apply(&mut state, &event) {
                        failed = Some(e);
                        return Ok(false);
                    }
                    version = event.version;
                    let at_interval = self
                        .snapshot_every
                        .is_some_and(|every| version % every == 0);
                    if at_interval && crossed_bytes < CROSSED_BYTES {
                        let bytes = Bytes::from(actor.encode_state(&state));
                        crossed_bytes += bytes.len();
                        crossed.push((version, bytes));
                    }
                    Ok(true)
                })?;
        }
        Ok(match failed {
            Some(e) => Err(e),
            None => Ok(Activated {
                state,
                version,
                crossed,
            }),
        })
    }

    /// Folds one event into `state`, upcast first if its schema is old.
    fn apply(&self, state: &mut AnyState, event: &EventRef<'_>) -> Result<(), NodeError> {
        let id = || event.id().unwrap_or_else(|e| format!("<{e}>"));
        let upcast = self
            .upcasters
            .upcasted(&id, event.event_type, event.data, event.metadata)?;
        let data = match &upcast {
            Some((data, _)) => data,
            None => event.data,
        };
        Ok(self.actor.apply(state, event.event_type, data)?)
    }
}
