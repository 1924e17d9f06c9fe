//! The client's appends when `AppendStream` fails: against a server that
//! predates it (a rolling upgrade: new clients, old nodes) they fall back to
//! unary calls; when the stream breaks with appends in flight (a killed
//! server), they are retried on the next server.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_client::{Client, EventData, ExpectedVersion};
use cairn_proto::v1 as pb;
use cairn_proto::v1::event_store_service_server::{EventStoreService, EventStoreServiceServer};
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// An event store that counts the unary appends it was sent and numbers the
/// events of every stream from 1. Its `AppendStream` is unknown (an old
/// node) or, with `breaks_streams`, ends in an error once the first append
/// arrived on it, as a killed server's connection does.
#[derive(Clone, Default)]
struct FakeNode {
    appends: Arc<AtomicUsize>,
    breaks_streams: bool,
}

type Outcomes<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unknown() -> Status {
    Status::unimplemented("not served by this fake node")
}

#[tonic::async_trait]
impl EventStoreService for FakeNode {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendReply>, Status> {
        self.appends.fetch_add(1, Ordering::SeqCst);
        let events = request.into_inner().events.len() as u64;
        Ok(Response::new(pb::AppendReply {
            first_version: 1,
            last_version: events,
            ..Default::default()
        }))
    }

    type AppendStreamStream = Outcomes<pb::AppendOutcome>;

    async fn append_stream(
        &self,
        request: Request<Streaming<pb::AppendEnvelope>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        if !self.breaks_streams {
            return Err(unknown());
        }
        request.into_inner().message().await?;
        let broken = Status::unknown("h2 protocol error: error reading a body from connection");
        Ok(Response::new(Box::pin(tokio_stream::once(Err(broken)))))
    }

    async fn read(&self, _: Request<pb::ReadRequest>) -> Result<Response<pb::ReadReply>, Status> {
        Err(unknown())
    }

    async fn info(&self, _: Request<pb::InfoRequest>) -> Result<Response<pb::StreamInfo>, Status> {
        Err(unknown())
    }

    async fn delete(
        &self,
        _: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteReply>, Status> {
        Err(unknown())
    }

    async fn set_stream_metadata(
        &self,
        _: Request<pb::SetStreamMetadataRequest>,
    ) -> Result<Response<pb::SetStreamMetadataReply>, Status> {
        Err(unknown())
    }

    async fn read_all(
        &self,
        _: Request<pb::ReadAllRequest>,
    ) -> Result<Response<pb::ReadAllReply>, Status> {
        Err(unknown())
    }

    async fn read_partition(
        &self,
        _: Request<pb::ReadPartitionRequest>,
    ) -> Result<Response<pb::ReadPartitionReply>, Status> {
        Err(unknown())
    }

    type SubscribeStream = Outcomes<pb::SubscribeReply>;

    async fn subscribe(
        &self,
        _: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(unknown())
    }
}

/// Serves `node` on an ephemeral port until the returned sender drops.
async fn serve(node: FakeNode) -> (String, oneshot::Sender<()>, JoinHandle<()>) {
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = incoming.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        Server::builder()
            .add_service(EventStoreServiceServer::new(node))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (address, stop, server)
}

/// A client of `servers`, without leader routing: the fake nodes have no
/// admin service to ask for leaders.
async fn client_of(servers: &str) -> Client {
    Client::connect(servers)
        .await
        .unwrap()
        .without_leader_routing()
}

fn deposits() -> Vec<EventData> {
    vec![
        EventData::new("Deposited", json!({"amount": 1})),
        EventData::new("Deposited", json!({"amount": 2})),
    ]
}

#[tokio::test]
async fn appends_fall_back_to_unary_calls_on_a_server_without_append_streams() {
    let node = FakeNode::default();
    let (address, stop, server) = serve(node.clone()).await;
    let client = client_of(&address).await;

    for expected in [1, 2, 3] {
        let appended = client
            .append("account-1", deposits(), ExpectedVersion::Any)
            .await
            .unwrap();
        assert_eq!(appended.last_version, 2);
        assert_eq!(node.appends.load(Ordering::SeqCst), expected);
    }

    drop(stop);
    server.await.unwrap();
}

#[tokio::test]
async fn a_big_append_gets_a_unary_call_of_its_own() {
    let node = FakeNode {
        breaks_streams: true,
        ..FakeNode::default()
    };
    let (address, stop, server) = serve(node.clone()).await;
    let client = client_of(&address).await;

    let big = "x".repeat(cairn_client::call_stream::MAX_STREAMED_BYTES);
    let events = vec![EventData::new("Imported", json!({ "blob": big }))];
    let appended = client
        .append("import-1", events, ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(appended.last_version, 1);
    assert_eq!(node.appends.load(Ordering::SeqCst), 1);

    drop(stop);
    server.await.unwrap();
}

#[tokio::test]
async fn appends_in_flight_on_a_stream_that_breaks_are_retried_on_the_next_server() {
    let breaking = FakeNode {
        breaks_streams: true,
        ..FakeNode::default()
    };
    let old = FakeNode::default();
    let (first, stop_first, first_server) = serve(breaking.clone()).await;
    let (second, stop_second, second_server) = serve(old.clone()).await;
    let client = client_of(&format!("{first},{second}")).await;

    let appended = client
        .append("account-1", deposits(), ExpectedVersion::Any)
        .await
        .unwrap();
    assert_eq!(appended.last_version, 2);
    assert_eq!(breaking.appends.load(Ordering::SeqCst), 0);
    assert_eq!(old.appends.load(Ordering::SeqCst), 1);

    drop((stop_first, stop_second));
    first_server.await.unwrap();
    second_server.await.unwrap();
}
