//! Cairn's storage: one RocksDB per node holding, for every Raft group, the
//! Raft log and vote, and the group's state machine, which for a partition
//! *is* the event store (streams, versions, the partition's ordered log,
//! stream info, the event-id index, actor snapshots). No networking here, and
//! no wire types: everything persisted uses this crate's own encoding.
//!
//! # Layout
//! - [`command`]: [`Command`], the payload of a Raft entry, and [`CommandResult`].
//! - `appends`: [`Appends`], an entry's appends in one shared buffer.
//! - [`event`]: what readers get back: [`RecordedEvent`], [`StreamInfo`], [`ActorSnapshot`].
//! - [`type_config`]: the openraft [`TypeConfig`] shared by every group.
//! - `keys`: the byte layout and ordering of every key.
//! - `store`: [`Store`], the node's RocksDB.
//! - `syncer`: the thread that group-commits log fsyncs for a [`Store`].
//! - `direct_io`: whether a data directory takes direct I/O (for flushes and compactions).
//! - `log_store`: [`LogStore`], openraft's `RaftLogStorage` for one group.
//! - `log_durability`: [`LogDurability`], the leader's log appends reported
//!   before their fsync, and what waits for it.
//! - `entry_cache`: the newest entries of a group's log, in memory, for replication.
//! - `state_machine`: [`StateMachine`], openraft's `RaftStateMachine` for one group.
//! - `applied_watch`: per-group watches of the last applied log index.
//! - `apply`: the event store's write rules, applied to committed entries.
//! - `retention`: which events `max-count`, `max-age` and actor snapshots keep
//!   readable (shared by reads and purges).
//! - `snapshot`: [`SnapshotBuilder`], the Raft snapshot format, installing one.
//! - `snapshot_bytes`: [`SnapshotBytes`], a snapshot's data, serialized when first read.
//! - `reader`: [`Reader`], reads of the applied state.
//! - `projection_store`: node-local projection read models and checkpoints on [`Store`].
//! - `error`: [`Error`].

#![warn(missing_docs)]

mod appends;
mod applied_watch;
mod apply;
pub mod command;
mod direct_io;
mod entry_cache;
mod error;
pub mod event;
mod format;
mod info_cache;
mod keys;
mod log_durability;
mod log_store;
mod projection_store;
mod reader;
mod recent;
mod retention;
mod snapshot;
mod snapshot_bytes;
mod state_machine;
mod store;
mod store_options;
mod stored_id;
mod syncer;
pub mod type_config;
mod writes;

pub use appends::Appends;
pub use command::{
    AppendOutcome, Command, CommandResult, ExpectedVersion, GroupId, META_GROUP, NewEvent,
    Rejection, StreamAppend,
};
pub use error::{Error, encode_exact};
pub use event::{ActorSnapshot, EventRef, RecordedEvent, StreamInfo};
pub use keys::{MAX_STREAM_ID_LEN, TIME_INDEX_EVERY};
pub use log_durability::LogDurability;
pub use log_store::LogStore;
pub use projection_store::ProjectionChanges;
pub use reader::{LogPage, Reader};
pub use snapshot::SnapshotBuilder;
pub use snapshot_bytes::SnapshotBytes;
pub use state_machine::StateMachine;
pub use store::{Compacted, Store};
pub use type_config::{NodeId, TypeConfig};
