//! Events: triggers, the telemetry ring (pre-window), post-window collection and the hand-off of finished snapshots
//! to the writer thread. Everything on the loop side runs without heap allocation after construction.
//!
//! ```text
//! loop thread: recorder.on_tick(&telemetry, features, frame)
//!     ring (pre-window) ─► trigger ─► slot from free list ─► post-window + keyframes ─► full queue (rtrb)
//! writer thread (store::writer): full queue ─► JPEG + postcard ─► SegmentStore::append ─► free list (rtrb)
//! ```

pub mod snapshot;
pub mod trigger;

use std::time::{SystemTime, UNIX_EPOCH};

pub use snapshot::{Keyframe, Snapshot, TickTelemetry, TriggerKind};
pub use trigger::{ExternalTrigger, Fired, TriggerConfig, TriggerEngine};

use snapshot::{MAX_FEATURES, MAX_KEYFRAMES, MAX_POST_TICKS, MAX_PRE_TICKS, MAX_SNAPSHOT_BYTES, THUMB_H};
use snapshot::{THUMB_RGB_BYTES, THUMB_W};

/// Recorder settings (pre/post windows in ticks: at 20 Hz, 2 s = 40, 1 s = 20).
#[derive(Clone, Copy, Debug)]
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
}

/// What `on_tick` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing.
    Idle,
    /// A trigger fired and a snapshot started.
    Started(TriggerKind),
    /// Collecting the post-window.
    Collecting,
    /// A snapshot was completed and handed to the writer.
    HandedOff,
    /// A snapshot was dropped (no slot or queue full); counted in [`RecorderStats`].
    Dropped,
}

/// Loop-side event recorder: owns the telemetry ring, the trigger engine and the in-flight slot.
pub struct EventRecorder {
    cfg: RecorderConfig,
    ring: heapless::Deque<TickTelemetry, MAX_PRE_TICKS>,
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
    /// Build the recorder and the writer's end. All slots are allocated here, once.
    pub fn new(cfg: RecorderConfig) -> anyhow::Result<(EventRecorder, SlotSink)> {
        cfg.validate()?;
        let (full_tx, full_rx) = rtrb::RingBuffer::new(cfg.slots);
        let (mut free_tx, free_rx) = rtrb::RingBuffer::new(cfg.slots);
        for _ in 0..cfg.slots {
            free_tx.push(SnapshotSlot::new_boxed()).map_err(|_| anyhow::anyhow!("free list full"))?;
        }
        let rec = EventRecorder {
            cfg,
            ring: heapless::Deque::new(),
            engine: TriggerEngine::new(cfg.triggers),
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
    /// `frame_rgb`: the camera frame `(rgb8 bytes, width, height)`. Only keyframe ticks copy them. Never blocks,
    /// never allocates.
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
        let fired = self.engine.evaluate(t);

        if let Some(slot) = self.active.as_mut() {
            if fired.is_some() {
                self.stats.absorbed += 1;
            }
            let _ = slot.snap.post.push(*t);
            self.since_trigger += 1;
            let post = self.cfg.post_ticks;
            if self.since_trigger == post / 2 || self.since_trigger == post {
                add_keyframe(slot, t, self.cfg.feature_shape, features, frame_rgb);
            }
            if self.since_trigger >= post {
                return self.hand_off();
            }
            return TickOutcome::Collecting;
        }

        let Some(fired) = fired else { return TickOutcome::Idle };
        self.stats.triggers += 1;
        let slot = match self.spare.take().or_else(|| self.free_rx.pop().ok()) {
            Some(s) => s,
            None => {
                self.stats.dropped_no_slot += 1;
                return TickOutcome::Dropped;
            }
        };
        let mut slot = slot;
        let s = &mut slot.snap;
        s.clear();
        s.event_id = self.next_event_id;
        s.model_id = self.cfg.model_id;
        self.next_event_id += 1;
        s.trigger = fired.kind;
        s.cause = fired.cause;
        s.wall_time_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        s.mono_time_us = t.time_us;
        s.trigger_tick = t.tick;
        for x in self.ring.iter() {
            let _ = s.pre.push(*x);
        }
        add_keyframe(&mut slot, t, self.cfg.feature_shape, features, frame_rgb);
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

/// Copy one keyframe into the slot: f32 → f16 features and a nearest-neighbour RGB thumbnail. No allocation.
fn add_keyframe(
    slot: &mut SnapshotSlot,
    t: &TickTelemetry,
    shape: [u16; 2],
    features: Option<&[f32]>,
    frame_rgb: Option<(&[u8], usize, usize)>,
) {
    let k = slot.snap.keyframes.len();
    if k >= MAX_KEYFRAMES || (features.is_none() && frame_rgb.is_none()) {
        return;
    }
    let mut kf = Keyframe {
        tick: t.tick,
        time_us: t.time_us,
        shape: [0, 0],
        features: heapless::Vec::new(),
        thumb_w: 0,
        thumb_h: 0,
        jpeg: heapless::Vec::new(),
    };
    if let Some(f) = features {
        let want = shape[0] as usize * shape[1] as usize;
        let n = f.len().min(MAX_FEATURES);
        kf.shape = if n == want { shape } else { [1, n as u16] };
        for x in &f[..n] {
            let _ = kf.features.extend_from_slice(&snapshot::f32_to_f16_bits(*x).to_le_bytes());
        }
    }
    if let Some((rgb, w, h)) = frame_rgb {
        if w > 0 && h > 0 && rgb.len() >= w * h * 3 {
            let dst = &mut slot.thumbs[k];
            for y in 0..THUMB_H {
                let sy = y * h / THUMB_H;
                for x in 0..THUMB_W {
                    let sx = x * w / THUMB_W;
                    let s = (sy * w + sx) * 3;
                    let d = (y * THUMB_W + x) * 3;
                    dst[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
                }
            }
            kf.thumb_w = THUMB_W as u16;
            kf.thumb_h = THUMB_H as u16;
        }
    }
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
        assert_eq!(slot.snap.keyframes.len(), 3);
        assert_eq!(slot.snap.keyframes[0].thumb_w, 0);
        assert_eq!(slot.snap.keyframes[1].thumb_w, THUMB_W as u16);
        assert_eq!(slot.snap.keyframes[1].shape, [32, 64]);
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
