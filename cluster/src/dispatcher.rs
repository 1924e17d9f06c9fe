//! The receiving end of Raft traffic: routes an incoming message to the
//! local Raft instance of its group, and the gRPC `RaftService` that feeds
//! it (unary calls, and the stream of calls each peer keeps open).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cairn_call_stream::Answers;
use cairn_proto::v1::raft_service_server::RaftService;
use cairn_proto::v1::{RaftAnswer, RaftCall, RaftMessage, RaftRpc};
use cairn_storage::{GroupId, TypeConfig};
use openraft::Raft;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::membership::ReplicaView;
use crate::network::Held;
use crate::raft_stream::{answer, kind_of};
use crate::serve_stream::serve_concurrently;
use crate::topology::Topology;
use crate::transport::{RpcKind, TransportError, decode, encode};

/// The Raft instances this node runs, by group, and the topology it follows
/// (what [`RpcKind::Topology`] answers).
#[derive(Clone, Default)]
pub struct RaftDispatcher {
    groups: Arc<RwLock<HashMap<GroupId, Raft<TypeConfig>>>>,
    topology: Arc<RwLock<Option<watch::Receiver<Arc<Topology>>>>>,
}

impl RaftDispatcher {
    /// Make `raft` reachable for messages tagged `group`.
    pub fn register(&self, group: GroupId, raft: Raft<TypeConfig>) {
        self.groups
            .write()
            .expect("dispatcher lock poisoned")
            .insert(group, raft);
    }

    /// Stop routing messages to `group`.
    pub fn unregister(&self, group: GroupId) -> Option<Raft<TypeConfig>> {
        self.groups
            .write()
            .expect("dispatcher lock poisoned")
            .remove(&group)
    }

    /// The local Raft of `group`, if this node runs one.
    pub fn raft(&self, group: GroupId) -> Option<Raft<TypeConfig>> {
        self.groups
            .read()
            .expect("dispatcher lock poisoned")
            .get(&group)
            .cloned()
    }

    /// Answer [`RpcKind::Topology`] with the topology `topology` sees, as
    /// it changes.
    pub fn follow(&self, topology: watch::Receiver<Arc<Topology>>) {
        *self.topology.write().expect("dispatcher lock poisoned") = Some(topology);
    }

    /// Every group this node runs.
    pub fn groups(&self) -> Vec<(GroupId, Raft<TypeConfig>)> {
        let groups = self.groups.read().expect("dispatcher lock poisoned");
        let mut all: Vec<_> = groups.iter().map(|(g, r)| (*g, r.clone())).collect();
        all.sort_by_key(|(g, _)| *g);
        all
    }

    /// Handles one encoded request and returns the encoded
    /// `Result<response, RaftError>`, as [`crate::network::GroupNetwork`] expects.
    pub async fn handle(
        &self,
        group: GroupId,
        kind: RpcKind,
        payload: &[u8],
    ) -> Result<Vec<u8>, TransportError> {
        let raft = || {
            self.raft(group).ok_or_else(|| TransportError {
                unreachable: true,
                message: format!("no replica of group {group} on this node"),
            })
        };
        Ok(match kind {
            RpcKind::AppendEntries => encode(&raft()?.append_entries(decode(payload)?).await),
            RpcKind::Vote => encode(&raft()?.vote(decode(payload)?).await),
            RpcKind::InstallSnapshot => encode(&raft()?.install_snapshot(decode(payload)?).await),
            RpcKind::Applied => encode(&Held::of(&raft()?)),
            RpcKind::Campaign => encode(&raft()?.trigger().elect().await.is_ok()),
            RpcKind::Membership => encode(&ReplicaView::of(&raft()?)),
            RpcKind::Topology => {
                let followed = self.topology.read().expect("dispatcher lock poisoned");
                let topology = followed.as_ref().map(|t| t.borrow().clone());
                encode(&topology.as_deref())
            }
        })
    }
}

/// gRPC `RaftService`: internal, node-to-node only.
pub struct RaftGrpcService {
    dispatcher: RaftDispatcher,
    stop: CancellationToken,
}

impl RaftGrpcService {
    /// Serve the groups registered in `dispatcher`; open streams of calls
    /// end when `stop` is cancelled (the node stops serving).
    pub fn new(dispatcher: RaftDispatcher, stop: CancellationToken) -> RaftGrpcService {
        RaftGrpcService { dispatcher, stop }
    }

    async fn dispatch(
        &self,
        kind: RpcKind,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let RaftMessage { group, payload } = request.into_inner();
        match self.dispatcher.handle(group, kind, &payload).await {
            Ok(reply) => Ok(Response::new(RaftMessage {
                group,
                payload: reply.into(),
            })),
            Err(e) if e.unreachable => Err(Status::unavailable(e.message)),
            Err(e) => Err(Status::invalid_argument(e.message)),
        }
    }
}

#[tonic::async_trait]
impl RaftService for RaftGrpcService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::AppendEntries, request).await
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::Vote, request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::InstallSnapshot, request).await
    }

    async fn applied(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::Applied, request).await
    }

    async fn campaign(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::Campaign, request).await
    }

    async fn topology(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::Topology, request).await
    }

    async fn membership(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.dispatch(RpcKind::Membership, request).await
    }

    type StreamStream = Answers<RaftAnswer>;

    async fn stream(
        &self,
        request: Request<Streaming<RaftCall>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let dispatcher = self.dispatcher.clone();
        Ok(Response::new(serve_concurrently(
            request.into_inner(),
            self.stop.clone(),
            move |call: RaftCall| {
                let dispatcher = dispatcher.clone();
                async move {
                    let result = match RaftRpc::try_from(call.rpc) {
                        Ok(rpc) => {
                            dispatcher
                                .handle(call.group, kind_of(rpc), &call.payload)
                                .await
                        }
                        Err(_) => Err(TransportError {
                            unreachable: false,
                            message: format!("unknown raft rpc {}", call.rpc),
                        }),
                    };
                    answer(call.id, result)
                }
            },
        )))
    }
}
