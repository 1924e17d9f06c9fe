//! [`Hot`]: the hot-stream workload (issue 4 workload 2), the same retry
//! loop over any system that can append to one stream (or key) only if it
//! is at an expected version.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Target;

/// One stream, key or row set that every worker appends to, guarded by a
/// version: Cairn's stream version, etcd's mod revision, PostgreSQL's
/// `(stream_id, version)` primary key.
pub trait HotStream: Send + Sync + 'static {
    /// Appends one event if the stream is at `expected`: `Some(new version)`
    /// once durably committed, `None` on a version conflict (nothing written).
    fn try_append(
        &self,
        worker: usize,
        expected: u64,
    ) -> impl Future<Output = anyhow::Result<Option<u64>>> + Send;

    /// Reads the stream's current version (0 while it is empty).
    fn version(&self, worker: usize) -> impl Future<Output = anyhow::Result<u64>> + Send;
}

/// Every worker appends to the one stream with the version it last saw as
/// the expected version; on a conflict it re-reads the stream's version and
/// tries again. One operation is one successful append, however many
/// conflicts it took; conflicts are counted as [`Target::retries`].
pub struct Hot<S> {
    stream: S,
    /// The version each worker last saw.
    seen: Vec<AtomicU64>,
    conflicts: AtomicU64,
}

impl<S: HotStream> Hot<S> {
    /// The workload over `stream` for `concurrency` workers.
    pub fn new(stream: S, concurrency: usize) -> Hot<S> {
        Hot {
            stream,
            seen: (0..concurrency).map(|_| AtomicU64::new(0)).collect(),
            conflicts: AtomicU64::new(0),
        }
    }
}

impl<S: HotStream> Target for Hot<S> {
    fn retries(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    async fn op(&self, worker: usize, _seq: u64) -> anyhow::Result<()> {
        let seen = &self.seen[worker];
        loop {
            match self
                .stream
                .try_append(worker, seen.load(Ordering::Relaxed))
                .await?
            {
                Some(version) => {
                    seen.store(version, Ordering::Relaxed);
                    return Ok(());
                }
                None => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    seen.store(self.stream.version(worker).await?, Ordering::Relaxed);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::Mutex;
    use std::time::Duration;

    /// An in-memory stream: a version behind a lock.
    struct Memory(Mutex<u64>);

    impl HotStream for Memory {
        async fn try_append(&self, _worker: usize, expected: u64) -> anyhow::Result<Option<u64>> {
            tokio::task::yield_now().await;
            let mut version = self.0.lock().expect("not poisoned");
            if *version != expected {
                return Ok(None);
            }
            *version += 1;
            Ok(Some(*version))
        }

        async fn version(&self, _worker: usize) -> anyhow::Result<u64> {
            Ok(*self.0.lock().expect("not poisoned"))
        }
    }

    #[tokio::test]
    async fn every_op_is_one_append_and_conflicts_are_retried() {
        let hot = Arc::new(Hot::new(Memory(Mutex::new(0)), 8));
        let spec = crate::LoadSpec {
            concurrency: 8,
            warmup: Duration::ZERO,
            duration: Duration::from_millis(200),
        };
        let m = crate::measure(Arc::clone(&hot), spec)
            .await
            .expect("no worker fails");
        let appended = *hot.stream.0.lock().expect("not poisoned");
        // Ops after the window's end are not counted, so at most the appends.
        assert!(m.ops > 0 && m.ops <= appended, "{m:?} vs {appended}");
        assert_eq!(m.errors, 0);
        assert!(hot.retries() > 0, "8 workers on one stream conflict");
    }
}
