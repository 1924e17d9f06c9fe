//! [`LogStore`]: openraft's `RaftLogStorage` for one group, in the `log`
//! column family of the node's [`Store`].

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader,
    StorageError, Vote,
};
use rocksdb::WriteBatch;

use crate::command::GroupId;
use crate::entry_cache::EntryCache;
use crate::error::{Error, blocking, decode, encode, encode_onto};
use crate::keys;
use crate::log_durability::LogDurability;
use crate::store::{CF_LOG, Store, View};
use crate::type_config::{NodeId, TypeConfig};

/// The Raft log and vote of one group.
///
/// It does not save the committed log id (openraft's optional
/// `save_committed`): every apply already persists its last applied log id
/// with its effects, in the same write-ahead log as the entries, so a
/// restarted replica resumes from what it applied and learns the commit
/// point from its leader. Saving it was one more RocksDB write per entry on
/// every replica.
///
/// Guarantees: an appended entry is readable as soon as `append` returns and
/// durable (fsynced) before its `LogFlushed` callback is called, with one
/// fsync shared by all appends waiting at that moment, across all groups
/// (except the leader's own appends on a log store made with
/// [`Store::leader_log_store`]: reported once written, and waited for by
/// [`crate::LogDurability`] instead); a
/// saved vote is durable when `save_vote` returns; truncation is durable when
/// `truncate` returns; purging may become durable later (it is idempotent).
/// Cheap to clone; clones see the same log, and share a cache of its newest
/// entries (so use one `LogStore` per group at a time, with its clones).
#[derive(Clone, Debug)]
pub struct LogStore {
    store: Store,
    group: GroupId,
    cache: Arc<Mutex<EntryCache>>,
    /// The buffer appends encode their entries in, kept between appends.
    scratch: Arc<Mutex<Vec<u8>>>,
    /// This node, when its appends may be reported before their fsync
    /// while it leads (see `log_durability`).
    me: Option<NodeId>,
    durability: LogDurability,
}

/// Largest encoding buffer a log keeps between appends: a Raft entry holds
/// at most ~1 MiB of appends (`cairn-cluster`'s proposer).
const MAX_KEPT_SCRATCH: usize = 2 << 20;

fn log_err(e: Error, verb: ErrorVerb) -> StorageError<NodeId> {
    e.into_storage_error(ErrorSubject::Logs, verb)
}

fn vote_err(e: Error, verb: ErrorVerb) -> StorageError<NodeId> {
    e.into_storage_error(ErrorSubject::Vote, verb)
}

impl LogStore {
    pub(crate) fn new(store: Store, group: GroupId, me: Option<NodeId>) -> LogStore {
        let durability = store.log_durability(group);
        LogStore {
            store,
            group,
            cache: Arc::default(),
            scratch: Arc::default(),
            me,
            durability,
        }
    }

    fn cache(&self) -> MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The group this log belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    fn get_value<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        key: &[u8],
    ) -> Result<Option<T>, Error> {
        match self.store.db().get_cf(self.store.cf(CF_LOG), key)? {
            Some(bytes) => Ok(Some(decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    fn read_entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let g = self.group;
        let end_key = match end {
            Some(end) => keys::log_entry(g, end),
            None => keys::log_entries_end(g),
        };
        let mut out = Vec::new();
        if end.is_some_and(|end| end <= start) {
            return Ok(out);
        }
        View::new(&self.store).scan(CF_LOG, &keys::log_entry(g, start), &end_key, |_, v| {
            out.push(decode::<Entry<TypeConfig>>("log entry", v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, Error> {
        let g = self.group;
        let last_purged: Option<LogId<NodeId>> =
            self.get_value("last purged log id", &keys::last_purged(g))?;
        let last = View::new(&self.store).last_in(
            CF_LOG,
            &keys::log_entry(g, 0),
            &keys::log_entries_end(g),
        )?;
        let last_log_id = match last {
            Some((_, v)) => Some(decode::<Entry<TypeConfig>>("log entry", &v)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.checked_add(1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        if let Some(cached) = end.and_then(|end| self.cache().get(start, end)) {
            return Ok(cached);
        }
        let this = self.clone();
        blocking(move || this.read_entries(start, end))
            .await
            .map_err(|e| log_err(e, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let this = self.clone();
        blocking(move || this.log_state())
            .await
            .map_err(|e| log_err(e, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        let vote = *vote;
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_cf(
                this.store.cf(CF_LOG),
                keys::vote(this.group),
                encode("vote", &vote)?,
            );
            this.store.write(batch, true)
        })
        .await
        .map_err(|e| vote_err(e, ErrorVerb::Write))?;
        self.durability.vote_saved(self.leads(&vote));
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let this = self.clone();
        let vote: Option<Vote<NodeId>> =
            blocking(move || this.get_value("vote", &keys::vote(this.group)))
                .await
                .map_err(|e| vote_err(e, ErrorVerb::Read))?;
        // At start: a replica that led before it stopped leads its term
        // again at once, without saving a vote.
        if let Some(vote) = &vote {
            self.durability.set_leading(self.leads(vote));
        }
        Ok(vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let write_err = |e| log_err(e, ErrorVerb::Write);
        // A membership change goes the long way: openraft moves on to the
        // next step of a change once it counts one committed, and only the
        // outputs of ordinary entries wait on `durability`.
        let membership = entries
            .iter()
            .any(|entry| matches!(entry.payload, EntryPayload::Membership(_)));
        let early = entries
            .first()
            .filter(|_| self.durability.leading() && !membership);
        let Some(first) = early.map(|entry| entry.log_id.index) else {
            let on_durable: crate::syncer::FlushCallback =
                Box::new(move |r| callback.log_io_completed(r));
            return self
                .append_entries(entries, on_durable)
                .await
                .map_err(write_err);
        };
        // The leader's own entries: reported as soon as they are written;
        // what must not run before their fsync waits on `durability`.
        let durability = self.durability.clone();
        let id = durability.written(first);
        let on_durable: crate::syncer::FlushCallback = Box::new(move |r| durability.flushed(id, r));
        if let Err(e) = self.append_entries(entries, on_durable).await {
            // Never to be durable: whatever waits for it fails too.
            let failed = std::io::Error::other(e.to_string());
            self.durability.flushed(id, Err(failed));
            return Err(write_err(e));
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        blocking(move || {
            let g = this.group;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(
                this.store.cf(CF_LOG),
                keys::log_entry(g, log_id.index),
                keys::log_entries_end(g),
            );
            this.store.write(batch, true)?;
            this.durability.synced();
            this.cache().truncate_from(log_id.index);
            Ok(())
        })
        .await
        .map_err(|e| log_err(e, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let this = self.clone();
        blocking(move || {
            let g = this.group;
            let cf = this.store.cf(CF_LOG);
            let end = match log_id.index.checked_add(1) {
                Some(next) => keys::log_entry(g, next),
                None => keys::log_entries_end(g),
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(
                cf,
                keys::last_purged(g),
                encode("last purged log id", &log_id)?,
            );
            batch.delete_range_cf(cf, keys::log_entry(g, 0), end);
            this.cache().purge_upto(log_id.index);
            this.store.write(batch, false)
        })
        .await
        .map_err(|e| log_err(e, ErrorVerb::Delete))
    }
}

/// Log appends of up to this many payload bytes are written on the Raft
/// core's own task instead of the blocking pool: an unsynced RocksDB write
/// (a memtable insert and a `write` to the WAL file, the fsync comes later
/// on the syncer thread) of a few KiB takes microseconds, where the hop to a
/// pool thread and back costs two context switches, on every node, for
/// every entry. Bigger appends (a follower catching up), and any write
/// RocksDB would stall, still go to the pool, so that none holds a runtime
/// worker for long.
const INLINE_APPEND_BYTES: usize = 256 << 10;

/// Roughly the bytes `entries` carry (their events' payloads).
fn entries_size(entries: &[Entry<TypeConfig>]) -> usize {
    entries
        .iter()
        .map(|entry| match &entry.payload {
            EntryPayload::Normal(command) => command.size(),
            _ => 0,
        })
        .sum()
}

impl LogStore {
    /// Whether `vote` makes this node the leader of its term (a committed
    /// vote naming it): what it appends under it is its own.
    fn leads(&self, vote: &Vote<NodeId>) -> bool {
        self.me.is_some() && vote.is_committed() && vote.leader_id().voted_for() == self.me
    }

    /// Writes `entries` and queues `on_durable` for the fsync that covers
    /// them: on the Raft core's task when small (see
    /// [`INLINE_APPEND_BYTES`]), else on the blocking pool.
    async fn append_entries(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        on_durable: crate::syncer::FlushCallback,
    ) -> Result<(), Error> {
        if entries_size(&entries) <= INLINE_APPEND_BYTES {
            let (batch, sizes) = self.batch(&entries)?;
            if self.store.write_unless_stalled(batch)? {
                return self.written(entries, sizes, on_durable);
            }
        }
        let this = self.clone();
        blocking(move || this.append_then(entries, on_durable)).await
    }

    /// Writes `entries` (readable at once, not yet durable) and queues
    /// `on_durable` for the syncer thread, which calls it after the fsync
    /// that covers them.
    pub(crate) fn append_then(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        on_durable: crate::syncer::FlushCallback,
    ) -> Result<(), Error> {
        let (batch, sizes) = self.batch(&entries)?;
        if !entries.is_empty() {
            self.store.write(batch, false)?;
        }
        self.written(entries, sizes, on_durable)
    }

    /// After `entries` were written: keeps them in the cache and queues
    /// `on_durable` for the fsync that covers them.
    fn written(
        &self,
        entries: Vec<Entry<TypeConfig>>,
        sizes: Vec<usize>,
        on_durable: crate::syncer::FlushCallback,
    ) -> Result<(), Error> {
        self.cache().append(entries.into_iter().zip(sizes));
        self.store.submit_flush(on_durable)
    }

    /// The write of `entries` to the log, and each one's encoded size.
    /// Fails once the store is shut down.
    fn batch(&self, entries: &[Entry<TypeConfig>]) -> Result<(WriteBatch, Vec<usize>), Error> {
        self.store.check_running()?;
        let cf = self.store.cf(CF_LOG);
        let mut batch = WriteBatch::default();
        let mut sizes = Vec::with_capacity(entries.len());
        // One buffer for all, and for the next append too: the batch copies
        // each value. A new one per append grew by doubling to the size of
        // an entry (up to 1 MiB), each time into fresh memory the kernel
        // zeroed first: this function took 2.6% of the nodes' CPU under
        // 100-event appends, 0.4% with the buffer kept.
        let mut scratch = self.scratch.lock().unwrap_or_else(PoisonError::into_inner);
        let mut encoded = std::mem::take(&mut *scratch);
        for entry in entries {
            encoded.clear();
            encode_onto("log entry", entry, &mut encoded)?;
            sizes.push(encoded.len());
            batch.put_cf(
                cf,
                keys::log_entry(self.group, entry.log_id.index),
                &encoded,
            );
        }
        // A catching-up follower's batch may be far bigger: not kept.
        if encoded.capacity() <= MAX_KEPT_SCRATCH {
            *scratch = encoded;
        }
        Ok((batch, sizes))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn blank(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Many concurrent appends from several groups all complete, are
    /// readable, and share fsyncs: fewer fsyncs than appends.
    #[test]
    fn group_commit_shares_fsyncs_across_groups() -> anyhow::Result<()> {
        const GROUPS: u32 = 8;
        const APPENDS: u64 = 200;

        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let before = store.sync_count();
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel::<std::io::Result<()>>();

        std::thread::scope(|s| {
            for g in 0..GROUPS {
                let log = store.log_store(g);
                let tx = tx.clone();
                let done = Arc::clone(&done);
                s.spawn(move || {
                    for i in 1..=APPENDS {
                        let tx = tx.clone();
                        let done = Arc::clone(&done);
                        log.append_then(
                            vec![blank(i)],
                            Box::new(move |r| {
                                done.fetch_add(1, Ordering::SeqCst);
                                let _ = tx.send(r);
                            }),
                        )
                        .expect("append");
                    }
                });
            }
        });
        drop(tx);
        let results: Vec<_> = rx.iter().collect();
        let total = (GROUPS as usize) * (APPENDS as usize);
        assert_eq!(results.len(), total, "every callback is called once");
        assert!(results.iter().all(|r| r.is_ok()));
        assert_eq!(done.load(Ordering::SeqCst), total);

        let syncs = store.sync_count() - before;
        assert!(syncs >= 1);
        assert!(
            syncs < total as u64,
            "{syncs} fsyncs for {total} appends: no group commit"
        );

        for g in 0..GROUPS {
            let entries = store.log_store(g).read_entries(0, None)?;
            assert_eq!(entries.len() as u64, APPENDS);
            assert_eq!(entries.last().map(|e| e.log_id.index), Some(APPENDS));
        }
        Ok(())
    }

    /// Shutting down completes every queued callback, then refuses appends.
    #[test]
    fn shutdown_flushes_pending_then_refuses() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let log = store.log_store(3);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 1..=50 {
            let tx = tx.clone();
            log.append_then(vec![blank(i)], Box::new(move |r| drop(tx.send(r))))?;
        }
        drop(tx);
        store.shutdown();
        let results: Vec<_> = rx.try_iter().collect();
        assert_eq!(
            results.len(),
            50,
            "all pending callbacks completed before shutdown returned"
        );
        assert!(matches!(
            log.append_then(vec![blank(51)], Box::new(|_| ())),
            Err(Error::ShutDown)
        ));
        Ok(())
    }
}
