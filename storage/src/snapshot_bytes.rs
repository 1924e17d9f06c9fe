//! [`SnapshotBytes`]: the data of a Raft snapshot, serialized from the state
//! machine only when someone reads it.
//!
//! Openraft asks for the current snapshot at every start and builds one after
//! every compaction, but reads its bytes only to send them to a follower that
//! lags behind the log. Serializing a partition is O(its size), so it is done
//! on the first read or seek, on the blocking pool, and never otherwise.

use std::future::Future;
use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use crate::command::GroupId;
use crate::error::Error;
use crate::snapshot;
use crate::store::{Inner, Store};

/// A Raft snapshot's bytes (format in the `snapshot` module).
///
/// Either received or already serialized bytes, or a group of a store whose
/// state is serialized, from one consistent RocksDB view, on first use. The
/// serialized state is the group's state *when it is read*, which may be
/// newer than the snapshot's meta; installing it is still correct (see
/// `snapshot::install`).
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
    Serializing(JoinHandle<Result<Vec<u8>, Error>>),
    Ready(Cursor<Vec<u8>>),
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.state {
            State::Unread { group, .. } => write!(f, "SnapshotBytes(unread, group {group})"),
            State::Serializing(_) => f.write_str("SnapshotBytes(serializing)"),
            State::Ready(c) => write!(f, "SnapshotBytes({} bytes)", c.get_ref().len()),
        }
    }
}

impl SnapshotBytes {
    /// Bytes in hand (received, or built by a test).
    pub fn from_bytes(bytes: Vec<u8>) -> SnapshotBytes {
        SnapshotBytes {
            state: State::Ready(Cursor::new(bytes)),
            pending_seek: None,
        }
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

    /// All the bytes, serializing them first if needed.
    pub async fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await?;
        Ok(std::mem::take(self.cursor()).into_inner())
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
                        snapshot::serialize(&store, group)
                    }))
                }
                State::Serializing(task) => {
                    let bytes = match ready!(Pin::new(task).poll(cx)) {
                        Ok(Ok(bytes)) => bytes,
                        Ok(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
                        Err(e) => return Poll::Ready(Err(io::Error::other(e))),
                    };
                    let mut cursor = Cursor::new(bytes);
                    if let Some(pos) = self.pending_seek.take() {
                        std::io::Seek::seek(&mut cursor, pos)?;
                    }
                    State::Ready(cursor)
                }
                State::Ready(_) => return Poll::Ready(Ok(())),
            };
            self.state = next;
        }
    }

    /// The bytes; call only after `poll_ready` returned `Ready(Ok)`.
    fn cursor(&mut self) -> &mut Cursor<Vec<u8>> {
        match &mut self.state {
            State::Ready(cursor) => cursor,
            _ => unreachable!("snapshot bytes used before they were ready"),
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
        Pin::new(this.cursor()).poll_read(cx, buf)
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let this = self.get_mut();
        match &mut this.state {
            State::Ready(cursor) => Pin::new(cursor).start_seek(position),
            _ => {
                this.pending_seek = Some(position);
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        let this = self.get_mut();
        ready!(this.poll_ready(cx))?;
        Pin::new(this.cursor()).poll_complete(cx)
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
        Pin::new(this.cursor()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
