//! How many Raft entries a partition's proposer may have in flight (proposed
//! and not yet applied): up to [`MAX_ENTRIES_IN_FLIGHT`] of its own, each
//! also holding one of the node's [`ProposalBudget`], shared by all the
//! partitions the node leads.
//!
//! Every entry costs a whole Raft round on three nodes (log writes, fsyncs,
//! an AppendEntries and its answer per follower, applies) whatever it
//! carries. Beyond [`ENTRIES_PER_CORE`] per core of the machine in flight,
//! more entries only compete for the CPU, while appends that wait for the
//! next one form fewer, bigger entries (bench/README.md, sessions 13, 19
//! and 21). An idle node has its budget free, so a lone writer never waits
//! for it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Most entries of one partition in flight; beyond it appends queue up and
/// form bigger entries. 4 beat 16 in 6 of 7 back-to-back pairs of runs with
/// 16 and 256 writers (up to 1.9x at 256): with 16, nearly every entry
/// carried one append, each paying a whole Raft entry on three nodes.
pub(crate) const MAX_ENTRIES_IN_FLIGHT: usize = 4;
/// Longest an entry counts against its node's budget: one that takes longer
/// (its group lost its quorum, say) must not hold back the node's other
/// partitions; it still counts against its own partition's slots.
const BUDGET_HOLD: Duration = Duration::from_millis(100);
/// Entries in flight per core of the node, all the partitions it leads
/// together (see [`ProposalBudget`]).
const ENTRIES_PER_CORE: usize = 2;

/// The entries that the partitions a node leads may have in flight
/// together.
///
/// Every entry takes one, a partition's first in flight included. Session
/// 13 let that first entry go without, so that each partition could always
/// have one entry in flight; but a node leads ~5 of 16 partitions, and
/// under load those five entries at once each carried a few appends. With
/// every entry budgeted (2 on a 2-core machine), single-event appends made
/// 12% more per second at 64 writers and 11% more at 256 (entries per
/// append down by a third), 2% fewer at 16, and as many at 1 writer and in
/// 100-event batches (bench/README.md, session 19).
///
/// Two per core since entries got cheaper (session 21: commit notices ride
/// on the next message, so an entry costs half the Raft messages it did).
/// 4 in flight on a 2-core machine against 2, alternated pairs of
/// single-event appends: +8% at 16 writers, 0 to +19% at 64, +2 to +10% at
/// 256 with p99 10–25% lower; as many at 1 writer (one entry at a time) and
/// in 100-event batches.
#[derive(Clone)]
pub struct ProposalBudget(Arc<Semaphore>);

impl ProposalBudget {
    /// Two entries per core of this machine, and at least four.
    pub fn for_this_machine() -> ProposalBudget {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ProposalBudget::new(cores.max(2) * ENTRIES_PER_CORE)
    }

    /// A budget of `entries`.
    pub fn new(entries: usize) -> ProposalBudget {
        ProposalBudget(Arc::new(Semaphore::new(entries)))
    }
}

/// One partition's slots for entries in flight.
pub(crate) struct EntrySlots {
    own: Arc<Semaphore>,
    budget: ProposalBudget,
}

/// An entry's place in flight: its partition's slot and a unit of the
/// node's budget.
pub(crate) struct Slot {
    _own: OwnedSemaphorePermit,
    budgeted: OwnedSemaphorePermit,
}

impl EntrySlots {
    pub(crate) fn new(budget: ProposalBudget) -> EntrySlots {
        EntrySlots {
            own: Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT)),
            budget,
        }
    }

    /// Waits for a slot for the partition's next entry, then for a unit of
    /// the node's budget (handed out in the order asked for); `None` once
    /// either is closed.
    pub(crate) async fn take(&self) -> Option<Slot> {
        let own = self.own.clone().acquire_owned().await.ok()?;
        let budgeted = self.budget.0.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _own: own,
            budgeted,
        })
    }
}

impl Slot {
    /// Runs `work` (the entry, until applied) in this slot: the budget goes
    /// back when it is done or after [`BUDGET_HOLD`], whichever is first;
    /// the partition's slot when it is done.
    pub(crate) async fn hold<T>(self, work: impl Future<Output = T>) -> T {
        self.hold_at_most(BUDGET_HOLD, work).await
    }

    async fn hold_at_most<T>(self, hold: Duration, work: impl Future<Output = T>) -> T {
        let Slot { _own, budgeted } = self;
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => done,
            () = tokio::time::sleep(hold) => {
                drop(budgeted);
                work.await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use tokio::sync::oneshot;

    use super::*;

    /// A node budget of `budget`, and a partition with `entries` in flight.
    async fn partition_with(
        budget: usize,
        entries: usize,
    ) -> (ProposalBudget, EntrySlots, Vec<Slot>) {
        let budget = ProposalBudget::new(budget);
        let slots = EntrySlots::new(budget.clone());
        let mut taken = Vec::new();
        for _ in 0..entries {
            taken.push(slots.take().await.unwrap());
        }
        (budget, slots, taken)
    }

    fn budget_left(budget: &ProposalBudget) -> usize {
        budget.0.available_permits()
    }

    /// Polls `take` once and checks that it waits (`waiting` says why it
    /// should), then runs `release` and returns the slot `take` gives.
    async fn waits_until_released(
        take: impl Future<Output = Option<Slot>>,
        release: impl FnOnce(),
        waiting: &str,
    ) -> Slot {
        tokio::pin!(take);
        let first_poll = std::future::poll_fn(|cx| Poll::Ready(take.as_mut().poll(cx))).await;
        assert!(first_poll.is_pending(), "{waiting}");
        release();
        tokio::time::timeout(Duration::from_secs(30), take)
            .await
            .expect("the entry goes once released")
            .expect("the slots are open")
    }

    #[tokio::test]
    async fn every_entry_takes_the_budget_the_first_included() {
        let (budget, _slots, taken) = partition_with(2, 1).await;
        assert_eq!(taken.len(), 1);
        assert_eq!(budget_left(&budget), 1);
    }

    #[tokio::test]
    async fn an_entry_waits_while_other_partitions_spend_the_budget() {
        let budget = ProposalBudget::new(1);
        let (busy, idle) = (
            EntrySlots::new(budget.clone()),
            EntrySlots::new(budget.clone()),
        );
        let busy_entry = busy.take().await.unwrap();
        let entry = waits_until_released(
            idle.take(),
            || drop(busy_entry),
            "a partition with nothing in flight still waits for the spent budget",
        )
        .await;
        assert_eq!(budget_left(&budget), 0);
        drop(entry);
        assert_eq!(budget_left(&budget), 1);
    }

    #[tokio::test]
    async fn a_partition_has_at_most_its_own_slots_in_flight() {
        let (budget, slots, taken) =
            partition_with(MAX_ENTRIES_IN_FLIGHT + 1, MAX_ENTRIES_IN_FLIGHT).await;
        let _entry = waits_until_released(
            slots.take(),
            || drop(taken),
            "budget is left, but the partition's slots are all taken",
        )
        .await;
        assert_eq!(budget_left(&budget), MAX_ENTRIES_IN_FLIGHT);
    }

    /// An entry holding the node's only budget, running until told to
    /// finish with its answer, holding the budget at most `hold`.
    async fn pending_entry(
        hold: Duration,
    ) -> (
        ProposalBudget,
        oneshot::Sender<u32>,
        tokio::task::JoinHandle<u32>,
    ) {
        let (budget, _slots, mut taken) = partition_with(1, 1).await;
        let slot = taken.pop().unwrap();
        let (done, finish) = oneshot::channel::<u32>();
        let work = tokio::spawn(slot.hold_at_most(hold, async move { finish.await.unwrap() }));
        (budget, done, work)
    }

    #[tokio::test]
    async fn an_entry_gives_its_budget_back_after_the_hold_and_still_completes() {
        let (budget, done, work) = pending_entry(Duration::from_millis(20)).await;
        let _again = tokio::time::timeout(Duration::from_secs(30), budget.0.acquire())
            .await
            .expect("the budget comes back once the hold is over");
        assert!(!work.is_finished());
        done.send(7).unwrap();
        assert_eq!(work.await.unwrap(), 7);
    }

    #[tokio::test]
    async fn an_entry_holds_its_budget_until_it_completes() {
        let (budget, done, work) = pending_entry(Duration::from_secs(3600)).await;
        assert_eq!(budget_left(&budget), 0);
        done.send(7).unwrap();
        assert_eq!(work.await.unwrap(), 7);
        assert_eq!(budget_left(&budget), 1);
    }
}
