//! The receive thread: datagram → MAC → replay check → state / frame chunk → triple buffers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::{NetConfig, Shared};
use crate::camera::{pixel, Frame};
use crate::types::EgoState;
use crate::wire::frames::{FrameMeta, Reassembler};
use crate::wire::replay::{PeerTracker, Verdict};
use crate::wire::{self, Body, Role, WireError, MAX_DATAGRAM};

/// The rig's latest ego state as the receive thread accepted it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RigState {
    pub frame: u64,
    pub session: u64,
    pub ego: EgoState,
    pub done: bool,
    pub ttc_s: f32,
    pub collision: bool,
    pub infraction: bool,
    pub received_at: Instant,
}

/// Frames in flight at once while reassembling (a newer complete frame drops the older ones).
const SLOTS: usize = 3;
/// While the rig has not been heard from for this long, announce ourselves again.
const HELLO_EVERY_US: u64 = 250_000;

pub(crate) struct Receiver {
    shared: Arc<Shared>,
    frames: Option<(usize, usize, Reassembler)>,
    frame_in: triple_buffer::Input<Frame>,
    state_in: triple_buffer::Input<Option<RigState>>,
    tracker: PeerTracker,
    latest_state: Option<(u64, u64)>,
    last_hello_us: Option<u64>,
    pacing_warned: bool,
    lockstep: bool,
}

impl Receiver {
    pub fn new(
        cfg: &NetConfig,
        shared: Arc<Shared>,
        frame_in: triple_buffer::Input<Frame>,
        state_in: triple_buffer::Input<Option<RigState>>,
    ) -> Receiver {
        // Largest encoded frame: raw RGB of the board's size (YUYV and JPEG are smaller).
        let frames = cfg.frames.map(|(w, h)| (w, h, Reassembler::new(SLOTS, w * h * 3)));
        Receiver {
            shared,
            frames,
            frame_in,
            state_in,
            tracker: PeerTracker::default(),
            latest_state: None,
            last_hello_us: None,
            pacing_warned: false,
            lockstep: cfg.lockstep,
        }
    }

    pub fn run(mut self) {
        let mut rx = [0u8; MAX_DATAGRAM + 1];
        let mut tx = [0u8; MAX_DATAGRAM];
        while !self.shared.stop.load(Ordering::Relaxed) {
            self.maybe_hello(&mut tx);
            // Blocking with a short timeout (SO_RCVTIMEO), so `stop` is seen within one.
            let Ok(n) = self.shared.socket.recv(&mut rx) else { continue };
            self.shared.counters.datagrams.fetch_add(1, Ordering::Relaxed);
            self.handle(&rx[..n]);
        }
    }

    fn now_us(&self) -> u64 {
        self.shared.epoch.elapsed().as_micros() as u64
    }

    fn maybe_hello(&mut self, tx: &mut [u8; MAX_DATAGRAM]) {
        let now = self.now_us();
        let heard = self.shared.last_heard_us.load(Ordering::Relaxed);
        let quiet = heard == 0 || now.saturating_sub(heard) > HELLO_EVERY_US;
        if quiet && self.last_hello_us.is_none_or(|t| now.saturating_sub(t) >= HELLO_EVERY_US) {
            self.shared.send(Body::Hello { role: Role::Runtime }, tx);
            self.last_hello_us = Some(now);
        }
    }

    fn handle(&mut self, bytes: &[u8]) {
        let c = &self.shared.counters;
        let d = match wire::decode(bytes, self.shared.key.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                let counter = match e {
                    WireError::Auth => &c.auth_failed,
                    WireError::Version(_) => &c.version_mismatch,
                    WireError::UnexpectedTag => &c.unexpected_tag,
                    WireError::Decode | WireError::Encode => &c.decode_errors,
                };
                if counter.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!("wire: refused a datagram from the rig: {e}");
                }
                return;
            }
        };
        if matches!(d.body, Body::Command { .. } | Body::Hello { role: Role::Runtime }) {
            c.wrong_direction.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match self.tracker.check(d.session, d.seq) {
            Verdict::Replay => {
                c.replayed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Verdict::NewSession => {
                if c.rig_sessions.fetch_add(1, Ordering::Relaxed) > 0 {
                    tracing::info!("wire: the rig restarted (new session {:016x})", d.session);
                }
                self.latest_state = None;
            }
            Verdict::Accept => {}
        }
        self.shared.last_heard_us.store(self.now_us().max(1), Ordering::Relaxed);
        match d.body {
            Body::State { frame, ego, done, ttc_s, collision, infraction } => {
                self.on_state(RigState {
                    frame,
                    session: d.session,
                    ego,
                    done,
                    ttc_s,
                    collision,
                    infraction,
                    received_at: Instant::now(),
                });
            }
            Body::FrameChunk { frame, chunk, chunks, bytes, captured_us, pacing, format, width, height, data } => {
                let meta = FrameMeta { frame, chunks, bytes, captured_us, pacing, format, width, height };
                self.on_chunk(meta, chunk, data);
            }
            Body::Hello { .. } | Body::Command { .. } => {}
        }
    }

    /// Newest state wins within a session (a reordered older one is ignored); a new session starts over.
    fn on_state(&mut self, s: RigState) {
        if self.latest_state.is_some_and(|(sess, f)| sess == s.session && s.frame < f) {
            return;
        }
        self.latest_state = Some((s.session, s.frame));
        self.shared.counters.states.fetch_add(1, Ordering::Relaxed);
        self.state_in.write(Some(s));
    }

    fn on_chunk(&mut self, meta: FrameMeta, chunk: u16, data: &[u8]) {
        let c = &self.shared.counters;
        let Some((w, h, r)) = self.frames.as_mut() else {
            c.wrong_direction.fetch_add(1, Ordering::Relaxed); // frames to a board whose camera is not `net`
            return;
        };
        let (w, h) = (*w, *h);
        if let Some(a) = r.push(meta, chunk, data) {
            c.frames_completed.fetch_add(1, Ordering::Relaxed);
            if !self.pacing_warned && (a.meta.pacing == wire::Pacing::Lockstep) != self.lockstep {
                self.pacing_warned = true;
                tracing::warn!("wire: the rig paces {:?}, the board expects the other pacing", a.meta.pacing);
            }
            let out = self.frame_in.input_buffer_mut();
            let fits = a.meta.width as usize == w && a.meta.height as usize == h;
            if fits && pixel::to_rgb(a.meta.format.pixel_format(), a.data, w, h, &mut out.rgb).is_ok() {
                out.seq = a.meta.frame;
                out.captured_at = Instant::now();
                out.privileged = None;
                self.frame_in.publish();
                c.frames_delivered.fetch_add(1, Ordering::Release);
            } else {
                c.bad_frames.fetch_add(1, Ordering::Relaxed);
            }
        }
        let s = r.stats;
        store(&c.frames_incomplete, s.incomplete);
        store(&c.late_chunks, s.late_chunks);
        store(&c.duplicate_chunks, s.duplicate_chunks);
        store(&c.bad_chunks, s.bad_chunks);
    }
}

fn store(a: &AtomicU64, v: u64) {
    a.store(v, Ordering::Relaxed);
}
