//! `rtvla bench tick`: the loop thread's work in one tick *without* the inference call — preprocess of a frame of
//! the board's camera size, SimLingo controller, supervisor, event recorder (trigger evaluation, lead-up rings
//! with f16 features and a thumbnail) — run `iters` times in a row.
//!
//! Why: the ARM cost ledger (`cargo xtask bench --arm`) counts retired instructions under qemu. What a board can
//! spend on the student is the tick budget minus this; two runs with different `iters` give it per tick, with
//! start-up (board and manifest parsing, buffers) cancelled out. Camera capture and pixel conversion (MJPEG decode)
//! run on the capture thread, on another core, and are not part of it.

use std::path::Path;

use crate::board::Board;
use crate::control::Controller;
use crate::events::{EventRecorder, RecorderConfig, SlotSink, TickTelemetry};
use crate::model::{Manifest, Role};
use crate::preprocess::Preprocessor;
use crate::supervisor::{Faults, Supervisor, SupervisorConfig};
use crate::types::{Waypoints, PATH_POINTS, SPEED_POINTS};

/// The stages of a tick that run on the loop thread around the inference call, set up as `drive` sets them up.
pub struct TickWork {
    pre: Preprocessor,
    controller: Controller,
    supervisor: Supervisor,
    recorder: EventRecorder,
    /// The writer's end, kept alive so the recorder's hand-off stays open (nothing drains it: no trigger fires on
    /// the steady inputs below).
    _sink: SlotSink,
    frame: Vec<u8>,
    frame_size: (usize, usize),
    waypoints: Waypoints,
    features: Vec<f32>,
}

/// What `rtvla bench tick` reports.
#[derive(Debug, serde::Serialize)]
pub struct TickReport {
    pub board: String,
    pub frame: [usize; 2],
    pub model_input: [usize; 3],
    pub iters: u64,
    /// Sum of the steering commands: depends on every tick, so nothing can be optimised away.
    pub checksum: f64,
}

impl TickWork {
    /// Buffers sized from the board's camera and the board's model manifest (its input size, normalisation and
    /// feature shape; the ONNX file is not loaded).
    pub fn new(board: &Board, manifest: &Manifest) -> anyhow::Result<TickWork> {
        let image = manifest.input(Role::Image).map(|t| [t.shape[1], t.shape[2], t.shape[3]]).unwrap_or([3, 128, 256]);
        let cam = &board.camera;
        let pre =
            Preprocessor::new(cam.width, cam.height, cam.crop_bottom_rows, image[2], image[1], &manifest.preprocess);
        let mut rc = RecorderConfig::for_rate(board.control_loop.rate_hz as f32, 2.0, 1.0);
        rc.model_id = manifest.model_id();
        let mut features = Vec::new();
        if let Some(f) = manifest.output(Role::Features) {
            rc.feature_shape = [f.shape[1].min(u16::MAX as usize) as u16, f.shape[2].min(u16::MAX as usize) as u16];
            features = (0..f.shape[1] * f.shape[2]).map(|i| (i % 17) as f32 * 0.1 - 0.8).collect();
        }
        let (recorder, sink) = EventRecorder::new(rc)?;
        // A textured frame (every preprocess tap reads varied bytes) and a gentle left curve at cruise speed.
        let frame = (0..cam.width * cam.height * 3).map(|i| ((i * 7919) % 251) as u8).collect();
        let mut waypoints = Waypoints::default();
        for (i, p) in waypoints.path.iter_mut().enumerate().take(PATH_POINTS) {
            let x = i as f32 + 1.0;
            *p = [x, -0.01 * x * x];
        }
        for (i, p) in waypoints.speed_wps.iter_mut().enumerate().take(SPEED_POINTS) {
            *p = [1.5 * (i as f32 + 1.0), 0.0];
        }
        Ok(TickWork {
            pre,
            controller: Controller::new(),
            supervisor: Supervisor::new(SupervisorConfig::default()),
            recorder,
            _sink: sink,
            frame,
            frame_size: (cam.width, cam.height),
            waypoints,
            features,
        })
    }

    /// One tick's work as the loop does it, inference left out; returns the steering command sent.
    pub fn tick(&mut self, tick: u64) -> f32 {
        let speed = 6.0;
        let image_ok = self.pre.run(&self.frame).is_some();
        let proposed = image_ok.then(|| self.controller.step(&self.waypoints, speed).command);
        let (cmd, _) = self.supervisor.filter(Faults::default(), proposed);
        let t = TickTelemetry {
            time_us: tick * 50_000,
            tick,
            speed,
            target_points: [[15.0, 0.5], [35.0, 1.0]],
            path: self.waypoints.path,
            speed_wps: self.waypoints.speed_wps,
            command: cmd,
            ..TickTelemetry::default()
        };
        let (w, h) = self.frame_size;
        self.recorder.on_tick(&t, Some(&self.features), Some((&self.frame, w, h)));
        cmd.steer
    }
}

/// Load the board and its model manifest, run `iters` ticks.
pub fn run(board_path: &Path, iters: u64) -> anyhow::Result<TickReport> {
    let board = Board::load(board_path)?;
    let manifest = Manifest::load(&board.model_manifest())?;
    let mut work = TickWork::new(&board, &manifest)?;
    let checksum = (0..iters).map(|i| f64::from(work.tick(i))).sum();
    let image = manifest.input(Role::Image).map(|t| [t.shape[1], t.shape[2], t.shape[3]]).unwrap_or([3, 128, 256]);
    Ok(TickReport {
        board: board.board.name.clone(),
        frame: [board.camera.width, board.camera.height],
        model_input: image,
        iters,
        checksum,
    })
}

/// `rtvla bench infer`: `iters` inferences of one model on a fixed textured image, nothing timed. Why not
/// `model bench`: its timing (sorting durations, formatting them) makes the instruction count vary by a few dozen
/// instructions from run to run, and the ARM ledger demands exact agreement. Returns a checksum of the outputs.
pub fn infer_loop(manifest: &Path, iters: u64) -> anyhow::Result<f64> {
    use crate::model::{PolicyInput, Student, TractStudent};
    let mut student = TractStudent::load(manifest)?;
    let [c, h, w] = student.image_shape();
    let image: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect();
    let ego = crate::types::EgoState { speed_mps: 5.0, target_points: [[15.0, 0.5], [35.0, 1.0]] };
    let mut checksum = 0.0;
    for _ in 0..iters {
        let out = student.infer(&PolicyInput { image: &image, ego: &ego, privileged: None })?;
        checksum += f64::from(out.waypoints.path[PATH_POINTS - 1][0]);
    }
    Ok(checksum)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI5: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/boards/raspberry-pi-5.toml");

    #[test]
    fn a_board_tick_preprocesses_its_frame_and_steers_into_the_curve() {
        let r = run(Path::new(PI5), 30).unwrap();
        assert_eq!(r.frame, [640, 480]);
        assert_eq!(r.model_input, [3, 128, 256]);
        // The path bends to negative y (left in the ego frame is y < 0): every tick steers left, none falls back.
        assert!(r.checksum < 0.0, "{r:?}");
        let board = Board::load(Path::new(PI5)).unwrap();
        let manifest = Manifest::load(&board.model_manifest()).unwrap();
        let mut w = TickWork::new(&board, &manifest).unwrap();
        w.tick(0);
        assert!(w.pre.output().iter().any(|v| *v != w.pre.output()[0]), "the preprocessed frame is textured");
    }

    #[test]
    fn the_inference_loop_runs_the_model_iters_times() {
        let fixture = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models/fixture/student_fixture.toml"));
        let one = infer_loop(fixture, 1).unwrap();
        assert!(one.is_finite() && one != 0.0);
        assert!((infer_loop(fixture, 3).unwrap() - 3.0 * one).abs() < 1e-3 * one.abs());
    }

    #[test]
    fn a_missing_board_is_bad_input() {
        let e = run(Path::new("/no/such/board.toml"), 1).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
    }
}
