//! [`EntryCache`]: the newest entries of one group's Raft log, in memory.
//!
//! A leader reads every entry back right after appending it, once per
//! follower, to replicate it. Served from here, that costs a clone instead
//! of a RocksDB scan, a decode and a hop to the blocking pool.

use std::collections::VecDeque;

use openraft::Entry;

use crate::type_config::TypeConfig;

/// Most entries kept.
const MAX_ENTRIES: usize = 1024;
/// Most encoded bytes kept.
const MAX_BYTES: usize = 16 << 20;

/// A contiguous run of the newest log entries, with their encoded sizes.
#[derive(Debug, Default)]
pub(crate) struct EntryCache {
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl EntryCache {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    fn next_index(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index + 1)
    }

    /// Adds entries just written after the cached ones; entries that do not
    /// follow them replace the cache.
    pub(crate) fn append(&mut self, entries: impl IntoIterator<Item = (Entry<TypeConfig>, usize)>) {
        for (entry, size) in entries {
            if self
                .next_index()
                .is_some_and(|next| next != entry.log_id.index)
            {
                self.entries.clear();
                self.bytes = 0;
            }
            self.bytes += size;
            self.entries.push_back((entry, size));
        }
        while self.entries.len() > MAX_ENTRIES || self.bytes > MAX_BYTES {
            match self.entries.pop_front() {
                Some((_, size)) => self.bytes -= size,
                None => break,
            }
        }
    }

    /// Forgets entries at and after `index` (the log was truncated there).
    pub(crate) fn truncate_from(&mut self, index: u64) {
        while self.next_index().is_some_and(|next| next > index) {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// Forgets entries at and before `index` (the log was purged there).
    pub(crate) fn purge_upto(&mut self, index: u64) {
        while self.first_index().is_some_and(|first| first <= index) {
            if let Some((_, size)) = self.entries.pop_front() {
                self.bytes -= size;
            }
        }
    }

    /// Clones of the entries with indexes in `[start, end)`, if all of them
    /// (and at least one) are cached.
    pub(crate) fn get(&self, start: u64, end: u64) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first_index()?;
        if start < first || end > self.next_index()? || end <= start {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let count = usize::try_from(end - start).ok()?;
        Some(
            self.entries
                .iter()
                .skip(from)
                .take(count)
                .map(|(e, _)| e.clone())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    use super::*;

    fn entries(range: std::ops::Range<u64>) -> Vec<(Entry<TypeConfig>, usize)> {
        range
            .map(|index| {
                let log_id = LogId::new(CommittedLeaderId::new(1, 1), index);
                let entry = Entry {
                    log_id,
                    payload: EntryPayload::Blank,
                };
                (entry, 10)
            })
            .collect()
    }

    fn indexes(got: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        got.map(|es| es.iter().map(|e| e.log_id.index).collect())
    }

    #[test]
    fn serves_only_ranges_it_holds_whole() {
        let mut cache = EntryCache::default();
        assert_eq!(indexes(cache.get(1, 2)), None);
        cache.append(entries(5..10));
        assert_eq!(indexes(cache.get(5, 10)), Some(vec![5, 6, 7, 8, 9]));
        assert_eq!(indexes(cache.get(7, 9)), Some(vec![7, 8]));
        assert_eq!(indexes(cache.get(4, 6)), None, "starts before the cache");
        assert_eq!(indexes(cache.get(8, 11)), None, "ends after it");
        assert_eq!(indexes(cache.get(6, 6)), None, "empty");
    }

    #[test]
    fn follows_truncation_purge_and_gaps() {
        let mut cache = EntryCache::default();
        cache.append(entries(1..10));
        cache.truncate_from(7);
        assert_eq!(indexes(cache.get(6, 8)), None);
        cache.append(entries(7..9));
        assert_eq!(indexes(cache.get(5, 9)), Some(vec![5, 6, 7, 8]));
        cache.purge_upto(5);
        assert_eq!(indexes(cache.get(5, 7)), None);
        assert_eq!(indexes(cache.get(6, 9)), Some(vec![6, 7, 8]));
        // Entries that do not follow the cached ones replace them.
        cache.append(entries(20..22));
        assert_eq!(indexes(cache.get(6, 9)), None);
        assert_eq!(indexes(cache.get(20, 22)), Some(vec![20, 21]));
        assert_eq!(cache.bytes, 20);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut cache = EntryCache::default();
        cache.append(entries(1..(MAX_ENTRIES as u64 + 101)));
        assert_eq!(cache.entries.len(), MAX_ENTRIES);
        assert_eq!(cache.first_index(), Some(101));
        assert_eq!(cache.bytes, MAX_ENTRIES * 10);
    }
}
