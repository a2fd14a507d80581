#![allow(dead_code)]
//! Helpers shared by the integration tests.

use std::path::PathBuf;

/// xorshift64*: deterministic, dependency-free randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// The payload the tests write for a given seq (so any reader can check it from the seq alone).
pub fn payload_for(seq: u64, max_len: u64) -> Vec<u8> {
    let mut r = Rng(seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let len = 1 + r.below(max_len) as usize;
    let mut v = vec![0u8; len];
    r.fill(&mut v);
    v
}

/// A temp dir on disk (fsync is real there).
pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("rtvla-store-").tempdir().unwrap()
}

pub fn segs(dir: &std::path::Path) -> Vec<PathBuf> {
    rtvla::store::segment::list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
}
