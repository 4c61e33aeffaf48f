//! The daemon's one retry layer. The SDK's own retries are off (see `aws`), so
//! throttling and 5xx from the stream and from our tables are retried here,
//! and only here: exponential backoff with jitter, for as long as the error is
//! retryable and the caller has not cancelled.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio_util::sync::CancellationToken;

/// An error that says whether trying again can help.
pub trait Transient: Display {
    fn is_transient(&self) -> bool;

    /// "Not yet", not a failure (a table still CREATING): waited out with
    /// the same backoff, but neither counted as a retry nor logged as a
    /// warning; its Display says what is awaited.
    fn is_wait(&self) -> bool {
        false
    }
}

/// Retries logged one by one before the log thins out.
const REPORT_FIRST_FAILURES: u32 = 3;
/// After those, a line once the wait reaches this, then each time it doubles.
const REPORT_FIRST_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Fixes the jitter for reproducible tests; `None` (production) draws it
    /// at random so that retries of many shards spread out.
    pub jitter_seed: Option<u64>,
}

impl RetryPolicy {
    pub fn new(min_delay: Duration, max_delay: Duration) -> Self {
        RetryPolicy {
            min_delay,
            max_delay,
            jitter_seed: None,
        }
    }
}

/// Why [`retry`] gave up.
#[derive(Debug, PartialEq, Eq)]
pub enum Retried<E> {
    /// The error is not one that retrying can fix.
    Failed(E),
    /// The caller's token was cancelled while waiting or calling.
    Cancelled,
}

impl<E: Display> Display for Retried<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retried::Failed(e) => e.fmt(f),
            Retried::Cancelled => f.write_str("stopped before it succeeded"),
        }
    }
}

/// Runs `op` until it succeeds, fails with a non-transient error, or `cancel`
/// fires. Transient errors are logged at warn with `what` and the next delay.
pub async fn retry<T, E, F, Fut>(
    policy: RetryPolicy,
    cancel: &CancellationToken,
    what: &'static str,
    op: F,
) -> Result<T, Retried<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Transient,
{
    let mut backoff = ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .without_max_times();
    if let Some(seed) = policy.jitter_seed {
        backoff = backoff.with_jitter_seed(seed);
    }
    // A storm of retries must not drown the log, and an operator must still
    // see what the process is waiting for and for how long: the first few
    // retries are logged, then one line each time the wait has doubled.
    let started = tokio::time::Instant::now();
    let mut failures: u32 = 0;
    let mut next_report = REPORT_FIRST_AFTER;
    let attempts = op
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &E| e.is_transient())
        .notify(move |e: &E, delay: Duration| {
            failures += 1;
            let waited = started.elapsed();
            let retry_in_ms = delay.as_millis() as u64;
            if e.is_wait() {
                if waited >= next_report {
                    next_report = waited * 2;
                    tracing::info!(waited_secs = waited.as_secs(), "{e}: still waiting");
                } else {
                    tracing::debug!(retry_in_ms, "{e}: not yet");
                }
                return;
            }
            crate::observe::Event::emit(crate::observe::Retrying { operation: what });
            if failures <= REPORT_FIRST_FAILURES {
                tracing::warn!(operation = what, error = %e, failures, retry_in_ms, "retrying");
            } else if waited >= next_report {
                next_report = waited * 2;
                tracing::warn!(
                    operation = what, error = %e, failures, waited_secs = waited.as_secs(),
                    retry_in_ms, "still failing; waiting for it to succeed (SIGTERM stops)"
                );
            } else {
                tracing::debug!(operation = what, error = %e, failures, retry_in_ms, "retrying");
            }
        });
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Retried::Cancelled),
        result = attempts => result.map_err(Retried::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::StreamError;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy() -> RetryPolicy {
        RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Retries a call that fails `failures` times with `error`, then answers
    /// `value`: the outcome, and how many calls were made.
    async fn flaky<T: Clone>(
        failures: u32,
        error: StreamError,
        value: T,
    ) -> (Result<T, Retried<StreamError>>, u32) {
        let calls = AtomicU32::new(0);
        let cancel = CancellationToken::new();
        let result = retry(policy(), &cancel, "test", || async {
            if calls.fetch_add(1, Ordering::SeqCst) < failures {
                Err(error.clone())
            } else {
                Ok(value.clone())
            }
        })
        .await;
        (result, calls.load(Ordering::SeqCst))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let (result, calls) = flaky(5, StreamError::Throttled("slow down".into()), 7).await;
        assert_eq!(result, Ok(7));
        assert_eq!(calls, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let (result, calls) = flaky(u32::MAX, StreamError::Trimmed("gone".into()), ()).await;
        assert_eq!(
            result,
            Err(Retried::Failed(StreamError::Trimmed("gone".into())))
        );
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_grows_and_is_capped() {
        let start = tokio::time::Instant::now();
        let _ = flaky(20, StreamError::Transient("500".into()), ()).await;
        let waited = start.elapsed();
        // 20 waits: never less than the minimum each, never more than twice
        // the cap each (jitter adds up to one delay).
        assert!(waited >= Duration::from_millis(100) * 20, "{waited:?}");
        assert!(waited <= Duration::from_secs(10) * 20, "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_retrying() {
        let cancel = CancellationToken::new();
        let stopper = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stopper.cancel();
        });
        let result: Result<(), _> = retry(policy(), &cancel, "test", || async {
            Err(StreamError::Throttled("always".into()))
        })
        .await;
        assert_eq!(result, Err(Retried::Cancelled));
    }
}
