//! [`Store`]: the node's one RocksDB, shared by every Raft group on the node.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DB, Options, ReadOptions, SnapshotWithThreadMode,
    WriteBatch, WriteOptions,
};
use tokio::sync::watch;

use crate::applied_watch::AppliedWatch;
use crate::command::GroupId;
use crate::direct_io;
use crate::error::Error;
use crate::keys;
use crate::log_durability::LogDurability;
use crate::log_store::LogStore;
use crate::reader::Reader;
use crate::recent::Recent;
use crate::state_machine::StateMachine;
use crate::store_options;
use crate::syncer::{FlushCallback, Syncer};
use crate::type_config::NodeId;

/// Column family of the Raft logs, votes and committed ids.
pub(crate) const CF_LOG: &str = "log";
/// Column family of the groups' state machines (the event store).
pub(crate) const CF_SM: &str = "sm";
/// Column family of the latest Raft snapshot of each group.
pub(crate) const CF_SNAP: &str = "snap";
/// Column family of node-local identity records.
pub(crate) const CF_NODE: &str = "node";
/// Column family of node-local projection read models and checkpoints.
pub(crate) const CF_PROJ: &str = "proj";

const ALL_CFS: [&str; 5] = [CF_LOG, CF_SM, CF_SNAP, CF_NODE, CF_PROJ];

/// The directory, in the store's, of snapshots on their way in or out
/// (`snapshot_bytes`); emptied when the store opens.
const SNAPSHOT_FILES: &str = "snapshot-files";

/// What [`Store::compact`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// Bytes of SST files before the flush and compaction.
    pub sst_bytes_before: u64,
    /// Bytes of SST files after.
    pub sst_bytes_after: u64,
    /// Bytes of SST files after, by column family (`sm`: the event store,
    /// `log`: Raft logs, `proj`: read models, `snap`, `node`).
    pub sst_bytes_by_family: BTreeMap<String, u64>,
}

/// The node's one RocksDB, holding the Raft log and the state machine of every
/// group on the node (the `keys` module documents the layout).
///
/// Cheap to clone: clones share the database and one syncer thread, which
/// group-commits log fsyncs across all groups. The database closes, after a
/// final WAL fsync, when the last clone (including those inside
/// [`LogStore`], [`StateMachine`] and [`Reader`]) is dropped; only then is
/// the directory's RocksDB lock released.
///
/// # Reopening in the same process
/// After `Raft::shutdown` returns, openraft's detached tasks (the state
/// machine worker, a snapshot build, replication streams) and storage calls
/// they abandoned on the blocking pool may still hold clones for a moment,
/// so dropping your own clone does not mean the database is closed. To
/// reopen the same directory (restarting a node in-process), shut the Raft
/// groups down, drop your other handles, then `store.close(..).await`:
/// when it returns `Ok` the database is closed and [`Store::open`] succeeds.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    // Declared before `db`: dropping it joins the syncer thread, which must
    // finish before the database closes.
    syncer: Syncer,
    pub(crate) db: Arc<DB>,
    /// Serializes replacing a group's stored Raft snapshot.
    pub(crate) snapshot_lock: Mutex<()>,
    /// The newest applied events of each group.
    pub(crate) recent: Recent,
    /// The last applied log index of each group.
    pub(crate) applied: AppliedWatch,
    /// Each group's log appends reported before their fsync.
    durability: Mutex<HashMap<GroupId, LogDurability>>,
    /// The event store's options, for the SST files snapshots install.
    sm_options: Options,
    /// Where snapshots on their way in or out are kept.
    snapshot_files: PathBuf,
    path: PathBuf,
    // Declared last, so dropped after `db` is closed: never sent on, its
    // drop is what wakes [`Store::close`].
    closed: watch::Sender<()>,
}

/// Empties `dir` (files a crash left there), creating it if missing.
fn clear_dir(dir: &Path) -> Result<(), Error> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::SnapshotFile(e)),
        _ => {}
    }
    std::fs::create_dir_all(dir).map_err(Error::SnapshotFile)
}

impl Store {
    /// Opens the database at `path`, creating it (and any missing column
    /// family) if needed, and starts the log syncer thread.
    ///
    /// Fails with [`Error::Rocks`] if the directory cannot be used, e.g. when
    /// another process holds it open, or this process still does: a clone of
    /// an earlier `Store` on it is still alive (see [`Store::close`]).
    pub fn open(path: &Path) -> Result<Store, Error> {
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_max_background_jobs(2);
        // Many writers at once (log appends and applies of every group):
        // pipelined, one write group's memtable inserts overlap the next
        // one's WAL write; and a writer waiting its turn sleeps rather than
        // spinning, which on a busy machine only takes a core from the
        // writer it waits for. Node CPU per 100-event append at 16 writers,
        // three alternated pairs: 3,823 / 3,709 / 3,816 µs without, 3,684 /
        // 3,326 / 3,501 with; one pair at 64 writers went the other way
        // (4,535 against 4,824), single appends at 256 writers were even.
        db_opts.set_enable_pipelined_write(true);
        db_opts.set_enable_write_thread_adaptive_yield(false);
        // SST files written past the page cache where the directory takes
        // direct I/O (see `direct_io`). RocksDB creates a missing directory
        // itself, but the probe needs it now; should creating it fail,
        // the probe answers no and RocksDB reports why.
        let _ = std::fs::create_dir_all(path);
        let direct = direct_io::supported(path);
        db_opts.set_use_direct_io_for_flush_and_compaction(direct);
        tracing::info!(path = %path.display(), direct, "direct I/O for flushes and compactions");
        // Compactions at the lowest CPU priority: on a busy machine they run
        // in the time left over by reads and writes instead of competing
        // with them. Flushes (the high-priority pool) keep their priority, so
        // memtables are never held back. Should compactions fall behind
        // under sustained writes, RocksDB's own L0 slowdown paces the
        // writes, as it would without this.
        let mut env = rocksdb::Env::new()?;
        env.lower_thread_pool_cpu_priority();
        db_opts.set_env(&env);
        // RocksDB's own info log: at its default level it grew by ~16 MB per
        // node while the storage benchmark wrote 200k events (81 bytes per
        // event, half of the event store itself). Warnings and errors only,
        // in at most 4 files of 8 MiB.
        db_opts.set_log_level(rocksdb::LogLevel::Warn);
        db_opts.set_max_log_file_size(8 << 20);
        db_opts.set_keep_log_file_num(4);

        let families = store_options::Families::new();
        let cfs = ALL_CFS.map(|name| ColumnFamilyDescriptor::new(name, families.of(name)));
        let db = Arc::new(DB::open_cf_descriptors(&db_opts, path, cfs)?);
        store_options::delay_bottommost_rewrites(&db, &ALL_CFS)?;
        crate::format::check(&db, path)?;
        let snapshot_files = path.join(SNAPSHOT_FILES);
        clear_dir(&snapshot_files)?;
        let syncer = Syncer::start(Arc::clone(&db))
            .map_err(|e| Error::Task(format!("starting the log syncer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                syncer,
                db,
                snapshot_lock: Mutex::new(()),
                recent: Recent::default(),
                applied: AppliedWatch::default(),
                durability: Mutex::default(),
                sm_options: families.of(CF_SM),
                snapshot_files,
                path: path.to_path_buf(),
                closed: watch::Sender::new(()),
            }),
        })
    }

    /// The Raft log storage of `group` (created empty on first use).
    /// Every append is reported to openraft once durable.
    pub fn log_store(&self, group: GroupId) -> LogStore {
        LogStore::new(self.clone(), group, None)
    }

    /// The Raft log storage of `group` on node `me`: while `me` leads the
    /// group, its appends are reported before their fsync, and what
    /// [`Store::log_durability`] guards waits for it.
    pub fn leader_log_store(&self, group: GroupId, me: NodeId) -> LogStore {
        LogStore::new(self.clone(), group, Some(me))
    }

    /// Which of `group`'s log entries the leader reported before their
    /// fsync: its state machine waits here before applying them, and its
    /// network before sending followers a commit index that covers them.
    pub fn log_durability(&self, group: GroupId) -> LogDurability {
        let mut groups = self
            .inner
            .durability
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        groups.entry(group).or_default().clone()
    }

    /// The state machine of `group` (empty on first use). Use one at a time
    /// per group: it is the only writer of the group's applied state.
    ///
    /// Fails if the group's applied state on disk cannot be read.
    pub fn state_machine(&self, group: GroupId) -> Result<StateMachine, Error> {
        StateMachine::open(self.clone(), group)
    }

    /// Sees `group`'s last applied log index move: once per state-machine
    /// write or snapshot install, not on every turn of its Raft core as
    /// openraft's metrics do. Starts at 0 in each process.
    pub fn watch_applied(&self, group: GroupId) -> watch::Receiver<u64> {
        self.inner.applied.subscribe(group)
    }

    /// A reader of the applied state of every group.
    pub fn reader(&self) -> Reader {
        Reader::new(self.clone())
    }

    /// Reads a node-local identity record (node id, cluster id, ...).
    pub fn node_meta(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.inner.db.get_cf(self.cf(CF_NODE), key.as_bytes())?)
    }

    /// Writes a node-local identity record; it is durable (fsynced) when this returns.
    pub fn put_node_meta(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_NODE), key.as_bytes(), value);
        self.write(batch, true)
    }

    /// Forgets everything this node holds of `group`: its Raft vote and log,
    /// its applied state (events, streams, partition log, actor snapshots)
    /// and its Raft snapshot, in one synced write. For a replica the group
    /// went on without: a later replica of it here starts empty, as a new
    /// node's would, and is brought up to date by the group's leader. Call
    /// it only while no Raft instance of the group runs here.
    pub fn drop_group(&self, group: GroupId) -> Result<(), Error> {
        let (start, end) = keys::group_range(group);
        let mut batch = WriteBatch::default();
        for cf in [CF_LOG, CF_SM, CF_SNAP] {
            batch.delete_range_cf(self.cf(cf), &start, &end);
        }
        self.inner
            .recent
            .write_replacing(group, || self.write(batch, true))?;
        self.inner
            .durability
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&group);
        Ok(())
    }

    /// Diagnostic: how many WAL fsyncs the syncer thread has done. With group
    /// commit this grows more slowly than the number of log appends.
    pub fn sync_count(&self) -> u64 {
        self.inner.syncer.sync_count()
    }

    /// Stops the syncer thread after it has made every queued log append
    /// durable and completed its callback. Later log appends fail with
    /// [`Error::ShutDown`]; reads keep working until the last clone is dropped.
    /// Dropping the last clone does the same implicitly.
    pub fn shutdown(&self) {
        self.inner.syncer.shutdown();
    }

    /// Closes the database once every clone is gone, and waits for that.
    ///
    /// Stops the syncer as [`Store::shutdown`] does (every acknowledged log
    /// append is durable), drops this handle, then waits up to `wait` for
    /// all other clones to be dropped, such as those that openraft tasks
    /// still hold briefly after `Raft::shutdown`. When this returns `Ok`,
    /// the database is closed and its directory unlocked: [`Store::open`]
    /// on it succeeds. Shut the Raft groups down and drop your own
    /// [`Reader`]s and other handles first, or this waits for them.
    ///
    /// Fails with [`Error::StillOpen`] if clones remain after `wait`; the
    /// database then closes whenever the last of them is dropped.
    pub async fn close(self, wait: Duration) -> Result<(), Error> {
        let mut closed = self.inner.closed.subscribe();
        let weak = Arc::downgrade(&self.inner);
        let path = self.inner.path.clone();
        // Joining the syncer thread (its final fsync) and, if this is the
        // last clone, closing RocksDB, block: keep them off the async workers.
        tokio::task::spawn_blocking(move || {
            self.shutdown();
            drop(self);
        })
        .await
        .map_err(|e| Error::Task(format!("closing the store: {e}")))?;
        // `changed` fails once the sender, dropped last with the store's
        // state, is gone: the database is closed by then.
        match tokio::time::timeout(wait, closed.changed()).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::StillOpen {
                path,
                handles: weak.strong_count(),
            }),
        }
    }

    /// Flushes every column family's memtable and compacts it fully, so that
    /// purged and overwritten data leaves the disk. Blocks (run it off the
    /// async workers); returns the bytes of SST files before and after.
    pub fn compact(&self) -> Result<Compacted, Error> {
        let db = self.db();
        let sst_bytes = || -> Result<BTreeMap<String, u64>, Error> {
            let mut by_family = BTreeMap::new();
            for name in ALL_CFS {
                let bytes = db
                    .property_int_value_cf(self.cf(name), "rocksdb.total-sst-files-size")?
                    .unwrap_or(0);
                by_family.insert(name.to_owned(), bytes);
            }
            Ok(by_family)
        };
        let before = sst_bytes()?.values().sum();
        for name in ALL_CFS {
            let cf = self.cf(name);
            db.flush_cf(cf)?;
            let mut options = rocksdb::CompactOptions::default();
            options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
            db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
        }
        let after = sst_bytes()?;
        Ok(Compacted {
            sst_bytes_before: before,
            sst_bytes_after: after.values().sum(),
            sst_bytes_by_family: after,
        })
    }

    /// The directory the database lives in.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    // ---- crate-internal helpers ----

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    /// The event store's column-family options (an SST file written for
    /// it must carry the same filters and compression).
    pub(crate) fn sm_options(&self) -> &Options {
        &self.inner.sm_options
    }

    /// A new, empty file for a snapshot on its way in or out, open for
    /// reading and writing and deleted when dropped; `suffix` ends its name.
    pub(crate) fn snapshot_file(&self, suffix: &str) -> Result<tempfile::NamedTempFile, Error> {
        tempfile::Builder::new()
            .suffix(suffix)
            .tempfile_in(&self.inner.snapshot_files)
            .map_err(Error::SnapshotFile)
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.inner
            .db
            .cf_handle(name)
            .expect("every column family is created when the store is opened")
    }

    pub(crate) fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        Ok(self.inner.db.write_opt(batch, &opts)?)
    }

    /// Writes `batch` unsynced, unless RocksDB would make the write wait
    /// (a write stall: too many level-0 files or memtables); then writes
    /// nothing and returns `false`, so that the caller, on an async task,
    /// can hand the write to a thread that may block.
    pub(crate) fn write_unless_stalled(&self, batch: WriteBatch) -> Result<bool, Error> {
        let mut opts = WriteOptions::default();
        opts.set_no_slowdown(true);
        match self.inner.db.write_opt(batch, &opts) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Fails with [`Error::ShutDown`] once [`Store::shutdown`] was called.
    pub(crate) fn check_running(&self) -> Result<(), Error> {
        if self.inner.syncer.is_running() {
            Ok(())
        } else {
            Err(Error::ShutDown)
        }
    }

    pub(crate) fn submit_flush(&self, cb: FlushCallback) -> Result<(), Error> {
        self.inner.syncer.submit(cb).map_err(|_| Error::ShutDown)
    }
}

/// An owned key and value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// A consistent point-in-time view of the database (a RocksDB snapshot).
pub(crate) struct View<'a> {
    store: &'a Store,
    snap: SnapshotWithThreadMode<'a, DB>,
}

impl<'a> View<'a> {
    pub(crate) fn new(store: &'a Store) -> View<'a> {
        View {
            store,
            snap: store.db().snapshot(),
        }
    }

    fn read_opts(&self) -> ReadOptions {
        let mut o = ReadOptions::default();
        o.set_snapshot(&self.snap);
        // `sm` has a prefix extractor (for its filters, see `Filter`):
        // without this, an iterator would read only one "prefix".
        o.set_total_order_seek(true);
        o
    }

    pub(crate) fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.snap.get_cf(self.store.cf(cf), key)?)
    }

    pub(crate) fn multi_get(
        &self,
        cf: &str,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let cf = self.store.cf(cf);
        self.store
            .db()
            .multi_get_cf_opt(keys.iter().map(|k| (cf, k)), &self.read_opts())
            .into_iter()
            .map(|r| r.map_err(Error::from))
            .collect()
    }

    /// Visits keys in `[start, end)` in order until `visit` returns `false`.
    pub(crate) fn scan(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let mut opts = self.read_opts();
        opts.set_iterate_upper_bound(end);
        let mut it = self.store.db().raw_iterator_cf_opt(self.store.cf(cf), opts);
        it.seek(start);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            if !visit(k, v)? {
                return Ok(());
            }
            it.next();
        }
        Ok(it.status()?)
    }

    /// The last key/value in `[start, end)`, if any.
    pub(crate) fn last_in(
        &self,
        cf: &str,
        start: &[u8],
        end: &[u8],
    ) -> Result<Option<KeyValue>, Error> {
        let mut opts = self.read_opts();
        opts.set_iterate_lower_bound(start);
        opts.set_iterate_upper_bound(end);
        let mut it = self.store.db().raw_iterator_cf_opt(self.store.cf(cf), opts);
        it.seek_to_last();
        match (it.key(), it.value()) {
            (Some(k), Some(v)) => Ok(Some((k.to_vec(), v.to_vec()))),
            _ => {
                it.status()?;
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes of bloom filter in the `sm` column family's SST files.
    fn sm_filter_bytes(store: &Store) -> anyhow::Result<u64> {
        let props = store
            .db()
            .property_value_cf(store.cf(CF_SM), "rocksdb.aggregated-table-properties")?
            .unwrap_or_default();
        let size = props
            .split(';')
            .find_map(|p| p.trim().strip_prefix("filter block size="))
            .ok_or_else(|| anyhow::anyhow!("no filter size in {props}"))?;
        Ok(size.trim().parse()?)
    }

    fn put_all(store: &Store, keys: impl Iterator<Item = Vec<u8>>) -> anyhow::Result<()> {
        let mut batch = WriteBatch::default();
        for key in keys {
            batch.put_cf(store.cf(CF_SM), key, b"v");
        }
        store.write(batch, false)?;
        store.db().flush_cf(store.cf(CF_SM))?;
        Ok(())
    }

    /// The event store's filters hold its point-lookup keys only, and every
    /// read still finds what was written, once the store is reopened: scans
    /// across kinds of keys and SST files, gets of present and absent keys.
    #[test]
    fn filters_hold_only_point_keys_and_reads_see_everything() -> anyhow::Result<()> {
        const N: u64 = 5000;
        const G: GroupId = 7;
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        put_all(
            &store,
            (1..=N).flat_map(|v| {
                [
                    keys::stream_event(G, "s", v).expect("short id"),
                    keys::position(G, v),
                ]
            }),
        )?;
        let scan_only = sm_filter_bytes(&store)?;
        put_all(
            &store,
            (1..=N).map(|i| keys::stream_info(G, &format!("s-{i}")).expect("short id")),
        )?;
        let with_point_keys = sm_filter_bytes(&store)?;
        assert!(
            scan_only < 64,
            "{scan_only} filter bytes for {} scan-only keys",
            2 * N
        );
        assert!(
            with_point_keys - scan_only >= N,
            "{N} point keys got only {} filter bytes",
            with_point_keys - scan_only
        );

        let store = {
            drop(store);
            Store::open(dir.path())?
        };
        let view = View::new(&store);
        let (start, end) = keys::group_range(G);
        let mut seen = 0;
        let mut last: Vec<u8> = Vec::new();
        view.scan(CF_SM, &start, &end, |k, _| {
            assert!(k > last.as_slice(), "scan in key order");
            last = k.to_vec();
            seen += 1;
            Ok(true)
        })?;
        assert_eq!(seen, 3 * N, "a scan over the group sees every key");
        let info = |i: &str| keys::stream_info(G, i).expect("short id");
        assert!(view.get(CF_SM, &info("s-17"))?.is_some());
        assert!(view.get(CF_SM, &info("s-0"))?.is_none());
        let event = keys::stream_event(G, "s", N).expect("short id");
        assert!(view.get(CF_SM, &event)?.is_some());
        let last_event = view.last_in(
            CF_SM,
            &keys::stream_event(G, "s", 0).expect("short id"),
            &keys::stream_events_end(G, "s").expect("short id"),
        )?;
        assert_eq!(last_event.map(|(k, _)| k), Some(event));
        Ok(())
    }

    /// Dropping a group leaves nothing of it, and nothing of another group goes.
    #[test]
    fn a_dropped_group_leaves_nothing_behind() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let keys_of = |g: GroupId| {
            vec![
                keys::stream_event(g, "s", 1).expect("short id"),
                keys::position(g, 1),
                keys::applied(g),
            ]
        };
        put_all(&store, keys_of(3).into_iter().chain(keys_of(4)))?;
        let mut batch = WriteBatch::default();
        for g in [3, 4] {
            batch.put_cf(store.cf(CF_LOG), keys::vote(g), b"v");
            batch.put_cf(store.cf(CF_LOG), keys::log_entry(g, 1), b"e");
            batch.put_cf(store.cf(CF_SNAP), keys::raft_snapshot_meta(g), b"m");
        }
        store.write(batch, true)?;

        store.drop_group(3)?;
        let view = View::new(&store);
        let count = |cf: &str, g: GroupId| -> anyhow::Result<usize> {
            let (start, end) = keys::group_range(g);
            let mut n = 0;
            view.scan(cf, &start, &end, |_, _| {
                n += 1;
                Ok(true)
            })?;
            Ok(n)
        };
        for cf in [CF_LOG, CF_SM, CF_SNAP] {
            assert_eq!(count(cf, 3)?, 0, "{cf} still holds group 3");
        }
        assert_eq!(count(CF_SM, 4)?, 3);
        assert_eq!(count(CF_LOG, 4)?, 2);
        assert_eq!(count(CF_SNAP, 4)?, 1);
        Ok(())
    }

    /// The names of the files in `dir` that `wanted` accepts, sorted (RocksDB
    /// numbers its files with leading zeros, so the newest is last).
    fn files(dir: &Path, wanted: impl Fn(&str) -> bool) -> anyhow::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if wanted(&name) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// RocksDB runs with the level-0 trigger and the delay of bottommost
    /// rewrites `Store::open` sets, as the options file it writes records.
    #[test]
    fn rocksdb_runs_with_the_compaction_settings() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let newest_options = files(dir.path(), |name| name.starts_with("OPTIONS-"))?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("no OPTIONS file"))?;
        let text = std::fs::read_to_string(dir.path().join(newest_options))?;
        let setting = |line: &str| text.lines().filter(|l| l.trim() == line).count();
        // Every family Cairn opens (not RocksDB's unused `default`).
        assert_eq!(
            setting("level0_file_num_compaction_trigger=8"),
            ALL_CFS.len()
        );
        let delay = format!(
            "bottommost_file_compaction_delay={}",
            store_options::BOTTOMMOST_REWRITE_DELAY.as_secs()
        );
        assert_eq!(setting(&delay), ALL_CFS.len());
        drop(store);
        Ok(())
    }

    /// The small column families do not hold on to WAL files: once the
    /// event store has flushed, the syncer's flush of `node` (written at
    /// open and here, never enough to fill its memtable) lets the WAL file
    /// those writes went to be deleted.
    #[test]
    fn the_small_families_let_old_wal_files_go() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        store.put_node_meta("test", b"in the first WAL file")?;
        let wal_files = || files(dir.path(), |name| name.ends_with(".log"));
        let first = wal_files()?.first().cloned().expect("a WAL file");
        // Flushing the event store starts a new WAL file.
        put_all(&store, (0..10u8).map(|i| vec![0, 0, 0, 1, 0x30, i]))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while wal_files()?.contains(&first) {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "{first} is still there: {:?}",
                wal_files()?
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(store);
        Ok(())
    }
}
