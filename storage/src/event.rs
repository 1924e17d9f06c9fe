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

/// [`StreamInfo`] as stored before retention existed. postcard is not
/// self-describing, so `#[serde(default)]` alone cannot read the shorter
/// layout: [`StreamInfo::decode`] falls back to this one.
#[derive(Deserialize)]
struct StreamInfoV1 {
    version: u64,
    last_event_id: String,
    last_event_timestamp_ms: i64,
    deleted: bool,
    tombstoned: bool,
    first_readable_version: u64,
}

impl StreamInfo {
    /// Decodes stream info as stored, in the current layout or the one
    /// written before retention existed (read as "no limits, nothing purged").
    pub(crate) fn decode(bytes: &[u8]) -> Result<StreamInfo, crate::Error> {
        match postcard::from_bytes::<StreamInfo>(bytes) {
            Ok(info) => Ok(info),
            Err(_) => {
                let old: StreamInfoV1 = crate::error::decode("stream info", bytes)?;
                Ok(StreamInfo {
                    version: old.version,
                    last_event_id: old.last_event_id,
                    last_event_timestamp_ms: old.last_event_timestamp_ms,
                    deleted: old.deleted,
                    tombstoned: old.tombstoned,
                    first_readable_version: old.first_readable_version,
                    ..StreamInfo::default()
                })
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stream info as written before retention existed.
    #[derive(Serialize)]
    struct Legacy {
        version: u64,
        last_event_id: String,
        last_event_timestamp_ms: i64,
        deleted: bool,
        tombstoned: bool,
        first_readable_version: u64,
    }

    #[test]
    fn stream_info_of_the_older_layout_still_decodes() {
        let old = postcard::to_allocvec(&Legacy {
            version: 7,
            last_event_id: "e7".into(),
            last_event_timestamp_ms: 42,
            deleted: true,
            tombstoned: false,
            first_readable_version: 3,
        })
        .expect("encodes");
        let info = StreamInfo::decode(&old).expect("decodes");
        assert_eq!((info.version, info.first_readable_version), (7, 3));
        assert_eq!(
            (info.max_count, info.max_age_ms, info.purged_through),
            (None, None, 0)
        );

        let new = StreamInfo {
            max_count: Some(5),
            purged_through: 2,
            ..info
        };
        let bytes = postcard::to_allocvec(&new).expect("encodes");
        assert_eq!(StreamInfo::decode(&bytes).expect("decodes"), new);
    }
}
