//! Applying committed entries to a group's state machine: the event store's
//! write rules (optimistic concurrency, idempotency, deletes, positions and
//! timestamps), turned into one atomic RocksDB write per `apply()` call.

use std::collections::HashMap;

use openraft::{Entry, EntryPayload, LogId, StoredMembership};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::command::{
    AppendOutcome, Command, CommandResult, ExpectedVersion, GroupId, Rejection, StreamAppend,
};
use crate::error::{Error, decode, decode_u64, encode};
use crate::event::{RecordedEvent, StreamInfo};
use crate::keys;
use crate::store::{CF_SM, Store};
use crate::type_config::{NodeId, TypeConfig};

/// What a group's state machine has applied: persisted under `keys::applied`
/// in the same write as the effects of the entries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) last_membership: StoredMembership<NodeId, openraft::BasicNode>,
}

/// A partition's counters: persisted under `keys::counters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PartitionCounters {
    /// Last position written in the partition log (0 = none).
    pub(crate) last_position: u64,
    /// Timestamp of the last event written; later events never get less.
    pub(crate) last_timestamp_ms: i64,
}

/// Reads a group's applied state (default if nothing was applied yet).
pub(crate) fn read_applied(store: &Store, group: GroupId) -> Result<AppliedState, Error> {
    match store.db().get_cf(store.cf(CF_SM), keys::applied(group))? {
        Some(bytes) => decode("applied state", &bytes),
        None => Ok(AppliedState::default()),
    }
}

/// Applies `entries` in order and writes all their effects, plus the new
/// applied state, in one unsynced `WriteBatch`: either all of it lands or none.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group, entries = entries.len()))]
pub(crate) fn apply_entries(
    store: &Store,
    group: GroupId,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<Vec<CommandResult>, Error> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let mut applied = read_applied(store, group)?;
    let mut tx = Applier::new(store, group);
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let log_id = entry.log_id;
        let result = match entry.payload {
            EntryPayload::Blank => CommandResult::None,
            EntryPayload::Membership(m) => {
                applied.last_membership = StoredMembership::new(Some(log_id), m);
                CommandResult::None
            }
            EntryPayload::Normal(cmd) => tx.command(cmd)?,
        };
        applied.last_applied = Some(log_id);
        results.push(result);
    }
    tx.put(keys::applied(group), encode("applied state", &applied)?);
    let batch = tx.into_batch()?;
    store.write(batch, false)?;
    Ok(results)
}

/// Builds one batch of state-machine writes. Reads see the batch's own
/// earlier writes (an in-memory overlay) before the database.
struct Applier<'a> {
    store: &'a Store,
    group: GroupId,
    overlay: HashMap<Vec<u8>, Vec<u8>>,
    counters: Option<PartitionCounters>,
}

impl<'a> Applier<'a> {
    fn new(store: &'a Store, group: GroupId) -> Applier<'a> {
        Applier {
            store,
            group,
            overlay: HashMap::new(),
            counters: None,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(v) = self.overlay.get(key) {
            return Ok(Some(v.clone()));
        }
        Ok(self.store.db().get_cf(self.store.cf(CF_SM), key)?)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.overlay.insert(key, value);
    }

    fn into_batch(mut self) -> Result<WriteBatch, Error> {
        if let Some(c) = self.counters {
            let k = keys::counters(self.group);
            self.put(k, encode("partition counters", &c)?);
        }
        let cf = self.store.cf(CF_SM);
        let mut batch = WriteBatch::default();
        for (k, v) in &self.overlay {
            batch.put_cf(cf, k, v);
        }
        Ok(batch)
    }

    fn counters(&mut self) -> Result<PartitionCounters, Error> {
        if let Some(c) = self.counters {
            return Ok(c);
        }
        let c = match self.get(&keys::counters(self.group))? {
            Some(bytes) => decode("partition counters", &bytes)?,
            None => PartitionCounters::default(),
        };
        self.counters = Some(c);
        Ok(c)
    }

    fn stream_info(&self, key: &[u8]) -> Result<Option<StreamInfo>, Error> {
        self.get(key)?
            .map(|b| decode("stream info", &b))
            .transpose()
    }

    fn command(&mut self, cmd: Command) -> Result<CommandResult, Error> {
        Ok(match cmd {
            Command::Append {
                timestamp_ms,
                appends,
            } => {
                let mut results = Vec::with_capacity(appends.len());
                for append in appends {
                    results.push(self.append(timestamp_ms, append)?);
                }
                CommandResult::Appended(results)
            }
            Command::Delete {
                stream,
                expected,
                hard,
            } => CommandResult::Deleted(self.delete(stream, expected, hard)?),
            Command::SaveActorSnapshot {
                stream,
                version,
                state,
            } => {
                match keys::actor_snapshot(self.group, &stream, version) {
                    Ok(k) => self.put(k, state.to_vec()),
                    Err(keys::StreamTooLong) => {
                        tracing::warn!(
                            group = self.group,
                            len = stream.len(),
                            "actor snapshot of an over-long stream id dropped"
                        );
                    }
                }
                CommandResult::SnapshotSaved
            }
            Command::MetaPut { key, value } => {
                self.put(keys::meta(self.group, &key), value.to_vec());
                CommandResult::MetaPut
            }
        })
    }

    fn append(
        &mut self,
        timestamp_ms: i64,
        append: StreamAppend,
    ) -> Result<Result<AppendOutcome, Rejection>, Error> {
        let StreamAppend {
            stream,
            expected,
            events,
        } = append;
        let g = self.group;
        // An id too long to key can never be written: refused like a tombstone.
        let Ok(info_key) = keys::stream_info(g, &stream) else {
            return Ok(Err(Rejection::StreamTombstoned { stream }));
        };
        let mut info = self.stream_info(&info_key)?.unwrap_or_default();
        if info.tombstoned {
            return Ok(Err(Rejection::StreamTombstoned { stream }));
        }

        if let Some(first) = events.first() {
            let id_key = keys::event_id(g, &stream, &first.id)
                .map_err(|_| Error::StreamIdTooLong { len: stream.len() })?;
            if let Some(v) = self.get(&id_key)? {
                let version = decode_u64("event-id index", &v)?;
                let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
                return self.earlier_result(&stream, version, &ids);
            }
        }

        let actual = info.version;
        if !expected_matches(expected, &info) {
            return Ok(Err(Rejection::WrongExpectedVersion {
                stream,
                expected,
                actual,
            }));
        }

        let mut counters = self.counters()?;
        let timestamp_ms = timestamp_ms.max(counters.last_timestamp_ms);
        if events.is_empty() {
            return Ok(Ok(AppendOutcome {
                first_version: actual,
                last_version: actual,
                first_position: counters.last_position,
                last_position: counters.last_position,
                timestamp_ms,
                duplicate: false,
            }));
        }

        let first_version = actual + 1;
        let first_position = counters.last_position + 1;
        let mut version = actual;
        let mut position = counters.last_position;
        let mut last_id = String::new();
        for e in events {
            version += 1;
            position += 1;
            let too_long = |_| Error::StreamIdTooLong { len: stream.len() };
            self.put(
                keys::stream_version(g, &stream, version).map_err(too_long)?,
                position.to_be_bytes().to_vec(),
            );
            self.put(
                keys::event_id(g, &stream, &e.id).map_err(too_long)?,
                version.to_be_bytes().to_vec(),
            );
            let recorded = RecordedEvent {
                id: e.id,
                stream: stream.clone(),
                event_type: e.event_type,
                data: e.data,
                metadata: e.metadata,
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
                timestamp_ms,
                version,
                position,
            };
            self.put(keys::event(g, position), encode("event", &recorded)?);
            last_id = recorded.id;
        }

        info.version = version;
        info.last_event_id = last_id;
        info.last_event_timestamp_ms = timestamp_ms;
        // Writing un-deletes a soft-deleted stream; what came before the
        // delete stays hidden behind `first_readable_version`.
        info.deleted = false;
        if info.first_readable_version == 0 {
            info.first_readable_version = 1;
        }
        self.put(info_key, encode("stream info", &info)?);

        counters.last_position = position;
        counters.last_timestamp_ms = timestamp_ms;
        self.counters = Some(counters);

        Ok(Ok(AppendOutcome {
            first_version,
            last_version: version,
            first_position,
            last_position: position,
            timestamp_ms,
            duplicate: false,
        }))
    }

    /// The first event id of an append is already in the stream at
    /// `version`: the append is a retry if every event `i` is at `version + i`
    /// with the same id; then this returns what was written then.
    fn earlier_result(
        &self,
        stream: &str,
        version: u64,
        ids: &[&str],
    ) -> Result<Result<AppendOutcome, Rejection>, Error> {
        let g = self.group;
        let conflict = || {
            Ok(Err(Rejection::IdempotencyConflict {
                stream: stream.to_owned(),
                event_id: ids.first().map(|s| s.to_string()).unwrap_or_default(),
                version,
            }))
        };
        let mut first: Option<(u64, i64)> = None;
        let mut last_position = 0;
        for (i, id) in ids.iter().enumerate() {
            let v = version + i as u64;
            let key = keys::stream_version(g, stream, v)
                .map_err(|_| Error::StreamIdTooLong { len: stream.len() })?;
            let Some(pos) = self.get(&key)? else {
                return conflict();
            };
            let pos = decode_u64("version index", &pos)?;
            let body = self.get(&keys::event(g, pos))?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "version index of `{stream}` v{v} points to missing position {pos}"
                ))
            })?;
            let recorded: RecordedEvent = decode("event", &body)?;
            if recorded.id != *id {
                return conflict();
            }
            first.get_or_insert((pos, recorded.timestamp_ms));
            last_position = pos;
        }
        let Some((first_position, timestamp_ms)) = first else {
            return conflict();
        };
        Ok(Ok(AppendOutcome {
            first_version: version,
            last_version: version + ids.len() as u64 - 1,
            first_position,
            last_position,
            timestamp_ms,
            duplicate: true,
        }))
    }

    fn delete(
        &mut self,
        stream: String,
        expected: ExpectedVersion,
        hard: bool,
    ) -> Result<Result<u64, Rejection>, Error> {
        let Ok(info_key) = keys::stream_info(self.group, &stream) else {
            return Ok(Err(Rejection::StreamTombstoned { stream }));
        };
        let mut info = self.stream_info(&info_key)?.unwrap_or_default();
        if info.tombstoned {
            return Ok(Err(Rejection::StreamTombstoned { stream }));
        }
        if !expected_matches(expected, &info) {
            let actual = info.version;
            return Ok(Err(Rejection::WrongExpectedVersion {
                stream,
                expected,
                actual,
            }));
        }
        info.deleted = true;
        info.tombstoned = hard;
        info.first_readable_version = info.version + 1;
        let version = info.version;
        self.put(info_key, encode("stream info", &info)?);
        Ok(Ok(version))
    }
}

/// The optimistic-concurrency rule: `Any` always passes, `NoStream` when the
/// stream is empty or soft-deleted, `Exact(n)` when it is at version `n`.
fn expected_matches(expected: ExpectedVersion, info: &StreamInfo) -> bool {
    match expected {
        ExpectedVersion::Any => true,
        ExpectedVersion::NoStream => info.version == 0 || info.deleted,
        ExpectedVersion::Exact(n) => n == info.version,
    }
}
