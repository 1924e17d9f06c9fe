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
