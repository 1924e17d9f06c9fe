//! Rebuilding an actor's state from its newest snapshot plus the events after it.

use std::sync::Arc;

use cairn_cluster::Partition;
use cairn_storage::{GroupId, Reader};

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

/// Events read per page while replaying.
const PAGE: usize = 1024;

/// Folds the actor's stream from this replica's applied state: the newest
/// snapshot at or below the target version, then the events after it.
/// Returns the state and the version it reflects. Callers confirm
/// leadership first when they need a linearizable result.
pub async fn load(
    partition: &Partition,
    actor: Arc<dyn DynActor>,
    upcasters: Arc<Upcasters>,
    stream: String,
    at: StateAt,
) -> Result<(AnyState, u64), NodeError> {
    let name = stream.clone();
    let folded = partition
        .read_local(move |reader, group| {
            let max_version = match at {
                StateAt::Latest => u64::MAX,
                StateAt::Version(v) => v,
                StateAt::Timestamp(t) => match version_at(reader, group, &stream, t)? {
                    Some(v) => v,
                    None => return Ok(Err(NotThen)),
                },
            };
            Ok(Ok(fold(
                reader,
                group,
                actor.as_ref(),
                &upcasters,
                &stream,
                max_version,
            )?))
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

fn fold(
    reader: &Reader,
    group: GroupId,
    actor: &dyn DynActor,
    upcasters: &Upcasters,
    stream: &str,
    max_version: u64,
) -> Result<Result<(AnyState, u64), NodeError>, cairn_storage::Error> {
    let (mut state, mut version) = match reader.actor_snapshot(group, stream, max_version)? {
        Some(snapshot) => match actor.decode_state(&snapshot.state) {
            Ok(state) => (state, snapshot.version),
            Err(e) => return Ok(Err(e.into())),
        },
        None => (actor.initial_state(), 0),
    };
    while version < max_version {
        let want = PAGE.min((max_version - version).try_into().unwrap_or(usize::MAX));
        let events = reader.read_stream(group, stream, version + 1, want)?;
        if events.is_empty() {
            break;
        }
        for mut event in events {
            if let Err(e) = upcasters.upcast(&mut event) {
                return Ok(Err(e.into()));
            }
            if let Err(e) = actor.apply(&mut state, &event.event_type, &event.data) {
                return Ok(Err(e.into()));
            }
            version = event.version;
        }
    }
    Ok(Ok((state, version)))
}

/// The last version of `stream` written at or before `at_ms`, or `None` if
/// the stream had no event then. Timestamps never decrease along a
/// partition's log, so they never decrease along a stream either: a binary
/// search over versions costs O(log n) point reads, however long the stream.
fn version_at(
    reader: &Reader,
    group: GroupId,
    stream: &str,
    at_ms: i64,
) -> Result<Option<u64>, cairn_storage::Error> {
    let Some(info) = reader.stream_info(group, stream)? else {
        return Ok(None);
    };
    let timestamp_of = |version: u64| -> Result<Option<i64>, cairn_storage::Error> {
        Ok(reader
            .read_stream(group, stream, version, 1)?
            .first()
            .map(|e| e.timestamp_ms))
    };
    // Find the largest version in [first readable, last] with timestamp <= at_ms.
    let (mut low, mut high) = (info.first_readable_version.max(1), info.version);
    if high < low || timestamp_of(low)?.is_none_or(|t| t > at_ms) {
        return Ok(None);
    }
    while low < high {
        let mid = low + (high - low).div_ceil(2);
        match timestamp_of(mid)? {
            Some(t) if t <= at_ms => low = mid,
            _ => high = mid - 1,
        }
    }
    Ok(Some(low))
}
