//! The adaptive checkpoint interval (`checkpoint_interval: { adaptive: .. }`), in pure code:
//! the two online estimates and the interval they call for.
//!
//! - [`CostEstimate`]: an exponentially weighted mean of a per-checkpoint time, used twice:
//!   the checkpoint cost C, and the latency L, its time from trigger to commit point.
//!   Young/Daly's C is what a checkpoint takes away from processing: the time the pipeline
//!   stalls for it (the longest any task reported: alignment plus the state copy; the
//!   write is off the data path) plus the CPU its writers spend encoding and writing the
//!   snapshots, shared out over the pipeline's lanes (on a busy node that CPU is taken
//!   from processing; waiting for fsync is not). Trigger-to-complete is ten to a hundred
//!   times longer and would make the interval far too long; the stall alone is too short
//!   where failures are rare, and the interval then too short. L is how long a newer
//!   recovery point is not there yet, so it adds to the replay.
//! - [`FailureRate`]: the failure rate as a Gamma-Poisson posterior: the configured prior
//!   MTBF weighs as much as [`PRIOR_WEIGHT`] of running at that rate; every job failure and
//!   every second of the run update it. Its mean gives the MTBF estimate M.
//! - [`choose`]: the interval: Young/Daly's `sqrt(2·C·M)`, capped so that the expected
//!   replay after a failure, `interval / 2 + L`, stays within `target_recovery`, then
//!   clamped to `[min, max]`.
//!
//! The jobmanager ([`super::master`]) feeds the estimates and keeps the history of the
//! interval for the REST API; nothing here reads a clock.

use crate::api::{IntervalLimit, IntervalPoint};
use crate::spec::AdaptiveInterval;
use std::time::Duration;

/// The weight of the newest checkpoint in the cost estimate: about the last five
/// checkpoints count, so the estimate follows a growing state within seconds but one slow
/// checkpoint (a disk hiccup) moves it by a third at most.
const COST_WEIGHT: f64 = 0.3;

/// A smoothed per-checkpoint time (the cost C or the latency L), in seconds.
#[derive(Debug, Clone, Default)]
pub struct CostEstimate {
    mean: Option<f64>,
}

impl CostEstimate {
    /// One completed checkpoint's time.
    pub fn observe(&mut self, took: Duration) {
        let x = took.as_secs_f64();
        self.mean = Some(match self.mean {
            None => x,
            Some(m) => m + COST_WEIGHT * (x - m),
        });
    }

    /// `None` until a checkpoint completed.
    pub fn get(&self) -> Option<Duration> {
        self.mean.map(Duration::from_secs_f64)
    }
}

/// How much the prior MTBF weighs: as much as this long of running at the prior's rate.
/// It was one whole failure over the prior MTBF (a minute by default), which held the
/// estimate near the prior for minutes: at a true MTBF of 5 s it still said 11 s after
/// 50 s and nine failures, and the interval was half as long again as Young/Daly's. Ten
/// seconds is enough that one early failure does not shorten the interval for good (one
/// failure in the first 2 s: M = 10 s, back above 30 s after 30 s without another), and
/// little enough that a run's own failures decide within a few of them.
pub const PRIOR_WEIGHT: Duration = Duration::from_secs(10);

/// The failure rate λ as a Gamma(shape α, rate β) posterior over a Poisson process: the
/// prior is β = [`PRIOR_WEIGHT`] of exposure with α = β / (the prior MTBF) failures in it;
/// after n failures in a run of T, α + n and β + T, and the estimate of the MTBF is
/// 1 / E[λ] = (β + T) / (α + n).
#[derive(Debug, Clone)]
pub struct FailureRate {
    /// α and β of the prior, in failures and seconds.
    prior: (f64, f64),
    failures: u64,
}

impl FailureRate {
    pub fn new(prior_mtbf: Duration) -> Self {
        let beta = PRIOR_WEIGHT.as_secs_f64();
        FailureRate { prior: (beta / prior_mtbf.as_secs_f64().max(1e-3), beta), failures: 0 }
    }

    pub fn failed(&mut self) {
        self.failures += 1;
    }

    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// The MTBF estimate after `exposure` of running.
    pub fn mtbf(&self, exposure: Duration) -> Duration {
        let (alpha, beta) = self.prior;
        Duration::from_secs_f64((beta + exposure.as_secs_f64()) / (alpha + self.failures as f64))
    }
}

/// Young/Daly's first-order optimum, `sqrt(2·C·M)`: the interval that minimises checkpoint
/// overhead (C every interval) plus expected lost work (half an interval every M).
pub fn young_daly(cost: Duration, mtbf: Duration) -> Duration {
    Duration::from_secs_f64((2.0 * cost.as_secs_f64() * mtbf.as_secs_f64()).sqrt())
}

/// The expected replay after a failure at a random instant: the cut of the latest
/// completed checkpoint is `interval / 2` old on average when the next one is triggered,
/// plus the latency L, during which the newer checkpoint is not complete yet.
pub fn expected_replay(interval: Duration, latency: Duration) -> Duration {
    interval / 2 + latency
}

/// The interval for a measured cost and latency (`None` before any checkpoint completed:
/// then `min`, so the first measurement comes soon) and an MTBF estimate, with what bounded
/// it.
pub fn choose(cfg: &AdaptiveInterval, measured: Option<(Duration, Duration)>, mtbf: Duration) -> (Duration, IntervalLimit) {
    let Some((cost, latency)) = measured else { return (cfg.min, IntervalLimit::Unmeasured) };
    let mut interval = young_daly(cost, mtbf);
    let mut limit = IntervalLimit::Optimum;
    if let Some(target) = cfg.target_recovery {
        // expected_replay(interval, latency) <= target  <=>  interval <= 2·(target - latency)
        let cap = target.saturating_sub(latency) * 2;
        if interval > cap {
            interval = cap;
            limit = IntervalLimit::TargetRecovery;
        }
    }
    // The bounds win over both: `min` even over a target that no interval can meet.
    if interval > cfg.max {
        (cfg.max, IntervalLimit::Max)
    } else if interval < cfg.min {
        (cfg.min, IntervalLimit::Min)
    } else {
        (interval, limit)
    }
}

/// Both estimates and the current interval of an adaptive job.
#[derive(Debug, Clone)]
pub struct Adaptive {
    pub cfg: AdaptiveInterval,
    /// C: the pipeline's stall per checkpoint.
    pub cost: CostEstimate,
    /// L: trigger to commit point.
    pub latency: CostEstimate,
    pub failures: FailureRate,
    pub current: Duration,
    /// Every change of the interval, newest last (at most [`HISTORY`]).
    pub history: Vec<IntervalPoint>,
}

/// The history kept: hours of a 200 ms interval changing at every checkpoint would
/// otherwise grow without bound; the REST API and the report need the run's shape.
pub const HISTORY: usize = 2000;

impl Adaptive {
    pub fn new(cfg: AdaptiveInterval) -> Self {
        Adaptive {
            failures: FailureRate::new(cfg.mtbf),
            current: cfg.min,
            cost: CostEstimate::default(),
            latency: CostEstimate::default(),
            history: Vec::new(),
            cfg,
        }
    }

    /// Recomputes the interval after `exposure` of running, at wall-clock `now_ms`, and
    /// records it when it or what bounded it changed (to the millisecond), when a failure
    /// was seen since the last record, or on the first call.
    pub fn update(&mut self, exposure: Duration, now_ms: u64) -> Duration {
        let mtbf = self.failures.mtbf(exposure);
        let measured = self.cost.get().zip(self.latency.get());
        let (interval, limit) = choose(&self.cfg, measured, mtbf);
        self.current = interval;
        let ms = interval.as_millis() as u64;
        let failures = self.failures.failures();
        if self.history.last().is_none_or(|p| p.interval_ms != ms || p.failures != failures || p.limit != limit) {
            if self.history.len() >= HISTORY {
                self.history.remove(0);
            }
            self.history.push(IntervalPoint {
                at_ms: now_ms,
                interval_ms: ms,
                cost_ms: self.cost.get().map(|c| c.as_secs_f64() * 1e3),
                latency_ms: self.latency.get().map(|c| c.as_secs_f64() * 1e3),
                mtbf_ms: mtbf.as_millis() as u64,
                failures,
                limit,
            });
        }
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg(min: u64, max: u64, target: Option<u64>) -> AdaptiveInterval {
        AdaptiveInterval { min: ms(min), max: ms(max), target_recovery: target.map(ms), mtbf: Duration::from_secs(60) }
    }

    #[test]
    fn young_daly_is_the_square_root_of_twice_cost_times_mtbf() {
        // 2 · 50 ms · 10 s = 1 s², so 1 s.
        assert_eq!(young_daly(ms(50), Duration::from_secs(10)).as_millis(), 1000);
        assert_eq!(choose(&cfg(200, 5000, None), Some((ms(50), ms(300))), Duration::from_secs(10)), (ms(1000), IntervalLimit::Optimum));
    }

    #[test]
    fn clamps_and_the_target_say_what_bounded_the_interval() {
        let c = cfg(200, 5000, None);
        assert_eq!(choose(&c, None, Duration::from_secs(10)), (ms(200), IntervalLimit::Unmeasured));
        assert_eq!(choose(&c, Some((ms(1), ms(1))), Duration::from_secs(1)), (ms(200), IntervalLimit::Min));
        assert_eq!(choose(&c, Some((ms(500), ms(500))), Duration::from_secs(600)), (ms(5000), IntervalLimit::Max));
        // sqrt(2 · 0.1 · 20) = 2 s; a target of 800 ms with a latency of 100 ms caps it at
        // 2 · (800 - 100) = 1.4 s.
        let t = cfg(200, 5000, Some(800));
        let (i, limit) = choose(&t, Some((ms(100), ms(100))), Duration::from_secs(20));
        assert_eq!((i.as_millis(), limit), (1400, IntervalLimit::TargetRecovery));
        assert!(expected_replay(i, ms(100)) <= ms(800));
        // A target below the latency cannot be met: `min` wins.
        assert_eq!(choose(&t, Some((ms(100), ms(900))), Duration::from_secs(20)), (ms(200), IntervalLimit::Min));
    }

    #[test]
    fn the_failure_rate_starts_at_the_prior_and_follows_the_observations() {
        let mut f = FailureRate::new(Duration::from_secs(60));
        assert_eq!(f.mtbf(Duration::ZERO).as_millis(), 60_000);
        // The prior is 1/6 of a failure in 10 s. No failure in a minute: the estimate
        // grows fast, (10 + 60) / (1/6) = 420 s.
        assert_eq!(f.mtbf(Duration::from_secs(60)).as_millis(), 420_000);
        // Nine failures in 90 s: (10 + 90) / (9 + 1/6) = 10.9 s, close to the observed
        // 10 s (one whole failure over the prior minute would have said 15 s).
        (0..9).for_each(|_| f.failed());
        assert_eq!(f.mtbf(Duration::from_secs(90)).as_millis(), 10_909);
        // One early failure: (10 + 2) / (1 + 1/6) = 10.3 s, and 30 s later without
        // another, (10 + 32) / (1 + 1/6) = 36 s.
        let mut early = FailureRate::new(Duration::from_secs(60));
        early.failed();
        assert_eq!(early.mtbf(Duration::from_secs(2)).as_millis(), 10_285);
        assert_eq!(early.mtbf(Duration::from_secs(32)).as_millis(), 36_000);
    }

    #[test]
    fn the_cost_follows_recent_checkpoints() {
        let mut c = CostEstimate::default();
        assert_eq!(c.get(), None);
        c.observe(ms(100));
        assert_eq!(c.get(), Some(ms(100)));
        c.observe(ms(200));
        assert_eq!(c.get().unwrap().as_millis(), 130);
        (0..30).for_each(|_| c.observe(ms(200)));
        assert_eq!(c.get().unwrap().as_millis(), 199);
    }

    #[test]
    fn the_history_records_changes_and_failures_only() {
        let mut a = Adaptive::new(cfg(200, 5000, None));
        a.update(Duration::ZERO, 1);
        a.update(Duration::from_secs(1), 2);
        assert_eq!(a.history.len(), 1, "unmeasured: min both times");
        a.cost.observe(ms(50));
        assert_eq!(a.update(Duration::from_secs(1), 3).as_millis(), 200, "no latency yet");
        a.latency.observe(ms(300));
        assert_eq!(a.update(Duration::from_secs(1), 3).as_millis(), 2569); // sqrt(2·0.05·66)
        assert_eq!(a.history.len(), 2);
        a.update(Duration::from_secs(1), 3);
        assert_eq!(a.history.len(), 2, "nothing changed");
        assert_eq!(a.history[1].latency_ms, Some(300.0));
        a.failures.failed();
        a.failures.failed();
        let i = a.update(Duration::from_secs(2), 4);
        assert!(i < ms(2569), "failures shorten the interval: {i:?}");
        let last = a.history.last().unwrap();
        assert_eq!((last.at_ms, last.failures, last.limit), (4, 2, IntervalLimit::Optimum));
        assert_eq!(a.history.len(), 3);
    }

    proptest! {
        #[test]
        fn monotone_in_cost_and_mtbf_and_always_within_bounds(
            min in 1u64..2000, span in 0u64..10_000, target in proptest::option::of(1u64..20_000),
            c1 in 0u64..5000, c2 in 0u64..5000, m1 in 1u64..600_000, m2 in 1u64..600_000, lat in 0u64..5000,
        ) {
            let cfg = cfg(min, min + span, target);
            let (lo_c, hi_c) = (c1.min(c2), c1.max(c2));
            let (lo_m, hi_m) = (m1.min(m2), m1.max(m2));
            let pick = |c: u64, m: u64| choose(&cfg, Some((ms(c), ms(lat))), ms(m)).0;
            for (c, m) in [(lo_c, lo_m), (hi_c, hi_m), (lo_c, hi_m), (hi_c, lo_m)] {
                let i = pick(c, m);
                prop_assert!(cfg.min <= i && i <= cfg.max, "{i:?} outside [{:?}, {:?}]", cfg.min, cfg.max);
                // Within the bounds, the target holds whenever it can.
                if let Some(t) = cfg.target_recovery {
                    if i > cfg.min {
                        prop_assert!(expected_replay(i, ms(lat)) <= t + ms(1));
                    }
                }
            }
            // More failures (a shorter MTBF): never a longer interval.
            prop_assert!(pick(lo_c, lo_m) <= pick(lo_c, hi_m));
            // A dearer checkpoint: never a shorter interval (the target's cap depends on the
            // latency, not the cost).
            prop_assert!(pick(lo_c, lo_m) <= pick(hi_c, lo_m));
        }
    }
}
