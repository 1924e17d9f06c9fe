//! [`StateMachine`]: openraft's `RaftStateMachine` for one group, in the `sm`
//! column family of the node's [`Store`]. For a partition it *is* the event
//! store; for the metadata group it holds the key-value map.

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};

use crate::apply::{apply_entries, read_applied};
use crate::command::{CommandResult, GroupId};
use crate::error::{Error, blocking};
use crate::snapshot::{self, SnapshotBuilder};
use crate::snapshot_bytes::SnapshotBytes;
use crate::store::Store;
use crate::type_config::{NodeId, TypeConfig};

/// The applied state of one group.
///
/// Guarantees: all effects of one `apply()` call (every entry in it) and the
/// new last-applied log id are written atomically, so a crash never leaves a
/// half-applied entry; they are not fsynced on their own (the Raft log
/// replays), but become durable with the next log fsync. Rejected appends and
/// deletes write nothing. Installing a snapshot replaces the group's state
/// atomically and durably.
#[derive(Debug)]
pub struct StateMachine {
    store: Store,
    group: GroupId,
}

impl StateMachine {
    pub(crate) fn open(store: Store, group: GroupId) -> Result<StateMachine, Error> {
        // Fail now, not on the first Raft call, if the applied state is unreadable.
        read_applied(&store, group)?;
        Ok(StateMachine { store, group })
    }

    /// The group this state machine belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    fn sm_err(e: Error, verb: ErrorVerb) -> StorageError<NodeId> {
        e.into_storage_error(ErrorSubject::StateMachine, verb)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>>
    {
        let store = self.store.clone();
        let group = self.group;
        let applied = blocking(move || read_applied(&store, group))
            .await
            .map_err(|e| Self::sm_err(e, ErrorVerb::Read))?;
        Ok((applied.last_applied, applied.last_membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let store = self.store.clone();
        let group = self.group;
        blocking(move || apply_entries(&store, group, entries))
            .await
            .map_err(|e| Self::sm_err(e, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::new(self.store.clone(), self.group)
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotBytes>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotBytes::from_bytes(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<SnapshotBytes>,
    ) -> Result<(), StorageError<NodeId>> {
        let sig = meta.signature();
        let data = snapshot.into_bytes().await.map_err(|e| {
            StorageError::from_io_error(ErrorSubject::Snapshot(Some(sig)), ErrorVerb::Read, e)
        })?;
        snapshot::install_async(self.store.clone(), self.group, meta.clone(), data).await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let store = self.store.clone();
        let group = self.group;
        blocking(move || snapshot::current(&store, group))
            .await
            .map_err(|e| e.into_storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}
