//! Waiting out an outage: an operation retried with exponential backoff
//! while its errors say it may succeed later, for a bounded time. One
//! mechanism for every such wait, so each names only its bounds; the
//! backoff is backon's, as everywhere in the bridge.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, Retryable};

/// How a retry waits: the first delay doubles up to `max`, and no retry
/// starts once `patience` would be exceeded.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub patience: Duration,
}

impl Backoff {
    fn builder(&self) -> backon::ExponentialBuilder {
        backon::ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.max)
            .without_max_times()
    }

    /// The delays, for a loop that waits by itself: `first` doubling up to
    /// `max`, without end (the caller keeps to the patience).
    pub fn delays(&self) -> backon::ExponentialBackoff {
        self.builder().build()
    }
}

/// Runs `op` until it succeeds, fails with an error `retryable` refuses, or
/// the patience runs out (the last error is returned). Each retry is
/// logged with `what`.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    backoff: Backoff,
    retryable: impl Fn(&E) -> bool,
    op: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    op.retry(backoff.builder())
        .sleep(tokio::time::sleep)
        .when(|error| retryable(error))
        .adjust(|_, delay| delay.filter(|d| started.elapsed() + *d < backoff.patience))
        .notify(|error, delay| tracing::warn!(what, %error, retry_in = ?delay, "failed; retrying"))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const QUICK: Backoff = Backoff {
        first: Duration::from_millis(1),
        max: Duration::from_millis(4),
        patience: Duration::from_secs(5),
    };

    #[tokio::test]
    async fn retries_until_success_and_stops_at_a_final_error() {
        let calls = AtomicU32::new(0);
        let result: Result<u32, String> = retry(
            "op",
            QUICK,
            |_| true,
            || async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 {
                    Err(format!("down {n}"))
                } else {
                    Ok(n)
                }
            },
        )
        .await;
        assert_eq!(result, Ok(3));

        let calls = AtomicU32::new(0);
        let result: Result<(), String> = retry(
            "op",
            QUICK,
            |e: &String| e != "final",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("final".to_owned())
            },
        )
        .await;
        assert_eq!(result, Err("final".to_owned()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn gives_up_when_patience_runs_out() {
        let short = Backoff {
            patience: Duration::from_millis(20),
            ..QUICK
        };
        let started = std::time::Instant::now();
        let result: Result<(), &str> = retry("op", short, |_| true, || async { Err("down") }).await;
        assert_eq!(result, Err("down"));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
