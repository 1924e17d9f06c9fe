//! Schema evolution: upcasters registered per (event type, schema version)
//! chain on read, so `apply`, projections and readers see only the newest
//! shape of an event while the stored bytes never change.
//!
//! An event's schema version is `metadata.schema_version` (1 when absent).
//! The current version of a type is one past the newest upcaster registered
//! for it; events the runtime writes carry it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use cairn_storage::RecordedEvent;
use serde_json::Value;

/// Turns an event's data at schema version `v` into version `v + 1`.
pub type Upcast = Arc<dyn Fn(Value) -> Value + Send + Sync>;

/// Why an event could not be brought to its newest shape.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpcastError {
    /// The event was written by a newer schema than this node knows.
    #[error(
        "event `{event_id}` of type `{event_type}` has schema version {version}, newer than this node knows (up to {known}); upgrade the node"
    )]
    TooNew {
        event_id: String,
        event_type: String,
        version: u64,
        known: u64,
    },
    /// The stored data or metadata is not JSON.
    #[error("event `{event_id}` of type `{event_type}` cannot be upcast: {message}")]
    Malformed {
        event_id: String,
        event_type: String,
        message: String,
    },
}

/// Upcasters by event type and the version they upgrade from.
///
/// Every event a replay folds looks its type up here, so the map hashes
/// with foldhash rather than the standard library's SipHash (4% of a cold
/// replay's CPU: bench/README.md, session 29).
#[derive(Clone, Default)]
pub struct Upcasters {
    chains: HashMap<String, BTreeMap<u64, Upcast>, foldhash::fast::RandomState>,
}

impl Upcasters {
    /// The seed's upcasters: `USER_CREATED` v1 had no `email`; v2 defaults it
    /// to `unknown@example.com`.
    pub fn builtin() -> Upcasters {
        let mut upcasters = Upcasters::default();
        upcasters.register("USER_CREATED", 1, |mut data| {
            if let Value::Object(fields) = &mut data {
                fields
                    .entry("email")
                    .or_insert_with(|| Value::from("unknown@example.com"));
            }
            data
        });
        upcasters
    }

    /// Registers `upcast`, turning `event_type` events of schema version
    /// `from` into version `from + 1`.
    pub fn register(
        &mut self,
        event_type: &str,
        from: u64,
        upcast: impl Fn(Value) -> Value + Send + Sync + 'static,
    ) {
        self.chains
            .entry(event_type.to_string())
            .or_default()
            .insert(from.max(1), Arc::new(upcast));
    }

    /// The newest schema version of `event_type` this node knows.
    pub fn current_version(&self, event_type: &str) -> u64 {
        self.chains
            .get(event_type)
            .and_then(|c| c.keys().next_back())
            .map_or(1, |from| from + 1)
    }

    /// Brings `event` to the newest shape of its type: runs the upcasters
    /// from its schema version up and records the new version in its metadata.
    pub fn upcast(&self, event: &mut RecordedEvent) -> Result<(), UpcastError> {
        self.upcast_parts(
            &event.id,
            &event.event_type,
            &mut event.data,
            &mut event.metadata,
        )
    }

    /// [`Upcasters::upcast`] on an event's parts, for events in wire form.
    pub fn upcast_parts(
        &self,
        event_id: &str,
        event_type: &str,
        data: &mut Bytes,
        metadata: &mut Bytes,
    ) -> Result<(), UpcastError> {
        if let Some((new_data, new_metadata)) =
            self.upcasted(&|| event_id.to_owned(), event_type, data, metadata)?
        {
            *data = new_data;
            *metadata = new_metadata;
        }
        Ok(())
    }

    /// The data and metadata of an event brought to the newest shape of its
    /// type, or `None` when they have it already (nothing is copied then).
    /// `event_id` is asked for only to name the event in an error.
    pub fn upcasted(
        &self,
        event_id: &dyn Fn() -> String,
        event_type: &str,
        data: &[u8],
        metadata: &[u8],
    ) -> Result<Option<(Bytes, Bytes)>, UpcastError> {
        let known = self.current_version(event_type);
        let malformed = |message: String| UpcastError::Malformed {
            event_id: event_id(),
            event_type: event_type.to_string(),
            message,
        };
        let version = schema_version(metadata).map_err(malformed)?;
        if version > known {
            return Err(UpcastError::TooNew {
                event_id: event_id(),
                event_type: event_type.to_string(),
                version,
                known,
            });
        }
        if version == known {
            return Ok(None);
        }
        let mut meta: Value = if metadata.is_empty() {
            Value::Object(Default::default())
        } else {
            serde_json::from_slice(metadata).map_err(|e| malformed(format!("metadata: {e}")))?
        };
        let chain = &self.chains[event_type];
        let mut value: Value =
            serde_json::from_slice(data).map_err(|e| malformed(format!("data: {e}")))?;
        for from in version..known {
            if let Some(upcast) = chain.get(&from) {
                value = upcast(value);
            }
        }
        meta["schema_version"] = Value::from(known);
        Ok(Some((
            Bytes::from(serde_json::to_vec(&value).expect("JSON values serialize")),
            Bytes::from(serde_json::to_vec(&meta).expect("JSON values serialize")),
        )))
    }

    /// The metadata the runtime writes on a new event of `event_type`.
    pub fn metadata_for(&self, event_type: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"schema_version":{}}}"#,
            self.current_version(event_type)
        ))
    }
}

/// The `schema_version` in an event's metadata (1 when absent), read
/// without building the whole metadata: replay reads millions of these.
fn schema_version(metadata: &[u8]) -> Result<u64, String> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        schema_version: Option<Value>,
    }
    // No metadata, the common case, needs no parse: a replay checks every
    // event it folds (11% of a cold replay's CPU went to parsing `{}`).
    if metadata.is_empty() || metadata == b"{}" {
        return Ok(1);
    }
    match serde_json::from_slice::<Versioned>(metadata) {
        Ok(m) => Ok(m
            .schema_version
            .as_ref()
            .and_then(Value::as_u64)
            .unwrap_or(1)),
        // Not an object: no version in it, as long as it is JSON at all.
        Err(_) => serde_json::from_slice::<serde::de::IgnoredAny>(metadata)
            .map(|_| 1)
            .map_err(|e| format!("metadata: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(event_type: &str, data: Value, metadata: Value) -> RecordedEvent {
        RecordedEvent {
            id: "e1".into(),
            stream: "user-old".into(),
            event_type: event_type.into(),
            data: Bytes::from(data.to_string()),
            metadata: Bytes::from(metadata.to_string()),
            correlation_id: String::new(),
            causation_id: String::new(),
            timestamp_ms: 0,
            version: 1,
            position: 1,
        }
    }

    #[test]
    fn the_seeds_user_created_v1_gains_an_email() {
        let upcasters = Upcasters::builtin();
        assert_eq!(upcasters.current_version("USER_CREATED"), 2);
        let mut old = event(
            "USER_CREATED",
            json!({"userId":"old","name":"Old"}),
            json!({}),
        );
        upcasters.upcast(&mut old).unwrap();
        let data: Value = serde_json::from_slice(&old.data).unwrap();
        assert_eq!(
            data,
            json!({"userId":"old","name":"Old","email":"unknown@example.com"})
        );
        let metadata: Value = serde_json::from_slice(&old.metadata).unwrap();
        assert_eq!(metadata["schema_version"], 2);

        let mut current = event(
            "USER_CREATED",
            json!({"userId":"n","name":"N","email":"n@x"}),
            json!({"schema_version":2}),
        );
        let before = current.data.clone();
        upcasters.upcast(&mut current).unwrap();
        assert_eq!(current.data, before);
    }

    #[test]
    fn schema_versions_are_read_from_metadata_and_default_to_one() {
        assert_eq!(schema_version(b""), Ok(1));
        assert_eq!(schema_version(b"{}"), Ok(1));
        assert_eq!(schema_version(br#"{"source":"import"}"#), Ok(1));
        assert_eq!(schema_version(br#" {"schema_version": 3} "#), Ok(3));
        assert_eq!(schema_version(b"[1]"), Ok(1));
        assert!(schema_version(b"{").is_err());
    }

    #[test]
    fn chains_run_in_order_and_newer_events_are_refused() {
        let mut upcasters = Upcasters::default();
        upcasters.register("T", 1, |d| json!({"v1": d}));
        upcasters.register("T", 2, |d| json!({"v2": d}));
        let mut e = event("T", json!(0), json!({}));
        upcasters.upcast(&mut e).unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&e.data).unwrap(),
            json!({"v2": {"v1": 0}})
        );
        let mut future = event("T", json!(0), json!({"schema_version": 7}));
        let err = upcasters.upcast(&mut future).unwrap_err().to_string();
        assert!(
            err.contains("`T`") && err.contains("schema version 7"),
            "{err}"
        );
    }
}
