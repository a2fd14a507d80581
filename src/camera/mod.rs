//! Frame sources: where the loop gets its freshest image. Capture runs on its own thread and hands frames over
//! through a triple buffer (freshest wins, never blocks the loop); the loop judges staleness by age.

pub mod pixel;
#[cfg(target_os = "linux")]
pub mod v4l2;

use std::time::Instant;

use crate::types::Waypoints;

/// One camera frame (packed RGB8) with its capture time.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Monotonic frame number from the source (0 = none yet).
    pub seq: u64,
    pub captured_at: Instant,
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    /// Simulator only: the privileged expert's targets for this frame (the `expert` policy drives with these).
    pub privileged: Option<Waypoints>,
}

impl Frame {
    /// A black frame of the given size, allocated once.
    pub fn blank(width: usize, height: usize) -> Frame {
        Frame { seq: 0, captured_at: Instant::now(), width, height, rgb: vec![0; width * height * 3], privileged: None }
    }
}

/// Counters every source keeps.
#[derive(Clone, Copy, Debug, Default)]
pub struct SourceStats {
    pub frames: u64,
    /// Frames the source skipped (driver sequence gaps, sim frames never read).
    pub dropped: u64,
    /// Times the device was lost and opened again.
    pub reconnects: u64,
    /// Buffers that did not convert (short buffer, bad JPEG).
    pub bad: u64,
}

/// A camera as the loop sees it.
pub trait FrameSource {
    /// The freshest frame, or `None` if there never was one. Never blocks longer than the source's sync budget.
    fn latest(&mut self) -> Option<&Frame>;
    fn stats(&self) -> SourceStats;
}
