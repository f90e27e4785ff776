//! The one retry policy of the core. Throttling and transient failures are retried in ONE
//! place, the backend decorator ([`crate::backend::retry`]), with one budget
//! ([`MAX_ATTEMPTS`] attempts per backend call, [`backoff`] between them); the AWS SDK's own
//! retries are set to a single attempt so they do not multiply it (see
//! [`crate::backend::aws::sdk_config`]). Operations above the backends retry only what a
//! decorator cannot: a compare-and-set that lost to a concurrent writer, a batch's unprocessed
//! items, or a write whose outcome is unknown (a timeout) that the operation can check.
//!
//! Worst case of one backend call: `MAX_ATTEMPTS` attempts and `MAX_ATTEMPTS - 1` pauses of at
//! most [`MAX_PAUSE_MS`].

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::{Error, Result};

/// Attempts of one backend call (the first included).
pub const MAX_ATTEMPTS: u32 = 6;
/// Longest pause between two attempts.
pub const MAX_PAUSE_MS: u64 = 200;

/// Sleeps before attempt `attempt + 1`: exponential backoff with full jitter, capped at
/// [`MAX_PAUSE_MS`].
pub async fn backoff(attempt: u32) {
    let cap = 5u64.saturating_mul(1 << attempt.min(6)).min(MAX_PAUSE_MS);
    let ms = rand::thread_rng().gen_range(1..=cap);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs `call` until it succeeds or fails with an error `retry` does not accept, at most
/// [`MAX_ATTEMPTS`] times, with [`backoff`] between attempts.
pub async fn retrying<T, F, Fut>(retry: fn(&Error) -> bool, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match call().await {
            Err(e) if attempt < MAX_ATTEMPTS && retry(&e) => {
                tracing::debug!(attempt, error = %e, "transient backend error; retrying");
                backoff(attempt).await
            }
            other => return other,
        }
    }
}

/// A call that was refused without being done (throttled): repeating it is always safe, even
/// for a conditional transaction.
pub fn refused(e: &Error) -> bool {
    matches!(e, Error::Throttled(_))
}

/// Any transient failure (throttled, or unavailable: refused, failed or timed out). Only for
/// calls that are safe to repeat whatever happened: reads, and writes that are idempotent
/// (a put of the same bytes, a delete, a copy).
pub fn transient(e: &Error) -> bool {
    e.is_transient()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn gives_up_after_the_budget_and_passes_other_errors_through() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = retrying(transient, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Throttled("busy".into()))
        })
        .await;
        assert!(matches!(r, Err(Error::Throttled(_))));
        assert_eq!(calls.load(Ordering::SeqCst), MAX_ATTEMPTS);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = retrying(refused, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Unavailable("timeout".into()))
        })
        .await;
        assert!(matches!(r, Err(Error::Unavailable(_))));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "an unknown outcome is not a refusal"
        );

        calls.store(0, Ordering::SeqCst);
        let r = retrying(transient, || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                Err(Error::Unavailable("refused".into()))
            } else {
                Ok(n)
            }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
    }
}
