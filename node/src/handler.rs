//! Event handlers: code that reacts to committed events by sending commands
//! to actors (process managers, sagas, "when a user registers, open an
//! account").
//!
//! Each handler runs, for every partition, on that partition's leader only:
//! it reads the partition log from its checkpoint, asks the handler which
//! commands an event calls for, sends them through the [`CommandBus`], and
//! then records the checkpoint through the partition's Raft group (after a
//! page that sent commands, else every few thousand events), so a new
//! leader resumes where the old one stopped. Delivery is at least once; the
//! commands of one event get fixed ids (derived from the handler's name, the
//! event's id and the command's index), so a
//! command sent again after a failover is recognised by its actor as a
//! duplicate and applied once. Each command's events carry the event's id as
//! causation id and its correlation id.

use std::sync::Arc;
use std::time::Duration;

use cairn_cluster::{ClusterError, ClusterNode, Partition};
use cairn_storage::{Command, GroupId, RecordedEvent};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use crate::bus::{ActorCommand, CommandBus};
use crate::error::NodeError;
use crate::ids::derived_v7;
use crate::upcast::Upcasters;

/// Reacts to events by sending commands.
pub trait EventHandler: Send + Sync + 'static {
    /// A name unique among the node's handlers; it keys the checkpoint.
    fn name(&self) -> &'static str;

    /// Whether the handler wants `event` (filter by type or stream prefix).
    fn accepts(&self, event: &RecordedEvent) -> bool;

    /// Whether the handler may want events of `stream`. The events of
    /// streams it refuses are passed over by the partition log's entry
    /// alone, never read nor decoded (see `Projection::accepts_stream`).
    /// All, by default.
    fn accepts_stream(&self, _stream: &str) -> bool {
        true
    }

    /// The commands `event` calls for, in order. Must be deterministic: after
    /// a leader change the same event may be handled again, and its commands
    /// must come out the same so their ids match.
    fn handle(&self, event: &RecordedEvent) -> Result<Vec<ActorCommand>, HandlerError>;
}

/// Why a handler could not react to an event; the event is skipped, with a
/// warning in the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HandlerError(pub String);

/// Events read per page.
const PAGE: usize = 256;
/// The checkpoint is recorded after a page that sent commands, and at least
/// every this many log positions.
const RECORD_EVERY: u64 = 4096;
/// Pause after a failure before trying again.
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// The key of a handler's checkpoint in its partition's metadata.
fn checkpoint_key(name: &str) -> String {
    format!("handler/{name}/checkpoint")
}

/// Runs every handler on the partitions this node leads.
pub(crate) struct HandlerRunner {
    stop: CancellationToken,
}

impl HandlerRunner {
    pub(crate) fn start(
        node: Arc<ClusterNode>,
        handlers: Vec<Arc<dyn EventHandler>>,
        bus: CommandBus,
        upcasters: Arc<Upcasters>,
    ) -> HandlerRunner {
        let stop = CancellationToken::new();
        if !handlers.is_empty() {
            let me = node.node_id();
            let on_stop = stop.clone();
            crate::local_partitions::follow(&node, stop.clone(), move |partition| {
                for handler in &handlers {
                    let run = Run {
                        me,
                        handler: handler.clone(),
                        partition: partition.clone(),
                        bus: bus.clone(),
                        upcasters: upcasters.clone(),
                        stop: on_stop.clone(),
                    };
                    let span = tracing::debug_span!(
                        "handler",
                        name = handler.name(),
                        partition = partition.group()
                    );
                    crate::local_partitions::spawn_while_local(
                        &partition,
                        run.run().instrument(span),
                    );
                }
            });
        }
        HandlerRunner { stop }
    }

    pub(crate) fn shutdown(&self) {
        self.stop.cancel();
    }
}

/// One handler on one partition.
struct Run {
    me: u64,
    handler: Arc<dyn EventHandler>,
    partition: Partition,
    bus: CommandBus,
    upcasters: Arc<Upcasters>,
    stop: CancellationToken,
}

impl Run {
    async fn run(self) {
        let mut metrics = self.partition.leadership();
        loop {
            let leading = metrics.borrow_and_update().current_leader == Some(self.me);
            if leading {
                match self.lead().await {
                    Ok(()) => {}
                    Err(e) if e.is_retryable() => debug!("handler paused: {e}"),
                    Err(e) => warn!("handler failed, retrying: {e}"),
                }
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_AFTER) => continue,
                }
            }
            tokio::select! {
                _ = self.stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Handles events while this node leads the partition; returns when it
    /// stops leading (as an error) or on shutdown.
    async fn lead(&self) -> Result<(), NodeError> {
        // Everything the previous leader recorded is applied here once
        // leadership is confirmed.
        self.partition.ensure_leader().await?;
        let key = checkpoint_key(self.handler.name());
        let mut checkpoint = self
            .partition
            .read_local(move |reader, group| {
                Ok(reader
                    .meta_get(group, &key)?
                    .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
                    .map_or(0, u64::from_be_bytes))
            })
            .await?;
        let mut recorded = checkpoint;
        info!(checkpoint, "handling events");
        let mut applied = self.partition.applied();
        let mut leadership = self.partition.leadership();
        loop {
            let from = checkpoint + 1;
            let handler = self.handler.clone();
            let page = self
                .partition
                .read_local(move |reader, group: GroupId| {
                    let wanted = |stream: &str| handler.accepts_stream(stream);
                    reader.read_partition_log_where(group, from, PAGE, wanted)
                })
                .await?;
            let Some(last) = page.last_position else {
                tokio::select! {
                    _ = self.stop.cancelled() => return Ok(()),
                    changed = applied.changed() => if changed.is_err() { return Ok(()) },
                    changed = leadership.changed() => if changed.is_err() { return Ok(()) },
                }
                if leadership.borrow_and_update().current_leader != Some(self.me) {
                    return Err(ClusterError::NotLeader {
                        group: self.partition.group(),
                        leader: None,
                    }
                    .into());
                }
                continue;
            };
            let mut sent = false;
            for event in page.events {
                if self.stop.is_cancelled() {
                    return Ok(());
                }
                sent |= self.react(event).await?;
            }
            // Record the checkpoint through Raft once commands were sent;
            // a run of events the handler ignores only every RECORD_EVERY
            // events (a new leader re-reads at most that many).
            if sent || last - recorded >= RECORD_EVERY {
                self.partition
                    .write(Command::MetaPut {
                        key: checkpoint_key(self.handler.name()),
                        value: last.to_be_bytes().to_vec().into(),
                    })
                    .await?;
                recorded = last;
            }
            checkpoint = last;
        }
    }

    /// Sends the commands one event calls for; says whether there were any.
    /// Fails only with an error worth retrying the event for (no leader for
    /// the target actor); a command its actor refuses or cannot take is
    /// logged and skipped.
    async fn react(&self, mut event: RecordedEvent) -> Result<bool, NodeError> {
        let name = self.handler.name();
        if let Err(e) = self.upcasters.upcast(&mut event) {
            warn!(event = %event.id, "event skipped: {e}");
            return Ok(false);
        }
        if !self.handler.accepts(&event) {
            return Ok(false);
        }
        let commands = match self.handler.handle(&event) {
            Ok(commands) => commands,
            Err(e) => {
                warn!(event = %event.id, "handler failed on the event, skipped: {e}");
                return Ok(false);
            }
        };
        let any = !commands.is_empty();
        for (n, command) in commands.into_iter().enumerate() {
            let millis = u64::try_from(event.timestamp_ms).unwrap_or(0);
            let id = derived_v7(millis, &format!("{name}/{}/{n}", event.id));
            let command = command.with_command_id(id.to_string()).caused_by(&event);
            let target = format!("{}/{}", command.actor_type, command.actor_id);
            match self.bus.send(command).await {
                Ok(outcome) => {
                    debug!(event = %event.id, %target, duplicate = outcome.duplicate, "command sent")
                }
                Err(e) if e.is_retryable() => return Err(e),
                Err(e) => warn!(event = %event.id, %target, "command not applied: {e}"),
            }
        }
        Ok(any)
    }
}
