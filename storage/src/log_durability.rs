//! The leader's own log appends, acknowledged to openraft before their fsync.
//!
//! openraft 0.9 waits for the leader's own log append to be durable before
//! it sends the entry to the followers, so a write paid for two fsyncs one
//! after the other: the leader's, then the followers'. A leader's append
//! is therefore reported durable as soon as it is written (and its fsync
//! queued), and the two things openraft's commit of an entry lets out wait
//! here until the leader's fsync has covered it:
//! - the leader's apply of the entry (and so every reply, read, projection
//!   and subscription that sees it: they all follow the applied state), in
//!   the state machine;
//! - the commit index the leader sends its followers, in the network, so no
//!   follower applies what might still be lost with the leader.
//!
//! openraft may count the leader among the majority before its fsync, but
//! nothing is acknowledged or applied anywhere until a majority holds the
//! entry durably: the followers answer only once their copy is fsynced,
//! and the leader's own copy is waited for here. A follower's appends keep
//! openraft's order (reported only once durable), and every change of vote
//! or truncation of the log is an fsynced write that makes everything
//! written before it durable, so the early path applies only while this
//! replica leads the term it wrote in.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

use crate::error::Error;

/// One group's log appends reported before their fsync. Cheap to clone;
/// clones share the state.
#[derive(Clone, Debug, Default)]
pub struct LogDurability {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// This replica leads under the vote it saved (or loaded) last: its
    /// appends take the early path.
    leading: AtomicBool,
    pending: Mutex<Pending>,
    /// The id of the last early append known durable (ids start at 1);
    /// `Err` once an fsync failed, which nothing recovers from.
    flushed: watch::Sender<Result<u64, String>>,
}

/// Early appends whose fsync has not completed yet, oldest first.
#[derive(Debug, Default)]
struct Pending {
    /// The id of the last early append (0 = none yet): ids count them.
    last_id: u64,
    /// `(first index, id)` of each early append, in the order written;
    /// fsyncs complete in that order too.
    appends: VecDeque<(u64, u64)>,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            leading: AtomicBool::new(false),
            pending: Mutex::default(),
            flushed: watch::Sender::new(Ok(0)),
        }
    }
}

impl LogDurability {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Diagnostic: how many appends were reported before their fsync.
    pub fn early_appends(&self) -> u64 {
        self.pending().last_id
    }

    /// Whether this replica's appends are reported before their fsync.
    pub(crate) fn leading(&self) -> bool {
        self.inner.leading.load(Ordering::Acquire)
    }

    /// After an fsynced write of the vote: every earlier write is durable,
    /// and appends take the early path from now on only if `leading`.
    pub(crate) fn vote_saved(&self, leading: bool) {
        self.synced();
        self.set_leading(leading);
    }

    /// Whether appends take the early path from now on.
    pub(crate) fn set_leading(&self, leading: bool) {
        self.inner.leading.store(leading, Ordering::Release);
    }

    /// After any fsynced write (a vote, a truncation): every earlier write
    /// is durable.
    pub(crate) fn synced(&self) {
        let last = self.pending().last_id;
        self.flushed(last, Ok(()));
    }

    /// Records an early append starting at log index `first`, written but
    /// not yet fsynced; returns the id to pass to [`Self::flushed`] once an
    /// fsync covers it.
    pub fn written(&self, first: u64) -> u64 {
        let mut pending = self.pending();
        pending.last_id += 1;
        let id = pending.last_id;
        pending.appends.push_back((first, id));
        id
    }

    /// The fsync covering early append `id` (and every earlier one) ended.
    pub fn flushed(&self, id: u64, result: std::io::Result<()>) {
        if let Err(e) = result {
            let message = format!("a Raft log append never became durable: {e}");
            let _ = self.inner.flushed.send_replace(Err(message));
            return;
        }
        let mut pending = self.pending();
        while pending.appends.front().is_some_and(|&(_, done)| done <= id) {
            pending.appends.pop_front();
        }
        drop(pending);
        self.inner.flushed.send_modify(|flushed| {
            if let Ok(done) = flushed {
                *done = (*done).max(id);
            }
        });
    }

    /// Waits until every log entry up to `index` that this replica wrote is
    /// durable. Returns at once when none of them took the early path.
    pub async fn durable(&self, index: u64) -> Result<(), Error> {
        // Appends are kept in log order, so the newest one starting at or
        // before `index` is the one whose fsync covers it.
        let needed = self
            .pending()
            .appends
            .iter()
            .rev()
            .find(|&&(first, _)| first <= index)
            .map(|&(_, id)| id);
        let Some(needed) = needed else {
            return Ok(());
        };
        let mut flushed = self.inner.flushed.subscribe();
        let reached = flushed
            .wait_for(|flushed| flushed.as_ref().map_or(true, |done| *done >= needed))
            .await
            .map_err(|_| Error::ShutDown)?;
        match &*reached {
            Ok(_) => Ok(()),
            Err(message) => Err(Error::Task(message.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn settles(d: &LogDurability, index: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(50), d.durable(index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    #[tokio::test]
    async fn an_index_waits_for_the_fsync_of_the_append_that_holds_it() {
        let d = LogDurability::default();
        let a = d.written(1); // entries 1..=3
        let b = d.written(4); // entries 4..
        assert!(!settles(&d, 2).await);
        assert!(!settles(&d, 9).await);
        d.flushed(a, Ok(()));
        assert!(settles(&d, 3).await);
        assert!(
            !settles(&d, 4).await,
            "the second append is not durable yet"
        );
        d.flushed(b, Ok(()));
        assert!(settles(&d, 4).await);
    }

    #[tokio::test]
    async fn entries_that_did_not_take_the_early_path_never_wait() {
        let d = LogDurability::default();
        assert!(settles(&d, 100).await);
        d.written(101);
        assert!(settles(&d, 100).await, "written before the early append");
    }

    #[tokio::test]
    async fn an_fsynced_write_makes_every_earlier_append_durable() {
        let d = LogDurability::default();
        d.written(7);
        d.vote_saved(false);
        assert!(settles(&d, 7).await);
        assert!(!d.leading());
        d.vote_saved(true);
        assert!(d.leading());
    }

    #[tokio::test]
    async fn a_failed_fsync_fails_every_waiter() {
        let d = LogDurability::default();
        let id = d.written(1);
        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.durable(1).await }
        });
        d.flushed(id, Err(std::io::Error::other("disk gone")));
        let result = waiter.await.expect("waiter ran");
        assert!(result.is_err_and(|e| e.to_string().contains("disk gone")));
    }
}
