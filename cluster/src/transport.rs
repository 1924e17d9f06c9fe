//! How Raft RPCs travel between nodes: the [`RaftTransport`] trait, its gRPC
//! implementation over one pooled channel and one stream of calls per peer
//! (`crate::raft_stream`), and the encoding of openraft messages.
//!
//! This is internal node-to-node traffic (`RaftService` in the proto), kept
//! apart from the client services.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_storage::{GroupId, NodeId};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::{Channel, Endpoint};

use crate::raft_stream::RaftStreams;

/// Which openraft RPC a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
    /// What the replica holds of the group ([`crate::network::Held`]).
    Applied,
    /// Stand for election now (a leader handing its group over asks this).
    Campaign,
    /// The topology the node follows (the group is ignored).
    Topology,
    /// The membership the replica holds.
    Membership,
}

/// A failed delivery: the peer was not reached or did not answer.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct TransportError {
    /// True when the peer could not be reached at all (openraft backs off).
    pub unreachable: bool,
    pub message: String,
}

/// Delivers one encoded Raft request of one group to a peer and returns the
/// encoded response. The real implementation is [`GrpcTransport`]; tests use
/// [`crate::LocalNetwork`], which can drop and partition.
pub trait RaftTransport: Send + Sync + 'static {
    fn call(
        &self,
        target: NodeId,
        addr: &str,
        group: GroupId,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>>;
}

/// Lazily connected tonic channels, one per peer address, shared by every
/// group (and by request forwarding between nodes).
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerChannels {
    /// The channel to `addr` (`host:port`), created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock().expect("peer channel map poisoned");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| TransportError {
                unreachable: true,
                message: format!("bad peer address `{addr}`: {e}"),
            })?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Raft RPCs over gRPC (`RaftService`), with a deadline per call: calls of
/// up to [`MAX_STREAMED_BYTES`](crate::raft_stream::MAX_STREAMED_BYTES) over one [`RaftStreams`] per peer; larger
/// ones (a follower's multi-megabyte catch-up batch would hold back every
/// group's heartbeats behind it on the shared stream) and every
/// InstallSnapshot as unary calls, each an HTTP/2 stream of its own.
#[derive(Clone)]
pub struct GrpcTransport {
    channels: PeerChannels,
    streams: Arc<Mutex<HashMap<String, Arc<RaftStreams>>>>,
    timeout: Duration,
}

impl GrpcTransport {
    /// A transport over `channels`; every call gives up after `timeout`.
    pub fn new(channels: PeerChannels, timeout: Duration) -> GrpcTransport {
        GrpcTransport {
            channels,
            streams: Arc::default(),
            timeout,
        }
    }

    /// The streams to the peer at `addr`, created on first use.
    fn streams(&self, addr: &str) -> Result<Arc<RaftStreams>, TransportError> {
        let mut streams = self.streams.lock().expect("raft stream map poisoned");
        if let Some(peer) = streams.get(addr) {
            return Ok(peer.clone());
        }
        let peer = Arc::new(RaftStreams::new(self.channels.get(addr)?));
        streams.insert(addr.to_string(), peer.clone());
        Ok(peer)
    }
}

impl RaftTransport for GrpcTransport {
    fn call(
        &self,
        _target: NodeId,
        addr: &str,
        group: GroupId,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let peer = self.streams(addr);
        let timeout = self.timeout;
        Box::pin(async move {
            let peer = peer?;
            let call = peer.call(group, kind, Bytes::from(payload));
            tokio::time::timeout(timeout, call)
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError {
                        unreachable: true,
                        message: format!("no answer within {timeout:?}"),
                    })
                })
        })
    }
}

/// Encodes a Raft message for the wire (postcard).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    cairn_storage::encode_exact(value).expect("openraft messages always serialize")
}

/// Decodes a Raft message from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TransportError> {
    postcard::from_bytes(bytes).map_err(|e| TransportError {
        unreachable: false,
        message: format!("undecodable raft message: {e}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cairn_call_stream::Answers;
    use cairn_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
    use cairn_proto::v1::{RaftAnswer, RaftCall};
    use tokio::sync::oneshot;
    use tokio_util::sync::CancellationToken;
    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response, Status, Streaming};

    use super::*;
    use crate::raft_stream::MAX_STREAMED_BYTES;
    use crate::raft_stream::answer;
    use crate::serve_stream::serve_concurrently;
    use cairn_proto::v1::RaftMessage;

    /// A peer that echoes every payload, counting how each call arrived.
    #[derive(Clone, Default)]
    struct EchoPeer {
        /// Answers `Stream` with `Unimplemented`, as an older binary would.
        no_stream: bool,
        unary: Arc<AtomicUsize>,
        streamed: Arc<AtomicUsize>,
        streams_opened: Arc<AtomicUsize>,
        /// Ends the stream served last.
        end_stream: Arc<Mutex<CancellationToken>>,
    }

    impl EchoPeer {
        fn echo(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
            self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(request.into_inner()))
        }
    }

    #[tonic::async_trait]
    impl RaftService for EchoPeer {
        async fn append_entries(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        async fn vote(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        async fn install_snapshot(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        async fn applied(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        async fn campaign(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        async fn topology(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        async fn membership(
            &self,
            request: Request<RaftMessage>,
        ) -> Result<Response<RaftMessage>, Status> {
            self.echo(request)
        }

        type StreamStream = Answers<RaftAnswer>;

        async fn stream(
            &self,
            request: Request<Streaming<RaftCall>>,
        ) -> Result<Response<Self::StreamStream>, Status> {
            if self.no_stream {
                return Err(Status::unimplemented("no Stream here"));
            }
            self.streams_opened.fetch_add(1, Ordering::SeqCst);
            let end = CancellationToken::new();
            *self.end_stream.lock().unwrap() = end.clone();
            let streamed = self.streamed.clone();
            Ok(Response::new(serve_concurrently(
                request.into_inner(),
                end,
                move |call: RaftCall| {
                    streamed.fetch_add(1, Ordering::SeqCst);
                    async move { answer(call.id, Ok(call.payload)) }
                },
            )))
        }
    }

    /// Serves `peer` on an ephemeral port until the sender drops.
    fn start(peer: EchoPeer) -> (String, oneshot::Sender<()>) {
        let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let address = incoming.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            Server::builder()
                .add_service(RaftServiceServer::new(peer))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                }),
        );
        (address, stop)
    }

    fn transport() -> GrpcTransport {
        GrpcTransport::new(PeerChannels::default(), Duration::from_secs(5))
    }

    async fn call(
        transport: &GrpcTransport,
        addr: &str,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        transport.call(2, addr, 7, kind, payload).await
    }

    #[tokio::test]
    async fn small_calls_share_one_stream_and_large_ones_and_snapshots_go_unary() {
        let peer = EchoPeer::default();
        let (addr, _stop) = start(peer.clone());
        let transport = transport();

        let calls: Vec<_> = (0..50u8)
            .map(|i| call(&transport, &addr, RpcKind::AppendEntries, vec![i; 100]))
            .collect();
        let answers = futures::future::join_all(calls).await;
        for (i, answer) in answers.into_iter().enumerate() {
            assert_eq!(answer.unwrap(), vec![i as u8; 100], "answer {i} is its own");
        }
        assert_eq!(
            call(&transport, &addr, RpcKind::Vote, vec![1])
                .await
                .unwrap(),
            vec![1]
        );
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 51);
        assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 1);
        assert_eq!(peer.unary.load(Ordering::SeqCst), 0);

        let large = vec![9u8; MAX_STREAMED_BYTES + 1];
        let echoed = call(&transport, &addr, RpcKind::AppendEntries, large.clone());
        assert_eq!(echoed.await.unwrap(), large);
        let snapshot = call(&transport, &addr, RpcKind::InstallSnapshot, vec![3]);
        assert_eq!(snapshot.await.unwrap(), vec![3]);
        assert_eq!(peer.unary.load(Ordering::SeqCst), 2);
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 51);
    }

    #[tokio::test]
    async fn a_peer_without_stream_gets_unary_calls() {
        let peer = EchoPeer {
            no_stream: true,
            ..EchoPeer::default()
        };
        let (addr, _stop) = start(peer.clone());
        let transport = transport();
        for i in 0..3u8 {
            let answer = call(&transport, &addr, RpcKind::AppendEntries, vec![i]).await;
            assert_eq!(answer.unwrap(), vec![i]);
        }
        assert_eq!(peer.unary.load(Ordering::SeqCst), 3);
        assert_eq!(peer.streamed.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_new_stream_is_opened_after_the_peer_ends_one() {
        let peer = EchoPeer::default();
        let (addr, _stop) = start(peer.clone());
        let transport = transport();
        assert_eq!(
            call(&transport, &addr, RpcKind::Vote, vec![1])
                .await
                .unwrap(),
            vec![1]
        );
        peer.end_stream.lock().unwrap().cancel();

        // Calls racing the end fail as unreachable (openraft retries them);
        // a later call opens a new stream.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match call(&transport, &addr, RpcKind::Vote, vec![2]).await {
                Ok(answer) => {
                    assert_eq!(answer, vec![2]);
                    break;
                }
                Err(e) => assert!(e.unreachable, "{e}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "no new stream");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(peer.streams_opened.load(Ordering::SeqCst), 2);
        assert_eq!(peer.unary.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_unreachable_peer_fails_as_unreachable() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let error = call(&transport(), &addr, RpcKind::Vote, vec![1])
            .await
            .unwrap_err();
        assert!(error.unreachable, "{error}");
    }
}
