//! [`append_batches`]: writing a known number of events fast, as the set-up
//! of the activation, failover and storage workloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, EventData, ExpectedVersion};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Appends issued at once by [`append_batches`].
pub const WRITERS: usize = 4;

/// What the `index`-th append of [`append_batches`] writes: its stream and
/// its events.
pub trait Batches: Send + Sync + 'static {
    /// The `index`-th append: `(stream, events)`.
    fn batch(&self, index: u64) -> (String, Vec<EventData>);
}

impl<F> Batches for F
where
    F: Fn(u64) -> (String, Vec<EventData>) + Send + Sync + 'static,
{
    fn batch(&self, index: u64) -> (String, Vec<EventData>) {
        self(index)
    }
}

/// Makes `appends` appends (expected version `any`) of `batches`,
/// [`WRITERS`] at a time, through `client`; returns how long they took.
/// Appends to one stream may land in any order.
pub async fn append_batches(
    client: &Client,
    appends: u64,
    batches: impl Batches,
) -> anyhow::Result<Duration> {
    let batches = Arc::new(batches);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for _ in 0..WRITERS {
        let (client, batches, next) = (client.clone(), Arc::clone(&batches), Arc::clone(&next));
        writers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= appends {
                    return anyhow::Ok(());
                }
                let (stream, events) = batches.batch(index);
                client
                    .append(&stream, events, ExpectedVersion::Any)
                    .await
                    .with_context(|| format!("appending batch {index} to {stream}"))?;
            }
        });
    }
    while let Some(written) = writers.join_next().await {
        written??;
    }
    Ok(started.elapsed())
}
