//! The client against fake servers: failover between servers, retries of
//! `Unavailable`, and errors mapped from what the server sent.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_client::{Client, Error, StateAt};
use cairn_proto::v1 as pb;
use cairn_proto::v1::actor_service_server::{ActorService, ActorServiceServer};
use cairn_proto::v1::admin_service_server::{AdminService, AdminServiceServer};
use serde_json::json;
use tokio::sync::oneshot;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A fake node: answers `Unavailable` to its first `unavailable_first` calls,
/// then behaves; `ask` fails with a rejection carrying `cairn-error`.
#[derive(Clone)]
struct Fake {
    node_id: u64,
    calls: Arc<AtomicUsize>,
    unavailable_first: usize,
}

impl Fake {
    fn gate(&self) -> Result<(), Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.unavailable_first {
            let mut status = Status::unavailable("no leader for partition 0 yet");
            status
                .metadata_mut()
                .insert("cairn-error", "no-leader".parse().expect("ascii"));
            return Err(status);
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl AdminService for Fake {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.gate()?;
        Ok(Response::new(pb::StatusReply {
            node_id: self.node_id,
            partition_count: 16,
            ..Default::default()
        }))
    }

    async fn compact(
        &self,
        _: Request<pb::CompactRequest>,
    ) -> Result<Response<pb::CompactReply>, Status> {
        Err(Status::unimplemented("a fake node does not compact"))
    }

    async fn add_node(
        &self,
        _: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        Err(Status::unimplemented("a fake node has fixed members"))
    }

    async fn remove_node(
        &self,
        _: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        Err(Status::unimplemented("a fake node has fixed members"))
    }

    async fn transfer_leader(
        &self,
        _: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderReply>, Status> {
        Err(Status::unimplemented("a fake node leads nothing"))
    }

    async fn rebalance(
        &self,
        _: Request<pb::RebalanceRequest>,
    ) -> Result<Response<pb::RebalanceReply>, Status> {
        Err(Status::unimplemented("a fake node leads nothing"))
    }
}

#[tonic::async_trait]
impl ActorService for Fake {
    async fn ask(&self, _: Request<pb::AskRequest>) -> Result<Response<pb::AskReply>, Status> {
        self.gate()?;
        let mut status = Status::failed_precondition("insufficient funds: balance 0, asked 5");
        status
            .metadata_mut()
            .insert("cairn-error", "command-rejected".parse().expect("ascii"));
        Err(status)
    }

    type AskStreamStream = tokio_stream::Empty<Result<pb::AskOutcome, Status>>;

    async fn ask_stream(
        &self,
        _: Request<tonic::Streaming<pb::AskEnvelope>>,
    ) -> Result<Response<Self::AskStreamStream>, Status> {
        Err(Status::unimplemented("a fake node does not stream asks"))
    }

    async fn get_state(
        &self,
        request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateReply>, Status> {
        self.gate()?;
        let r = request.into_inner();
        Ok(Response::new(pb::GetStateReply {
            state: serde_json::to_vec(&json!({"id": r.actor_id, "atVersion": r.at_version}))
                .expect("json")
                .into(),
            version: r.at_version.unwrap_or(9),
        }))
    }
}

/// Starts `fake` on an ephemeral port; the server stops when the sender drops.
async fn start(fake: Fake) -> (String, oneshot::Sender<()>) {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let address = incoming.local_addr().expect("local addr").to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        Server::builder()
            .add_service(AdminServiceServer::new(fake.clone()))
            .add_service(ActorServiceServer::new(fake))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    (address, stop)
}

fn fake(node_id: u64, unavailable_first: usize) -> Fake {
    Fake {
        node_id,
        calls: Arc::new(AtomicUsize::new(0)),
        unavailable_first,
    }
}

/// An address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").to_string()
}

#[tokio::test]
async fn nothing_listening_is_unreachable_with_an_actionable_message() {
    let dead = dead_address();
    let client = Client::connect(&dead)
        .await
        .expect("valid list")
        .with_timeout(Duration::from_millis(300));
    let err = client.status().await.unwrap_err();
    let Error::Unreachable(message) = &err else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert_eq!(
        message,
        &format!(
            "could not reach any Cairn server (tried {dead}): connection refused; is `cairn serve` running?"
        )
    );
}

#[tokio::test]
async fn fails_over_to_a_live_server_and_sticks_to_it() {
    let dead = dead_address();
    let live = fake(2, 0);
    let (live_address, _stop) = start(live.clone()).await;
    let client = Client::connect(&format!("{dead},{live_address}"))
        .await
        .expect("valid list");
    assert_eq!(client.status().await.expect("status").node_id, 2);
    assert_eq!(client.status().await.expect("status").node_id, 2);
    assert_eq!(live.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_unavailable_until_the_server_recovers() {
    let node = fake(1, 3);
    let (address, _stop) = start(node.clone()).await;
    // Server-list failover only: no routing table lookups among the counted calls.
    let client = Client::connect(&address)
        .await
        .expect("valid list")
        .without_leader_routing();
    let state = client
        .state("account", "a1", StateAt::Version(4))
        .await
        .expect("state after retries");
    assert_eq!(state.state, json!({"id": "a1", "atVersion": 4}));
    assert_eq!(state.version, 4);
    assert_eq!(node.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn gives_up_on_a_server_that_stays_unavailable() {
    let (address, _stop) = start(fake(1, usize::MAX)).await;
    let client = Client::connect(&address)
        .await
        .expect("valid list")
        .with_timeout(Duration::from_millis(300));
    let err = client.status().await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(m) if m.starts_with("no leader for partition 0 yet")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_rejection_is_returned_at_once() {
    let node = fake(1, 0);
    let (address, _stop) = start(node.clone()).await;
    // Server-list failover only: no routing table lookups among the counted calls.
    let client = Client::connect(&address)
        .await
        .expect("valid list")
        .without_leader_routing();
    let err = client
        .ask("account", "a1", &json!({"type": "WITHDRAW", "amount": 5}))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Rejected("insufficient funds: balance 0, asked 5".into())
    );
    assert_eq!(node.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn malformed_server_list_is_invalid_argument() {
    let err = Client::connect("localhost").await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
}
