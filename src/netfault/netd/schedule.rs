//! When a held packet goes out, and what happens to it: the delayer's model, apart from
//! any socket so that it can be tested.
//!
//! Semantics follow tc netem: each packet is delayed by `delay` plus a jitter drawn from
//! the distribution (uniform over `[-jitter, +jitter]`, or normal with sigma `jitter`),
//! never below zero. As in netem, jitter may reorder packets; `in_order` keeps each flow
//! (5-tuple) in order instead, at the price of pushing a packet's release behind its
//! predecessor's (which biases the mean delay upward under bursts).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How jitter is distributed around the delay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Uniform over `[delay - jitter, delay + jitter]` (netem's default).
    #[default]
    Uniform,
    /// Normal with mean `delay` and standard deviation `jitter` (netem `distribution normal`).
    Normal,
}

impl Distribution {
    /// The name used on command lines and in tc (`uniform`, `normal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Normal => "normal",
        }
    }
}

impl std::str::FromStr for Distribution {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uniform" => Ok(Distribution::Uniform),
            "normal" => Ok(Distribution::Normal),
            other => Err(format!("unknown distribution {other:?} (uniform | normal)")),
        }
    }
}

/// What the delayer does to each packet.
#[derive(Debug, Clone, PartialEq)]
pub struct DelayModel {
    pub delay: Duration,
    pub jitter: Duration,
    pub distribution: Distribution,
    /// Probability (0..=1) that a packet is sent twice.
    pub duplicate: f64,
    /// Probability (0..=1) that one random bit of a packet is flipped.
    pub corrupt: f64,
    /// Keep each flow in order (see the module header).
    pub in_order: bool,
}

/// Identifies a flow: protocol, addresses and ports of an IPv4 packet (0 for anything else).
pub type FlowKey = (u8, [u8; 4], [u8; 4], u16, u16);

/// The flow a raw IPv4 packet belongs to.
pub fn flow_key(packet: &[u8]) -> FlowKey {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return (0, [0; 4], [0; 4], 0, 0);
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let proto = packet[9];
    let src = [packet[12], packet[13], packet[14], packet[15]];
    let dst = [packet[16], packet[17], packet[18], packet[19]];
    // TCP (6) and UDP (17) carry ports in their first four bytes.
    let (sport, dport) = match (proto, packet.get(ihl..ihl + 4)) {
        (6 | 17, Some(p)) => (
            u16::from_be_bytes([p[0], p[1]]),
            u16::from_be_bytes([p[2], p[3]]),
        ),
        _ => (0, 0),
    };
    (proto, src, dst, sport, dport)
}

/// Flips one random bit of `packet`, past the IPv4 header when there is a payload, so the
/// receiver sees a transport checksum error (as with netem, the packet is then dropped by
/// the receiving stack, and TCP retransmits).
pub fn corrupt_bit<R: Rng>(packet: &mut [u8], rng: &mut R) {
    if packet.is_empty() {
        return;
    }
    let ihl = packet
        .first()
        .filter(|b| *b >> 4 == 4)
        .map_or(0, |b| usize::from(b & 0x0f) * 4);
    let start = if ihl < packet.len() { ihl } else { 0 };
    let at = rng.random_range(start..packet.len());
    packet[at] ^= 1 << rng.random_range(0..8u32);
}

/// Decides the release time of every packet.
pub struct Scheduler<R: Rng> {
    model: DelayModel,
    rng: R,
    /// Latest release per flow (only with `in_order`).
    last: HashMap<FlowKey, Instant>,
}

/// Above this many remembered flows, those already drained are forgotten.
const MAX_FLOWS: usize = 4096;

impl<R: Rng> Scheduler<R> {
    pub fn new(model: DelayModel, rng: R) -> Self {
        Scheduler {
            model,
            rng,
            last: HashMap::new(),
        }
    }

    pub fn model(&self) -> &DelayModel {
        &self.model
    }

    /// One draw of the delay: `delay` plus jitter, never negative.
    pub fn sample_delay(&mut self) -> Duration {
        let delay = self.model.delay.as_secs_f64();
        let jitter = self.model.jitter.as_secs_f64();
        if jitter <= 0.0 {
            return self.model.delay;
        }
        let offset = match self.model.distribution {
            Distribution::Uniform => self.rng.random_range(-jitter..=jitter),
            Distribution::Normal => jitter * standard_normal(&mut self.rng),
        };
        Duration::from_secs_f64((delay + offset).max(0.0))
    }

    /// When a packet of `flow` that arrived at `now` goes out.
    pub fn release_at(&mut self, now: Instant, flow: FlowKey) -> Instant {
        let at = now + self.sample_delay();
        if !self.model.in_order {
            return at;
        }
        if self.last.len() > MAX_FLOWS {
            self.last.retain(|_, t| *t > now);
        }
        let at = match self.last.get(&flow) {
            Some(prev) if *prev > at => *prev,
            _ => at,
        };
        self.last.insert(flow, at);
        at
    }

    /// Whether this packet is also sent a second time.
    pub fn duplicate(&mut self) -> bool {
        self.model.duplicate > 0.0 && self.rng.random::<f64>() < self.model.duplicate
    }

    /// Whether this packet gets a flipped bit.
    pub fn corrupt(&mut self) -> bool {
        self.model.corrupt > 0.0 && self.rng.random::<f64>() < self.model.corrupt
    }

    /// The random source, for [`corrupt_bit`].
    pub fn rng(&mut self) -> &mut R {
        &mut self.rng
    }
}

/// A standard normal draw (Box-Muller).
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    // 1 - u lies in (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn model(
        delay_ms: u64,
        jitter_ms: u64,
        distribution: Distribution,
        in_order: bool,
    ) -> DelayModel {
        DelayModel {
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
            distribution,
            duplicate: 0.0,
            corrupt: 0.0,
            in_order,
        }
    }

    fn stats(s: &mut Scheduler<SmallRng>, n: usize) -> (f64, f64, f64, f64) {
        let v: Vec<f64> = (0..n)
            .map(|_| s.sample_delay().as_secs_f64() * 1e3)
            .collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        let min = v.iter().cloned().fold(f64::MAX, f64::min);
        let max = v.iter().cloned().fold(f64::MIN, f64::max);
        (mean, sd, min, max)
    }

    #[test]
    fn uniform_jitter_stays_in_range_around_the_delay() {
        let mut s = Scheduler::new(
            model(200, 50, Distribution::Uniform, false),
            SmallRng::seed_from_u64(1),
        );
        let (mean, sd, min, max) = stats(&mut s, 20_000);
        assert!((mean - 200.0).abs() < 2.0, "mean {mean}");
        // Uniform over 100 ms: sd = 100 / sqrt(12) = 28.9 ms.
        assert!((sd - 28.87).abs() < 1.0, "sd {sd}");
        assert!(min >= 150.0 && max <= 250.0, "{min}..{max}");
    }

    #[test]
    fn normal_jitter_has_sigma_jitter_and_never_goes_negative() {
        let mut s = Scheduler::new(
            model(200, 50, Distribution::Normal, false),
            SmallRng::seed_from_u64(2),
        );
        let (mean, sd, _, _) = stats(&mut s, 20_000);
        assert!((mean - 200.0).abs() < 2.0, "mean {mean}");
        assert!((sd - 50.0).abs() < 2.0, "sd {sd}");
        let mut s = Scheduler::new(
            model(1, 100, Distribution::Normal, false),
            SmallRng::seed_from_u64(3),
        );
        let (_, _, min, _) = stats(&mut s, 1000);
        assert!(min >= 0.0);
    }

    #[test]
    fn no_jitter_is_exactly_the_delay() {
        let mut s = Scheduler::new(
            model(7, 0, Distribution::Uniform, false),
            SmallRng::seed_from_u64(4),
        );
        assert_eq!(s.sample_delay(), Duration::from_millis(7));
    }

    #[test]
    fn in_order_never_releases_a_flow_out_of_order() {
        let mut s = Scheduler::new(
            model(100, 80, Distribution::Uniform, true),
            SmallRng::seed_from_u64(5),
        );
        let t0 = Instant::now();
        let a = (17, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2);
        let b = (17, [10, 0, 0, 1], [10, 0, 0, 3], 1, 2);
        let mut last_a = t0;
        let mut reordered_across_flows = false;
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            let ra = s.release_at(now, a);
            assert!(ra >= last_a);
            last_a = ra;
            let rb = s.release_at(now, b);
            reordered_across_flows |= rb < ra;
        }
        // Flows are independent of each other.
        assert!(reordered_across_flows);
    }

    #[test]
    fn without_in_order_jitter_reorders_like_netem() {
        let mut s = Scheduler::new(
            model(100, 80, Distribution::Uniform, false),
            SmallRng::seed_from_u64(6),
        );
        let t0 = Instant::now();
        let flow = (17, [1; 4], [2; 4], 1, 2);
        let releases: Vec<Instant> = (0..100u64)
            .map(|i| s.release_at(t0 + Duration::from_millis(i), flow))
            .collect();
        assert!(releases.windows(2).any(|w| w[1] < w[0]));
    }

    #[test]
    fn flow_key_reads_ipv4_udp_ports() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..24].copy_from_slice(&[0x1f, 0x90, 0x00, 0x35]);
        assert_eq!(flow_key(&p), (17, [10, 0, 0, 1], [10, 0, 0, 2], 8080, 53));
        assert_eq!(flow_key(&[0x60; 40]).0, 0);
        assert_eq!(flow_key(&[]).0, 0);
    }

    #[test]
    fn corrupt_flips_exactly_one_payload_bit() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..100 {
            let orig = {
                let mut p = vec![0u8; 60];
                p[0] = 0x45;
                p
            };
            let mut p = orig.clone();
            corrupt_bit(&mut p, &mut rng);
            let flipped: u32 = p.iter().zip(&orig).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert_eq!(flipped, 1);
            assert_eq!(p[..20], orig[..20], "the IPv4 header is left alone");
        }
    }

    #[test]
    fn duplicate_and_corrupt_follow_their_probabilities() {
        let mut m = model(0, 0, Distribution::Uniform, false);
        m.duplicate = 0.25;
        let mut s = Scheduler::new(m, SmallRng::seed_from_u64(8));
        let n = (0..10_000).filter(|_| s.duplicate()).count();
        assert!((2300..2700).contains(&n), "{n}");
        assert!(!(0..1000).any(|_| s.corrupt()));
    }
}
