//! `cairn-bench`: runs a 3-node Cairn cluster and its peers side by side on
//! loopback, drives them with the same load generator, and reports
//! throughput, latency and the ratio Cairn/peer; and measures what is not a
//! throughput (activation, failover, storage, projection lag) on Cairn
//! alone. See `bench/README.md`.
//!
//! # Layout
//! - [`harness`]: [`RunOptions`], [`Workload`] and [`run`], the whole
//!   `cairn-bench run`: which points to measure, the clusters, the report.
//! - [`target`]: the [`Target`] trait, one operation of a workload against one
//!   system.
//! - [`load`]: [`measure`], the load generator (N tasks doing operations back
//!   to back), its [`Measurement`], and [`BackgroundLoad`].
//! - [`hot`]: [`Hot`], the hot-stream retry loop over any [`HotStream`].
//! - [`cairn_cluster`]: [`CairnCluster`], three `cairn serve` processes that
//!   can be killed and restarted.
//! - [`cairn_targets`]: the Cairn workloads ([`CairnAppend`], [`CairnHotStream`],
//!   [`CairnAsk`], [`CairnUserAsk`]).
//! - [`peers`]: [`Peers`], the systems compared with, and their side of each
//!   workload.
//! - `etcd_cluster` / `etcd_target` (feature `etcd`): a 3-member etcd cluster
//!   from Debian's package, installed when missing, and its workloads.
//! - [`postgres_server`] / [`postgres_target`]: one PostgreSQL server from
//!   Debian's package, installed when missing, and its workloads.
//! - [`activation`], [`failover`], [`storage`], [`projection`]: the
//!   workloads that are not a sweep, each on a fresh Cairn cluster.
//! - [`bulk`]: writing a known number of events fast (their set-up).
//! - [`process`]: [`ChildProcess`], a child killed when dropped; free ports.
//! - [`install`]: finding binaries, installing Debian packages.
//! - [`wait`]: [`wait_for`], every wait on a condition, with a deadline.
//! - [`report`]: [`Report`], the tables on stdout and the JSON file.

pub mod activation;
pub mod bulk;
pub mod cairn_cluster;
pub mod cairn_targets;
#[cfg(feature = "etcd")]
pub mod etcd_cluster;
#[cfg(feature = "etcd")]
pub mod etcd_target;
pub mod failover;
pub mod harness;
pub mod hot;
pub mod install;
pub mod load;
pub mod peers;
pub mod postgres_server;
pub mod postgres_target;
pub mod process;
pub mod projection;
pub mod report;
pub mod storage;
pub mod target;
pub mod wait;

pub use cairn_cluster::CairnCluster;
pub use cairn_targets::{CairnAppend, CairnAsk, CairnHotStream, CairnUserAsk};
#[cfg(feature = "etcd")]
pub use etcd_cluster::EtcdCluster;
#[cfg(feature = "etcd")]
pub use etcd_target::{EtcdHotKey, EtcdPut};
pub use harness::{RunOptions, Workload, run};
pub use hot::{Hot, HotStream};
pub use load::{BackgroundLoad, LoadSpec, Measurement, measure};
pub use peers::Peers;
pub use postgres_server::PostgresServer;
pub use process::{ChildProcess, free_ports, member_threads};
pub use report::{Fact, Facts, Report, Row};
pub use target::Target;
pub use wait::wait_for;

/// The payload of every event or value written: 200 bytes of JSON,
/// `{"p":"xxx…"}`, the same bytes for Cairn and its peers.
pub fn payload() -> serde_json::Value {
    serde_json::json!({ "p": "x".repeat(PAYLOAD_BYTES - 8) })
}

/// A payload of the same shape and size as [`payload`] whose string is 192
/// random lowercase letters, different for every call: what compression
/// can do with it is about what it can do with real data (less, if
/// anything), where the `x…` of [`payload`] would compress to nothing.
pub fn random_payload() -> serde_json::Value {
    use rand::Rng;
    let mut rng = rand::rng();
    let letters: String = (0..PAYLOAD_BYTES - 8)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect();
    serde_json::json!({ "p": letters })
}

/// Size in bytes of [`payload`] once serialized.
pub const PAYLOAD_BYTES: usize = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_200_bytes_of_json() {
        for payload in [payload(), random_payload()] {
            let bytes = serde_json::to_vec(&payload).expect("a JSON value serializes");
            assert_eq!(bytes.len(), PAYLOAD_BYTES);
        }
        assert_ne!(random_payload(), random_payload());
    }
}
