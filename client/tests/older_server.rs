//! The client against a server that predates `AppendStream` (a rolling
//! upgrade: new clients, old nodes): appends fall back to unary calls.

#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_client::{Client, EventData, ExpectedVersion};
use cairn_proto::v1 as pb;
use cairn_proto::v1::event_store_service_server::{EventStoreService, EventStoreServiceServer};
use serde_json::json;
use tokio::sync::oneshot;
use tokio_stream::Stream;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// An event store that knows unary `Append` only; it counts the appends it
/// was sent and numbers the events of every stream from 1.
#[derive(Clone, Default)]
struct OldNode {
    appends: Arc<AtomicUsize>,
}

type Outcomes<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn unknown() -> Status {
    Status::unimplemented("not served by this old node")
}

#[tonic::async_trait]
impl EventStoreService for OldNode {
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
        _: Request<Streaming<pb::AppendEnvelope>>,
    ) -> Result<Response<Self::AppendStreamStream>, Status> {
        Err(unknown())
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

#[tokio::test]
async fn appends_fall_back_to_unary_calls_on_a_server_without_append_streams() {
    let node = OldNode::default();
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let address = incoming.local_addr().unwrap().to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .add_service(EventStoreServiceServer::new(node.clone()))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    // Without leader routing: the old node has no admin service to ask.
    let client = Client::connect(&address)
        .await
        .unwrap()
        .without_leader_routing();

    for expected in [1, 2, 3] {
        let events = vec![
            EventData::new("Deposited", json!({"amount": 1})),
            EventData::new("Deposited", json!({"amount": 2})),
        ];
        let appended = client
            .append("account-1", events, ExpectedVersion::Any)
            .await
            .unwrap();
        assert_eq!(appended.last_version, 2);
        assert_eq!(node.appends.load(Ordering::SeqCst), expected);
    }

    drop(stop);
    server.await.unwrap().unwrap();
}
