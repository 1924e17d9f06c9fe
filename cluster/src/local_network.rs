//! An in-process [`RaftTransport`] for tests: delivers straight to the
//! target node's [`RaftDispatcher`], and can cut links to simulate
//! partitions and node loss.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use cairn_storage::{GroupId, NodeId};
use futures::future::BoxFuture;

use crate::dispatcher::RaftDispatcher;
use crate::transport::{RaftTransport, RpcKind, TransportError};

/// A network of in-process nodes whose links can be cut and healed.
#[derive(Clone, Default)]
pub struct LocalNetwork {
    inner: Arc<RwLock<Links>>,
}

#[derive(Default)]
struct Links {
    nodes: HashMap<NodeId, RaftDispatcher>,
    /// Directed links that drop every message.
    cut: HashSet<(NodeId, NodeId)>,
}

impl LocalNetwork {
    /// A network with no nodes.
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    /// Attach (or re-attach after a restart) node `id`.
    pub fn attach(&self, id: NodeId, dispatcher: RaftDispatcher) {
        self.inner
            .write()
            .expect("links poisoned")
            .nodes
            .insert(id, dispatcher);
    }

    /// Detach node `id`: messages to it fail as unreachable.
    pub fn detach(&self, id: NodeId) {
        self.inner
            .write()
            .expect("links poisoned")
            .nodes
            .remove(&id);
    }

    /// The transport node `from` sends with.
    pub fn transport(&self, from: NodeId) -> Arc<dyn RaftTransport> {
        Arc::new(LocalTransport {
            from,
            network: self.clone(),
        })
    }

    /// Split the nodes into sides; messages between different sides are
    /// dropped. Nodes not named keep all their links.
    pub fn partition(&self, sides: &[&[NodeId]]) {
        let mut links = self.inner.write().expect("links poisoned");
        for (i, a) in sides.iter().enumerate() {
            for (j, b) in sides.iter().enumerate() {
                if i != j {
                    for x in a.iter() {
                        for y in b.iter() {
                            links.cut.insert((*x, *y));
                        }
                    }
                }
            }
        }
    }

    /// Restore every link.
    pub fn heal(&self) {
        self.inner.write().expect("links poisoned").cut.clear();
    }

    fn route(&self, from: NodeId, to: NodeId) -> Option<RaftDispatcher> {
        let links = self.inner.read().expect("links poisoned");
        if links.cut.contains(&(from, to)) {
            return None;
        }
        links.nodes.get(&to).cloned()
    }
}

struct LocalTransport {
    from: NodeId,
    network: LocalNetwork,
}

impl RaftTransport for LocalTransport {
    fn call(
        &self,
        target: NodeId,
        _addr: &str,
        group: GroupId,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, TransportError>> {
        let route = self.network.route(self.from, target);
        let network = self.network.clone();
        let from = self.from;
        Box::pin(async move {
            let unreachable = || TransportError {
                unreachable: true,
                message: format!("node {target} unreachable from {from}"),
            };
            let dispatcher = route.ok_or_else(unreachable)?;
            let reply = dispatcher.handle(group, kind, &payload).await?;
            // A link cut while the call was in flight loses the reply too.
            network.route(target, from).ok_or_else(unreachable)?;
            Ok(reply)
        })
    }
}
