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

#[cfg(test)]
impl RecordedEvent {
    /// The event as its writer proposed it (without what the partition gave it).
    pub(crate) fn to_new(&self) -> crate::NewEvent {
        crate::NewEvent {
            id: self.id.clone(),
            event_type: self.event_type.clone(),
            data: self.data.clone(),
            metadata: self.metadata.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
        }
    }
}

/// An event as stored under its stream and version (the `keys` module):
/// its fields but those two, which its key holds, borrowed both when
/// encoding and when decoding. The id is in its stored form (`stored_id`).
#[derive(Serialize, Deserialize)]
struct StoredBody<'a> {
    #[serde(serialize_with = "as_bytes")]
    id: &'a [u8],
    event_type: &'a str,
    #[serde(serialize_with = "as_bytes")]
    data: &'a [u8],
    #[serde(serialize_with = "as_bytes")]
    metadata: &'a [u8],
    // UTF-8 as written, but read as bytes, checked only when asked for
    // (`EventRef::correlation_id`): a replay never reads them, and their
    // checks were 5% of a cold replay's instructions. postcard writes a
    // string and bytes alike, so the stored form is the same.
    #[serde(serialize_with = "as_bytes")]
    correlation_id: &'a [u8],
    #[serde(serialize_with = "as_bytes")]
    causation_id: &'a [u8],
    timestamp_ms: i64,
    position: u64,
}

fn as_bytes<S: serde::Serializer>(bytes: &&[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes)
}

/// Appends the stored body of `event`, whose id's stored form
/// (`stored_id::encode`) is `stored_id`, written at `timestamp_ms` to
/// `position` (its key, by stream and version, holds the rest), to `out`.
pub(crate) fn push_body(
    out: &mut Vec<u8>,
    event: &crate::appends::EventView<'_>,
    stored_id: &[u8],
    timestamp_ms: i64,
    position: u64,
) -> Result<(), crate::Error> {
    crate::error::encode_onto(
        "event",
        &StoredBody {
            id: stored_id,
            event_type: event.event_type,
            data: event.data,
            metadata: event.metadata,
            correlation_id: event.correlation_id.as_bytes(),
            causation_id: event.causation_id.as_bytes(),
            timestamp_ms,
            position,
        },
        out,
    )
}

/// An event of a stream as stored, borrowed for the length of a visit
/// ([`Reader::visit_stream`](crate::Reader::visit_stream)): folding it
/// copies nothing.
#[derive(Clone, Copy, Debug)]
pub struct EventRef<'a> {
    /// 1-based, gapless within the stream.
    pub version: u64,
    /// The event's type name.
    pub event_type: &'a str,
    /// JSON bytes, as written.
    pub data: &'a [u8],
    /// JSON object bytes, as written.
    pub metadata: &'a [u8],
    correlation_id: &'a [u8],
    causation_id: &'a [u8],
    /// Milliseconds since the epoch, assigned by the partition leader.
    pub timestamp_ms: i64,
    /// Position in the partition's log.
    pub position: u64,
    stored_id: &'a [u8],
}

fn text<'a>(what: &str, bytes: &'a [u8]) -> Result<&'a str, crate::Error> {
    std::str::from_utf8(bytes).map_err(|e| crate::Error::Corrupt(format!("{what}: {e}")))
}

impl<'a> EventRef<'a> {
    /// Decodes the stored body of the event at `version`.
    pub(crate) fn decode(version: u64, bytes: &'a [u8]) -> Result<EventRef<'a>, crate::Error> {
        let body: StoredBody<'a> = crate::error::decode("event", bytes)?;
        Ok(EventRef {
            version,
            event_type: body.event_type,
            data: body.data,
            metadata: body.metadata,
            correlation_id: body.correlation_id,
            causation_id: body.causation_id,
            timestamp_ms: body.timestamp_ms,
            position: body.position,
            stored_id: body.id,
        })
    }

    /// The event's id in its stored form (`stored_id`), as its event-id
    /// index key holds it.
    pub(crate) fn stored_id(&self) -> &'a [u8] {
        self.stored_id
    }

    /// The correlation id, as written.
    pub fn correlation_id(&self) -> Result<&'a str, crate::Error> {
        text("correlation id", self.correlation_id)
    }

    /// The causation id, as written.
    pub fn causation_id(&self) -> Result<&'a str, crate::Error> {
        text("causation id", self.causation_id)
    }

    /// The event's unique id.
    pub fn id(&self) -> Result<String, crate::Error> {
        crate::stored_id::decode(self.stored_id)
            .ok_or_else(|| crate::Error::Corrupt(format!("event id {:?}", self.stored_id)))
    }

    /// The event as an owned [`RecordedEvent`] of `stream`.
    pub fn to_recorded(&self, stream: String) -> Result<RecordedEvent, crate::Error> {
        Ok(RecordedEvent {
            id: self.id()?,
            stream,
            event_type: self.event_type.to_owned(),
            data: Bytes::copy_from_slice(self.data),
            metadata: Bytes::copy_from_slice(self.metadata),
            correlation_id: self.correlation_id()?.to_owned(),
            causation_id: self.causation_id()?.to_owned(),
            timestamp_ms: self.timestamp_ms,
            version: self.version,
            position: self.position,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_body_decodes_to_the_event_written() {
        let event = RecordedEvent {
            id: "01a22450-12cd-719c-aa5a-ff544c01f132".into(),
            stream: "account-7".into(),
            event_type: "MONEY_DEPOSITED".into(),
            data: Bytes::from_static(br#"{"amount":1}"#),
            metadata: Bytes::from_static(b"{}"),
            correlation_id: "c".into(),
            causation_id: String::new(),
            timestamp_ms: 1_795_905_557_236,
            version: 3,
            position: 41,
        };
        let new = event.to_new();
        let view = crate::appends::EventView::of(&new);
        let id = crate::stored_id::encode(&event.id);
        let mut stored = Vec::new();
        push_body(&mut stored, &view, &id, event.timestamp_ms, event.position).expect("encodes");
        let borrowed = EventRef::decode(3, &stored).expect("decodes");
        assert_eq!(borrowed.id().expect("valid id"), event.id);
        assert_eq!(
            borrowed.to_recorded("account-7".into()).expect("valid id"),
            event
        );
    }

    /// Ids that are not UTF-8 (a damaged store) decode, and are refused
    /// when read, as corrupt: a replay, which never reads them, goes on.
    #[test]
    fn correlation_and_causation_ids_are_checked_when_read() {
        let id = crate::stored_id::encode("01a22450-12cd-719c-aa5a-ff544c01f132");
        let body = StoredBody {
            id: &id,
            event_type: "T",
            data: b"{}",
            metadata: b"",
            correlation_id: &[0xFF],
            causation_id: b"c",
            timestamp_ms: 1,
            position: 2,
        };
        let stored = postcard::to_allocvec(&body).expect("encodes");
        let event = EventRef::decode(1, &stored).expect("decodes");
        assert_eq!(event.event_type, "T");
        assert!(matches!(
            event.correlation_id(),
            Err(crate::Error::Corrupt(_))
        ));
        assert_eq!(event.causation_id().expect("UTF-8"), "c");
        assert!(event.id().is_ok());
        assert!(matches!(
            event.to_recorded("s".into()),
            Err(crate::Error::Corrupt(_))
        ));
    }
}
