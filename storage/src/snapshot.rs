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
//! One LZ4 frame (with block and content checksums) of:
//! ```text
//! magic  b"CAIRNSM" ++ the storage format's digit (b"CAIRNSM3")
//! pair*  key_len: u32 BE, key (without the 4-byte group prefix), value_len: u32 BE, value
//! end    0xFFFF_FFFF, pair count: u64 BE
//! ```
//! Keys are stored without their group prefix, so a snapshot holds exactly one
//! group's state-machine range (see the `keys` module) and nothing else.
//! An install also takes the same bytes uncompressed, as senders before the
//! frame wrote them. The frame makes a snapshot's file on the sender and its
//! bytes on the wire smaller (RocksDB keeps the state compressed by block;
//! serialized, it was not), and its checksums refuse bytes damaged on the
//! way; an install reads the frame to its end mark and refuses anything
//! after it.
//!
//! # Memory
//! A partition can be far larger than memory, so a snapshot never is in
//! memory whole. The sender serializes it into a file as it scans one
//! RocksDB view ([`SnapshotBytes`]), and openraft sends that file in chunks;
//! the receiver writes the chunks into a file, and installs it by writing
//! its pairs into one SST file, read and written a block at a time, and
//! ingesting that: the file's range deletion of the group's old state and
//! its new pairs take effect at once, or not at all. Before, the sender
//! built the snapshot in one buffer and the receiver parsed it into one
//! `WriteBatch` (two copies of the partition in memory, and its whole size
//! in the WAL and the memtable).

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::{
    ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
};
use rocksdb::{IngestExternalFileOptions, SstFileWriter, WriteBatch};

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
/// How an LZ4 frame begins (its magic number, little-endian).
const LZ4_MAGIC: [u8; 4] = [0x04, 0x22, 0x4D, 0x18];
const END_MARK: u32 = u32::MAX;
const GROUP_PREFIX: usize = 4;

type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;

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

fn put_u32(out: &mut impl Write, n: usize) -> Result<(), Error> {
    let n = u32::try_from(n)
        .map_err(|_| Error::Corrupt(format!("snapshot item of {n} bytes is too large")))?;
    out.write_all(&n.to_be_bytes()).map_err(Error::SnapshotFile)
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

/// Writes the group's state-machine range, as of one consistent view, to
/// `out` as it scans it, compressed; returns `out`.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group))]
pub(crate) fn serialize<W: Write>(store: &Store, group: GroupId, out: W) -> Result<W, Error> {
    let view = View::new(store);
    let file_error = Error::SnapshotFile;
    let mut out = compressor(out)?;
    out.write_all(MAGIC).map_err(file_error)?;
    let mut count: u64 = 0;
    let (start, end) = keys::group_range(group);
    view.scan(CF_SM, &start, &end, |k, v| {
        let k = k.get(GROUP_PREFIX..).ok_or_else(|| {
            Error::Corrupt("state-machine key shorter than its group prefix".into())
        })?;
        put_u32(&mut out, k.len())?;
        out.write_all(k).map_err(file_error)?;
        put_u32(&mut out, v.len())?;
        out.write_all(v).map_err(file_error)?;
        count += 1;
        Ok(true)
    })?;
    out.write_all(&END_MARK.to_be_bytes()).map_err(file_error)?;
    out.write_all(&count.to_be_bytes()).map_err(file_error)?;
    let (out, finished) = out.finish();
    finished.map_err(file_error)?;
    Ok(out)
}

/// LZ4, whose compression keeps pace with the scan on a node that goes on
/// serving, with the checksums the receiver checks.
fn compressor<W: Write>(out: W) -> Result<lz4::Encoder<W>, Error> {
    lz4::EncoderBuilder::new()
        .checksum(lz4::ContentChecksum::ChecksumEnabled)
        .block_checksum(lz4::liblz4::BlockChecksum::BlockChecksumEnabled)
        .build(out)
        .map_err(Error::SnapshotFile)
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

/// A key (without group prefix) and its value.
type Pair<'a> = (&'a [u8], &'a [u8]);

/// The (key without group prefix, value) pairs of snapshot bytes, read
/// one at a time; every way the bytes can be malformed is an
/// [`Error::InvalidSnapshot`].
struct Pairs<'a> {
    input: Source<'a>,
    key: Vec<u8>,
    value: Vec<u8>,
    count: u64,
    /// Bytes read (uncompressed).
    bytes: u64,
}

fn invalid(what: &str) -> Error {
    Error::InvalidSnapshot(what.to_owned())
}

impl<'a> Pairs<'a> {
    /// Reads `input` compressed or not, as it begins.
    fn new(mut input: impl Read + 'a) -> Result<Pairs<'a>, Error> {
        let mut head = [0; LZ4_MAGIC.len()];
        read_exact(&mut input, &mut head)?;
        let input: Box<dyn Read + 'a> = Box::new(io::Cursor::new(head).chain(input));
        let mut input = if head == LZ4_MAGIC {
            let frame = lz4::Decoder::new(input).map_err(read_error)?;
            Source::Lz4(io::BufReader::with_capacity(1 << 16, FrameErrors(frame)))
        } else {
            Source::Plain(input)
        };
        let mut magic = [0; MAGIC.len()];
        read_exact(&mut input, &mut magic)?;
        if magic != *MAGIC {
            return Err(invalid("bad magic (not a snapshot of this storage format)"));
        }
        Ok(Pairs {
            input,
            key: Vec::new(),
            value: Vec::new(),
            count: 0,
            bytes: MAGIC.len() as u64,
        })
    }

    /// The next pair, or `None` after the end mark (whose count must match
    /// and after which nothing may follow).
    fn next(&mut self) -> Result<Option<Pair<'_>>, Error> {
        let mut len = [0; 4];
        read_exact(&mut self.input, &mut len)?;
        let len = u32::from_be_bytes(len);
        if len == END_MARK {
            let mut count = [0; 8];
            read_exact(&mut self.input, &mut count)?;
            if u64::from_be_bytes(count) != self.count {
                return Err(invalid("pair count does not match"));
            }
            let mut more = [0; 1];
            if self.input.read(&mut more).map_err(read_error)? != 0 {
                return Err(invalid("trailing bytes"));
            }
            std::mem::replace(&mut self.input, Source::Plain(Box::new(io::empty()))).end()?;
            self.bytes += 12;
            return Ok(None);
        }
        if len == 0 {
            return Err(invalid("empty key"));
        }
        read_item(&mut self.input, len, &mut self.key)?;
        let mut value_len = [0; 4];
        read_exact(&mut self.input, &mut value_len)?;
        read_item(
            &mut self.input,
            u32::from_be_bytes(value_len),
            &mut self.value,
        )?;
        self.count += 1;
        self.bytes += 8 + u64::from(len) + self.value.len() as u64;
        Ok(Some((&self.key, &self.value)))
    }
}

/// Snapshot bytes as they came, or decompressed.
enum Source<'a> {
    Plain(Box<dyn Read + 'a>),
    /// Buffered: the pairs are read a length at a time, and each read is
    /// then a copy, not a call into the decoder.
    Lz4(io::BufReader<FrameErrors<lz4::Decoder<Box<dyn Read + 'a>>>>),
}

impl Read for Source<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(input) => input.read(buf),
            Source::Lz4(frame) => frame.read(buf),
        }
    }
}

impl Source<'_> {
    /// Checks, once everything was read, that a frame was whole (its end
    /// mark and content checksum read; the decoder reads up to a cut as if
    /// it were the end) and that nothing follows it.
    fn end(self) -> Result<(), Error> {
        let Source::Lz4(frame) = self else {
            return Ok(());
        };
        let FrameErrors(decoder) = frame.into_inner();
        let (mut rest, whole) = decoder.finish();
        if whole.is_err() {
            return Err(invalid("truncated"));
        }
        if rest.read(&mut [0; 1]).map_err(read_error)? != 0 {
            return Err(invalid("bytes after the compressed frame"));
        }
        Ok(())
    }
}

/// A frame decoder whose errors say the frame is damaged (`InvalidData`).
/// A failed read of the file beneath surfaces through the decoder too, and
/// is then reported as damage, with its own message.
struct FrameErrors<R>(R);

impl<R: Read> Read for FrameErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::Interrupted => e,
            _ => io::Error::new(io::ErrorKind::InvalidData, format!("compressed frame: {e}")),
        })
    }
}

fn read_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid("truncated"),
        io::ErrorKind::InvalidData => Error::InvalidSnapshot(e.to_string()),
        _ => Error::SnapshotFile(e),
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), Error> {
    input.read_exact(buf).map_err(read_error)
}

/// Reads `len` bytes into `buf`, which grows only as they arrive: a damaged
/// length cannot make it allocate what the input does not hold.
fn read_item(input: &mut impl Read, len: u32, buf: &mut Vec<u8>) -> Result<(), Error> {
    buf.clear();
    let read = input
        .take(u64::from(len))
        .read_to_end(buf)
        .map_err(read_error)?;
    if read != len as usize {
        return Err(invalid("truncated"));
    }
    Ok(())
}

/// Replaces the group's whole state-machine state with the snapshot's, and
/// then makes `meta` the current snapshot (a synced write). A malformed
/// snapshot, or one whose state is older than its meta, changes nothing.
///
/// The state is written into an SST file at `sst` (in the store's directory
/// of snapshot files), with a range deletion of the group's range, and the
/// file is ingested: RocksDB puts it in place at once, and a range deletion
/// never deletes the point keys of its own file, so the group holds the old
/// state or the new, never a mix, and nothing of it in memory. Should the
/// node stop between the ingestion and the meta, the state holds its own
/// applied log id, newer than the meta it keeps, as after an install of
/// bytes serialized after their meta.
///
/// The state may be newer than `meta` (it was serialized when sent, not when
/// built): the group's applied log id is then the state's own, and openraft's
/// re-sending of the entries in between is skipped by `apply_entries`.
#[tracing::instrument(level = "debug", skip_all, fields(partition = group, snapshot = %meta.snapshot_id))]
pub(crate) fn install(
    store: &Store,
    group: GroupId,
    meta: &Meta,
    data: impl Read,
    sst: &Path,
) -> Result<Counted, Error> {
    let (applied, counted) = write_sst(store, group, meta, data, sst)?;
    let mut ingest = IngestExternalFileOptions::default();
    ingest.set_move_files(true);
    let _guard = store
        .inner
        .snapshot_lock
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    store.inner.recent.write_replacing(group, || {
        store
            .db()
            .ingest_external_file_cf_opts(store.cf(CF_SM), &ingest, vec![sst])?;
        let mut batch = WriteBatch::default();
        put_current(store, &mut batch, group, meta)?;
        store.write(batch, true)
    })?;
    if let Some(last) = applied.last_applied {
        store.inner.applied.advance(group, last.index);
    }
    Ok(counted)
}

/// Writes the SST file that replaces the group's state with the snapshot's
/// pairs; returns the applied state it holds (the state's own, or `meta`'s
/// when the snapshot has none), and how many pairs and bytes (uncompressed)
/// it read.
fn write_sst(
    store: &Store,
    group: GroupId,
    meta: &Meta,
    data: impl Read,
    sst: &Path,
) -> Result<(AppliedState, Counted), Error> {
    let mut pairs = Pairs::new(data)?;
    let (start, end) = keys::group_range(group);
    let applied_key = keys::applied(group);
    let mut applied = AppliedState {
        last_applied: meta.last_log_id,
        last_membership: meta.last_membership.clone(),
    };
    let options = store.sm_options();
    let mut writer = SstFileWriter::create(options);
    writer.open(sst)?;
    writer.delete_range(&start, &end)?;
    // The applied state's key is the first of the group's range: the
    // snapshot's own, else `meta`'s, goes in before any other key.
    let mut applied_pending = true;
    let mut key = Vec::new();
    let mut previous = Vec::new();
    while let Some((k, v)) = pairs.next()? {
        key.clear();
        key.extend_from_slice(&group.to_be_bytes());
        key.extend_from_slice(k);
        if key < applied_key || key >= end {
            return Err(invalid("key outside the group's range"));
        }
        if key <= previous {
            return Err(invalid("keys out of order"));
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
        } else {
            if applied_pending {
                writer.put(&applied_key, encode("applied state", &applied)?)?;
                applied_pending = false;
            }
            writer.put(&key, v)?;
        }
        std::mem::swap(&mut key, &mut previous);
    }
    if applied_pending {
        writer.put(&applied_key, encode("applied state", &applied)?)?;
    }
    writer.finish()?;
    let counted = Counted {
        pairs: pairs.count,
        bytes: pairs.bytes,
    };
    Ok((applied, counted))
}

/// How many pairs, and bytes (uncompressed), a snapshot held.
pub(crate) struct Counted {
    pairs: u64,
    bytes: u64,
}

/// Installs through openraft's error type (used by the state machine).
pub(crate) async fn install_async(
    store: Store,
    group: GroupId,
    meta: Meta,
    data: SnapshotBytes,
) -> Result<(), StorageError<NodeId>> {
    let sig = meta.signature();
    let data = data.into_reader().await.map_err(|e| {
        StorageError::from_io_error(
            ErrorSubject::Snapshot(Some(sig.clone())),
            ErrorVerb::Read,
            e,
        )
    })?;
    blocking(move || {
        let received = data.size().map_err(Error::SnapshotFile)?;
        // SstFileWriter opens the path itself.
        let sst = store.snapshot_file(".sst")?.into_temp_path();
        let counted = install(&store, group, &meta, data, &sst)?;
        tracing::info!(
            partition = group,
            snapshot = %meta.snapshot_id,
            received,
            pairs = counted.pairs,
            bytes = counted.bytes,
            "installed a snapshot"
        );
        Ok(())
    })
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

    /// How many pairs `bytes` holds, read as an install reads them.
    fn pairs_in(bytes: &[u8]) -> Result<usize, Error> {
        let mut pairs = Pairs::new(bytes)?;
        let mut n = 0;
        while pairs.next()?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Snapshot bytes of `pairs` (keys without group prefix), uncompressed.
    fn plain(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        for (k, v) in pairs {
            bytes.extend_from_slice(&(k.len() as u32).to_be_bytes());
            bytes.extend_from_slice(k);
            bytes.extend_from_slice(&(v.len() as u32).to_be_bytes());
            bytes.extend_from_slice(v);
        }
        bytes.extend_from_slice(&END_MARK.to_be_bytes());
        bytes.extend_from_slice(&(pairs.len() as u64).to_be_bytes());
        bytes
    }

    /// `plain` in a frame, as `serialize` writes it.
    fn compressed(plain: &[u8]) -> Vec<u8> {
        let mut out = compressor(Vec::new()).expect("encoder");
        out.write_all(plain).expect("in memory");
        let (out, finished) = out.finish();
        finished.expect("in memory");
        out
    }

    fn assert_refused(bytes: &[u8], what: &str) {
        let refused = pairs_in(bytes);
        assert!(
            matches!(refused, Err(Error::InvalidSnapshot(_))),
            "{what}: {refused:?}"
        );
    }

    #[test]
    fn damaged_snapshots_are_refused() {
        let good = plain(&[(b"\x20", b"ok")]);
        assert_eq!(pairs_in(&good).expect("valid"), 1);
        let mut wrong_count = good.clone();
        let n = wrong_count.len();
        wrong_count[n - 1] = 2;
        let mut trailing = good.clone();
        trailing.push(0);

        type Form = fn(&[u8]) -> Vec<u8>;
        let forms: [Form; 2] = [|b| b.to_vec(), compressed];
        for form in forms {
            let good = form(&good);
            assert_eq!(pairs_in(&good).expect("valid"), 1);
            for cut in 0..good.len() {
                assert_refused(&good[..cut], &format!("truncated at {cut}"));
            }
            assert_refused(&form(&wrong_count), "wrong count");
            assert_refused(&form(&trailing), "trailing bytes");
        }
    }

    /// The frame's checksum refuses a compressed snapshot damaged anywhere,
    /// and nothing may follow the frame.
    #[test]
    fn damaged_frames_are_refused() {
        let pairs: Vec<(Vec<u8>, String)> = (0..100u32)
            .map(|i| {
                let key = [&[0x20], &i.to_be_bytes()[..]].concat();
                (
                    key,
                    format!(r#"{{"n":{i},"payload":"the same text each time"}}"#),
                )
            })
            .collect();
        let borrowed: Vec<(&[u8], &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_bytes()))
            .collect();
        let plain = plain(&borrowed);
        let frame = compressed(&plain);
        assert!(
            frame.len() < plain.len() / 3,
            "{} of {}",
            frame.len(),
            plain.len()
        );
        assert_eq!(pairs_in(&frame).expect("valid"), 100);

        for at in LZ4_MAGIC.len()..frame.len() {
            let mut damaged = frame.clone();
            damaged[at] ^= 0x10;
            assert_refused(&damaged, &format!("byte {at} of {} flipped", frame.len()));
        }
        let mut followed = frame.clone();
        followed.extend_from_slice(b"more");
        assert_refused(&followed, "bytes after the frame");
    }

    /// What a sender writes is compressed, and reads back pair for pair.
    #[test]
    fn serialized_state_is_compressed() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let group = 3;
        let mut raw = 0;
        for i in 0..1000u32 {
            let mut key = keys::applied(group);
            key.extend_from_slice(&i.to_be_bytes());
            let value =
                format!(r#"{{"type":"Deposited","data":{{"account":"a-{i}","amount":5}}}}"#);
            raw += key.len() + value.len();
            store.db().put_cf(store.cf(CF_SM), &key, value)?;
        }
        let bytes = serialize(&store, group, Vec::new())?;
        assert_eq!(bytes[..4], LZ4_MAGIC);
        assert!(bytes.len() < raw / 3, "{} bytes for {raw}", bytes.len());
        assert_eq!(pairs_in(&bytes)?, 1000);
        Ok(())
    }

    /// A length near 4 GiB in a short input is refused as truncated, without
    /// first allocating what it claims.
    #[test]
    fn a_damaged_length_allocates_nothing_it_does_not_read() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(END_MARK - 1).to_be_bytes());
        bytes.extend_from_slice(b"short");
        let mut pairs = Pairs::new(bytes.as_slice()).expect("magic");
        assert!(matches!(pairs.next(), Err(Error::InvalidSnapshot(_))));
        assert!(pairs.key.capacity() < 1 << 20);
    }

    /// Bytes whose keys are out of order, or outside the group's range, are
    /// refused before anything is ingested: the group keeps its state, and
    /// no file is left behind.
    #[tokio::test]
    async fn misordered_or_foreign_keys_install_nothing() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let group = 3;
        let kept = keys::applied(group);
        store.db().put_cf(store.cf(CF_SM), &kept, b"before")?;
        let snapshot = |pairs: &[(&[u8], &[u8])]| SnapshotBytes::from_bytes(plain(pairs));
        let meta = Meta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "s".into(),
        };
        for refused in [
            snapshot(&[(b"\x20b", b"1"), (b"\x20a", b"2")]),
            snapshot(&[(b"\x20a", b"1"), (b"\x20a", b"2")]),
            snapshot(&[(b"\x00a", b"1")]),
            snapshot(&[(b"\xFFa", b"1")]),
        ] {
            let outcome = install_async(store.clone(), group, meta.clone(), refused).await;
            assert!(outcome.is_err(), "installed");
            assert_eq!(
                store.db().get_cf(store.cf(CF_SM), &kept)?.as_deref(),
                Some(b"before".as_slice())
            );
            assert_eq!(
                std::fs::read_dir(dir.path().join("snapshot-files"))?.count(),
                0
            );
        }
        Ok(())
    }
}
