//! Asks and appends forwarded to a partition's leader travel over one
//! long-lived stream per leader and kind (see [`cairn_client::call_stream`])
//! instead of one gRPC call each: through one node, two of every three are
//! forwarded. [`serve`] is the answering side, for forwarding nodes and
//! clients alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cairn_client::call_stream::{Answers, Appends, Asks, CallStreams, StreamedCall, outcome};
use cairn_cluster::serve_stream::serve_concurrently;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::limits::MAX_MESSAGE_BYTES;

/// The asks this node forwards.
pub type AskForwarder = Forwarder<Asks>;
/// The appends this node forwards.
pub type AppendForwarder = Forwarder<Appends>;

/// The calls of kind `C` this node forwards, one [`CallStreams`] per leader
/// address.
pub struct Forwarder<C: StreamedCall> {
    streams: Mutex<HashMap<String, Arc<CallStreams<C>>>>,
}

impl<C: StreamedCall> Default for Forwarder<C> {
    fn default() -> Self {
        Forwarder {
            streams: Mutex::new(HashMap::new()),
        }
    }
}

impl<C: StreamedCall> Forwarder<C> {
    /// Sends `request` (already marked forwarded) to the node at `address`
    /// and waits for the outcome.
    pub async fn call(
        &self,
        address: &str,
        channel: Channel,
        request: C::Request,
    ) -> Result<C::Reply, Status> {
        let streams = {
            let mut all = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
            all.entry(address.to_string())
                .or_insert_with(|| Arc::new(CallStreams::new(channel, MAX_MESSAGE_BYTES)))
                .clone()
        };
        streams.call(request).await
    }
}

/// The answering side of a stream of calls of kind `C`: runs each incoming
/// call with `call`, concurrently, and streams back the outcomes as they
/// finish, until the calling side closes the stream or `stop` (this node
/// shuts down).
pub fn serve<C, F, Fut>(
    incoming: Streaming<C::Envelope>,
    stop: CancellationToken,
    call: F,
) -> Answers<C::Outcome>
where
    C: StreamedCall,
    F: Fn(C::Request) -> Fut + Send + 'static,
    Fut: Future<Output = Result<C::Reply, Status>> + Send + 'static,
{
    serve_concurrently(incoming, stop, move |envelope: C::Envelope| {
        let (id, request) = C::open_envelope(envelope);
        let answering = request
            .map(&call)
            .ok_or_else(|| Status::invalid_argument("a call envelope without a request"));
        async move {
            let result = match answering {
                Ok(answering) => answering.await,
                Err(status) => Err(status),
            };
            outcome::<C>(id, result)
        }
    })
}
