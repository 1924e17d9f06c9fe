//! A small Rust client for Cairn, used by the `cairn` command line, the tests
//! and the benchmarks. It speaks gRPC to any node of a cluster and has no
//! RocksDB in its dependency tree.
//!
//! ```no_run
//! # async fn demo() -> Result<(), cairn_client::Error> {
//! use cairn_client::{Client, StateAt};
//! use serde_json::json;
//!
//! let client = Client::connect("127.0.0.1:7400,127.0.0.1:7401").await?;
//! let asked = client.ask("account", "a1", &json!({"type": "OPEN"})).await?;
//! let state = client.state("account", "a1", StateAt::Latest).await?;
//! assert_eq!(state.version, asked.version);
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - [`client`]: [`Client`], the connection to a list of servers, with
//!   failover and retries of retryable errors.
//! - [`error`]: [`Error`], what a call can fail with, mapped from gRPC statuses.
//! - [`servers`]: parsing a `host:port[,host:port...]` server list.
//! - [`actor`]: the typed requests and results of actor calls.
//! - [`stream`]: the typed requests and results of event-store calls.
//! - [`read_all`]: reads of all streams ([`ReadAll`], [`EventFilter`], [`ReadAllResult`]).
//! - [`checkpoint`]: [`Checkpoint`], where a read of all streams stands.
//! - [`subscription`]: [`Subscription`], catch-up then live events, resumed
//!   on another server when the serving one fails.
//! - [`query`]: the query bus: [`Client::query`], projection status and reset.
//! - [`status`]: the typed cluster status.
//! - [`admin`]: changing the cluster: membership, leader transfer, rebalance.
//! - [`call_stream`]: asks and appends over one long-lived gRPC stream per
//!   connection instead of a call each.
//! - `wire`: conversions between these types and the `cairn-proto` messages
//!   (the only place that knows both).
//!
//! Every result type serializes to JSON with camelCase field names; this is
//! the shape the `cairn` command prints, so its output parses back into them.

pub mod actor;
pub mod admin;
pub mod call_stream;
pub mod checkpoint;
pub mod client;
pub mod error;
pub mod query;
pub mod read_all;
mod routing;
pub mod servers;
pub mod status;
pub mod stream;
pub mod subscription;
mod wire;

pub use actor::{AskIds, AskResult, StateAt, StateResult};
pub use admin::{LeaderMoved, MembershipChanged, Rebalanced};
pub use checkpoint::Checkpoint;
pub use client::{Client, DEFAULT_TIMEOUT};
pub use error::Error;
pub use query::ProjectionStatus;
pub use read_all::{EventFilter, ReadAll, ReadAllResult};
pub use routing::partition_of;
pub use servers::{DEFAULT_SERVER, parse_servers};
pub use status::{Compacted, GroupStatus, NodeStatus, ReplicaLag, Status};
pub use stream::{
    AppendResult, DeleteResult, EventData, ExpectedVersion, ReadResult, RecordedEvent, StreamInfo,
    StreamMetadataResult,
};
pub use subscription::{SubscribeTo, Subscription, SubscriptionEvent};
