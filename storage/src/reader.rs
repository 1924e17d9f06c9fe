//! [`Reader`]: reads of the applied state of any group.

use bytes::Bytes;
use openraft::LogId;

use crate::apply::{read_applied, read_counters};
use crate::command::GroupId;
use crate::error::Error;
use crate::event::{ActorSnapshot, EventRef, RecordedEvent, StreamInfo};
use crate::keys::{self, StreamTooLong};
use crate::retention;
use crate::store::{CF_SM, Store, View};
use crate::type_config::NodeId;

/// Events of a stretch of a partition log read through a stream filter.
#[derive(Debug, Default)]
pub struct LogPage {
    /// The events kept, in position order.
    pub events: Vec<RecordedEvent>,
    /// The last position read, kept or not (`None`: nothing was there);
    /// the next page starts after it.
    pub last_position: Option<u64>,
}

/// Reads a group's *applied* state straight from RocksDB.
///
/// Every call sees one consistent point in time (a RocksDB snapshot): never
/// half of an applied entry. Calls block on disk I/O; async callers should use
/// `spawn_blocking`. Reads on a follower may lag the leader. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Reader {
    store: Store,
}

fn too_long(stream: &str) -> impl Fn(StreamTooLong) -> Error + '_ {
    move |_| Error::StreamIdTooLong { len: stream.len() }
}

impl Reader {
    pub(crate) fn new(store: Store) -> Reader {
        Reader { store }
    }

    /// Sees `group`'s last applied log index move (see [`Store::watch_applied`]).
    pub fn watch_applied(&self, group: GroupId) -> tokio::sync::watch::Receiver<u64> {
        self.store.watch_applied(group)
    }

    /// The stream's info, or `None` if it was never written nor deleted.
    /// Deleted streams are reported, with their `deleted`/`tombstoned` flags.
    pub fn stream_info(&self, group: GroupId, stream: &str) -> Result<Option<StreamInfo>, Error> {
        let key = keys::stream_info(group, stream).map_err(too_long(stream))?;
        View::new(&self.store)
            .get(CF_SM, &key)?
            .map(|b| StreamInfo::decode(&b))
            .transpose()
    }

    /// The version at which event `id` was written to `stream`, if it was
    /// (and its index entry was not purged with it).
    pub fn event_version(
        &self,
        group: GroupId,
        stream: &str,
        id: &str,
    ) -> Result<Option<u64>, Error> {
        let key = keys::event_id(group, stream, id).map_err(too_long(stream))?;
        View::new(&self.store)
            .get(CF_SM, &key)?
            .map(|b| crate::error::decode_u64("event-id index", &b))
            .transpose()
    }

    /// Events of `stream` with version `>= from_version` (0 is treated as 1),
    /// at most `limit` of them, in version order. Events from before a soft
    /// delete are never returned, nor those beyond the stream's `max-count`
    /// or `max-age` (measured against this node's clock now), except that
    /// an actor stream's events above its newest actor snapshot always are.
    ///
    /// A stream that never existed reads as empty; a soft-deleted or
    /// tombstoned one fails with [`Error::StreamDeleted`].
    pub fn read_stream(
        &self,
        group: GroupId,
        stream: &str,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        self.read_stream_at(group, stream, from_version, limit, now_ms())
    }

    /// [`Reader::read_stream`] with `max-age` measured against `now_ms`
    /// (ms since the epoch) instead of this node's clock.
    pub fn read_stream_at(
        &self,
        group: GroupId,
        stream: &str,
        from_version: u64,
        limit: usize,
        now_ms: i64,
    ) -> Result<Vec<RecordedEvent>, Error> {
        let mut events = Vec::new();
        self.visit_stream_at(group, stream, from_version, limit, now_ms, |e| {
            events.push(e.to_recorded(stream.to_owned())?);
            Ok(true)
        })?;
        Ok(events)
    }

    /// The events [`Reader::read_stream`] returns, handed to `visit` one at a
    /// time as borrowed from storage, until it returns `Ok(false)`: a fold
    /// over a long stream copies nothing. One consistent point in time.
    pub fn visit_stream(
        &self,
        group: GroupId,
        stream: &str,
        from_version: u64,
        limit: usize,
        visit: impl FnMut(EventRef<'_>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        self.visit_stream_at(group, stream, from_version, limit, now_ms(), visit)
    }

    fn visit_stream_at(
        &self,
        group: GroupId,
        stream: &str,
        from_version: u64,
        limit: usize,
        now_ms: i64,
        mut visit: impl FnMut(EventRef<'_>) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let view = View::new(&self.store);
        let Some((info, first)) = self.readable(&view, group, stream, now_ms)? else {
            return Ok(());
        };
        let from = from_version.max(first);
        if limit == 0 || from > info.version {
            return Ok(());
        }
        let mut visited = 0;
        scan_events(&view, group, stream, from, |event| {
            visited += 1;
            Ok(visit(event)? && visited < limit)
        })
    }

    /// The stream's info and the first version its reads return (see
    /// [`Reader::read_stream`]), or `None` if it was never written.
    fn readable(
        &self,
        view: &View<'_>,
        group: GroupId,
        stream: &str,
        now_ms: i64,
    ) -> Result<Option<(StreamInfo, u64)>, Error> {
        let info_key = keys::stream_info(group, stream).map_err(too_long(stream))?;
        let Some(info) = view.get(CF_SM, &info_key)? else {
            return Ok(None);
        };
        let info = StreamInfo::decode(&info)?;
        if info.deleted || info.tombstoned {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
                tombstoned: info.tombstoned,
            });
        }
        let mut first = info.first_readable_version.max(1);
        if retention::has_limits(&info) {
            let snapshot = self.actor_snapshot_in(view, group, stream, u64::MAX)?;
            let retained =
                retention::retained_from(&info, snapshot.map(|s| s.version), now_ms, |v| {
                    timestamp_of(view, group, stream, v)
                })?;
            first = first.max(retained);
        }
        Ok(Some((info, first)))
    }

    /// The last version of `stream` written at or before `at_ms` (ms since
    /// the epoch) among those [`Reader::read_stream`] returns, or `None` if
    /// none was. Timestamps never decrease along a stream: one seek in its
    /// time index, then a scan of at most
    /// [`TIME_INDEX_EVERY`](keys::TIME_INDEX_EVERY) events (of every event
    /// of a stream written before the index existed).
    pub fn version_at(
        &self,
        group: GroupId,
        stream: &str,
        at_ms: i64,
    ) -> Result<Option<u64>, Error> {
        let view = View::new(&self.store);
        let Some((info, first)) = self.readable(&view, group, stream, now_ms())? else {
            return Ok(None);
        };
        if first > info.version {
            return Ok(None);
        }
        let prefix = keys::time_index_prefix(group, stream).map_err(too_long(stream))?;
        let mut end = keys::time_index(group, stream, at_ms, u64::MAX).map_err(too_long(stream))?;
        end.push(0); // make the bound inclusive of `at_ms`
        let indexed = view
            .last_in(CF_SM, &prefix, &end)?
            .and_then(|(k, _)| keys::trailing_u64(&k));
        let from = indexed.map_or(first, |v| v.max(first));
        let mut found = None;
        scan_events(&view, group, stream, from, |event| {
            if event.timestamp_ms > at_ms {
                return Ok(false);
            }
            found = Some(event.version);
            Ok(true)
        })?;
        Ok(found)
    }

    /// The newest actor snapshot of `stream` with version `<= max_version`
    /// (`u64::MAX` = the newest). Every saved snapshot is kept.
    pub fn actor_snapshot(
        &self,
        group: GroupId,
        stream: &str,
        max_version: u64,
    ) -> Result<Option<ActorSnapshot>, Error> {
        self.actor_snapshot_in(&View::new(&self.store), group, stream, max_version)
    }

    fn actor_snapshot_in(
        &self,
        view: &View<'_>,
        group: GroupId,
        stream: &str,
        max_version: u64,
    ) -> Result<Option<ActorSnapshot>, Error> {
        let prefix = keys::actor_snapshots_prefix(group, stream).map_err(too_long(stream))?;
        let mut end = keys::actor_snapshot(group, stream, max_version).map_err(too_long(stream))?;
        end.push(0); // make the bound inclusive of `max_version`
        let Some((k, v)) = view.last_in(CF_SM, &prefix, &end)? else {
            return Ok(None);
        };
        if k.len() != prefix.len() + 8 {
            return Err(Error::Corrupt(format!(
                "actor snapshot key of `{stream}` has a bad length"
            )));
        }
        let version =
            keys::trailing_u64(&k).ok_or_else(|| Error::Corrupt("actor snapshot key".into()))?;
        Ok(Some(ActorSnapshot {
            version,
            state: Bytes::from(v),
        }))
    }

    /// The partition log in position order from `from_position` (1-based; 0 is
    /// treated as 1), at most `limit` events. Positions increase; they have
    /// gaps where events were purged (hard delete, `max-count`, `max-age`).
    /// Events of soft-deleted streams are included (they are hidden only from
    /// stream reads).
    pub fn read_partition_log(
        &self,
        group: GroupId,
        from_position: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, Error> {
        Ok(self
            .read_partition_log_where(group, from_position, limit, |_| true)?
            .events)
    }

    /// [`Reader::read_partition_log_where`] from memory alone: the page when
    /// the partition's in-memory tail of recently applied events holds those
    /// positions, `None` when RocksDB would have to be read. It never waits
    /// for I/O, so an async task may call it where a read of RocksDB would
    /// go to the blocking pool.
    pub fn read_recent_partition_log_where(
        &self,
        group: GroupId,
        from_position: u64,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Option<LogPage> {
        if limit == 0 {
            return Some(LogPage::default());
        }
        self.store
            .inner
            .recent
            .read_where(group, from_position.max(1), limit, keep)
    }

    /// The next `limit` positions of the partition log from `from_position`
    /// (as [`Reader::read_partition_log`]), keeping only the events of the
    /// streams `keep` names: the others are passed over by their
    /// partition-log entry alone, their bodies never read nor decoded. A
    /// reader interested in a few streams (a projection of `user-` streams)
    /// then pays little for the rest.
    pub fn read_partition_log_where(
        &self,
        group: GroupId,
        from_position: u64,
        limit: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Result<LogPage, Error> {
        if limit == 0 {
            return Ok(LogPage::default());
        }
        let from_position = from_position.max(1);
        if let Some(page) = self.read_recent_partition_log_where(group, from_position, limit, &keep)
        {
            return Ok(page);
        }
        let start = keys::position(group, from_position);
        let view = View::new(&self.store);
        let (mut located, mut scanned, mut last_position) = (Vec::new(), 0, None);
        view.scan(CF_SM, &start, &keys::positions_end(group), |k, v| {
            let found = keys::stream_event_of_ref(group, v).ok_or_else(|| {
                Error::Corrupt(format!("partition log entry {k:?} names no event: {v:?}"))
            })?;
            scanned += 1;
            last_position = keys::trailing_u64(k);
            if keep(&found.1) {
                located.push(found);
            }
            Ok(scanned < limit)
        })?;
        let (keys, names): (Vec<_>, Vec<_>) = located
            .into_iter()
            .map(|(key, stream, version)| (key, (stream, version)))
            .unzip();
        let bodies = view.multi_get(CF_SM, &keys)?;
        let events = names
            .into_iter()
            .zip(bodies)
            .map(|((stream, version), body)| {
                let body = body.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "partition log names v{version} of `{stream}`, which is missing"
                    ))
                })?;
                EventRef::decode(version, &body)?.to_recorded(stream)
            })
            .collect::<Result<_, Error>>()?;
        Ok(LogPage {
            events,
            last_position,
        })
    }

    /// The last position written in the partition's log (0 = none).
    pub fn last_position(&self, group: GroupId) -> Result<u64, Error> {
        Ok(read_counters(&self.store, group)?.last_position)
    }

    /// The last log id the group's state machine applied (`None` = nothing yet).
    /// Everything up to it is visible to this reader.
    pub fn applied_log_id(&self, group: GroupId) -> Result<Option<LogId<NodeId>>, Error> {
        Ok(read_applied(&self.store, group)?.last_applied)
    }

    /// The value of `key` in the group's key-value map (written by
    /// [`Command::MetaPut`](crate::Command::MetaPut)).
    pub fn meta_get(&self, group: GroupId, key: &str) -> Result<Option<Bytes>, Error> {
        Ok(View::new(&self.store)
            .get(CF_SM, &keys::meta(group, key))?
            .map(Bytes::from))
    }

    /// Every entry of the group's key-value map whose key starts with
    /// `prefix`, in key (bytewise) order.
    pub fn meta_scan(&self, group: GroupId, prefix: &str) -> Result<Vec<(String, Bytes)>, Error> {
        let start = keys::meta(group, prefix);
        let end = keys::prefix_end(&start).unwrap_or_else(|| keys::meta_end(group));
        let mut out = Vec::new();
        View::new(&self.store).scan(CF_SM, &start, &end, |k, v| {
            let key = k
                .get(keys::META_KEY_OFFSET..)
                .ok_or_else(|| Error::Corrupt("metadata key too short".into()))?;
            let key = String::from_utf8(key.to_vec())
                .map_err(|e| Error::Corrupt(format!("metadata key: {e}")))?;
            out.push((key, Bytes::copy_from_slice(v)));
            Ok(true)
        })?;
        Ok(out)
    }
}

/// Milliseconds since the epoch by this node's clock.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Hands the events of `stream` in `view` from version `from` on to `visit`,
/// in version order, until it returns `Ok(false)`.
fn scan_events(
    view: &View<'_>,
    group: GroupId,
    stream: &str,
    from: u64,
    mut visit: impl FnMut(EventRef<'_>) -> Result<bool, Error>,
) -> Result<(), Error> {
    let start = keys::stream_event(group, stream, from).map_err(too_long(stream))?;
    let end = keys::stream_events_end(group, stream).map_err(too_long(stream))?;
    view.scan(CF_SM, &start, &end, |k, v| {
        let version = keys::trailing_u64(k)
            .ok_or_else(|| Error::Corrupt(format!("`{stream}`: event key {k:?}")))?;
        visit(EventRef::decode(version, v)?)
    })
}

/// Timestamp of the event at `version` of `stream` in `view`, if stored.
fn timestamp_of(
    view: &View<'_>,
    group: GroupId,
    stream: &str,
    version: u64,
) -> Result<Option<i64>, Error> {
    let key = keys::stream_event(group, stream, version).map_err(too_long(stream))?;
    match view.get(CF_SM, &key)? {
        Some(body) => Ok(Some(EventRef::decode(version, &body)?.timestamp_ms)),
        None => Ok(None),
    }
}
