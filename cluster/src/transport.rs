//! How Raft RPCs travel between nodes: the [`RaftTransport`] trait, its gRPC
//! implementation over one pooled channel per peer, and the encoding of
//! openraft messages.
//!
//! This is internal node-to-node traffic (`RaftService` in the proto), kept
//! apart from the client services.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_proto::v1::RaftMessage;
use cairn_proto::v1::raft_service_client::RaftServiceClient;
use cairn_storage::{GroupId, NodeId};
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::{Channel, Endpoint};

/// Which openraft RPC a message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RpcKind {
    AppendEntries,
    Vote,
    InstallSnapshot,
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

/// Raft RPCs over gRPC (`RaftService`), with a deadline per call.
#[derive(Clone)]
pub struct GrpcTransport {
    channels: PeerChannels,
    timeout: Duration,
}

impl GrpcTransport {
    /// A transport over `channels`; every call gives up after `timeout`.
    pub fn new(channels: PeerChannels, timeout: Duration) -> GrpcTransport {
        GrpcTransport { channels, timeout }
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
        let channel = self.channels.get(addr);
        let timeout = self.timeout;
        Box::pin(async move {
            let mut client = RaftServiceClient::new(channel?)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let mut request = tonic::Request::new(RaftMessage {
                group,
                payload: payload.into(),
            });
            request.set_timeout(timeout);
            let reply = match kind {
                RpcKind::AppendEntries => client.append_entries(request).await,
                RpcKind::Vote => client.vote(request).await,
                RpcKind::InstallSnapshot => client.install_snapshot(request).await,
            };
            match reply {
                Ok(reply) => Ok(reply.into_inner().payload.to_vec()),
                Err(status) => Err(TransportError {
                    unreachable: matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                    ),
                    message: status.message().to_string(),
                }),
            }
        })
    }
}

/// Encodes a Raft message for the wire (postcard).
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("openraft messages always serialize")
}

/// Decodes a Raft message from the wire.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, TransportError> {
    postcard::from_bytes(bytes).map_err(|e| TransportError {
        unreachable: false,
        message: format!("undecodable raft message: {e}"),
    })
}
