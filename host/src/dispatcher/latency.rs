//! Keepalive latency statistics per destination, as Kamailio's dispatcher
//! keeps them (≤ 6.0): running mean (AVG), Welford standard deviation (STD),
//! an EWMA estimate (EST, equal to AVG for the first 10 samples), the
//! maximum (MAX) and the number of timeouts (TIMEOUT).

/// Samples before EST starts to move on its own.
const TRAINING: u64 = 10;

/// The statistics, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencyStats {
    pub count: u64,
    pub avg: f64,
    /// Welford's running sum of squared deviations.
    m2: f64,
    pub est: f64,
    pub max: f64,
    pub timeouts: u64,
}

impl LatencyStats {
    /// Stats seeded by the `latency` attribute: EST starts trained.
    pub fn seeded(latency_ms: f64) -> LatencyStats {
        LatencyStats { count: TRAINING, avg: latency_ms, m2: 0.0, est: latency_ms, max: latency_ms, timeouts: 0 }
    }

    /// Add one round-trip sample. `alpha` is Kamailio's
    /// `ds_latency_estimator_alpha` / 1000 (≤ 6.0 meaning:
    /// EST = alpha·EST + (1 − alpha)·sample, so higher is slower).
    pub fn add(&mut self, sample_ms: f64, alpha: f64) {
        self.count += 1;
        let delta = sample_ms - self.avg;
        self.avg += delta / self.count as f64;
        self.m2 += delta * (sample_ms - self.avg);
        self.est = if self.count <= TRAINING { self.avg } else { alpha * self.est + (1.0 - alpha) * sample_ms };
        if sample_ms > self.max {
            self.max = sample_ms;
        }
    }

    /// A keepalive that got no answer (or a 408): counted, not averaged.
    pub fn timeout(&mut self) {
        self.timeouts += 1;
    }

    /// Standard deviation of the samples.
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            (self.m2 / (self.count - 1) as f64).sqrt()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_std_and_estimate() {
        let mut s = LatencyStats::default();
        for x in [10.0, 12.0, 14.0, 16.0] {
            s.add(x, 0.9);
        }
        assert_eq!(s.avg, 13.0);
        assert_eq!(s.est, 13.0, "EST follows AVG while training");
        assert!((s.std() - 2.5819).abs() < 1e-3);
        assert_eq!(s.max, 16.0);
        for _ in 0..20 {
            s.add(100.0, 0.9);
        }
        // Past training EST moves by 10 % of each sample's difference.
        assert!(s.est > 50.0 && s.est < 100.0, "{}", s.est);
        s.timeout();
        assert_eq!(s.timeouts, 1);
        assert_eq!(s.count, 24);
    }

    #[test]
    fn seeded_estimate_is_trained() {
        let mut s = LatencyStats::seeded(40.0);
        s.add(140.0, 0.9);
        assert!((s.est - 50.0).abs() < 1e-9, "{}", s.est);
    }
}
