//! `cairn-bench`: runs a 3-node Cairn cluster and its peers side by side on
//! loopback, drives both with the same load generator, and reports
//! throughput, latency and the ratio Cairn/peer. See `bench/README.md`.
//!
//! # Layout
//! - [`harness`]: [`RunOptions`] and [`run`], the whole `cairn-bench run`:
//!   which points to measure, starting and stopping the clusters, the report.
//! - [`target`]: the [`Target`] trait, one operation of a workload against one
//!   system.
//! - [`load`]: [`measure`], the load generator (N tasks doing operations back
//!   to back), and its [`Measurement`].
//! - [`cairn_cluster`]: [`CairnCluster`], three `cairn serve` processes.
//! - [`cairn_targets`]: the Cairn workloads ([`CairnAppend`], [`CairnAsk`]).
//! - `etcd_cluster` / `etcd_target` (feature `etcd`): a 3-member etcd cluster
//!   from Debian's package, installed when missing, and its put workload.
//! - [`process`]: [`ChildProcess`], a child killed when dropped; free ports.
//! - [`report`]: [`Report`], the table on stdout and the JSON file.

pub mod cairn_cluster;
pub mod cairn_targets;
#[cfg(feature = "etcd")]
pub mod etcd_cluster;
#[cfg(feature = "etcd")]
pub mod etcd_target;
pub mod harness;
pub mod load;
pub mod process;
pub mod report;
pub mod target;

pub use cairn_cluster::CairnCluster;
pub use cairn_targets::{CairnAppend, CairnAsk};
#[cfg(feature = "etcd")]
pub use etcd_cluster::EtcdCluster;
#[cfg(feature = "etcd")]
pub use etcd_target::EtcdPut;
pub use harness::{RunOptions, Workload, run};
pub use load::{LoadSpec, Measurement, measure};
pub use process::{ChildProcess, free_ports};
pub use report::{Report, Row};
pub use target::Target;

/// The payload of every event or value written: 200 bytes of JSON,
/// `{"p":"xxx…"}`, the same bytes for Cairn and its peers.
pub fn payload() -> serde_json::Value {
    serde_json::json!({ "p": "x".repeat(PAYLOAD_BYTES - 8) })
}

/// Size in bytes of [`payload`] once serialized.
pub const PAYLOAD_BYTES: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_200_bytes_of_json() {
        let bytes = serde_json::to_vec(&payload()).expect("a JSON value serializes");
        assert_eq!(bytes.len(), PAYLOAD_BYTES);
    }
}
