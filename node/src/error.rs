//! The node crate's error type, and its mapping to gRPC statuses (the only
//! place that mapping lives).

use cairn_cluster::ClusterError;
use cairn_storage::Rejection;
use tonic::{Code, Status};

use crate::actor::ActorError;
use crate::limits::InvalidInput;
use crate::projection::ProjectionError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("unknown actor type `{name}`; known types: {known}")]
    UnknownActorType { name: String, known: String },
    #[error(transparent)]
    Actor(#[from] ActorError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "actor `{actor}` changed underneath its activation ({reason}); it was reloaded, retry the command"
    )]
    Conflict { actor: String, reason: String },
    #[error("stream `{stream}` did not exist at {at}")]
    DidNotExist { stream: String, at: String },
    #[error("unknown projection `{name}`; known projections: {known}")]
    UnknownProjection { name: String, known: String },
    #[error("projection `{name}` on partition {partition} is still catching up; retry shortly")]
    ProjectionBehind { name: String, partition: u32 },
    #[error(transparent)]
    Projection(#[from] crate::projection::ProjectionError),
    #[error(transparent)]
    Upcast(#[from] crate::upcast::UpcastError),
    /// A call forwarded to another node failed there (the status carries
    /// that node's error kind).
    #[error("{}", .0.message())]
    Remote(Status),
}

impl NodeError {
    /// Whether the same call may succeed if sent again shortly: the
    /// partition has no leader here or is changing leaders, or a peer could
    /// not be reached.
    pub fn is_retryable(&self) -> bool {
        match self {
            NodeError::Cluster(
                ClusterError::NotLeader { .. }
                | ClusterError::NoLeader { .. }
                | ClusterError::NotReplica { .. }
                | ClusterError::Transport { .. },
            )
            | NodeError::ProjectionBehind { .. } => true,
            NodeError::Remote(status) => status.code() == Code::Unavailable,
            _ => false,
        }
    }
}

impl From<Rejection> for NodeError {
    fn from(r: Rejection) -> NodeError {
        NodeError::Cluster(ClusterError::Rejected(r))
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        let message = e.to_string();
        let (code, kind) = match &e {
            NodeError::Invalid(_) | NodeError::UnknownActorType { .. } => {
                (Code::InvalidArgument, "invalid-argument")
            }
            NodeError::Actor(ActorError::InvalidCommand { .. }) => {
                (Code::InvalidArgument, "invalid-argument")
            }
            NodeError::Actor(ActorError::Rejected(_)) => {
                (Code::FailedPrecondition, "command-rejected")
            }
            NodeError::Actor(ActorError::Corrupt { .. }) => (Code::Internal, "internal"),
            NodeError::Conflict { .. } => (Code::Aborted, "conflict"),
            NodeError::DidNotExist { .. } => (Code::NotFound, "not-found"),
            NodeError::Upcast(_) => (Code::FailedPrecondition, "upcast"),
            NodeError::UnknownProjection { .. } => (Code::InvalidArgument, "invalid-argument"),
            NodeError::ProjectionBehind { .. } => (Code::Unavailable, "no-leader"),
            NodeError::Projection(ProjectionError::BadQuery(_)) => {
                (Code::InvalidArgument, "invalid-argument")
            }
            NodeError::Projection(ProjectionError::NotFound(_)) => (Code::NotFound, "not-found"),
            NodeError::Projection(ProjectionError::Storage(_)) => (Code::Internal, "internal"),
            NodeError::Projection(ProjectionError::Upcast(_)) => {
                (Code::FailedPrecondition, "upcast")
            }
            NodeError::Cluster(c) => return cluster_status(c, message),
            NodeError::Remote(status) => return status.clone(),
        };
        with_kind(Status::new(code, message), kind)
    }
}

fn cluster_status(e: &ClusterError, message: String) -> Status {
    match e {
        ClusterError::Rejected(Rejection::WrongExpectedVersion {
            expected, actual, ..
        }) => {
            let mut status = with_kind(
                Status::failed_precondition(message),
                "wrong-expected-version",
            );
            let md = status.metadata_mut();
            if let Ok(v) = expected.to_string().parse() {
                md.insert("cairn-expected", v);
            }
            if let Ok(v) = actual.to_string().parse() {
                md.insert("cairn-actual", v);
            }
            status
        }
        ClusterError::Rejected(
            Rejection::StreamDeleted { .. } | Rejection::StreamTombstoned { .. },
        ) => with_kind(Status::failed_precondition(message), "stream-deleted"),
        ClusterError::Rejected(Rejection::IdempotencyConflict { .. }) => {
            with_kind(Status::failed_precondition(message), "idempotency-conflict")
        }
        ClusterError::Storage(s) if matches!(**s, cairn_storage::Error::StreamDeleted { .. }) => {
            with_kind(Status::failed_precondition(message), "stream-deleted")
        }
        ClusterError::NotLeader { leader, .. } => {
            let mut status = with_kind(Status::unavailable(message), "no-leader");
            if let Some(v) = leader.as_ref().and_then(|(_, addr)| addr.parse().ok()) {
                status.metadata_mut().insert("cairn-leader", v);
            }
            status
        }
        ClusterError::NoLeader { .. }
        | ClusterError::NotReplica { .. }
        | ClusterError::ShuttingDown
        | ClusterError::Transport { .. } => with_kind(Status::unavailable(message), "no-leader"),
        ClusterError::Identity(_) => with_kind(Status::failed_precondition(message), "identity"),
        ClusterError::Refused(_) => with_kind(Status::failed_precondition(message), "refused"),
        ClusterError::Storage(_) | ClusterError::Raft(_) => {
            with_kind(Status::internal(message), "internal")
        }
    }
}

fn with_kind(mut status: Status, kind: &'static str) -> Status {
    status.metadata_mut().insert(
        "cairn-error",
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}
