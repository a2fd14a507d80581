//! Issue 18, item 1: a torn tail (the incomplete final frame of the newest segment) is told apart from corruption
//! (any complete frame that fails its checks, or any run of bad frames). Corruption is reported with file and
//! offset, `store verify` exits 1, the valid records behind it are still read, recovery never truncates it, and
//! event ids and sequence numbers never go back after a recovery.

mod store_common;
use store_common as common;

use std::path::{Path, PathBuf};
use std::process::Command;

use rtvla::events::snapshot::Snapshot;
use rtvla::store::segment::{frame_record, FsyncPolicy, SegmentStore, StoreConfig, REC_HEADER_LEN};
use rtvla::store::{last_event_id, ls, ls_with_skipped, verify};

fn cfg() -> StoreConfig {
    StoreConfig { budget_bytes: 1 << 30, segment_bytes: 1 << 20, fsync: FsyncPolicy::EveryRecord }
}

/// A store with `n` snapshots (event ids 1..=n) in one segment; returns the segment path and each record's offset.
fn store_with(dir: &Path, n: u64) -> (PathBuf, Vec<u64>) {
    let (mut s, _) = SegmentStore::open(dir, cfg()).unwrap();
    let mut offsets = Vec::new();
    for id in 1..=n {
        let mut snap = Snapshot::new_boxed();
        snap.event_id = id;
        snap.cause.push_str("test event").unwrap();
        offsets.push(s.total_bytes());
        s.append_event(&snap.encode().unwrap(), id).unwrap();
    }
    (common::segs(dir).remove(0), offsets)
}

/// Flip one payload bit of the record at `offset`.
fn flip(seg: &Path, offset: u64) {
    let mut b = std::fs::read(seg).unwrap();
    b[offset as usize + REC_HEADER_LEN + 3] ^= 0x10;
    std::fs::write(seg, b).unwrap();
}

/// Simulate the write power loss interrupted: the first `keep` bytes of a never-committed record for event `id`
/// (seq `id`) at the end of the segment. Returns where it starts.
fn tear(seg: &Path, id: u64, keep: usize) -> u64 {
    let mut snap = Snapshot::new_boxed();
    snap.event_id = id;
    let mut frame = Vec::new();
    frame_record(id, &snap.encode().unwrap(), &mut frame);
    let mut b = std::fs::read(seg).unwrap();
    let at = b.len() as u64;
    b.extend_from_slice(&frame[..keep]);
    std::fs::write(seg, b).unwrap();
    at
}

fn ids(dir: &Path) -> Vec<u64> {
    ls(dir).unwrap().iter().map(|e| e.id).collect()
}

#[test]
fn flips_in_several_middle_records_are_each_reported_and_later_records_still_read() {
    let d = common::tmp();
    let (seg, off) = store_with(d.path(), 8);
    for i in [1, 2, 3, 5] {
        flip(&seg, off[i]);
    }
    let len_before = std::fs::metadata(&seg).unwrap().len();
    let rep = verify(d.path()).unwrap();
    println!("{}", rep.render());
    assert!(!rep.is_ok());
    assert!(rep.torn_tail.is_none(), "complete records are never a torn tail: {}", rep.render());
    let found: Vec<(String, u64)> = rep.corrupt.iter().map(|c| (c.segment.clone(), c.offset)).collect();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(found, [1, 2, 3, 5].iter().map(|&i| (name.clone(), off[i])).collect::<Vec<_>>());
    assert_eq!(rep.records_ok, 4);
    assert_eq!(ids(d.path()), vec![1, 5, 7, 8]);
    let (_, skipped) = ls_with_skipped(d.path()).unwrap();
    assert_eq!(skipped.len(), 4);
    // Recovery keeps every byte: nothing here is torn.
    let (mut s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
    assert_eq!((r.bytes_truncated, r.corrupt.len(), r.records_ok), (0, 4, 4));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before);
    assert_eq!(s.append_event(b"x", 9).unwrap().seq, 9);
    drop(s);
    assert_eq!(ids(d.path()), vec![1, 5, 7, 8], "the raw record is not a snapshot but must not hide the others");
}

#[test]
fn flipped_complete_last_record_is_corruption_not_a_torn_tail() {
    let d = common::tmp();
    let (seg, off) = store_with(d.path(), 5);
    flip(&seg, off[4]);
    let len_before = std::fs::metadata(&seg).unwrap().len();
    let rep = verify(d.path()).unwrap();
    assert!(!rep.is_ok() && rep.torn_tail.is_none(), "{}", rep.render());
    assert_eq!(rep.corrupt[0].offset, off[4]);
    let (mut s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
    assert_eq!((r.bytes_truncated, r.corrupt.len()), (0, 1));
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before, "recovery must not cut a committed record");
    // Neither the seq nor the event id of the unreadable record is given out again.
    assert_eq!(s.next_event_id(), 6);
    let mut snap = Snapshot::new_boxed();
    snap.event_id = last_event_id(d.path()).unwrap() + 1;
    assert_eq!(snap.event_id, 6);
    assert_eq!(s.append_event(&snap.encode().unwrap(), 6).unwrap().seq, 6);
    drop(s);
    // The new record went to a fresh segment (damage stays behind a closed one) and is read back.
    assert_eq!(common::segs(d.path()).len(), 2);
    assert_eq!(ids(d.path()), vec![1, 2, 3, 4, 6]);
    assert!(!verify(d.path()).unwrap().is_ok());
}

#[test]
fn cut_short_last_record_is_a_torn_tail_and_recovery_cuts_it() {
    for keep in [3usize, 10, REC_HEADER_LEN, REC_HEADER_LEN + 5] {
        let d = common::tmp();
        let (seg, _) = store_with(d.path(), 4);
        let at = tear(&seg, 5, keep);
        let rep = verify(d.path()).unwrap();
        assert!(rep.is_ok(), "keep {keep}: {}", rep.render());
        assert_eq!(rep.torn_tail.as_ref().map(|t| (t.offset, t.torn)), Some((at, true)), "keep {keep}");
        let (mut s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
        assert!(r.corrupt.is_empty(), "keep {keep}: {:?}", r.corrupt);
        assert_eq!(r.bytes_truncated, keep as u64);
        assert_eq!(std::fs::metadata(&seg).unwrap().len(), at);
        // The torn record was never committed: appends continue in the same segment.
        s.append_event(b"after", 5).unwrap();
        drop(s);
        assert_eq!(common::segs(d.path()).len(), 1);
        assert_eq!(ids(d.path()), vec![1, 2, 3, 4]);
    }
}

#[test]
fn committed_last_record_cut_short_is_corruption() {
    // A committed (fsynced) record can only look cut short through damage, e.g. a flipped length field.
    let d = common::tmp();
    let (seg, off) = store_with(d.path(), 4);
    let mut b = std::fs::read(&seg).unwrap();
    b[off[3] as usize + 5] ^= 0x04; // length + 1 024: now it "ends" past the file, like a torn write
    std::fs::write(&seg, &b).unwrap();
    let scan = rtvla::store::segment::scan_segment(&b);
    assert_eq!(scan.torn, Some((off[3], b.len() as u64 - off[3])), "shaped exactly like a torn write");
    let rep = verify(d.path()).unwrap();
    assert!(!rep.is_ok() && rep.torn_tail.is_none(), "{}", rep.render());
    assert_eq!(rep.corrupt[0].offset, off[3]);
    let (_, r) = SegmentStore::open(d.path(), cfg()).unwrap();
    assert_eq!((r.bytes_truncated, r.corrupt.len()), (0, 1));
    assert_eq!(std::fs::read(&seg).unwrap(), b, "recovery must not cut a committed record");
}

#[test]
fn incomplete_record_in_a_closed_segment_is_corruption() {
    let d = common::tmp();
    let (seg, off) = store_with(d.path(), 3);
    let b = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &b[..off[2] as usize + 30]).unwrap();
    // A newer segment exists: the cut record can no longer be the write that power loss interrupted.
    std::fs::write(d.path().join("seg-000002.rtv"), rtvla::store::segment::segment_header(2)).unwrap();
    let rep = verify(d.path()).unwrap();
    assert!(!rep.is_ok() && rep.torn_tail.is_none(), "{}", rep.render());
    let (_, r) = SegmentStore::open(d.path(), cfg()).unwrap();
    assert_eq!((r.bytes_truncated, r.corrupt.len()), (0, 1));
}

#[test]
fn event_ids_continue_above_the_old_maximum_after_recovery() {
    let d = common::tmp();
    let (seg, off) = store_with(d.path(), 6);
    // The two newest records become unreadable, and a seventh was torn by power loss (recovery truncates it).
    flip(&seg, off[4]);
    flip(&seg, off[5]);
    tear(&seg, 7, 25);
    let (s, r) = SegmentStore::open(d.path(), cfg()).unwrap();
    assert_eq!((r.bytes_truncated, r.corrupt.len()), (25, 2));
    assert_eq!(s.next_seq(), 7, "seq never goes back");
    assert_eq!(s.next_event_id(), 7);
    drop(s);
    assert_eq!(ids(d.path()), vec![1, 2, 3, 4]);
    assert_eq!(last_event_id(d.path()), Some(6), "ids 5 and 6 were given out once; never again");
    // Without the high-water file (a store written before it existed) the readable maximum still counts.
    std::fs::remove_file(d.path().join(rtvla::store::hwm::HWM_FILE)).unwrap();
    assert_eq!(last_event_id(d.path()), Some(4));
}

#[test]
fn cli_verify_exit_code_and_ls_note() {
    let exe = env!("CARGO_BIN_EXE_rtvla");
    let d = common::tmp();
    let (seg, off) = store_with(d.path(), 5);
    let b = std::fs::read(&seg).unwrap();
    // A torn tail only: exit 0.
    std::fs::write(&seg, &b[..off[4] as usize + 7]).unwrap();
    let out = Command::new(exe).args(["store", "verify"]).arg(d.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("torn tail"), "{text}");
    // Bit flips in complete records: exit 1, each named by file and offset.
    let mut b = b.clone();
    for i in [1usize, 2] {
        b[off[i] as usize + REC_HEADER_LEN + 3] ^= 0x10;
    }
    std::fs::write(&seg, &b).unwrap();
    let out = Command::new(exe).args(["store", "verify"]).arg(d.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for i in [1usize, 2] {
        assert!(text.contains(&format!("CORRUPT seg-000001.rtv @ byte {}", off[i])), "{text}");
    }
    let out = Command::new(exe).args(["store", "ls"]).arg(d.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2 corrupt record(s) skipped"), "{text}");
    let out = Command::new(exe).args(["store", "ls", "--json"]).arg(d.path()).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout stays a JSON array");
    assert_eq!(v.as_array().map(|a| a.len()), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 corrupt record(s) skipped"));
}
