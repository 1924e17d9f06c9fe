//! openraft's network for one group: every RPC is tagged with the group id
//! and sent over the node's shared [`RaftTransport`].

use std::sync::Arc;
use std::time::Duration;

use cairn_storage::{GroupId, NodeId, TypeConfig};
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Serialize, de::DeserializeOwned};

use crate::transport::{RaftTransport, RpcKind, TransportError, decode, encode};

/// Pause between a group's tries to replicate to an unreachable peer.
const UNREACHABLE_RETRY: Duration = Duration::from_millis(200);

/// Creates the per-peer network clients of one group.
pub struct GroupNetworkFactory {
    group: GroupId,
    transport: Arc<dyn RaftTransport>,
}

impl GroupNetworkFactory {
    /// The factory for `group`, sending over `transport`.
    pub fn new(group: GroupId, transport: Arc<dyn RaftTransport>) -> GroupNetworkFactory {
        GroupNetworkFactory { group, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GroupNetwork {
        GroupNetwork {
            group: self.group,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// One group's connection to one peer.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl GroupNetwork {
    async fn send<Req, Resp, E>(&self, kind: RpcKind, request: &Req) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = self
            .transport
            .call(self.target, &self.addr, self.group, kind, encode(request))
            .await
            .map_err(|e| transport_error(&e))?;
        let reply: Result<Resp, RaftError<NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn transport_error<E: std::error::Error>(
    e: &TransportError,
) -> RPCError<NodeId, BasicNode, RaftError<NodeId, E>> {
    if e.unreachable {
        RPCError::Unreachable(Unreachable::new(e))
    } else {
        RPCError::Network(NetworkError::new(e))
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.send(RpcKind::AppendEntries, &rpc).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.send(RpcKind::InstallSnapshot, &rpc).await
    }

    /// How long a group's replication to an unreachable peer waits before
    /// trying again: 200 ms, where openraft waits 500. A restarted node
    /// waited up to that long for each of its groups' leaders to notice it,
    /// a third or more of its catch-up time. Each retry reads what the peer
    /// lacks from the log (openraft does so before calling the network),
    /// which costs the survivors CPU while a peer is down: with 1000-event
    /// appends, 15% more per event at 200 ms, 40% at 100 ms (see
    /// bench/README.md, session 8).
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(UNREACHABLE_RETRY))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.send(RpcKind::Vote, &rpc).await
    }
}
