//! [`InfoCache`]: the stream infos a group's state machine wrote lately,
//! kept between applies.
//!
//! Every append reads its stream's info (version, deletion, retention) before
//! writing it back. A stream that is written to is usually written to again
//! soon, and its info then sits in the memtable: the lookup is a search of a
//! skiplist of ~10^5 keys whose lower levels miss the CPU caches, ~8% of the
//! nodes' CPU under single-event appends from 256 writers. Skipping it saves
//! less than that (the insert that follows then pays those cache misses:
//! a few percent, bench/README.md, session 14), and spares the lookup of an
//! info flushed out of the memtable, which reads an SST block instead.
//!
//! The state machine is the only writer of a group's infos, so it can keep
//! the ones it wrote: a cached value is the stored one as long as every
//! write of the group goes through it, which holds because the cache lives
//! in the state machine's [`Written`](crate::apply::Written) and is dropped
//! with it after a failed apply or a snapshot install.

use std::collections::HashMap;

/// Most infos kept per group. At ~100 bytes each (key and value) that is
/// ~400 KiB per group; beyond it the cache starts over rather than tracking
/// recency, so that streams written once each cost no bookkeeping.
const MAX_INFOS: usize = 4096;

/// Encoded stream infos by key, as the group's last writes left them.
#[derive(Debug, Default)]
pub(crate) struct InfoCache {
    infos: HashMap<Vec<u8>, Vec<u8>, foldhash::fast::RandomState>,
}

impl InfoCache {
    /// The stored value of info `key`, if this cache knows it.
    pub(crate) fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.infos.get(key).map(Vec::as_slice)
    }

    /// Notes that info `key` was just written as `value` (`None`: deleted).
    pub(crate) fn wrote(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Some(value) = value else {
            self.infos.remove(key);
            return;
        };
        if let Some(cached) = self.infos.get_mut(key) {
            cached.clear();
            cached.extend_from_slice(value);
            return;
        }
        if self.infos.len() >= MAX_INFOS {
            self.infos.clear();
        }
        self.infos.insert(key.to_vec(), value.to_vec());
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.infos.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_write_and_forgets_deletes() {
        let mut cache = InfoCache::default();
        cache.wrote(b"a", Some(b"1"));
        cache.wrote(b"a", Some(b"22"));
        assert_eq!(cache.get(b"a"), Some(&b"22"[..]));
        cache.wrote(b"a", None);
        assert_eq!(cache.get(b"a"), None);
    }

    #[test]
    fn starts_over_when_full() {
        let mut cache = InfoCache::default();
        for i in 0..MAX_INFOS {
            cache.wrote(&i.to_be_bytes(), Some(b"v"));
        }
        assert_eq!(cache.len(), MAX_INFOS);
        // Rewriting a kept key does not count as a new one.
        cache.wrote(&0usize.to_be_bytes(), Some(b"w"));
        assert_eq!(cache.len(), MAX_INFOS);
        cache.wrote(b"new", Some(b"v"));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(b"new"), Some(&b"v"[..]));
    }
}
