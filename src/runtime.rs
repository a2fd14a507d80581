//! The fixed-rate control loop: FrameSource → Preprocess → Student → Controller → Supervisor → VehicleLink.
//!
//! One thread, one tick per period. Every buffer is allocated before the first tick; the loop thread's
//! allocations are counted (outside and inside the inference call separately) to prove the hot path is clean.
//! Overruns are counted, and missed ticks skipped rather than caught up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::alloc_counter;
use crate::board::{Board, CameraSource, LinkKind};
use crate::camera::FrameSource;
use crate::clock::{Clock, EmbassyClock, VirtualClock};
use crate::control::Controller;
use crate::error::bad_input;
use crate::events::snapshot::{
    FLAG_COLLISION, FLAG_DEADLINE_MISS, FLAG_FALLBACK, FLAG_INFRACTION, FLAG_NAN, FLAG_STALE_FRAME,
};
use crate::events::{EventRecorder, RecorderConfig, RunInfo, TickTelemetry};
use crate::model::{Inference, PolicyInput, Student, TractStudent};
use crate::preprocess::Preprocessor;
use crate::report::{Quantiles, RunReport};
use crate::sim::EpisodeMetrics;
use crate::stats::{CommandsHash, LatencyHistogram};
use crate::supervisor::{Fault, Faults, Mode, Supervisor, SupervisorConfig, Transition};
use crate::types::{Command, Waypoints};
use crate::vehicle::sim::{SimHarness, SimOptions};
use crate::vehicle::{LinkError, VehicleLink};

/// Which policy produces the waypoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// The student network (tract).
    Model,
    /// The simulator's privileged expert (sim boards only): same controller, ground-truth targets.
    Expert,
}

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
}

/// A driving policy backed by the simulator's privileged expert (targets travel with each sim frame).
pub struct ExpertPolicy {
    out: Inference,
}

impl Default for ExpertPolicy {
    fn default() -> Self {
        ExpertPolicy { out: Inference { waypoints: Waypoints::default(), features: Vec::new(), feature_shape: [0, 0] } }
    }
}

impl Student for ExpertPolicy {
    fn image_shape(&self) -> [usize; 3] {
        [3, 128, 256]
    }
    fn infer(&mut self, input: &PolicyInput<'_>) -> anyhow::Result<&Inference> {
        let wps = input.privileged.ok_or_else(|| anyhow::anyhow!("expert policy needs simulator frames"))?;
        self.out.waypoints = *wps;
        Ok(&self.out)
    }
}

/// Run the loop until `max_ticks`, the vehicle's `done`, or `stop`.
#[allow(clippy::too_many_arguments)]
pub fn run_loop(
    cfg: &LoopConfig,
    clock: &mut dyn Clock,
    source: &mut dyn FrameSource,
    pre: &mut Preprocessor,
    student: &mut dyn Student,
    controller: &mut Controller,
    supervisor: &mut Supervisor,
    vehicle: &mut dyn VehicleLink,
    mut recorder: Option<&mut EventRecorder>,
    live: &LiveStats,
    stop: &AtomicBool,
) -> LoopOutcome {
    let mut o = LoopOutcome {
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
    };
    let virtual_time = clock.is_virtual();
    let wall_start = Instant::now();
    let mut scheduled = clock.now_us();
    let mut carry = Faults::default(); // faults detected after a command went out, applied next tick
    loop {
        if cfg.max_ticks.is_some_and(|m| o.ticks >= m) || stop.load(Ordering::Relaxed) {
            break;
        }
        let tick = o.ticks;
        if !virtual_time {
            o.jitter.record(clock.now_us().saturating_sub(scheduled) as f64 / 1e3);
        }
        let t0 = Instant::now();
        let allocs0 = alloc_counter::thread_allocs();
        let mut faults = carry;
        carry = Faults::default();
        let mut infer_time = Duration::ZERO;
        let mut infer_allocs = 0;

        let mut proposed: Option<Command> = None;
        let mut predicted: Option<Waypoints> = None;
        let mut features: Option<&[f32]> = None;
        let tc = Instant::now();
        let latest = source.latest();
        o.camera.record(tc.elapsed().as_secs_f64() * 1e3);
        // State after the frame: a lockstep source (the simulator) publishes state before the frame it waits on.
        let state = match vehicle.state() {
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
        match latest {
            None => faults.insert(Fault::NoFrame),
            Some(frame) => {
                if !virtual_time && frame.captured_at.elapsed() > cfg.stale_after {
                    faults.insert(Fault::StaleFrame);
                }
                let tp = Instant::now();
                let image = pre.run(&frame.rgb);
                o.preprocess.record(tp.elapsed().as_secs_f64() * 1e3);
                match image {
                    None => faults.insert(Fault::BadFrame),
                    Some(image) => {
                        if let Some(st) = &state {
                            let input = PolicyInput { image, ego: &st.ego, privileged: frame.privileged.as_ref() };
                            let a = alloc_counter::thread_allocs();
                            let ti = Instant::now();
                            let result = student.infer(&input);
                            infer_time = ti.elapsed();
                            match result {
                                Err(_) => faults.insert(Fault::InferenceError),
                                Ok(inf) if !inf.waypoints.is_sane(500.0) => faults.insert(Fault::BadModelOutput),
                                Ok(inf) => {
                                    proposed = Some(controller.step(&inf.waypoints, st.ego.speed_mps).command);
                                    predicted = Some(inf.waypoints);
                                    features = (!inf.features.is_empty()).then_some(&inf.features[..]);
                                }
                            }
                            infer_allocs = alloc_counter::thread_allocs() - a;
                        }
                    }
                }
            }
        }
        if let Some(s) = &state {
            o.vehicle_done |= s.done;
        }

        let (cmd, transition) = supervisor.filter(faults, proposed);
        if vehicle.send(tick, &cmd).is_err() {
            carry.insert(Fault::LinkSend);
        }
        o.commands_hash.add(&cmd);
        o.nominal_ticks_at_end = if supervisor.mode() == Mode::Nominal { o.nominal_ticks_at_end + 1 } else { 0 };
        let seen = if let Transition::Fallback(f) = transition { faults.first().or(Some(f)) } else { None };
        if let Some(f) = seen {
            o.fault_counts[Fault::ALL.iter().position(|x| *x == f).unwrap_or(0)] += 1;
        }

        // Side tap: telemetry into the event recorder (ring, triggers, snapshot slots). Never blocks or allocates.
        if let Some(rec) = recorder.as_deref_mut() {
            let mut flags = 0u16;
            if supervisor.mode() == Mode::Fallback {
                flags |= FLAG_FALLBACK;
            }
            if faults.contains(Fault::DeadlineMiss) {
                flags |= FLAG_DEADLINE_MISS;
            }
            if faults.contains(Fault::StaleFrame) || faults.contains(Fault::NoFrame) {
                flags |= FLAG_STALE_FRAME;
            }
            if faults.contains(Fault::BadModelOutput) || (proposed.is_some_and(|c| !c.is_valid())) {
                flags |= FLAG_NAN;
            }
            if state.is_some_and(|s| s.collision) {
                flags |= FLAG_COLLISION;
            }
            if state.is_some_and(|s| s.infraction) {
                flags |= FLAG_INFRACTION;
            }
            let wps = predicted.unwrap_or_default();
            let ego = state.map(|s| s.ego).unwrap_or_default();
            let telemetry = TickTelemetry {
                time_us: clock.now_us(),
                tick,
                speed: ego.speed_mps,
                target_points: ego.target_points,
                path: wps.path,
                speed_wps: wps.speed_wps,
                command: cmd,
                tick_ms: (t0.elapsed().as_secs_f64() * 1e3) as f32,
                infer_ms: (infer_time.as_secs_f64() * 1e3) as f32,
                ttc_s: state.map_or(f32::INFINITY, |s| s.ttc_s),
                flags,
            };
            let frame_rgb = latest.map(|f| (&f.rgb[..], f.width, f.height));
            rec.on_tick(&telemetry, features, frame_rgb);
        }

        let work = t0.elapsed();
        let work_ms = work.as_secs_f64() * 1e3;
        let infer_ms = infer_time.as_secs_f64() * 1e3;
        o.tick.record(work_ms);
        o.infer.record(infer_ms);
        o.overhead.record(work_ms - infer_ms);
        if tick >= cfg.warmup_ticks {
            o.measured_ticks += 1;
            o.allocs_inside += infer_allocs;
            o.allocs_outside += alloc_counter::thread_allocs() - allocs0 - infer_allocs;
        }
        if work.as_micros() as u64 > cfg.deadline_us {
            o.deadline_misses += 1;
            // In virtual time a slow tick must not change behaviour (determinism); it is still counted.
            if !virtual_time {
                carry.insert(Fault::DeadlineMiss);
            }
        }
        o.ticks += 1;
        live.ticks.store(o.ticks, Ordering::Relaxed);
        live.deadline_misses.store(o.deadline_misses, Ordering::Relaxed);
        live.fallbacks.store(supervisor.fallbacks, Ordering::Relaxed);
        live.last_tick_us.store(work.as_micros() as u64, Ordering::Relaxed);
        live.last_infer_us.store(infer_time.as_micros() as u64, Ordering::Relaxed);
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
    let _ = vehicle.send(o.ticks, &Command::STOP);
    o.fallbacks = supervisor.fallbacks;
    o.fallback_ticks = supervisor.fallback_tick_count;
    o.wall = wall_start.elapsed();
    o
}

/// Options of one `rtvla drive` run (CLI flags over the board profile).
#[derive(Clone, Debug)]
pub struct DriveOptions {
    pub board_path: PathBuf,
    pub ticks: Option<u64>,
    pub scenario: Option<String>,
    pub seed: Option<u64>,
    pub model: Option<PathBuf>,
    pub policy: PolicyKind,
    /// Simulated time: run as fast as possible (evaluation); otherwise real time at the board's rate.
    pub virtual_time: bool,
    /// Show a live progress line (only drawn on a terminal).
    pub progress: bool,
    /// Write event snapshots to the store (default on for `drive`, off for evaluation episodes).
    pub record_events: bool,
    /// Store directory overriding the board's `store.path`.
    pub store: Option<PathBuf>,
    /// Simulator: when the route ends, drive the next seed instead of stopping (soak runs).
    pub repeat: bool,
    /// Simulator: sees every state it steps through (replays).
    pub sim_observer: Option<crate::vehicle::sim::SimObserver>,
}

impl DriveOptions {
    pub fn new(board_path: impl Into<PathBuf>) -> Self {
        DriveOptions {
            board_path: board_path.into(),
            ticks: None,
            scenario: None,
            seed: None,
            model: None,
            policy: PolicyKind::Model,
            virtual_time: false,
            progress: false,
            record_events: true,
            store: None,
            repeat: false,
            sim_observer: None,
        }
    }
}

/// Load everything, check it, run the loop, and build the report. Bad input fails before the first tick.
pub fn drive(opts: &DriveOptions) -> anyhow::Result<RunReport> {
    drive_with_metrics(opts).map(|(r, _)| r)
}

/// As [`drive`], also returning the simulator's episode metrics on sim boards.
pub fn drive_with_metrics(opts: &DriveOptions) -> anyhow::Result<(RunReport, Option<EpisodeMetrics>)> {
    let board = Board::load(&opts.board_path)?;
    board.check_cpus_here().map_err(|e| bad_input(format!("board {}: {e}", opts.board_path.display())))?;
    let scenario = opts.scenario.clone().unwrap_or_else(|| board.sim.scenario.clone());
    let seed = opts.seed.unwrap_or(board.sim.seed);
    let uses_sim = board.camera.source == CameraSource::Sim || board.vehicle.link == LinkKind::Sim;
    if uses_sim && !crate::sim::scenario_names().contains(&scenario.as_str()) {
        let valid = crate::sim::scenario_names().join(", ");
        return Err(bad_input(format!("sim: unknown scenario '{scenario}'; valid: {valid}")));
    }
    let manifest_path = opts.model.clone().unwrap_or_else(|| board.model_manifest());
    let mut student: Box<dyn Student> = match opts.policy {
        PolicyKind::Model => Box::new(TractStudent::load(&manifest_path)?),
        PolicyKind::Expert => {
            if board.camera.source != CameraSource::Sim {
                return Err(bad_input("--policy expert needs a simulator board (camera.source = \"sim\")"));
            }
            Box::new(ExpertPolicy::default())
        }
    };
    let manifest = crate::model::Manifest::load(&manifest_path)?;
    // The board's own model must be what the profile says; an explicit --model is the user's choice.
    if let (Some(want), PolicyKind::Model, None) = (&board.model.precision, opts.policy, &opts.model) {
        if &manifest.model.precision != want {
            return Err(bad_input(format!(
                "board {} expects model precision {want}, {} is {}",
                board.board.name,
                manifest_path.display(),
                manifest.model.precision
            )));
        }
    }
    let [_, h, w] = manifest
        .input(crate::model::Role::Image)
        .map(|t| [t.shape[1], t.shape[2], t.shape[3]])
        .unwrap_or([3, 128, 256]);
    let cam = &board.camera;
    let mut pre = Preprocessor::new(cam.width, cam.height, cam.crop_bottom_rows, w, h, &manifest.preprocess);

    let realtime = apply_realtime_settings(&board);

    let cfg = LoopConfig {
        period_us: (board.period_ms() * 1e3).round() as u64,
        deadline_us: (board.deadline_ms() * 1e3).round() as u64,
        stale_after: Duration::from_millis(cam.stale_after_ms as u64),
        max_ticks: opts.ticks,
        warmup_ticks: board.control_loop.warmup_ticks,
    };
    let live = Arc::new(LiveStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = SignalGuard(
        install_stop_signals(&stop).map_err(|e| anyhow::anyhow!("installing the stop signal handlers: {e}"))?,
    );
    let monitor = Monitor::start(live.clone(), opts.ticks, opts.progress);
    // Event recorder + store writer thread, sized and checked before the first tick.
    let run_id = crate::store::runs::new_run_id();
    let store_dir = if opts.record_events { store_dir_for(opts, &board, &run_id)? } else { PathBuf::new() };
    let (mut recorder, writer) = if opts.record_events {
        let mut rc = RecorderConfig::for_rate(board.control_loop.rate_hz as f32, 2.0, 1.0);
        rc.model_id = manifest.model_id();
        rc.run = run_info(&run_id, &board, &manifest, opts.policy, (&scenario, seed));
        if let Some(f) = manifest.output(crate::model::Role::Features) {
            rc.feature_shape = [f.shape[1].min(u16::MAX as usize) as u16, f.shape[2].min(u16::MAX as usize) as u16];
        }
        let (mut rec, sink) = EventRecorder::new(rc).map_err(|e| bad_input(format!("event recorder: {e:#}")))?;
        rec.set_next_event_id(crate::store::last_event_id(&store_dir).map_or(1, |i| i + 1));
        let store_cfg = crate::store::segment::StoreConfig {
            budget_bytes: board.store.budget_bytes,
            segment_bytes: (board.store.budget_bytes / 8).clamp(256 * 1024, 4 * 1024 * 1024),
            fsync: crate::store::segment::FsyncPolicy::parse(&board.store.fsync)?,
        };
        let w = crate::store::spawn_writer(crate::store::WriterConfig::new(store_dir.clone(), store_cfg), sink)
            .map_err(|e| anyhow::anyhow!("starting the store writer: {e}"))?;
        (Some(rec), Some(w))
    } else {
        (None, None)
    };
    // `kill -USR1 <pid>`: the manual / external trigger (a snapshot of the last seconds, cause "external request").
    let usr1 = match recorder.as_ref() {
        Some(rec) => Some(
            signal_hook::flag::register(signal_hook::consts::SIGUSR1, rec.external_trigger().flag().clone())
                .map_err(|e| anyhow::anyhow!("installing the SIGUSR1 trigger: {e}"))?,
        ),
        None => None,
    };
    if let Some(id) = usr1 {
        signals.0.push(id);
        tracing::debug!("manual snapshot: kill -USR1 {}", std::process::id());
    }
    let mut controller = Controller::new();
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let mut clock: Box<dyn Clock> =
        if opts.virtual_time { Box::new(VirtualClock::default()) } else { Box::new(EmbassyClock::new()) };

    let mut go = |camera: &mut dyn FrameSource, vehicle: &mut dyn VehicleLink| {
        run_loop(
            &cfg,
            clock.as_mut(),
            camera,
            &mut pre,
            student.as_mut(),
            &mut controller,
            &mut supervisor,
            vehicle,
            recorder.as_mut(),
            &live,
            &stop,
        )
    };
    let sim_opts = |sync_timeout: Duration, render: bool| SimOptions {
        scenario: scenario.clone(),
        seed,
        width: cam.width,
        height: cam.height,
        dt: board.sim.dt_s.unwrap_or((cfg.period_us as f32) * 1e-6),
        with_expert: opts.policy == PolicyKind::Expert,
        sync_timeout,
        repeat: opts.repeat,
        render,
        observer: opts.sim_observer.clone(),
    };
    // Besides the loop outcome and the sim's episodes: what the camera delivered, and for a real camera the
    // negotiated device and format (the report's camera fields).
    let (outcome, metrics, camera_stats, camera_desc) = match (board.camera.source, board.vehicle.link) {
        (CameraSource::Sim, LinkKind::Sim) => {
            let sync =
                if opts.virtual_time { Duration::from_secs(5) } else { Duration::from_micros(cfg.period_us / 2) };
            let (harness, mut camera, mut vehicle) = SimHarness::spawn(sim_opts(sync, true))?;
            let o = go(&mut camera, &mut vehicle);
            (o, Some(harness.finish_all()?), camera.stats(), None)
        }
        #[cfg(target_os = "linux")]
        (CameraSource::V4l2, link) => {
            let mut camera = open_v4l2(&board)?;
            tracing::info!("camera format negotiated: {}", camera.info());
            let (o, episodes) = match link {
                // The simulator is the vehicle (and the world); the frames come from the real device.
                LinkKind::Sim => {
                    let (harness, _sim_frames, mut vehicle) = SimHarness::spawn(sim_opts(Duration::ZERO, false))?;
                    let o = go(&mut camera, &mut vehicle);
                    (o, Some(harness.finish_all()?))
                }
                LinkKind::Udp => {
                    let mut vehicle = open_udp(&board)?;
                    (go(&mut camera, &mut vehicle), None)
                }
            };
            (o, episodes, camera.stats(), Some(camera.info().to_string()))
        }
        (source, link) => {
            return Err(bad_input(format!(
                "board {}: camera.source {source:?} with vehicle.link {link:?} is not supported",
                board.board.name
            )));
        }
    };
    monitor.finish();
    let episodes = metrics.as_ref().map_or(0, Vec::len);
    let metrics = metrics.and_then(combine_episodes);
    drop(signals);
    let rec_stats = recorder.as_ref().map(|r| r.stats());
    let writer_stats = writer.map(|w| w.stop());
    if let Some(ws) = &writer_stats {
        if let Some(err) = &ws.last_error {
            tracing::warn!("store {}: {err}", store_dir.display());
        }
    }

    let mut faults = BTreeMap::new();
    for (i, f) in Fault::ALL.iter().enumerate() {
        if outcome.fault_counts[i] > 0 {
            faults.insert(f.name().to_string(), outcome.fault_counts[i]);
        }
    }
    let measured = outcome.measured_ticks.max(1) as f64;
    let counting = alloc_counter::is_installed();
    let infer_mean = outcome.infer.mean();
    let report = RunReport {
        run_id,
        board: board.board.name.clone(),
        model: if opts.policy == PolicyKind::Expert { "privileged expert".into() } else { manifest.model.name.clone() },
        model_is_fixture: opts.policy == PolicyKind::Model && manifest.model.fixture,
        policy: format!("{:?}", opts.policy).to_lowercase(),
        clock: if opts.virtual_time { "virtual" } else { "real" },
        rate_hz: board.control_loop.rate_hz,
        realtime,
        ticks: outcome.ticks,
        deadline_ms: board.deadline_ms(),
        deadline_misses: outcome.deadline_misses,
        skipped_ticks: outcome.skipped_ticks,
        tick_ms: Quantiles::of(&outcome.tick),
        infer_ms: Quantiles::of(&outcome.infer),
        overhead_ms: Quantiles::of(&outcome.overhead),
        jitter_ms: Quantiles::of(&outcome.jitter),
        camera_ms: Quantiles::of(&outcome.camera),
        preprocess_ms: Quantiles::of(&outcome.preprocess),
        overhead_ratio: if infer_mean > 0.0 { outcome.overhead.mean() / infer_mean } else { 0.0 },
        allocs_per_tick_outside_inference: counting.then(|| outcome.allocs_outside as f64 / measured),
        allocs_per_inference: counting.then(|| outcome.allocs_inside as f64 / measured),
        measured_ticks: outcome.measured_ticks,
        fallbacks: outcome.fallbacks,
        fallback_ticks: outcome.fallback_ticks,
        nominal_ticks_at_end: outcome.nominal_ticks_at_end,
        faults,
        frames_dropped: camera_stats.dropped,
        frames_captured: camera_stats.frames,
        camera_reconnects: camera_stats.reconnects,
        camera_bad_frames: camera_stats.bad,
        camera: camera_desc,
        events_flagged: outcome.fallbacks,
        events_written: writer_stats.as_ref().map_or(0, |w| w.written),
        events_dropped: rec_stats.map_or(0, |r| r.dropped_no_slot + r.dropped_queue_full)
            + writer_stats.as_ref().map_or(0, |w| w.dropped_store + w.dropped_encode),
        event_triggers: rec_stats.map_or(0, |r| r.triggers),
        store_dir: writer_stats.as_ref().map(|_| store_dir.display().to_string()),
        commands_hash: outcome.commands_hash.hex(),
        scenario: metrics.as_ref().map(|_| scenario.clone()),
        seed: metrics.as_ref().map(|_| seed),
        route_completion: metrics.as_ref().map(|m| m.route_completion as f64),
        infractions: metrics.as_ref().map(|m| serde_json::to_value(m.infractions).unwrap_or_default()),
        infractions_text: metrics.as_ref().map(|m| m.infractions.describe()),
        route_ended: metrics.as_ref().map(|m| m.ended),
        driving_score: metrics.as_ref().map(|m| m.driving_score as f64),
        episodes: metrics.as_ref().map(|_| episodes),
        wall_s: outcome.wall.as_secs_f64(),
    };
    Ok((report, metrics))
}

/// The store this run writes: `--store`, else the board's fixed `store.path`, else a new per-run directory under
/// the user's state directory. A store another process is writing is refused before the first tick (exit 2),
/// rather than driving on without recording.
fn store_dir_for(opts: &DriveOptions, board: &Board, run_id: &str) -> anyhow::Result<PathBuf> {
    let dir = match (&opts.store, &board.store.path) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => board.resolve(p),
        (None, None) => crate::store::runs::new_run_store(&crate::store::runs::runs_dir()?, run_id)?,
    };
    crate::store::segment::check_not_locked(&dir)
        .map_err(|e| bad_input(format!("{e}: not recording into it; pass another --store DIR, or --no-store")))?;
    Ok(dir)
}

/// Which run this is, chosen once before the first tick and copied into every snapshot (`store ls`, reports).
/// Scenario and seed whenever the simulator is the vehicle (its world is what was driven, even behind a real
/// camera); the seed is the first one of a `--repeat` run.
fn run_info(
    run_id: &str,
    board: &Board,
    manifest: &crate::model::Manifest,
    policy: PolicyKind,
    (scenario, seed): (&str, u64),
) -> RunInfo {
    let sim = board.vehicle.link == LinkKind::Sim;
    let model = policy == PolicyKind::Model;
    RunInfo {
        run_id: heapless::String::try_from(run_id).unwrap_or_default(),
        board: RunInfo::bounded(&board.board.name),
        policy: RunInfo::bounded(if model { "model" } else { "expert" }),
        model_sha256: if model { RunInfo::sha256_from_hex(&manifest.model.sha256) } else { [0; 32] },
        scenario: sim.then(|| RunInfo::bounded(scenario)),
        seed: sim.then_some(seed),
    }
}

/// One set of metrics for a run of several episodes (`--repeat`): mean score and route completion, summed
/// infractions, the first seed. A single episode is returned as it is.
fn combine_episodes(mut all: Vec<EpisodeMetrics>) -> Option<EpisodeMetrics> {
    if all.len() <= 1 {
        return all.pop();
    }
    let n = all.len() as f32;
    let mut m = all[0].clone();
    for e in &all[1..] {
        m.infractions.add(&e.infractions);
        m.sim_time_s += e.sim_time_s;
        m.steps += e.steps;
        m.route_length_m += e.route_length_m;
    }
    m.driving_score = all.iter().map(|e| e.driving_score).sum::<f32>() / n;
    m.route_completion = all.iter().map(|e| e.route_completion).sum::<f32>() / n;
    m.infraction_penalty = all.iter().map(|e| e.infraction_penalty).sum::<f32>() / n;
    m.success = all.iter().all(|e| e.success);
    m.termination = all.iter().rev().find_map(|e| e.termination.clone());
    m.ended = all.iter().all(|e| e.ended);
    Some(m)
}

/// The board's V4L2 camera, opened and negotiated (bad format / missing device fail here, before the first tick).
#[cfg(target_os = "linux")]
fn open_v4l2(board: &Board) -> anyhow::Result<crate::camera::v4l2::V4l2Camera> {
    // Format and device were checked when the profile loaded (Board::validate).
    let cam = &board.camera;
    let mut c = crate::camera::v4l2::V4l2Config::new(&cam.device, cam.format, cam.width, cam.height, cam.fps);
    // Declare the device lost a little after the loop would call the frame stale.
    c.frame_timeout = Duration::from_millis(cam.stale_after_ms as u64).max(Duration::from_millis(500)) * 2;
    c.controls = cam.controls.iter().map(|(k, v)| (k.clone(), *v)).collect();
    crate::camera::v4l2::V4l2Camera::open(c)
}

fn open_udp(board: &Board) -> anyhow::Result<crate::vehicle::udp::UdpLink> {
    let v = &board.vehicle;
    let bind = v.bind.as_deref().unwrap_or("0.0.0.0:0");
    let peer = v.peer.as_deref().ok_or_else(|| bad_input("vehicle.peer is required for the udp link"))?;
    crate::vehicle::udp::UdpLink::open(bind, peer, Duration::from_millis(v.state_timeout_ms as u64))
}

/// Best effort: CPU affinity, SCHED_FIFO and mlockall from the board profile; warns where not permitted. Returns
/// what took effect, in words, for the report ("none" when the profile asks for nothing).
fn apply_realtime_settings(board: &Board) -> String {
    let l = &board.control_loop;
    let mut applied = Vec::new();
    // SAFETY: plain libc calls on the current thread with valid, initialised arguments.
    unsafe {
        if !l.cpu_affinity.is_empty() {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in &l.cpu_affinity {
                libc::CPU_SET(*cpu, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                tracing::warn!("cpu_affinity {:?} not applied: {}", l.cpu_affinity, std::io::Error::last_os_error());
            } else {
                applied.push(format!("cpus {:?}", l.cpu_affinity));
            }
        }
        if l.rt_priority > 0 {
            // musl's sched_param has more fields than glibc's: start from zeroes.
            let mut p: libc::sched_param = std::mem::zeroed();
            p.sched_priority = l.rt_priority as i32;
            if libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
                tracing::warn!("SCHED_FIFO {} not permitted: {}", l.rt_priority, std::io::Error::last_os_error());
            } else {
                applied.push(format!("SCHED_FIFO {}", l.rt_priority));
            }
        }
        if l.mlockall {
            if libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) != 0 {
                tracing::warn!("mlockall failed: {}", std::io::Error::last_os_error());
            } else {
                applied.push("mlockall".into());
            }
        }
    }
    if applied.is_empty() {
        "none".into()
    } else {
        applied.join(", ")
    }
}

/// Signal handlers of one run, unregistered when it ends (also on an early error return).
struct SignalGuard(Vec<signal_hook::SigId>);

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Ctrl-C, SIGTERM (how systemd stops a service) and SIGHUP end the loop cleanly: the car is stopped, the store
/// flushed and the report written. A second one while stopping exits at once (status 130). Registered per run and
/// unregistered after it, so each run (e.g. each episode of `sim eval`) gets its own stop flag.
fn install_stop_signals(stop: &Arc<AtomicBool>) -> anyhow::Result<Vec<signal_hook::SigId>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut ids = Vec::new();
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Order matters: the conditional exit sees the flag as it was before this signal set it.
        ids.push(signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())?);
        ids.push(signal_hook::flag::register(sig, stop.clone())?);
    }
    Ok(ids)
}

/// Live stats off the loop thread: a progress line on a terminal and a tracing line every few seconds.
struct Monitor {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(live: Arc<LiveStats>, total: Option<u64>, progress: bool) -> Monitor {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let handle = std::thread::Builder::new()
            .name("rtvla-monitor".into())
            .spawn(move || {
                let bar = if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    let b = match total {
                        Some(t) => indicatif::ProgressBar::new(t),
                        None => indicatif::ProgressBar::new_spinner(),
                    };
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} ticks {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    Some(b)
                } else {
                    None
                };
                let mut last_log = Instant::now();
                while !d.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    let ticks = live.ticks.load(Ordering::Relaxed);
                    let msg = format!(
                        "tick {:.2} ms, infer {:.2} ms, misses {}, fallbacks {}",
                        live.last_tick_us.load(Ordering::Relaxed) as f64 / 1e3,
                        live.last_infer_us.load(Ordering::Relaxed) as f64 / 1e3,
                        live.deadline_misses.load(Ordering::Relaxed),
                        live.fallbacks.load(Ordering::Relaxed)
                    );
                    if let Some(b) = &bar {
                        b.set_position(ticks);
                        b.set_message(msg.clone());
                    }
                    if last_log.elapsed() >= Duration::from_secs(5) {
                        tracing::info!(ticks, "{msg}");
                        last_log = Instant::now();
                    }
                }
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
            })
            .ok();
        Monitor { done, handle }
    }

    fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Options for one simulator episode in virtual time (deterministic, as fast as possible).
pub fn sim_drive_options(
    board: &Path,
    policy: PolicyKind,
    model: Option<&Path>,
    scenario: &str,
    seed: u64,
    ticks: Option<u64>,
) -> DriveOptions {
    let mut o = DriveOptions::new(board);
    o.policy = policy;
    o.model = model.map(Path::to_path_buf);
    o.scenario = Some(scenario.to_string());
    o.seed = Some(seed);
    o.ticks = ticks;
    o.virtual_time = true;
    o.record_events = false;
    o
}

/// The host-sim board `sim eval` drives runtime policies on: the bundled one (see [`crate::bundle`]).
pub fn sim_eval_board() -> anyhow::Result<PathBuf> {
    crate::bundle::find("boards/host-sim.toml")
}

/// One closed-loop simulator episode through the same runtime path as `drive` (simulated time, until the episode
/// ends). `policy` is `model` (the student from `model`, default the board's) or `expert`.
pub fn sim_episode(policy: &str, model: Option<&Path>, scenario: &str, seed: u64) -> anyhow::Result<EpisodeMetrics> {
    let policy = match policy {
        "model" => PolicyKind::Model,
        "expert" => PolicyKind::Expert,
        other => {
            return Err(bad_input(format!("policy {other:?} is not run through the runtime (use model or expert)")))
        }
    };
    let opts = sim_drive_options(&sim_eval_board()?, policy, model, scenario, seed, None);
    let (_, metrics) = drive_with_metrics(&opts)?;
    metrics.ok_or_else(|| anyhow::anyhow!("the simulator returned no metrics"))
}
