//! Waiting on conditions.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `within` naming
/// `what` and the last failure. Polling is how the tests wait: on a
/// condition, never on a fixed sleep.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    let mut last = String::from("never checked");
    while Instant::now() < deadline {
        match check().await {
            Ok(value) => return value,
            Err(why) => last = why,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {within:?} waiting for {what}: {last}");
}
