//! The syncer thread: group commit of Raft log writes.
//!
//! Log appends are written to RocksDB without fsync and then queue a callback
//! here. One thread per [`Store`](crate::Store) takes every callback queued so
//! far (from every group), fsyncs the WAL once, and completes them all: many
//! appends, one fsync. Because a node's groups share one RocksDB and so one
//! WAL, that fsync also makes durable every earlier state-machine write.
//!
//! It also keeps the WAL short. A WAL file goes only once every column
//! family with writes in it has flushed them, and the small families fill
//! their memtables over hours (`node` is written at start, `snap` a few
//! hundred bytes per snapshot, `proj` not at all once projections are idle),
//! so they would hold every WAL file since: 1.3 GB after 20 s of 100-event
//! appends, replayed for 0.97 s before a restarted node could answer (0.18 s
//! and 375 MB with this). Every [`SMALL_FAMILIES_EVERY`] the thread flushes
//! them (RocksDB skips an empty memtable), so the WAL holds little more than
//! the log's and the event store's memtables. Capping the WAL instead
//! (`max_total_wal_size`) flushes whatever holds its oldest file, the event
//! store's memtable too, and made cold activations of a 1M-event actor
//! slower (bench/README.md, session 18).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocksdb::{DB, FlushOptions};

use crate::store::{CF_NODE, CF_PROJ, CF_SNAP};

/// How often the syncer flushes the small column families' memtables.
const SMALL_FAMILIES_EVERY: Duration = Duration::from_secs(2);

/// Called once the write it stands for is durable (or failed to become so).
pub(crate) type FlushCallback = Box<dyn FnOnce(io::Result<()>) + Send>;

/// Handle on the syncer thread. Dropping it stops the thread after it has
/// synced and completed everything already queued.
pub(crate) struct Syncer {
    tx: Mutex<Option<Sender<FlushCallback>>>,
    handle: Mutex<Option<JoinHandle<()>>>,
    syncs: Arc<AtomicU64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Syncer {
    /// Starts the thread.
    pub(crate) fn start(db: Arc<DB>) -> io::Result<Syncer> {
        let (tx, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&syncs);
        let handle = std::thread::Builder::new()
            .name("cairn-log-sync".into())
            .spawn(move || run(&db, &rx, &counter))?;
        Ok(Syncer {
            tx: Mutex::new(Some(tx)),
            handle: Mutex::new(Some(handle)),
            syncs,
        })
    }

    /// Queues `cb` to run after the next WAL fsync. Gives it back if the
    /// syncer is shut down.
    pub(crate) fn submit(&self, cb: FlushCallback) -> Result<(), FlushCallback> {
        match lock(&self.tx).as_ref() {
            Some(tx) => tx.send(cb).map_err(|e| e.0),
            None => Err(cb),
        }
    }

    /// Whether callbacks are still accepted.
    pub(crate) fn is_running(&self) -> bool {
        lock(&self.tx).is_some()
    }

    /// Number of WAL fsyncs done so far.
    pub(crate) fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Stops accepting callbacks, and waits until the thread has synced and
    /// completed every queued one. Idempotent, and every caller waits: a
    /// concurrent second call returns only once the thread is gone too.
    pub(crate) fn shutdown(&self) {
        drop(lock(&self.tx).take());
        // Join while holding the lock, so that a concurrent caller cannot
        // find the handle already taken and return before the thread ended.
        let mut handle = lock(&self.handle);
        if handle
            .as_ref()
            .is_some_and(|h| h.thread().id() == std::thread::current().id())
        {
            // Called from a flush callback on the syncer thread itself: it
            // cannot wait for itself; the thread ends when its queue closes.
            return;
        }
        if let Some(h) = handle.take()
            && h.join().is_err()
        {
            tracing::error!("log syncer thread panicked");
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(db: &DB, rx: &Receiver<FlushCallback>, syncs: &AtomicU64) {
    let mut small_flush_at = Instant::now() + SMALL_FAMILIES_EVERY;
    loop {
        // Fails as disconnected only once every sender is gone and the
        // queue is empty.
        match rx.recv_timeout(small_flush_at.saturating_duration_since(Instant::now())) {
            Ok(first) => sync(db, first, rx, syncs),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // After the fsync, so the appends waiting for it never wait for a
        // memtable switch as well.
        if Instant::now() >= small_flush_at {
            flush_small_families(db);
            small_flush_at = Instant::now() + SMALL_FAMILIES_EVERY;
        }
    }
    // Make whatever state-machine writes followed the last log append durable
    // too before the database closes.
    if let Err(e) = db.flush_wal(true) {
        tracing::error!(error = %e, "final WAL fsync failed");
    }
}

/// Fsyncs the WAL once for `first` and every callback queued behind it, and
/// completes them all.
fn sync(db: &DB, first: FlushCallback, rx: &Receiver<FlushCallback>, syncs: &AtomicU64) {
    let mut pending = vec![first];
    pending.extend(rx.try_iter());
    let result = db.flush_wal(true);
    syncs.fetch_add(1, Ordering::Relaxed);
    if let Err(e) = &result {
        tracing::error!(error = %e, waiting = pending.len(), "fsync of the Raft log failed");
    }
    for cb in pending {
        cb(result.clone().map_err(|e| io::Error::other(e.to_string())));
    }
}

/// Asks RocksDB to flush the small column families' memtables, without
/// waiting for it (see the module docs).
fn flush_small_families(db: &DB) {
    let mut opts = FlushOptions::default();
    opts.set_wait(false);
    for name in [CF_NODE, CF_SNAP, CF_PROJ] {
        let Some(cf) = db.cf_handle(name) else {
            continue;
        };
        if let Err(e) = db.flush_cf_opt(cf, &opts) {
            tracing::warn!(error = %e, family = name, "flushing a small column family failed");
        }
    }
}
