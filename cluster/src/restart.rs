//! Restart strategies with Flink's semantics: given the history of failures, decide how
//! long to wait before the next attempt, or give up (the job FAILS).

use crate::input::SplitMix64;
use crate::spec::RestartStrategy;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Decides restart delays; one per job.
pub struct RestartTracker {
    strategy: RestartStrategy,
    restarts: u32,
    /// failure-rate: failure times within the window.
    window: VecDeque<Instant>,
    /// exponential-delay: the current backoff and when the last failure was.
    backoff: Option<Duration>,
    last_failure: Option<Instant>,
    rng: SplitMix64,
}

/// The decision after a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    RestartAfter(Duration),
    /// No more restarts: why.
    GiveUp(String),
}

impl RestartTracker {
    pub fn new(strategy: RestartStrategy, seed: u64) -> Self {
        RestartTracker {
            strategy,
            restarts: 0,
            window: VecDeque::new(),
            backoff: None,
            last_failure: None,
            rng: SplitMix64::new(seed),
        }
    }

    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, now: Instant) -> Decision {
        let d = match &self.strategy {
            RestartStrategy::None => Decision::GiveUp("restart strategy is `none`".into()),
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.restarts >= *attempts {
                    Decision::GiveUp(format!("fixed-delay: {attempts} restart attempts exhausted"))
                } else {
                    Decision::RestartAfter(*delay)
                }
            }
            RestartStrategy::FailureRate { max_failures, interval, delay } => {
                self.window.push_back(now);
                while let Some(&t) = self.window.front() {
                    if now.duration_since(t) > *interval {
                        self.window.pop_front();
                    } else {
                        break;
                    }
                }
                if self.window.len() as u32 > *max_failures {
                    Decision::GiveUp(format!(
                        "failure-rate: {} failures within {:?} exceed max_failures {max_failures}",
                        self.window.len(),
                        interval
                    ))
                } else {
                    Decision::RestartAfter(*delay)
                }
            }
            RestartStrategy::ExponentialDelay { initial, max, multiplier, jitter, reset_threshold, attempts } => {
                if let Some(last) = self.last_failure {
                    if now.duration_since(last) >= *reset_threshold {
                        self.backoff = None;
                    }
                }
                if attempts.is_some_and(|a| self.restarts >= a) {
                    Decision::GiveUp(format!("exponential-delay: {} restart attempts exhausted", self.restarts))
                } else {
                    let base = match self.backoff {
                        None => *initial,
                        Some(b) => b.mul_f64(*multiplier).min(*max),
                    };
                    self.backoff = Some(base);
                    // Jitter: uniform in [-jitter, +jitter] of the base, as Flink's jitter-factor.
                    let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    let factor = 1.0 + jitter * (2.0 * u - 1.0);
                    Decision::RestartAfter(base.mul_f64(factor.max(0.0)).min(max.mul_f64(1.0 + jitter)))
                }
            }
        };
        self.last_failure = Some(now);
        if matches!(d, Decision::RestartAfter(_)) {
            self.restarts += 1;
        }
        d
    }

    /// Restarts granted so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fixed_delay_gives_up_after_attempts() {
        let mut t = RestartTracker::new(RestartStrategy::FixedDelay { attempts: 2, delay: Duration::from_secs(1) }, 1);
        assert_eq!(t.on_failure(Instant::now()), Decision::RestartAfter(Duration::from_secs(1)));
        assert_eq!(t.on_failure(Instant::now()), Decision::RestartAfter(Duration::from_secs(1)));
        assert!(matches!(t.on_failure(Instant::now()), Decision::GiveUp(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_counts_only_failures_within_the_interval() {
        let s = RestartStrategy::FailureRate {
            max_failures: 2,
            interval: Duration::from_secs(60),
            delay: Duration::from_millis(500),
        };
        let mut t = RestartTracker::new(s, 1);
        assert!(matches!(t.on_failure(Instant::now()), Decision::RestartAfter(_)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(t.on_failure(Instant::now()), Decision::RestartAfter(_)));
        // A third failure within the minute: too many.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(t.on_failure(Instant::now()), Decision::GiveUp(_)));
        // ...but spaced out past the interval, failures are fine again.
        let mut t = RestartTracker::new(
            RestartStrategy::FailureRate { max_failures: 2, interval: Duration::from_secs(60), delay: Duration::ZERO },
            1,
        );
        for _ in 0..10 {
            assert!(matches!(t.on_failure(Instant::now()), Decision::RestartAfter(_)));
            tokio::time::advance(Duration::from_secs(31)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn exponential_delay_doubles_caps_jitters_and_resets() {
        let s = RestartStrategy::ExponentialDelay {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            multiplier: 2.0,
            jitter: 0.1,
            reset_threshold: Duration::from_secs(60),
            attempts: None,
        };
        let mut t = RestartTracker::new(s, 7);
        let expect = [100u64, 200, 400, 800, 1000, 1000];
        for e in expect {
            let Decision::RestartAfter(d) = t.on_failure(Instant::now()) else { panic!("gave up") };
            let ms = d.as_millis() as u64;
            assert!(ms >= e * 9 / 10 && ms <= e * 11 / 10, "expected ~{e}ms, got {ms}ms");
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // A quiet hour resets the backoff.
        tokio::time::advance(Duration::from_secs(61)).await;
        let Decision::RestartAfter(d) = t.on_failure(Instant::now()) else { panic!() };
        assert!(d <= Duration::from_millis(110), "{d:?}");
    }
}
