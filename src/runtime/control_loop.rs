//! The fixed-rate control loop: FrameSource → Preprocess → Student → Controller → Supervisor → VehicleLink.
//!
//! One thread, one tick per period. Every buffer is allocated before the first tick; the loop thread's
//! allocations are counted (outside and inside the inference call separately) to prove the hot path is clean.
//! Overruns are counted, and missed ticks skipped rather than caught up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::alloc_counter;
use crate::camera::FrameSource;
use crate::clock::Clock;
use crate::control::Controller;
use crate::events::snapshot::{
    FLAG_COLLISION, FLAG_DEADLINE_MISS, FLAG_FALLBACK, FLAG_INFRACTION, FLAG_NAN, FLAG_STALE_FRAME,
};
use crate::events::{EventRecorder, TickTelemetry};
use crate::model::{PolicyInput, Student};
use crate::preprocess::Preprocessor;
use crate::stats::{CommandsHash, LatencyHistogram};
use crate::supervisor::{Fault, Faults, Mode, Supervisor, Transition};
use crate::types::{Command, Waypoints};
use crate::vehicle::{LinkError, VehicleLink};

/// Loop timing and termination.
#[derive(Clone, Debug)]
pub struct LoopConfig {
    pub period_us: u64,
    pub deadline_us: u64,
    pub stale_after: Duration,
    /// Stop after this many ticks (None: until the vehicle says done or a stop is requested).
    pub max_ticks: Option<u64>,
    pub warmup_ticks: u64,
}

/// Counters visible to the monitor thread while the loop runs.
#[derive(Default)]
pub struct LiveStats {
    pub ticks: AtomicU64,
    pub deadline_misses: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Last tick's work time in µs.
    pub last_tick_us: AtomicU64,
    pub last_infer_us: AtomicU64,
    /// When the last tick ended, µs on [`LiveStats::since_us`]'s clock (the status socket's "ticking").
    pub last_tick_end_us: AtomicU64,
    /// The supervisor holds the car stopped.
    pub in_fallback: AtomicBool,
}

impl LiveStats {
    /// Microseconds since the process's first call: a monotonic clock both the loop and the monitor read.
    pub fn since_us(&self) -> u64 {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
    }
}

/// What the loop measured.
pub struct LoopOutcome {
    pub ticks: u64,
    pub deadline_misses: u64,
    pub skipped_ticks: u64,
    pub tick: LatencyHistogram,
    pub infer: LatencyHistogram,
    pub overhead: LatencyHistogram,
    /// How late each tick started against its schedule (wake-up jitter).
    pub jitter: LatencyHistogram,
    /// Time in `FrameSource::latest` (includes a sim camera's bounded wait for its frame).
    pub camera: LatencyHistogram,
    pub preprocess: LatencyHistogram,
    pub measured_ticks: u64,
    pub allocs_outside: u64,
    pub allocs_inside: u64,
    pub fallbacks: u64,
    pub fallback_ticks: u64,
    /// Ticks driven (not in fallback) since the last fallback ended, at the end of the run: proof that the loop
    /// recovered after a fault, not ticks from before it.
    pub nominal_ticks_at_end: u64,
    pub fault_counts: [u64; Fault::ALL.len()],
    pub commands_hash: CommandsHash,
    pub vehicle_done: bool,
    pub wall: Duration,
    /// The last tick's work and inference time, µs (for the monitor).
    pub last_tick_us: u64,
    pub last_infer_us: u64,
    /// When the first command the model produced went to the vehicle link, and that tick's inference time, ms
    /// (the end of the cold start).
    pub first_command: Option<(Instant, f64)>,
}

/// The stages a loop runs, borrowed for its length.
pub struct Stages<'a> {
    pub source: &'a mut dyn FrameSource,
    pub pre: &'a mut Preprocessor,
    pub student: &'a mut dyn Student,
    pub controller: &'a mut Controller,
    pub supervisor: &'a mut Supervisor,
    pub vehicle: &'a mut dyn VehicleLink,
    /// The side tap: telemetry into the event recorder (ring, triggers, snapshot slots).
    pub recorder: Option<&'a mut EventRecorder>,
}

/// What one tick decided, before the supervisor: the proposal, and what the recorder is told about it.
#[derive(Default)]
struct Decision {
    proposed: Option<Command>,
    predicted: Option<Waypoints>,
    infer_time: Duration,
    infer_allocs: u64,
}

impl LoopOutcome {
    fn new() -> LoopOutcome {
        LoopOutcome {
            ticks: 0,
            deadline_misses: 0,
            skipped_ticks: 0,
            tick: LatencyHistogram::new(),
            infer: LatencyHistogram::new(),
            overhead: LatencyHistogram::new(),
            jitter: LatencyHistogram::new(),
            camera: LatencyHistogram::new(),
            preprocess: LatencyHistogram::new(),
            measured_ticks: 0,
            allocs_outside: 0,
            allocs_inside: 0,
            fallbacks: 0,
            fallback_ticks: 0,
            nominal_ticks_at_end: 0,
            fault_counts: [0; Fault::ALL.len()],
            commands_hash: CommandsHash::default(),
            vehicle_done: false,
            wall: Duration::ZERO,
            last_tick_us: 0,
            last_infer_us: 0,
            first_command: None,
        }
    }
}

/// Run the loop until `max_ticks`, the vehicle's `done`, or `stop`.
pub fn run_loop(
    cfg: &LoopConfig,
    clock: &mut dyn Clock,
    st: &mut Stages<'_>,
    live: &LiveStats,
    stop: &AtomicBool,
) -> LoopOutcome {
    let mut o = LoopOutcome::new();
    let virtual_time = clock.is_virtual();
    let wall_start = Instant::now();
    let mut scheduled = clock.now_us();
    let mut carry = Faults::default(); // faults detected after a command went out, applied next tick
    loop {
        if cfg.max_ticks.is_some_and(|m| o.ticks >= m) || stop.load(Ordering::Relaxed) {
            break;
        }
        // How late this tick woke (0 in virtual time: the clock jumps to each deadline).
        let late_us = clock.now_us().saturating_sub(scheduled);
        if !virtual_time {
            o.jitter.record(late_us as f64 / 1e3);
        }
        let t0 = Instant::now();
        let allocs0 = alloc_counter::thread_allocs();
        carry = tick(cfg, clock, st, &mut o, std::mem::take(&mut carry), (t0, allocs0, late_us));
        publish(live, &o, st.supervisor);
        if o.vehicle_done {
            break;
        }
        // Next deadline; after an overrun past it, skip (and count) the missed ticks instead of bursting.
        scheduled += cfg.period_us;
        let now = clock.now_us();
        if now > scheduled {
            let missed = (now - scheduled) / cfg.period_us + 1;
            o.skipped_ticks += missed;
            scheduled += missed * cfg.period_us;
        }
        clock.sleep_until(scheduled);
    }
    // Leave the vehicle stopped, not holding the last command.
    let _ = st.vehicle.send(o.ticks, &Command::STOP);
    o.fallbacks = st.supervisor.fallbacks;
    o.fallback_ticks = st.supervisor.fallback_tick_count;
    o.wall = wall_start.elapsed();
    o
}

/// One tick: frame, state, decision, supervisor, command out, side tap, accounting. Returns the faults found
/// after the command went out (applied next tick).
fn tick(
    cfg: &LoopConfig,
    clock: &mut dyn Clock,
    st: &mut Stages<'_>,
    o: &mut LoopOutcome,
    carried: Faults,
    (t0, allocs0, late_us): (Instant, u64, u64),
) -> Faults {
    let virtual_time = clock.is_virtual();
    let tick = o.ticks;
    let mut faults = carried;
    let mut carry = Faults::default();
    let tc = Instant::now();
    let latest = st.source.latest();
    o.camera.record(tc.elapsed().as_secs_f64() * 1e3);
    // State after the frame: a lockstep source publishes state before the frame it waits on.
    let state = match st.vehicle.state() {
        Ok(s) if s.ego.implausible().is_some() => {
            faults.insert(Fault::BadState);
            None
        }
        Ok(s) => Some(s),
        // In simulated time nobody will ever reconnect a dead simulator: end the run instead of spinning.
        Err(LinkError::Disconnected) if virtual_time => {
            o.vehicle_done = true;
            None
        }
        Err(_) => {
            faults.insert(Fault::LinkState);
            None
        }
    };
    let mut d = Decision::default();
    let mut features: Option<&[f32]> = None;
    match latest {
        None => faults.insert(Fault::NoFrame),
        Some(frame) => {
            if !virtual_time && frame.captured_at.elapsed() > cfg.stale_after {
                faults.insert(Fault::StaleFrame);
            }
            let tp = Instant::now();
            let image = st.pre.run(&frame.rgb);
            o.preprocess.record(tp.elapsed().as_secs_f64() * 1e3);
            match (image, &state) {
                (None, _) => faults.insert(Fault::BadFrame),
                (Some(_), None) => {}
                (Some(image), Some(s)) => {
                    let input = PolicyInput { image, ego: &s.ego, privileged: frame.privileged.as_ref() };
                    let a = alloc_counter::thread_allocs();
                    let ti = Instant::now();
                    let result = st.student.infer(&input);
                    d.infer_time = ti.elapsed();
                    match result {
                        Err(_) => faults.insert(Fault::InferenceError),
                        Ok(inf) if !inf.waypoints.is_sane(500.0) => faults.insert(Fault::BadModelOutput),
                        Ok(inf) => {
                            d.proposed = Some(st.controller.step(&inf.waypoints, s.ego.speed_mps).command);
                            d.predicted = Some(inf.waypoints);
                            features = (!inf.features.is_empty()).then_some(&inf.features[..]);
                        }
                    }
                    d.infer_allocs = alloc_counter::thread_allocs() - a;
                }
            }
        }
    }
    if let Some(s) = &state {
        o.vehicle_done |= s.done;
    }

    let (cmd, transition) = st.supervisor.filter(faults, d.proposed);
    if st.vehicle.send(tick, &cmd).is_err() {
        carry.insert(Fault::LinkSend);
    } else if o.first_command.is_none() && d.proposed.is_some() {
        o.first_command = Some((Instant::now(), d.infer_time.as_secs_f64() * 1e3));
    }
    o.commands_hash.add(&cmd);
    o.nominal_ticks_at_end = if st.supervisor.mode() == Mode::Nominal { o.nominal_ticks_at_end + 1 } else { 0 };
    let seen = if let Transition::Fallback(f) = transition { faults.first().or(Some(f)) } else { None };
    if let Some(f) = seen {
        o.fault_counts[Fault::ALL.iter().position(|x| *x == f).unwrap_or(0)] += 1;
    }
    if let Some(rec) = st.recorder.as_deref_mut() {
        let telemetry = telemetry(clock.now_us(), tick, faults, st.supervisor.mode(), &state, &d, cmd, t0);
        rec.on_tick(&telemetry, features, latest.map(|f| (&f.rgb[..], f.width, f.height)));
    }
    let work = account(cfg, o, &d, t0, allocs0, tick);
    // The deadline counts from when the tick was due, not from when it woke: a command that leaves late because the
    // OS woke the loop late is as late for the car as one that took too long to compute.
    if late_us + work.as_micros() as u64 > cfg.deadline_us {
        o.deadline_misses += 1;
        // In virtual time a slow tick must not change behaviour (determinism); it is still counted.
        if !virtual_time {
            carry.insert(Fault::DeadlineMiss);
        }
    }
    o.ticks += 1;
    carry
}

/// What the side tap records of a tick. Never blocks or allocates.
#[allow(clippy::too_many_arguments)]
fn telemetry(
    time_us: u64,
    tick: u64,
    faults: Faults,
    mode: Mode,
    state: &Option<crate::vehicle::VehicleState>,
    d: &Decision,
    command: Command,
    t0: Instant,
) -> TickTelemetry {
    let mut flags = 0u16;
    if mode == Mode::Fallback {
        flags |= FLAG_FALLBACK;
    }
    if faults.contains(Fault::DeadlineMiss) {
        flags |= FLAG_DEADLINE_MISS;
    }
    if faults.contains(Fault::StaleFrame) || faults.contains(Fault::NoFrame) {
        flags |= FLAG_STALE_FRAME;
    }
    if faults.contains(Fault::BadModelOutput) || (d.proposed.is_some_and(|c| !c.is_valid())) {
        flags |= FLAG_NAN;
    }
    if state.is_some_and(|s| s.collision) {
        flags |= FLAG_COLLISION;
    }
    if state.is_some_and(|s| s.infraction) {
        flags |= FLAG_INFRACTION;
    }
    let wps = d.predicted.unwrap_or_default();
    let ego = state.map(|s| s.ego).unwrap_or_default();
    TickTelemetry {
        time_us,
        tick,
        speed: ego.speed_mps,
        target_points: ego.target_points,
        path: wps.path,
        speed_wps: wps.speed_wps,
        command,
        tick_ms: (t0.elapsed().as_secs_f64() * 1e3) as f32,
        infer_ms: (d.infer_time.as_secs_f64() * 1e3) as f32,
        ttc_s: state.map_or(f32::INFINITY, |s| s.ttc_s),
        flags,
    }
}

/// Timing histograms and allocation counts of one tick; returns its work time.
fn account(cfg: &LoopConfig, o: &mut LoopOutcome, d: &Decision, t0: Instant, allocs0: u64, tick: u64) -> Duration {
    let work = t0.elapsed();
    o.last_tick_us = work.as_micros() as u64;
    o.last_infer_us = d.infer_time.as_micros() as u64;
    let work_ms = work.as_secs_f64() * 1e3;
    let infer_ms = d.infer_time.as_secs_f64() * 1e3;
    o.tick.record(work_ms);
    o.infer.record(infer_ms);
    o.overhead.record(work_ms - infer_ms);
    if tick >= cfg.warmup_ticks {
        o.measured_ticks += 1;
        o.allocs_inside += d.infer_allocs;
        o.allocs_outside += alloc_counter::thread_allocs() - allocs0 - d.infer_allocs;
    }
    work
}

fn publish(live: &LiveStats, o: &LoopOutcome, supervisor: &Supervisor) {
    live.ticks.store(o.ticks, Ordering::Relaxed);
    live.deadline_misses.store(o.deadline_misses, Ordering::Relaxed);
    live.fallbacks.store(supervisor.fallbacks, Ordering::Relaxed);
    live.last_tick_us.store(o.last_tick_us, Ordering::Relaxed);
    live.last_infer_us.store(o.last_infer_us, Ordering::Relaxed);
    live.in_fallback.store(supervisor.mode() == Mode::Fallback, Ordering::Relaxed);
    live.last_tick_end_us.store(live.since_us(), Ordering::Relaxed);
}
