//! The Cairn node: the actor runtime, the gRPC services, and what `cairn serve` runs.
//!
//! # Layout
//! - [`config`]: [`ServeConfig`], what a node is started with.
//! - [`server`]: [`NodeBuilder`] / [`RunningNode`], start a node and stop it in order; [`server::run`].
//! - [`actor`]: the [`EventSourced`] trait users implement, and its type-erased form.
//! - [`actors`]: the built-in `user` and `account` types.
//! - [`registry`]: [`Registry`], actor types by name.
//! - [`runtime`]: [`ActorRuntime`], activations, turns, snapshots, passivation.
//! - [`replay`]: rebuilding state from a snapshot plus the tail of a stream.
//! - [`service`]: the client gRPC services and routing to partition leaders.
//! - [`bus`]: [`CommandBus`], commands to any actor of the cluster, for embedders.
//! - [`ids`]: [`CommandIds`], command ids and the event ids derived from them.
//! - [`handler`]: [`handler::EventHandler`], reacting to events with commands.
//! - [`projection`]: [`projection::Projection`], read models folded from partition logs, and their runner.
//! - [`upcast`]: [`upcast::Upcasters`], schema evolution of events on read.
//! - [`limits`]: input limits and their checks.
//! - `local_partitions`: serving partitions as they move to and from this node.
//! - [`error`]: [`NodeError`] and its mapping to gRPC statuses.

pub mod actor;
pub mod actors;
pub mod bus;
pub mod config;
pub mod error;
mod event_parts;
pub mod handler;
pub mod ids;
pub mod limits;
mod local_partitions;
pub mod projection;
pub mod registry;
pub mod replay;
pub mod runtime;
pub mod server;
pub mod service;
pub mod upcast;

pub use actor::{Decision, EventSourced, Rejected};
pub use bus::{ActorCommand, CommandBus};
pub use config::ServeConfig;
pub use error::NodeError;
pub use handler::{EventHandler, HandlerError};
pub use ids::CommandIds;
pub use registry::Registry;
pub use runtime::{ActorRuntime, AskOutcome};
pub use server::{NodeBuilder, RunningNode};
