//! Asks over `ActorService.AskStream` and appends over
//! `EventStoreService.AppendStream`: the two kinds of call the client (and
//! a node forwarding to a partition's leader) sends over one long-lived
//! stream per connection, with `cairn-call-stream`'s [`CallStreams`].

use cairn_proto::v1 as pb;
use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::event_store_service_client::EventStoreServiceClient;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

pub use cairn_call_stream::{
    Answers, CallResult, CallStreams, MAX_STREAMED_BYTES, Requests, StreamedCall, outcome,
    read_outcome,
};

/// Implements [`StreamedCall`] for `$kind` from the generated messages
/// (`$outcome_result` is the module of the outcome's `oneof`), and the
/// client's unary and stream methods.
macro_rules! streamed_call {
    ($kind:ident, $client:ident, $unary:ident, $stream:ident,
     $request:ident, $reply:ident, $envelope:ident, $outcome:ident, $outcome_result:ident) => {
        impl StreamedCall for $kind {
            type Request = pb::$request;
            type Reply = pb::$reply;
            type Envelope = pb::$envelope;
            type Outcome = pb::$outcome;

            async fn unary(
                channel: Channel,
                max_message_bytes: usize,
                request: pb::$request,
            ) -> Result<pb::$reply, Status> {
                $client(channel, max_message_bytes)
                    .$unary(request)
                    .await
                    .map(tonic::Response::into_inner)
            }

            async fn open(
                channel: Channel,
                max_message_bytes: usize,
                requests: Requests<pb::$envelope>,
            ) -> Result<Streaming<pb::$outcome>, Status> {
                $client(channel, max_message_bytes)
                    .$stream(requests)
                    .await
                    .map(tonic::Response::into_inner)
            }

            fn envelope(id: u64, request: pb::$request) -> pb::$envelope {
                pb::$envelope {
                    id,
                    request: Some(request),
                }
            }

            fn open_envelope(envelope: pb::$envelope) -> (u64, Option<pb::$request>) {
                (envelope.id, envelope.request)
            }

            fn outcome(id: u64, result: CallResult<pb::$reply>) -> pb::$outcome {
                use pb::$outcome_result::Result as R;
                let result = match result {
                    CallResult::Reply(reply) => R::Reply(reply),
                    CallResult::Error(error) => R::Error(error),
                };
                pb::$outcome {
                    id,
                    result: Some(result),
                }
            }

            fn open_outcome(outcome: pb::$outcome) -> (u64, Option<CallResult<pb::$reply>>) {
                use pb::$outcome_result::Result as R;
                let result = outcome.result.map(|result| match result {
                    R::Reply(reply) => CallResult::Reply(reply),
                    R::Error(error) => CallResult::Error(error),
                });
                (outcome.id, result)
            }
        }
    };
}

/// Asks over `ActorService.AskStream`.
pub struct Asks;

streamed_call!(
    Asks,
    actor_client,
    ask,
    ask_stream,
    AskRequest,
    AskReply,
    AskEnvelope,
    AskOutcome,
    ask_outcome
);

/// Appends over `EventStoreService.AppendStream`.
pub struct Appends;

streamed_call!(
    Appends,
    event_store_client,
    append,
    append_stream,
    AppendRequest,
    AppendReply,
    AppendEnvelope,
    AppendOutcome,
    append_outcome
);

fn actor_client(channel: Channel, max_message_bytes: usize) -> ActorServiceClient<Channel> {
    ActorServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

fn event_store_client(
    channel: Channel,
    max_message_bytes: usize,
) -> EventStoreServiceClient<Channel> {
    EventStoreServiceClient::new(channel)
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use cairn_call_stream::is_stream_failure;
    use tonic::Code;
    use tonic::metadata::MetadataValue;

    use super::*;

    fn back<C: StreamedCall>(outcome: C::Outcome) -> (u64, Result<C::Reply, Status>) {
        read_outcome::<C>(outcome)
    }

    #[test]
    fn an_outcome_reads_back_as_the_reply_or_status_it_carries() {
        let mut status = Status::failed_precondition("insufficient funds");
        status.metadata_mut().insert(
            "cairn-error",
            MetadataValue::from_static("command-rejected"),
        );
        let (id, result) = back::<Asks>(outcome::<Asks>(7, Err(status)));
        assert_eq!(id, 7);
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "insufficient funds");
        assert_eq!(
            status.metadata().get("cairn-error").unwrap(),
            "command-rejected"
        );
        assert!(!is_stream_failure(&status));

        let reply = pb::AskReply {
            reply: b"{}".to_vec().into(),
            version: 3,
            duplicate: false,
        };
        let (id, result) = back::<Asks>(outcome::<Asks>(8, Ok(reply.clone())));
        assert_eq!(id, 8);
        assert_eq!(result.unwrap(), reply);
    }

    #[test]
    fn an_append_outcome_reads_back_the_same_way() {
        let conflict = Status::failed_precondition("wrong expected version: stream is at 3");
        let (id, result) = back::<Appends>(outcome::<Appends>(1, Err(conflict)));
        assert_eq!(id, 1);
        let status = result.unwrap_err();
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "wrong expected version: stream is at 3");

        let reply = pb::AppendReply {
            first_version: 4,
            last_version: 5,
            partition: 2,
            ..Default::default()
        };
        let (id, result) = back::<Appends>(outcome::<Appends>(2, Ok(reply)));
        assert_eq!(id, 2);
        assert_eq!(result.unwrap(), reply);
        let empty = pb::AppendOutcome {
            id: 3,
            result: None,
        };
        assert!(back::<Appends>(empty).1.is_err());
    }
}
