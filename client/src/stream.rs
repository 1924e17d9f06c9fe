//! The typed requests and results of event-store calls.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The version a stream must be at for an append or delete to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExpectedVersion {
    /// Whatever version the stream is at.
    #[default]
    Any,
    /// The stream must not exist yet (version 0).
    NoStream,
    /// The stream must be at exactly this version.
    Exact(u64),
}

impl fmt::Display for ExpectedVersion {
    /// `any`, `no-stream` or the number: the spelling [`FromStr`] accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no-stream"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for ExpectedVersion {
    type Err = String;

    /// Accepts a version number >= 0, `any`, or `no-stream` (also `no_stream`).
    fn from_str(s: &str) -> Result<ExpectedVersion, String> {
        match s.trim() {
            "any" => Ok(ExpectedVersion::Any),
            "no-stream" | "no_stream" => Ok(ExpectedVersion::NoStream),
            n => n
                .parse()
                .map(ExpectedVersion::Exact)
                .map_err(|_| "use a version number >= 0, `any` or `no-stream`".to_string()),
        }
    }
}

/// An event to append.
///
/// Its `id` makes appends idempotent: appending an event whose id is already
/// in the stream at the same place writes nothing and returns the earlier
/// result. [`EventData::new`] assigns a fresh UUID v7 at construction, so
/// retrying with the same value is safe; an `id` left `None` gets one per
/// [`Client::append`](crate::Client::append) call (kept across the client's
/// own retries).
///
/// Deserializes from the JSON the `cairn stream append` command takes:
/// `{"type": "X", "data": {...}, "metadata": {...}, "id": "...",
/// "correlationId": "...", "causationId": "..."}`, all but `type` optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventData {
    /// Unique id of the event; `None` lets the client generate a UUID v7.
    #[serde(default)]
    pub id: Option<String>,
    /// The event type, e.g. `USER_CREATED`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload.
    #[serde(default = "empty_object")]
    pub data: Value,
    /// A JSON object of metadata (e.g. `schema_version`); `None` means `{}`.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// Correlation id; empty lets the server choose.
    #[serde(default)]
    pub correlation_id: Option<String>,
    /// Causation id, usually the id of the event or command that caused this one.
    #[serde(default)]
    pub causation_id: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl EventData {
    /// An event of `event_type` with `data`, a fresh UUID v7 id and no metadata.
    pub fn new(event_type: impl Into<String>, data: Value) -> EventData {
        EventData {
            id: Some(uuid::Uuid::now_v7().to_string()),
            event_type: event_type.into(),
            data,
            metadata: None,
            correlation_id: None,
            causation_id: None,
        }
    }

    /// The same event with this id.
    pub fn with_id(mut self, id: impl Into<String>) -> EventData {
        self.id = Some(id.into());
        self
    }

    /// The same event with this metadata object.
    pub fn with_metadata(mut self, metadata: Value) -> EventData {
        self.metadata = Some(metadata);
        self
    }

    /// The same event with this correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> EventData {
        self.correlation_id = Some(id.into());
        self
    }

    /// The same event with this causation id.
    pub fn with_causation_id(mut self, id: impl Into<String>) -> EventData {
        self.causation_id = Some(id.into());
        self
    }
}

/// Where an append landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppendResult {
    /// The stream version of the first event appended.
    pub first_version: u64,
    /// The stream version of the last event appended (the stream's new version).
    pub last_version: u64,
    /// The partition the stream belongs to.
    pub partition: u32,
    /// The partition-log position of the first event.
    pub first_position: u64,
    /// The partition-log position of the last event.
    pub last_position: u64,
    /// The events' timestamp, ms since epoch.
    pub timestamp_ms: i64,
    /// True when the events were already in the stream and nothing was written.
    pub duplicate: bool,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// Unique id.
    pub id: String,
    /// The stream it belongs to.
    pub stream: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The payload.
    pub data: Value,
    /// The metadata object.
    pub metadata: Value,
    /// Assigned by the partition leader, ms since epoch; never goes backwards within a partition.
    pub timestamp: i64,
    /// 1-based, gapless within the stream.
    pub version: u64,
    /// Correlation id, if any.
    pub correlation_id: Option<String>,
    /// Causation id, if any.
    pub causation_id: Option<String>,
    /// The partition of the stream.
    pub partition: u32,
    /// Its position in the partition's log.
    pub position: u64,
}

/// A page of a stream's events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadResult {
    /// The stream read.
    pub stream: String,
    /// The stream's version when it was read.
    #[serde(rename = "version")]
    pub stream_version: u64,
    /// The events, in version order.
    pub events: Vec<RecordedEvent>,
}

/// What is known about a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamInfo {
    /// The stream.
    pub stream: String,
    /// Its version (0 = empty).
    pub version: u64,
    /// The id of its last event, if it has any.
    pub last_event_id: Option<String>,
    /// The timestamp of its last event (ms since epoch), if it has any.
    pub last_event_timestamp: Option<i64>,
    /// Soft-deleted: reads see nothing, appends may recreate it.
    pub deleted: bool,
    /// Hard-deleted: the stream can never be written again.
    pub tombstoned: bool,
    /// The partition the stream belongs to.
    pub partition: u32,
    /// Retention: only the newest this-many events are readable (absent = no limit).
    #[serde(default)]
    pub max_count: Option<u64>,
    /// Retention: only events at most this many ms old are readable (absent = no limit).
    #[serde(default)]
    pub max_age_ms: Option<u64>,
}

/// The outcome of a metadata change, as `cairn stream set-metadata` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamMetadataResult {
    /// The stream.
    pub stream: String,
    /// The stream's version when the metadata was set.
    pub version: u64,
    /// The `max-count` now in force (absent = no limit).
    pub max_count: Option<u64>,
    /// The `max-age` now in force, in ms (absent = no limit).
    pub max_age_ms: Option<u64>,
}

/// The outcome of a delete, as `cairn stream delete` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResult {
    /// The stream deleted.
    pub stream: String,
    /// The stream's version when it was deleted.
    pub version: u64,
    /// Whether it was a hard delete (tombstone).
    pub hard: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expected_version_parses_and_prints() {
        for (text, want) in [
            ("any", ExpectedVersion::Any),
            ("no-stream", ExpectedVersion::NoStream),
            ("no_stream", ExpectedVersion::NoStream),
            ("0", ExpectedVersion::Exact(0)),
            ("42", ExpectedVersion::Exact(42)),
        ] {
            assert_eq!(text.parse::<ExpectedVersion>(), Ok(want));
        }
        for bad in ["-1", "", "x", "1.5", "Any"] {
            assert!(bad.parse::<ExpectedVersion>().is_err(), "{bad}");
        }
        assert_eq!(ExpectedVersion::NoStream.to_string(), "no-stream");
        assert_eq!(ExpectedVersion::Exact(3).to_string(), "3");
    }

    #[test]
    fn event_data_from_cli_json() {
        let e: EventData = serde_json::from_value(
            json!({"type": "X", "data": {"a": 1}, "metadata": {"m": 2}, "id": "e1", "correlationId": "c"}),
        )
        .unwrap();
        assert_eq!(e.id.as_deref(), Some("e1"));
        assert_eq!(e.event_type, "X");
        assert_eq!(e.data, json!({"a": 1}));
        assert_eq!(e.correlation_id.as_deref(), Some("c"));
        let bare: EventData = serde_json::from_value(json!({"type": "X"})).unwrap();
        assert_eq!((bare.id, bare.data), (None, json!({})));
        let typo = serde_json::from_value::<EventData>(json!({"type": "X", "dta": 1}));
        assert!(
            typo.unwrap_err()
                .to_string()
                .contains("unknown field `dta`")
        );
    }

    #[test]
    fn new_event_has_a_v7_id() {
        let e = EventData::new("X", json!(null));
        let id = uuid::Uuid::parse_str(e.id.as_deref().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
    }

    #[test]
    fn read_result_json_shape() {
        let r = ReadResult {
            stream: "s".into(),
            stream_version: 1,
            events: vec![RecordedEvent {
                id: "e".into(),
                stream: "s".into(),
                event_type: "T".into(),
                data: json!({}),
                metadata: json!({}),
                timestamp: 5,
                version: 1,
                correlation_id: None,
                causation_id: Some("c".into()),
                partition: 2,
                position: 9,
            }],
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["version"], 1);
        assert_eq!(v["events"][0]["type"], "T");
        assert_eq!(v["events"][0]["causationId"], "c");
        assert!(v["events"][0]["correlationId"].is_null());
        assert_eq!(serde_json::from_value::<ReadResult>(v).unwrap(), r);
    }
}
