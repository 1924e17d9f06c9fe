//! Asks forwarded to a partition's leader travel over one long-lived
//! `AskStream` per leader (see [`cairn_client::ask_stream`]) instead of one
//! gRPC call each: through one node, two of every three asks are forwarded.
//! [`serve`] is the answering side, for forwarding nodes and clients alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cairn_client::ask_stream::{AskStreams, outcome};
use cairn_cluster::serve_stream::serve_concurrently;
use cairn_proto::v1::{AskEnvelope, AskOutcome, AskReply, AskRequest};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::limits::MAX_MESSAGE_BYTES;

/// The asks this node forwards, one [`AskStreams`] per leader address.
#[derive(Default)]
pub struct AskForwarder {
    streams: Mutex<HashMap<String, Arc<AskStreams>>>,
}

impl AskForwarder {
    /// Sends `request` (already marked forwarded) to the node at `address`
    /// and waits for the outcome.
    pub async fn ask(
        &self,
        address: &str,
        channel: Channel,
        request: AskRequest,
    ) -> Result<AskReply, Status> {
        let streams = {
            let mut all = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
            all.entry(address.to_string())
                .or_insert_with(|| Arc::new(AskStreams::new(channel, MAX_MESSAGE_BYTES)))
                .clone()
        };
        streams.ask(request).await
    }
}

/// The answering side of an `AskStream`: runs each incoming ask with `ask`,
/// concurrently, and streams back the outcomes as they finish, until the
/// asking side closes the stream or `stop` (this node shuts down).
pub fn serve<F, Fut>(
    incoming: Streaming<AskEnvelope>,
    stop: CancellationToken,
    ask: F,
) -> ReceiverStream<Result<AskOutcome, Status>>
where
    F: Fn(AskRequest) -> Fut + Send + 'static,
    Fut: Future<Output = Result<AskReply, Status>> + Send + 'static,
{
    serve_concurrently(incoming, stop, move |envelope: AskEnvelope| {
        let id = envelope.id;
        let call = envelope
            .request
            .map(&ask)
            .ok_or_else(|| Status::invalid_argument("an AskEnvelope without a request"));
        async move {
            let result = match call {
                Ok(call) => call.await,
                Err(status) => Err(status),
            };
            outcome(id, result)
        }
    })
}
