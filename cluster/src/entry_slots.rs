//! How many Raft entries a partition's proposer may have in flight (proposed
//! and not yet applied): up to [`MAX_ENTRIES_IN_FLIGHT`] of its own, and
//! beyond its first, each also needs one of the node's [`ProposalBudget`],
//! shared by all the partitions the node leads.
//!
//! Every entry costs a whole Raft round on three nodes (log writes, fsyncs,
//! two AppendEntries per follower, applies) whatever it carries. Once more
//! entries are in flight than the machine has cores they only compete for
//! the CPU, while appends that wait for the next one form fewer, bigger
//! entries (bench/README.md, session 13). A partition's first entry never
//! waits for the budget, so light load pays no delay for it.

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

/// Entries beyond one per partition that the partitions a node leads may
/// have in flight together.
#[derive(Clone)]
pub struct ProposalBudget(Arc<Semaphore>);

impl ProposalBudget {
    /// One entry per core of this machine, and at least two.
    pub fn for_this_machine() -> ProposalBudget {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ProposalBudget::new(cores.max(2))
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

/// An entry's place in flight: its partition's slot and, unless it was the
/// partition's only entry in flight, a unit of the node's budget.
pub(crate) struct Slot {
    _own: OwnedSemaphorePermit,
    budgeted: Option<OwnedSemaphorePermit>,
}

impl EntrySlots {
    pub(crate) fn new(budget: ProposalBudget) -> EntrySlots {
        EntrySlots {
            own: Arc::new(Semaphore::new(MAX_ENTRIES_IN_FLIGHT)),
            budget,
        }
    }

    /// Waits for a slot for the partition's next entry. While the partition
    /// has other entries in flight this also waits for the node's budget,
    /// unless those entries are all done first: then the entry goes without.
    pub(crate) async fn take(&self) -> Option<Slot> {
        let own = self.own.clone().acquire_owned().await.ok()?;
        let others = MAX_ENTRIES_IN_FLIGHT - 1;
        let budgeted = if self.own.available_permits() == others {
            None
        } else {
            tokio::select! {
                permit = self.budget.0.clone().acquire_owned() => permit.ok(),
                // Given back at once: only the sign that the others are done.
                _ = self.own.acquire_many(others as u32) => None,
            }
        };
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
        let Some(budgeted) = self.budgeted else {
            return work.await;
        };
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

    /// A node budget of one, and a partition with `entries` in flight.
    async fn partition_with(entries: usize) -> (ProposalBudget, EntrySlots, Vec<Slot>) {
        let budget = ProposalBudget::new(1);
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

    #[tokio::test]
    async fn a_partitions_only_entry_needs_no_budget() {
        let (budget, _slots, taken) = partition_with(1).await;
        assert!(taken[0].budgeted.is_none());
        assert_eq!(budget_left(&budget), 1);
    }

    #[tokio::test]
    async fn another_entry_takes_the_budget_when_it_is_free() {
        let (budget, _slots, taken) = partition_with(2).await;
        assert!(taken[1].budgeted.is_some());
        assert_eq!(budget_left(&budget), 0);
    }

    #[tokio::test]
    async fn another_entry_waiting_for_the_budget_goes_once_the_partitions_others_end() {
        let (budget, slots, mut taken) = partition_with(2).await;
        assert_eq!(budget_left(&budget), 0, "the second entry holds the budget");
        let asking = slots.take();
        tokio::pin!(asking);
        let first_poll = std::future::poll_fn(|cx| Poll::Ready(asking.as_mut().poll(cx))).await;
        assert!(
            first_poll.is_pending(),
            "a third entry waits while the budget is spent and others are in flight"
        );
        // The budget stays spent elsewhere while this partition's two end.
        let elsewhere = taken.pop().unwrap().budgeted;
        taken.clear();
        let third = tokio::time::timeout(Duration::from_secs(30), asking)
            .await
            .expect("the entry goes once its partition has no other in flight")
            .unwrap();
        assert!(third.budgeted.is_none());
        drop(elsewhere);
    }

    /// An entry holding the budget (the partition's second), running until
    /// told to finish with its answer, holding the budget at most `hold`.
    async fn pending_entry(
        hold: Duration,
    ) -> (
        ProposalBudget,
        oneshot::Sender<u32>,
        tokio::task::JoinHandle<u32>,
    ) {
        let (budget, _slots, mut taken) = partition_with(2).await;
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
