//! What a round-trip probe (or a bulk transfer) measured: the figures the report shows
//! for a network fault.
//!
//! `chaos-netd probe` (inside a sidecar) sends numbered UDP datagrams to `chaos-netd echo`
//! (inside the target's namespace), prints one [`ProbeStats`] as JSON, and the library reads
//! it back. Keeping the arithmetic here, apart from the sockets, is what lets it be tested.

use serde::{Deserialize, Serialize};

/// Round-trip figures of one probe run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeStats {
    /// Datagrams sent.
    pub sent: u32,
    /// Distinct datagrams answered (duplicates not counted).
    pub received: u32,
    /// Extra answers to an already answered datagram (duplication on the path).
    pub duplicates: u32,
    /// `1 - received / sent`: the round-trip loss ratio.
    pub loss: f64,
    /// Round-trip times of the first answer to each datagram; `None` when nothing came back.
    pub rtt_ms: Option<RttStats>,
}

/// Summary of round-trip times, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RttStats {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    /// Sample standard deviation.
    pub stddev: f64,
}

impl ProbeStats {
    /// Summarises `sent` datagrams of which those in `rtts_ms` were answered (first answer
    /// each), plus `duplicates` extra answers.
    pub fn from_samples(sent: u32, mut rtts_ms: Vec<f64>, duplicates: u32) -> ProbeStats {
        let received = u32::try_from(rtts_ms.len()).unwrap_or(u32::MAX);
        let loss = if sent == 0 {
            0.0
        } else {
            1.0 - f64::from(received.min(sent)) / f64::from(sent)
        };
        rtts_ms.retain(|r| r.is_finite());
        rtts_ms.sort_by(f64::total_cmp);
        let rtt_ms = (!rtts_ms.is_empty()).then(|| {
            let n = rtts_ms.len() as f64;
            let mean = rtts_ms.iter().sum::<f64>() / n;
            let var = if rtts_ms.len() > 1 {
                rtts_ms.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1.0)
            } else {
                0.0
            };
            RttStats {
                min: rtts_ms[0],
                mean,
                p50: quantile(&rtts_ms, 0.5),
                p95: quantile(&rtts_ms, 0.95),
                max: rtts_ms[rtts_ms.len() - 1],
                stddev: var.sqrt(),
            }
        });
        ProbeStats {
            sent,
            received,
            duplicates,
            loss,
            rtt_ms,
        }
    }

    /// Mean round-trip time in milliseconds, if anything came back.
    pub fn mean_rtt_ms(&self) -> Option<f64> {
        self.rtt_ms.as_ref().map(|r| r.mean)
    }
}

/// What a bulk TCP transfer achieved (`chaos-netd send`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Bytes delivered.
    pub bytes: u64,
    /// From connect to the receiver having read the last byte.
    pub secs: f64,
    pub bits_per_s: f64,
}

/// Nearest-rank quantile of sorted, non-empty `v`.
fn quantile(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_rtts_and_loss() {
        let s = ProbeStats::from_samples(4, vec![3.0, 1.0, 2.0], 1);
        assert_eq!(s.received, 3);
        assert_eq!(s.duplicates, 1);
        assert!((s.loss - 0.25).abs() < 1e-12);
        let r = s.rtt_ms.unwrap();
        assert_eq!((r.min, r.p50, r.max), (1.0, 2.0, 3.0));
        assert!((r.mean - 2.0).abs() < 1e-12);
        assert!((r.stddev - 1.0).abs() < 1e-12);
    }

    #[test]
    fn nothing_back_means_total_loss_and_no_rtt() {
        let s = ProbeStats::from_samples(10, vec![], 0);
        assert_eq!(s.loss, 1.0);
        assert!(s.rtt_ms.is_none());
        assert_eq!(ProbeStats::from_samples(0, vec![], 0).loss, 0.0);
    }

    #[test]
    fn p95_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = ProbeStats::from_samples(100, v, 0);
        assert_eq!(s.rtt_ms.unwrap().p95, 95.0);
    }
}
