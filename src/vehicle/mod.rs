//! Vehicle links: commands out, ego state in. The link trait lives here; its implementations live with what they
//! talk to: `net` (a rig or vehicle over the wire protocol) and, plugged in from outside the runtime, the
//! in-process simulator (`sim::harness`).

use std::time::Instant;

use crate::types::{Command, EgoState};

/// Ego state as last received, with its arrival time (the supervisor checks its age).
#[derive(Clone, Copy, Debug)]
pub struct VehicleState {
    pub ego: EgoState,
    pub received_at: Instant,
    /// The vehicle side says the episode / route is over.
    pub done: bool,
    /// Time-to-collision with the nearest object ahead, seconds (infinity when unknown or nothing closes in):
    /// the simulator's ground truth, or a radar's on a vehicle that has one. Feeds the near-miss trigger.
    pub ttc_s: f32,
    /// The vehicle hit something since the previous state read (the simulator's ground truth; a link without such
    /// a signal says false). Feeds the collision trigger.
    pub collision: bool,
    /// A traffic-rule infraction (red light, stop sign, route deviation) since the previous state read
    /// (simulator). Feeds the infraction trigger.
    pub infraction: bool,
}

/// Why a link failed this tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// No state ever received, or none within the timeout.
    NoState,
    /// The command could not be sent.
    SendFailed,
    /// The peer is gone (thread exited, socket closed).
    Disconnected,
}

/// The vehicle as the loop sees it. Implementations never block the loop.
pub trait VehicleLink {
    /// Freshest ego state.
    fn state(&mut self) -> Result<VehicleState, LinkError>;
    /// Send one command for control tick `tick`.
    fn send(&mut self, tick: u64, cmd: &Command) -> Result<(), LinkError>;
    /// What the link counted (datagrams refused, frames lost, ...), for the run report. Called once, after the run.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}
