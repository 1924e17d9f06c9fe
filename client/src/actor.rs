//! The typed requests and results of actor calls.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an actor answered to a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AskResult {
    /// The actor's reply.
    pub reply: Value,
    /// The actor's stream version after the command (its events are committed).
    pub version: u64,
    /// The command id had already been applied (this was a retry): nothing
    /// was written this time, `reply` is null and `version` is the current
    /// version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

/// The ids an `ask` carries into the events its command produces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AskIds {
    /// The command's id: sending a command again with the same id never
    /// applies it twice. Empty: the client picks a new UUIDv7 per call (and
    /// keeps it across the call's own retries).
    pub command_id: String,
    /// The events' correlation id. Empty: the command id.
    pub correlation_id: String,
}

impl AskIds {
    /// Ids with this command id.
    pub fn command(id: impl Into<String>) -> AskIds {
        AskIds {
            command_id: id.into(),
            ..AskIds::default()
        }
    }

    /// The same ids, with this correlation id.
    pub fn with_correlation_id(mut self, id: impl Into<String>) -> AskIds {
        self.correlation_id = id.into();
        self
    }
}

/// Which state of an actor to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StateAt {
    /// The current state (linearizable: reflects every acknowledged command).
    #[default]
    Latest,
    /// The state after the stream's first `n` events.
    Version(u64),
    /// The state from the events with a timestamp at or before this time (ms since epoch).
    Timestamp(i64),
}

/// An actor's state and the stream version it reflects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateResult {
    /// The state, as the actor type serializes it.
    pub state: Value,
    /// The stream version the state reflects (0 = no events).
    pub version: u64,
}
