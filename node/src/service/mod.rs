//! The gRPC services a node serves to clients, and the routing they share.
//!
//! - [`actor`], [`event_store`], [`admin`]: the client services.
//! - [`route`]: serve here or forward once to the partition's leader.
//! - [`call_stream`]: forwarded asks and appends over one stream per leader,
//!   and the answering side of those streams.
//! - [`partition_log`]: reading one partition's log (`ReadPartition`), with
//!   filters and long polls.
//! - [`read_all`]: `ReadAll`, the merge of every partition's log, and checkpoints.
//! - [`subscribe`]: `Subscribe`, catch-up then live over server streaming.
//! - [`long_poll`]: waiting for a partition to apply new entries.
//! - [`query`]: `QueryService`, the query bus over projections.
//! - [`convert`]: wire types to and from storage types.

pub mod actor;
pub mod admin;
pub mod call_stream;
pub mod convert;
pub mod event_store;
pub mod long_poll;
pub mod partition_log;
pub mod query;
pub mod read_all;
pub mod route;
pub mod subscribe;

pub use actor::ActorGrpcService;
pub use admin::AdminGrpcService;
pub use event_store::EventStoreGrpcService;
pub use query::QueryGrpcService;
