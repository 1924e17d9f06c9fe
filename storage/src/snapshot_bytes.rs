//! [`SnapshotBytes`]: the data of a Raft snapshot, serialized from the state
//! machine only when someone reads it, and kept in a file, not in memory.
//!
//! Openraft asks for the current snapshot at every start and builds one after
//! every compaction, but reads its bytes only to send them to a follower that
//! lags behind the log. Serializing a partition is O(its size), so it is done
//! on the first read or seek, on the blocking pool, and never otherwise; it
//! goes into a file in the store's directory of snapshot files, which
//! openraft then reads a chunk at a time. A follower receives the chunks into
//! such a file too. Each file is deleted when its `SnapshotBytes` is dropped
//! (and any left by a crash when the store next opens).

use std::future::Future;
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use tempfile::TempPath;
use tokio::fs::File;
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::either::Either;

use crate::command::GroupId;
use crate::error::Error;
use crate::snapshot;
use crate::store::{Inner, Store};

/// A Raft snapshot's bytes (format in the `snapshot` module).
///
/// Either bytes in a file (received, or serialized) or in memory (built by
/// a test), or a group of a store whose state is serialized, from one
/// consistent RocksDB view, on first use. The serialized state is the
/// group's state *when it is read*, which may be newer than the snapshot's
/// meta; installing it is still correct (see `snapshot::install`).
pub struct SnapshotBytes {
    state: State,
    /// A seek asked for before the bytes were ready.
    pending_seek: Option<SeekFrom>,
}

enum State {
    /// Weak, so that an unread snapshot does not keep the database open.
    Unread {
        store: Weak<Inner>,
        group: GroupId,
    },
    Serializing(JoinHandle<Result<Spooled, Error>>),
    Ready(Backing),
}

/// A file of snapshot bytes, deleted with its path.
struct Spooled {
    file: std::fs::File,
    path: TempPath,
}

/// The bytes, and the file's path while they are in a file.
struct Backing {
    io: Either<Cursor<Vec<u8>>, File>,
    path: Option<TempPath>,
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Unread { group, .. } => write!(f, "SnapshotBytes(unread, group {group})"),
            State::Serializing(_) => f.write_str("SnapshotBytes(serializing)"),
            State::Ready(Backing {
                path: Some(path), ..
            }) => {
                write!(f, "SnapshotBytes({})", path.display())
            }
            State::Ready(Backing { path: None, .. }) => f.write_str("SnapshotBytes(in memory)"),
        }
    }
}

impl SnapshotBytes {
    /// Bytes in hand (built by a test).
    pub fn from_bytes(bytes: Vec<u8>) -> SnapshotBytes {
        SnapshotBytes::ready(Backing {
            io: Either::Left(Cursor::new(bytes)),
            path: None,
        })
    }

    /// An empty file in `store`'s directory of snapshot files, to receive
    /// a snapshot's chunks into.
    pub(crate) fn receiving(store: &Store) -> Result<SnapshotBytes, Error> {
        let spooled = Spooled::create(store)?;
        Ok(SnapshotBytes::ready(spooled.into_backing()))
    }

    /// `group`'s state in `store`, serialized when first read.
    pub(crate) fn of_group(store: Store, group: GroupId) -> SnapshotBytes {
        SnapshotBytes {
            state: State::Unread {
                store: Arc::downgrade(&store.inner),
                group,
            },
            pending_seek: None,
        }
    }

    fn ready(backing: Backing) -> SnapshotBytes {
        SnapshotBytes {
            state: State::Ready(backing),
            pending_seek: None,
        }
    }

    /// All the bytes in memory, serializing them first if needed (for
    /// tests: an install reads them with [`SnapshotBytes::into_reader`]).
    pub async fn into_bytes(self) -> io::Result<Vec<u8>> {
        let mut reader = self.into_reader().await?;
        tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The bytes from their start, to read on a blocking thread; a file
    /// stays until the reader is dropped.
    pub(crate) async fn into_reader(mut self) -> io::Result<SnapshotReader> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        let State::Ready(backing) = self.state else {
            unreachable!("poll_ready returned Ready(Ok)");
        };
        Ok(match backing.io {
            Either::Left(cursor) => SnapshotReader::Memory(cursor),
            Either::Right(file) => {
                // Waits for any write still in flight.
                let mut file = file.into_std().await;
                file.seek(SeekFrom::Start(0))?;
                SnapshotReader::File {
                    file: io::BufReader::with_capacity(1 << 20, file),
                    _path: backing.path,
                }
            }
        })
    }

    /// Drives serialization until the bytes are in hand.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let next = match &mut self.state {
                State::Unread { store, group } => {
                    let Some(inner) = store.upgrade() else {
                        return Poll::Ready(Err(io::Error::other(Error::ShutDown)));
                    };
                    let (store, group) = (Store { inner }, *group);
                    State::Serializing(tokio::task::spawn_blocking(move || {
                        Spooled::serialize(&store, group)
                    }))
                }
                State::Serializing(task) => {
                    let spooled = match ready!(Pin::new(task).poll(cx)) {
                        Ok(Ok(spooled)) => spooled,
                        Ok(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                        Err(e) => return Poll::Ready(Err(io::Error::other(e))),
                    };
                    let mut backing = spooled.into_backing();
                    if let Some(pos) = self.pending_seek.take() {
                        Pin::new(&mut backing.io).start_seek(pos)?;
                    }
                    State::Ready(backing)
                }
                State::Ready(_) => return Poll::Ready(Ok(())),
            };
            self.state = next;
        }
    }

    /// The bytes; call only after `poll_ready` returned `Ready(Ok)`.
    fn backing(&mut self) -> Pin<&mut Either<Cursor<Vec<u8>>, File>> {
        match &mut self.state {
            State::Ready(backing) => Pin::new(&mut backing.io),
            _ => unreachable!("snapshot bytes used before they were ready"),
        }
    }
}

impl Spooled {
    /// A new empty file in the store's directory of snapshot files.
    fn create(store: &Store) -> Result<Spooled, Error> {
        let (file, path) = store.snapshot_file(".snap")?.into_parts();
        Ok(Spooled { file, path })
    }

    /// `group`'s state serialized into a new file, positioned at its start.
    fn serialize(store: &Store, group: GroupId) -> Result<Spooled, Error> {
        let Spooled { file, path } = Spooled::create(store)?;
        // The compressor writes whole frame blocks: no buffer of our own.
        let mut file = snapshot::serialize(store, group, file)?;
        file.seek(SeekFrom::Start(0)).map_err(Error::SnapshotFile)?;
        Ok(Spooled { file, path })
    }

    fn into_backing(self) -> Backing {
        Backing {
            io: Either::Right(File::from_std(self.file)),
            path: Some(self.path),
        }
    }
}

/// Snapshot bytes read from their start on a blocking thread.
pub(crate) enum SnapshotReader {
    Memory(Cursor<Vec<u8>>),
    File {
        file: io::BufReader<std::fs::File>,
        /// Deleted when the reader is dropped.
        _path: Option<TempPath>,
    },
}

impl SnapshotReader {
    /// How many bytes it holds.
    pub(crate) fn size(&self) -> io::Result<u64> {
        match self {
            SnapshotReader::Memory(cursor) => Ok(cursor.get_ref().len() as u64),
            SnapshotReader::File { file, .. } => Ok(file.get_ref().metadata()?.len()),
        }
    }
}

impl Read for SnapshotReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SnapshotReader::Memory(cursor) => cursor.read(buf),
            SnapshotReader::File { file, .. } => file.read(buf),
        }
    }
}

impl AsyncRead for SnapshotBytes {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        this.backing().poll_read(cx, buf)
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(backing) => Pin::new(&mut backing.io).start_seek(position),
            _ => {
                this.pending_seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        this.backing().poll_complete(cx)
    }
}

impl AsyncWrite for SnapshotBytes {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        this.backing().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        this.backing().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        this.backing().poll_shutdown(cx)
    }
}
