//! The typed requests and results of reads of all streams.

use serde::{Deserialize, Serialize};

use crate::{Checkpoint, RecordedEvent};

/// Which events a read of all streams or a subscription delivers: those
/// whose type is one of `types` and whose stream id starts with one of
/// `stream_prefixes`. An empty list matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventFilter {
    /// Event types to deliver, e.g. `USER_CREATED`.
    pub types: Vec<String>,
    /// Stream id prefixes to deliver, e.g. `user-`.
    pub stream_prefixes: Vec<String>,
}

impl EventFilter {
    /// Everything.
    pub fn all() -> EventFilter {
        EventFilter::default()
    }

    /// The same filter, also letting events of `event_type` through.
    pub fn with_type(mut self, event_type: impl Into<String>) -> EventFilter {
        self.types.push(event_type.into());
        self
    }

    /// The same filter, also letting events of streams starting with `prefix` through.
    pub fn with_stream_prefix(mut self, prefix: impl Into<String>) -> EventFilter {
        self.stream_prefixes.push(prefix.into());
        self
    }
}

/// A read of all streams: where from, how much, which events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadAll {
    /// Resume after this checkpoint ([`Checkpoint::start`] = the beginning).
    pub from: Checkpoint,
    /// Skip events older than this (ms since the epoch).
    pub from_timestamp: Option<i64>,
    /// Most events to return; 0 = the server's page size (1000).
    pub limit: u32,
    /// Which events to return.
    pub filter: EventFilter,
}

impl ReadAll {
    /// From the beginning of every log, everything, a server-sized page.
    pub fn new() -> ReadAll {
        ReadAll::default()
    }

    /// The same read, resuming after `checkpoint`.
    pub fn from(mut self, checkpoint: Checkpoint) -> ReadAll {
        self.from = checkpoint;
        self
    }

    /// The same read, skipping events older than `timestamp_ms`.
    pub fn from_timestamp(mut self, timestamp_ms: i64) -> ReadAll {
        self.from_timestamp = Some(timestamp_ms);
        self
    }

    /// The same read, returning at most `limit` events.
    pub fn limit(mut self, limit: u32) -> ReadAll {
        self.limit = limit;
        self
    }

    /// The same read, with this filter.
    pub fn filter(mut self, filter: EventFilter) -> ReadAll {
        self.filter = filter;
        self
    }
}

/// A page of all streams' events, as `cairn stream read-all` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadAllResult {
    /// In `(timestamp, partition, position)` order.
    pub events: Vec<RecordedEvent>,
    /// Read from here to get the events after these.
    pub checkpoint: Checkpoint,
    /// True when every partition's log was read to its end: nothing more
    /// until new events are written.
    pub end: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn result_json_shape() {
        let r = ReadAllResult {
            events: vec![],
            checkpoint: Checkpoint::from_positions(vec![1, 2]),
            end: true,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"events": [], "checkpoint": "p0:1,p1:2", "end": true})
        );
        assert_eq!(serde_json::from_value::<ReadAllResult>(v).unwrap(), r);
    }
}
