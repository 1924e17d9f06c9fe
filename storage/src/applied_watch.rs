//! Per-group watches of the last applied Raft log index.
//!
//! Whatever follows a group's applied state (projections, event handlers,
//! long polls of subscriptions) waits on this watch, which moves once per
//! state-machine write. openraft's metrics watch would also tell, but it is
//! sent after every turn of a group's Raft core (an entry appended, each
//! follower's acknowledgement, a commit, an apply, every heartbeat), and
//! each send wakes every watcher: several wake-ups per entry for each
//! follower of the log, on every node.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::watch;

use crate::command::GroupId;

/// The last applied log index of every group of a store (0 = none yet, or
/// not since this process opened the store).
#[derive(Default)]
pub(crate) struct AppliedWatch {
    groups: Mutex<HashMap<GroupId, watch::Sender<u64>>>,
}

impl AppliedWatch {
    fn with<T>(&self, group: GroupId, f: impl FnOnce(&watch::Sender<u64>) -> T) -> T {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        f(groups.entry(group).or_insert_with(|| watch::Sender::new(0)))
    }

    /// Records that `group` has applied up to log index `index`; wakes its
    /// watchers if that is further than before.
    pub(crate) fn advance(&self, group: GroupId, index: u64) {
        self.with(group, |tx| {
            tx.send_if_modified(|applied| {
                let moved = index > *applied;
                if moved {
                    *applied = index;
                }
                moved
            })
        });
    }

    /// A receiver that sees `group`'s applied index move.
    pub(crate) fn subscribe(&self, group: GroupId) -> watch::Receiver<u64> {
        self.with(group, watch::Sender::subscribe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_see_only_forward_moves_of_their_group() {
        let applied = AppliedWatch::default();
        let mut one = applied.subscribe(1);
        let two = applied.subscribe(2);
        applied.advance(1, 5);
        assert!(one.has_changed().unwrap());
        assert_eq!(*one.borrow_and_update(), 5);
        assert!(!two.has_changed().unwrap(), "another group's apply");
        applied.advance(1, 3);
        assert!(!one.has_changed().unwrap(), "an older index is no move");
        applied.advance(1, 5);
        assert!(!one.has_changed().unwrap(), "the same index is no move");
        applied.advance(1, 6);
        assert_eq!(*one.borrow_and_update(), 6);
    }
}
