//! Starting and stopping a node: open the store, start the Raft groups and the
//! actor runtime, serve gRPC until shutdown, then stop in order.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_cluster::{
    ClusterConfig, ClusterNode, GrpcTransport, PeerChannels, RaftDispatcher, RaftGrpcService,
    RaftTransport, RaftTuning,
};
use cairn_proto::v1::actor_service_server::ActorServiceServer;
use cairn_proto::v1::admin_service_server::AdminServiceServer;
use cairn_proto::v1::event_store_service_server::EventStoreServiceServer;
use cairn_proto::v1::query_service_server::QueryServiceServer;
use cairn_proto::v1::raft_service_server::RaftServiceServer;
use cairn_storage::Store;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::actor::EventSourced;
use crate::bus::CommandBus;
use crate::config::ServeConfig;
use crate::handler::{EventHandler, HandlerRunner};
use crate::limits::MAX_MESSAGE_BYTES;
use crate::projection::builtin::{UserAnalytics, UsersByEmail};
use crate::projection::{Projection, ProjectionRunner};
use crate::registry::Registry;
use crate::runtime::{ActorRuntime, RuntimeConfig};
use crate::service::call_stream::AskForwarder;
use crate::service::{ActorGrpcService, AdminGrpcService, EventStoreGrpcService, QueryGrpcService};

/// How long shutdown waits for the calls in progress to finish.
const SERVER_STOP_WAIT: Duration = Duration::from_secs(5);

/// How long shutdown waits for the last users of the store to finish.
const STORE_CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Deadline of one Raft RPC between nodes.
const RAFT_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a node: its configuration, the actor types it runs, and (for
/// in-process tests) the Raft transport.
pub struct NodeBuilder {
    config: ServeConfig,
    registry: Registry,
    transport: Option<(Arc<dyn RaftTransport>, RaftDispatcher)>,
    tuning: RaftTuning,
    listener: Option<std::net::TcpListener>,
    projections: Vec<Arc<dyn Projection>>,
    handlers: Vec<Arc<dyn EventHandler>>,
}

impl NodeBuilder {
    /// A node with the built-in actor types.
    pub fn new(config: ServeConfig) -> NodeBuilder {
        let registry = Registry::with_builtins(config.snapshot_every);
        let tuning = RaftTuning::with_election_timeout(config.election_timeout);
        NodeBuilder {
            config,
            registry,
            transport: None,
            tuning,
            listener: None,
            projections: vec![Arc::new(UserAnalytics), Arc::new(UsersByEmail)],
            handlers: Vec::new(),
        }
    }

    /// Adds a user-defined actor type.
    pub fn register<A: EventSourced>(mut self, actor: A) -> NodeBuilder {
        self.registry.register(actor);
        self
    }

    /// Adds an upcaster turning `event_type` events of schema version `from`
    /// into version `from + 1`; reads of such events chain every upcaster
    /// from the stored version to the newest.
    pub fn upcaster(
        mut self,
        event_type: &str,
        from: u64,
        upcast: impl Fn(serde_json::Value) -> serde_json::Value + Send + Sync + 'static,
    ) -> NodeBuilder {
        self.registry.register_upcaster(event_type, from, upcast);
        self
    }

    /// Adds a user-defined projection, queryable by its name.
    pub fn projection<P: Projection>(mut self, projection: P) -> NodeBuilder {
        self.projections.push(Arc::new(projection));
        self
    }

    /// Adds an event handler: it reacts to committed events by sending
    /// commands to actors (see [`crate::handler`]).
    pub fn event_handler<H: EventHandler>(mut self, handler: H) -> NodeBuilder {
        self.handlers.push(Arc::new(handler));
        self
    }

    /// Replaces Raft's timing and compaction settings.
    pub fn raft_tuning(mut self, tuning: RaftTuning) -> NodeBuilder {
        self.tuning = tuning;
        self
    }

    /// Carries Raft traffic over `transport` instead of gRPC; `dispatcher`
    /// receives this node's incoming messages (see `cairn_cluster::LocalNetwork`).
    pub fn raft_transport(
        mut self,
        transport: Arc<dyn RaftTransport>,
        dispatcher: RaftDispatcher,
    ) -> NodeBuilder {
        self.transport = Some((transport, dispatcher));
        self
    }

    /// Serves on an already bound listener instead of binding `listen`
    /// (tests bind port 0 first to learn every node's address).
    pub fn listener(mut self, listener: std::net::TcpListener) -> NodeBuilder {
        self.listener = Some(listener);
        self
    }

    /// Opens the store, starts the Raft groups and serves gRPC on the
    /// configured address. Returns once the node accepts calls.
    pub async fn start(self) -> anyhow::Result<RunningNode> {
        let NodeBuilder {
            config,
            registry,
            transport,
            tuning,
            projections,
            handlers,
            listener,
        } = self;
        check_handler_names(&handlers)?;
        check_config(&config)?;
        let listener = match listener {
            Some(listener) => {
                listener.set_nonblocking(true)?;
                TcpListener::from_std(listener)?
            }
            None => TcpListener::bind(&config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?,
        };
        let local_addr = listener.local_addr()?;
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let store = Store::open(&config.data_dir)
            .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))?;

        let channels = PeerChannels::default();
        let (transport, dispatcher) = transport.unwrap_or_else(|| {
            let grpc: Arc<dyn RaftTransport> =
                Arc::new(GrpcTransport::new(channels.clone(), RAFT_RPC_TIMEOUT));
            (grpc, RaftDispatcher::default())
        });
        let cluster_config = ClusterConfig {
            node_id: config.node_id,
            peers: config.peers.clone(),
            partitions: config.partitions,
            replication: config.replication,
            tuning,
        };
        // Peers' Raft RPCs wait in the listen backlog until the server runs;
        // openraft retries what times out.
        let node = ClusterNode::start(
            cluster_config,
            store,
            transport,
            channels,
            dispatcher.clone(),
        )
        .await
        .context("cannot start the node's Raft groups")?;
        let registry = Arc::new(registry);
        let upcasters = registry.upcasters().clone();
        let runtime = ActorRuntime::new(
            node.clone(),
            registry.clone(),
            RuntimeConfig {
                passivate_after: config.passivate_after,
                max_activations: config.max_activations,
            },
        );
        let projections = ProjectionRunner::start(node.clone(), projections, upcasters.clone());
        let forwarder = Arc::new(AskForwarder::default());
        let bus = CommandBus::new(node.clone(), runtime.clone(), forwarder.clone());
        let handlers = HandlerRunner::start(node.clone(), handlers, bus.clone(), upcasters.clone());

        // Stops the server, and first ends the long-lived streams it serves
        // (peers' Raft streams, clients' and forwarders' asks and appends): the
        // server's graceful shutdown waits for every open call.
        let serving = CancellationToken::new();
        let server = tonic::transport::Server::builder()
            .add_service(
                RaftServiceServer::new(RaftGrpcService::new(dispatcher, serving.clone()))
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            )
            .add_service(
                ActorServiceServer::new(ActorGrpcService::new(
                    node.clone(),
                    runtime.clone(),
                    forwarder,
                    serving.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                EventStoreServiceServer::new(EventStoreGrpcService::new(
                    node.clone(),
                    registry.clone(),
                    serving.clone(),
                ))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(AdminServiceServer::new(AdminGrpcService::new(node.clone())))
            .add_service(QueryServiceServer::new(QueryGrpcService::new(
                node.clone(),
                projections.clone(),
            )))
            .serve_with_incoming_shutdown(
                // The builder's `tcp_nodelay` only reaches sockets tonic
                // accepts itself; these are ours. Without it, a reply written
                // in two pieces waits for the caller's delayed ACK (40 ms).
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    |accepted| {
                        let stream = accepted?;
                        stream.set_nodelay(true)?;
                        Ok::<_, std::io::Error>(stream)
                    },
                ),
                serving.clone().cancelled_owned(),
            );
        let server = tokio::spawn(server);
        info!(node_id = config.node_id, addr = %local_addr, "serving");
        Ok(RunningNode {
            addr: local_addr,
            node,
            runtime,
            bus,
            projections,
            handlers,
            serving,
            server: Some(server),
        })
    }
}

fn check_handler_names(handlers: &[Arc<dyn EventHandler>]) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    for h in handlers {
        anyhow::ensure!(
            seen.insert(h.name()),
            "two event handlers are named `{}`: names key their checkpoints, so make them unique",
            h.name()
        );
    }
    Ok(())
}

fn check_config(config: &ServeConfig) -> anyhow::Result<()> {
    anyhow::ensure!(config.node_id > 0, "node id must be > 0");
    anyhow::ensure!(
        config.peers.contains_key(&config.node_id),
        "--peers does not name this node's id {}",
        config.node_id
    );
    anyhow::ensure!(config.partitions > 0, "--partitions must be > 0");
    anyhow::ensure!(config.replication > 0, "--replication must be > 0");
    Ok(())
}

/// A started node.
pub struct RunningNode {
    addr: SocketAddr,
    node: Arc<ClusterNode>,
    runtime: ActorRuntime,
    bus: CommandBus,
    projections: ProjectionRunner,
    handlers: HandlerRunner,
    /// Cancelled to stop serving.
    serving: CancellationToken,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl RunningNode {
    /// The address the node serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's cluster part (Raft groups, topology).
    pub fn cluster(&self) -> &Arc<ClusterNode> {
        &self.node
    }

    /// The actor runtime.
    pub fn runtime(&self) -> &ActorRuntime {
        &self.runtime
    }

    /// The command bus: send commands to any actor of the cluster from this
    /// process (routed to its partition's leader).
    pub fn command_bus(&self) -> &CommandBus {
        &self.bus
    }

    /// Stops in order: stop accepting calls, drop activations, stop the Raft
    /// groups; the store closes when the last reference goes.
    pub async fn shutdown(mut self) {
        self.serving.cancel();
        if let Some(server) = self.server.take()
            && tokio::time::timeout(SERVER_STOP_WAIT, server)
                .await
                .is_err()
        {
            warn!(
                "calls were still open {SERVER_STOP_WAIT:?} after serving stopped; stopping anyway"
            );
        }
        self.handlers.shutdown();
        self.runtime.shutdown();
        self.projections.shutdown();
        self.node.shutdown().await;
        let node_id = self.node.node_id();
        let store = self.node.store().clone();
        drop(self);
        // Last: close RocksDB once every task holding it is gone, so the data
        // directory is unlocked when this returns.
        match store.close(STORE_CLOSE_WAIT).await {
            Ok(()) => info!(node_id, "stopped"),
            Err(e) => warn!(node_id, "stopped, but the store is still in use: {e}"),
        }
    }
}

/// Start the node described by `config` and serve until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = NodeBuilder::new(config).start().await?;
    shutdown.await;
    node.shutdown().await;
    Ok(())
}
