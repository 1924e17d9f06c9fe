//! The RocksDB options of each column family of the [`Store`](crate::Store).

use std::time::Duration;

use rocksdb::{BlockBasedOptions, Cache, DB, DBCompressionType, Options, SliceTransform};

use crate::error::Error;
use crate::keys;
use crate::store::{CF_LOG, CF_NODE, CF_PROJ, CF_SM, CF_SNAP};

/// The options of every column family, sharing one block cache.
pub(crate) struct Families {
    cache: Cache,
}

impl Families {
    pub(crate) fn new() -> Families {
        Families {
            cache: Cache::new_lru_cache(64 << 20),
        }
    }

    /// The options of column family `name`.
    pub(crate) fn of(&self, name: &str) -> Options {
        let kept = |filter, block| Family::Kept { filter, block };
        let (write_buffer, family) = match name {
            CF_LOG => (32 << 20, Family::Transient),
            CF_SM => (64 << 20, kept(Filter::PointKeys, 32 << 10)),
            CF_PROJ => (16 << 20, kept(Filter::AllKeys, 16 << 10)),
            CF_SNAP => (8 << 20, kept(Filter::None, 16 << 10)),
            CF_NODE => (1 << 20, kept(Filter::None, 16 << 10)),
            other => unreachable!("no column family `{other}`"),
        };
        cf_options(&self.cache, write_buffer, family)
    }
}

/// What a column family holds, for its RocksDB options.
#[derive(Clone, Copy)]
enum Family {
    /// Raft log entries: written once, read back soon by replication and
    /// deleted once every replica has them. Never compressed: compressing
    /// what is about to be deleted only costs CPU.
    Transient,
    /// Data that stays; `filter` says which keys its bloom filters hold,
    /// `block` is the size of its data blocks (before compression).
    Kept { filter: Filter, block: usize },
}

/// Which keys of a column family go into its bloom filters, which spare
/// point lookups of absent keys a read of every level.
#[derive(Clone, Copy)]
enum Filter {
    None,
    AllKeys,
    /// Only the keys [`keys::is_point_key`] names (the event store's).
    PointKeys,
}

fn cf_options(cache: &Cache, write_buffer: usize, family: Family) -> Options {
    let mut o = Options::default();
    o.set_write_buffer_size(write_buffer);
    // Compact level 0 once 8 files wait, not RocksDB's 4: the event store's
    // keys are spread over every stream, so each of its level-0 files
    // overlaps the whole base level, and each compaction out of level 0
    // rewrites all of it. Twice the files per compaction halves that
    // rewriting: sustained 100-event appends at 64 writers made 869 against
    // 707 appends/s (25 s each, compactions ~33% of the nodes' CPU at 4);
    // point lookups check each level-0 file's bloom filter, scans merge up
    // to 8 files instead of 4 (cold replays and activations of a 1M-event
    // actor took no longer: bench/README.md, session 18).
    o.set_level_zero_file_num_compaction_trigger(8);
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    match family {
        Family::Transient => {
            t.set_block_size(16 << 10);
            o.set_compression_type(DBCompressionType::None);
        }
        Family::Kept { filter, block } => {
            t.set_block_size(block);
            o.set_compression_type(DBCompressionType::Lz4);
            // Most data ends up in the bottom level. zstd there and 16 KiB
            // blocks (RocksDB's default is 4 KiB) took the event store of
            // the storage benchmark from 171 to 161 bytes per 200-byte
            // event; 32 KiB blocks for the event store, from 150.7 to 149.2
            // (a block holds ~100 events then; a point lookup that misses
            // the block cache decompresses twice as much). Level 1: levels
            // 3 and 6 stored the same bytes (158.4, 159.1, 158.3 per event)
            // while level 6 spent ~40% of the nodes' CPU compacting under
            // sustained batch appends. A zstd dictionary did not help
            // further.
            o.set_bottommost_compression_type(DBCompressionType::Zstd);
            o.set_bottommost_compression_options(-14, 1, 0, 0, true);
            match filter {
                Filter::None => {}
                Filter::AllKeys => t.set_bloom_filter(10.0, false),
                Filter::PointKeys => {
                    // A "prefix" that is the whole key, defined only for
                    // the keys point lookups ask for: the filters then hold
                    // just those. Every iterator of this store reads in
                    // total order (`View::read_opts`), so none relies on it.
                    t.set_bloom_filter(10.0, false);
                    t.set_whole_key_filtering(false);
                    // And a filter over the memtables' point keys: the
                    // lookups an append makes of keys absent from them
                    // (its event id, the info of a stream last written
                    // before a flush) skip the skiplist search, where the
                    // apply's lookups spent 15% of the nodes' CPU under
                    // single-event appends at 256 writers.
                    o.set_memtable_prefix_bloom_ratio(0.02);
                    o.set_prefix_extractor(SliceTransform::create(
                        "cairn.point-keys",
                        |key| key,
                        Some(keys::is_point_key),
                    ));
                }
            }
        }
    }
    o.set_block_based_table_factory(&t);
    o
}

/// How old a file of the bottommost level must be before RocksDB rewrites
/// it only to drop what a released snapshot no longer protects.
pub(crate) const BOTTOMMOST_REWRITE_DELAY: Duration = Duration::from_secs(3600);

/// Holds back RocksDB's "bottommost files" compactions for
/// [`BOTTOMMOST_REWRITE_DELAY`]. Each [`View`](crate::store::View) is a RocksDB snapshot, and
/// whenever the oldest snapshot is released RocksDB looks for files that
/// nothing newer overlaps and that hold sequence numbers older than it, and
/// rewrites each of them whole, only to zero those numbers. Snapshots come
/// and go all the time here, so every such file was rewritten as soon as it
/// was written: the first flushes of a young store's Raft log and event
/// store (64 MiB rewritten into the bottom level, zstd-compressed, within a
/// second of its flush), and later any file whose keys overlap no older
/// one. In 10 s of single-event appends at 256 writers on a fresh cluster
/// those rewrites were 14.6% of the nodes' CPU (bench/README.md, session
/// 26). An hour later a file still bottommost is rewritten once; by then
/// most have been compacted with newer data anyway.
pub(crate) fn delay_bottommost_rewrites(db: &DB, families: &[&str]) -> Result<(), Error> {
    let seconds = BOTTOMMOST_REWRITE_DELAY.as_secs().to_string();
    for &name in families {
        let cf = db
            .cf_handle(name)
            .ok_or_else(|| Error::Task(format!("column family {name} missing after open")))?;
        db.set_options_cf(
            cf,
            &[("bottommost_file_compaction_delay", seconds.as_str())],
        )?;
    }
    Ok(())
}
