//! The commands a Raft group replicates and the results its state machine returns.
//!
//! These types are storage's own persisted encoding (postcard, via serde): a
//! [`Command`] is the payload of one Raft log entry. Wire types never appear here.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::appends::Appends;

/// Identifies a Raft group inside one node: partitions are `0..P`, the metadata
/// group is [`META_GROUP`].
pub type GroupId = u32;

/// The group id of the metadata group (membership and partition table).
pub const META_GROUP: GroupId = u32::MAX;

/// What the writer expects the stream's current version to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpectedVersion {
    /// No check.
    Any,
    /// The stream must not exist (version 0, or soft-deleted).
    NoStream,
    /// The stream's current version must be exactly this (0 = empty).
    Exact(u64),
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no-stream"),
            ExpectedVersion::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// An event as a writer proposes it, before it has a version or position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Unique id (a UUID v7 unless the client chose one); the idempotency key.
    pub id: String,
    /// The event's type name, e.g. `USER_CREATED`.
    pub event_type: String,
    /// JSON bytes, stored as given.
    pub data: Bytes,
    /// JSON object bytes (holds `schema_version`); empty means `{}`.
    pub metadata: Bytes,
    /// Id tying together everything caused by one request (may be empty).
    pub correlation_id: String,
    /// Id of the message or event that caused this one (may be empty).
    pub causation_id: String,
}

/// One writer's append to one stream: all of its events or none of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamAppend {
    /// The stream appended to (UTF-8, at most [`MAX_STREAM_ID_LEN`](crate::MAX_STREAM_ID_LEN) bytes).
    pub stream: String,
    /// The version the writer expects the stream to be at.
    pub expected: ExpectedVersion,
    /// The events, in the order they get versions.
    pub events: Vec<NewEvent>,
}

/// The payload of one Raft log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Appends from many writers, group-committed as one entry. Each
    /// [`StreamAppend`] is checked and applied on its own, in order, each seeing
    /// the effect of those before it; `timestamp_ms` is the leader's clock when
    /// it proposed the entry (the state machine never lets a partition's
    /// timestamps go backwards).
    ///
    /// Builds before 2026-11-30 wrote appends this way, each event field by
    /// field; their logs may still hold such entries, which apply as they
    /// did. Nothing proposes it now: see [`Command::Append`].
    FormerAppend {
        /// The proposing leader's clock, in ms since the epoch.
        timestamp_ms: i64,
        /// The appends, applied in order.
        appends: Vec<StreamAppend>,
    },
    /// Soft delete (`hard = false`) or tombstone (`hard = true`) a stream.
    Delete {
        /// The stream to delete.
        stream: String,
        /// The version the writer expects the stream to be at.
        expected: ExpectedVersion,
        /// Tombstone it (never writable again) rather than soft-delete it.
        hard: bool,
    },
    /// Store an actor's state as of `version` of its stream.
    SaveActorSnapshot {
        /// The actor's stream.
        stream: String,
        /// The stream version the state reflects.
        version: u64,
        /// The actor's serialized state.
        state: Bytes,
    },
    /// Set a key of the metadata group's key-value map.
    MetaPut {
        /// The key (any UTF-8; keys sort bytewise).
        key: String,
        /// The new value.
        value: Bytes,
    },
    /// Set a stream's retention metadata (EventStoreDB's `$maxCount` and
    /// `$maxAge`), replacing what was set before (`None` = no limit). Events
    /// beyond the limits are unreadable at once and purged by this entry and
    /// by later entries to the stream; an actor stream keeps every event
    /// above its newest actor snapshot. Added last so the encoding of the
    /// other variants is unchanged.
    SetStreamMetadata {
        /// The stream.
        stream: String,
        /// Keep only the newest this-many events.
        max_count: Option<u64>,
        /// Keep only events at most this many milliseconds old.
        max_age_ms: Option<u64>,
        /// The proposing leader's clock, in ms since the epoch: "now" for
        /// `max_age_ms` when this entry purges (never a replica's own clock).
        timestamp_ms: i64,
    },
    /// Store several of an actor's states at once (the snapshots a long
    /// replay crossed). Added last so the encoding of the other variants is
    /// unchanged.
    SaveActorSnapshots {
        /// The actor's stream.
        stream: String,
        /// `(version, state)` pairs.
        snapshots: Vec<(u64, Bytes)>,
    },
    /// Appends from many writers, group-committed as one entry, as
    /// [`Command::FormerAppend`] but with the appends in one shared buffer
    /// (the `appends` module). Added last so the encoding of the other
    /// variants is unchanged.
    Append {
        /// The proposing leader's clock, in ms since the epoch.
        timestamp_ms: i64,
        /// The appends, applied in order.
        appends: Appends,
    },
}

impl StreamAppend {
    /// Roughly the bytes this append carries (payloads, plus a fixed
    /// allowance per event for its id, type and the rest).
    pub fn size(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.data.len() + e.metadata.len() + 64)
            .sum::<usize>()
            + self.stream.len()
    }
}

impl Command {
    /// The entry that appends `appends` in order, at `timestamp_ms`.
    pub fn append(timestamp_ms: i64, appends: &[StreamAppend]) -> Command {
        Command::Append {
            timestamp_ms,
            appends: Appends::new(appends),
        }
    }

    /// Roughly the bytes this command carries.
    pub fn size(&self) -> usize {
        match self {
            Command::Append { appends, .. } => appends.encoded_len(),
            Command::FormerAppend { appends, .. } => appends.iter().map(StreamAppend::size).sum(),
            Command::SaveActorSnapshot { state, .. } => state.len(),
            Command::SaveActorSnapshots { snapshots, .. } => {
                snapshots.iter().map(|(_, state)| state.len()).sum()
            }
            Command::MetaPut { value, .. } => value.len(),
            Command::Delete { .. } | Command::SetStreamMetadata { .. } => 64,
        }
    }
}

/// Where an accepted append landed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendOutcome {
    /// Version of the first event written (or found, when `duplicate`).
    pub first_version: u64,
    /// Version of the last event; the stream's version after the append.
    pub last_version: u64,
    /// Partition-log position of the first event.
    pub first_position: u64,
    /// Partition-log position of the last event.
    pub last_position: u64,
    /// Timestamp given to the events.
    pub timestamp_ms: i64,
    /// True when every event id was already in the stream at these versions:
    /// nothing was written, this is the earlier result.
    pub duplicate: bool,
}

/// Why the state machine refused an append, a delete or a metadata change.
/// Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// The stream is not at the expected version.
    #[error(
        "wrong expected version: expected {expected}, but stream `{stream}` is at version {actual}"
    )]
    WrongExpectedVersion {
        /// The stream written.
        stream: String,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's actual version.
        actual: u64,
    },
    /// The stream is soft-deleted.
    #[error("stream `{stream}` is deleted")]
    StreamDeleted {
        /// The stream written.
        stream: String,
    },
    /// The stream is hard-deleted (or its id can never be stored).
    #[error("stream `{stream}` was hard-deleted (tombstoned) and can never be written again")]
    StreamTombstoned {
        /// The stream written.
        stream: String,
    },
    /// The first event id is already in the stream, but the rest of the append differs.
    #[error(
        "event id `{event_id}` is already in stream `{stream}` at version {version}, but the rest of the append does not match what was written then"
    )]
    IdempotencyConflict {
        /// The stream written.
        stream: String,
        /// The first event's id.
        event_id: String,
        /// The version at which that id already is.
        version: u64,
    },
}

/// What applying one log entry produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// Blank and membership entries.
    #[default]
    None,
    /// One result per [`StreamAppend`], in order.
    Appended(Vec<Result<AppendOutcome, Rejection>>),
    /// The stream's version at deletion.
    Deleted(Result<u64, Rejection>),
    /// An actor snapshot was stored.
    SnapshotSaved,
    /// A metadata key was set.
    MetaPut,
    /// A stream's retention metadata was set: the stream's version then.
    StreamMetadataSet(Result<u64, Rejection>),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn append(stream: &str, ids: &[&str]) -> StreamAppend {
        StreamAppend {
            stream: stream.to_owned(),
            expected: ExpectedVersion::Any,
            events: ids
                .iter()
                .map(|id| NewEvent {
                    id: (*id).to_owned(),
                    event_type: "T".to_owned(),
                    data: Bytes::from_static(b"{}"),
                    metadata: Bytes::new(),
                    correlation_id: String::new(),
                    causation_id: String::new(),
                })
                .collect(),
        }
    }

    /// Logs written before `Appends` hold appends as variant 0, field by
    /// field: they still decode, as `FormerAppend`.
    #[test]
    fn an_append_in_the_former_encoding_still_decodes() {
        // Variant 0, timestamp 1 (zigzag varint 2), then one append of
        // stream "s" with expected version `Any` (variant 0) and no events.
        let written = [0, 2, 1, 1, b's', 0, 0];
        let former: Command = postcard::from_bytes(&written).unwrap();
        assert_eq!(
            former,
            Command::FormerAppend {
                timestamp_ms: 1,
                appends: vec![append("s", &[])],
            }
        );
    }

    #[test]
    fn an_append_round_trips_and_sizes_by_its_encoding() {
        let appends = [append("a", &["1", "2"]), append("b", &["3"])];
        let command = Command::append(7, &appends);
        let Command::Append {
            appends: encoded, ..
        } = &command
        else {
            panic!("an append command: {command:?}");
        };
        assert_eq!(command.size(), encoded.encoded_len());
        let bytes = postcard::to_allocvec(&command).unwrap();
        let back: Command = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, command);
        let Command::Append { appends: back, .. } = back else {
            panic!("still an append");
        };
        assert_eq!(back.decode().unwrap(), appends);
        assert_eq!(back.events(), 3);
    }
}
