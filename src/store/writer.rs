//! The writer thread: takes finished snapshot slots from the loop (rtrb), JPEG-encodes the thumbnails, postcard-encodes
//! into a fixed 64 KiB buffer, appends to the [`SegmentStore`], and returns the slot through the free list.
//! Store errors (disk full, read-only, missing directory) are counted; the writer keeps going and retries.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::segment::{RecoveryReport, SegmentStore, StoreConfig};
use crate::events::snapshot::{JPEG_BUDGET_BYTES, MAX_SNAPSHOT_BYTES};
use crate::events::{SlotSink, SnapshotSlot};

/// Tracing target of the writer's one line per appended record, logged once `append` returned: `store append
/// seq=N event=E durable=true|false` (`durable`: write and fsync returned, the record is committed). Off by
/// default; `rtvla --log info,rtvla::store::commit=debug drive ...` turns it on. The power-cut test
/// (`cargo xtask powercut`) reads it from the VM's console to know which records were committed before the cut.
pub const COMMIT_LOG_TARGET: &str = "rtvla::store::commit";

/// Writer counters (shared with the loop / report through `Arc`).
#[derive(Debug, Default)]
pub struct WriterCounters {
    /// Snapshots appended (committed when the policy is `every_record`).
    pub written: AtomicU64,
    /// Payload bytes appended.
    pub bytes: AtomicU64,
    /// Snapshots dropped because the store failed (open, write, fsync).
    pub dropped_store: AtomicU64,
    /// Snapshots dropped because they did not encode within 64 KiB.
    pub dropped_encode: AtomicU64,
    /// Thumbnails left out because the JPEG stayed over the budget (`JPEG_BUDGET_BYTES`, 3.5 KiB).
    pub thumbs_dropped: AtomicU64,
    /// Segments evicted for the byte budget.
    pub evicted_segments: AtomicU64,
    /// Store sequence number of the last written record.
    pub last_seq: AtomicU64,
    last_error: Mutex<Option<String>>,
    recovery: Mutex<Option<RecoveryReport>>,
}

/// A plain copy of the counters.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct WriterStats {
    /// Snapshots appended.
    pub written: u64,
    /// Payload bytes appended.
    pub bytes: u64,
    /// Dropped on store errors.
    pub dropped_store: u64,
    /// Dropped on encode errors.
    pub dropped_encode: u64,
    /// Thumbnails left out.
    pub thumbs_dropped: u64,
    /// Segments evicted.
    pub evicted_segments: u64,
    /// Last store seq written.
    pub last_seq: u64,
    /// Last store error, one line.
    pub last_error: Option<String>,
    /// What boot recovery found when the store was opened.
    pub recovery: Option<RecoveryReport>,
}

impl WriterCounters {
    /// Snapshot of the counters.
    pub fn get(&self) -> WriterStats {
        WriterStats {
            written: self.written.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped_store: self.dropped_store.load(Ordering::Relaxed),
            dropped_encode: self.dropped_encode.load(Ordering::Relaxed),
            thumbs_dropped: self.thumbs_dropped.load(Ordering::Relaxed),
            evicted_segments: self.evicted_segments.load(Ordering::Relaxed),
            last_seq: self.last_seq.load(Ordering::Relaxed),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
            recovery: self.recovery.lock().map(|e| e.clone()).unwrap_or(None),
        }
    }

    fn error(&self, e: impl std::fmt::Display) {
        if let Ok(mut g) = self.last_error.lock() {
            *g = Some(e.to_string());
        }
    }
}

/// Writer thread settings.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// Store directory.
    pub dir: PathBuf,
    /// Store limits and fsync policy.
    pub store: StoreConfig,
    /// Wait between attempts to open a store that failed to open.
    pub retry_open: Duration,
    /// Sleep when the queue is empty.
    pub idle_sleep: Duration,
    /// JPEG quality of the first attempt (lowered until the thumbnail fits `JPEG_BUDGET_BYTES`).
    pub jpeg_quality: u8,
}

impl WriterConfig {
    /// Defaults for a directory and store config.
    pub fn new(dir: impl Into<PathBuf>, store: StoreConfig) -> Self {
        WriterConfig {
            dir: dir.into(),
            store,
            retry_open: Duration::from_secs(1),
            idle_sleep: Duration::from_millis(2),
            jpeg_quality: 75,
        }
    }
}

/// A running writer thread.
pub struct WriterHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<WriterCounters>,
}

impl WriterHandle {
    /// Live counters.
    pub fn counters(&self) -> Arc<WriterCounters> {
        self.counters.clone()
    }

    /// Current counters.
    pub fn stats(&self) -> WriterStats {
        self.counters.get()
    }

    /// Stop: drain everything already queued, fsync, join. Returns the final counters.
    pub fn stop(mut self) -> WriterStats {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                self.counters.error("writer thread panicked");
            }
        }
        self.counters.get()
    }
}

impl Drop for WriterHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the writer thread. The store is opened (with boot recovery) on the thread; if that fails the writer keeps
/// draining the queue (counting drops) and retries every `retry_open`.
pub fn spawn_writer(cfg: WriterConfig, sink: SlotSink) -> std::io::Result<WriterHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(WriterCounters::default());
    let (s, c) = (stop.clone(), counters.clone());
    let thread = std::thread::Builder::new().name("rtvla-writer".into()).spawn(move || {
        crate::runtime::os::helper_thread_below_loop();
        writer_main(cfg, sink, s, c)
    })?;
    Ok(WriterHandle { stop, thread: Some(thread), counters })
}

/// Encoder state reused across snapshots.
pub struct SlotEncoder {
    buf: Vec<u8>,
    jpeg: Vec<u8>,
    quality: u8,
}

impl SlotEncoder {
    /// New encoder with its 64 KiB buffer.
    pub fn new(quality: u8) -> Self {
        SlotEncoder { buf: vec![0; MAX_SNAPSHOT_BYTES], jpeg: Vec::with_capacity(64 * 1024), quality }
    }

    /// JPEG-encode the slot's raw thumbnails into its keyframes and postcard-encode the snapshot. Returns the
    /// encoded bytes and how many thumbnails were left out (too big).
    pub fn encode(&mut self, slot: &mut SnapshotSlot) -> anyhow::Result<(&[u8], u32)> {
        let mut dropped = 0;
        for (k, kf) in slot.snap.keyframes.iter_mut().enumerate() {
            kf.jpeg.clear();
            if kf.thumb_w == 0 || kf.thumb_h == 0 {
                continue;
            }
            let raw = &slot.thumbs[k][..kf.thumb_w as usize * kf.thumb_h as usize * 3];
            let mut ok = false;
            for q in [self.quality, 60, 45, 30, 15] {
                self.jpeg.clear();
                let enc = jpeg_encoder::Encoder::new(&mut self.jpeg, q);
                if enc.encode(raw, kf.thumb_w, kf.thumb_h, jpeg_encoder::ColorType::Rgb).is_ok()
                    && self.jpeg.len() <= JPEG_BUDGET_BYTES
                {
                    ok = kf.jpeg.extend_from_slice(&self.jpeg).is_ok();
                    break;
                }
            }
            if !ok {
                kf.thumb_w = 0;
                kf.thumb_h = 0;
                dropped += 1;
            }
        }
        let n = slot.snap.encode_into(&mut self.buf)?.len();
        Ok((&self.buf[..n], dropped))
    }
}

fn writer_main(cfg: WriterConfig, mut sink: SlotSink, stop: Arc<AtomicBool>, c: Arc<WriterCounters>) {
    let mut enc = SlotEncoder::new(cfg.jpeg_quality);
    let mut store: Option<SegmentStore> = None;
    let mut last_open_try: Option<Instant> = None;
    loop {
        if store.is_none() && last_open_try.is_none_or(|t| t.elapsed() >= cfg.retry_open) {
            last_open_try = Some(Instant::now());
            match SegmentStore::open(&cfg.dir, cfg.store) {
                Ok((s, report)) => {
                    if let Ok(mut g) = c.recovery.lock() {
                        *g = Some(report);
                    }
                    store = Some(s);
                }
                Err(e) => c.error(e),
            }
        }
        let Ok(mut slot) = sink.full.pop() else {
            if stop.load(Ordering::Acquire) {
                break;
            }
            if let Some(s) = store.as_mut() {
                if let Err(e) = s.sync_if_due() {
                    c.error(e);
                }
            }
            std::thread::sleep(cfg.idle_sleep);
            continue;
        };
        match enc.encode(&mut slot) {
            Ok((bytes, thumbs_dropped)) => {
                c.thumbs_dropped.fetch_add(thumbs_dropped as u64, Ordering::Relaxed);
                match store.as_mut() {
                    None => {
                        c.dropped_store.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(s) => match s.append_event(bytes, slot.snap.event_id) {
                        Ok(a) => {
                            // After write (and fsync, when `durable`) returned: a power-cut test reads these.
                            tracing::debug!(
                                target: COMMIT_LOG_TARGET,
                                seq = a.seq,
                                event = slot.snap.event_id,
                                durable = a.durable,
                                "store append"
                            );
                            c.written.fetch_add(1, Ordering::Relaxed);
                            c.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                            c.evicted_segments.fetch_add(a.evicted as u64, Ordering::Relaxed);
                            c.last_seq.store(a.seq, Ordering::Relaxed);
                        }
                        Err(e) => {
                            c.dropped_store.fetch_add(1, Ordering::Relaxed);
                            c.error(e);
                        }
                    },
                }
            }
            Err(e) => {
                c.dropped_encode.fetch_add(1, Ordering::Relaxed);
                c.error(e);
            }
        }
        slot.snap.clear();
        // The free list has room for every slot, so this cannot fail; if it ever did the slot is simply freed here.
        let _ = sink.free.push(slot);
    }
    if let Some(s) = store.as_mut() {
        if let Err(e) = s.sync() {
            c.error(e);
        }
    }
}
