//! The answering side of a stream of calls (`RaftService.Stream`, and the
//! node's `ActorService.AskStream` and `EventStoreService.AppendStream`):
//! every incoming message is a call that
//! carries its own id, runs concurrently with the others, and is answered on
//! the outgoing stream as soon as it finishes (those that finish together
//! in one write: [`Coalesced`]).

use std::future::Future;

use cairn_call_stream::{Answers, Coalesced};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

/// Answers buffered per stream before the answering side waits for the
/// calling side to read them.
const ANSWERS_BUFFERED: usize = 1024;

/// Runs `answer` on each call read from `incoming`, concurrently, and streams
/// back what each returns, until the calling side closes the stream, stops
/// reading answers, or `stop` is cancelled (this node shuts down; without
/// it, a peer's open stream would keep a stopped node's services alive).
pub fn serve_concurrently<Call, Answer, F, Fut>(
    mut incoming: Streaming<Call>,
    stop: CancellationToken,
    answer: F,
) -> Answers<Answer>
where
    Call: Send + 'static,
    Answer: Send + 'static,
    F: Fn(Call) -> Fut + Send + 'static,
    Fut: Future<Output = Answer> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(ANSWERS_BUFFERED);
    tokio::spawn(async move {
        loop {
            let call = tokio::select! {
                next = incoming.message() => match next {
                    Ok(Some(call)) => call,
                    Ok(None) | Err(_) => return,
                },
                _ = tx.closed() => return,
                _ = stop.cancelled() => return,
            };
            // Boxed once here: a call's future (a Raft call into openraft,
            // 3 KB; an ask on its way to its actor) is otherwise copied
            // whole into the task and again at each change of the task's
            // stage. Those copies were 18% of the CPU of the ask benchmark;
            // boxing raised its asks/s through one node by a half at 256
            // workers (bench/README.md, session 9).
            let answering = Box::pin(answer(call));
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(Ok(answering.await)).await;
            });
        }
    });
    Coalesced::new(ReceiverStream::new(rx))
}
