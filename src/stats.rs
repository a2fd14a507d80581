//! Latency statistics recorded on the loop thread without allocating: a fixed-bucket histogram (10 µs buckets up
//! to 1 s) allocated once at start-up, plus exact max.

/// Histogram of durations in milliseconds.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    buckets: Box<[u32]>,
    count: u64,
    max_ms: f64,
    sum_ms: f64,
}

const BUCKET_MS: f64 = 0.01;
const N_BUCKETS: usize = 100_000; // 1 s

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> Self {
        LatencyHistogram { buckets: vec![0; N_BUCKETS + 1].into_boxed_slice(), count: 0, max_ms: 0.0, sum_ms: 0.0 }
    }

    /// Record one value (ms). Values past 1 s land in an overflow bucket; max stays exact.
    #[inline]
    pub fn record(&mut self, ms: f64) {
        let ms = if ms.is_finite() { ms.max(0.0) } else { 0.0 };
        let i = ((ms / BUCKET_MS) as usize).min(N_BUCKETS);
        self.buckets[i] += 1;
        self.count += 1;
        self.sum_ms += ms;
        if ms > self.max_ms {
            self.max_ms = ms;
        }
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> f64 {
        self.max_ms
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms / self.count as f64
        }
    }

    /// Value at quantile q in [0, 1] (upper edge of its bucket, capped at max). 0 when empty. A quantile that falls
    /// in the overflow bucket (>= 1 s, e.g. inference on an emulated CPU) is reported as the max seen.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += *n as u64;
            if seen >= rank {
                if i == N_BUCKETS {
                    return self.max_ms;
                }
                return ((i + 1) as f64 * BUCKET_MS).min(self.max_ms);
            }
        }
        self.max_ms
    }
}

/// FNV-1a over command bits: a cheap, stable fingerprint of everything sent, in order.
#[derive(Clone, Copy, Debug)]
pub struct CommandsHash(pub u64);

impl Default for CommandsHash {
    fn default() -> Self {
        CommandsHash(0xcbf2_9ce4_8422_2325)
    }
}

impl CommandsHash {
    #[inline]
    pub fn add(&mut self, c: &crate::types::Command) {
        for v in [c.steer, c.throttle, c.brake] {
            for b in v.to_bits().to_le_bytes() {
                self.0 ^= b as u64;
                self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_uniform_values() {
        let mut h = LatencyHistogram::new();
        for i in 1..=100 {
            h.record(i as f64);
        }
        assert!((h.quantile(0.5) - 50.0).abs() <= 0.011, "{}", h.quantile(0.5));
        assert!((h.quantile(0.99) - 99.0).abs() <= 0.011);
        assert_eq!(h.max(), 100.0);
        assert_eq!(h.quantile(1.0), 100.0);
        assert!((h.mean() - 50.5).abs() < 1e-9);
        h.record(5000.0);
        assert_eq!(h.max(), 5000.0);
        assert_eq!(LatencyHistogram::new().quantile(0.5), 0.0);
    }

    #[test]
    fn commands_hash_depends_on_order() {
        use crate::types::Command;
        let a = Command { steer: 0.1, throttle: 0.2, brake: 0.0 };
        let b = Command { steer: -0.1, throttle: 0.0, brake: 1.0 };
        let (mut h1, mut h2) = (CommandsHash::default(), CommandsHash::default());
        h1.add(&a);
        h1.add(&b);
        h2.add(&b);
        h2.add(&a);
        assert_ne!(h1.0, h2.0);
    }
}
