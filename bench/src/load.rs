//! The load generator: [`measure`] runs N workers, each doing operations of a
//! [`Target`] back to back, and returns a [`Measurement`];
//! [`BackgroundLoad`] does the same with no window, until stopped, as the
//! load under which another workload measures something else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Target;

/// Latencies above this (in µs) are recorded as this.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Pause of a worker after a failed operation, so that a system that fails
/// fast does not turn the worker into a busy loop.
const PAUSE_AFTER_ERROR: Duration = Duration::from_millis(10);

/// How hard and how long to drive a target.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    /// Workers, i.e. operations in flight at once.
    pub concurrency: usize,
    /// Time run before measuring starts (connections, activations, caches).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
}

/// What one run of the load generator observed within its measured window:
/// operations that completed in it, and their latencies.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Operations completed successfully in the window.
    pub ops: u64,
    /// Items (events, puts, asks) those operations carried.
    pub items: u64,
    /// Operations that failed in the window.
    pub errors: u64,
    /// Retries inside operations in the window (see [`Target::retries`]),
    /// e.g. version conflicts on a hot stream.
    pub retries: u64,
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Items per second (equal to `ops_per_sec` unless an op carries several).
    pub items_per_sec: f64,
    /// Latency of one operation, from the call to its acknowledgement (µs).
    pub p50_us: u64,
    /// 99th percentile latency (µs).
    pub p99_us: u64,
    /// 99.9th percentile latency (µs).
    pub p999_us: u64,
    /// Largest latency seen (µs).
    pub max_us: u64,
    /// Mean latency (µs).
    pub mean_us: f64,
    /// The first error seen, if any, to tell what went wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// What one worker saw.
struct WorkerTally {
    latencies: Histogram<u64>,
    ops: u64,
    errors: u64,
    first_error: Option<String>,
}

/// Drives `target` with `spec.concurrency` workers: each runs
/// [`Target::prepare`] once, then [`Target::op`] back to back for
/// `spec.warmup + spec.duration`. Operations completing within the measured
/// window (after the warm-up) are counted and their latencies recorded.
///
/// Fails only if a worker's `prepare` fails or a worker panics; failed
/// operations are counted in [`Measurement::errors`].
pub async fn measure<T: Target>(target: Arc<T>, spec: LoadSpec) -> anyhow::Result<Measurement> {
    prepare(&target, spec.concurrency).await?;
    let start = Instant::now();
    let window_start = start + spec.warmup;
    let window_end = window_start + spec.duration;
    let mut workers = JoinSet::new();
    for worker in 0..spec.concurrency {
        let target = Arc::clone(&target);
        workers.spawn(async move { drive(&*target, worker, window_start, window_end).await });
    }
    let retries_in_window = {
        let target = Arc::clone(&target);
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start).await;
            let before = target.retries();
            tokio::time::sleep_until(window_end).await;
            target.retries() - before
        })
    };
    let mut latencies = new_histogram();
    let (mut ops, mut errors, mut first_error) = (0, 0, None);
    while let Some(tally) = workers.join_next().await {
        let tally = tally?;
        latencies.add(&tally.latencies)?;
        ops += tally.ops;
        errors += tally.errors;
        first_error = first_error.or(tally.first_error);
    }

    let seconds = spec.duration.as_secs_f64();
    let items = ops * target.items_per_op();
    Ok(Measurement {
        ops,
        items,
        errors,
        retries: retries_in_window.await?,
        seconds,
        ops_per_sec: ops as f64 / seconds,
        items_per_sec: items as f64 / seconds,
        p50_us: latencies.value_at_quantile(0.50),
        p99_us: latencies.value_at_quantile(0.99),
        p999_us: latencies.value_at_quantile(0.999),
        max_us: latencies.max(),
        mean_us: latencies.mean(),
        first_error,
    })
}

/// Runs [`Target::prepare`] for workers `0..concurrency`, all at once.
async fn prepare<T: Target>(target: &Arc<T>, concurrency: usize) -> anyhow::Result<()> {
    let mut prepares = JoinSet::new();
    for worker in 0..concurrency {
        let target = Arc::clone(target);
        prepares.spawn(async move { target.prepare(worker).await });
    }
    while let Some(prepared) = prepares.join_next().await {
        prepared??;
    }
    Ok(())
}

/// Workers doing operations of a target back to back until
/// [`BackgroundLoad::stop`], counting what succeeded and failed; no
/// latencies. The load under which failover and projection lag are measured.
pub struct BackgroundLoad {
    stop: Arc<AtomicBool>,
    items: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    first_error: Arc<std::sync::OnceLock<String>>,
    workers: JoinSet<()>,
}

impl BackgroundLoad {
    /// Prepares `concurrency` workers of `target` and starts them.
    pub async fn start<T: Target>(
        target: Arc<T>,
        concurrency: usize,
    ) -> anyhow::Result<BackgroundLoad> {
        prepare(&target, concurrency).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let items = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let first_error = Arc::new(std::sync::OnceLock::new());
        let mut workers = JoinSet::new();
        for worker in 0..concurrency {
            let (target, stop) = (Arc::clone(&target), Arc::clone(&stop));
            let (items, errors) = (Arc::clone(&items), Arc::clone(&errors));
            let first_error = Arc::clone(&first_error);
            workers.spawn(async move {
                for seq in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match target.op(worker, seq).await {
                        Ok(()) => {
                            items.fetch_add(target.items_per_op(), Ordering::Relaxed);
                        }
                        Err(e) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            let _ = first_error.set(format!("{e:#}"));
                            tokio::time::sleep(PAUSE_AFTER_ERROR).await;
                        }
                    }
                }
            });
        }
        Ok(BackgroundLoad {
            stop,
            items,
            errors,
            first_error,
            workers,
        })
    }

    /// Items acknowledged so far.
    pub fn items(&self) -> u64 {
        self.items.load(Ordering::Relaxed)
    }

    /// Operations failed so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// The first operation that failed, if any did.
    pub fn first_error(&self) -> Option<String> {
        self.first_error.get().cloned()
    }

    /// Lets every worker finish its operation in flight, then returns the
    /// items acknowledged and operations failed in all.
    pub async fn stop(mut self) -> anyhow::Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(joined) = self.workers.join_next().await {
            joined?;
        }
        Ok((self.items(), self.errors()))
    }
}

/// One worker: operations back to back until `window_end`.
async fn drive<T: Target>(
    target: &T,
    worker: usize,
    window_start: Instant,
    window_end: Instant,
) -> WorkerTally {
    let mut tally = WorkerTally {
        latencies: new_histogram(),
        ops: 0,
        errors: 0,
        first_error: None,
    };
    for seq in 0.. {
        let began = Instant::now();
        if began >= window_end {
            break;
        }
        let outcome = target.op(worker, seq).await;
        let ended = Instant::now();
        let in_window = ended >= window_start && ended <= window_end;
        match outcome {
            Ok(()) if in_window => {
                let micros = u64::try_from((ended - began).as_micros()).unwrap_or(u64::MAX);
                tally.latencies.saturating_record(micros.max(1));
                tally.ops += 1;
            }
            Ok(()) => {}
            Err(error) => {
                if in_window {
                    tally.errors += 1;
                }
                tally
                    .first_error
                    .get_or_insert_with(|| format!("{error:#}"));
                tokio::time::sleep(PAUSE_AFTER_ERROR).await;
            }
        }
    }
    tally
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Sleeps 1 ms per op; every 10th op of worker 0 fails.
    struct Sleepy {
        calls: AtomicU64,
    }

    impl Target for Sleepy {
        fn items_per_op(&self) -> u64 {
            3
        }

        async fn op(&self, worker: usize, seq: u64) -> anyhow::Result<()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1)).await;
            if worker == 0 && seq % 10 == 9 {
                anyhow::bail!("op {seq} failed");
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn counts_ops_items_errors_and_latency_in_the_window() {
        let target = Arc::new(Sleepy {
            calls: AtomicU64::new(0),
        });
        let spec = LoadSpec {
            concurrency: 4,
            warmup: Duration::from_millis(100),
            duration: Duration::from_millis(400),
        };
        let m = measure(Arc::clone(&target), spec)
            .await
            .expect("no worker fails");
        // 4 workers at ~1 ms per op for 0.4 s: a few hundred ops at least,
        // and fewer than all calls (the warm-up's are not counted).
        assert!(m.ops > 200, "{m:?}");
        assert!(m.ops < target.calls.load(Ordering::Relaxed));
        assert_eq!(m.items, 3 * m.ops);
        assert!(m.errors > 0, "{m:?}");
        assert_eq!(
            m.first_error.as_deref().map(|e| e.ends_with("failed")),
            Some(true)
        );
        assert!(m.p50_us >= 1_000 && m.p50_us <= m.p99_us, "{m:?}");
        assert!((m.items_per_sec - m.items as f64 / 0.4).abs() < 1e-6);
    }
}
