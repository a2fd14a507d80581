//! The runtime's end of the wire (`camera.source = "net"`, `vehicle.link = "udp"`): one UDP socket connected to
//! the rig, read by a receive thread that authenticates each datagram, refuses replays, reassembles frames into
//! preallocated buffers and hands the freshest frame and state to the loop through triple buffers. The loop side
//! ([`NetCamera`], [`NetVehicle`]) never blocks on the network and never allocates.
//!
//! The receive thread does all per-datagram work, so a flood costs that thread, not the loop's tick; the kernel
//! drops datagrams from any address but the rig's (connected socket), and a forged datagram fails its MAC before
//! it is parsed.

mod camera;
mod receiver;
mod vehicle;

use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use camera::NetCamera;
pub use vehicle::NetVehicle;

use crate::camera::Frame;
use crate::error::bad_input;
use crate::wire::{self, Body, Datagram, WireKey, MAX_DATAGRAM, WIRE_VERSION};

/// How the runtime end is set up (from the board profile's `camera` and `vehicle` sections).
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub bind: String,
    pub peer: String,
    pub key: Option<WireKey>,
    /// Frames are expected (`camera.source = "net"`) at this size; `None`: state and commands only.
    pub frames: Option<(usize, usize)>,
    /// Lockstep: the rig steps once per command, so the camera waits (up to `sync_timeout`) for the frame that
    /// answers the last command, and the loop runs on the rig's clock.
    pub lockstep: bool,
    pub sync_timeout: Duration,
    /// A state older than this is a link fault.
    pub state_timeout: Duration,
}

/// Counters of the wire, shared by the receive thread and the loop side; reported at the end of a run.
#[derive(Default, Debug)]
pub struct WireCounters {
    pub datagrams: AtomicU64,
    pub auth_failed: AtomicU64,
    pub replayed: AtomicU64,
    pub decode_errors: AtomicU64,
    pub version_mismatch: AtomicU64,
    pub unexpected_tag: AtomicU64,
    /// Datagrams of a kind the runtime never receives (a Command sent to it, a Hello from another runtime).
    pub wrong_direction: AtomicU64,
    pub rig_sessions: AtomicU64,
    pub states: AtomicU64,
    pub frames_completed: AtomicU64,
    /// Complete frames converted and handed to the loop.
    pub frames_delivered: AtomicU64,
    pub frames_incomplete: AtomicU64,
    pub late_chunks: AtomicU64,
    pub duplicate_chunks: AtomicU64,
    pub bad_chunks: AtomicU64,
    /// Complete frames that did not convert (wrong size, bad JPEG).
    pub bad_frames: AtomicU64,
    pub commands_sent: AtomicU64,
    pub send_failed: AtomicU64,
}

impl WireCounters {
    /// Name → value, for the run report.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("datagrams", l(&self.datagrams)),
            ("auth_failed", l(&self.auth_failed)),
            ("replayed", l(&self.replayed)),
            ("decode_errors", l(&self.decode_errors)),
            ("version_mismatch", l(&self.version_mismatch)),
            ("unexpected_tag", l(&self.unexpected_tag)),
            ("wrong_direction", l(&self.wrong_direction)),
            ("rig_sessions", l(&self.rig_sessions)),
            ("states", l(&self.states)),
            ("frames_completed", l(&self.frames_completed)),
            ("frames_delivered", l(&self.frames_delivered)),
            ("frames_incomplete", l(&self.frames_incomplete)),
            ("late_chunks", l(&self.late_chunks)),
            ("duplicate_chunks", l(&self.duplicate_chunks)),
            ("bad_chunks", l(&self.bad_chunks)),
            ("bad_frames", l(&self.bad_frames)),
            ("commands_sent", l(&self.commands_sent)),
            ("send_failed", l(&self.send_failed)),
        ]
    }
}

/// State shared by the receive thread and both loop-side handles.
pub(crate) struct Shared {
    pub counters: WireCounters,
    /// Commands sent = the frame id a lockstep camera waits for next.
    pub commands_sent: AtomicU64,
    /// Id of the frame the loop last took from the camera (what the next command answers).
    pub frame_in_use: AtomicU64,
    pub stop: AtomicBool,
    /// Our session id and the next sequence number of a datagram we send.
    pub session: u64,
    pub seq: AtomicU64,
    pub key: Option<WireKey>,
    pub socket: UdpSocket,
    /// When the receive thread last accepted a datagram from the rig (µs since `epoch`; 0: never).
    pub last_heard_us: AtomicU64,
    pub epoch: Instant,
}

impl Shared {
    /// Encode and send one datagram without blocking (MSG_DONTWAIT: a full socket buffer drops it, counted).
    pub fn send(&self, body: Body<'_>, buf: &mut [u8; MAX_DATAGRAM]) -> bool {
        let d = Datagram {
            version: WIRE_VERSION,
            session: self.session,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            body,
        };
        let Ok(bytes) = wire::encode(&d, self.key.as_ref(), buf) else { return false };
        // SAFETY: a valid connected UDP socket fd and a live buffer of the given length.
        let n = unsafe { libc::send(self.socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT) };
        n == bytes.len() as isize
    }
}

/// The receive thread; stopped and joined on drop.
pub struct NetEndpoint {
    shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl NetEndpoint {
    /// Bind, connect to the rig, start the receive thread. Bad addresses, a missing key on a non-loopback link:
    /// `BadInput` before the first tick.
    pub fn open(cfg: NetConfig) -> anyhow::Result<(NetEndpoint, NetVehicle, Option<NetCamera>)> {
        let socket = UdpSocket::bind(&cfg.bind).map_err(|e| bad_input(format!("vehicle.bind {:?}: {e}", cfg.bind)))?;
        let peer = resolve(&cfg.peer)?;
        check_key_or_loopback(&cfg, socket.local_addr()?, peer)?;
        socket.connect(peer).map_err(|e| bad_input(format!("vehicle.peer {peer}: {e}")))?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let shared = Arc::new(Shared {
            counters: WireCounters::default(),
            commands_sent: AtomicU64::new(0),
            frame_in_use: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            session: wire::new_session_id(),
            seq: AtomicU64::new(1),
            key: cfg.key.clone(),
            socket,
            last_heard_us: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let blank = Frame::blank(cfg.frames.map_or(1, |f| f.0), cfg.frames.map_or(1, |f| f.1));
        let (frame_in, frame_out) = triple_buffer::triple_buffer(&blank);
        let (state_in, state_out) = triple_buffer::triple_buffer(&None);
        let rx = receiver::Receiver::new(&cfg, shared.clone(), frame_in, state_in);
        let handle = std::thread::Builder::new().name("rtvla-net".into()).spawn(move || {
            crate::runtime::os::helper_thread_below_loop();
            rx.run()
        })?;
        let vehicle = NetVehicle::new(shared.clone(), state_out, cfg.state_timeout);
        let camera = cfg.frames.map(|_| NetCamera::new(shared.clone(), frame_out, cfg.lockstep, cfg.sync_timeout));
        Ok((NetEndpoint { shared, handle: Some(handle) }, vehicle, camera))
    }

    /// The wire's counters so far.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.shared.counters.snapshot()
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.socket.local_addr()
    }
}

impl Drop for NetEndpoint {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn resolve(peer: &str) -> anyhow::Result<SocketAddr> {
    peer.to_socket_addrs()
        .map_err(|e| bad_input(format!("vehicle.peer {peer:?}: {e}")))?
        .next()
        .ok_or_else(|| bad_input(format!("vehicle.peer {peer:?}: no address")))
}

/// Without a key nothing on the wire is authenticated: allowed on loopback only, and said at start.
fn check_key_or_loopback(cfg: &NetConfig, local: SocketAddr, peer: SocketAddr) -> anyhow::Result<()> {
    if cfg.key.is_some() {
        return Ok(());
    }
    if !(peer.ip().is_loopback() && local.ip().is_loopback()) {
        return Err(bad_input(format!(
            "vehicle.key_file is not set: without a key the wire is unauthenticated and works on loopback only \
             (bind {local}, peer {peer}); create a key with `openssl rand -hex 32 > rig.key; chmod 600 rig.key` \
             and name it in the board profile (the rig needs the same key)"
        )));
    }
    tracing::warn!("wire: no key configured — datagrams are not authenticated (loopback only)");
    Ok(())
}

#[cfg(test)]
mod tests;
