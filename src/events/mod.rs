//! Events: triggers, the telemetry ring (pre-window), post-window collection and the hand-off of finished snapshots
//! to the writer thread. Everything on the loop side runs without heap allocation after construction.
//!
//! ```text
//! loop thread: recorder.on_tick(&telemetry, features, frame)
//!     rings (telemetry + features/raw thumbnails, pre-window) ─► trigger ─► slot from free list
//!         ─► lead-up keyframes from the ring ─► post-window + keyframes ─► full queue (rtrb)
//! writer thread (store::writer): full queue ─► JPEG + postcard ─► SegmentStore::append ─► free list (rtrb)
//! ```
//!
//! Keyframes: a report of "why did it crash" must show the lead-up, so the recorder keeps every tick's features
//! and a raw (not JPEG: encoding waits for the writer thread) thumbnail of the last `pre_ticks` ticks in a ring
//! allocated at start, and a snapshot takes keyframes at the start of the pre-window, half and a quarter of it
//! before the trigger (−1.95 s, −1 s, −0.5 s with 2 s at 20 Hz), the trigger tick, and half-way and at the end of
//! the post-window.
//!
//! Severity: while an event collects its post-window, a trigger of the same or a lesser kind is part of it
//! (counted as `absorbed`); a strictly more severe kind ([`TriggerKind::outranks`]) cuts the open event short —
//! it is handed to the writer at once, its cause marked — and starts its own event with a full pre-window, so a
//! collision right after a near miss is a collision event whose window is centred on the impact.

pub mod snapshot;
pub mod trigger;

use core::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

pub use snapshot::{Keyframe, Snapshot, TickTelemetry, TriggerKind};
pub use trigger::{ExternalTrigger, Fired, TriggerConfig, TriggerEngine};

pub use snapshot::RunInfo;
use snapshot::{MAX_FEATURES, MAX_KEYFRAMES, MAX_POST_TICKS, MAX_PRE_TICKS, MAX_SNAPSHOT_BYTES, THUMB_H};
use snapshot::{THUMB_RGB_BYTES, THUMB_W};

/// Recorder settings (pre/post windows in ticks: at 20 Hz, 2 s = 40, 1 s = 20).
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    /// Ticks kept before a trigger, the trigger tick included.
    pub pre_ticks: usize,
    /// Ticks collected after the trigger tick.
    pub post_ticks: usize,
    /// Preallocated snapshot slots (in flight + being written + free).
    pub slots: usize,
    /// Visual-feature tensor shape `[tokens, dims]`.
    pub feature_shape: [u16; 2],
    /// Trigger thresholds.
    pub triggers: TriggerConfig,
    /// Written into every snapshot: which driving graph made the features ([`Snapshot::model_id`]).
    pub model_id: [u8; snapshot::MODEL_ID_BYTES],
    /// Written into every snapshot: which run (id, board, model, scenario / seed), set once at start.
    pub run: RunInfo,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            pre_ticks: 40,
            post_ticks: 20,
            slots: 4,
            feature_shape: [32, 64],
            triggers: TriggerConfig::default(),
            model_id: [0; snapshot::MODEL_ID_BYTES],
            run: RunInfo::default(),
        }
    }
}

impl RecorderConfig {
    /// Windows for a loop rate: `pre_s`/`post_s` seconds at `hz`.
    pub fn for_rate(hz: f32, pre_s: f32, post_s: f32) -> Self {
        RecorderConfig {
            // At least the trigger tick itself before, one tick after: a slow loop (0.2 Hz in the QEMU board)
            // still gets a snapshot instead of an empty window.
            pre_ticks: ((pre_s * hz).round() as usize).max(1),
            post_ticks: ((post_s * hz).round() as usize).max(1),
            ..Default::default()
        }
    }

    /// Check the configuration against the fixed buffers at start-up, so nothing can outgrow them later.
    pub fn validate(&self) -> anyhow::Result<()> {
        let feats = self.feature_shape[0] as usize * self.feature_shape[1] as usize;
        if self.pre_ticks == 0 || self.pre_ticks > MAX_PRE_TICKS {
            return Err(crate::error::bad_input(format!(
                "pre-window {} ticks: must be 1..={MAX_PRE_TICKS}",
                self.pre_ticks
            )));
        }
        if self.post_ticks > MAX_POST_TICKS {
            return Err(crate::error::bad_input(format!(
                "post-window {} ticks: max {MAX_POST_TICKS}",
                self.post_ticks
            )));
        }
        if feats > MAX_FEATURES {
            return Err(crate::error::bad_input(format!(
                "feature shape {:?}: max {MAX_FEATURES} values",
                self.feature_shape
            )));
        }
        if self.slots < 2 {
            return Err(crate::error::bad_input("recorder needs at least 2 snapshot slots"));
        }
        let worst = Snapshot::worst_case_size(self.pre_ticks, self.post_ticks, MAX_KEYFRAMES, feats);
        if worst > MAX_SNAPSHOT_BYTES {
            return Err(crate::error::bad_input(format!(
                "snapshot windows {}+{} ticks with {MAX_KEYFRAMES} keyframes of {feats} features could reach {worst} \
                 bytes > {MAX_SNAPSHOT_BYTES}: shorten the windows",
                self.pre_ticks, self.post_ticks
            )));
        }
        Ok(())
    }
}

/// A preallocated snapshot plus the raw keyframe thumbnails (RGB, `THUMB_W × THUMB_H`); the writer thread turns
/// them into JPEG before encoding.
pub struct SnapshotSlot {
    /// The snapshot being filled (keyframe `jpeg` fields stay empty on the loop side).
    pub snap: Snapshot,
    /// Raw RGB thumbnails, one per keyframe.
    pub thumbs: [[u8; THUMB_RGB_BYTES]; MAX_KEYFRAMES],
}

impl SnapshotSlot {
    /// A boxed empty slot (~100 KiB).
    pub fn new_boxed() -> Box<SnapshotSlot> {
        let snap = *Snapshot::new_boxed();
        Box::new(SnapshotSlot { snap, thumbs: [[0; THUMB_RGB_BYTES]; MAX_KEYFRAMES] })
    }
}

/// The writer's end of the hand-off: finished snapshots in, empty slots back.
pub struct SlotSink {
    /// Finished snapshots from the loop.
    pub full: rtrb::Consumer<Box<SnapshotSlot>>,
    /// Empty slots back to the loop.
    pub free: rtrb::Producer<Box<SnapshotSlot>>,
}

/// Loop-side counters (plain integers: the loop owns them; copy them into the run report).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecorderStats {
    /// Triggers that started (or would have started) a snapshot.
    pub triggers: u64,
    /// Snapshots handed to the writer.
    pub handed_off: u64,
    /// Dropped: no free slot at trigger time.
    pub dropped_no_slot: u64,
    /// Dropped: the writer queue was full at hand-off.
    pub dropped_queue_full: u64,
    /// Triggers that fired while a snapshot was already being collected (part of that event).
    pub absorbed: u64,
    /// Open snapshots cut short by a more severe trigger (which then started its own).
    pub preempted: u64,
}

/// What `on_tick` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing.
    Idle,
    /// A trigger fired and a snapshot started (an open, less severe one was handed off first, if any).
    Started(TriggerKind),
    /// Collecting the post-window.
    Collecting,
    /// A snapshot was completed and handed to the writer.
    HandedOff,
    /// A snapshot was dropped (no slot or queue full); counted in [`RecorderStats`].
    Dropped,
}

/// One tick of the lead-up ring: the student's features (f16 bytes, as stored) and a raw RGB thumbnail.
struct Visual {
    tick: u64,
    time_us: u64,
    shape: [u16; 2],
    features: heapless::Vec<u8, { MAX_FEATURES * 2 }>,
    has_thumb: bool,
    thumb: [u8; THUMB_RGB_BYTES],
}

/// The last ticks' features and thumbnails, allocated once; `push` overwrites the oldest (no allocation).
struct VisualRing {
    items: Box<[Visual]>,
    next: usize,
    len: usize,
}

impl VisualRing {
    fn new(capacity: usize) -> VisualRing {
        let blank = || Visual {
            tick: 0,
            time_us: 0,
            shape: [0, 0],
            features: heapless::Vec::new(),
            has_thumb: false,
            thumb: [0; THUMB_RGB_BYTES],
        };
        let items: Vec<Visual> = (0..capacity.max(1)).map(|_| blank()).collect();
        VisualRing { items: items.into_boxed_slice(), next: 0, len: 0 }
    }

    /// Record this tick: f32 → f16 features and a nearest-neighbour thumbnail of the frame.
    fn push(
        &mut self,
        t: &TickTelemetry,
        shape: [u16; 2],
        features: Option<&[f32]>,
        frame: Option<(&[u8], usize, usize)>,
    ) {
        let cap = self.items.len();
        let v = &mut self.items[self.next];
        self.next = (self.next + 1) % cap;
        self.len = (self.len + 1).min(cap);
        v.tick = t.tick;
        v.time_us = t.time_us;
        v.shape = [0, 0];
        v.features.clear();
        if let Some(f) = features {
            let want = shape[0] as usize * shape[1] as usize;
            let n = f.len().min(MAX_FEATURES);
            v.shape = if n == want { shape } else { [1, n as u16] };
            for x in &f[..n] {
                let _ = v.features.extend_from_slice(&snapshot::f32_to_f16_bits(*x).to_le_bytes());
            }
        }
        v.has_thumb = match frame {
            Some((rgb, w, h)) if w > 0 && h > 0 && rgb.len() >= w * h * 3 => {
                downscale(rgb, w, h, &mut v.thumb);
                true
            }
            _ => false,
        };
    }

    /// The entry `back` ticks before the newest (0: the newest), if the ring holds it.
    fn back(&self, back: usize) -> Option<&Visual> {
        let cap = self.items.len();
        (back < self.len).then(|| &self.items[(self.next + cap - 1 - back) % cap])
    }
}

/// Nearest-neighbour RGB downscale of a `w × h` frame into a `THUMB_W × THUMB_H` thumbnail.
fn downscale(rgb: &[u8], w: usize, h: usize, dst: &mut [u8; THUMB_RGB_BYTES]) {
    for y in 0..THUMB_H {
        let sy = y * h / THUMB_H;
        for x in 0..THUMB_W {
            let s = (sy * w + x * w / THUMB_W) * 3;
            let d = (y * THUMB_W + x) * 3;
            dst[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
}

/// Loop-side event recorder: owns the telemetry and visual rings, the trigger engine and the in-flight slot.
pub struct EventRecorder {
    cfg: RecorderConfig,
    ring: heapless::Deque<TickTelemetry, MAX_PRE_TICKS>,
    visual: VisualRing,
    engine: TriggerEngine,
    active: Option<Box<SnapshotSlot>>,
    spare: Option<Box<SnapshotSlot>>,
    since_trigger: usize,
    next_event_id: u64,
    full_tx: rtrb::Producer<Box<SnapshotSlot>>,
    free_rx: rtrb::Consumer<Box<SnapshotSlot>>,
    stats: RecorderStats,
}

impl EventRecorder {
    /// Build the recorder and the writer's end. All slots and the visual ring are allocated here, once.
    pub fn new(cfg: RecorderConfig) -> anyhow::Result<(EventRecorder, SlotSink)> {
        cfg.validate()?;
        let (full_tx, full_rx) = rtrb::RingBuffer::new(cfg.slots);
        let (mut free_tx, free_rx) = rtrb::RingBuffer::new(cfg.slots);
        for _ in 0..cfg.slots {
            free_tx.push(SnapshotSlot::new_boxed()).map_err(|_| anyhow::anyhow!("free list full"))?;
        }
        let rec = EventRecorder {
            ring: heapless::Deque::new(),
            visual: VisualRing::new(cfg.pre_ticks),
            engine: TriggerEngine::new(cfg.triggers),
            cfg,
            active: None,
            spare: None,
            since_trigger: 0,
            next_event_id: 1,
            full_tx,
            free_rx,
            stats: RecorderStats::default(),
        };
        Ok((rec, SlotSink { full: full_rx, free: free_tx }))
    }

    /// Counters so far.
    pub fn stats(&self) -> RecorderStats {
        self.stats
    }

    /// Handle to request a snapshot from another thread or a signal handler.
    pub fn external_trigger(&self) -> ExternalTrigger {
        self.engine.external()
    }

    /// Settings.
    pub fn config(&self) -> &RecorderConfig {
        &self.cfg
    }

    /// Set the id the next event gets (e.g. continue after the store's last event).
    pub fn set_next_event_id(&mut self, id: u64) {
        self.next_event_id = id;
    }

    /// Call once per tick. `features`: the student's visual features (`tokens × dims` f32) when available;
    /// `frame_rgb`: the camera frame `(rgb8 bytes, width, height)`. Both go into the lead-up ring (f16 features, a
    /// raw thumbnail). Never blocks, never allocates.
    pub fn on_tick(
        &mut self,
        t: &TickTelemetry,
        features: Option<&[f32]>,
        frame_rgb: Option<(&[u8], usize, usize)>,
    ) -> TickOutcome {
        if self.ring.len() >= self.cfg.pre_ticks {
            self.ring.pop_front();
        }
        let _ = self.ring.push_back(*t);
        self.visual.push(t, self.cfg.feature_shape, features, frame_rgb);
        let fired = self.engine.evaluate(t);

        if let Some(open) = self.active.as_ref().map(|s| s.snap.trigger) {
            match &fired {
                Some(f) if f.kind.outranks(open) => self.preempt(f.kind),
                _ => {
                    self.stats.absorbed += u64::from(fired.is_some());
                    return self.collect(t);
                }
            }
        }
        let Some(fired) = fired else { return TickOutcome::Idle };
        self.start(fired, t)
    }

    /// A more severe trigger fired while an event was open: mark its cause and hand it off now (post-window cut
    /// short), so the severe kind gets its own event and slot.
    fn preempt(&mut self, by: TriggerKind) {
        if let Some(slot) = self.active.as_mut() {
            let _ = write!(slot.snap.cause, "; cut by {}", by.name());
        }
        self.stats.preempted += 1;
        let _ = self.hand_off();
    }

    /// One tick of the open event's post-window; keyframes half-way and at its end; hand-off when complete.
    fn collect(&mut self, t: &TickTelemetry) -> TickOutcome {
        let Some(slot) = self.active.as_mut() else { return TickOutcome::Idle };
        let _ = slot.snap.post.push(*t);
        self.since_trigger += 1;
        let post = self.cfg.post_ticks;
        if self.since_trigger == post / 2 || self.since_trigger == post {
            if let Some(v) = self.visual.back(0) {
                add_keyframe(slot, v);
            }
        }
        if self.since_trigger >= post {
            return self.hand_off();
        }
        TickOutcome::Collecting
    }

    /// Open a snapshot for `fired`: header, run, the pre-window, the lead-up and trigger keyframes.
    fn start(&mut self, fired: Fired, t: &TickTelemetry) -> TickOutcome {
        self.stats.triggers += 1;
        let Some(mut slot) = self.spare.take().or_else(|| self.free_rx.pop().ok()) else {
            self.stats.dropped_no_slot += 1;
            return TickOutcome::Dropped;
        };
        let s = &mut slot.snap;
        s.clear();
        s.event_id = self.next_event_id;
        s.model_id = self.cfg.model_id;
        s.run.clone_from(&self.cfg.run);
        self.next_event_id += 1;
        s.trigger = fired.kind;
        s.cause = fired.cause;
        s.wall_time_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        s.mono_time_us = t.time_us;
        s.trigger_tick = t.tick;
        for x in self.ring.iter() {
            let _ = s.pre.push(*x);
        }
        // Lead-up keyframes, oldest first: the pre-window's first tick, half and a quarter of it back, the trigger.
        let pre = self.cfg.pre_ticks;
        let newest_back = self.visual.len.min(pre).saturating_sub(1);
        let mut last = None;
        for back in [pre - 1, pre / 2, pre / 4, 0] {
            let back = back.min(newest_back);
            if last.is_some_and(|l| back >= l) {
                continue;
            }
            last = Some(back);
            if let Some(v) = self.visual.back(back) {
                add_keyframe(&mut slot, v);
            }
        }
        self.since_trigger = 0;
        self.active = Some(slot);
        if self.cfg.post_ticks == 0 {
            return self.hand_off();
        }
        TickOutcome::Started(fired.kind)
    }

    fn hand_off(&mut self) -> TickOutcome {
        let Some(slot) = self.active.take() else { return TickOutcome::Idle };
        match self.full_tx.push(slot) {
            Ok(()) => {
                self.stats.handed_off += 1;
                TickOutcome::HandedOff
            }
            Err(rtrb::PushError::Full(slot)) => {
                self.stats.dropped_queue_full += 1;
                self.spare = Some(slot);
                TickOutcome::Dropped
            }
        }
    }
}

/// Copy one ring entry into the slot as a keyframe: its f16 features and raw thumbnail (the writer thread makes
/// the JPEG). Entries with neither are skipped. No allocation.
fn add_keyframe(slot: &mut SnapshotSlot, v: &Visual) {
    let k = slot.snap.keyframes.len();
    if k >= MAX_KEYFRAMES || (v.features.is_empty() && !v.has_thumb) {
        return;
    }
    let (tw, th) = if v.has_thumb { (THUMB_W as u16, THUMB_H as u16) } else { (0, 0) };
    if v.has_thumb {
        slot.thumbs[k] = v.thumb;
    }
    let kf = Keyframe {
        tick: v.tick,
        time_us: v.time_us,
        shape: v.shape,
        features: v.features.clone(),
        thumb_w: tw,
        thumb_h: th,
        jpeg: heapless::Vec::new(),
    };
    let _ = slot.snap.keyframes.push(kf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    fn tick(i: u64, brake: f32) -> TickTelemetry {
        TickTelemetry {
            time_us: i * 50_000,
            tick: i,
            speed: 8.0,
            command: Command { brake, ..Default::default() },
            ..Default::default()
        }
    }

    #[test]
    fn windows_keyframes_and_drops() {
        let (mut rec, mut sink) = EventRecorder::new(RecorderConfig { slots: 2, ..Default::default() }).unwrap();
        let feats = vec![0.5f32; 2048];
        let frame = vec![200u8; 320 * 160 * 3];
        let mut i = 0;
        for _ in 0..50 {
            assert_eq!(rec.on_tick(&tick(i, 0.0), Some(&feats), Some((&frame, 320, 160))), TickOutcome::Idle);
            i += 1;
        }
        assert_eq!(rec.on_tick(&tick(i, 1.0), Some(&feats), None), TickOutcome::Started(TriggerKind::HardBrake));
        i += 1;
        for k in 1..=20 {
            let out = rec.on_tick(&tick(i, 1.0), Some(&feats), Some((&frame, 320, 160)));
            assert_eq!(out, if k == 20 { TickOutcome::HandedOff } else { TickOutcome::Collecting });
            i += 1;
        }
        let slot = sink.full.pop().unwrap();
        assert_eq!(slot.snap.pre.len(), 40);
        assert_eq!(slot.snap.pre.last().unwrap().tick, 50);
        assert_eq!(slot.snap.post.len(), 20);
        // Lead-up (−39, −20, −10 ticks), the trigger (no frame that tick), +10 and +20.
        let ticks: Vec<u64> = slot.snap.keyframes.iter().map(|k| k.tick).collect();
        assert_eq!(ticks, [11, 30, 40, 50, 60, 70]);
        assert_eq!(slot.snap.keyframes[3].thumb_w, 0);
        assert!(slot.snap.keyframes.iter().enumerate().all(|(k, kf)| k == 3 || kf.thumb_w == THUMB_W as u16));
        assert!(slot.snap.keyframes.iter().all(|kf| kf.shape == [32, 64]));
        assert_eq!(slot.thumbs[1][0], 200);
        assert_eq!(slot.snap.event_id, 1);
        // Writer never returns the slot: the second event uses the last free slot, the third is dropped.
        for _ in 0..2 {
            i += 200; // past the refractory period
            for _ in 0..=20 {
                rec.on_tick(&tick(i, 1.0), None, None);
                i += 1;
            }
        }
        let st = rec.stats();
        assert_eq!((st.triggers, st.handed_off, st.dropped_no_slot), (3, 2, 1));
        assert!(sink.full.pop().is_ok());
        assert!(sink.free.push(slot).is_ok());
    }

    /// A near miss opens an event; a collision 0.75 s later must not be absorbed into it: the near miss is handed
    /// off (cut short, cause marked) and the collision gets its own event, pre-window and lead-up keyframes
    /// covering the second before the impact.
    #[test]
    fn a_collision_cuts_an_open_near_miss_short_and_gets_its_own_event() {
        let run = RunInfo { run_id: RunInfo::bounded("20261130T045012Z-1a2b"), seed: Some(7), ..Default::default() };
        let cfg = RecorderConfig { run: run.clone(), ..Default::default() };
        let (mut rec, mut sink) = EventRecorder::new(cfg).unwrap();
        let feats = vec![0.25f32; 2048];
        let frame = vec![90u8; 64 * 32 * 3];
        for i in 0..80u64 {
            let mut t = tick(i, 0.0);
            if i >= 60 {
                t.ttc_s = 1.2 - (i - 60) as f32 * 0.07; // closing in from tick 60
            }
            if i == 75 {
                t.flags = snapshot::FLAG_COLLISION;
            }
            let out = rec.on_tick(&t, Some(&feats), Some((&frame, 64, 32)));
            match i {
                60 => assert_eq!(out, TickOutcome::Started(TriggerKind::NearMiss)),
                75 => assert_eq!(out, TickOutcome::Started(TriggerKind::Collision)),
                61..=74 | 76..=79 => assert_eq!(out, TickOutcome::Collecting, "tick {i}"),
                _ => assert_eq!(out, TickOutcome::Idle, "tick {i}"),
            }
        }
        let near = sink.full.pop().unwrap();
        assert_eq!(near.snap.trigger, TriggerKind::NearMiss);
        assert!(near.snap.cause.ends_with("; cut by collision"), "{}", near.snap.cause);
        assert_eq!(near.snap.post.len(), 14);
        let st = rec.stats();
        assert_eq!((st.triggers, st.preempted, st.handed_off), (2, 1, 1));
        for i in 80..96u64 {
            rec.on_tick(&tick(i, 0.0), Some(&feats), Some((&frame, 64, 32)));
        }
        let hit = sink.full.pop().unwrap();
        let s = &hit.snap;
        assert_eq!((s.trigger, s.trigger_tick, s.run.clone()), (TriggerKind::Collision, 75, run));
        assert_eq!((s.pre.first().unwrap().tick, s.post.last().unwrap().tick), (36, 95));
        let offsets: Vec<i64> = s.keyframes.iter().map(|k| k.tick as i64 - 75).collect();
        assert_eq!(offsets, [-39, -20, -10, 0, 10, 20]);
        assert!(s.keyframes.iter().all(|k| k.thumb_w > 0 && k.features.len() == 4096));
    }

    #[test]
    fn the_lead_up_shrinks_to_what_the_ring_holds() {
        let (mut rec, mut sink) = EventRecorder::new(RecorderConfig::default()).unwrap();
        let frame = vec![1u8; 32 * 16 * 3];
        for i in 0..5u64 {
            rec.on_tick(&tick(i, 0.0), None, Some((&frame, 32, 16)));
        }
        assert_eq!(rec.on_tick(&tick(5, 1.0), None, None), TickOutcome::Started(TriggerKind::HardBrake));
        for i in 6..26u64 {
            rec.on_tick(&tick(i, 1.0), None, None);
        }
        let slot = sink.full.pop().unwrap();
        // The ring holds ticks 0..=5: the lead-up offsets (−39, −20, −10) all clamp to its oldest, tick 0 (one
        // keyframe); ticks 5.. had neither frame nor features, so the trigger and post ticks make none.
        let ticks: Vec<u64> = slot.snap.keyframes.iter().map(|k| k.tick).collect();
        assert_eq!(ticks, [0]);
    }

    #[test]
    fn config_checked_at_start() {
        assert!(RecorderConfig::default().validate().is_ok());
        assert!(RecorderConfig { pre_ticks: 80, post_ticks: 40, ..Default::default() }.validate().is_err());
        assert!(RecorderConfig { pre_ticks: 0, ..Default::default() }.validate().is_err());
        let c = RecorderConfig::for_rate(20.0, 2.0, 1.0);
        assert_eq!((c.pre_ticks, c.post_ticks), (40, 20));
        // A loop slower than the windows still records the trigger tick and the one after.
        let c = RecorderConfig::for_rate(0.2, 2.0, 1.0);
        assert_eq!((c.pre_ticks, c.post_ticks), (1, 1));
        assert!(c.validate().is_ok());
    }
}
