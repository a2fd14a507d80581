//! Loop side of the wire's state and commands: a [`VehicleLink`] over the receive thread's triple buffer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::receiver::RigState;
use super::Shared;
use crate::types::Command;
use crate::vehicle::{LinkError, VehicleLink, VehicleState};
use crate::wire::{Body, MAX_DATAGRAM};

pub struct NetVehicle {
    shared: Arc<Shared>,
    state: triple_buffer::Output<Option<RigState>>,
    timeout: Duration,
    buf: [u8; MAX_DATAGRAM],
    /// The (session, frame) of the last state read: collision and infraction flags count once per state.
    last_read: Option<(u64, u64)>,
}

impl NetVehicle {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: triple_buffer::Output<Option<RigState>>,
        timeout: Duration,
    ) -> NetVehicle {
        NetVehicle { shared, state, timeout, buf: [0; MAX_DATAGRAM], last_read: None }
    }
}

impl VehicleLink for NetVehicle {
    fn state(&mut self) -> Result<VehicleState, LinkError> {
        let s = match *self.state.read() {
            Some(s) if s.received_at.elapsed() <= self.timeout => s,
            _ => return Err(LinkError::NoState),
        };
        let new = self.last_read.replace((s.session, s.frame)) != Some((s.session, s.frame));
        Ok(VehicleState {
            ego: s.ego,
            received_at: s.received_at,
            done: s.done,
            ttc_s: s.ttc_s,
            collision: new && s.collision,
            infraction: new && s.infraction,
        })
    }

    fn send(&mut self, tick: u64, cmd: &Command) -> Result<(), LinkError> {
        let c = &self.shared.counters;
        // Even if this one is lost: a lockstep camera then waits for the answer to it, and times out.
        self.shared.commands_sent.store(tick + 1, Ordering::Release);
        let frame = self.shared.frame_in_use.load(Ordering::Acquire);
        if !self.shared.send(Body::Command { tick, frame, command: *cmd }, &mut self.buf) {
            c.send_failed.fetch_add(1, Ordering::Relaxed);
            return Err(LinkError::SendFailed);
        }
        c.commands_sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.shared.counters.snapshot()
    }
}
