//! UDP vehicle link: postcard datagrams (see `wire`) to and from an external simulator or HIL rig.
//! The socket is non-blocking and connected to the peer, so the kernel drops datagrams from any other address
//! before they reach the receive buffer (a flood from another port cannot starve the vehicle's states); `state`
//! reads at most [`MAX_RECV_PER_TICK`] datagrams a tick and keeps the newest.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use super::wire::{self, Body, MAX_DATAGRAM};
use super::{LinkError, VehicleLink, VehicleState};
use crate::error::bad_input;
use crate::types::Command;

/// Datagrams `state` reads per call: the vehicle sends one state a tick, so this bounds a tick's receive work
/// even when the peer itself floods, and leaves the rest for the next tick.
pub const MAX_RECV_PER_TICK: usize = 64;

pub struct UdpLink {
    socket: UdpSocket,
    peer: SocketAddr,
    timeout: Duration,
    latest: Option<VehicleState>,
    last_seq: u64,
    buf: [u8; MAX_DATAGRAM],
    /// Datagrams refused (bad encoding, wrong version, out of order).
    pub rejected: u64,
    /// Times an out-of-order state was taken as the vehicle restarting (no valid state for longer than the
    /// timeout): a rebooted vehicle, or one forged seq = u64::MAX, costs at most one timeout, not the run.
    pub resyncs: u64,
}

impl UdpLink {
    /// Bind `bind` (e.g. "0.0.0.0:47701") and send to `peer`. Bad addresses are `BadInput`.
    pub fn open(bind: &str, peer: &str, timeout: Duration) -> anyhow::Result<UdpLink> {
        let socket = UdpSocket::bind(bind).map_err(|e| bad_input(format!("vehicle.bind {bind:?}: {e}")))?;
        socket.set_nonblocking(true)?;
        let peer = peer
            .to_socket_addrs()
            .map_err(|e| bad_input(format!("vehicle.peer {peer:?}: {e}")))?
            .next()
            .ok_or_else(|| bad_input(format!("vehicle.peer {peer:?}: no address")))?;
        socket.connect(peer).map_err(|e| bad_input(format!("vehicle.peer {peer}: {e}")))?;
        Ok(UdpLink {
            socket,
            peer,
            timeout,
            latest: None,
            last_seq: 0,
            buf: [0; MAX_DATAGRAM],
            rejected: 0,
            resyncs: 0,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Newer states replace the latest; an older one is refused while the link is live, and taken as a restart of
    /// the vehicle once the latest has gone stale.
    fn accept(&mut self, seq: u64, ego: crate::types::EgoState, done: bool) {
        let stale = self.latest.is_none_or(|l| l.received_at.elapsed() > self.timeout);
        if seq <= self.last_seq && !stale {
            self.rejected += 1;
            return;
        }
        if seq <= self.last_seq {
            self.resyncs += 1;
        }
        self.last_seq = seq;
        let received_at = Instant::now();
        let (ttc_s, collision, infraction) = (f32::INFINITY, false, false);
        self.latest = Some(VehicleState { ego, received_at, done, ttc_s, collision, infraction });
    }
}

impl VehicleLink for UdpLink {
    fn state(&mut self) -> Result<VehicleState, LinkError> {
        for _ in 0..MAX_RECV_PER_TICK {
            let n = match self.socket.recv(&mut self.buf) {
                Ok(n) => n,
                Err(_) => break, // WouldBlock: drained; an ICMP error from the peer: nothing to read either
            };
            match wire::decode(&self.buf[..n]) {
                Ok(Body::State { seq, ego, done }) => self.accept(seq, ego, done),
                _ => self.rejected += 1,
            }
        }
        match self.latest {
            Some(s) if s.received_at.elapsed() <= self.timeout => Ok(s),
            _ => Err(LinkError::NoState),
        }
    }

    fn send(&mut self, tick: u64, cmd: &Command) -> Result<(), LinkError> {
        let bytes =
            wire::encode(&Body::Command { tick, command: *cmd }, &mut self.buf).map_err(|_| LinkError::SendFailed)?;
        self.socket.send_to(bytes, self.peer).map(|_| ()).map_err(|_| LinkError::SendFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EgoState;

    #[test]
    fn exchanges_state_and_commands_over_loopback() {
        let rig = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut link =
            UdpLink::open("127.0.0.1:0", &rig.local_addr().unwrap().to_string(), Duration::from_millis(500)).unwrap();
        assert_eq!(link.state().unwrap_err(), LinkError::NoState);
        let mut buf = [0u8; MAX_DATAGRAM];
        let ego = EgoState { speed_mps: 4.0, target_points: [[8.0, 0.0], [20.0, 1.0]] };
        let addr = link.local_addr().unwrap();
        for seq in [1u64, 3, 2] {
            let b = wire::encode(
                &Body::State { seq, ego: EgoState { speed_mps: seq as f32, ..ego }, done: false },
                &mut buf,
            )
            .unwrap();
            rig.send_to(b, addr).unwrap();
        }
        rig.send_to(b"garbage", addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let s = link.state().unwrap();
        assert_eq!(s.ego.speed_mps, 3.0, "newest seq wins, older is rejected");
        assert_eq!(link.rejected, 2);
        link.send(5, &Command { steer: 0.25, throttle: 0.5, brake: 0.0 }).unwrap();
        rig.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (n, _) = rig.recv_from(&mut buf).unwrap();
        assert_eq!(
            wire::decode(&buf[..n]).unwrap(),
            Body::Command { tick: 5, command: Command { steer: 0.25, throttle: 0.5, brake: 0.0 } }
        );
    }

    fn send_state(rig: &UdpSocket, to: SocketAddr, seq: u64, speed_mps: f32) {
        let mut buf = [0u8; MAX_DATAGRAM];
        let ego = EgoState { speed_mps, target_points: [[8.0, 0.0], [20.0, 1.0]] };
        rig.send_to(wire::encode(&Body::State { seq, ego, done: false }, &mut buf).unwrap(), to).unwrap();
    }

    #[test]
    fn a_flood_from_another_port_never_reaches_the_link() {
        let rig = UdpSocket::bind("127.0.0.1:0").unwrap();
        let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut link =
            UdpLink::open("127.0.0.1:0", &rig.local_addr().unwrap().to_string(), Duration::from_millis(500)).unwrap();
        let addr = link.local_addr().unwrap();
        for i in 0..5_000 {
            send_state(&flooder, addr, u64::MAX - i, 99.0);
        }
        send_state(&rig, addr, 7, 5.0);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(link.state().unwrap().ego.speed_mps, 5.0, "the vehicle's state, not the flood's");
        assert_eq!(link.rejected, 0, "the kernel dropped the flood: nothing to read or reject");
    }

    #[test]
    fn a_restarted_vehicle_or_a_forged_max_seq_costs_one_timeout_not_the_run() {
        let rig = UdpSocket::bind("127.0.0.1:0").unwrap();
        let timeout = Duration::from_millis(100);
        let mut link = UdpLink::open("127.0.0.1:0", &rig.local_addr().unwrap().to_string(), timeout).unwrap();
        let addr = link.local_addr().unwrap();
        send_state(&rig, addr, 41, 3.0);
        send_state(&rig, addr, u64::MAX, 60.0); // forged (or a wrapped counter)
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(link.state().unwrap().ego.speed_mps, 60.0);
        send_state(&rig, addr, 42, 3.0);
        std::thread::sleep(Duration::from_millis(20));
        link.state().unwrap();
        assert_eq!(link.rejected, 1, "older than the latest while the link is live: refused");
        std::thread::sleep(timeout + Duration::from_millis(20));
        send_state(&rig, addr, 1, 2.0); // the vehicle rebooted: seq starts again
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(link.state().unwrap().ego.speed_mps, 2.0, "taken as a restart once the link went stale");
        assert_eq!(link.resyncs, 1);
    }
}
