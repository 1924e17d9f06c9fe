//! Node-local storage of projection read models: for each (projection,
//! partition), a key/value map and the partition-log position consumed so far,
//! always committed together in one write batch, so an event is counted
//! exactly once however the node stops.
//!
//! This data is not replicated: every replica derives it from its own copy of
//! the partition log and can rebuild it from position 1. A Raft snapshot
//! install leaves it alone (the log positions it refers to stay valid).
//!
//! Key layout in the `proj` column family, ordered bytewise:
//! `name_len u8 ++ name ++ group u32 BE ++ tag u8 ++ rest`, where tag `0x00` is
//! the checkpoint (no rest; value = position u64 BE) and tag `0x01` is a
//! read-model entry (rest = key bytes; value = the entry's bytes).

use bytes::Bytes;
use rocksdb::WriteBatch;

use crate::command::GroupId;
use crate::error::Error;
use crate::store::{CF_PROJ, Store, View};

const TAG_CHECKPOINT: u8 = 0x00;
const TAG_ENTRY: u8 = 0x01;
/// One past every tag: the end of a (projection, partition) range.
const TAG_END: u8 = 0x02;

fn prefix(name: &str, group: GroupId, tag: u8) -> Vec<u8> {
    let name = name.as_bytes();
    assert!(
        name.len() <= u8::MAX as usize,
        "projection names are at most 255 bytes"
    );
    let mut key = Vec::with_capacity(name.len() + 6);
    key.push(name.len() as u8);
    key.extend_from_slice(name);
    key.extend_from_slice(&group.to_be_bytes());
    key.push(tag);
    key
}

fn entry_key(name: &str, group: GroupId, key: &str) -> Vec<u8> {
    let mut k = prefix(name, group, TAG_ENTRY);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Changes to a read model committed with a new checkpoint: `Some` puts, `None` deletes.
pub type ProjectionChanges = Vec<(String, Option<Bytes>)>;

impl Store {
    /// The last partition-log position projection `name` has consumed in
    /// partition `group` (0 = none).
    pub fn projection_checkpoint(&self, name: &str, group: GroupId) -> Result<u64, Error> {
        match View::new(self).get(CF_PROJ, &prefix(name, group, TAG_CHECKPOINT))? {
            None => Ok(0),
            Some(bytes) => {
                let array: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    Error::Corrupt(format!(
                        "projection `{name}` checkpoint is {} bytes",
                        bytes.len()
                    ))
                })?;
                Ok(u64::from_be_bytes(array))
            }
        }
    }

    /// One entry of projection `name`'s read model for partition `group`.
    pub fn projection_get(
        &self,
        name: &str,
        group: GroupId,
        key: &str,
    ) -> Result<Option<Bytes>, Error> {
        Ok(View::new(self)
            .get(CF_PROJ, &entry_key(name, group, key))?
            .map(Bytes::from))
    }

    /// Entries of projection `name`'s read model for partition `group` whose
    /// key starts with `key_prefix`, in key order.
    pub fn projection_scan(
        &self,
        name: &str,
        group: GroupId,
        key_prefix: &str,
    ) -> Result<Vec<(String, Bytes)>, Error> {
        let start = entry_key(name, group, key_prefix);
        let end = prefix(name, group, TAG_END);
        let skip = prefix(name, group, TAG_ENTRY).len();
        let mut found = Vec::new();
        View::new(self).scan(CF_PROJ, &start, &end, |k, v| {
            if !k.starts_with(&start) {
                return Ok(false);
            }
            let key = String::from_utf8(k[skip..].to_vec())
                .map_err(|_| Error::Corrupt("projection key is not UTF-8".into()))?;
            found.push((key, Bytes::copy_from_slice(v)));
            Ok(true)
        })?;
        Ok(found)
    }

    /// Applies `changes` to the read model and moves the checkpoint to
    /// `checkpoint`, atomically. Unsynced: a crash loses both or neither, and
    /// the events are consumed again from the partition log.
    pub fn projection_commit(
        &self,
        name: &str,
        group: GroupId,
        checkpoint: u64,
        changes: ProjectionChanges,
    ) -> Result<(), Error> {
        let cf = self.cf(CF_PROJ);
        let mut batch = WriteBatch::default();
        for (key, value) in changes {
            match value {
                Some(value) => batch.put_cf(cf, entry_key(name, group, &key), value),
                None => batch.delete_cf(cf, entry_key(name, group, &key)),
            }
        }
        batch.put_cf(
            cf,
            prefix(name, group, TAG_CHECKPOINT),
            checkpoint.to_be_bytes(),
        );
        self.write(batch, false)
    }

    /// Forgets projection `name`'s read model and checkpoint for partition
    /// `group`, so it is rebuilt from the start of the partition log.
    pub fn projection_reset(&self, name: &str, group: GroupId) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(CF_PROJ),
            prefix(name, group, TAG_CHECKPOINT),
            prefix(name, group, TAG_END),
        );
        self.write(batch, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_model_and_checkpoint_commit_together_and_reset() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let store = Store::open(dir.path()).expect("open");
        assert_eq!(store.projection_checkpoint("p", 3).expect("checkpoint"), 0);
        let changes = vec![
            ("email/a@x".to_string(), Some(Bytes::from_static(b"a"))),
            ("email/b@x".to_string(), Some(Bytes::from_static(b"b"))),
            ("total".to_string(), Some(Bytes::from_static(b"2"))),
        ];
        store.projection_commit("p", 3, 7, changes).expect("commit");
        store
            .projection_commit("p", 3, 9, vec![("email/a@x".into(), None)])
            .expect("commit");
        assert_eq!(store.projection_checkpoint("p", 3).expect("checkpoint"), 9);
        assert_eq!(
            store
                .projection_checkpoint("p", 4)
                .expect("other partition"),
            0
        );
        assert_eq!(
            store
                .projection_checkpoint("pp", 3)
                .expect("other projection"),
            0
        );
        let emails = store.projection_scan("p", 3, "email/").expect("scan");
        assert_eq!(
            emails,
            vec![("email/b@x".to_string(), Bytes::from_static(b"b"))]
        );
        assert_eq!(
            store.projection_get("p", 3, "total").expect("get"),
            Some(Bytes::from_static(b"2"))
        );
        store.projection_reset("p", 3).expect("reset");
        assert_eq!(store.projection_checkpoint("p", 3).expect("checkpoint"), 0);
        assert!(store.projection_scan("p", 3, "").expect("scan").is_empty());
    }
}
