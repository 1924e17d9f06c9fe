//! The gRPC services a node serves to clients, and the routing they share.

pub mod actor;
pub mod admin;
pub mod convert;
pub mod event_store;
pub mod route;

pub use actor::ActorGrpcService;
pub use admin::AdminGrpcService;
pub use event_store::EventStoreGrpcService;
