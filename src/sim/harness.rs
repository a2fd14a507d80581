//! The in-process simulator as camera + vehicle, plugged into the runtime as a [`Plant`]: `World` runs on its
//! own thread, stepped once per received command (lockstep with the control tick, so a run is deterministic),
//! rendering a frame after each step. Scoring stays here, on the simulator's side.
//!
//! Loop → sim: commands through a bounded SPSC ring (rtrb). Sim → loop: frames and ego state through triple
//! buffers. Nothing here allocates on the loop thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::camera::{Frame, FrameSource, SourceStats};
use crate::error::bad_input;
use crate::sim::{EpisodeMetrics, Renderer, World};
use crate::stats::CommandsHash;
use crate::types::{Command, EgoState};
use crate::vehicle::{LinkError, VehicleLink, VehicleState};

/// What the sim thread publishes after each step.
#[derive(Clone, Copy, Debug)]
pub struct SimState {
    pub seq: u64,
    pub ego: EgoState,
    pub done: bool,
    pub at: Instant,
    /// Privileged time-to-collision ([`crate::sim::World::ttc`]).
    pub ttc_s: f32,
    /// Collisions so far in this episode (a running count, not a per-step flag: a loop that reads the state less
    /// often than the sim publishes it still sees every new one).
    pub collisions: u32,
    /// Red lights, stop signs and route deviations so far in this episode.
    pub rule_breaks: u32,
}

/// Sees every world state the simulator thread steps through, with the command about to be applied (and once more
/// at the end with [`Command::STOP`]): how `sim replay --policy model` draws a run the runtime drove. Runs on the
/// simulator thread, never on the control loop's.
#[derive(Clone)]
pub struct SimObserver(Arc<std::sync::Mutex<ObserverFn>>);

type ObserverFn = dyn FnMut(&mut World, &Command) + Send;

impl SimObserver {
    pub fn new(f: impl FnMut(&mut World, &Command) + Send + 'static) -> SimObserver {
        SimObserver(Arc::new(std::sync::Mutex::new(f)))
    }

    fn see(&self, w: &mut World, cmd: &Command) {
        if let Ok(mut f) = self.0.lock() {
            f(w, cmd);
        }
    }
}

impl std::fmt::Debug for SimObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimObserver")
    }
}

/// How the sim is started.
#[derive(Clone, Debug)]
pub struct SimOptions {
    pub scenario: String,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// Seconds per step (the control period).
    pub dt: f32,
    /// Compute the privileged expert's targets every step (for the `expert` policy).
    pub with_expert: bool,
    /// How long the camera waits for the frame that follows the last command.
    pub sync_timeout: Duration,
    /// When the route ends, start the next episode (seed + 1, + 2, ...) instead of reporting `done`: soak runs of
    /// any length on one board.
    pub repeat: bool,
    /// Render camera frames. Off when a real camera supplies the frames and the simulator is only the vehicle
    /// (on an emulated or small CPU the renderer would compete with inference for nothing).
    pub render: bool,
    /// Replays: called with each state before it is stepped.
    pub observer: Option<SimObserver>,
}

/// Shared counters between the loop-side handles and the sim thread.
pub(crate) struct Shared {
    /// Number of commands the loop has sent = the frame seq it expects next.
    pub commands_sent: AtomicU64,
    pub stop: AtomicBool,
    /// Cleared when the sim thread ends for any reason (a panic included), so the loop sees a dead link.
    pub alive: AtomicBool,
}

/// Clears `alive` when the sim thread exits, even by unwinding.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

/// Owner of the sim thread; `finish` stops it and returns the episode metrics.
pub struct SimHarness {
    handle: Option<JoinHandle<anyhow::Result<Vec<EpisodeMetrics>>>>,
    shared: Arc<Shared>,
    thread: Thread,
}

/// Loop-side vehicle handle of the simulator.
pub struct SimVehicle {
    commands: rtrb::Producer<(u64, Command)>,
    state: triple_buffer::Output<SimState>,
    shared: Arc<Shared>,
    sim_thread: Thread,
    /// The counts of the last state read, to flag new collisions and infractions once.
    seen: (u32, u32),
}

impl SimHarness {
    /// Build the world (bad scenario → `BadInput`) and start its thread.
    pub fn spawn(opts: SimOptions) -> anyhow::Result<(SimHarness, SimCamera, SimVehicle)> {
        let mut world = World::new(&opts.scenario, opts.seed).map_err(|e| bad_input(format!("sim: {e}")))?;
        let mut renderer = Renderer::new(opts.width, opts.height);
        let mut frame = Frame::blank(opts.width, opts.height);
        world.render(&mut renderer, &mut frame.rgb);
        frame.seq = 0;
        frame.privileged = opts.with_expert.then(|| world.expert_plan().waypoints);
        let state0 = SimState {
            seq: 0,
            ego: world.ego(),
            done: world.done(),
            at: Instant::now(),
            ttc_s: world.ttc(),
            collisions: 0,
            rule_breaks: 0,
        };
        let (mut frame_in, frame_out) = triple_buffer::triple_buffer(&frame);
        let (mut state_in, state_out) = triple_buffer::triple_buffer(&state0);
        let (cmd_tx, mut cmd_rx) = rtrb::RingBuffer::<(u64, Command)>::new(8);
        let shared = Arc::new(Shared {
            commands_sent: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            alive: AtomicBool::new(true),
        });
        let sh = shared.clone();
        let handle = thread::Builder::new()
            .name("rtvla-sim".into())
            .spawn(move || -> anyhow::Result<Vec<EpisodeMetrics>> {
                let mut finished = Vec::new();
                let mut hash = EpisodeHash::default();
                let _alive = AliveGuard(sh.clone());
                // The simulator stands in for the outside world: it must not preempt the control loop when the
                // loop wakes it with a command (on a 2-core board that would land in the loop's measured tick).
                // SAFETY: setpriority on this thread's own tid with a plain integer.
                unsafe {
                    libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
                }
                // With the real-time knobs on, that nice level means nothing (SCHED_FIFO, inherited): below the loop.
                crate::runtime::os::helper_thread_below_loop();
                while !sh.stop.load(Ordering::Acquire) {
                    let Ok((tick, cmd)) = cmd_rx.pop() else {
                        thread::park_timeout(Duration::from_millis(5));
                        continue;
                    };
                    hash.add(tick, &cmd);
                    if let Some(o) = &opts.observer {
                        o.see(&mut world, &cmd);
                    }
                    world.step(&cmd, opts.dt);
                    if world.done() {
                        hash.done_at(tick + 1);
                    }
                    if opts.repeat && world.done() {
                        finished.push(hash.stamp(world.metrics()));
                        hash = EpisodeHash::default();
                        let seed = opts.seed.wrapping_add(finished.len() as u64);
                        world = World::new(&opts.scenario, seed).map_err(|e| anyhow::anyhow!("sim: {e}"))?;
                    }
                    // State first, then the frame the camera side waits on: a reader that has the frame has its state.
                    state_in.write(SimState {
                        seq: tick + 1,
                        ego: world.ego(),
                        done: world.done(),
                        at: Instant::now(),
                        ttc_s: world.ttc(),
                        collisions: world.infractions().collisions(),
                        rule_breaks: world.infractions().rule_breaks(),
                    });
                    let f = frame_in.input_buffer_mut();
                    if opts.render {
                        world.render(&mut renderer, &mut f.rgb);
                    }
                    f.seq = tick + 1;
                    f.captured_at = Instant::now();
                    f.privileged = opts.with_expert.then(|| world.expert_plan().waypoints);
                    frame_in.publish();
                }
                // Commands the loop sent before it asked us to stop still count (the answer to the final frame).
                while let Ok((tick, cmd)) = cmd_rx.pop() {
                    hash.add(tick, &cmd);
                }
                if let Some(o) = &opts.observer {
                    o.see(&mut world, &Command::STOP);
                }
                finished.push(hash.stamp(world.metrics()));
                Ok(finished)
            })
            .context("spawning the sim thread")?;
        let thread = handle.thread().clone();
        let camera = SimCamera {
            frames: frame_out,
            shared: shared.clone(),
            sync_timeout: opts.sync_timeout,
            stats: SourceStats::default(),
            last_seq: u64::MAX,
        };
        let vehicle = SimVehicle {
            commands: cmd_tx,
            state: state_out,
            shared: shared.clone(),
            sim_thread: thread.clone(),
            seen: (0, 0),
        };
        Ok((SimHarness { handle: Some(handle), shared, thread }, camera, vehicle))
    }

    /// Stop the sim thread and return the episode's metrics (the last episode's, with `repeat`).
    pub fn finish(self) -> anyhow::Result<EpisodeMetrics> {
        let mut all = self.finish_all()?;
        all.pop().ok_or_else(|| anyhow::anyhow!("sim thread returned no episode"))
    }

    /// Stop the sim thread and return every episode's metrics, in order (one unless `repeat`).
    pub fn finish_all(mut self) -> anyhow::Result<Vec<EpisodeMetrics>> {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
        let h = self.handle.take().expect("finish once");
        h.join().map_err(|_| anyhow::anyhow!("sim thread panicked"))?
    }
}

impl Drop for SimHarness {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.thread.unpark();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl VehicleLink for SimVehicle {
    fn state(&mut self) -> Result<VehicleState, LinkError> {
        if !self.shared.alive.load(Ordering::Acquire) {
            return Err(LinkError::Disconnected);
        }
        let s = *self.state.read();
        // A count below the last one: a new episode (`repeat`) started from zero.
        let (c, r) = self.seen;
        self.seen = (s.collisions, s.rule_breaks);
        Ok(VehicleState {
            ego: s.ego,
            received_at: s.at,
            done: s.done,
            ttc_s: s.ttc_s,
            collision: s.collisions > c,
            infraction: s.rule_breaks > r,
        })
    }

    fn send(&mut self, tick: u64, cmd: &Command) -> Result<(), LinkError> {
        if self.shared.stop.load(Ordering::Relaxed) || !self.shared.alive.load(Ordering::Acquire) {
            return Err(LinkError::Disconnected);
        }
        self.commands.push((tick, *cmd)).map_err(|_| LinkError::SendFailed)?;
        self.shared.commands_sent.store(tick + 1, Ordering::Release);
        self.sim_thread.unpark();
        Ok(())
    }
}

/// The episode's commands, hashed as the runtime's report hashes them: every command up to and including the
/// answer to the frame that showed the route's end (a rig over the wire hashes alike, so the two compare).
#[derive(Default)]
struct EpisodeHash {
    hash: CommandsHash,
    done_frame: Option<u64>,
}

impl EpisodeHash {
    fn add(&mut self, tick: u64, cmd: &Command) {
        if self.done_frame.is_none_or(|d| tick <= d) {
            self.hash.add(cmd);
        }
    }

    fn done_at(&mut self, frame: u64) {
        self.done_frame.get_or_insert(frame);
    }

    fn stamp(&self, mut m: EpisodeMetrics) -> EpisodeMetrics {
        m.commands_hash = Some(self.hash.hex());
        m
    }
}

/// Reads the sim thread's frames. In lockstep it waits (bounded) for the frame that follows the last command, like
/// a camera triggered by the control tick.
pub struct SimCamera {
    frames: triple_buffer::Output<Frame>,
    shared: Arc<Shared>,
    sync_timeout: Duration,
    stats: SourceStats,
    last_seq: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_sim_is_a_disconnected_link() {
        let opts = SimOptions {
            scenario: "following".into(),
            seed: 0,
            width: 64,
            height: 36,
            dt: 0.05,
            with_expert: false,
            sync_timeout: Duration::from_millis(10),
            repeat: false,
            render: true,
            observer: None,
        };
        let (harness, _camera, mut vehicle) = SimHarness::spawn(opts).unwrap();
        assert!(vehicle.state().is_ok());
        vehicle.send(0, &Command::default()).unwrap();
        harness.finish().unwrap();
        assert_eq!(vehicle.state().unwrap_err(), LinkError::Disconnected);
        assert_eq!(vehicle.send(1, &Command::default()).unwrap_err(), LinkError::Disconnected);
    }
}
