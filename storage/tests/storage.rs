//! Integration tests of cairn-storage, in one test binary:
//! - `openraft_suite`: openraft's storage conformance suite.
//! - `event_store`: our event-store conformance suite, driving
//!   `StateMachine::apply` with real Raft entries and checking through `Reader`.
//! - `raft_node`: real single-node openraft groups on one `Store`, through a restart.
//! - `close`: `Store::close` waits for other handles, then the directory reopens.

#[path = "storage/close.rs"]
mod close;
#[path = "storage/event_store.rs"]
mod event_store;
#[path = "storage/openraft_suite.rs"]
mod openraft_suite;
#[path = "storage/raft_node.rs"]
mod raft_node;
