//! Messages written to a stream together, not one write each.
//!
//! The calls on a stream finish in bursts: a Raft entry commits the appends
//! of many callers at once, many workers send at once. Each finished call
//! hands its message to the stream's channel, which wakes the task that
//! encodes the stream's messages for HTTP/2. Tokio runs a task woken by the
//! running one next (its "LIFO slot"), so that task used to encode the one
//! message, wake the connection, and the connection wrote it: one `writev`
//! on one side and one read on the other per call, where the burst could
//! have been one of each. Under 256 single-event writers the nodes made
//! about one `writev` per append.
//!
//! [`Coalesced`] makes the encoding task, when it is woken with nothing
//! read since its last write, first give the other ready tasks their turn
//! (it wakes itself and answers `Pending`, which puts it at the back of the
//! run queue); then it reads everything they sent meanwhile, and the
//! encoder writes that as one chunk. With nothing else ready it runs again
//! at once, so a lone call waits for no one.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::Status;

/// The requests of a stream of calls, as the asking side sends them.
pub type Requests<E> = Coalesced<UnboundedReceiverStream<E>>;

/// The answers of a stream of calls, as the answering side sends them.
pub type Answers<A> = Coalesced<ReceiverStream<Result<A, Status>>>;

/// `inner`, read in bursts (see the module docs).
#[derive(Debug)]
pub struct Coalesced<S> {
    inner: S,
    /// The other ready tasks had their turn since the last `Pending`.
    yielded: bool,
}

impl<S> Coalesced<S> {
    /// `inner`, whose first read, and first after each `Pending`, waits
    /// one turn of the other ready tasks.
    pub fn new(inner: S) -> Coalesced<S> {
        Coalesced {
            inner,
            yielded: false,
        }
    }
}

impl<S: Stream + Unpin> Stream for Coalesced<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let next = Pin::new(&mut self.inner).poll_next(cx);
        if next.is_pending() {
            self.yielded = false;
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::sync::mpsc;
    use tokio_stream::StreamExt;

    use super::*;

    /// What the encoder reads per turn: items until the stream is
    /// `Pending`, or `None` once it ended with nothing read.
    async fn next_burst<S: Stream + Unpin>(stream: &mut S) -> Option<usize> {
        let mut read = 0;
        poll_fn(|cx| {
            loop {
                match Pin::new(&mut *stream).poll_next(cx) {
                    Poll::Ready(Some(_)) => read += 1,
                    Poll::Ready(None) if read == 0 => return Poll::Ready(None),
                    Poll::Pending if read == 0 => return Poll::Pending,
                    Poll::Ready(None) | Poll::Pending => return Poll::Ready(Some(read)),
                }
            }
        })
        .await
    }

    /// Sixteen tasks each send one message while the reader waits, on a
    /// runtime that runs a woken task next (as the nodes' does): the reader
    /// reads all sixteen in one turn, not one per wake.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_burst_from_other_tasks_is_read_in_one_turn() {
        let (tx, rx) = mpsc::unbounded_channel::<u32>();
        let reader = tokio::spawn(async move {
            let mut stream = Coalesced::new(UnboundedReceiverStream::new(rx));
            let mut bursts = Vec::new();
            while let Some(burst) = next_burst(&mut stream).await {
                bursts.push(burst);
            }
            bursts
        });
        // The senders start from a task on the worker, as calls finishing
        // in a node do.
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            let senders: Vec<_> = (0..16)
                .map(|i| {
                    let tx = tx.clone();
                    tokio::spawn(async move { tx.send(i).unwrap() })
                })
                .collect();
            for sender in senders {
                sender.await.unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(reader.await.unwrap(), vec![16]);
    }

    /// A lone message is read without waiting for anything else, and the
    /// end of the stream comes through.
    #[tokio::test(flavor = "current_thread")]
    async fn a_lone_message_is_read_at_once() {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut stream = Coalesced::new(UnboundedReceiverStream::new(rx));
        tx.send(7).unwrap();
        assert_eq!(stream.next().await, Some(7));
        drop(tx);
        assert_eq!(stream.next().await, None);
    }
}
