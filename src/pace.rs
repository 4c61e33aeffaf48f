//! Request pacing with `governor`, on tokio's clock so that tests on a paused
//! clock see the same pacing as production.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// governor's default clock ignores tokio's paused time; this one reads it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Spaces calls evenly at `per_second`, with no burst: a burst of N followed
/// by steady calls would exceed the service's per-second limit in some
/// one-second window.
#[derive(Debug)]
pub struct Pacer {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>,
    clock: TokioClock,
}

impl Pacer {
    pub fn per_second(per_second: u32) -> Self {
        let per_second = per_second.max(1);
        let period = Duration::from_secs(1) / per_second;
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::MIN);
        let clock = TokioClock::new();
        Pacer {
            limiter: RateLimiter::direct_with_clock(quota, clock),
            clock,
        }
    }

    /// Waits until a call may be made, and takes that slot.
    pub async fn ready(&self) {
        while let Err(not_until) = self.limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
        }
    }
}

/// Spends at most `per_second` units a second on average, over every task
/// that shares it: a call waits until what was spent before it is due, and
/// says what it cost once it is answered (a Scan's read units are known only
/// from its answer, so a rate limiter's up-front permits cannot fit).
#[derive(Debug)]
pub struct Budget {
    started: tokio::time::Instant,
    spent: std::sync::Mutex<f64>,
    per_second: f64,
}

impl Budget {
    pub fn per_second(per_second: f64) -> Self {
        Budget {
            started: tokio::time::Instant::now(),
            spent: std::sync::Mutex::new(0.0),
            per_second,
        }
    }

    /// Waits until what was spent so far is due.
    pub async fn ready(&self) {
        let due = Duration::from_secs_f64(self.spent() / self.per_second);
        tokio::time::sleep_until(self.started + due).await;
    }

    /// Adds what a call cost.
    pub fn spend(&self, units: f64) {
        *self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) += units;
    }

    fn spent(&self) -> f64 {
        *self
            .spent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_evenly_and_never_exceed_the_rate_in_any_second() {
        let pacer = Pacer::per_second(4);
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..20 {
            pacer.ready().await;
            times.push(start.elapsed());
        }
        for window in times.windows(5) {
            // Any 5 consecutive calls span at least one second at 4/s.
            assert!(
                window[4] - window[0] >= Duration::from_millis(1000),
                "{times:?}"
            );
        }
        assert!(times[19] <= Duration::from_millis(4800), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_budget_holds_the_average_rate_whatever_each_call_costs() {
        let budget = Budget::per_second(10.0);
        let start = tokio::time::Instant::now();
        for cost in [0.5, 25.0, 4.5, 10.0] {
            budget.ready().await;
            budget.spend(cost);
        }
        // 30 units spent before the last call: due at 3 s, not before.
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        budget.ready().await;
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }
}
