//! Raft snapshots of a group's state machine.
//!
//! A snapshot is the group's state machine itself: building one records its
//! meta (the last applied log id and membership) and copies nothing, so it
//! costs the same for a partition of any size and the log can be compacted
//! as often as the cluster likes. Its bytes are serialized from the live
//! state only when a lagging follower needs them ([`SnapshotBytes`]), and
//! are then at least as new as the meta. Installing bytes newer than their
//! meta is correct because every applied entry is committed, and the state
//! machine skips entries it has already applied (`apply_entries`).
//!
//! # Format
//! ```text
//! magic  b"CAIRNSM" ++ the storage format's digit (b"CAIRNSM3")
//! pair*  key_len: u32 BE, key (without the 4-byte group prefix), value_len: u32 BE, value
//! end    0xFFFF_FFFF, pair count: u64 BE
//! ```
//! Keys are stored without their group prefix, so a snapshot holds exactly one
//! group's state-machine range (see the `keys` module) and nothing else.

use std::time::{SystemTime, UNIX_EPOCH};

use openraft::{
    ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
};
use rocksdb::WriteBatch;

use crate::apply::{AppliedState, read_applied};
use crate::command::GroupId;
use crate::error::{Error, blocking, decode, encode};
use crate::keys;
use crate::snapshot_bytes::SnapshotBytes;
use crate::store::{CF_SM, CF_SNAP, Store, View};
use crate::type_config::{NodeId, TypeConfig};

/// Ends in the storage format ([`keys::FORMAT`]): a replica never installs
/// a snapshot whose keys it would misread.
const MAGIC: &[u8; 8] = b"CAIRNSM3";
const END_MARK: u32 = u32::MAX;
const GROUP_PREFIX: usize = 4;

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

/// A key (without group prefix) and its value, borrowed from snapshot bytes.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// Builds Raft snapshots of one group's state machine.
///
/// A built snapshot stands for the group's state as of its last applied log
/// id, and becomes the group's current snapshot, which survives restarts.
/// Building one reads and writes one key.
#[derive(Debug)]
pub struct SnapshotBuilder {
    store: Store,
    group: GroupId,
}

impl SnapshotBuilder {
    pub(crate) fn new(store: Store, group: GroupId) -> SnapshotBuilder {
        SnapshotBuilder { store, group }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let store = self.store.clone();
        let group = self.group;
        let meta = blocking(move || build(&store, group))
            .await
            .map_err(|e| e.into_storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotBytes::of_group(self.store.clone(), self.group)),
        })
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) -> Result<(), Error> {
    let n = u32::try_from(n)
        .map_err(|_| Error::Corrupt(format!("snapshot item of {n} bytes is too large")))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

/// Records the group's applied state as its current snapshot.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group))]
fn build(store: &Store, group: GroupId) -> Result<Meta, Error> {
    let applied = read_applied(store, group)?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let snapshot_id = match &applied.last_applied {
        Some(id) => format!("{group}-{}-{}-{nanos:x}", id.leader_id, id.index),
        None => format!("{group}-none-{nanos:x}"),
    };
    let meta = Meta {
        last_log_id: applied.last_applied,
        last_membership: applied.last_membership,
        snapshot_id,
    };
    save_current(store, group, &meta)?;
    Ok(meta)
}

/// Serializes the group's state-machine range as of one consistent view.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group))]
pub(crate) fn serialize(store: &Store, group: GroupId) -> Result<Vec<u8>, Error> {
    let view = View::new(store);
    let mut data = Vec::with_capacity(1024);
    data.extend_from_slice(MAGIC);
    let mut count: u64 = 0;
    let (start, end) = keys::group_range(group);
    view.scan(CF_SM, &start, &end, |k, v| {
        let k = k.get(GROUP_PREFIX..).ok_or_else(|| {
            Error::Corrupt("state-machine key shorter than its group prefix".into())
        })?;
        put_u32(&mut data, k.len())?;
        data.extend_from_slice(k);
        put_u32(&mut data, v.len())?;
        data.extend_from_slice(v);
        count += 1;
        Ok(true)
    })?;
    data.extend_from_slice(&END_MARK.to_be_bytes());
    data.extend_from_slice(&count.to_be_bytes());
    Ok(data)
}

/// Makes `meta` the group's current snapshot unless a newer one is already
/// stored.
fn save_current(store: &Store, group: GroupId, meta: &Meta) -> Result<(), Error> {
    let _guard = store
        .inner
        .snapshot_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(existing) = current_meta(store, group)?
        && existing.last_log_id > meta.last_log_id
    {
        return Ok(());
    }
    let mut batch = WriteBatch::default();
    put_current(store, &mut batch, group, meta)?;
    store.write(batch, false)
}

fn put_current(
    store: &Store,
    batch: &mut WriteBatch,
    group: GroupId,
    meta: &Meta,
) -> Result<(), Error> {
    let cf = store.cf(CF_SNAP);
    batch.put_cf(
        cf,
        keys::raft_snapshot_meta(group),
        encode("snapshot meta", meta)?,
    );
    // Versions before lazy snapshots kept a serialized copy here.
    batch.delete_cf(cf, keys::raft_snapshot_data(group));
    Ok(())
}

fn current_meta(store: &Store, group: GroupId) -> Result<Option<Meta>, Error> {
    match store
        .db()
        .get_cf(store.cf(CF_SNAP), keys::raft_snapshot_meta(group))?
    {
        Some(b) => Ok(Some(decode("snapshot meta", &b)?)),
        None => Ok(None),
    }
}

/// The group's current snapshot (the last one built or installed), if any;
/// its bytes are serialized when first read.
pub(crate) fn current(
    store: &Store,
    group: GroupId,
) -> Result<Option<Snapshot<TypeConfig>>, Error> {
    Ok(current_meta(store, group)?.map(|meta| Snapshot {
        meta,
        snapshot: Box::new(SnapshotBytes::of_group(store.clone(), group)),
    }))
}

/// Parses snapshot bytes into (key without group prefix, value) pairs.
fn parse(data: &[u8]) -> Result<Vec<Pair<'_>>, Error> {
    let bad = |what: &str| Error::InvalidSnapshot(what.to_owned());
    let mut rest = data
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| bad("bad magic (not a snapshot of this storage format)"))?;
    let mut take = |n: usize| -> Result<&[u8], Error> {
        if rest.len() < n {
            return Err(bad("truncated"));
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let mut pairs = Vec::new();
    loop {
        let len = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad("length"))?);
        if len == END_MARK {
            let count = u64::from_be_bytes(take(8)?.try_into().map_err(|_| bad("count"))?);
            if count != pairs.len() as u64 {
                return Err(bad("pair count does not match"));
            }
            break;
        }
        let key = take(len as usize)?;
        if key.is_empty() {
            return Err(bad("empty key"));
        }
        let vlen = u32::from_be_bytes(take(4)?.try_into().map_err(|_| bad("length"))?);
        let value = take(vlen as usize)?;
        pairs.push((key, value));
    }
    if !rest.is_empty() {
        return Err(bad("trailing bytes"));
    }
    Ok(pairs)
}

/// Replaces the group's whole state-machine state with the snapshot's, and
/// makes `meta` the current snapshot, in one synced write. A malformed
/// snapshot, or one whose state is older than its meta, changes nothing.
///
/// The state may be newer than `meta` (it was serialized when sent, not when
/// built): the group's applied log id is then the state's own, and openraft's
/// re-sending of the entries in between is skipped by `apply_entries`.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group, snapshot = %meta.snapshot_id))]
pub(crate) fn install(
    store: &Store,
    group: GroupId,
    meta: &Meta,
    data: Vec<u8>,
) -> Result<(), Error> {
    let pairs = parse(&data)?;
    let sm = store.cf(CF_SM);
    let (start, end) = keys::group_range(group);
    let applied_key = keys::applied(group);
    let mut applied = AppliedState {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
    };
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(sm, &start, &end);
    let prefix = group.to_be_bytes();
    for (k, v) in pairs {
        let mut key = Vec::with_capacity(GROUP_PREFIX + k.len());
        key.extend_from_slice(&prefix);
        key.extend_from_slice(k);
        if key.as_slice() >= end.as_slice() {
            return Err(Error::InvalidSnapshot(
                "key outside the group's range".into(),
            ));
        }
        if key == applied_key {
            let state: AppliedState = decode("applied state", v)?;
            if state.last_applied < meta.last_log_id {
                return Err(Error::InvalidSnapshot(format!(
                    "state applied up to {:?}, older than the snapshot's {:?}",
                    state.last_applied, meta.last_log_id
                )));
            }
            applied = state;
            continue;
        }
        batch.put_cf(sm, key, v);
    }
    batch.put_cf(sm, applied_key, encode("applied state", &applied)?);
    let _guard = store
        .inner
        .snapshot_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    put_current(store, &mut batch, group, meta)?;
    store
        .inner
        .recent
        .write_replacing(group, || store.write(batch, true))?;
    if let Some(last) = applied.last_applied {
        store.inner.applied.advance(group, last.index);
    }
    Ok(())
}

/// Installs through openraft's error type (used by the state machine).
pub(crate) async fn install_async(
    store: Store,
    group: GroupId,
    meta: Meta,
    data: Vec<u8>,
) -> Result<(), StorageError<NodeId>> {
    let sig = meta.signature();
    blocking(move || install(&store, group, &meta, data))
        .await
        .map_err(|e| e.into_storage_error(ErrorSubject::Snapshot(Some(sig)), ErrorVerb::Write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_magic_names_the_storage_format() {
        assert_eq!(u32::from(MAGIC[7] - b'0'), keys::FORMAT);
    }

    #[test]
    fn parse_rejects_damaged_snapshots() {
        let mut good = MAGIC.to_vec();
        good.extend_from_slice(&1u32.to_be_bytes());
        good.push(0x20);
        good.extend_from_slice(&2u32.to_be_bytes());
        good.extend_from_slice(b"ok");
        good.extend_from_slice(&END_MARK.to_be_bytes());
        good.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(parse(&good).expect("valid").len(), 1);

        for cut in 0..good.len() {
            assert!(parse(&good[..cut]).is_err(), "truncated at {cut} accepted");
        }
        let mut wrong_count = good.clone();
        let n = wrong_count.len();
        wrong_count[n - 1] = 2;
        assert!(parse(&wrong_count).is_err());
    }
}
