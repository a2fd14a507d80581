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
        let mut buckets = vec![0u32; N_BUCKETS + 1].into_boxed_slice();
        // Touch every page now. `vec![0; n]` comes from calloc (fresh, unmapped pages for a buffer this size), so
        // each 4 KiB page (10 ms of range) would be mapped only when the first latency lands in it: a page fault
        // in the loop, and a resident set that creeps up by up to 400 KiB per histogram as rarer latencies show up
        // (six histograms: the ~2.5 MB an outside run saw RSS grow over minutes under load).
        for i in (0..buckets.len()).step_by(1024) {
            // SAFETY: `i` is in bounds; a volatile write so the compiler cannot drop a store of the zero already there.
            unsafe { std::ptr::write_volatile(buckets.as_mut_ptr().add(i), 0) };
        }
        LatencyHistogram { buckets, count: 0, max_ms: 0.0, sum_ms: 0.0 }
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

    /// Pages of `buf` the kernel has mapped (mincore).
    fn resident_pages(buf: &[u32]) -> (usize, usize) {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let start = buf.as_ptr() as usize / page * page;
        let end = (buf.as_ptr() as usize + std::mem::size_of_val(buf)).div_ceil(page) * page;
        let mut vec = vec![0u8; (end - start) / page];
        // SAFETY: the range covers pages of a live allocation; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        (vec.iter().filter(|&&b| b & 1 != 0).count(), vec.len())
    }

    #[test]
    fn buckets_are_resident_from_the_start() {
        // Every page is mapped before the first value: a latency in a bucket never seen before costs no page
        // fault in the loop and no RSS growth later in the run.
        let mut h = LatencyHistogram::new();
        let (resident, pages) = resident_pages(&h.buckets);
        assert_eq!(resident, pages, "{resident} of {pages} bucket pages resident after new()");
        for ms in 0..1000 {
            h.record(ms as f64);
        }
        assert_eq!(resident_pages(&h.buckets).0, pages);
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
