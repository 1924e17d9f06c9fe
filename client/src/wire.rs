//! Conversions between the client's types and the `cairn-proto` messages: the
//! only module that knows both. JSON payloads travel as bytes; empty bytes
//! read back as `null` (or `{}` for metadata).

use bytes::Bytes;
use cairn_proto::v1 as pb;
use serde_json::Value;

use crate::{
    AppendResult, AskResult, Checkpoint, Error, EventData, EventFilter, ExpectedVersion,
    GroupStatus, NodeStatus, ReadAllResult, RecordedEvent, ReplicaLag, StateResult, Status,
    StreamInfo,
};

/// A JSON value as the bytes sent on the wire.
pub(crate) fn json_bytes(value: &Value) -> Bytes {
    // A `Value` has only string keys, so serializing it cannot fail.
    Bytes::from(serde_json::to_vec(value).expect("a serde_json::Value always serializes"))
}

/// JSON bytes from the wire; `what` names the field in the error.
fn json_value(bytes: &[u8], what: &str, empty: Value) -> Result<Value, Error> {
    if bytes.is_empty() {
        return Ok(empty);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| Error::Other(format!("the server sent invalid JSON in {what}: {e}")))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl From<ExpectedVersion> for pb::ExpectedVersion {
    fn from(expected: ExpectedVersion) -> pb::ExpectedVersion {
        use pb::expected_version::Kind;
        let kind = match expected {
            ExpectedVersion::Any => Kind::Any(true),
            ExpectedVersion::NoStream => Kind::NoStream(true),
            ExpectedVersion::Exact(n) => Kind::Exact(n),
        };
        pb::ExpectedVersion { kind: Some(kind) }
    }
}

impl From<&EventData> for pb::NewEvent {
    /// An event whose `id` is `None` is sent with an empty id (the server then
    /// generates one); [`crate::Client::append`] fills ids in before this.
    fn from(event: &EventData) -> pb::NewEvent {
        pb::NewEvent {
            id: event.id.clone().unwrap_or_default(),
            r#type: event.event_type.clone(),
            data: json_bytes(&event.data),
            metadata: event.metadata.as_ref().map(json_bytes).unwrap_or_default(),
            correlation_id: event.correlation_id.clone().unwrap_or_default(),
            causation_id: event.causation_id.clone().unwrap_or_default(),
        }
    }
}

impl From<pb::AppendReply> for AppendResult {
    fn from(r: pb::AppendReply) -> AppendResult {
        AppendResult {
            first_version: r.first_version,
            last_version: r.last_version,
            partition: r.partition,
            first_position: r.first_position,
            last_position: r.last_position,
            timestamp_ms: r.timestamp_ms,
            duplicate: r.duplicate,
        }
    }
}

impl TryFrom<pb::RecordedEvent> for RecordedEvent {
    type Error = Error;

    fn try_from(e: pb::RecordedEvent) -> Result<RecordedEvent, Error> {
        let what = format!("event {}@{} ({})", e.stream, e.version, e.id);
        Ok(RecordedEvent {
            data: json_value(&e.data, &format!("the data of {what}"), Value::Null)?,
            metadata: json_value(
                &e.metadata,
                &format!("the metadata of {what}"),
                Value::Object(Default::default()),
            )?,
            id: e.id,
            stream: e.stream,
            event_type: e.r#type,
            timestamp: e.timestamp_ms,
            version: e.version,
            correlation_id: non_empty(e.correlation_id),
            causation_id: non_empty(e.causation_id),
            partition: e.partition,
            position: e.position,
        })
    }
}

impl From<&Checkpoint> for pb::Checkpoint {
    fn from(checkpoint: &Checkpoint) -> pb::Checkpoint {
        pb::Checkpoint {
            positions: checkpoint.positions().to_vec(),
        }
    }
}

impl From<pb::Checkpoint> for Checkpoint {
    fn from(checkpoint: pb::Checkpoint) -> Checkpoint {
        Checkpoint::from_positions(checkpoint.positions)
    }
}

impl From<&EventFilter> for pb::EventFilter {
    fn from(filter: &EventFilter) -> pb::EventFilter {
        pb::EventFilter {
            types: filter.types.clone(),
            stream_prefixes: filter.stream_prefixes.clone(),
        }
    }
}

impl TryFrom<pb::ReadAllReply> for ReadAllResult {
    type Error = Error;

    fn try_from(r: pb::ReadAllReply) -> Result<ReadAllResult, Error> {
        Ok(ReadAllResult {
            events: r
                .events
                .into_iter()
                .map(RecordedEvent::try_from)
                .collect::<Result<_, _>>()?,
            checkpoint: r.checkpoint.map(Checkpoint::from).unwrap_or_default(),
            end: r.end,
        })
    }
}

impl From<pb::StreamInfo> for StreamInfo {
    fn from(i: pb::StreamInfo) -> StreamInfo {
        let has_events = !i.last_event_id.is_empty();
        StreamInfo {
            stream: i.stream,
            version: i.version,
            last_event_id: non_empty(i.last_event_id),
            last_event_timestamp: has_events.then_some(i.last_event_timestamp_ms),
            deleted: i.deleted,
            tombstoned: i.tombstoned,
            partition: i.partition,
            max_count: i.max_count,
            max_age_ms: i.max_age_ms,
        }
    }
}

impl TryFrom<pb::AskReply> for AskResult {
    type Error = Error;

    fn try_from(r: pb::AskReply) -> Result<AskResult, Error> {
        Ok(AskResult {
            reply: json_value(&r.reply, "the actor's reply", Value::Null)?,
            version: r.version,
            duplicate: r.duplicate,
        })
    }
}

impl TryFrom<pb::GetStateReply> for StateResult {
    type Error = Error;

    fn try_from(r: pb::GetStateReply) -> Result<StateResult, Error> {
        Ok(StateResult {
            state: json_value(&r.state, "the actor's state", Value::Null)?,
            version: r.version,
        })
    }
}

impl From<pb::StatusReply> for Status {
    fn from(s: pb::StatusReply) -> Status {
        Status {
            node_id: s.node_id,
            nodes: s.nodes.into_iter().map(NodeStatus::from).collect(),
            partitions: s.partitions.into_iter().map(GroupStatus::from).collect(),
            metadata: s.metadata.map(GroupStatus::from),
            partition_count: s.partition_count,
            epoch: s.epoch,
        }
    }
}

impl From<pb::NodeStatus> for NodeStatus {
    fn from(n: pb::NodeStatus) -> NodeStatus {
        NodeStatus {
            id: n.id,
            address: n.address,
            reachable: n.reachable,
        }
    }
}

impl From<pb::GroupStatus> for GroupStatus {
    fn from(g: pb::GroupStatus) -> GroupStatus {
        GroupStatus {
            id: g.id,
            leader: g.leader,
            replicas: g.replicas,
            voters: g.voters,
            learners: g.learners,
            term: g.term,
            last_log_index: g.last_log_index,
            committed_index: g.committed_index,
            applied_index: g.applied_index,
            purged_index: g.purged_index,
            snapshots_sent: g.snapshots_sent,
            snapshot_bytes_sent: g.snapshot_bytes_sent,
            lag: g
                .lag
                .into_iter()
                .map(|l| ReplicaLag {
                    node_id: l.node_id,
                    entries_behind: l.entries_behind,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recorded_event_json_fields() {
        let e = RecordedEvent::try_from(pb::RecordedEvent {
            id: "e1".into(),
            stream: "s".into(),
            r#type: "T".into(),
            data: Bytes::from_static(br#"{"a":1}"#),
            metadata: Bytes::new(),
            timestamp_ms: 7,
            version: 1,
            correlation_id: "c".into(),
            causation_id: String::new(),
            partition: 3,
            position: 4,
        })
        .unwrap();
        assert_eq!(e.data, json!({"a": 1}));
        assert_eq!(e.metadata, json!({}));
        assert_eq!(e.correlation_id.as_deref(), Some("c"));
        assert_eq!(e.causation_id, None);
    }

    #[test]
    fn invalid_json_from_the_server_is_an_error() {
        let err = AskResult::try_from(pb::AskReply {
            reply: Bytes::from_static(b"{nope"),
            version: 1,
            duplicate: false,
        })
        .unwrap_err();
        assert!(matches!(err, Error::Other(m) if m.contains("invalid JSON in the actor's reply")));
    }

    #[test]
    fn status_maps_and_serializes_camel_case() {
        let status = Status::from(pb::StatusReply {
            node_id: 1,
            nodes: vec![pb::NodeStatus {
                id: 1,
                address: "a:1".into(),
                reachable: true,
            }],
            partitions: vec![pb::GroupStatus {
                id: 0,
                leader: None,
                replicas: vec![1],
                voters: vec![1],
                learners: vec![4],
                term: 2,
                last_log_index: 3,
                committed_index: 3,
                applied_index: 3,
                purged_index: 2,
                snapshots_sent: 1,
                snapshot_bytes_sent: 4096,
                lag: vec![pb::ReplicaLag {
                    node_id: 1,
                    entries_behind: 0,
                }],
            }],
            metadata: None,
            partition_count: 1,
            epoch: 2,
        });
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["epoch"], 2);
        assert_eq!(v["partitions"][0]["voters"], serde_json::json!([1]));
        assert_eq!(v["partitions"][0]["learners"], serde_json::json!([4]));
        assert_eq!(v["nodeId"], 1);
        assert_eq!(v["partitionCount"], 1);
        assert!(v["partitions"][0]["leader"].is_null());
        assert_eq!(v["partitions"][0]["lastLogIndex"], 3);
        assert_eq!(v["partitions"][0]["lag"][0]["entriesBehind"], 0);
        assert_eq!(v["partitions"][0]["snapshotsSent"], 1);
        assert_eq!(v["partitions"][0]["snapshotBytesSent"], 4096);
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), status);
    }

    #[test]
    fn expected_version_on_the_wire() {
        use pb::expected_version::Kind;
        let kind = |e: ExpectedVersion| pb::ExpectedVersion::from(e).kind;
        assert_eq!(kind(ExpectedVersion::Exact(0)), Some(Kind::Exact(0)));
        assert_eq!(kind(ExpectedVersion::Any), Some(Kind::Any(true)));
        assert_eq!(kind(ExpectedVersion::NoStream), Some(Kind::NoStream(true)));
    }
}
