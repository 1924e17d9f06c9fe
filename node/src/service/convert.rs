//! Conversions between wire types and storage types, in one place.

use bytes::Bytes;
use cairn_proto::v1 as pb;
use cairn_storage::{AppendOutcome, ExpectedVersion, GroupId, NewEvent, RecordedEvent, StreamInfo};

use crate::limits::{
    InvalidInput, MAX_EVENTS_PER_APPEND, MAX_PAYLOAD_BYTES, check_json, check_json_syntax,
};
use crate::upcast::{UpcastError, Upcasters};

/// The wire's optional expected version; absent means `any`.
pub fn expected_version(expected: Option<pb::ExpectedVersion>) -> ExpectedVersion {
    match expected.and_then(|e| e.kind) {
        Some(pb::expected_version::Kind::Exact(v)) => ExpectedVersion::Exact(v),
        Some(pb::expected_version::Kind::NoStream(true)) => ExpectedVersion::NoStream,
        _ => ExpectedVersion::Any,
    }
}

/// Validates and converts the events of an append; generates missing ids.
pub fn new_events(events: Vec<pb::NewEvent>) -> Result<Vec<NewEvent>, InvalidInput> {
    if events.is_empty() {
        return Err(InvalidInput("an append needs at least one event".into()));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(InvalidInput(format!(
            "{} events in one append; the limit is {MAX_EVENTS_PER_APPEND}",
            events.len()
        )));
    }
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let n = i + 1;
            if e.r#type.trim().is_empty() {
                return Err(InvalidInput(format!(
                    "event {n} has no type; give it a \"type\""
                )));
            }
            if e.data.len() + e.metadata.len() > MAX_PAYLOAD_BYTES {
                return Err(InvalidInput(format!(
                    "event {n} is {} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (1 MiB)",
                    e.data.len() + e.metadata.len()
                )));
            }
            check_json_syntax(&format!("event {n} data"), &e.data)?;
            let metadata = if e.metadata.is_empty() {
                Bytes::from_static(b"{}")
            } else if check_json(&format!("event {n} metadata"), &e.metadata)?.is_object() {
                e.metadata
            } else {
                return Err(InvalidInput(format!(
                    "event {n} metadata must be a JSON object"
                )));
            };
            let id = if e.id.is_empty() {
                uuid::Uuid::now_v7().to_string()
            } else {
                e.id
            };
            if id.len() > 128 {
                return Err(InvalidInput(format!(
                    "event {n} id is longer than 128 bytes"
                )));
            }
            Ok(NewEvent {
                id,
                event_type: e.r#type,
                data: e.data,
                metadata,
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
            })
        })
        .collect()
}

/// The reply to an append.
pub fn append_reply(outcome: AppendOutcome, partition: GroupId) -> pb::AppendReply {
    pb::AppendReply {
        first_version: outcome.first_version,
        last_version: outcome.last_version,
        partition,
        first_position: outcome.first_position,
        last_position: outcome.last_position,
        timestamp_ms: outcome.timestamp_ms,
        duplicate: outcome.duplicate,
    }
}

/// A stored event on the wire.
pub fn recorded_event(e: RecordedEvent, partition: GroupId) -> pb::RecordedEvent {
    pb::RecordedEvent {
        id: e.id,
        stream: e.stream,
        r#type: e.event_type,
        data: e.data,
        metadata: e.metadata,
        timestamp_ms: e.timestamp_ms,
        version: e.version,
        correlation_id: e.correlation_id,
        causation_id: e.causation_id,
        partition,
        position: e.position,
    }
}

/// Stream info on the wire; a stream never written has version 0.
pub fn stream_info(stream: String, info: Option<StreamInfo>, partition: GroupId) -> pb::StreamInfo {
    let info = info.unwrap_or_default();
    pb::StreamInfo {
        stream,
        version: info.version,
        last_event_id: info.last_event_id,
        last_event_timestamp_ms: info.last_event_timestamp_ms,
        deleted: info.deleted,
        tombstoned: info.tombstoned,
        partition,
        max_count: info.max_count,
        max_age_ms: info.max_age_ms,
    }
}

/// Brings wire events to the newest shape of their types (see [`Upcasters`]).
pub fn upcast_all(
    events: &mut [pb::RecordedEvent],
    upcasters: &Upcasters,
) -> Result<(), UpcastError> {
    for e in events {
        upcasters.upcast_parts(&e.id, &e.r#type, &mut e.data, &mut e.metadata)?;
    }
    Ok(())
}
