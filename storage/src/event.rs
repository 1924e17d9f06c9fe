//! What the event store hands back to readers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// An event as stored: a [`crate::NewEvent`] plus what the partition gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The event's unique id (see [`crate::NewEvent::id`]).
    pub id: String,
    /// The stream it belongs to.
    pub stream: String,
    /// The event's type name.
    pub event_type: String,
    /// JSON bytes, as written.
    pub data: Bytes,
    /// JSON object bytes, as written.
    pub metadata: Bytes,
    /// As written (see [`crate::NewEvent::correlation_id`]).
    pub correlation_id: String,
    /// As written (see [`crate::NewEvent::causation_id`]).
    pub causation_id: String,
    /// Milliseconds since the epoch, assigned by the partition leader; never
    /// decreasing along a partition's log.
    pub timestamp_ms: i64,
    /// 1-based, gapless within the stream.
    pub version: u64,
    /// Position in the partition's log (1-based, increasing within the
    /// partition; gaps appear where events were purged).
    pub position: u64,
}

/// The state of one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Version of the last event written (0 = never written).
    pub version: u64,
    /// Id of the last event written (empty if none).
    pub last_event_id: String,
    /// Timestamp of the last event written (0 if none).
    pub last_event_timestamp_ms: i64,
    /// Soft-deleted: reads fail until the stream is written again.
    pub deleted: bool,
    /// Hard-deleted: can never be written again.
    pub tombstoned: bool,
    /// Events below this version are not readable (they were before a soft delete).
    pub first_readable_version: u64,
    /// Stream metadata `max-count`: only the newest this-many events are
    /// readable (`None` = no limit).
    #[serde(default)]
    pub max_count: Option<u64>,
    /// Stream metadata `max-age`: events older than this many milliseconds
    /// are not readable (`None` = no limit).
    #[serde(default)]
    pub max_age_ms: Option<u64>,
    /// Every event at or below this version was purged from the state
    /// machine (by retention or a hard delete); 0 = none.
    #[serde(default)]
    pub purged_through: u64,
}

impl StreamInfo {
    /// Decodes stream info as stored.
    pub(crate) fn decode(bytes: &[u8]) -> Result<StreamInfo, crate::Error> {
        crate::error::decode("stream info", bytes)
    }
}

/// An actor snapshot: the actor's state as of `version` of its stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorSnapshot {
    /// The stream version the state reflects.
    pub version: u64,
    /// The actor's serialized state, as saved.
    pub state: Bytes,
}
