//! The byte layout and ordering of every key Cairn stores.
//!
//! RocksDB orders keys bytewise, so every number in a key is big-endian and
//! every variable-length component that is followed by more key bytes is
//! length-prefixed. That gives three guarantees the rest of the crate relies on:
//!
//! 1. **A group is one contiguous range.** In the group-scoped column families
//!    (`log`, `sm`) every key is `group: u32 BE ++ tag: u8 ++ rest`, and no tag
//!    is `0xFF`, so `[group ++ 0x00, group ++ 0xFF)` ([`group_range`]) holds all
//!    of a group's keys and nothing else, for every group id including
//!    [`META_GROUP`](crate::META_GROUP) (`0xFFFF_FFFF`).
//! 2. **Each kind of a stream's keys is one contiguous range**, and its
//!    info, events, actor snapshots and time index together are one too.
//!    Stream ids are written as `len: u16 BE ++ utf8 bytes`, so the keys of
//!    stream `"a"` can never be a prefix of (or interleave with) those of
//!    stream `"ab"`.
//! 3. **Numbers sort numerically.** Log indexes, versions and positions are
//!    `u64 BE`, so iteration order is numeric order.
//!
//! # Column family `log` (Raft log and vote, per group)
//! | key | value |
//! | --- | --- |
//! | `group ++ 0x01` | vote: postcard `Vote<NodeId>` |
//! | `group ++ 0x02` | (the committed log id in earlier builds: not read, never reused) |
//! | `group ++ 0x03` | last purged log id: postcard `LogId` |
//! | `group ++ 0x10 ++ index: u64` | postcard `Entry<TypeConfig>` |
//!
//! # Column family `sm` (a group's applied state machine: the event store)
//! | key | value |
//! | --- | --- |
//! | `group ++ 0x01` | applied state: postcard `AppliedState` (last applied log id, last membership) |
//! | `group ++ 0x02` | partition counters: postcard `PartitionCounters` (last position, last timestamp) |
//! | `group ++ 0x10 ++ position: u64` | the partition log: `stream ++ version: u64` of the event at that position |
//! | `group ++ 0x30 ++ stream ++ 0x00` | postcard [`StreamInfo`](crate::StreamInfo) |
//! | `group ++ 0x30 ++ stream ++ 0x01 ++ version: u64` | the event, stored once: postcard `StoredBody` (the event without its stream and version, which its key holds; its id as the `stored_id` module says) |
//! | `group ++ 0x30 ++ stream ++ 0x02 ++ version: u64` | actor snapshot state, raw bytes (all versions are kept) |
//! | `group ++ 0x30 ++ stream ++ 0x03 ++ timestamp ++ version: u64` | time index: empty, one per [`TIME_INDEX_EVERY`] versions of a stream (see below) |
//! | `group ++ 0x13 ++ stream ++ stored event id` | event-id index: version `u64 BE` (the id, stored as the `stored_id` module says, is the key's tail, so needs no length) |
//! | `group ++ 0x20 ++ key utf8` | metadata map value, raw bytes (the key is the key's tail) |
//!
//! where `stream` is `len: u16 BE ++ utf8 bytes`.
//!
//! Events are keyed by stream and version, so replaying a stream or reading
//! it is one range scan; the partition log names each event's stream and
//! version, so reading it in position order takes a second lookup per event.
//!
//! A stream's info, events, actor snapshots and time index sit together
//! (format 3), so an append's info and events are neighbours in the
//! memtable: in a batch written in key order (`Applier::into_batch`)
//! RocksDB's search for each one's place follows the path the previous
//! one's just took, in the CPU caches, where format 2, which kept each kind
//! of key of all streams together, made it search for the info and the
//! events in two distant places per append. The event-id index stays a range of
//! its own: among the events, its random ids cost 4.5 bytes per event on
//! disk after compression (bench/README.md, session 14).
//!
//! The time index holds the event at every version that is a multiple of
//! [`TIME_INDEX_EVERY`], keyed by its timestamp (`i64` with the sign bit
//! flipped, so negative times sort first) then version. Timestamps never
//! decrease along a stream, so the last entry at or before a time is at
//! most `TIME_INDEX_EVERY - 1` versions below the stream's last event at
//! that time: a temporal query is one seek and a short scan. It came after
//! format 2 without a change of layout: a stream written before it has no
//! entries, and is scanned from its first event instead (same answer).
//!
//! # Format version
//! [`FORMAT`] is stored in the `node` column family under [`FORMAT_KEY`]
//! (see the `format` module). Format 1 stored the event under its position
//! and a version index pointing to it; a store in it is refused at open.
//! Format 2 had this layout but for a stream's info, events, actor
//! snapshots and time index, which were `group ++ tag ++ stream ++ rest`
//! with tags 0x11 (event), 0x12 (info), 0x14 (actor snapshot) and 0x15
//! (time index); a store in it is upgraded at open ([`from_format_2`]),
//! and those tags are never used again.
//!
//! # Column family `snap` (latest Raft snapshot per group)
//! | key | value |
//! | --- | --- |
//! | `group ++ 0x01` | postcard `SnapshotMeta` of the current snapshot |
//! | `group ++ 0x02` | its data, raw bytes (format in the `snapshot` module) |
//!
//! # Column family `node` (node-local identity)
//! | key | value |
//! | --- | --- |
//! | key utf8 | raw bytes |

use crate::command::GroupId;

/// The layout this module describes, stored under [`FORMAT_KEY`].
pub const FORMAT: u32 = 3;
/// Key of the stored format version in the `node` column family.
pub const FORMAT_KEY: &str = "storage-format";

/// Longest stream id accepted, in bytes.
pub const MAX_STREAM_ID_LEN: usize = 256;

// Tags of the `log` column family.
const LOG_VOTE: u8 = 0x01;
// 0x02 held the committed log id, which earlier builds saved: not reused.
const LOG_PURGED: u8 = 0x03;
const LOG_ENTRY: u8 = 0x10;

// Tags of the `sm` column family.
const SM_APPLIED: u8 = 0x01;
const SM_COUNTERS: u8 = 0x02;
const SM_POSITION: u8 = 0x10;
const SM_EVENT_ID: u8 = 0x13;
const SM_META: u8 = 0x20;
const SM_STREAM: u8 = 0x30;

// Kinds of a stream's keys, after its id (`group ++ SM_STREAM ++ stream`).
const STREAM_INFO: u8 = 0x00;
const STREAM_EVENT: u8 = 0x01;
const STREAM_ACTOR_SNAPSHOT: u8 = 0x02;
const STREAM_TIME_INDEX: u8 = 0x03;

/// Format 2's tag of each kind of a stream's key (see the module docs).
const FORMAT_2_STREAM_TAGS: [(u8, u8); 4] = [
    (0x11, STREAM_EVENT),
    (0x12, STREAM_INFO),
    (0x14, STREAM_ACTOR_SNAPSHOT),
    (0x15, STREAM_TIME_INDEX),
];

/// Tag that no key uses: `group ++ RANGE_END` is above every key of `group`.
const RANGE_END: u8 = 0xFF;

/// Versions of a stream between two entries of its time index: with 100
/// events per stream (the storage benchmark's), none is written.
pub const TIME_INDEX_EVERY: u64 = 128;

/// Whether the event at `version` has a time-index entry.
pub(crate) fn is_time_indexed(version: u64) -> bool {
    version.is_multiple_of(TIME_INDEX_EVERY)
}

/// Whether a key of the `sm` column family is ever looked up on its own,
/// and so belongs in the bloom filters: every key but the partition log's,
/// the events', the actor snapshots' and the time index's, which are read
/// by range scans (or looked up knowing they exist, where a filter cannot
/// help). Those are two or three of the four keys an event writes; at 10
/// bits per key their filter entries would cost ~2.5 bytes per event on
/// disk for nothing.
pub(crate) fn is_point_key(key: &[u8]) -> bool {
    match key.get(4) {
        Some(&SM_POSITION) => false,
        Some(&SM_STREAM) => stream_kind(key) == Some(STREAM_INFO),
        _ => true,
    }
}

/// Whether a key of the `sm` column family is an [`event_id`] key.
pub(crate) fn is_event_id(key: &[u8]) -> bool {
    key.get(4) == Some(&SM_EVENT_ID)
}

/// Whether a key of the `sm` column family is a [`stream_info`] key.
pub(crate) fn is_stream_info(key: &[u8]) -> bool {
    key.get(4) == Some(&SM_STREAM) && stream_kind(key) == Some(STREAM_INFO)
}

/// The kind of a stream's key: the byte after its stream id.
fn stream_kind(key: &[u8]) -> Option<u8> {
    key.get(stream_id_end(key)?).copied()
}

/// Where the stream id (`len ++ bytes`, from byte 5) of a stream's key ends.
fn stream_id_end(key: &[u8]) -> Option<usize> {
    let len: [u8; 2] = key.get(5..7)?.try_into().ok()?;
    Some(7 + usize::from(u16::from_be_bytes(len)))
}

/// The key that format 3 gives to `key`, a key of the `sm` column family
/// in format 2; `None` if format 2 did not key streams with it (every other
/// key kept its form).
pub(crate) fn from_format_2(key: &[u8]) -> Option<Vec<u8>> {
    let tag = *key.get(4)?;
    let (_, kind) = FORMAT_2_STREAM_TAGS.iter().find(|(old, _)| *old == tag)?;
    let id_end = stream_id_end(key).filter(|end| *end <= key.len())?;
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(&key[..4]);
    k.push(SM_STREAM);
    k.extend_from_slice(&key[5..id_end]);
    k.push(*kind);
    k.extend_from_slice(&key[id_end..]);
    Some(k)
}

/// A stream id too long to be keyed (see [`MAX_STREAM_ID_LEN`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamTooLong;

fn with_tag(group: GroupId, tag: u8, extra: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + extra);
    push_tag(&mut k, group, tag);
    k
}

/// Appends `group ++ tag`.
fn push_tag(k: &mut Vec<u8>, group: GroupId, tag: u8) {
    k.extend_from_slice(&group.to_be_bytes());
    k.push(tag);
}

/// Appends `len: u16 BE ++ bytes` of `stream`.
fn push_stream(k: &mut Vec<u8>, stream: &str) -> Result<(), StreamTooLong> {
    if stream.len() > MAX_STREAM_ID_LEN {
        return Err(StreamTooLong);
    }
    let len = u16::try_from(stream.len()).map_err(|_| StreamTooLong)?;
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(stream.as_bytes());
    Ok(())
}

/// `group ++ tag ++ stream`, with room for `extra` more bytes.
fn tagged_stream_key(
    group: GroupId,
    tag: u8,
    stream: &str,
    extra: usize,
) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = Vec::with_capacity(7 + stream.len() + extra);
    push_tagged_stream_key(&mut k, group, tag, stream)?;
    Ok(k)
}

/// Appends `group ++ tag ++ stream`.
fn push_tagged_stream_key(
    k: &mut Vec<u8>,
    group: GroupId,
    tag: u8,
    stream: &str,
) -> Result<(), StreamTooLong> {
    push_tag(k, group, tag);
    push_stream(k, stream)
}

/// `group ++ SM_STREAM ++ stream ++ kind`, with room for `extra` more bytes.
fn stream_key(
    group: GroupId,
    kind: u8,
    stream: &str,
    extra: usize,
) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = Vec::with_capacity(8 + stream.len() + extra);
    push_stream_key(&mut k, group, kind, stream)?;
    Ok(k)
}

/// Appends `group ++ SM_STREAM ++ stream ++ kind`.
fn push_stream_key(
    k: &mut Vec<u8>,
    group: GroupId,
    kind: u8,
    stream: &str,
) -> Result<(), StreamTooLong> {
    push_tagged_stream_key(k, group, SM_STREAM, stream)?;
    k.push(kind);
    Ok(())
}

/// Decodes a trailing `u64 BE` (index, version or position) of a key.
pub fn trailing_u64(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `[start, end)` holding every key of `group` in a group-scoped column family.
pub fn group_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    (with_tag(group, 0x00, 0), with_tag(group, RANGE_END, 0))
}

// ---- log column family ----

/// The group's Raft vote.
pub fn vote(group: GroupId) -> Vec<u8> {
    with_tag(group, LOG_VOTE, 0)
}

/// The group's last purged log id.
pub fn last_purged(group: GroupId) -> Vec<u8> {
    with_tag(group, LOG_PURGED, 0)
}

/// The log entry at `index`.
pub fn log_entry(group: GroupId, index: u64) -> Vec<u8> {
    let mut k = with_tag(group, LOG_ENTRY, 8);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Exclusive upper bound of all log entries of `group`.
pub fn log_entries_end(group: GroupId) -> Vec<u8> {
    with_tag(group, LOG_ENTRY + 1, 0)
}

// ---- sm column family ----

/// The group's applied state (last applied log id and membership).
pub fn applied(group: GroupId) -> Vec<u8> {
    with_tag(group, SM_APPLIED, 0)
}

/// The partition counters (last position, last timestamp).
pub fn counters(group: GroupId) -> Vec<u8> {
    with_tag(group, SM_COUNTERS, 0)
}

/// The partition-log entry at `position`.
pub fn position(group: GroupId, position: u64) -> Vec<u8> {
    position_bytes(group, position).to_vec()
}

/// [`position`], on the stack.
pub(crate) fn position_bytes(group: GroupId, position: u64) -> [u8; 13] {
    let mut k = [0; 13];
    k[..4].copy_from_slice(&group.to_be_bytes());
    k[4] = SM_POSITION;
    k[5..].copy_from_slice(&position.to_be_bytes());
    k
}

/// Exclusive upper bound of the partition log of `group`.
pub fn positions_end(group: GroupId) -> Vec<u8> {
    with_tag(group, SM_POSITION + 1, 0)
}

/// The event at `version` of `stream`.
pub fn stream_event(group: GroupId, stream: &str, version: u64) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = Vec::with_capacity(16 + stream.len());
    push_stream_event(&mut k, group, stream, version)?;
    Ok(k)
}

/// Appends [`stream_event`].
pub(crate) fn push_stream_event(
    k: &mut Vec<u8>,
    group: GroupId,
    stream: &str,
    version: u64,
) -> Result<(), StreamTooLong> {
    push_stream_key(k, group, STREAM_EVENT, stream)?;
    k.extend_from_slice(&version.to_be_bytes());
    Ok(())
}

/// Exclusive upper bound of the events of `stream`.
pub fn stream_events_end(group: GroupId, stream: &str) -> Result<Vec<u8>, StreamTooLong> {
    stream_key(group, STREAM_EVENT + 1, stream, 0)
}

/// Where the event at a position lives: the value of its partition-log
/// entry, `stream ++ version: u64` (the tail of its [`stream_event`] key),
/// appended to `r`.
pub(crate) fn push_event_ref(
    r: &mut Vec<u8>,
    stream: &str,
    version: u64,
) -> Result<(), StreamTooLong> {
    push_stream(r, stream)?;
    r.extend_from_slice(&version.to_be_bytes());
    Ok(())
}

/// The [`stream_event`] key a partition-log entry's value points to, with
/// the stream and version it names; `None` if the value is malformed.
pub fn stream_event_of_ref(group: GroupId, event_ref: &[u8]) -> Option<(Vec<u8>, String, u64)> {
    let len: [u8; 2] = event_ref.get(..2)?.try_into().ok()?;
    let len = usize::from(u16::from_be_bytes(len));
    let stream = std::str::from_utf8(event_ref.get(2..2 + len)?).ok()?;
    if event_ref.len() != 2 + len + 8 {
        return None;
    }
    let version = trailing_u64(event_ref)?;
    let mut k = stream_key(group, STREAM_EVENT, stream, 8).ok()?;
    k.extend_from_slice(&version.to_be_bytes());
    Some((k, stream.to_owned(), version))
}

/// Stream info of `stream`.
pub fn stream_info(group: GroupId, stream: &str) -> Result<Vec<u8>, StreamTooLong> {
    stream_key(group, STREAM_INFO, stream, 0)
}

/// Event-id index entry of event `event_id` in `stream`.
pub fn event_id(group: GroupId, stream: &str, event_id: &str) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = tagged_stream_key(group, SM_EVENT_ID, stream, 17)?;
    crate::stored_id::encode_into(event_id, &mut k);
    Ok(k)
}

/// [`event_id`] of an id already in its stored form (`stored_id::encode`).
pub(crate) fn stored_event_id(
    group: GroupId,
    stream: &str,
    stored: &[u8],
) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = Vec::with_capacity(7 + stream.len() + stored.len());
    push_stored_event_id(&mut k, group, stream, stored)?;
    Ok(k)
}

/// Appends [`stored_event_id`].
pub(crate) fn push_stored_event_id(
    k: &mut Vec<u8>,
    group: GroupId,
    stream: &str,
    stored: &[u8],
) -> Result<(), StreamTooLong> {
    push_tagged_stream_key(k, group, SM_EVENT_ID, stream)?;
    k.extend_from_slice(stored);
    Ok(())
}

/// Actor snapshot of `stream` as of `version`.
pub fn actor_snapshot(
    group: GroupId,
    stream: &str,
    version: u64,
) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = stream_key(group, STREAM_ACTOR_SNAPSHOT, stream, 8)?;
    k.extend_from_slice(&version.to_be_bytes());
    Ok(k)
}

/// Prefix shared by every actor snapshot of `stream` (and nothing else).
pub fn actor_snapshots_prefix(group: GroupId, stream: &str) -> Result<Vec<u8>, StreamTooLong> {
    stream_key(group, STREAM_ACTOR_SNAPSHOT, stream, 0)
}

/// Time-index entry of the event at `version` of `stream`, written at
/// `timestamp_ms`.
pub fn time_index(
    group: GroupId,
    stream: &str,
    timestamp_ms: i64,
    version: u64,
) -> Result<Vec<u8>, StreamTooLong> {
    let mut k = stream_key(group, STREAM_TIME_INDEX, stream, 16)?;
    k.extend_from_slice(&sortable_time(timestamp_ms));
    k.extend_from_slice(&version.to_be_bytes());
    Ok(k)
}

/// Prefix shared by every time-index entry of `stream` (and nothing else).
pub fn time_index_prefix(group: GroupId, stream: &str) -> Result<Vec<u8>, StreamTooLong> {
    stream_key(group, STREAM_TIME_INDEX, stream, 0)
}

/// `timestamp_ms` as 8 bytes that sort bytewise as the numbers do.
fn sortable_time(timestamp_ms: i64) -> [u8; 8] {
    (timestamp_ms.cast_unsigned() ^ (1 << 63)).to_be_bytes()
}

/// Metadata map entry `key`.
pub fn meta(group: GroupId, key: &str) -> Vec<u8> {
    let mut k = with_tag(group, SM_META, key.len());
    k.extend_from_slice(key.as_bytes());
    k
}

/// Length of the part of a metadata key before the user's key.
pub const META_KEY_OFFSET: usize = 5;

/// Exclusive upper bound of the metadata map of `group`.
pub fn meta_end(group: GroupId) -> Vec<u8> {
    with_tag(group, SM_META + 1, 0)
}

// ---- snap column family ----

/// Meta of the current Raft snapshot of `group`.
pub fn raft_snapshot_meta(group: GroupId) -> Vec<u8> {
    with_tag(group, 0x01, 0)
}

/// Data of the current Raft snapshot of `group`.
pub fn raft_snapshot_data(group: GroupId) -> Vec<u8> {
    with_tag(group, 0x02, 0)
}

/// The smallest key strictly greater than every key starting with `prefix`,
/// or `None` when there is none (`prefix` is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The format-2 key of a format-3 stream key (the inverse of
/// [`from_format_2`]), for tests that write stores as format 2 did.
#[cfg(test)]
pub(crate) fn to_format_2(key: &[u8]) -> Option<Vec<u8>> {
    if key.get(4) != Some(&SM_STREAM) {
        return None;
    }
    let kind_at = stream_id_end(key)?;
    let kind = *key.get(kind_at)?;
    let (tag, _) = FORMAT_2_STREAM_TAGS.iter().find(|(_, k)| *k == kind)?;
    let mut old = key[..4].to_vec();
    old.push(*tag);
    old.extend_from_slice(&key[5..kind_at]);
    old.extend_from_slice(&key[kind_at + 1..]);
    Some(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_prefixes_never_collide() {
        // "a" at a huge version must sort before any key of "ab".
        let a = stream_event(1, "a", u64::MAX).expect("short stream");
        let ab = stream_event(1, "ab", 0).expect("short stream");
        assert!(a < ab);
        assert!(!ab.starts_with(&actor_snapshots_prefix(1, "a").expect("short")));
        assert!(stream_events_end(1, "a").expect("short") <= ab);
    }

    #[test]
    fn time_index_sorts_by_time_then_version() {
        let key = |t, v| time_index(1, "s", t, v).expect("short stream");
        let ordered = [
            key(i64::MIN, 5),
            key(-1, 9),
            key(0, 0),
            key(0, 1),
            key(7, 0),
            key(i64::MAX, u64::MAX),
        ];
        assert!(ordered.is_sorted(), "{ordered:?}");
        let prefix = time_index_prefix(1, "s").expect("short stream");
        assert!(ordered.iter().all(|k| k.starts_with(&prefix)));
        assert!(!is_point_key(&ordered[0]));
    }

    #[test]
    fn group_range_holds_all_keys_of_a_group() {
        for g in [0, 7, crate::META_GROUP] {
            let (lo, hi) = group_range(g);
            let keys = [
                applied(g),
                counters(g),
                position(g, u64::MAX),
                stream_event(g, &"x".repeat(MAX_STREAM_ID_LEN), u64::MAX).expect("max len"),
                time_index(g, &"x".repeat(MAX_STREAM_ID_LEN), i64::MAX, u64::MAX).expect("max len"),
                meta(g, "\u{10FFFF}"),
                vote(g),
                log_entry(g, u64::MAX),
            ];
            for k in keys {
                assert!(lo <= k && k < hi, "{k:?} outside group {g}");
            }
        }
        assert!(group_range(1).1 <= group_range(2).0);
    }

    #[test]
    fn numbers_sort_numerically() {
        assert!(position(3, 255) < position(3, 256));
        assert!(log_entry(3, 9) < log_entry(3, 10));
        assert_eq!(trailing_u64(&position(3, 42)), Some(42));
    }

    #[test]
    fn an_event_ref_leads_back_to_the_event_key() {
        let mut r = Vec::new();
        push_event_ref(&mut r, "acct-7", 42).expect("short stream");
        let (key, stream, version) = stream_event_of_ref(9, &r).expect("well formed");
        assert_eq!(key, stream_event(9, "acct-7", 42).expect("short stream"));
        assert_eq!((stream.as_str(), version), ("acct-7", 42));
        assert_eq!(stream_event_of_ref(9, &r[..r.len() - 1]), None);
        assert_eq!(stream_event_of_ref(9, &[0, 9, b'a']), None);
    }

    #[test]
    fn a_streams_keys_sit_together_in_kind_order() {
        let s = "acct-7";
        let ordered = [
            stream_info(2, s).expect("short"),
            stream_event(2, s, 1).expect("short"),
            stream_event(2, s, u64::MAX).expect("short"),
            stream_events_end(2, s).expect("short"),
            actor_snapshot(2, s, 9).expect("short"),
            time_index(2, s, -5, 128).expect("short"),
        ];
        assert!(ordered.is_sorted(), "{ordered:?}");
        assert!(stream_info(2, "acct-6").expect("short") < ordered[0]);
        assert!(*ordered.last().expect("keys") < stream_info(2, "acct-8").expect("short"));
        assert!(is_stream_info(&ordered[0]));
        assert!(ordered[1..].iter().all(|k| !is_stream_info(k)));
        let point: Vec<bool> = ordered.iter().map(|k| is_point_key(k)).collect();
        assert_eq!(point, [true, false, false, false, false, false]);
        // The event-id index is a range of its own, and looked up.
        let id = event_id(2, s, "0190a5e4-0000-7000-8000-000000000001").expect("short");
        assert!(id < ordered[0] && is_point_key(&id) && !is_stream_info(&id));
        assert!(is_point_key(&applied(2)) && !is_point_key(&position(2, 1)));
    }

    #[test]
    fn format_2_stream_keys_move_and_others_stay() {
        let old = |tag: u8, rest: &[u8]| {
            let mut k = vec![0, 0, 0, 5, tag, 0, 2, b'a', b'b'];
            k.extend_from_slice(rest);
            k
        };
        let v = 77u64.to_be_bytes();
        assert_eq!(
            from_format_2(&old(0x11, &v)),
            stream_event(5, "ab", 77).ok()
        );
        assert_eq!(from_format_2(&old(0x12, &[])), stream_info(5, "ab").ok());
        assert_eq!(
            from_format_2(&old(0x14, &v)),
            actor_snapshot(5, "ab", 77).ok()
        );
        let mut ts = (1_000i64.cast_unsigned() ^ (1 << 63))
            .to_be_bytes()
            .to_vec();
        ts.extend_from_slice(&v);
        assert_eq!(
            from_format_2(&old(0x15, &ts)),
            time_index(5, "ab", 1_000, 77).ok()
        );
        let id = event_id(5, "ab", "0190a5e4-0000-7000-8000-000000000001").expect("short");
        assert_eq!(id[4], 0x13, "format 2's event-id key");
        for kept in [applied(5), counters(5), position(5, 3), id, meta(5, "k")] {
            assert_eq!(from_format_2(&kept), None);
        }
        // A stream id longer than the key: not a key format 2 wrote.
        assert_eq!(from_format_2(&[0, 0, 0, 5, 0x11, 0, 9, b'a']), None);
    }

    #[test]
    fn too_long_stream_is_refused() {
        assert_eq!(
            stream_info(0, &"x".repeat(MAX_STREAM_ID_LEN + 1)),
            Err(StreamTooLong)
        );
    }

    #[test]
    fn prefix_end_is_the_successor() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
