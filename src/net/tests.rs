use std::net::UdpSocket;
use std::time::{Duration, Instant};

use super::*;
use crate::camera::FrameSource;
use crate::types::{Command, EgoState};
use crate::vehicle::{LinkError, VehicleLink};
use crate::wire::frames::{chunk_frame, FrameMeta};
use crate::wire::{Pacing, Role, WireFormat};

const W: usize = 16;
const H: usize = 8;

/// A rig on loopback speaking the wire by hand.
struct Rig {
    sock: UdpSocket,
    session: u64,
    seq: u64,
    key: Option<WireKey>,
}

impl Rig {
    fn new(key: Option<WireKey>) -> Rig {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        Rig { sock, session: 77, seq: 1, key }
    }

    fn open(&self, lockstep: bool, key: Option<WireKey>) -> (NetEndpoint, NetVehicle, NetCamera) {
        let cfg = NetConfig {
            bind: "127.0.0.1:0".into(),
            peer: self.sock.local_addr().unwrap().to_string(),
            key,
            frames: Some((W, H)),
            lockstep,
            sync_timeout: Duration::from_millis(300),
            state_timeout: Duration::from_millis(300),
        };
        let (e, v, c) = NetEndpoint::open(cfg).unwrap();
        self.sock.connect(e.local_addr().unwrap()).unwrap();
        (e, v, c.unwrap())
    }

    fn send(&mut self, body: Body<'_>) -> Vec<u8> {
        let mut buf = [0u8; MAX_DATAGRAM];
        let d = Datagram { version: WIRE_VERSION, session: self.session, seq: self.seq, body };
        self.seq += 1;
        let bytes = wire::encode(&d, self.key.as_ref(), &mut buf).unwrap().to_vec();
        self.sock.send(&bytes).unwrap();
        bytes
    }

    fn step(&mut self, frame: u64, speed: f32) {
        let ego = EgoState { speed_mps: speed, target_points: [[10.0, 0.0], [30.0, 0.0]] };
        let (ttc_s, collision, infraction, done) = (f32::INFINITY, false, false, false);
        self.send(Body::State { frame, ego, done, ttc_s, collision, infraction });
        let image = vec![frame as u8; W * H * 3];
        let meta = FrameMeta {
            frame,
            chunks: 0,
            bytes: 0,
            captured_us: 0,
            pacing: Pacing::Lockstep,
            format: WireFormat::Rgb8,
            width: W as u16,
            height: H as u16,
        };
        for b in chunk_frame(meta, &image).unwrap() {
            self.send(b);
        }
    }

    /// The next datagram from the runtime that is not a Hello.
    fn command(&self) -> (u64, Command) {
        let mut buf = [0u8; MAX_DATAGRAM];
        loop {
            let n = self.sock.recv(&mut buf).expect("a command from the runtime");
            if let Body::Command { tick, command, .. } = wire::decode(&buf[..n], self.key.as_ref()).unwrap().body {
                return (tick, command);
            }
        }
    }
}

fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(2) {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

fn counter(e: &NetEndpoint, name: &str) -> u64 {
    e.counters().into_iter().find(|(k, _)| *k == name).unwrap().1
}

#[test]
fn lockstep_frames_state_and_commands_round_trip() {
    let key = WireKey::from_bytes(&[5; 32]).unwrap();
    let mut rig = Rig::new(Some(key.clone()));
    let (e, mut vehicle, mut camera) = rig.open(true, Some(key));
    // The runtime announces itself first.
    let mut buf = [0u8; MAX_DATAGRAM];
    let n = rig.sock.recv(&mut buf).unwrap();
    assert!(matches!(wire::decode(&buf[..n], rig.key.as_ref()).unwrap().body, Body::Hello { role: Role::Runtime }));
    assert!(camera.latest().is_none(), "no frame yet (the lockstep wait is bounded)");
    for frame in 0..3u64 {
        rig.step(frame, 2.0 + frame as f32);
        let f = camera.latest().expect("the frame answering the last command");
        assert_eq!((f.seq, f.rgb[0]), (frame, frame as u8));
        assert_eq!(vehicle.state().unwrap().ego.speed_mps, 2.0 + frame as f32);
        vehicle.send(frame, &Command { steer: 0.1, throttle: 0.2, brake: 0.0 }).unwrap();
        assert_eq!(rig.command().0, frame);
    }
    assert_eq!(camera.stats().frames, 3);
    assert_eq!(counter(&e, "auth_failed") + counter(&e, "replayed") + counter(&e, "bad_frames"), 0);
}

#[test]
fn a_wrong_key_is_refused_and_counted_and_the_car_never_gets_a_state() {
    let mut rig = Rig::new(Some(WireKey::from_bytes(&[1; 32]).unwrap()));
    let (e, mut vehicle, mut camera) = rig.open(false, Some(WireKey::from_bytes(&[2; 32]).unwrap()));
    for f in 0..5 {
        rig.step(f, 3.0);
    }
    assert!(wait_for(|| counter(&e, "auth_failed") >= 5 * 2));
    assert_eq!(vehicle.state().unwrap_err(), LinkError::NoState);
    assert!(camera.latest().is_none());
    let mut plain = Rig::new(None);
    plain.sock = rig.sock.try_clone().unwrap();
    plain.step(9, 3.0); // unauthenticated on a keyed link
    assert!(wait_for(|| counter(&e, "auth_failed") >= 12));
    assert_eq!(vehicle.state().unwrap_err(), LinkError::NoState);
}

#[test]
fn replays_are_refused_and_a_restarted_rig_is_taken_at_once() {
    let mut rig = Rig::new(None);
    let (e, mut vehicle, _camera) = rig.open(false, None);
    rig.seq = u64::MAX - 1; // a forged or wrapped counter must not lock anyone out
    let ego = EgoState { speed_mps: 4.0, target_points: [[10.0, 0.0], [30.0, 0.0]] };
    let state = |frame, speed| Body::State {
        frame,
        ego: EgoState { speed_mps: speed, ..ego },
        done: false,
        ttc_s: f32::INFINITY,
        collision: false,
        infraction: false,
    };
    let sent = rig.send(state(1, 4.0));
    assert!(wait_for(|| vehicle.state().is_ok_and(|s| s.ego.speed_mps == 4.0)));
    rig.sock.send(&sent).unwrap(); // the same datagram again
    assert!(wait_for(|| counter(&e, "replayed") == 1));
    // The rig restarts: new session, sequence from 1, frame ids from 0. Accepted at its first datagram.
    rig.session = 78;
    rig.seq = 1;
    rig.send(state(0, 6.0));
    assert!(wait_for(|| vehicle.state().is_ok_and(|s| s.ego.speed_mps == 6.0)));
    assert_eq!(counter(&e, "rig_sessions"), 2);
    // And the old session cannot come back by replay.
    rig.sock.send(&sent).unwrap();
    assert!(wait_for(|| counter(&e, "replayed") == 2));
}

#[test]
fn no_key_is_refused_off_loopback_in_one_line() {
    let cfg = NetConfig {
        bind: "0.0.0.0:0".into(),
        peer: "10.0.2.2:47700".into(),
        key: None,
        frames: None,
        lockstep: false,
        sync_timeout: Duration::ZERO,
        state_timeout: Duration::from_millis(100),
    };
    let err = NetEndpoint::open(cfg).err().expect("refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("loopback only") && msg.contains("openssl rand -hex 32"), "{msg}");
    assert_eq!(crate::error::exit_code(&err), 2);
}

#[test]
fn a_flood_from_another_port_never_reaches_the_link() {
    let mut rig = Rig::new(None);
    let (e, mut vehicle, _camera) = rig.open(false, None);
    let flooder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = e.local_addr().unwrap();
    for i in 0..5_000u64 {
        flooder.send_to(&i.to_le_bytes(), to).unwrap();
    }
    rig.step(1, 5.0);
    assert!(wait_for(|| vehicle.state().is_ok_and(|s| s.ego.speed_mps == 5.0)));
    assert_eq!(counter(&e, "decode_errors"), 0, "the kernel dropped the flood: nothing read");
}
