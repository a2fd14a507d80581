//! Power-loss tests: truncation at every byte offset, random bit flips, and a writer process killed with SIGKILL.

mod store_common;
use store_common as common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{payload_for, tmp, Rng};
use rtvla::store::segment::{self, read_all, FsyncPolicy, SegmentStore, StoreConfig, SEG_HEADER_LEN};

fn cfg(fsync: FsyncPolicy) -> StoreConfig {
    StoreConfig { budget_bytes: 1 << 30, segment_bytes: 1 << 20, fsync }
}

/// Every record returned must be exactly what was written for its seq.
fn check_intact(dir: &Path, max_len: u64) -> Vec<u64> {
    let (recs, _) = read_all(dir).unwrap();
    let mut prev = 0;
    for r in &recs {
        assert!(r.seq > prev, "seq order");
        prev = r.seq;
        assert_eq!(r.payload, payload_for(r.seq, max_len), "record {} corrupt but returned", r.seq);
    }
    recs.iter().map(|r| r.seq).collect()
}

#[test]
fn truncated_at_every_byte_offset() {
    const MAX: u64 = 600;
    let src = tmp();
    let (mut s, _) = SegmentStore::open(src.path(), cfg(FsyncPolicy::Never)).unwrap();
    let mut ends = vec![SEG_HEADER_LEN as u64];
    for seq in 1..=6u64 {
        let p = payload_for(seq, MAX);
        s.append(&p).unwrap();
        ends.push(ends.last().unwrap() + 20 + p.len() as u64);
    }
    drop(s);
    let seg = common::segs(src.path()).remove(0);
    let full = std::fs::read(&seg).unwrap();
    assert_eq!(full.len() as u64, *ends.last().unwrap());
    let last_start = ends[5] as usize;
    let work = tmp();
    let wseg = work.path().join(seg.file_name().unwrap());
    let mut checked = 0;
    // Every offset of the whole file (the last record's offsets included): header cuts, record-header cuts,
    // payload cuts.
    for cut in 0..full.len() {
        std::fs::write(&wseg, &full[..cut]).unwrap();
        let (mut st, rep) = SegmentStore::open(work.path(), cfg(FsyncPolicy::Never)).unwrap();
        let committed = ends.iter().skip(1).filter(|e| **e <= cut as u64).count() as u64;
        assert_eq!(rep.records_ok, committed, "cut {cut}");
        assert!(rep.corrupt.is_empty(), "cut {cut}: {:?}", rep.corrupt);
        let valid_end = if cut < SEG_HEADER_LEN { 0 } else { ends[committed as usize] };
        assert_eq!(rep.bytes_truncated, cut as u64 - valid_end, "cut {cut}");
        // Keeps appending after recovery, with the next seq.
        let next = committed + 1;
        assert_eq!(st.append(&payload_for(next, MAX)).unwrap().seq, next, "cut {cut}");
        drop(st);
        let seqs = check_intact(work.path(), MAX);
        assert_eq!(seqs, (1..=next).collect::<Vec<_>>(), "cut {cut}");
        // Start the next cut from a fresh store: its high-water marks go too (they never go back within a store).
        for p in common::segs(work.path()) {
            std::fs::remove_file(p).unwrap();
        }
        let _ = std::fs::remove_file(work.path().join(rtvla::store::hwm::HWM_FILE));
        if cut >= last_start {
            checked += 1;
        }
    }
    assert_eq!(checked, full.len() - last_start);
    println!("truncation: {} offsets, {} inside the last record", full.len(), checked);
}

#[test]
fn random_bit_flips_never_return_a_corrupt_record() {
    const MAX: u64 = 3000;
    let src = tmp();
    let c = StoreConfig { budget_bytes: 1 << 30, segment_bytes: 70_000, fsync: FsyncPolicy::Never };
    let (mut s, _) = SegmentStore::open(src.path(), c).unwrap();
    for seq in 1..=80u64 {
        s.append(&payload_for(seq, MAX)).unwrap();
    }
    drop(s);
    let segs = common::segs(src.path());
    assert!(segs.len() >= 2);
    let originals: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let work = tmp();
    let mut rng = Rng(0xB17F_11B5);
    let (mut lost_total, mut trials) = (0usize, 0);
    let t0 = Instant::now();
    while trials < 600 {
        trials += 1;
        let mut bufs = originals.clone();
        for _ in 0..1 + rng.below(8) {
            let k = rng.below(bufs.len() as u64) as usize;
            let b = &mut bufs[k];
            let i = rng.below(b.len() as u64) as usize;
            b[i] ^= 1 << rng.below(8);
        }
        for (p, b) in segs.iter().zip(&bufs) {
            std::fs::write(work.path().join(p.file_name().unwrap()), b).unwrap();
        }
        // Read-only scan, then recovery, then read again: nothing corrupt is ever returned.
        let before = check_intact(work.path(), MAX);
        let (mut st, rep) = SegmentStore::open(work.path(), c).unwrap();
        let after = check_intact(work.path(), MAX);
        // Recovery never drops a valid record (it only cuts a bad tail of the last segment).
        assert_eq!(after, before);
        assert_eq!(rep.records_ok as usize, after.len());
        lost_total += 80 - after.len();
        let a = st.append(b"after recovery").unwrap();
        assert!(a.seq > *after.last().unwrap_or(&0));
        drop(st);
        for p in common::segs(work.path()) {
            std::fs::remove_file(p).unwrap();
        }
    }
    println!("bit flips: {trials} trials, {lost_total} records lost to flips (detected, skipped), {:?}", t0.elapsed());
}

/// Child mode of `sigkill_loop`: append forever with fsync per record, print each committed seq after fsync.
#[test]
fn stress_child() {
    let Ok(dir) = std::env::var("RTVLA_STRESS_DIR") else { return };
    use std::io::Write;
    let c = StoreConfig { budget_bytes: 64 << 20, segment_bytes: 128 << 10, fsync: FsyncPolicy::EveryRecord };
    let (mut s, _) = SegmentStore::open(&dir, c).unwrap();
    let out = std::io::stdout();
    loop {
        let seq = s.next_seq();
        let a = s.append(&payload_for(seq, 4000)).unwrap();
        assert!(a.durable && a.seq == seq);
        let mut o = out.lock();
        writeln!(o, "COMMITTED {seq}").unwrap();
        o.flush().unwrap();
    }
}

#[test]
fn sigkill_loop() {
    let cycles: usize = std::env::var("RTVLA_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let dir = tmp();
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5EED_0000_0000_0001 ^ std::process::id() as u64);
    let t0 = Instant::now();
    let (mut committed_total, mut truncated_total, mut torn_cycles) = (0u64, 0u64, 0);
    for cycle in 0..cycles {
        let mut child = Command::new(&exe)
            .args(["--exact", "stress_child", "--nocapture", "--test-threads=1"])
            .env("RTVLA_STRESS_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut seqs = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(s) = line.strip_prefix("COMMITTED ").and_then(|s| s.parse::<u64>().ok()) {
                    seqs.push(s);
                }
            }
            seqs
        });
        std::thread::sleep(Duration::from_micros(2_000 + rng.below(60_000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let printed = reader.join().unwrap();
        committed_total += printed.len() as u64;

        let (mut st, rep) =
            SegmentStore::open(dir.path(), StoreConfig { budget_bytes: 64 << 20, ..cfg(FsyncPolicy::EveryRecord) })
                .unwrap_or_else(|e| panic!("cycle {cycle}: reopen failed: {e}"));
        assert!(rep.corrupt.is_empty(), "cycle {cycle}: {:?}", rep.corrupt);
        truncated_total += rep.bytes_truncated;
        if rep.bytes_truncated > 0 {
            torn_cycles += 1;
        }
        let present = check_intact(dir.path(), 4000);
        for s in &printed {
            assert!(present.binary_search(s).is_ok(), "cycle {cycle}: committed seq {s} lost");
        }
        drop(st.sync());
    }
    let (recs, bad) = read_all(dir.path()).unwrap();
    assert!(bad.is_empty());
    // A loop in which nothing was committed checked nothing.
    assert!(committed_total >= cycles as u64, "only {committed_total} records committed in {cycles} cycles");
    println!(
        "sigkill: {cycles} cycles in {:.1?}, {committed_total} committed records all present, {} records in store, \
         {torn_cycles} cycles had a torn tail ({truncated_total} bytes truncated), {} segments",
        t0.elapsed(),
        recs.len(),
        segment::list_segments(dir.path()).unwrap().len()
    );
}

#[test]
fn verify_names_segment_and_offset() {
    use rtvla::events::snapshot::Snapshot;
    let d = tmp();
    let (mut s, _) = SegmentStore::open(d.path(), cfg(FsyncPolicy::Never)).unwrap();
    let mut offsets = vec![];
    for id in 1..=3u64 {
        let mut snap = Snapshot::new_boxed();
        snap.event_id = id;
        offsets.push(s.total_bytes());
        s.append(&snap.encode().unwrap()).unwrap();
    }
    drop(s);
    let seg = common::segs(d.path()).remove(0);
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let mut b = std::fs::read(&seg).unwrap();
    // A torn tail alone: not corruption.
    b.extend_from_slice(b"RTVR\x10\x00");
    std::fs::write(&seg, &b).unwrap();
    let rep = rtvla::store::verify(d.path()).unwrap();
    assert!(rep.is_ok(), "{}", rep.render());
    assert_eq!(rep.torn_tail.as_ref().map(|t| t.offset), Some(offsets[2] + (b.len() as u64 - 6 - offsets[2])));
    // Flip a payload byte of the middle record: verify fails and names the file and offset.
    b[offsets[1] as usize + 25] ^= 0x40;
    std::fs::write(&seg, &b).unwrap();
    let rep = rtvla::store::verify(d.path()).unwrap();
    assert!(!rep.is_ok());
    assert_eq!(rep.records_ok, 2);
    assert_eq!((rep.corrupt[0].segment.as_str(), rep.corrupt[0].offset), (name.as_str(), offsets[1]));
    let text = rep.render();
    println!("{text}");
    assert!(text.contains(&format!("CORRUPT {name} @ byte {}", offsets[1])));
    let ids: Vec<u64> = rtvla::store::ls(d.path()).unwrap().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![1, 3]);
}
