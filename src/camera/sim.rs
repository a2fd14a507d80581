//! Camera side of the in-process simulator (see `vehicle::sim`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceStats};
use crate::vehicle::sim::Shared;

/// Reads the sim thread's frames. In lockstep it waits (bounded) for the frame that follows the last command, like
/// a camera triggered by the control tick.
pub struct SimCamera {
    frames: triple_buffer::Output<Frame>,
    shared: Arc<Shared>,
    sync_timeout: Duration,
    stats: SourceStats,
    last_seq: u64,
}

impl SimCamera {
    pub(crate) fn new(frames: triple_buffer::Output<Frame>, shared: Arc<Shared>, sync_timeout: Duration) -> Self {
        SimCamera { frames, shared, sync_timeout, stats: SourceStats::default(), last_seq: u64::MAX }
    }
}

impl FrameSource for SimCamera {
    fn latest(&mut self) -> Option<&Frame> {
        let want = self.shared.commands_sent.load(Ordering::Acquire);
        let start = Instant::now();
        loop {
            self.frames.update();
            if self.frames.output_buffer().seq >= want || start.elapsed() >= self.sync_timeout {
                break;
            }
            std::thread::yield_now();
        }
        let seq = self.frames.output_buffer().seq;
        if seq != self.last_seq {
            if self.last_seq != u64::MAX && seq > self.last_seq + 1 {
                self.stats.dropped += seq - self.last_seq - 1;
            }
            self.stats.frames += 1;
            self.last_seq = seq;
        }
        Some(self.frames.output_buffer())
    }

    fn stats(&self) -> SourceStats {
        self.stats
    }
}
