//! Loop side of the wire's frames: a [`FrameSource`] over the receive thread's triple buffer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::camera::{Frame, FrameSource, SourceStats};

/// The freshest frame the rig sent. In lockstep it waits (bounded) for the frame that answers the last command,
/// like a camera triggered by the control tick; in real time it never waits.
pub struct NetCamera {
    shared: Arc<Shared>,
    frames: triple_buffer::Output<Frame>,
    lockstep: bool,
    sync_timeout: Duration,
    stats: SourceStats,
    last_seq: Option<u64>,
}

impl NetCamera {
    pub(crate) fn new(
        shared: Arc<Shared>,
        frames: triple_buffer::Output<Frame>,
        lockstep: bool,
        sync_timeout: Duration,
    ) -> NetCamera {
        NetCamera { shared, frames, lockstep, sync_timeout, stats: SourceStats::default(), last_seq: None }
    }

    fn any_frame(&self) -> bool {
        self.shared.counters.frames_delivered.load(Ordering::Acquire) > 0
    }
}

impl FrameSource for NetCamera {
    fn latest(&mut self) -> Option<&Frame> {
        let want = self.shared.commands_sent.load(Ordering::Acquire);
        let start = Instant::now();
        loop {
            self.frames.update();
            let have = self.any_frame() && self.frames.output_buffer().seq >= want;
            if have || !self.lockstep || start.elapsed() >= self.sync_timeout {
                break;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        if !self.any_frame() {
            return None;
        }
        let seq = self.frames.output_buffer().seq;
        self.shared.frame_in_use.store(seq, Ordering::Release);
        if self.last_seq != Some(seq) {
            if let Some(last) = self.last_seq.filter(|l| seq > l + 1) {
                self.stats.dropped += seq - last - 1;
            }
            self.stats.frames += 1;
            self.last_seq = Some(seq);
        }
        self.stats.bad = self.shared.counters.bad_frames.load(Ordering::Relaxed);
        Some(self.frames.output_buffer())
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}
