//! Disk full, read-only directory, missing directory: a clear error or a counted drop, never a panic, and the
//! writer keeps going. Disk-full and read-only use a small tmpfs, which needs root (`mount`): those tests are
//! `#[ignore]`d with that reason, `cargo xtask ci` (root) runs them with `--ignored`, and one that cannot mount
//! fails rather than passing unchecked.

mod store_common;
use store_common as common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{payload_for, tmp};
use rtvla::events::{EventRecorder, RecorderConfig, TickTelemetry};
use rtvla::store::segment::{read_all, FsyncPolicy, SegmentStore, StoreConfig, StoreError, MAX_RECORD};
use rtvla::store::{spawn_writer, verify, WriterConfig};
use rtvla::types::Command as Cmd;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, opts: &str) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(Mount(dir.to_path_buf()))
    } else {
        Err(format!("mount -t tmpfs not permitted: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn small() -> StoreConfig {
    let seg = (16 + MAX_RECORD) as u64;
    StoreConfig { budget_bytes: 16 * seg, segment_bytes: seg, fsync: FsyncPolicy::EveryRecord }
}

#[test]
#[ignore = "needs root to mount a tmpfs; `cargo xtask ci` (root) runs it with --ignored"]
fn disk_full_is_counted_and_recovers_by_eviction() {
    let base = tmp();
    let m = match mount_tmpfs(base.path(), "size=256k") {
        Ok(m) => m,
        Err(why) => {
            panic!("the disk-full test needs a tmpfs (root): {why}");
        }
    };
    // Phase 1: one big segment (1 MiB > fs): nothing to evict, ENOSPC is returned.
    let one = StoreConfig { budget_bytes: 1 << 20, segment_bytes: 1 << 20, fsync: FsyncPolicy::EveryRecord };
    let (mut s, _) = SegmentStore::open(base.path(), one).unwrap();
    let mut full1 = 0;
    for seq in 0..40u64 {
        match s.append(&payload_for(seq + 1000, 30_000)) {
            Ok(_) => {}
            Err(StoreError::NoSpace { .. }) => full1 += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(full1 > 0, "256 KiB must fill");
    drop(s);
    let (recs, bad) = read_all(base.path()).unwrap();
    assert!(bad.is_empty(), "a failed write must leave no partial record: {bad:?}");
    println!("disk full, one segment: {} records kept, {full1} ENOSPC errors returned", recs.len());
    for p in common::segs(base.path()) {
        std::fs::remove_file(p).unwrap();
    }
    // Phase 2: small segments, budget (1 MiB) above the fs size: ENOSPC evicts the oldest segment and retries.
    let (mut s, _) = SegmentStore::open(base.path(), small()).unwrap();
    let (mut ok, mut full, mut evicted) = (0, 0, 0);
    let mut last_ok = 0;
    for seq in 0..200u64 {
        match s.append(&payload_for(seq + 1000, 30_000)) {
            Ok(a) => {
                ok += 1;
                last_ok = a.seq;
                evicted += a.evicted;
            }
            Err(StoreError::NoSpace { .. }) => full += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    drop(s);
    // The store stays consistent: verify passes, nothing corrupt is returned, appends continued after ENOSPC
    // (the oldest segment is evicted and the write retried).
    let rep = verify(base.path()).unwrap();
    assert!(rep.corrupt.is_empty() || rep.corrupt.iter().all(|c| c.reason == "record is not a valid snapshot"));
    let (recs, bad) = read_all(base.path()).unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(recs.last().map(|r| r.seq), Some(last_ok));
    println!(
        "disk full (256 KiB tmpfs), small segments: {ok} appends ok, {full} ENOSPC errors, {evicted} segments \
         evicted on ENOSPC, {} records kept",
        recs.len()
    );
    assert!(evicted > 0 && ok > 100, "eviction on ENOSPC keeps the store writable");
    drop(m);
}

#[test]
#[ignore = "needs root to mount a tmpfs; `cargo xtask ci` (root) runs it with --ignored"]
fn writer_thread_survives_full_and_read_only_store() {
    let base = tmp();
    let m = match mount_tmpfs(base.path(), "size=128k") {
        Ok(m) => m,
        Err(why) => {
            panic!("the read-only/full writer test needs a tmpfs (root): {why}");
        }
    };
    // 128 KiB filesystem, budget far larger: ENOSPC is hit for real.
    let store = StoreConfig { budget_bytes: 1 << 30, segment_bytes: 1 << 20, fsync: FsyncPolicy::EveryRecord };
    let (mut rec, sink) = EventRecorder::new(RecorderConfig { slots: 4, post_ticks: 2, ..Default::default() }).unwrap();
    let mut cfg = WriterConfig::new(base.path(), store);
    cfg.retry_open = Duration::from_millis(20);
    let w = spawn_writer(cfg, sink).unwrap();
    let ext = rec.external_trigger();
    let feats = vec![0.25f32; 2048];
    let frame: Vec<u8> = (0..320 * 160 * 3).map(|i| (i * 7 % 255) as u8).collect();
    let mut tick = 0u64;
    let mut run = |rec: &mut EventRecorder, n: u64| {
        for _ in 0..n {
            if tick.is_multiple_of(150) {
                ext.request();
            }
            let t = TickTelemetry { time_us: tick * 50_000, tick, command: Cmd::default(), ..Default::default() };
            rec.on_tick(&t, Some(&feats), Some((&frame, 320, 160)));
            tick += 1;
            if tick.is_multiple_of(20) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    run(&mut rec, 3000);
    std::thread::sleep(Duration::from_millis(100));
    let s1 = w.stats();
    println!("full: {s1:?}");
    assert!(s1.written > 0);
    assert!(s1.dropped_store > 0, "128 KiB must fill up");
    assert!(s1.last_error.as_deref().unwrap_or("").contains("no space"));
    // Space comes back (grow the tmpfs): the writer resumes on its own.
    assert!(Command::new("mount").args(["-o", "remount,size=8m"]).arg(base.path()).status().unwrap().success());
    run(&mut rec, 1500);
    let s2 = w.stop();
    println!("after growing the fs: {s2:?}");
    assert!(s2.written > s1.written, "writer resumed");
    let st = rec.stats();
    assert_eq!(st.handed_off, s2.written + s2.dropped_store + s2.dropped_encode);
    assert!(verify(base.path()).unwrap().is_ok());
    assert_eq!(rtvla::store::ls(base.path()).unwrap().len() as u64, s2.written);
    drop(m);
}

#[test]
#[ignore = "needs root to mount a tmpfs; `cargo xtask ci` (root) runs it with --ignored"]
fn read_only_directory_is_a_clear_error() {
    let base = tmp();
    {
        let (mut s, _) = SegmentStore::open(base.path(), small()).unwrap();
        s.append(b"one").unwrap();
    }
    let m = match Command::new("mount").args(["--bind", "-o", "ro"]).arg(base.path()).arg(base.path()).output() {
        Ok(o) if o.status.success() => Mount(base.path().to_path_buf()),
        Ok(o) => {
            panic!("read-only bind mount failed (root needed): {}", String::from_utf8_lossy(&o.stderr).trim());
        }
        Err(e) => {
            panic!("cannot run mount: {e}");
        }
    };
    // Some kernels ignore `ro` on the first bind: remount to be sure.
    let _ = Command::new("mount").args(["-o", "remount,bind,ro"]).arg(base.path()).status();
    match SegmentStore::open(base.path(), small()) {
        Err(e @ StoreError::ReadOnly { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("read-only"), "{msg}");
            println!("read-only: {msg}");
        }
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("opened a read-only store for writing"),
    }
    // A writer on the read-only store counts drops, retries, and resumes once the directory is writable.
    let (mut rec, sink) = EventRecorder::new(RecorderConfig { post_ticks: 1, ..Default::default() }).unwrap();
    let mut wc = WriterConfig::new(base.path(), small());
    wc.retry_open = Duration::from_millis(10);
    let w = spawn_writer(wc, sink).unwrap();
    let ext = rec.external_trigger();
    let mut tick = 0u64;
    let mut run = |rec: &mut EventRecorder| {
        for _ in 0..1000 {
            if tick.is_multiple_of(110) {
                ext.request();
            }
            rec.on_tick(&TickTelemetry { time_us: tick * 50_000, tick, ..Default::default() }, None, None);
            tick += 1;
            if tick.is_multiple_of(50) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    run(&mut rec);
    let s1 = w.stats();
    assert_eq!(s1.written, 0);
    assert!(s1.dropped_store > 0);
    assert!(s1.last_error.as_deref().unwrap_or("").contains("read-only"), "{s1:?}");
    assert!(Command::new("mount").args(["-o", "remount,bind,rw"]).arg(base.path()).status().unwrap().success());
    run(&mut rec);
    let s2 = w.stop();
    println!("read-only writer: before {s1:?}\nafter rw {s2:?}");
    assert!(s2.written > 0, "writer resumed after the directory became writable");
    assert_eq!(rtvla::store::ls(base.path()).unwrap().len() as u64, s2.written);
    // Readers work on a read-only store too.
    assert_eq!(read_all(base.path()).unwrap().0.len() as u64, 1 + s2.written);
    drop(m);
}

#[test]
fn missing_directory() {
    // A directory that cannot be created: a clear error, no panic.
    let e = SegmentStore::open("/proc/rtvla-no-such/store", small()).err().expect("must fail");
    println!("missing: {e}");
    assert!(e.to_string().contains("/proc/rtvla-no-such/store"));
    // ls / verify on a missing directory: bad input (exit code 2).
    let err = rtvla::store::ls(Path::new("/nonexistent/rtvla-store")).unwrap_err();
    assert_eq!(rtvla::error::exit_code(&err), 2);
    assert!(err.to_string().contains("does not exist"));
    let err = verify(Path::new("/nonexistent/rtvla-store")).unwrap_err();
    assert_eq!(rtvla::error::exit_code(&err), 2);
    // A writer pointed at it keeps draining the queue and counts drops.
    let (mut rec, sink) = EventRecorder::new(RecorderConfig { post_ticks: 1, ..Default::default() }).unwrap();
    let w = spawn_writer(WriterConfig::new("/proc/rtvla-no-such/store", small()), sink).unwrap();
    let ext = rec.external_trigger();
    for tick in 0..2000u64 {
        if tick % 110 == 0 {
            ext.request();
        }
        rec.on_tick(&TickTelemetry { time_us: tick * 50_000, tick, ..Default::default() }, None, None);
        if tick % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    std::thread::sleep(Duration::from_millis(50));
    let s = w.stop();
    assert_eq!(s.written, 0);
    assert!(s.dropped_store > 0);
    assert_eq!(rec.stats().handed_off, s.dropped_store);
    println!("missing dir writer: {s:?}, recorder {:?}", rec.stats());
    // A store whose directory is removed while open: the next segment cannot be created → counted error.
    let d = tmp();
    let sub = d.path().join("s");
    let (mut st, _) = SegmentStore::open(&sub, small()).unwrap();
    st.append(b"x").unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    let mut errs = 0;
    for _ in 0..10 {
        if st.append(&vec![1u8; 60_000]).is_err() {
            errs += 1;
        }
    }
    assert!(errs > 0);
}
