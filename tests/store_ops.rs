//! Issue 18, item 5 "Store operations": segment rollover never clobbers an existing segment, sequence numbers
//! never wrap, and a non-file named like a segment does not break `store ls` / `store verify`.

mod store_common;
use store_common as common;

use std::path::Path;

use rtvla::events::snapshot::Snapshot;
use rtvla::store::hwm::{self, HighWater};
use rtvla::store::verify;

use rtvla::store::segment::{
    frame_record, read_all, segment_header, segment_name, FsyncPolicy, SegmentStore, StoreConfig, StoreError,
    MAX_RECORD, SEG_HEADER_LEN,
};

/// Smallest segments the store accepts: two 40 kB records never share one, so the second append rolls over.
fn small_segments() -> StoreConfig {
    StoreConfig {
        budget_bytes: 1 << 30,
        segment_bytes: (SEG_HEADER_LEN + MAX_RECORD) as u64,
        fsync: FsyncPolicy::Never,
    }
}

/// Write a foreign segment `no` holding records with the given seqs; returns its bytes.
fn write_segment(dir: &Path, no: u32, seqs: &[u64]) -> Vec<u8> {
    let mut b = segment_header(no).to_vec();
    for &seq in seqs {
        frame_record(seq, &common::payload_for(seq, 100), &mut b);
    }
    std::fs::write(dir.join(segment_name(no)), &b).unwrap();
    b
}

#[test]
fn rollover_skips_a_segment_name_that_already_exists() {
    let d = common::tmp();
    let (mut s, _) = SegmentStore::open(d.path(), small_segments()).unwrap();
    s.append(&[1u8; 40_000]).unwrap();
    // seg-000002.rtv appears while the store is open: the name the writer would pick next.
    let theirs = write_segment(d.path(), 2, &[100, 101, 102]);
    s.append(&[2u8; 40_000]).unwrap();
    s.append(&[3u8; 40_000]).unwrap();
    drop(s);
    assert_eq!(std::fs::read(d.path().join(segment_name(2))).unwrap(), theirs, "existing segment clobbered");
    let names: Vec<String> =
        common::segs(d.path()).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, [1, 2, 3, 4].map(segment_name));
    let (recs, _) = read_all(d.path()).unwrap();
    assert!([100, 101, 102].iter().all(|q| recs.iter().any(|r| r.seq == *q)), "its records are still read");
}

#[test]
fn segment_numbers_never_wrap_onto_live_segments() {
    let d = common::tmp();
    let low = write_segment(d.path(), 1, &[1, 2]);
    let high = write_segment(d.path(), u32::MAX, &[3]);
    let (mut s, r) = SegmentStore::open(d.path(), small_segments()).unwrap();
    assert_eq!(r.records_ok, 3);
    s.append(&[1u8; 40_000]).unwrap(); // fits in the highest segment
    let err = s.append(&[2u8; 40_000]).expect_err("no number left after u32::MAX");
    assert!(matches!(err, StoreError::SegmentsExhausted { .. }), "{err}");
    assert!(err.to_string().contains("segment numbers exhausted"), "{err}");
    drop(s);
    assert_eq!(std::fs::read(d.path().join(segment_name(1))).unwrap(), low, "wrapped onto segment 1");
    assert!(std::fs::read(d.path().join(segment_name(u32::MAX))).unwrap().starts_with(&high));
    assert_eq!(common::segs(d.path()).len(), 2, "no wrapped segment 0 created");
    let (recs, bad) = read_all(d.path()).unwrap();
    assert_eq!((recs.len(), bad.len()), (4, 0));
}

/// A snapshot record for event `id`.
fn snapshot(id: u64) -> Vec<u8> {
    let mut snap = Snapshot::new_boxed();
    snap.event_id = id;
    snap.cause.push_str("near the end of seq").unwrap();
    snap.encode().unwrap()
}

fn every_record() -> StoreConfig {
    StoreConfig { fsync: FsyncPolicy::EveryRecord, ..small_segments() }
}

/// Appends refuse cleanly instead of wrapping, and `verify` reads the store as healthy (no corruption, no torn
/// tail) before and after the refusal.
fn assert_exhausted_and_healthy(dir: &Path, records: u64) {
    let bytes_before: Vec<Vec<u8>> = common::segs(dir).iter().map(|p| std::fs::read(p).unwrap()).collect();
    let (mut s, r) = SegmentStore::open(dir, every_record()).unwrap();
    assert_eq!((r.records_ok, r.corrupt.len(), r.bytes_truncated), (records, 0, 0));
    assert_eq!(s.next_seq(), u64::MAX);
    let err = s.append_event(&snapshot(99), 99).expect_err("no seq left");
    assert!(matches!(err, StoreError::SeqExhausted { .. }), "{err}");
    assert!(err.to_string().contains("sequence numbers exhausted"), "{err}");
    drop(s);
    let after: Vec<Vec<u8>> = common::segs(dir).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(after, bytes_before, "a refused append changed the segments");
    let v = verify(dir).unwrap();
    assert!(v.is_ok() && v.torn_tail.is_none(), "{}", v.render());
    assert_eq!((v.records_ok, v.snapshots_ok), (records, records));
}

#[test]
fn seq_runs_up_to_u64_max_minus_one_then_appends_refuse() {
    let d = common::tmp();
    let mut b = segment_header(1).to_vec();
    frame_record(u64::MAX - 3, &snapshot(1), &mut b);
    frame_record(u64::MAX - 2, &snapshot(2), &mut b);
    std::fs::write(d.path().join(segment_name(1)), b).unwrap();
    let (mut s, _) = SegmentStore::open(d.path(), every_record()).unwrap();
    let a = s.append_event(&snapshot(3), 3).unwrap();
    assert_eq!((a.seq, a.durable), (u64::MAX - 1, true));
    assert!(matches!(s.append_event(&snapshot(4), 4), Err(StoreError::SeqExhausted { .. })));
    drop(s);
    assert_eq!(hwm::read(d.path()).next_seq, u64::MAX);
    assert_eq!(hwm::read(d.path()).committed_seq, u64::MAX - 1);
    assert_exhausted_and_healthy(d.path(), 3);
}

#[test]
fn a_record_with_seq_u64_max_opens_without_overflow_and_refuses_appends() {
    let d = common::tmp();
    let mut b = segment_header(1).to_vec();
    frame_record(u64::MAX, &snapshot(1), &mut b);
    std::fs::write(d.path().join(segment_name(1)), b).unwrap();
    assert_exhausted_and_healthy(d.path(), 1);
}

#[test]
fn a_high_water_mark_at_the_end_refuses_appends_in_an_empty_store() {
    let d = common::tmp();
    let hw = HighWater { next_seq: u64::MAX - 1, next_event_id: 1, committed_seq: u64::MAX - 2 };
    hwm::write(d.path(), hw, true).unwrap();
    let (mut s, _) = SegmentStore::open(d.path(), every_record()).unwrap();
    assert_eq!(s.append_event(&snapshot(1), 1).unwrap().seq, u64::MAX - 1);
    drop(s);
    assert_exhausted_and_healthy(d.path(), 1);
}

/// A store of two snapshots in segment 1, plus a directory named like the next segments.
fn store_with_a_segment_named_directory(dir: &Path) {
    let (mut s, _) = SegmentStore::open(dir, every_record()).unwrap();
    s.append_event(&snapshot(1), 1).unwrap();
    s.append_event(&snapshot(2), 2).unwrap();
    drop(s);
    std::fs::create_dir(dir.join(segment_name(9))).unwrap();
    std::fs::create_dir(dir.join(segment_name(2))).unwrap();
}

#[test]
fn a_directory_named_like_a_segment_is_skipped_and_reported() {
    let d = common::tmp();
    store_with_a_segment_named_directory(d.path());
    assert_eq!(common::segs(d.path()).len(), 1);
    assert_eq!(rtvla::store::ls(d.path()).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2]);
    let v = verify(d.path()).unwrap();
    assert!(v.is_ok(), "{}", v.render());
    assert_eq!((v.segments, v.records_ok, v.snapshots_ok), (1, 2, 2));
    assert_eq!(v.not_segments, [segment_name(2), segment_name(9)]);
    assert!(v.render().contains("SKIPPED seg-000009.rtv"), "{}", v.render());
    // The writer opens the store and rolls past the names the directories hold.
    let (mut s, r) = SegmentStore::open(d.path(), small_segments()).unwrap();
    assert_eq!(r.records_ok, 2);
    s.append_event(&[7u8; 40_000], 3).unwrap();
    s.append_event(&[8u8; 40_000], 4).unwrap();
    drop(s);
    assert!(d.path().join(segment_name(2)).is_dir() && d.path().join(segment_name(9)).is_dir());
    assert_eq!(read_all(d.path()).unwrap().0.len(), 4);
}

#[test]
fn store_ls_and_verify_cli_work_with_a_directory_named_like_a_segment() {
    let d = common::tmp();
    store_with_a_segment_named_directory(d.path());
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_rtvla")).args(args).arg(d.path()).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
    };
    let (code, out) = run(&["store", "ls"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 events"), "{out}");
    let (code, out) = run(&["store", "verify"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 segments, 2 records ok, 2 snapshots ok, 0 corrupt"), "{out}");
    assert!(out.contains("SKIPPED seg-000009.rtv"), "{out}");
}
