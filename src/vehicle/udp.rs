//! UDP vehicle link: postcard datagrams (see `wire`) to and from an external simulator or HIL rig.
//! The socket is non-blocking; `state` drains whatever arrived and keeps the newest.

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use super::wire::{self, Body, MAX_DATAGRAM};
use super::{LinkError, VehicleLink, VehicleState};
use crate::error::bad_input;
use crate::types::Command;

pub struct UdpLink {
    socket: UdpSocket,
    peer: SocketAddr,
    timeout: Duration,
    latest: Option<VehicleState>,
    last_seq: u64,
    buf: [u8; MAX_DATAGRAM],
    /// Datagrams refused (bad encoding, wrong version, out of order).
    pub rejected: u64,
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
        Ok(UdpLink { socket, peer, timeout, latest: None, last_seq: 0, buf: [0; MAX_DATAGRAM], rejected: 0 })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

impl VehicleLink for UdpLink {
    fn state(&mut self) -> Result<VehicleState, LinkError> {
        loop {
            match self.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => {
                    if from != self.peer {
                        self.rejected += 1;
                        continue;
                    }
                    match wire::decode(&self.buf[..n]) {
                        Ok(Body::State { seq, ego, done }) if self.latest.is_none() || seq > self.last_seq => {
                            self.last_seq = seq;
                            self.latest = Some(VehicleState {
                                ego,
                                received_at: Instant::now(),
                                done,
                                ttc_s: f32::INFINITY,
                                collision: false,
                                infraction: false,
                            });
                        }
                        _ => self.rejected += 1,
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
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
}
