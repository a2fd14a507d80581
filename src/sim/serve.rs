//! `rtvla sim serve`: the simulator as a rig on the wire — the host side of hardware-in-the-loop. It renders
//! frames, sends them with the ego state to a runtime (`camera.source = "net"`), applies the commands that come
//! back, and scores every run exactly as `sim eval` does (same table, same JSON), plus what the network did:
//! frame-to-command latency and datagram loss.
//!
//! Each episode starts when a runtime announces a new session (`Hello`): one `rtvla drive` per episode, ended by
//! the `done` state. Lockstep: the world steps when the command for its current frame arrives (deterministic:
//! the same commands as the in-process simulator). Real time: the world steps on its own clock with the newest
//! command.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::{EpisodeMetrics, Renderer, World};
use crate::stats::{CommandsHash, LatencyHistogram};
use crate::types::Command;
use crate::wire::frames::{chunk_frame, FrameMeta};
use crate::wire::replay::{PeerTracker, Verdict};
use crate::wire::{self, Body, Datagram, Pacing, Role, WireFormat, WireKey, MAX_DATAGRAM, WIRE_VERSION};

/// How the rig runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub bind: String,
    /// The runtime's address when it is known in advance (a bench wired to one device): episodes start at once
    /// instead of waiting for the runtime's `Hello`.
    pub peer: Option<SocketAddr>,
    pub key: Option<WireKey>,
    pub pacing: Pacing,
    /// Real time: steps per second.
    pub rate_hz: f64,
    /// Simulated seconds per step.
    pub dt: f32,
    pub width: usize,
    pub height: usize,
    pub format: WireFormat,
    /// Wait this long for a runtime to announce itself before each episode.
    pub hello_timeout: Duration,
    pub faults: FaultInjection,
}

/// Network faults injected on what the rig sends (tests of the runtime's side). Probabilities per datagram.
#[derive(Clone, Copy, Debug, Default)]
pub struct FaultInjection {
    pub loss: f64,
    pub reorder: f64,
    pub duplicate: f64,
    /// Real time: stop sending anything for `blackout.1` seconds starting `blackout.0` seconds into each episode.
    pub blackout: Option<(f64, f64)>,
}

/// What the network did over all episodes.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WireSummary {
    pub pacing: String,
    /// Frame sent → command for it received, ms.
    pub latency_ms: crate::report::Quantiles,
    pub datagrams_sent: u64,
    pub datagrams_dropped_by_injection: u64,
    pub frames_sent: u64,
    /// Frames that never got a command computed from them (lost, or overtaken by a newer frame).
    pub frames_unanswered: u64,
    pub commands_received: u64,
    /// Datagrams refused: wrong key, replayed, undecodable, another version.
    pub refused: u64,
    pub resends: u64,
}

/// The rig's socket and per-run state.
pub struct Rig {
    sock: UdpSocket,
    opts: ServeOptions,
    session: u64,
    seq: u64,
    runtime: Option<SocketAddr>,
    tracker: PeerTracker,
    /// Runtime sessions already served: a new episode needs a new one.
    served: Vec<u64>,
    rng: rand_pcg::Pcg32,
    held: Option<Vec<u8>>,
    latency: LatencyHistogram,
    pub summary: WireSummary,
}

impl Rig {
    pub fn bind(opts: ServeOptions) -> anyhow::Result<Rig> {
        let sock =
            UdpSocket::bind(&opts.bind).map_err(|e| crate::error::bad_input(format!("--bind {}: {e}", opts.bind)))?;
        let pacing = format!("{:?}", opts.pacing).to_lowercase();
        Ok(Rig {
            sock,
            session: wire::new_session_id(),
            seq: 1,
            runtime: None,
            tracker: PeerTracker::default(),
            served: Vec::new(),
            rng: rand_pcg::Pcg32::seed_from_u64(0x41c),
            held: None,
            latency: LatencyHistogram::new(),
            summary: WireSummary { pacing, ..WireSummary::default() },
            opts,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Drive one episode with the next runtime that announces itself.
    pub fn episode(&mut self, scenario: &str, seed: u64) -> anyhow::Result<EpisodeMetrics> {
        self.await_runtime()?;
        let mut world = World::new(scenario, seed).map_err(|e| crate::error::bad_input(format!("sim: {e}")))?;
        let m = match self.opts.pacing {
            Pacing::Lockstep => self.lockstep(&mut world),
            Pacing::RealTime => self.real_time(&mut world),
        }?;
        self.summary.latency_ms = crate::report::Quantiles::of(&self.latency);
        Ok(m)
    }

    /// Wait for a `Hello` from a runtime session not served yet; it becomes this episode's peer.
    fn await_runtime(&mut self) -> anyhow::Result<()> {
        if let Some(peer) = self.opts.peer {
            self.runtime = Some(peer);
            self.tracker = PeerTracker::default();
            return self.send(Body::Hello { role: Role::Rig });
        }
        let start = Instant::now();
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        self.sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        while start.elapsed() < self.opts.hello_timeout {
            // `sim eval`'s table stops after this run on a stop signal; waiting out the timeout first would not.
            anyhow::ensure!(!crate::runtime::os::stop_requested(), "stopped by a signal while waiting for a runtime");
            let Ok((n, from)) = self.sock.recv_from(&mut buf) else { continue };
            let Ok(d) = wire::decode(&buf[..n], self.opts.key.as_ref()) else {
                self.summary.refused += 1;
                continue;
            };
            if matches!(d.body, Body::Hello { role: Role::Runtime }) && !self.served.contains(&d.session) {
                self.served.push(d.session);
                self.tracker = PeerTracker::default();
                self.tracker.check(d.session, d.seq);
                self.runtime = Some(from);
                self.send(Body::Hello { role: Role::Rig })?;
                return Ok(());
            }
        }
        anyhow::bail!(
            "no runtime announced itself on {} within {:?} (is `rtvla drive` running on a board with camera.source = \"net\" and vehicle.peer set to this address?)",
            self.local_addr()?,
            self.opts.hello_timeout
        )
    }

    /// Lockstep: send state + frame N, wait for the command computed from frame N, step, repeat.
    fn lockstep(&mut self, world: &mut World) -> anyhow::Result<EpisodeMetrics> {
        let mut renderer = Renderer::new(self.opts.width, self.opts.height);
        let mut rgb = vec![0u8; self.opts.width * self.opts.height * 3];
        let mut hash = CommandsHash::default();
        let mut seen = (0, 0);
        for frame in 0u64.. {
            let done = world.done();
            let sent_at = self.send_step(world, frame, &mut renderer, &mut rgb, &mut seen)?;
            let cmd = self.await_command(frame, sent_at, world, &mut renderer, &mut rgb, &mut seen)?;
            hash.add(&cmd);
            if done {
                break;
            }
            world.step(&cmd, self.opts.dt);
        }
        let mut m = world.metrics();
        m.commands_hash = Some(hash.hex());
        Ok(m)
    }

    /// Real time: step at the rig's rate with the newest command received; the runtime keeps up or not.
    fn real_time(&mut self, world: &mut World) -> anyhow::Result<EpisodeMetrics> {
        let mut renderer = Renderer::new(self.opts.width, self.opts.height);
        let mut rgb = vec![0u8; self.opts.width * self.opts.height * 3];
        let period = Duration::from_secs_f64(1.0 / self.opts.rate_hz);
        let mut sent_at = vec![None; 256];
        let (mut cmd, mut newest, mut seen) = (Command::STOP, None::<u64>, (0, 0));
        let start = Instant::now();
        self.sock.set_read_timeout(Some(Duration::from_millis(1)))?;
        for frame in 0u64.. {
            let tick_start = Instant::now();
            let t = start.elapsed().as_secs_f64();
            let dark = self.opts.faults.blackout.is_some_and(|(at, len)| t >= at && t < at + len);
            if !dark {
                sent_at[(frame % 256) as usize] =
                    Some((frame, self.send_step(world, frame, &mut renderer, &mut rgb, &mut seen)?));
                self.summary.frames_sent += 1;
            }
            while tick_start.elapsed() < period {
                if let Some((f, c)) = self.recv_command()? {
                    if newest.is_none_or(|n| f > n) {
                        if let Some(Some((id, at))) = sent_at.get((f % 256) as usize) {
                            if *id == f {
                                self.latency.record(at.elapsed().as_secs_f64() * 1e3);
                            }
                        }
                        newest = Some(f);
                        cmd = c;
                    }
                }
            }
            if world.done() {
                break;
            }
            world.step(&cmd, self.opts.dt);
        }
        self.summary.frames_unanswered = self.summary.frames_sent.saturating_sub(self.latency.count());
        let mut m = world.metrics();
        m.commands_hash = None; // real time: which command drove which step depends on timing
        Ok(m)
    }

    /// Render and send the state after step `frame`, then the frame; returns when it went out.
    fn send_step(
        &mut self,
        world: &World,
        frame: u64,
        renderer: &mut Renderer,
        rgb: &mut [u8],
        seen: &mut (u32, u32),
    ) -> anyhow::Result<Instant> {
        let inf = world.infractions();
        let (c, r) = (inf.collisions(), inf.rule_breaks());
        let (collision, infraction) = (c > seen.0, r > seen.1);
        *seen = (c, r);
        let ego = world.ego();
        let (done, ttc_s) = (world.done(), world.ttc());
        self.send(Body::State { frame, ego, done, ttc_s, collision, infraction })?;
        world.render(renderer, rgb);
        let (w, h) = (self.opts.width, self.opts.height);
        let encoded = match self.opts.format {
            WireFormat::Jpeg => super::replay::jpeg(rgb, w, h)?,
            WireFormat::Rgb8 => rgb.to_vec(),
            WireFormat::Yuyv => anyhow::bail!("the simulator renders RGB; send rgb8 or jpeg"),
        };
        let meta = FrameMeta {
            frame,
            chunks: 0,
            bytes: 0,
            captured_us: 0,
            pacing: self.opts.pacing,
            format: self.opts.format,
            width: w as u16,
            height: h as u16,
        };
        let at = Instant::now();
        for body in chunk_frame(meta, &encoded).ok_or_else(|| anyhow::anyhow!("frame too large for the wire"))? {
            self.send(body)?;
        }
        Ok(at)
    }

    /// Lockstep: the command computed from `frame`; lost datagrams are sent again after a quiet second.
    fn await_command(
        &mut self,
        frame: u64,
        mut sent_at: Instant,
        world: &World,
        renderer: &mut Renderer,
        rgb: &mut [u8],
        seen: &mut (u32, u32),
    ) -> anyhow::Result<Command> {
        self.sock.set_read_timeout(Some(Duration::from_millis(20)))?;
        self.summary.frames_sent += 1;
        let mut resends = 0;
        loop {
            if let Some((f, c)) = self.recv_command()? {
                if f == frame {
                    self.latency.record(sent_at.elapsed().as_secs_f64() * 1e3);
                    return Ok(c);
                }
                continue;
            }
            if sent_at.elapsed() > Duration::from_secs(1) {
                anyhow::ensure!(resends < 10, "the runtime stopped answering at frame {frame}");
                resends += 1;
                self.summary.resends += 1;
                let keep = *seen;
                sent_at = self.send_step(world, frame, renderer, rgb, seen)?;
                *seen = keep;
            }
        }
    }

    /// One datagram from this episode's runtime, if it is a command: (frame, command).
    fn recv_command(&mut self) -> anyhow::Result<Option<(u64, Command)>> {
        let mut buf = [0u8; MAX_DATAGRAM + 1];
        let Ok((n, from)) = self.sock.recv_from(&mut buf) else { return Ok(None) };
        if Some(from) != self.runtime {
            return Ok(None);
        }
        let d = match wire::decode(&buf[..n], self.opts.key.as_ref()) {
            Ok(d) => d,
            Err(_) => {
                self.summary.refused += 1;
                return Ok(None);
            }
        };
        let first = self.tracker.session() == 0;
        match self.tracker.check(d.session, d.seq) {
            Verdict::Accept => {}
            Verdict::Replay => {
                self.summary.refused += 1;
                return Ok(None);
            }
            Verdict::NewSession if first => {}
            Verdict::NewSession => anyhow::bail!("the runtime restarted in the middle of an episode"),
        }
        match d.body {
            Body::Command { frame, command, .. } => {
                self.summary.commands_received += 1;
                Ok(Some((frame, command)))
            }
            _ => Ok(None),
        }
    }

    /// Encode, then send through the fault injector (loss, duplication, reordering by holding one back).
    fn send(&mut self, body: Body<'_>) -> anyhow::Result<()> {
        let to = self.runtime.ok_or_else(|| anyhow::anyhow!("no runtime yet"))?;
        let mut buf = [0u8; MAX_DATAGRAM];
        let d = Datagram { version: WIRE_VERSION, session: self.session, seq: self.seq, body };
        self.seq += 1;
        let bytes = wire::encode(&d, self.opts.key.as_ref(), &mut buf).map_err(|e| anyhow::anyhow!("{e}"))?;
        let f = self.opts.faults;
        self.summary.datagrams_sent += 1;
        if self.rng.random_bool(f.loss.clamp(0.0, 1.0)) {
            self.summary.datagrams_dropped_by_injection += 1;
            return Ok(());
        }
        if self.held.is_none() && self.rng.random_bool(f.reorder.clamp(0.0, 1.0)) {
            self.held = Some(bytes.to_vec());
            return Ok(());
        }
        let copies = if self.rng.random_bool(f.duplicate.clamp(0.0, 1.0)) { 2 } else { 1 };
        for _ in 0..copies {
            let _ = self.sock.send_to(bytes, to);
        }
        if let Some(h) = self.held.take() {
            let _ = self.sock.send_to(&h, to);
        }
        Ok(())
    }
}
