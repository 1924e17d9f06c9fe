//! [`Client`]: a connection to a Cairn cluster through a list of servers.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_proto::v1 as pb;
use cairn_proto::v1::actor_service_client::ActorServiceClient;
use cairn_proto::v1::admin_service_client::AdminServiceClient;
use cairn_proto::v1::event_store_service_client::EventStoreServiceClient;
use serde_json::Value;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::call_stream::{Appends, Asks, CallStreams};
use crate::routing::Routes;
use crate::subscription::Position;
use crate::wire::json_bytes;
use crate::{
    AppendResult, AskIds, AskResult, Compacted, Error, EventData, EventFilter, ExpectedVersion,
    ReadAll, ReadAllResult, ReadResult, RecordedEvent, StateAt, StateResult, Status, StreamInfo,
    SubscribeTo, Subscription, parse_servers,
};

/// How long a call keeps retrying retryable failures before giving up, unless
/// changed with [`Client::with_timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for a TCP connection to one server before trying the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after every server has failed once; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// Largest reply accepted (a page of events can be big).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// A handle on a Cairn cluster, reached through one or more of its nodes.
///
/// Cheap to clone; clones share the connections. Connections are opened
/// lazily, one per server. Every call goes first to the server that last
/// answered; when a server is unreachable or answers `Unavailable` (no leader
/// yet, shutting down), the call moves on to the next one, cycling through
/// the list with a short backoff until the timeout. Any node can serve any
/// call: a node that does not lead the partition forwards it.
///
/// The client also learns, from any node's status, which node leads each
/// partition, and sends a stream's calls (asks, appends, reads) straight to
/// it, saving the forwarding hop; the table is refreshed every few seconds
/// and whenever a leader fails to answer ([`Client::without_leader_routing`]
/// turns this off).
///
/// Asks to a server share one `AskStream` call on its connection, and
/// appends one `AppendStream` call (see [`crate::call_stream`]), rather than
/// making a gRPC call each.
///
/// Retrying is safe: reads change nothing, appends are idempotent by event
/// id, and every ask carries a command id that the actor applies once.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
}

struct Inner {
    servers: Vec<Server>,
    /// Index of the server that last answered.
    preferred: AtomicUsize,
    /// Partition leaders, when leader routing is on.
    routes: Option<Routes>,
}

struct Server {
    address: String,
    conn: Conn,
}

/// One server's connection: its channel, and the streams its asks and its
/// appends share.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) channel: Channel,
    pub(crate) asks: Arc<CallStreams<Asks>>,
    pub(crate) appends: Arc<CallStreams<Appends>>,
}

impl Conn {
    pub(crate) fn new(channel: Channel) -> Conn {
        Conn {
            asks: Arc::new(CallStreams::new(channel.clone(), MAX_REPLY_BYTES)),
            appends: Arc::new(CallStreams::new(channel.clone(), MAX_REPLY_BYTES)),
            channel,
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("servers", &self.servers().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Client {
    /// A client for the servers in `servers`: a comma-separated list of
    /// `host:port` (an `http://` prefix is accepted). Nothing is dialled yet,
    /// so this only fails on a malformed list ([`Error::InvalidArgument`]).
    pub async fn connect(servers: &str) -> Result<Client, Error> {
        let servers = parse_servers(servers)?
            .into_iter()
            .map(|address| {
                let conn = Conn::new(endpoint(&address)?.connect_lazy());
                Ok(Server { address, conn })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Client {
            inner: Arc::new(Inner {
                servers,
                preferred: AtomicUsize::new(0),
                routes: Some(Routes::default()),
            }),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same servers without leader routing: every call goes to the
    /// server list in turn and non-leaders forward it (for networks where the
    /// nodes' advertised addresses cannot be reached from the client).
    pub fn without_leader_routing(self) -> Client {
        let servers = self
            .inner
            .servers
            .iter()
            .map(|s| Server {
                address: s.address.clone(),
                conn: s.conn.clone(),
            })
            .collect();
        Client {
            inner: Arc::new(Inner {
                servers,
                preferred: AtomicUsize::new(self.inner.preferred.load(Ordering::Relaxed)),
                routes: None,
            }),
            timeout: self.timeout,
        }
    }

    /// The same client, giving up on a call after `timeout` (10s by default)
    /// instead. The timeout covers all retries of one call.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The servers this client tries, as `host:port`.
    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.inner.servers.iter().map(|s| s.address.as_str())
    }

    /// Sends `command` (a JSON object with a `type`) to actor `(actor_type, id)`
    /// and waits until its events are committed and it replied.
    pub async fn ask(
        &self,
        actor_type: &str,
        id: &str,
        command: &Value,
    ) -> Result<AskResult, Error> {
        self.ask_with(actor_type, id, command, AskIds::default())
            .await
    }

    /// [`Client::ask`] with a command id (retrying with the same id never
    /// applies the command twice) and a correlation id for its events. The
    /// call's own retries, after a timeout or a leader change, always reuse
    /// the command id, so they are safe even when `ids` leaves it empty.
    pub async fn ask_with(
        &self,
        actor_type: &str,
        id: &str,
        command: &Value,
        ids: AskIds,
    ) -> Result<AskResult, Error> {
        let command_id = if ids.command_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            ids.command_id
        };
        let request = pb::AskRequest {
            actor_type: actor_type.to_string(),
            actor_id: id.to_string(),
            command: json_bytes(command),
            correlation_id: ids.correlation_id,
            forwarded: false,
            command_id,
            causation_id: String::new(),
        };
        let reply = self
            .call_routed(&format!("{actor_type}-{id}"), |conn| {
                let request = request.clone();
                async move { conn.asks.call(request).await.map(tonic::Response::new) }
            })
            .await?;
        AskResult::try_from(reply)
    }

    /// The state of actor `(actor_type, id)`: the current one, or as of a
    /// stream version or a time.
    pub async fn state(
        &self,
        actor_type: &str,
        id: &str,
        at: StateAt,
    ) -> Result<StateResult, Error> {
        let (at_version, at_timestamp_ms) = match at {
            StateAt::Latest => (None, None),
            StateAt::Version(v) => (Some(v), None),
            StateAt::Timestamp(t) => (None, Some(t)),
        };
        let request = pb::GetStateRequest {
            actor_type: actor_type.to_string(),
            actor_id: id.to_string(),
            forwarded: false,
            at_version,
            at_timestamp_ms,
        };
        let reply = self
            .call_routed(&format!("{actor_type}-{id}"), |conn| {
                let request = request.clone();
                async move { actor(conn.channel).get_state(request).await }
            })
            .await?;
        StateResult::try_from(reply)
    }

    /// Appends `events` to `stream` if it is at the `expected` version, all or
    /// nothing. Events without an id get a UUID v7, kept across retries.
    pub async fn append(
        &self,
        stream: &str,
        events: Vec<EventData>,
        expected: ExpectedVersion,
    ) -> Result<AppendResult, Error> {
        let events = events
            .into_iter()
            .map(|mut event| {
                if event.id.is_none() {
                    event.id = Some(uuid::Uuid::now_v7().to_string());
                }
                pb::NewEvent::from(&event)
            })
            .collect();
        let request = pb::AppendRequest {
            stream: stream.to_string(),
            events,
            expected: Some(expected.into()),
            forwarded: false,
        };
        let reply = self
            .call_routed(stream, |conn| {
                let request = request.clone();
                async move { conn.appends.call(request).await.map(tonic::Response::new) }
            })
            .await?;
        Ok(reply.into())
    }

    /// Up to `limit` events of `stream` from version `from_version` (1 = the
    /// start) on; `limit` 0 means the server's page size. A short page does
    /// not mean the end: compare the last version with `stream_version`.
    pub async fn read(
        &self,
        stream: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<ReadResult, Error> {
        let request = pb::ReadRequest {
            stream: stream.to_string(),
            from_version,
            limit,
            forwarded: false,
            wait_ms: 0,
        };
        let reply = self
            .call_routed(stream, |conn| {
                let request = request.clone();
                async move { event_store(conn.channel).read(request).await }
            })
            .await?;
        Ok(ReadResult {
            stream: stream.to_string(),
            stream_version: reply.stream_version,
            events: reply
                .events
                .into_iter()
                .map(RecordedEvent::try_from)
                .collect::<Result<_, _>>()?,
        })
    }

    /// What is known about `stream`.
    pub async fn info(&self, stream: &str) -> Result<StreamInfo, Error> {
        let request = pb::InfoRequest {
            stream: stream.to_string(),
            forwarded: false,
        };
        let reply = self
            .call_routed(stream, |conn| {
                let request = request.clone();
                async move { event_store(conn.channel).info(request).await }
            })
            .await?;
        Ok(reply.into())
    }

    /// Deletes `stream` if it is at the `expected` version; `hard` tombstones
    /// it for good. Returns the stream's version when it was deleted.
    pub async fn delete(
        &self,
        stream: &str,
        hard: bool,
        expected: ExpectedVersion,
    ) -> Result<u64, Error> {
        let request = pb::DeleteRequest {
            stream: stream.to_string(),
            hard,
            expected: Some(expected.into()),
            forwarded: false,
        };
        let reply = self
            .call_routed(stream, |conn| {
                let request = request.clone();
                async move { event_store(conn.channel).delete(request).await }
            })
            .await?;
        Ok(reply.version)
    }

    /// Sets `stream`'s retention, replacing what was set before (`None` = no
    /// limit): only the newest `max_count` events, and only events at most
    /// `max_age_ms` old, stay readable; the rest are purged. An actor stream
    /// keeps every event above its newest actor snapshot. Returns the
    /// stream's version then.
    pub async fn set_stream_metadata(
        &self,
        stream: &str,
        max_count: Option<u64>,
        max_age_ms: Option<u64>,
    ) -> Result<u64, Error> {
        let request = pb::SetStreamMetadataRequest {
            stream: stream.to_string(),
            max_count,
            max_age_ms,
            forwarded: false,
        };
        let reply = self
            .call_routed(stream, |conn| {
                let request = request.clone();
                async move { event_store(conn.channel).set_stream_metadata(request).await }
            })
            .await?;
        Ok(reply.version)
    }

    /// A page of every stream's events in `(timestamp, partition, position)`
    /// order, after `read.from`. Continue with the returned checkpoint until
    /// `end` is true; a page may hold fewer than `read.limit` events without
    /// being the end (a selective filter looks at many events per page).
    pub async fn read_all(&self, read: &ReadAll) -> Result<ReadAllResult, Error> {
        let request = pb::ReadAllRequest {
            from: Some((&read.from).into()),
            from_timestamp_ms: read.from_timestamp,
            limit: read.limit,
            filter: Some((&read.filter).into()),
        };
        let reply = self
            .call(|conn| {
                let request = request.clone();
                async move { event_store(conn.channel).read_all(request).await }
            })
            .await?;
        ReadAllResult::try_from(reply)
    }

    /// Subscribes to one stream or to all of them: the events already
    /// written that pass `filter`, then new ones as they commit, each exactly
    /// once. Fails at once when no server takes the subscription or the
    /// request is refused; later failures of the serving node are absorbed
    /// by resuming on another server (see [`Subscription`]).
    pub async fn subscribe(
        &self,
        to: SubscribeTo,
        filter: EventFilter,
    ) -> Result<Subscription, Error> {
        let position = Position::new(to, filter);
        let stream = self.open_subscription(&position).await?;
        Ok(Subscription::start(self.clone(), position, stream))
    }

    /// Opens a subscription at `position` on the first server that takes it.
    pub(crate) async fn open_subscription(
        &self,
        position: &Position,
    ) -> Result<tonic::Streaming<pb::SubscribeReply>, Error> {
        let request = position.request();
        self.call(|conn| {
            let request = request.clone();
            async move { event_store(conn.channel).subscribe(request).await }
        })
        .await
    }

    /// Makes the server after the preferred one the first to try next time
    /// (the preferred one just failed mid-call).
    pub(crate) fn prefer_next_server(&self) {
        let n = self.inner.servers.len();
        let current = self.inner.preferred.load(Ordering::Relaxed);
        self.inner
            .preferred
            .store((current + 1) % n, Ordering::Relaxed);
    }

    /// The cluster's status as the first server that answers sees it.
    pub async fn status(&self) -> Result<Status, Error> {
        let reply = self
            .call(|conn| async move { admin(conn.channel).status(pb::StatusRequest {}).await })
            .await?;
        Ok(reply.into())
    }

    /// Flushes and fully compacts the RocksDB of every server in this
    /// client's list, one after another (a compaction is node-local, so it
    /// is never forwarded), and says what each did.
    pub async fn compact(&self) -> Result<Vec<Compacted>, Error> {
        let mut done = Vec::with_capacity(self.inner.servers.len());
        for server in &self.inner.servers {
            let reply = admin(server.conn.channel.clone())
                .compact(pb::CompactRequest {})
                .await?
                .into_inner();
            done.push(Compacted {
                node_id: reply.node_id,
                sst_bytes_before: reply.sst_bytes_before,
                sst_bytes_after: reply.sst_bytes_after,
                sst_bytes_by_family: reply.sst_bytes_by_family.into_iter().collect(),
            });
        }
        Ok(done)
    }

    /// Runs `op`, a call about `stream`, on the leader of the stream's
    /// partition when the routing table knows it, else (or when the leader
    /// fails to answer) as [`Client::call`] does.
    pub(crate) async fn call_routed<T, F, Fut>(&self, stream: &str, op: F) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        if let Some(routes) = &self.inner.routes {
            self.refresh_routes(routes);
            if let Some(leader) = routes.leader_of(stream) {
                match tokio::time::timeout(self.timeout, op(leader)).await {
                    Ok(Ok(response)) => return Ok(response.into_inner()),
                    Ok(Err(status))
                        if is_transport_failure(&status)
                            || status.code() == tonic::Code::Unavailable =>
                    {
                        tracing::debug!(
                            stream,
                            message = status.message(),
                            "leader route failed; using the server list"
                        );
                        routes.invalidate();
                    }
                    Ok(Err(status)) => return Err(Error::from(status)),
                    Err(_elapsed) => {
                        return Err(Error::Unavailable(format!(
                            "no reply from the leader of `{stream}`'s partition within {:?}",
                            self.timeout
                        )));
                    }
                }
            }
        }
        self.call(op).await
    }

    /// Refreshes the routing table in the background when it is missing or old.
    fn refresh_routes(&self, routes: &Routes) {
        if !routes.claim_refresh() {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            let status = client.status().await.ok();
            if let Some(routes) = &client.inner.routes {
                routes.learn(status.as_ref(), |address| {
                    Some(Conn::new(endpoint(address).ok()?.connect_lazy()))
                });
            }
        });
    }

    /// Runs `op` against the servers in turn, from the preferred one, until
    /// one answers with anything but a retryable failure or the timeout passes.
    pub(crate) async fn call<T, F, Fut>(&self, op: F) -> Result<T, Error>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let servers = &self.inner.servers;
        let deadline = Instant::now() + self.timeout;
        let start = self.inner.preferred.load(Ordering::Relaxed);
        let mut backoff = FIRST_BACKOFF;
        let mut unreachable_because = None;
        let mut unavailable_because = None;
        for attempt in 0.. {
            let index = (start + attempt) % servers.len();
            let server = &servers[index];
            let remaining = deadline.saturating_duration_since(Instant::now());
            let outcome = tokio::time::timeout(remaining, op(server.conn.clone())).await;
            match outcome {
                Ok(Ok(response)) => {
                    self.inner.preferred.store(index, Ordering::Relaxed);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if is_transport_failure(&status) => {
                    let cause = root_cause(&status);
                    tracing::debug!(server = %server.address, %cause, "server unreachable, trying the next");
                    unreachable_because = Some(cause);
                }
                Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                    tracing::debug!(server = %server.address, message = status.message(), "server unavailable, trying the next");
                    unavailable_because = Some(Error::from(status).to_string());
                }
                Ok(Err(status)) => return Err(Error::from(status)),
                Err(_elapsed) => {
                    return Err(Error::Unavailable(format!(
                        "no reply from {} within {:?}",
                        server.address, self.timeout
                    )));
                }
            }
            if (attempt + 1) % servers.len() == 0 {
                let pause = backoff.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let tried = self.servers().collect::<Vec<_>>().join(", ");
        Err(match (unavailable_because, unreachable_because) {
            (Some(message), _) => Error::Unavailable(format!(
                "{message} (still unavailable after {:?}; tried {tried})",
                self.timeout
            )),
            (None, cause) => Error::Unreachable(format!(
                "could not reach any Cairn server (tried {tried}): {}; is `cairn serve` running?",
                cause.unwrap_or_else(|| "timed out".to_string())
            )),
        })
    }
}

/// How the client dials a server.
fn endpoint(address: &str) -> Result<Endpoint, Error> {
    Ok(Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| Error::InvalidArgument(format!("invalid server address `{address}`: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true))
}

fn actor(channel: Channel) -> ActorServiceClient<Channel> {
    ActorServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES)
}

fn event_store(channel: Channel) -> EventStoreServiceClient<Channel> {
    EventStoreServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES)
}

pub(crate) fn admin(channel: Channel) -> AdminServiceClient<Channel> {
    AdminServiceClient::new(channel).max_decoding_message_size(MAX_REPLY_BYTES)
}

/// Whether the call failed in the transport (no connection, connection
/// lost) rather than with a status the server sent: tonic keeps the
/// underlying error as the status's source only in the former case.
fn is_transport_failure(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        // A connection that broke mid-call (the server restarted) can come
        // back as a bare `Unknown: transport error`.
        || (status.code() == tonic::Code::Unknown && status.message().contains("transport error"))
        // A call in flight when its server was killed comes back as
        // `Cancelled: operation was canceled`. This client never cancels a
        // call itself (a timeout drops it), so it means the same; retrying
        // is safe (appended events keep their ids, asks their command id).
        || status.code() == tonic::Code::Cancelled
}

/// The innermost cause of a transport failure, e.g. "connection refused".
fn root_cause(status: &tonic::Status) -> String {
    let mut cause: &dyn std::error::Error = status;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let text = cause.to_string();
    let text = match text.find(" (os error") {
        Some(at) => &text[..at],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => status.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_cut_off_by_its_server_dying_is_a_transport_failure() {
        assert!(is_transport_failure(&tonic::Status::cancelled(
            "operation was canceled"
        )));
        assert!(is_transport_failure(&tonic::Status::unknown(
            "transport error"
        )));
        assert!(!is_transport_failure(&tonic::Status::failed_precondition(
            "wrong expected version"
        )));
    }
}
