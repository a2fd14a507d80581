//! `rtvla drive`: load a board profile, check everything, wire its frame source and vehicle link, run the fixed-rate
//! loop, and report. One room each: the loop (`control_loop`), the wiring of a profile into sources and links
//! (`wiring`), the monitor (`monitor`), what a run asks of the OS (`os`), and the report (`report`).
//!
//! The runtime does not know where frames come from: a V4L2 camera, a rig on the wire, or a world plugged in
//! in-process through [`Plant`] (the simulator, which keeps its own scoring) are all a FrameSource + VehicleLink.

mod cold_start;
mod control_loop;
mod monitor;
pub mod os;
mod report;
pub mod status;
mod wiring;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

pub use cold_start::mark_process_start;
pub use control_loop::{run_loop, LiveStats, LoopConfig, LoopOutcome, Stages};
pub use wiring::{Plant, PlantFactory, PlantIo, PlantRequest};

use crate::board::{Board, CameraSource, LinkKind, PacingConfig};
use crate::clock::{Clock, EmbassyClock, VirtualClock};
use crate::control::Controller;
use crate::error::bad_input;
use crate::events::{EventRecorder, RecorderConfig, RunInfo};
use crate::model::{Student, TractStudent};
use crate::preprocess::Preprocessor;
use crate::report::RunReport;
use crate::supervisor::{Supervisor, SupervisorConfig};

/// Which policy produces the waypoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyKind {
    /// The student network (tract).
    Model,
    /// The plugged-in world's privileged policy (the simulator's expert): same controller, ground-truth targets.
    Expert,
}

/// Options of one `rtvla drive` run (CLI flags over the board profile).
#[derive(Clone, Debug)]
pub struct DriveOptions {
    pub board_path: PathBuf,
    pub ticks: Option<u64>,
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
    /// The in-process world for boards whose camera or vehicle is `sim` (see [`Plant`]).
    pub plant: Option<PlantFactory>,
}

impl DriveOptions {
    pub fn new(board_path: impl Into<PathBuf>) -> Self {
        DriveOptions {
            board_path: board_path.into(),
            ticks: None,
            model: None,
            policy: PolicyKind::Model,
            virtual_time: false,
            progress: false,
            record_events: true,
            store: None,
            plant: None,
        }
    }
}

/// Load everything, check it, run the loop, and build the report. Bad input fails before the first tick.
pub fn drive(opts: &DriveOptions) -> anyhow::Result<RunReport> {
    let mut timer = cold_start::ColdStartTimer::start();
    let board = Board::load(&opts.board_path)?;
    board.check_cpus_here().map_err(|e| bad_input(format!("board {}: {e}", opts.board_path.display())))?;
    timer.parts().board_load += timer.lap();
    let mut plant = wiring::plant_for(&board, opts.plant.as_ref())?;
    timer.parts().plant += timer.lap();
    let manifest_path = opts.model.clone().unwrap_or_else(|| board.model_manifest());
    let mut student = load_student(opts.policy, &manifest_path, plant.as_deref(), &mut timer)?;
    let manifest = crate::model::Manifest::load(&manifest_path)?;
    timer.parts().model_load += timer.lap();
    check_precision(&board, opts, &manifest, &manifest_path)?;
    let [_, h, w] = manifest
        .input(crate::model::Role::Image)
        .map(|t| [t.shape[1], t.shape[2], t.shape[3]])
        .unwrap_or([3, 128, 256]);
    let cam = &board.camera;
    let mut pre = Preprocessor::new(cam.width, cam.height, cam.crop_bottom_rows, w, h, &manifest.preprocess);
    timer.lap();
    let realtime = os::apply_realtime_settings(&board);
    timer.parts().realtime_setup += timer.lap();
    let lockstep = board.vehicle.pacing == PacingConfig::Lockstep;
    let cfg = LoopConfig {
        period_us: (board.period_ms() * 1e3).round() as u64,
        deadline_us: (board.deadline_ms() * 1e3).round() as u64,
        stale_after: Duration::from_millis(cam.stale_after_ms as u64),
        max_ticks: opts.ticks,
        warmup_ticks: board.control_loop.warmup_ticks,
    };
    let live = Arc::new(LiveStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = os::SignalGuard(
        os::install_stop_signals(&stop).map_err(|e| anyhow::anyhow!("installing the stop signal handlers: {e}"))?,
    );
    let run_id = crate::store::runs::new_run_id();
    let label = plant.as_ref().and_then(|p| p.run_label());
    let info = run_info(&run_id, &board, &manifest, opts.policy, label);
    timer.lap();
    let (mut recorder, writer, store_dir) = open_recorder(opts, &board, &manifest, info)?;
    timer.parts().store_open += timer.lap();
    // Evaluation episodes (simulated time) are nobody's service: no status socket for them.
    let status = (!opts.virtual_time).then(|| {
        status::StatusServer::start(status::StatusInfo {
            board: board.board.name.clone(),
            model: manifest.model.name.clone(),
            model_sha256: manifest.model.sha256.clone(),
            run_id: run_id.clone(),
            rate_hz: board.control_loop.rate_hz,
            store_dir: writer.as_ref().map(|_| store_dir.display().to_string()),
            writer: writer.as_ref().map(|w| w.counters()),
        })
    });
    let monitor = monitor::Monitor::start(live.clone(), opts.ticks, opts.progress, status);
    if let Some(rec) = recorder.as_ref() {
        // `kill -USR1 <pid>`: the manual / external trigger (a snapshot of the last seconds, "external request").
        let id = signal_hook::flag::register(signal_hook::consts::SIGUSR1, rec.external_trigger().flag().clone())
            .map_err(|e| anyhow::anyhow!("installing the SIGUSR1 trigger: {e}"))?;
        signals.0.push(id);
        tracing::debug!("manual snapshot: kill -USR1 {}", std::process::id());
    }
    let virtual_clock = opts.virtual_time || lockstep;
    let req = PlantRequest {
        width: cam.width,
        height: cam.height,
        period_s: cfg.period_us as f32 * 1e-6,
        virtual_time: virtual_clock,
        // A lockstep source waits for the frame answering the last command: long on the rig's clock, half a
        // period on ours.
        sync_timeout: if virtual_clock { Duration::from_secs(5) } else { Duration::from_micros(cfg.period_us / 2) },
        privileged: opts.policy == PolicyKind::Expert,
    };
    timer.lap();
    let mut io = wiring::open(&board, plant.as_mut(), &req)?;
    timer.parts().camera_open += timer.lap();
    let mut clock: Box<dyn Clock> =
        if virtual_clock { Box::new(VirtualClock::default()) } else { Box::new(EmbassyClock::new()) };
    let mut controller = Controller::new();
    let mut supervisor = Supervisor::new(SupervisorConfig::default());
    let mut stages = Stages {
        source: io.camera.as_mut(),
        pre: &mut pre,
        student: student.as_mut(),
        controller: &mut controller,
        supervisor: &mut supervisor,
        vehicle: io.vehicle.as_mut(),
        recorder: recorder.as_mut(),
    };
    let loop_start = std::time::Instant::now();
    let outcome = run_loop(&cfg, clock.as_mut(), &mut stages, &live, &stop);
    let (first_command, first_infer_ms) = outcome.first_command.map_or((None, 0.0), |(t, ms)| (Some(t), ms));
    let cold_start = timer.finish(loop_start, first_command, first_infer_ms);
    monitor.finish();
    drop(signals);
    let run = report::RunFacts {
        run_id,
        board: &board,
        manifest: &manifest,
        policy: opts.policy,
        clock: if lockstep {
            "lockstep"
        } else if opts.virtual_time {
            "virtual"
        } else {
            "real"
        },
        realtime,
        camera_stats: io.camera.stats(),
        camera_desc: io.camera_desc.clone(),
        link: io.vehicle.counters(),
        recorder: recorder.as_ref().map(|r| r.stats()),
        writer: writer.map(|w| w.stop()),
        store_dir,
    };
    let mut report = report::build(&outcome, run);
    report.cold_start_ms = cold_start;
    drop(io);
    if let Some(p) = plant.as_mut() {
        p.finish(&mut report)?;
    }
    Ok(report)
}

/// The student (timed: its load and optimisation are the cold start's largest parts) or the plant's expert.
fn load_student(
    policy: PolicyKind,
    manifest_path: &std::path::Path,
    plant: Option<&dyn Plant>,
    timer: &mut cold_start::ColdStartTimer,
) -> anyhow::Result<Box<dyn Student>> {
    Ok(match policy {
        PolicyKind::Model => {
            let (student, t) = TractStudent::load_timed(manifest_path)?;
            timer.lap();
            timer.parts().model_load += t.load.as_secs_f64() * 1e3;
            timer.parts().optimise += t.optimise.as_secs_f64() * 1e3;
            Box::new(student)
        }
        PolicyKind::Expert => plant
            .and_then(|p| p.privileged_policy())
            .ok_or_else(|| bad_input("--policy expert needs a simulator board (camera.source = \"sim\")"))?,
    })
}

/// The board's own model must be what the profile says; an explicit --model is the user's choice.
fn check_precision(
    board: &Board,
    opts: &DriveOptions,
    manifest: &crate::model::Manifest,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    if let (Some(want), PolicyKind::Model, None) = (&board.model.precision, opts.policy, &opts.model) {
        if &manifest.model.precision != want {
            return Err(bad_input(format!(
                "board {} expects model precision {want}, {} is {}",
                board.board.name,
                path.display(),
                manifest.model.precision
            )));
        }
    }
    Ok(())
}

type Recording = (Option<EventRecorder>, Option<crate::store::WriterHandle>, PathBuf);

/// The event recorder and its store writer thread, sized and checked before the first tick (or none).
fn open_recorder(
    opts: &DriveOptions,
    board: &Board,
    manifest: &crate::model::Manifest,
    run: RunInfo,
) -> anyhow::Result<Recording> {
    if !opts.record_events {
        return Ok((None, None, PathBuf::new()));
    }
    let store_dir = store_dir_for(opts, board, run.run_id.as_str())?;
    let mut rc = RecorderConfig::for_rate(board.control_loop.rate_hz as f32, 2.0, 1.0);
    rc.model_id = manifest.model_id();
    rc.run = run;
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
    Ok((Some(rec), Some(w), store_dir))
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
/// Scenario and seed when the plugged-in world names them (the simulator: its world is what was driven, even
/// behind a real camera; the seed is the first one of a `--repeat` run).
fn run_info(
    run_id: &str,
    board: &Board,
    manifest: &crate::model::Manifest,
    policy: PolicyKind,
    label: Option<(String, u64)>,
) -> RunInfo {
    let model = policy == PolicyKind::Model;
    RunInfo {
        run_id: heapless::String::try_from(run_id).unwrap_or_default(),
        board: RunInfo::bounded(&board.board.name),
        policy: RunInfo::bounded(if model { "model" } else { "expert" }),
        model_sha256: if model { RunInfo::sha256_from_hex(&manifest.model.sha256) } else { [0; 32] },
        scenario: label.as_ref().map(|(s, _)| RunInfo::bounded(s)),
        seed: label.map(|(_, s)| s),
    }
}

/// Whether a board needs an in-process world (its camera or its vehicle is the simulator).
pub fn board_uses_plant(board: &Board) -> bool {
    board.camera.source == CameraSource::Sim || board.vehicle.link == LinkKind::Sim
}
