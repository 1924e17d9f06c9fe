//! [`append_events`]: writing a known number of events fast, as the set-up
//! of the activation, failover and storage workloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use cairn_client::{Client, EventData, ExpectedVersion};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Appends in flight at once in [`append_events`].
pub const WRITERS: usize = 4;
/// Timeout of one append, its retries included (appends are idempotent):
/// a node busy with a long stream may take its time.
const APPEND_TIMEOUT: Duration = Duration::from_secs(120);

/// Appends `total` events made by `event`, `per_append` in each append
/// (expected version `any`), the `i`-th append to stream `stream(i)`,
/// [`WRITERS`] appends at a time, through `client` (with a long timeout);
/// returns how long they took. Appends to one stream may land in any order.
pub async fn append_events(
    client: &Client,
    total: u64,
    per_append: u64,
    stream: impl Fn(u64) -> String + Send + Sync + 'static,
    event: impl Fn() -> EventData + Send + Sync + 'static,
) -> anyhow::Result<Duration> {
    let appends = total.div_ceil(per_append);
    let make = Arc::new(move |index: u64| {
        let count = per_append.min(total - index * per_append);
        (
            stream(index),
            (0..count).map(|_| event()).collect::<Vec<_>>(),
        )
    });
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut writers = JoinSet::new();
    for _ in 0..WRITERS {
        let client = client.clone().with_timeout(APPEND_TIMEOUT);
        let (make, next) = (Arc::clone(&make), Arc::clone(&next));
        writers.spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= appends {
                    return anyhow::Ok(());
                }
                let (stream, events) = make(index);
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
