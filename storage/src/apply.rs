//! Applying committed entries to a group's state machine: the event store's
//! write rules (optimistic concurrency, idempotency, deletes, positions and
//! timestamps, retention purges), turned into one atomic RocksDB write per
//! `apply()` call.

use bytes::Bytes;
use openraft::{Entry, EntryPayload, LogId, StoredMembership};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::appends::{AppendView, Appends};
use crate::command::{AppendOutcome, Command, CommandResult, ExpectedVersion, GroupId, Rejection};
use crate::error::{Error, decode, decode_u64, encode_onto};
use crate::event::{EventRef, RecordedEvent, StreamInfo, push_body};
use crate::info_cache::InfoCache;
use crate::keys;
use crate::recent::{Appended, KeptEvent};
use crate::retention;
use crate::store::{CF_SM, Store, View};
use crate::stored_id;
use crate::type_config::{NodeId, TypeConfig};
use crate::writes::Writes;

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

/// Reads a partition's counters (default if nothing was appended yet).
pub(crate) fn read_counters(store: &Store, group: GroupId) -> Result<PartitionCounters, Error> {
    match store.db().get_cf(store.cf(CF_SM), keys::counters(group))? {
        Some(bytes) => decode("partition counters", &bytes),
        None => Ok(PartitionCounters::default()),
    }
}

/// What a group's last state-machine writes left in its applied state,
/// counters and stream infos. The state machine, their only writer, keeps it
/// between applies instead of reading them back from RocksDB: the applied
/// state and counters were two point lookups per entry on every replica,
/// ~4% of the nodes' CPU under single-event appends (bench/README.md,
/// session 9); the infos, see [`InfoCache`].
#[derive(Debug, Default)]
pub(crate) struct Written {
    applied: AppliedState,
    counters: PartitionCounters,
    infos: InfoCache,
    /// The last apply's writes: their room, for the next.
    writes: Writes,
}

impl Written {
    /// Reads the applied state and counters from the store (after opening,
    /// or a snapshot install); no info is cached yet.
    pub(crate) fn read(store: &Store, group: GroupId) -> Result<Written, Error> {
        Ok(Written {
            applied: read_applied(store, group)?,
            counters: read_counters(store, group)?,
            infos: InfoCache::default(),
            writes: Writes::default(),
        })
    }
}

/// How many events `entries` append (other commands count as one).
pub(crate) fn events_in(entries: &[Entry<TypeConfig>]) -> usize {
    entries
        .iter()
        .map(|entry| match &entry.payload {
            EntryPayload::Normal(Command::Append { appends, .. }) => appends.events(),
            EntryPayload::Normal(Command::FormerAppend { appends, .. }) => {
                appends.iter().map(|append| append.events.len()).sum()
            }
            EntryPayload::Normal(_) => 1,
            _ => 0,
        })
        .sum()
}

/// Applies `entries` in order and writes all their effects, plus the new
/// applied state, in one unsynced `WriteBatch`: either all of it lands or none.
/// `written` is what the group's previous write left (read from the store
/// when `None`); returns it as this write leaves it.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group, entries = entries.len()))]
pub(crate) fn apply_entries(
    store: &Store,
    group: GroupId,
    written: Option<Written>,
    entries: Vec<Entry<TypeConfig>>,
) -> Result<(Vec<CommandResult>, Written), Error> {
    let Written {
        mut applied,
        counters,
        infos,
        mut writes,
    } = match written {
        Some(written) => written,
        None => Written::read(store, group)?,
    };
    if entries.is_empty() {
        return Ok((
            Vec::new(),
            Written {
                applied,
                counters,
                infos,
                writes,
            },
        ));
    }
    let events = events_in(&entries);
    // Only the newest events of a write join the in-memory tail.
    let appended = Appended::for_write(events);
    writes.start(events);
    let mut tx = Applier::new(store, group, counters, infos, appended, writes);
    let mut results = Vec::with_capacity(entries.len());
    for entry in entries {
        let log_id = entry.log_id;
        // An installed snapshot can be newer than its meta (see the
        // `snapshot` module): openraft then sends entries whose effects the
        // state already holds. They are committed, so identical: skip them.
        if applied
            .last_applied
            .is_some_and(|done| log_id.index <= done.index)
        {
            results.push(CommandResult::None);
            continue;
        }
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
    tx.put_encoded(&keys::applied(group), "applied state", &applied)?;
    let counters = tx.counters;
    // A failed write below drops `infos` with the rest of `Written`.
    let Batch {
        batch,
        infos,
        appended,
        purged,
        writes,
    } = tx.into_batch()?;
    store
        .inner
        .recent
        .write_applied(group, appended, &purged, || store.write(batch, false))?;
    if let Some(last) = applied.last_applied {
        store.inner.applied.advance(group, last.index);
    }
    Ok((
        results,
        Written {
            applied,
            counters,
            infos,
            writes,
        },
    ))
}

/// Bytes of a RocksDB `WriteBatch` before its records (sequence and count).
const BATCH_HEADER: usize = 12;
/// Bytes of a batch record besides its key and value, at most: its type,
/// column family and two lengths, each a varint of up to 5 bytes.
const BATCH_RECORD_OVERHEAD: usize = 16;

/// Builds one batch of state-machine writes. Reads see the batch's own
/// earlier writes and deletes (an in-memory overlay) before the database;
/// keys never read back go straight to the batch.
struct Applier<'a> {
    store: &'a Store,
    group: GroupId,
    writes: Writes,
    /// An event id's stored form, made once for its index key and its body.
    stored_id: Vec<u8>,
    counters: PartitionCounters,
    /// `counters` moved: the batch writes them.
    counters_moved: bool,
    /// The group's infos as stored before this batch (the overlay has the
    /// batch's own); the batch's writes join it in [`Applier::into_batch`].
    infos: InfoCache,
    /// The events this batch appends, for the in-memory tail (`recent`).
    appended: Appended,
    /// The positions of the events this batch purges.
    purged: Vec<u64>,
}

/// What [`Applier::into_batch`] leaves: the batch, with the info cache as
/// the batch leaves the group, the events it appends, the positions it
/// purges, and the writes' room for the next apply.
struct Batch {
    batch: WriteBatch,
    infos: InfoCache,
    appended: Appended,
    purged: Vec<u64>,
    writes: Writes,
}

impl<'a> Applier<'a> {
    fn new(
        store: &'a Store,
        group: GroupId,
        counters: PartitionCounters,
        infos: InfoCache,
        appended: Appended,
        writes: Writes,
    ) -> Applier<'a> {
        Applier {
            store,
            group,
            writes,
            stored_id: Vec::new(),
            counters,
            counters_moved: false,
            infos,
            appended,
            purged: Vec::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(v) = self.writes.get(key) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        if let Some(v) = self.infos.get(key) {
            return Ok(Some(v.to_vec()));
        }
        Ok(self.store.db().get_cf(self.store.cf(CF_SM), key)?)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        let key = self.writes.add_slice(key);
        let value = self.writes.add_slice(value);
        self.writes.put(key, Some(value));
    }

    /// Puts `value` encoded for disk (`what` names it in an error).
    fn put_encoded<T: Serialize>(
        &mut self,
        key: &[u8],
        what: &str,
        value: &T,
    ) -> Result<(), Error> {
        let key = self.writes.add_slice(key);
        let value = self.writes.add(|out| encode_onto(what, value, out))?;
        self.writes.put(key, Some(value));
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) {
        let key = self.writes.add_slice(key);
        self.writes.put(key, None);
    }

    /// The batch: every write in key order (see [`Writes::in_key_order`]).
    fn into_batch(mut self) -> Result<Batch, Error> {
        if self.counters_moved {
            let counters = self.counters;
            self.put_encoded(&keys::counters(self.group), "partition counters", &counters)?;
        }
        let cf = self.store.cf(CF_SM);
        // Room for the whole batch up front: grown from empty, RocksDB's
        // batch copied itself at every doubling (4% of an apply's
        // instructions under 100-event appends).
        let bytes = BATCH_HEADER + self.writes.batch_bytes(BATCH_RECORD_OVERHEAD);
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for (k, v) in self.writes.in_key_order() {
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
            if keys::is_stream_info(k) {
                self.infos.wrote(k, v);
            }
        }
        Ok(Batch {
            batch,
            infos: self.infos,
            appended: self.appended,
            purged: self.purged,
            writes: self.writes,
        })
    }

    fn stream_info(&self, key: &[u8]) -> Result<Option<StreamInfo>, Error> {
        self.get(key)?.map(|b| StreamInfo::decode(&b)).transpose()
    }

    /// The key and info of a stream that may still be written, or `None`
    /// when it is tombstoned or its id is too long to key (it can never be
    /// written: refused like a tombstone).
    fn writable_stream(&self, stream: &str) -> Result<Option<(Vec<u8>, StreamInfo)>, Error> {
        let Ok(info_key) = keys::stream_info(self.group, stream) else {
            return Ok(None);
        };
        let info = self.stream_info(&info_key)?.unwrap_or_default();
        Ok((!info.tombstoned).then_some((info_key, info)))
    }

    /// Version of the newest actor snapshot of `stream`, this batch's included.
    fn newest_snapshot(&self, stream: &str) -> Result<Option<u64>, Error> {
        let too_long = |_| Error::StreamIdTooLong { len: stream.len() };
        let prefix = keys::actor_snapshots_prefix(self.group, stream).map_err(too_long)?;
        let end = keys::prefix_end(&prefix).expect("a stream prefix is never all 0xFF");
        let stored = View::new(self.store)
            .last_in(CF_SM, &prefix, &end)?
            .and_then(|(k, _)| keys::trailing_u64(&k));
        let batched = self
            .writes
            .overlay_puts()
            .filter(|(k, _)| k.len() == prefix.len() + 8 && k.starts_with(&prefix))
            .filter_map(|(k, _)| keys::trailing_u64(k))
            .max();
        Ok(stored.max(batched))
    }

    /// The stored event at `version` of `stream`, if any.
    fn event(&self, stream: &str, version: u64) -> Result<Option<RecordedEvent>, Error> {
        let key = keys::stream_event(self.group, stream, version)
            .map_err(|_| Error::StreamIdTooLong { len: stream.len() })?;
        self.get(&key)?
            .map(|b| EventRef::decode(version, &b)?.to_recorded(stream.to_owned()))
            .transpose()
    }

    /// Timestamp of the event at `version` of `stream`, if it is stored.
    fn timestamp_of(&self, stream: &str, version: u64) -> Result<Option<i64>, Error> {
        Ok(self.event(stream, version)?.map(|e| e.timestamp_ms))
    }

    /// Purges every event of `stream` beyond its retention limits at
    /// `now_ms` (an entry's leader timestamp, so every replica purges the
    /// same), sparing those above the newest actor snapshot.
    fn trim(&mut self, stream: &str, info: &mut StreamInfo, now_ms: i64) -> Result<(), Error> {
        if !retention::has_limits(info) || info.tombstoned {
            return Ok(());
        }
        let snapshot = self.newest_snapshot(stream)?;
        let from =
            retention::retained_from(info, snapshot, now_ms, |v| self.timestamp_of(stream, v))?;
        self.purge_through(stream, info, from.saturating_sub(1))
    }

    /// Removes the events of `stream` at versions `(purged_through, upto]`:
    /// their bodies, partition-log, event-id index and time index entries.
    /// Their positions become gaps in the partition log.
    fn purge_through(
        &mut self,
        stream: &str,
        info: &mut StreamInfo,
        upto: u64,
    ) -> Result<(), Error> {
        let too_long = |_| Error::StreamIdTooLong { len: stream.len() };
        let upto = upto.min(info.version);
        for version in info.purged_through.saturating_add(1)..=upto {
            let key = keys::stream_event(self.group, stream, version).map_err(too_long)?;
            let Some(body) = self.get(&key)? else {
                continue;
            };
            let event = EventRef::decode(version, &body)?;
            let position = event.position;
            let id_key = keys::stored_event_id(self.group, stream, event.stored_id());
            self.remove(&id_key.map_err(too_long)?);
            self.remove(&keys::position_bytes(self.group, position));
            if keys::is_time_indexed(version) {
                let at = event.timestamp_ms;
                self.remove(&keys::time_index(self.group, stream, at, version).map_err(too_long)?);
            }
            self.remove(&key);
            self.purged.push(position);
        }
        info.purged_through = info.purged_through.max(upto);
        Ok(())
    }

    fn command(&mut self, cmd: Command) -> Result<CommandResult, Error> {
        Ok(match cmd {
            Command::Append {
                timestamp_ms,
                appends,
            } => self.appends(timestamp_ms, &appends)?,
            Command::FormerAppend {
                timestamp_ms,
                appends,
            } => self.appends(timestamp_ms, &Appends::new(&appends))?,
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
                self.save_actor_snapshots(&stream, [(version, state)])?;
                CommandResult::SnapshotSaved
            }
            Command::SaveActorSnapshots { stream, snapshots } => {
                self.save_actor_snapshots(&stream, snapshots)?;
                CommandResult::SnapshotSaved
            }
            Command::MetaPut { key, value } => {
                self.put(&keys::meta(self.group, &key), &value);
                CommandResult::MetaPut
            }
            Command::SetStreamMetadata {
                stream,
                max_count,
                max_age_ms,
                timestamp_ms,
            } => CommandResult::StreamMetadataSet(self.set_stream_metadata(
                stream,
                max_count,
                max_age_ms,
                timestamp_ms,
            )?),
        })
    }

    /// Stores actor snapshots of `stream`; a newer snapshot may free older
    /// events for purging.
    fn save_actor_snapshots(
        &mut self,
        stream: &str,
        snapshots: impl IntoIterator<Item = (u64, Bytes)>,
    ) -> Result<(), Error> {
        for (version, state) in snapshots {
            match keys::actor_snapshot(self.group, stream, version) {
                Ok(k) => self.put(&k, &state),
                Err(keys::StreamTooLong) => {
                    tracing::warn!(
                        group = self.group,
                        len = stream.len(),
                        "actor snapshot of an over-long stream id dropped"
                    );
                    return Ok(());
                }
            }
        }
        self.trim_stored(stream)
    }

    /// Trims a stream whose info is stored, with the partition's last
    /// timestamp as "now" (for entries that carry no timestamp).
    fn trim_stored(&mut self, stream: &str) -> Result<(), Error> {
        let Ok(info_key) = keys::stream_info(self.group, stream) else {
            return Ok(());
        };
        let Some(mut info) = self.stream_info(&info_key)? else {
            return Ok(());
        };
        if !retention::has_limits(&info) {
            return Ok(());
        }
        let before = info.purged_through;
        let now = self.counters.last_timestamp_ms;
        self.trim(stream, &mut info, now)?;
        if info.purged_through != before {
            self.put_encoded(&info_key, "stream info", &info)?;
        }
        Ok(())
    }

    fn set_stream_metadata(
        &mut self,
        stream: String,
        max_count: Option<u64>,
        max_age_ms: Option<u64>,
        timestamp_ms: i64,
    ) -> Result<Result<u64, Rejection>, Error> {
        let (info_key, mut info) = match self.writable_stream(&stream)? {
            Some(found) => found,
            None => return Ok(Err(Rejection::StreamTombstoned { stream })),
        };
        info.max_count = max_count;
        info.max_age_ms = max_age_ms;
        let now = timestamp_ms.max(self.counters.last_timestamp_ms);
        self.trim(&stream, &mut info, now)?;
        let version = info.version;
        self.put_encoded(&info_key, "stream info", &info)?;
        Ok(Ok(version))
    }

    /// Applies an entry's appends, in order.
    fn appends(&mut self, timestamp_ms: i64, appends: &Appends) -> Result<CommandResult, Error> {
        let views = appends.views()?;
        let mut results = Vec::with_capacity(views.len());
        for append in views {
            results.push(self.append(timestamp_ms, append, appends)?);
        }
        Ok(CommandResult::Appended(results))
    }

    /// Applies one append, read in place from `appends` (whose buffer the
    /// events the in-memory tail keeps share).
    fn append(
        &mut self,
        timestamp_ms: i64,
        append: AppendView<'_>,
        appends: &Appends,
    ) -> Result<Result<AppendOutcome, Rejection>, Error> {
        let AppendView {
            stream,
            expected,
            events,
        } = append;
        let g = self.group;
        let (info_key, mut info) = match self.writable_stream(stream)? {
            Some(found) => found,
            None => {
                let stream = stream.to_owned();
                return Ok(Err(Rejection::StreamTombstoned { stream }));
            }
        };

        // Event ids are indexed per stream, so a stream never written has
        // none to find: skip the lookup (a miss in every level's filter).
        if let Some(first) = events.first().filter(|_| info.version > 0) {
            let id_key = keys::event_id(g, stream, first.id)
                .map_err(|_| Error::StreamIdTooLong { len: stream.len() })?;
            if let Some(v) = self.get(&id_key)? {
                let version = decode_u64("event-id index", &v)?;
                let ids: Vec<&str> = events.iter().map(|e| e.id).collect();
                return self.earlier_result(stream, version, &ids);
            }
        }

        let actual = info.version;
        if !expected_matches(expected, &info) {
            return Ok(Err(Rejection::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected,
                actual,
            }));
        }

        let mut counters = self.counters;
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
        let too_long = |_| Error::StreamIdTooLong { len: stream.len() };
        for e in &events {
            version += 1;
            position += 1;
            let w = &mut self.writes;
            // Partition-log entries are only ever read by scans of the
            // store, never within an apply.
            let key = w.add_slice(&keys::position_bytes(g, position));
            let value = w
                .add(|out| keys::push_event_ref(out, stream, version))
                .map_err(too_long)?;
            w.put_unread(key, value);
            let id = &mut self.stored_id;
            id.clear();
            stored_id::encode_into(e.id, id);
            let key = w
                .add(|out| keys::push_stored_event_id(out, g, stream, id))
                .map_err(too_long)?;
            let value = w.add_slice(&version.to_be_bytes());
            w.put(key, Some(value));
            let key = w
                .add(|out| keys::push_stream_event(out, g, stream, version))
                .map_err(too_long)?;
            let value = w.add(|out| push_body(out, e, id, timestamp_ms, position))?;
            w.put(key, Some(value));
            if keys::is_time_indexed(version) {
                let key = keys::time_index(g, stream, timestamp_ms, version).map_err(too_long)?;
                let key = w.add_slice(&key);
                let value = w.add_slice(&[]);
                w.put_unread(key, value);
            }
            if self.appended.keeps_next() {
                self.appended.push(KeptEvent::in_buffer(
                    appends.buffer(),
                    stream,
                    e,
                    timestamp_ms,
                    version,
                    position,
                ));
            }
        }

        info.version = version;
        if let Some(last) = events.last() {
            info.last_event_id = last.id.to_owned();
        }
        info.last_event_timestamp_ms = timestamp_ms;
        // Writing un-deletes a soft-deleted stream; what came before the
        // delete stays hidden behind `first_readable_version`.
        info.deleted = false;
        if info.first_readable_version == 0 {
            info.first_readable_version = 1;
        }
        self.trim(stream, &mut info, timestamp_ms)?;
        self.put_encoded(&info_key, "stream info", &info)?;

        counters.last_position = position;
        counters.last_timestamp_ms = timestamp_ms;
        self.counters = counters;
        self.counters_moved = true;

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
            let Some(recorded) = self.event(stream, v)? else {
                return conflict();
            };
            if recorded.id != *id {
                return conflict();
            }
            let pos = recorded.position;
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
        let (info_key, mut info) = match self.writable_stream(&stream)? {
            Some(found) => found,
            None => return Ok(Err(Rejection::StreamTombstoned { stream })),
        };
        if !expected_matches(expected, &info) {
            let actual = info.version;
            return Ok(Err(Rejection::WrongExpectedVersion {
                stream,
                expected,
                actual,
            }));
        }
        if hard {
            // A tombstone is forever: its events go now (compaction then
            // frees the disk); only the stream info stays, to refuse writes.
            self.purge_through(&stream, &mut info, u64::MAX)?;
        }
        info.deleted = true;
        info.tombstoned = hard;
        info.first_readable_version = info.version + 1;
        let version = info.version;
        self.put_encoded(&info_key, "stream info", &info)?;
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
