//! An apply's writes before they become one RocksDB batch: every key and
//! value in one buffer, which a group's next apply reuses.
//!
//! An event appended wrote four keys and three values, each its own `Vec`,
//! plus an entry in a hash map of owned keys: under 100-event appends the
//! allocator's fast path (its free lists missing the CPU caches) and the
//! kernel's zeroing of fresh pages for the apply's big vectors were ~7% of
//! the nodes' samples in a profile (bench/README.md, session 27). Here a write is two spans
//! of one buffer; the keys the apply reads back are found through a hash
//! table of indexes into the list of those writes, hashing the key's bytes
//! where they lie.

use std::hash::BuildHasher;
use std::ops::Range;

use hashbrown::HashTable;
use itertools::Itertools;

use crate::keys;

/// Bytes of the buffer a group keeps between applies at most: an entry of
/// 64 appends × 100 events needs ~2.5 MB; a bigger buffer (a snapshot's worth of
/// catch-up) is let go.
const KEPT_BYTES: usize = 4 << 20;

/// Where a key or value lies in [`Writes`]' buffer.
#[derive(Clone, Debug)]
pub(crate) struct Span(Range<usize>);

impl Span {
    /// The bytes at this span of `bytes`.
    fn of<'b>(&self, bytes: &'b [u8]) -> &'b [u8] {
        &bytes[self.0.clone()]
    }
}

/// One apply's writes: the keys it may read back (the overlay: each key's
/// latest value, `None` when deleted, in the order each key was first
/// written) and the writes of keys it never reads back (unread).
#[derive(Debug, Default)]
pub(crate) struct Writes {
    bytes: Vec<u8>,
    overlay: Vec<(Span, Option<Span>)>,
    /// Indexes into `overlay`, by the hash of their key's bytes. foldhash,
    /// not the standard SipHash: hashing the overlay's keys was 3% of a
    /// catching-up follower's CPU. Seeded per `Writes`, like SipHash.
    index: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
    unread: Vec<(Span, Span)>,
}

impl Writes {
    /// Empties the writes for the next apply, keeping their room (up to
    /// [`KEPT_BYTES`] of buffer), and makes room for `events` more.
    pub(crate) fn start(&mut self, events: usize) {
        if self.bytes.capacity() > KEPT_BYTES {
            *self = Writes::default();
        }
        self.bytes.clear();
        self.overlay.clear();
        self.index.clear();
        self.unread.clear();
        // Each event writes its body and id (overlay), its position
        // (unread); then the stream infos, counters and applied state.
        // Grown from empty by doubling, a hash table rehashes every key it
        // holds at each step (1% of the nodes' CPU under 64 writers × 100
        // events); after a group's first apply this is room it already has.
        self.overlay.reserve(2 * events + 8);
        // Empty: nothing to rehash.
        self.index.reserve(2 * events + 8, |_| 0);
        self.unread.reserve(events);
    }

    /// Appends what `write` writes to the buffer; returns where it lies.
    pub(crate) fn add<E>(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<Span, E> {
        let start = self.bytes.len();
        match write(&mut self.bytes) {
            Ok(()) => Ok(Span(start..self.bytes.len())),
            Err(e) => {
                self.bytes.truncate(start);
                Err(e)
            }
        }
    }

    /// Copies `bytes` into the buffer.
    pub(crate) fn add_slice(&mut self, bytes: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        Span(start..self.bytes.len())
    }

    fn slice(&self, span: &Span) -> &[u8] {
        span.of(&self.bytes)
    }

    /// Sets `key` to `value` (`None`: deletes it), where reads of this
    /// apply see it.
    pub(crate) fn put(&mut self, key: Span, value: Option<Span>) {
        let hash = self.hasher.hash_one(self.slice(&key));
        let Writes {
            bytes,
            overlay,
            index,
            hasher,
            ..
        } = self;
        let found = index
            .find(hash, |&i| overlay[i].0.of(bytes) == key.of(bytes))
            .copied();
        match found {
            Some(i) => overlay[i].1 = value,
            None => {
                index.insert_unique(hash, overlay.len(), |&i| {
                    hasher.hash_one(overlay[i].0.of(bytes))
                });
                overlay.push((key, value));
            }
        }
    }

    /// Writes `key`, which this apply never reads back (it may still delete
    /// it: the batch writes the overlay's delete after this).
    pub(crate) fn put_unread(&mut self, key: Span, value: Span) {
        self.unread.push((key, value));
    }

    /// What this apply wrote last under `key`: `Some(None)` if it deleted
    /// it, `None` if it did not write it (or only as an unread key).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        let hash = self.hasher.hash_one(key);
        let &i = self
            .index
            .find(hash, |&i| self.slice(&self.overlay[i].0) == key)?;
        Some(self.overlay[i].1.as_ref().map(|v| self.slice(v)))
    }

    /// The overlay's writes (not its deletes) in the order first written.
    pub(crate) fn overlay_puts(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.overlay
            .iter()
            .filter_map(|(k, v)| Some((self.slice(k), self.slice(v.as_ref()?))))
    }

    /// How many bytes a batch of every write needs, at most, given what a
    /// record takes besides its key and value.
    pub(crate) fn batch_bytes(&self, record_overhead: usize) -> usize {
        let unread = self.unread.iter().map(|(k, v)| (k, Some(v)));
        let overlay = self.overlay.iter().map(|(k, v)| (k, v.as_ref()));
        unread
            .chain(overlay)
            .map(|(k, v)| k.0.len() + v.map_or(0, |v| v.0.len()) + record_overhead)
            .sum()
    }

    /// Every write in key order, an unread write ahead of the overlay's
    /// write or delete of the same key (which must win).
    ///
    /// Ordered so, RocksDB inserts a batch's keys into the memtable's
    /// skiplist one after the other, and each insert searches from the top
    /// of a list of ~10^5 keys (with concurrent memtable writes, RocksDB's
    /// default and ours, it keeps no position between inserts), most of
    /// whose levels miss the CPU caches, except where the previous search
    /// just went: keys that follow each other (a stream's new events and
    /// their ids, a partition's positions) find that path in the caches.
    /// The search fell from 10% to 2.4% of the nodes' CPU under 100-event
    /// appends (bench/README.md, session 13).
    ///
    /// The unread writes come nearly in order (positions ascending), so
    /// their sort is about one pass. The overlay's come in the order they
    /// were first written: each append's event ids, and its events, in key
    /// order (versions ascend; an append's UUIDv7 ids ascend as they were
    /// made), the two interleaved. Split apart, each is a series of sorted
    /// runs, which the standard stable sort merges instead of sorting every
    /// key, for runs of at least ~√n keys (a 100-event append in an entry
    /// of up to ~10^4 keys); shorter runs cost what a full sort does. A
    /// full sort of the overlay in hash order was 10% of an apply's
    /// instructions under 100-event appends; sorting the runs made the
    /// apply 3.7% cheaper (`storage/examples/apply_cost.rs`, session 26).
    pub(crate) fn in_key_order(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        let by_key = |a: &(&[u8], Option<&[u8]>), b: &(&[u8], Option<&[u8]>)| a.0.cmp(b.0);
        let mut unread: Vec<_> = self
            .unread
            .iter()
            .map(|(k, v)| (self.slice(k), Some(self.slice(v))))
            .collect();
        unread.sort_by(by_key);
        let (mut ids, mut rest): (Vec<_>, Vec<_>) = self
            .overlay
            .iter()
            .map(|(k, v)| (self.slice(k), v.as_ref().map(|v| self.slice(v))))
            .partition(|(k, _)| keys::is_event_id(k));
        ids.sort_by(by_key);
        rest.sort_by(by_key);
        let overlay = ids.into_iter().merge_by(rest, |a, b| a.0 <= b.0);
        unread.into_iter().merge_by(overlay, |u, o| u.0 <= o.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn put(w: &mut Writes, key: &[u8], value: Option<&[u8]>) {
        let k = w.add_slice(key);
        let v = value.map(|v| w.add_slice(v));
        w.put(k, v);
    }

    #[test]
    fn reads_see_the_last_write_of_a_key() {
        let mut w = Writes::default();
        w.start(4);
        put(&mut w, b"a", Some(b"1"));
        put(&mut w, b"b", Some(b"2"));
        put(&mut w, b"a", Some(b"3"));
        put(&mut w, b"b", None);
        assert_eq!(w.get(b"a"), Some(Some(&b"3"[..])));
        assert_eq!(w.get(b"b"), Some(None));
        assert_eq!(w.get(b"c"), None);
        let puts: Vec<_> = w.overlay_puts().collect();
        assert_eq!(puts, vec![(&b"a"[..], &b"3"[..])]);
    }

    #[test]
    fn writes_come_out_in_key_order_with_the_overlay_last() {
        let mut w = Writes::default();
        w.start(4);
        // Event-id keys (tag 0x13 after the group) and others, out of order.
        let id = |n: u8| vec![0, 0, 0, 1, 0x13, n];
        let other = |n: u8| vec![0, 0, 0, 1, 0x30, n];
        for n in [5u8, 1, 3] {
            put(&mut w, &id(n), Some(b"i"));
            put(&mut w, &other(n), Some(b"o"));
        }
        let (k, v) = (w.add_slice(&other(3)), w.add_slice(b"unread"));
        w.put_unread(k, v);
        let (k, v) = (w.add_slice(&other(0)), w.add_slice(b"unread"));
        w.put_unread(k, v);
        put(&mut w, &other(0), None);
        let order: Vec<(Vec<u8>, Option<Vec<u8>>)> = w
            .in_key_order()
            .map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec)))
            .collect();
        let expected = vec![
            (id(1), Some(b"i".to_vec())),
            (id(3), Some(b"i".to_vec())),
            (id(5), Some(b"i".to_vec())),
            (other(0), Some(b"unread".to_vec())),
            (other(0), None),
            (other(1), Some(b"o".to_vec())),
            (other(3), Some(b"unread".to_vec())),
            (other(3), Some(b"o".to_vec())),
            (other(5), Some(b"o".to_vec())),
        ];
        assert_eq!(order, expected);
    }

    #[test]
    fn a_failed_write_leaves_nothing_in_the_buffer() {
        let mut w = Writes::default();
        w.start(1);
        let kept = w.add_slice(b"kept");
        let failed = w.add(|b| {
            b.extend_from_slice(b"half");
            Err("too long")
        });
        assert!(failed.is_err());
        let next = w.add_slice(b"next");
        assert_eq!(next.0, 4..8);
        w.put(kept, Some(next));
        assert_eq!(w.get(b"kept"), Some(Some(&b"next"[..])));
    }

    #[test]
    fn a_big_buffer_is_let_go_and_a_small_one_kept() {
        let mut w = Writes::default();
        w.start(1);
        w.add_slice(&[0; 1024]);
        let room = w.bytes.capacity();
        w.start(1);
        assert_eq!(w.bytes.capacity(), room);
        w.add_slice(&vec![0; KEPT_BYTES + 1]);
        w.start(1);
        assert!(w.bytes.capacity() < KEPT_BYTES);
    }
}
