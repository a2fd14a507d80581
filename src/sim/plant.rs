//! The simulator plugged into the runtime ([`Plant`]): `rtvla drive` on a sim board, `sim eval --policy model`,
//! `sim replay --policy model`. The runtime drives; the world, its expert and its scoring stay here.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::harness::{SimHarness, SimObserver, SimOptions};
use super::EpisodeMetrics;
use crate::board::Board;
use crate::error::bad_input;
use crate::model::{Inference, PolicyInput, Student};
use crate::report::RunReport;
use crate::runtime::{DriveOptions, Plant, PlantFactory, PlantIo, PlantRequest, PolicyKind};
use crate::types::Waypoints;

/// What the CLI chose of the simulated world (the board's `[sim]` section fills the rest).
#[derive(Clone, Debug, Default)]
pub struct SimRun {
    pub scenario: Option<String>,
    pub seed: Option<u64>,
    /// When the route ends, drive the next seed instead of stopping (soak runs).
    pub repeat: bool,
    /// Sees every state the simulator steps through (replays).
    pub observer: Option<SimObserver>,
}

/// Where a plant leaves its episodes for a caller that wants more than the report (eval, replay).
pub type EpisodesOut = Arc<Mutex<Vec<EpisodeMetrics>>>;

/// A factory for [`DriveOptions::plant`]. Bad scenario names fail when the runtime calls it (exit 2).
pub fn factory(run: SimRun, out: Option<EpisodesOut>) -> PlantFactory {
    PlantFactory(Arc::new(move |board: &Board| -> anyhow::Result<Box<dyn Plant>> {
        let scenario = run.scenario.clone().unwrap_or_else(|| board.sim.scenario.clone());
        if !super::scenario_names().contains(&scenario.as_str()) {
            let valid = super::scenario_names().join(", ");
            return Err(bad_input(format!("sim: unknown scenario '{scenario}'; valid: {valid}")));
        }
        Ok(Box::new(SimPlant {
            scenario,
            seed: run.seed.unwrap_or(board.sim.seed),
            dt: board.sim.dt_s,
            repeat: run.repeat,
            observer: run.observer.clone(),
            harness: None,
            out: out.clone(),
        }))
    }))
}

struct SimPlant {
    scenario: String,
    seed: u64,
    dt: Option<f32>,
    repeat: bool,
    observer: Option<SimObserver>,
    harness: Option<SimHarness>,
    out: Option<EpisodesOut>,
}

impl Plant for SimPlant {
    fn open(&mut self, req: &PlantRequest, frames: bool) -> anyhow::Result<PlantIo> {
        let (harness, camera, vehicle) = SimHarness::spawn(SimOptions {
            scenario: self.scenario.clone(),
            seed: self.seed,
            width: req.width,
            height: req.height,
            dt: self.dt.unwrap_or(req.period_s),
            with_expert: req.privileged,
            // Behind a real camera nobody waits for our frames.
            sync_timeout: if frames { req.sync_timeout } else { Duration::ZERO },
            repeat: self.repeat,
            render: frames,
            observer: self.observer.clone(),
        })?;
        self.harness = Some(harness);
        Ok(PlantIo { camera: frames.then(|| Box::new(camera) as _), vehicle: Box::new(vehicle) })
    }

    fn privileged_policy(&self) -> Option<Box<dyn Student>> {
        Some(Box::new(ExpertPolicy::default()))
    }

    fn run_label(&self) -> Option<(String, u64)> {
        Some((self.scenario.clone(), self.seed))
    }

    fn finish(&mut self, report: &mut RunReport) -> anyhow::Result<()> {
        let Some(h) = self.harness.take() else { return Ok(()) };
        let all = h.finish_all()?;
        let episodes = all.len();
        if let Some(out) = &self.out {
            if let Ok(mut o) = out.lock() {
                o.extend(all.iter().cloned());
            }
        }
        let Some(m) = combine_episodes(all) else { return Ok(()) };
        report.scenario = Some(self.scenario.clone());
        report.seed = Some(self.seed);
        report.route_completion = Some(m.route_completion as f64);
        report.infractions = Some(serde_json::to_value(m.infractions).unwrap_or_default());
        report.infractions_text = Some(m.infractions.describe());
        report.route_ended = Some(m.ended);
        report.driving_score = Some(m.driving_score as f64);
        report.episodes = Some(episodes);
        Ok(())
    }
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
    m.commands_hash = None;
    Some(m)
}

/// Options for one simulator episode in virtual time (deterministic, as fast as possible).
pub fn sim_drive_options(
    board: &Path,
    policy: PolicyKind,
    model: Option<&Path>,
    run: SimRun,
    ticks: Option<u64>,
) -> DriveOptions {
    episode_options(board, policy, model, run, ticks, None)
}

fn episode_options(
    board: &Path,
    policy: PolicyKind,
    model: Option<&Path>,
    run: SimRun,
    ticks: Option<u64>,
    out: Option<EpisodesOut>,
) -> DriveOptions {
    let mut o = DriveOptions::new(board);
    o.policy = policy;
    o.model = model.map(Path::to_path_buf);
    o.ticks = ticks;
    o.virtual_time = true;
    o.record_events = false;
    o.plant = Some(factory(run, out));
    o
}

/// The host-sim board `sim eval` drives runtime policies on: the bundled one (see [`crate::bundle`]).
pub fn sim_eval_board() -> anyhow::Result<PathBuf> {
    crate::bundle::find("boards/host-sim.toml")
}

/// Drive one episode on the host-sim board through the runtime (simulated time, until it ends); its report and
/// the simulator's episodes.
pub fn drive_episode(
    policy: PolicyKind,
    model: Option<&Path>,
    run: SimRun,
) -> anyhow::Result<(RunReport, Vec<EpisodeMetrics>)> {
    let out: EpisodesOut = Arc::default();
    let opts = episode_options(&sim_eval_board()?, policy, model, run, None, Some(out.clone()));
    let report = crate::runtime::drive(&opts)?;
    let episodes = out.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((report, episodes))
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
    let run = SimRun { scenario: Some(scenario.into()), seed: Some(seed), ..SimRun::default() };
    let (_, mut episodes) = drive_episode(policy, model, run)?;
    episodes.pop().ok_or_else(|| anyhow::anyhow!("the simulator returned no metrics"))
}
