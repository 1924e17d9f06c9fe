//! Harnesses for Cairn's integration tests.
//!
//! # Layout
//! - [`wait`]: waiting on a condition with a deadline (never a fixed sleep).
//! - [`in_process`]: [`TestCluster`], N nodes in this process whose Raft
//!   traffic runs over a [`cairn_cluster::LocalNetwork`] that can partition.
//! - [`process`]: [`ProcessCluster`], N `cairn serve` processes on loopback,
//!   killed and restarted by handle.

pub mod in_process;
pub mod process;
pub mod wait;

pub use in_process::TestCluster;
pub use process::ProcessCluster;
pub use wait::eventually;
