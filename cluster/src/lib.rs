//! Cairn's cluster layer: membership and the partition table, placement of
//! replicas by consistent hashing, one openraft group per partition plus the
//! metadata group, their network (one tonic `RaftService` carrying every
//! group's RPCs, tagged with the group id), and the per-partition write path.
//!
//! # Layout
//! - [`placement`]: the [`Placement`] trait and [`HashRingPlacement`].
//! - [`topology`]: [`Topology`], members and the partition table of an epoch; [`partition_of`].
//! - [`transport`]: the [`RaftTransport`] trait, [`GrpcTransport`], [`PeerChannels`].
//! - [`raft_stream`]: Raft calls to one peer over one long-lived gRPC stream.
//! - [`serve_stream`]: the answering side of a stream of concurrent calls.
//! - [`local_network`]: [`LocalNetwork`], an in-process transport for tests that can partition.
//! - [`network`]: openraft's network for one group over a transport.
//! - [`dispatcher`]: [`RaftDispatcher`] routes incoming RPCs to the group's Raft; [`RaftGrpcService`].
//! - [`partition`]: [`Partition`], a local replica: group-committed appends, linearizable reads.
//! - `log_truncation`: when each replica snapshots and drops its Raft log.
//! - [`node`]: [`ClusterNode`], all of a node's groups, bootstrap, identity checks.
//! - `groups`: the replicas a node runs, started and stopped as membership changes.
//! - `membership`: `add-node`/`remove-node`: topology epochs, and how every node converges to the newest.
//! - `transfer`: handing a partition's leadership to another replica.
//! - [`ClusterError`] (module [`error`]): what cluster operations fail with.

mod commit_notice;
pub mod dispatcher;
mod entry_slots;
pub mod error;
mod groups;
pub mod local_network;
mod log_truncation;
pub mod membership;
pub mod network;
pub mod node;
pub mod partition;
pub mod placement;
pub mod raft_stream;
pub mod serve_stream;
pub mod topology;
mod transfer;
pub mod transport;

pub use dispatcher::{RaftDispatcher, RaftGrpcService};
pub use entry_slots::ProposalBudget;
pub use error::ClusterError;
pub use local_network::LocalNetwork;
pub use membership::ReplicaView;
pub use node::{ClusterConfig, ClusterNode, DEFAULT_ELECTION_TIMEOUT, RaftTuning};
pub use partition::{Partition, now_ms};
pub use placement::{HashRingPlacement, Placement};
pub use topology::{MemberChange, Topology, partition_of};
pub use transport::{GrpcTransport, PeerChannels, RaftTransport, RpcKind, TransportError};
