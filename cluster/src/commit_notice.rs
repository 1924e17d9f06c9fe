//! Commit notices that ride on the next message to a follower.
//!
//! Whenever a leader's commit index moves, openraft tells every follower at
//! once: it sends each an AppendEntries with no entries whose only news is
//! `leader_commit` (`Replicate::Committed` in its replication task), and
//! waits for the answer before it sends that follower anything else. Under
//! load that is as many round trips as there are entries (counted on a
//! 3-node cluster: ~2 per entry at 1 writer and at 256), each one a write
//! and a wake-up on both sides; at 1 writer it is half the Raft messages
//! of every append.
//!
//! A follower needs the commit index only to apply, and nothing waits for
//! a follower to apply: clients are answered by the leader once *it*
//! applied, and a follower that becomes leader applies everything committed
//! before it serves. So a group's replication client ([`Accepted`]) answers
//! such a notice itself when the follower accepted an AppendEntries from
//! the same leader, ending at the same log id, less than half a heartbeat
//! interval ago ([`defer_window`]). The follower learns the commit index
//! from the next message that goes out: the next entries, or a heartbeat
//! (openraft sends one every heartbeat interval, and one always goes out
//! once the window has passed), so a follower applies at most one and a
//! half heartbeat intervals late.
//!
//! What always goes out:
//! - entries, and heartbeats that carry no newer commit index than the
//!   follower was last sent (a follower hears from the leader at least
//!   every one and a half heartbeat intervals, well within the election
//!   timeout: at least three heartbeat intervals, see `RaftTuning`);
//! - anything after the follower refused, failed or did not answer;
//! - the heartbeats that confirm leadership for a linearizable read
//!   (openraft sends those through a new client each time, which has no
//!   [`Accepted`] yet).

use std::time::{Duration, Instant};

use cairn_storage::{NodeId, TypeConfig};
use openraft::raft::AppendEntriesRequest;
use openraft::{LogId, Vote};

/// How recently the follower must have accepted an AppendEntries for a
/// commit notice to wait for the next message, with heartbeats every
/// `heartbeat`: half of it, so that a heartbeat soon after the last write
/// carries the commit index.
pub(crate) fn defer_window(heartbeat: Duration) -> Duration {
    heartbeat / 2
}

/// The last AppendEntries a follower accepted from this replication client.
#[derive(Debug)]
pub(crate) struct Accepted {
    sent_at: Instant,
    vote: Vote<NodeId>,
    /// The follower's log matches the leader's up to here.
    matched: Option<LogId<NodeId>>,
    /// The commit index it was told.
    commit: Option<LogId<NodeId>>,
}

impl Accepted {
    /// The follower accepted `rpc`, sent at `sent_at`.
    pub(crate) fn of(rpc: &AppendEntriesRequest<TypeConfig>, sent_at: Instant) -> Accepted {
        Accepted {
            sent_at,
            vote: rpc.vote,
            matched: rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
            commit: rpc.leader_commit,
        }
    }

    /// Whether `rpc`, about to be sent at `now`, only tells the follower a
    /// newer commit index that can wait for the next message, this having
    /// been accepted less than `window` ago (see the module docs). Its
    /// answer would be success: the follower accepted this leader's vote
    /// and matches the log where `rpc` starts.
    pub(crate) fn defers(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        now: Instant,
        window: Duration,
    ) -> bool {
        rpc.entries.is_empty()
            && rpc.leader_commit > self.commit
            && rpc.vote == self.vote
            && rpc.prev_log_id == self.matched
            && now.saturating_duration_since(self.sent_at) < window
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload};

    use super::*;

    pub(crate) fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    /// An AppendEntries of term 1's leader after `prev`, with `entries`
    /// blank entries and commit index `commit`.
    pub(crate) fn request(
        prev: u64,
        entries: u64,
        commit: u64,
    ) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(log_id(prev)),
            entries: (prev + 1..=prev + entries)
                .map(|i| Entry {
                    log_id: log_id(i),
                    payload: EntryPayload::Blank,
                })
                .collect(),
            leader_commit: Some(log_id(commit)),
        }
    }

    #[test]
    fn only_a_fresh_commit_index_alone_waits() {
        let t0 = Instant::now();
        let window = defer_window(Duration::from_millis(100));
        let defers = |accepted: &Accepted, rpc, at| accepted.defers(&rpc, at, window);
        // The follower took entries 6..=7 with commit 5.
        let accepted = Accepted::of(&request(5, 2, 5), t0);
        let soon = t0 + Duration::from_millis(1);
        assert!(defers(&accepted, request(7, 0, 7), soon), "a commit notice");

        assert!(
            !defers(&accepted, request(7, 1, 7), soon),
            "entries always go"
        );
        assert!(
            !defers(&accepted, request(7, 0, 5), soon),
            "a heartbeat with nothing new goes"
        );
        assert!(
            !defers(&accepted, request(6, 0, 7), soon),
            "a follower not known to match there hears it"
        );
        let mut other_leader = request(7, 0, 7);
        other_leader.vote = Vote::new_committed(2, 2);
        assert!(
            !defers(&accepted, other_leader, soon),
            "a new leader always speaks"
        );
        assert!(
            !defers(&accepted, request(7, 0, 7), t0 + window),
            "once the window passed, the notice goes"
        );
    }
}
