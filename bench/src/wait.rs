//! [`wait_for`]: polls a condition until it holds or a deadline passes. Every
//! wait of the harness goes through it: no fixed sleep stands in for a
//! condition.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Calls `probe` every `poll` until it returns `Ok(Ok(value))`, and returns
/// the value. `Ok(Err(why))` means "not yet" (the last `why` is quoted if the
/// deadline passes); `Err` fails at once (e.g. a server exited).
pub async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let why = match probe().await? {
            Ok(value) => return Ok(value),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            anyhow::bail!("{what}: not the case after {timeout:?} ({why})");
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_the_condition_holds() {
        let mut calls = 0;
        let value = wait_for("third call", Duration::from_secs(5), Duration::ZERO, || {
            calls += 1;
            let n = calls;
            async move {
                Ok(if n == 3 {
                    Ok(n)
                } else {
                    Err(format!("call {n}"))
                })
            }
        })
        .await
        .expect("holds on the third call");
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn quotes_the_last_reason_at_the_deadline() {
        let error = wait_for::<(), _, _>(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || async { Ok(Err("still no".to_string())) },
        )
        .await
        .expect_err("never holds");
        assert!(error.to_string().contains("still no"), "{error}");
    }
}
