//! [`Error`], the one error type of this crate, and its conversion into
//! openraft's [`StorageError`].

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::type_config::NodeId;

/// Everything that can go wrong in storage. Variants are ones a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB failed (I/O error, corruption detected by RocksDB, lock held by
    /// another process, ...). The operation did not take effect.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),

    /// Data read from disk could not be decoded; the store is damaged or was
    /// written by an incompatible version.
    #[error("corrupt data: {0}")]
    Corrupt(String),

    /// The stream is soft-deleted (`tombstoned = false`: reads fail until it is
    /// written again) or hard-deleted (`tombstoned = true`: forever).
    #[error("stream `{stream}` is {}", if *tombstoned { "hard-deleted (tombstoned)" } else { "deleted" })]
    StreamDeleted {
        /// The stream read.
        stream: String,
        /// Whether it was hard-deleted.
        tombstoned: bool,
    },

    /// A stream id longer than [`MAX_STREAM_ID_LEN`](crate::MAX_STREAM_ID_LEN) bytes.
    #[error("stream id is {len} bytes long; at most {max} are allowed", max = crate::MAX_STREAM_ID_LEN)]
    StreamIdTooLong {
        /// Length of the refused id, in bytes.
        len: usize,
    },

    /// The data directory was written in another storage layout (by another
    /// version of Cairn); nothing was read or written.
    #[error(
        "{} holds storage format {found}, this build reads format {expected}: \
         start it with the version of Cairn that wrote it, or move it aside and let the \
         node catch up from its peers with an empty data directory",
        path.display()
    )]
    Format {
        /// The store's directory.
        path: std::path::PathBuf,
        /// The format found on disk.
        found: u32,
        /// The format this build reads.
        expected: u32,
    },

    /// A snapshot offered for installation is malformed; nothing was installed.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),

    /// A file holding a snapshot on its way in or out could not be
    /// written or read (the disk is full, say); nothing was installed.
    #[error("snapshot file: {0}")]
    SnapshotFile(std::io::Error),

    /// The store was shut down ([`Store::shutdown`](crate::Store::shutdown));
    /// no more log writes are accepted.
    #[error("storage is shut down")]
    ShutDown,

    /// [`Store::close`](crate::Store::close) gave up waiting: other clones
    /// of the store were still alive. The database closes when the last of
    /// them is dropped.
    #[error("store in {} still has {handles} open handle(s)", path.display())]
    StillOpen {
        /// The store's directory.
        path: std::path::PathBuf,
        /// How many handles were still alive.
        handles: usize,
    },

    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
}

impl Error {
    /// Converts into openraft's error, naming what was being done to what.
    pub fn into_storage_error(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageError::IO {
            source: StorageIOError::new(subject, verb, AnyError::new(&self)),
        }
    }
}

/// Storage errors reach openraft as I/O errors on the store as a whole; the
/// log store and state machine use [`Error::into_storage_error`] to be precise.
impl From<Error> for StorageError<NodeId> {
    fn from(e: Error) -> Self {
        e.into_storage_error(ErrorSubject::Store, ErrorVerb::Write)
    }
}

/// Decodes a postcard value read from disk; failures are [`Error::Corrupt`].
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(
    what: &str,
    bytes: &'a [u8],
) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt(format!("{what}: {e}")))
}

/// Encodes a value for disk. Our types always encode; a failure is reported
/// as [`Error::Corrupt`] rather than panicking.
pub(crate) fn encode<T: serde::Serialize + ?Sized>(
    what: &str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    encode_exact(value).map_err(|e| encode_error(what, e))
}

/// Encodes a value for disk at the end of `out`, reusing its room: for many
/// values written one after another, or into one buffer.
pub(crate) fn encode_onto<T: serde::Serialize + ?Sized>(
    what: &str,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), Error> {
    postcard::to_extend(value, Onto(out))
        .map(drop)
        .map_err(|e| encode_error(what, e))
}

/// A borrowed vector that postcard can extend (it takes its writer by value).
struct Onto<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Onto<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0.extend(bytes);
    }
}

fn encode_error(what: &str, e: postcard::Error) -> Error {
    Error::Corrupt(format!("encoding {what}: {e}"))
}

/// The postcard encoding of `value` in a vector allocated once at its exact
/// size. `postcard::to_allocvec` grows its vector by doubling: a Raft entry
/// or message of a few MB was reallocated ~20 times, each time into fresh
/// memory the kernel zeroed first (copies and page clears, much of them
/// from this, were a quarter of a catching-up follower's CPU). Sizing first
/// walks the value twice but copies its bytes once.
pub fn encode_exact<T: serde::Serialize + ?Sized>(value: &T) -> postcard::Result<Vec<u8>> {
    let size = postcard::experimental::serialized_size(value)?;
    postcard::to_extend(value, Vec::with_capacity(size))
}

/// Decodes a `u64 BE` value read from disk.
pub(crate) fn decode_u64(what: &str, bytes: &[u8]) -> Result<u64, Error> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("{what}: expected 8 bytes, found {}", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

/// Runs blocking storage work off the async runtime's workers.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    F: FnOnce() -> Result<T, Error> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}
