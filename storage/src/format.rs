//! The storage format stamp, and the upgrade of a store from format 2.
//!
//! A store records the layout it was written in ([`keys::FORMAT`], under
//! [`keys::FORMAT_KEY`] in the `node` column family). Opening one:
//! - an empty store is stamped with this build's format;
//! - format 2 (keys of a stream grouped by kind, not by stream) is rewritten
//!   to format 3 in place, then stamped: only the state machine's stream
//!   keys move, their values stay as they are;
//! - anything else (format 1, which had no stamp, or a newer format) is
//!   refused with [`Error::Format`], and nothing is written.
//!
//! The upgrade survives a crash at any point: it moves each key in the same
//! batch that deletes its old one, format 3 never writes format 2's key tags
//! (so a rerun finds only what is left to move), and the stamp is written,
//! synced, only after every move.

use std::path::Path;

use rocksdb::{DB, ReadOptions, WriteBatch, WriteOptions};

use crate::error::Error;
use crate::keys;
use crate::store::{CF_NODE, CF_SM};

/// Keys moved per write while upgrading.
const UPGRADE_BATCH_KEYS: usize = 10_000;

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is created when the store is opened")
}

/// Checks (and if need be upgrades or stamps) the format of the store
/// `db`, opened from `path`.
pub(crate) fn check(db: &DB, path: &Path) -> Result<(), Error> {
    let found = match db.get_cf(cf(db, CF_NODE), keys::FORMAT_KEY)? {
        Some(stamp) => {
            let stamp: [u8; 4] = stamp.as_slice().try_into().map_err(|_| {
                Error::Corrupt(format!("storage format stamp {stamp:?} is not 4 bytes"))
            })?;
            u32::from_be_bytes(stamp)
        }
        None if has_state(db) => 1,
        None => return stamp(db),
    };
    match found {
        keys::FORMAT => Ok(()),
        2 => {
            let moved = upgrade_from_2(db)?;
            tracing::info!(
                path = %path.display(),
                keys = moved,
                "storage upgraded from format 2 to {}",
                keys::FORMAT
            );
            stamp(db)
        }
        found => Err(Error::Format {
            path: path.to_path_buf(),
            found,
            expected: keys::FORMAT,
        }),
    }
}

/// Whether the state machine holds anything.
fn has_state(db: &DB) -> bool {
    let mut opts = ReadOptions::default();
    opts.set_total_order_seek(true);
    let mut sm = db.raw_iterator_cf_opt(cf(db, CF_SM), opts);
    sm.seek_to_first();
    sm.valid()
}

/// Stamps this build's format, synced: the last write of an upgrade.
fn stamp(db: &DB) -> Result<(), Error> {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    let stamp = keys::FORMAT.to_be_bytes();
    db.put_cf_opt(cf(db, CF_NODE), keys::FORMAT_KEY, stamp, &opts)?;
    Ok(())
}

/// Moves every format-2 stream key to its format-3 key; returns how many.
fn upgrade_from_2(db: &DB) -> Result<u64, Error> {
    let sm = cf(db, CF_SM);
    let mut opts = ReadOptions::default();
    opts.set_total_order_seek(true);
    // The iterator reads as of its creation: it never sees the moved keys.
    let mut it = db.raw_iterator_cf_opt(sm, opts);
    it.seek_to_first();
    let mut batch = WriteBatch::default();
    let mut moved = 0;
    while let Some((key, value)) = it.item() {
        if let Some(new_key) = keys::from_format_2(key) {
            batch.put_cf(sm, new_key, value);
            batch.delete_cf(sm, key);
            moved += 1;
            if batch.len() >= 2 * UPGRADE_BATCH_KEYS {
                db.write(std::mem::take(&mut batch))?;
            }
        }
        it.next();
    }
    it.status()?;
    db.write(batch)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;
    use crate::apply::apply_entries;
    use crate::command::{Command, ExpectedVersion, NewEvent, StreamAppend};
    use crate::store::{Store, View};

    fn sm_contents(store: &Store) -> anyhow::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut all = Vec::new();
        View::new(store).scan(CF_SM, &[], &[0xFF; 8], |k, v| {
            all.push((k.to_vec(), v.to_vec()));
            Ok(true)
        })?;
        Ok(all)
    }

    fn append(stream: &str, events: usize, first: usize) -> StreamAppend {
        StreamAppend {
            stream: stream.into(),
            expected: ExpectedVersion::Any,
            events: (first..first + events)
                .map(|i| NewEvent {
                    id: format!("0190a5e4-0000-7000-8000-{i:012}"),
                    event_type: "E".into(),
                    data: format!("{{\"n\":{i}}}").into(),
                    metadata: "".into(),
                    correlation_id: String::new(),
                    causation_id: String::new(),
                })
                .collect(),
        }
    }

    /// A store that format 3 wrote, rewritten as format 2 would have
    /// written it (stamp included), opens as exactly what format 3 wrote;
    /// so does one an upgrade was interrupted in (some keys moved, no
    /// stamp yet).
    #[tokio::test]
    async fn a_format_2_store_opens_upgraded_with_every_key_moved() -> anyhow::Result<()> {
        for every in [1, 2] {
            opens_upgraded(every).await?;
        }
        Ok(())
    }

    /// Writes a store, rewrites every `every`-th stream key as format 2,
    /// and opens it.
    async fn opens_upgraded(every: usize) -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        // Streams in two groups, with events past the time index's stride,
        // an actor snapshot and a soft delete: every kind of stream key.
        let mut entries = Vec::new();
        for (index, appends) in [
            vec![append("a", 200, 0), append("b", 3, 0)],
            vec![append("a", 1, 200)],
        ]
        .into_iter()
        .enumerate()
        {
            entries.push(Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), index as u64 + 1),
                payload: EntryPayload::Normal(Command::append(1_700_000_000_000, &appends)),
            });
        }
        entries.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 3),
            payload: EntryPayload::Normal(Command::SaveActorSnapshot {
                stream: "a".into(),
                version: 150,
                state: "{}".into(),
            }),
        });
        entries.push(Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 4),
            payload: EntryPayload::Normal(Command::Delete {
                stream: "b".into(),
                expected: ExpectedVersion::Any,
                hard: false,
            }),
        });
        for group in [3, 11] {
            apply_entries(&store, group, None, entries.clone())?;
        }
        let written = sm_contents(&store)?;

        let mut as_format_2 = WriteBatch::default();
        let sm = store.cf(CF_SM);
        let mut stream_keys = 0;
        for (k, v) in written.iter().step_by(every) {
            if let Some(old) = keys::to_format_2(k) {
                as_format_2.delete_cf(sm, k);
                as_format_2.put_cf(sm, old, v);
                stream_keys += 1;
            }
        }
        assert!(stream_keys > 200, "{stream_keys} stream keys");
        store.db().write(as_format_2)?;
        store.put_node_meta(keys::FORMAT_KEY, &2u32.to_be_bytes())?;
        assert_ne!(sm_contents(&store)?, written);
        store.close(Duration::from_secs(10)).await?;

        let store = Store::open(dir.path())?;
        assert_eq!(sm_contents(&store)?, written);
        assert_eq!(
            store.node_meta(keys::FORMAT_KEY)?.as_deref(),
            Some(&keys::FORMAT.to_be_bytes()[..])
        );
        let reader = store.reader();
        let info = reader.stream_info(3, "a")?.expect("stream a");
        assert_eq!(info.version, 201);
        assert_eq!(
            reader.event_version(11, "b", "0190a5e4-0000-7000-8000-000000000002")?,
            Some(3)
        );
        drop(reader);
        store.close(Duration::from_secs(10)).await?;
        Ok(())
    }
}
