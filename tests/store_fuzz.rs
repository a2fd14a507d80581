//! Property / fuzz test of the snapshot decoder and the record scanner: ≥ 1 M random and mutated inputs in release
//! (50 k in debug builds), no panic, no record returned that was not written, no allocation driven by a length field.

mod store_common;
use store_common as common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use common::Rng;
use rtvla::events::snapshot::{f32_to_f16_bits, Keyframe, Snapshot, TickTelemetry, TriggerKind};
use rtvla::store::segment::{frame_record, scan_segment, segment_header};

/// Tracks the largest single allocation.
struct MaxAlloc;
static MAX_ALLOC: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for MaxAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        MAX_ALLOC.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        MAX_ALLOC.fetch_max(n, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: MaxAlloc = MaxAlloc;

fn small_snapshot() -> Vec<u8> {
    let mut s = Snapshot::new_boxed();
    s.event_id = 7;
    s.trigger = TriggerKind::NearMiss;
    s.cause.push_str("ttc 1.20 s").unwrap();
    for i in 0..3 {
        s.pre.push(TickTelemetry { time_us: i * 50_000, tick: i, speed: 5.0, ..Default::default() }).unwrap();
    }
    s.post.push(TickTelemetry { time_us: 200_000, tick: 3, ttc_s: 1.2, flags: 3, ..Default::default() }).unwrap();
    let mut kf = Keyframe {
        tick: 2,
        time_us: 100_000,
        shape: [4, 8],
        features: heapless::Vec::new(),
        thumb_w: 0,
        thumb_h: 0,
        jpeg: heapless::Vec::new(),
    };
    for j in 0..32 {
        kf.features.extend_from_slice(&f32_to_f16_bits(j as f32 * 0.1).to_le_bytes()).unwrap();
    }
    kf.jpeg.extend_from_slice(&[0xFF, 0xD8, 1, 2, 3, 0xFF, 0xD9]).unwrap();
    s.keyframes.push(kf).unwrap();
    s.encode().unwrap()
}

fn segment_with(records: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut b = segment_header(1).to_vec();
    for (seq, p) in records {
        frame_record(*seq, p, &mut b);
    }
    b
}

#[test]
fn fuzz_decoder_and_scanner() {
    let n: u64 = if cfg!(debug_assertions) { 50_000 } else { 1_000_000 };
    let t0 = Instant::now();
    let mut rng = Rng(0xF022_F022_F022_F022);
    let snap = small_snapshot();
    let records: Vec<(u64, Vec<u8>)> = (1..=4u64).map(|s| (s, common::payload_for(s, 120))).collect();
    let seg = segment_with(&records);
    let mut buf = Vec::with_capacity(70_000);
    let (mut decoded_ok, mut scanned_records) = (0u64, 0u64);
    let base_alloc = MAX_ALLOC.load(Ordering::Relaxed);
    for i in 0..n {
        buf.clear();
        match i % 5 {
            // Random bytes, starting with a valid schema version half the time.
            0 => {
                let len = rng.below(300) as usize;
                buf.resize(len, 0);
                rng.fill(&mut buf);
                if len > 0 && rng.below(2) == 0 {
                    buf[0] = 1;
                }
                if Snapshot::decode(&buf).is_ok() {
                    decoded_ok += 1;
                }
            }
            // Mutated valid snapshot: flips, byte overwrites (huge length prefixes), truncation, extension.
            1 => {
                buf.extend_from_slice(&snap);
                for _ in 0..1 + rng.below(4) {
                    if buf.is_empty() {
                        break;
                    }
                    let k = rng.below(buf.len() as u64) as usize;
                    match rng.below(4) {
                        0 => buf[k] ^= 1 << rng.below(8),
                        1 => buf[k] = 0xFF,
                        2 => buf.truncate(k.max(1)),
                        _ => buf[k] = rng.next() as u8,
                    }
                }
                if let Ok(s) = Snapshot::decode(&buf) {
                    decoded_ok += 1;
                    let _ = s.encode().unwrap(); // anything decoded re-encodes
                }
            }
            // Random bytes behind a valid segment header (and sometimes a valid record magic).
            2 => {
                buf.extend_from_slice(&segment_header(1));
                let len = rng.below(400) as usize;
                let start = buf.len();
                buf.resize(start + len, 0);
                rng.fill(&mut buf[start..]);
                if len >= 4 && rng.below(2) == 0 {
                    buf[start..start + 4].copy_from_slice(b"RTVR");
                }
                let sc = scan_segment(&buf);
                assert!(sc.valid_end as usize <= buf.len());
                // Only a crc32c collision could get here; none must ever be returned as a real record.
                assert!(sc.records.is_empty(), "random bytes scanned as a record: {:?}", sc.records);
            }
            // Mutated valid segment: returned records must be exactly the ones written.
            _ => {
                buf.extend_from_slice(&seg);
                for _ in 0..1 + rng.below(6) {
                    if buf.is_empty() {
                        break;
                    }
                    let k = rng.below(buf.len() as u64) as usize;
                    match rng.below(3) {
                        0 => buf[k] ^= 1 << rng.below(8),
                        1 => buf.truncate(k),
                        _ => buf[k] = rng.next() as u8,
                    }
                }
                let sc = scan_segment(&buf);
                assert!(sc.valid_end as usize <= buf.len());
                for r in &sc.records {
                    let (seq, p) = &records[(r.seq - 1) as usize];
                    assert_eq!((r.seq, &buf[r.payload_range()]), (*seq, &p[..]));
                    scanned_records += 1;
                }
            }
        }
    }
    let max_alloc = MAX_ALLOC.load(Ordering::Relaxed);
    println!(
        "fuzz: {n} inputs in {:.2?}: {decoded_ok} decoded, {scanned_records} intact records scanned, \
         largest allocation {max_alloc} bytes (before loop {base_alloc})",
        t0.elapsed()
    );
    // The decoded snapshot is one fixed-size box (~62 KiB); nothing may scale with a length prefix.
    assert!(max_alloc <= 256 * 1024, "allocation of {max_alloc} bytes");
    assert!(n >= 1_000_000 || cfg!(debug_assertions));
}
