//! [`StateMachine`]: openraft's `RaftStateMachine` for one group, in the `sm`
//! column family of the node's [`Store`]. For a partition it *is* the event
//! store; for the metadata group it holds the key-value map.

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, Snapshot, SnapshotMeta,
    StorageError, StoredMembership,
};

use crate::apply::{Written, apply_entries, events_in, read_applied};
use crate::command::{CommandResult, GroupId};
use crate::error::{Error, blocking};
use crate::log_durability::LogDurability;
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
    /// What the last write left; `None` until read, and after a failed
    /// apply or a snapshot install (read again on the next apply).
    written: Option<Written>,
    /// The leader's log entries not yet fsynced: applies wait for them.
    durability: LogDurability,
}

impl StateMachine {
    pub(crate) fn open(store: Store, group: GroupId) -> Result<StateMachine, Error> {
        // Fail now, not on the first Raft call, if the applied state is unreadable.
        let written = Written::read(&store, group)?;
        let durability = store.log_durability(group);
        Ok(StateMachine {
            store,
            group,
            written: Some(written),
            durability,
        })
    }

    /// The group this state machine belongs to.
    pub fn group(&self) -> GroupId {
        self.group
    }

    fn sm_err(e: Error, verb: ErrorVerb) -> StorageError<NodeId> {
        e.into_storage_error(ErrorSubject::StateMachine, verb)
    }
}

/// Applies of up to this many events run on the state machine's own task
/// instead of the blocking pool. They are unsynced RocksDB writes of a few
/// keys per event (~4 µs per event here), and the hop to a pool thread and
/// back cost more than that for small entries: context switches per append
/// fell 10–25% and 100-event appends gained ~10% (bench/README.md, session
/// 5). Larger applies (a follower catching up, big batches) still go to the
/// pool, so none holds a runtime worker for more than a few milliseconds.
const INLINE_APPLY_EVENTS: usize = 1024;

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
        // Nothing committed is applied (and so seen by anyone) before the
        // leader's own copy is durable (see `log_durability`).
        if let Some(last) = entries.last() {
            self.durability
                .durable(last.log_id.index)
                .await
                .map_err(|e| Self::sm_err(e, ErrorVerb::Write))?;
        }
        let store = self.store.clone();
        let group = self.group;
        let written = self.written.take();
        let applied = if events_in(&entries) <= INLINE_APPLY_EVENTS {
            apply_entries(&store, group, written, entries)
        } else {
            blocking(move || apply_entries(&store, group, written, entries)).await
        };
        let (results, written) = applied.map_err(|e| Self::sm_err(e, ErrorVerb::Write))?;
        self.written = Some(written);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder::new(self.store.clone(), self.group)
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotBytes>, StorageError<NodeId>> {
        let store = self.store.clone();
        let receiving = blocking(move || SnapshotBytes::receiving(&store))
            .await
            .map_err(|e| e.into_storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Box::new(receiving))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<SnapshotBytes>,
    ) -> Result<(), StorageError<NodeId>> {
        self.written = None;
        snapshot::install_async(self.store.clone(), self.group, meta.clone(), *snapshot).await
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

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;
    use crate::command::{Command, ExpectedVersion, NewEvent, StreamAppend};

    fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload,
        }
    }

    fn append(events: usize) -> StreamAppend {
        StreamAppend {
            stream: "s".into(),
            expected: ExpectedVersion::Any,
            events: (0..events)
                .map(|i| NewEvent {
                    id: i.to_string(),
                    event_type: "E".into(),
                    data: "{}".into(),
                    metadata: "".into(),
                    correlation_id: String::new(),
                    causation_id: String::new(),
                })
                .collect(),
        }
    }

    #[test]
    fn an_apply_counts_the_events_of_its_entries() {
        let entries = vec![
            entry(1, EntryPayload::Blank),
            entry(
                2,
                EntryPayload::Normal(Command::append(0, &[append(3), append(100)])),
            ),
            entry(3, EntryPayload::Normal(Command::append(0, &[append(1)]))),
        ];
        assert_eq!(events_in(&entries), 104);
        assert_eq!(events_in(&entries[..1]), 0);
    }

    /// Time-index entries of stream `s` in group `group`.
    fn time_index_entries(store: &Store, group: GroupId) -> anyhow::Result<usize> {
        let prefix = crate::keys::time_index_prefix(group, "s").expect("short stream");
        let cf = store.cf(crate::store::CF_SM);
        let mut count = 0;
        for item in store.db().prefix_iterator_cf(cf, &prefix) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            count += 1;
        }
        Ok(count)
    }

    #[tokio::test]
    async fn a_hard_delete_takes_the_time_index_with_the_events() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(3)?;
        let written = Command::append(1_000, &[append(300)]);
        sm.apply([entry(1, EntryPayload::Normal(written))]).await?;
        assert_eq!(time_index_entries(&store, 3)?, 2, "at versions 128 and 256");
        let delete = Command::Delete {
            stream: "s".into(),
            expected: ExpectedVersion::Exact(300),
            hard: true,
        };
        sm.apply([entry(2, EntryPayload::Normal(delete))]).await?;
        assert_eq!(time_index_entries(&store, 3)?, 0);
        Ok(())
    }

    /// A leader's entry reported before its fsync is applied (and so seen
    /// by anyone) only once that fsync is done.
    #[tokio::test]
    async fn an_apply_waits_for_the_leaders_fsync_of_its_entries() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(3)?;
        let durability = store.log_durability(3);
        let id = durability.written(1);
        let written = Command::append(1_000, &[append(1)]);
        let apply = sm.apply([entry(1, EntryPayload::Normal(written))]);
        tokio::pin!(apply);
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), &mut apply).await;
        assert!(early.is_err(), "applied before the leader's fsync");
        assert_eq!(store.reader().last_position(3)?, 0, "nothing visible yet");
        durability.flushed(id, Ok(()));
        apply.await?;
        assert_eq!(store.reader().last_position(3)?, 1);
        Ok(())
    }

    /// How many state-machine keys lie in `[start, end)`.
    fn keys_between(store: &Store, start: &[u8], end: &[u8]) -> anyhow::Result<usize> {
        let mut count = 0;
        crate::store::View::new(store).scan(crate::store::CF_SM, start, end, |_, _| {
            count += 1;
            Ok(true)
        })?;
        Ok(count)
    }

    #[tokio::test]
    async fn events_an_append_writes_and_its_retention_purges_at_once_leave_nothing_behind()
    -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(3)?;
        let limit = Command::SetStreamMetadata {
            stream: "s".into(),
            max_count: Some(2),
            max_age_ms: None,
            timestamp_ms: 1_000,
        };
        let written = Command::append(1_000, &[append(300)]);
        // One apply, one batch: the positions and time-index entries of
        // versions 1..=298 are written, then deleted, in the same batch.
        sm.apply([
            entry(1, EntryPayload::Normal(limit)),
            entry(2, EntryPayload::Normal(written)),
        ])
        .await?;
        let positions = keys_between(
            &store,
            &crate::keys::position(3, 0),
            &crate::keys::positions_end(3),
        )?;
        assert_eq!(positions, 2, "only the kept events' positions");
        assert_eq!(
            time_index_entries(&store, 3)?,
            0,
            "versions 128 and 256 purged"
        );
        let events = keys_between(
            &store,
            &crate::keys::stream_event(3, "s", 0).expect("short stream"),
            &crate::keys::stream_events_end(3, "s").expect("short stream"),
        )?;
        assert_eq!(events, 2);
        let ids = crate::keys::stored_event_id(3, "s", &[]).expect("short stream");
        let ids_end = crate::keys::prefix_end(&ids).expect("a stream prefix is never all 0xFF");
        assert_eq!(
            keys_between(&store, &ids, &ids_end)?,
            2,
            "only the kept events' ids stay indexed"
        );
        Ok(())
    }

    /// The infos the state machine keeps between applies go with a snapshot
    /// install: after one that takes the group back to before its stream
    /// was written, the stream is new again.
    #[tokio::test]
    async fn a_snapshot_install_forgets_the_stream_infos_kept() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(3)?;
        let mut empty = Vec::new();
        snapshot::serialize(&store, 3, &mut empty)?;
        let create = |index| {
            let mut append = append(1);
            append.expected = ExpectedVersion::NoStream;
            // A new id each time: a retry of the same one is idempotent.
            append.events[0].id = format!("e{index}");
            entry(
                index,
                EntryPayload::Normal(Command::append(1_000, &[append])),
            )
        };
        let created = |results: Vec<CommandResult>| match results.as_slice() {
            [CommandResult::Appended(r)] => r[0].as_ref().map(|o| o.last_version).ok(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(created(sm.apply([create(1)]).await?), Some(1));
        assert_eq!(created(sm.apply([create(2)]).await?), None, "exists now");

        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "empty".into(),
        };
        sm.install_snapshot(&meta, Box::new(SnapshotBytes::from_bytes(empty)))
            .await?;
        assert_eq!(created(sm.apply([create(1)]).await?), Some(1));
        Ok(())
    }
}
