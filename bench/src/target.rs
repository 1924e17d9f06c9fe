//! [`Target`]: one operation of one workload against one system.

use std::future::Future;

/// What the load generator drives: one operation of a workload against one
/// system (a Cairn append, an etcd put, …). Implementations hold their own
/// connections; the load generator calls [`Target::op`] back to back from
/// each of its workers and times every call.
pub trait Target: Send + Sync + 'static {
    /// How many items one successful operation accounts for: 1 for a single
    /// append or put, 100 for a batch append of 100 events. Throughput is
    /// reported in items per second.
    fn items_per_op(&self) -> u64 {
        1
    }

    /// How many times operations so far had to be retried inside
    /// [`Target::op`] (e.g. after a version conflict on a hot stream):
    /// a running total, sampled at the start and end of the measured window.
    fn retries(&self) -> u64 {
        0
    }

    /// Runs once for each worker before the clock starts (e.g. opening the
    /// worker's account). Not timed.
    fn prepare(&self, worker: usize) -> impl Future<Output = anyhow::Result<()>> + Send {
        let _ = worker;
        async { Ok(()) }
    }

    /// The `seq`-th operation of worker `worker`; it returns once the system
    /// has acknowledged it (for writes: durably committed).
    fn op(&self, worker: usize, seq: u64) -> impl Future<Output = anyhow::Result<()>> + Send;
}
