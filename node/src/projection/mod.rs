//! Projections: read models folded from every partition's log, and the
//! queries they answer.
//!
//! Each node folds, for every partition it replicates, each projection's read
//! model from its own copy of the partition log, committing the model's
//! changes and the consumed position together (see
//! `cairn_storage::Store::projection_commit`), so an event counts exactly once
//! across restarts, leader changes and node loss. The read models are
//! node-local and rebuildable from the log, not replicated. A query asks each
//! partition's leader for its part and combines the parts.
//!
//! # Layout
//! - [`Projection`], [`ReadModel`]: what a projection implements and the map it writes.
//! - [`runner`]: the tasks that fold partition logs into read models.
//! - [`builtin`]: `user-analytics` and `users-by-email`.

pub mod builtin;
pub mod runner;

use std::collections::BTreeMap;

use bytes::Bytes;
use cairn_storage::{GroupId, ProjectionChanges, RecordedEvent, Store};
use serde_json::Value;

pub use runner::{ProjectionRunner, ProjectionStatus};

/// A read model folded from events, answering queries by name.
pub trait Projection: Send + Sync + 'static {
    /// The name queries use (`user-analytics`).
    fn name(&self) -> &'static str;

    /// Whether the projection consumes `event` (filter by type or stream prefix).
    fn accepts(&self, event: &RecordedEvent) -> bool;

    /// Whether the projection may consume events of `stream`. The events of
    /// streams it refuses are passed over by the partition log's entry
    /// alone, never read nor decoded: a projection of a few streams then
    /// costs little on a partition busy with others. All, by default.
    fn accepts_stream(&self, _stream: &str) -> bool {
        true
    }

    /// Folds one event into a partition's read model. Must be deterministic.
    fn apply(
        &self,
        event: &RecordedEvent,
        model: &mut ReadModel<'_>,
    ) -> Result<(), ProjectionError>;

    /// Answers a query from one partition's read model.
    fn query(&self, model: &ReadModel<'_>, args: &Value) -> Result<Value, ProjectionError>;

    /// Combines the answers of every partition into the query's result.
    fn combine(&self, parts: Vec<Value>, args: &Value) -> Result<Value, ProjectionError>;
}

/// Why a projection could not fold an event or answer a query.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The query's arguments are wrong; the message says what to fix.
    #[error("{0}")]
    BadQuery(String),
    /// Nothing matches the query.
    #[error("{0}")]
    NotFound(String),
    /// An event could not be brought to its newest shape.
    #[error(transparent)]
    Upcast(#[from] crate::upcast::UpcastError),
    /// The read model could not be read or written.
    #[error("projection storage: {0}")]
    Storage(#[from] cairn_storage::Error),
}

/// One partition's read model of one projection: a key/value map of JSON
/// values. Writes are buffered and committed with the checkpoint.
pub struct ReadModel<'a> {
    store: &'a Store,
    name: &'static str,
    group: GroupId,
    pending: BTreeMap<String, Option<Value>>,
}

impl<'a> ReadModel<'a> {
    pub(crate) fn new(store: &'a Store, name: &'static str, group: GroupId) -> ReadModel<'a> {
        ReadModel {
            store,
            name,
            group,
            pending: BTreeMap::new(),
        }
    }

    /// The value under `key`, seeing this batch's own writes.
    pub fn get(&self, key: &str) -> Result<Option<Value>, ProjectionError> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.clone());
        }
        match self.store.projection_get(self.name, self.group, key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                cairn_storage::Error::Corrupt(format!("read model entry `{key}`: {e}")).into()
            }),
        }
    }

    /// Entries whose key starts with `prefix`, committed ones only.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, Value)>, ProjectionError> {
        self.store
            .projection_scan(self.name, self.group, prefix)?
            .into_iter()
            .map(|(k, v)| {
                let value = serde_json::from_slice(&v).map_err(|e| {
                    cairn_storage::Error::Corrupt(format!("read model entry `{k}`: {e}"))
                })?;
                Ok((k, value))
            })
            .collect()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<String>, value: Value) {
        self.pending.insert(key.into(), Some(value));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: impl Into<String>) {
        self.pending.insert(key.into(), None);
    }

    /// Adds `delta` to the integer counter under `key` (missing = 0).
    pub fn add(&mut self, key: &str, delta: i64) -> Result<(), ProjectionError> {
        let current = self.get(key)?.and_then(|v| v.as_i64()).unwrap_or(0);
        self.put(key, Value::from(current + delta));
        Ok(())
    }

    pub(crate) fn into_changes(self) -> ProjectionChanges {
        self.pending
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    v.map(|v| Bytes::from(serde_json::to_vec(&v).expect("JSON values serialize"))),
                )
            })
            .collect()
    }
}
