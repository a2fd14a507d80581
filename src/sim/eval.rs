//! Closed-loop evaluation over scenarios × seeds with a Bench2Drive-style table and JSON report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};

use super::{EpisodeMetrics, Infractions, World, DT};
use crate::runtime::os::stop_requested;
use crate::types::Command;

/// Aggregate of an evaluation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EvalReport {
    pub policy: String,
    /// Mean driving score, 0..100.
    pub driving_score: f32,
    /// Mean route completion, 0..1.
    pub route_completion: f32,
    /// Fraction of runs completed without penalised infractions.
    pub success_rate: f32,
    pub infraction_penalty: f32,
    /// Summed infractions over all runs.
    pub infractions: Infractions,
    /// Infractions per km driven (Bench2Drive style).
    pub infractions_per_km: BTreeMap<String, f32>,
    pub per_scenario: BTreeMap<String, ScenarioSummary>,
    pub runs: Vec<RunRecord>,
    /// Runs whose episode runner failed.
    pub errors: Vec<String>,
    /// `sim serve`: what the network did (latency, loss); absent for in-process evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<super::serve::WireSummary>,
    /// Why the evaluation ended before its last run (a stop signal): the table covers only the runs before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub runs: usize,
    pub driving_score: f32,
    pub route_completion: f32,
    pub success_rate: f32,
}

/// One run in the report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub scenario: String,
    pub seed: u64,
    pub score: f32,
    pub route_completion: f32,
    pub infraction_penalty: f32,
    pub success: bool,
    pub infractions: Infractions,
    pub termination: Option<String>,
    pub sim_time_s: f32,
    /// The runtime's commands fingerprint for this run (policies driven through the runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands_hash: Option<String>,
}

/// Resolve a `--scenarios` argument: `train`/`held-out`/`all` (all kinds) or a comma-separated list of names.
pub fn resolve_scenarios(arg: &str) -> anyhow::Result<Vec<&'static str>> {
    match arg {
        "train" | "held-out" | "heldout" | "all" => Ok(super::scenario_names().to_vec()),
        list => list
            .split(',')
            .map(|n| {
                super::scenario_names().iter().find(|k| **k == n.trim()).copied().ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown scenario '{n}'; valid: train, held-out, all, {}",
                        super::scenario_names().join(", ")
                    )
                })
            })
            .collect(),
    }
}

/// Parse `A..B` (exclusive) or a single seed `A`.
pub fn parse_seeds(s: &str) -> anyhow::Result<std::ops::Range<u64>> {
    let bad = || anyhow::anyhow!("bad seed range '{s}' (expected A..B or A)");
    if let Some((a, b)) = s.split_once("..") {
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        if b <= a {
            return Err(bad());
        }
        Ok(a..b)
    } else {
        let a: u64 = s.trim().parse().map_err(|_| bad())?;
        Ok(a..a + 1)
    }
}

/// Runs one (scenario, seed) episode and can be shared by threads: every run is independent (its own world, runtime
/// and model), so [`evaluate_parallel`] may run several at once.
pub type SharedRunner = dyn Fn(&str, u64) -> anyhow::Result<EpisodeMetrics> + Sync;

/// What became of one (scenario, seed) of the table: `None` when a stop signal came before it finished.
type Slot = Option<anyhow::Result<EpisodeMetrics>>;

/// Every scenario × seed, in the table's order.
fn table_order<'a>(scenarios: &[&'a str], seeds: std::ops::Range<u64>) -> Vec<(&'a str, u64)> {
    scenarios.iter().flat_map(|sc| seeds.clone().map(move |seed| (*sc, seed))).collect()
}

/// Run `run_episode` over every scenario × seed, one after another, and aggregate.
pub fn evaluate(
    policy: &str,
    scenarios: &[&str],
    seeds: std::ops::Range<u64>,
    run_episode: &mut dyn FnMut(&str, u64) -> anyhow::Result<EpisodeMetrics>,
    mut progress: Option<&mut dyn FnMut(&EpisodeMetrics)>,
) -> EvalReport {
    let order = table_order(scenarios, seeds);
    let mut slots: Vec<Slot> = Vec::with_capacity(order.len());
    for &(sc, seed) in &order {
        if stop_requested() {
            break;
        }
        let result = run_episode(sc, seed);
        // A stop signal during the run ended it early (the runtime stops its loop on one): not a finished run.
        if stop_requested() {
            break;
        }
        if let (Ok(m), Some(p)) = (&result, progress.as_mut()) {
            p(m);
        }
        slots.push(Some(result));
    }
    report_from(policy, &order, slots)
}

/// [`evaluate`] with `jobs` runs at a time, each on its own thread. The report is the same for any `jobs` (runs
/// are aggregated in the table's order, and each run is deterministic in its scenario and seed); only the
/// progress callback sees them in the order they finish. Why: a closed-loop training round waits for its
/// held-out evaluation, and one run at a time leaves all cores but one idle.
pub fn evaluate_parallel(
    policy: &str,
    scenarios: &[&str],
    seeds: std::ops::Range<u64>,
    jobs: usize,
    run_episode: &SharedRunner,
    mut progress: Option<&mut dyn FnMut(&EpisodeMetrics)>,
) -> EvalReport {
    let order = table_order(scenarios, seeds);
    let mut slots: Vec<Slot> = (0..order.len()).map(|_| None).collect();
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel();
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, order.len().max(1)) {
            let (tx, next, order) = (tx.clone(), &next, &order);
            s.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= order.len() || stop_requested() {
                    break;
                }
                let result = run_episode(order[i].0, order[i].1);
                if stop_requested() || tx.send((i, result)).is_err() {
                    break; // ended early by the signal: not a finished run
                }
            });
        }
        drop(tx);
        for (i, result) in rx {
            if let (Ok(m), Some(p)) = (&result, progress.as_mut()) {
                p(m);
            }
            slots[i] = Some(result);
        }
    });
    report_from(policy, &order, slots)
}

/// The report of a table whose runs ended as `slots` say (missing or `None`: not finished).
fn report_from(policy: &str, order: &[(&str, u64)], slots: Vec<Slot>) -> EvalReport {
    let mut rep = EvalReport { policy: policy.to_string(), ..Default::default() };
    let mut ms = vec![];
    let mut done = 0;
    for (&(sc, seed), slot) in order.iter().zip(slots) {
        match slot {
            Some(Ok(m)) => ms.push(m),
            Some(Err(e)) => rep.errors.push(format!("{sc}/{seed}: {e:#}")),
            None => continue,
        }
        done += 1;
    }
    if stop_requested() {
        rep.interrupted = Some(format!("stopped by a signal after {done} of {} runs", order.len()));
    }
    aggregate(&mut rep, &ms);
    rep
}

fn aggregate(rep: &mut EvalReport, ms: &[EpisodeMetrics]) {
    let n = ms.len().max(1) as f32;
    let mut km = 0.0;
    for m in ms {
        rep.driving_score += m.driving_score / n;
        rep.route_completion += m.route_completion / n;
        rep.success_rate += f32::from(u8::from(m.success)) / n;
        rep.infraction_penalty += m.infraction_penalty / n;
        rep.infractions.add(&m.infractions);
        km += m.route_completion * m.route_length_m / 1000.0;
        let e = rep.per_scenario.entry(m.scenario.clone()).or_default();
        e.runs += 1;
        e.driving_score += m.driving_score;
        e.route_completion += m.route_completion;
        e.success_rate += f32::from(u8::from(m.success));
        rep.runs.push(RunRecord {
            scenario: m.scenario.clone(),
            seed: m.seed,
            score: m.driving_score,
            route_completion: m.route_completion,
            infraction_penalty: m.infraction_penalty,
            success: m.success,
            infractions: m.infractions,
            termination: m.termination.clone(),
            sim_time_s: m.sim_time_s,
            commands_hash: m.commands_hash.clone(),
        });
    }
    for e in rep.per_scenario.values_mut() {
        let k = e.runs.max(1) as f32;
        e.driving_score /= k;
        e.route_completion /= k;
        e.success_rate /= k;
    }
    let km = f32::max(km, 1e-3);
    let i = &rep.infractions;
    for (k, v) in [
        ("collision_pedestrian", i.collision_pedestrian as f32),
        ("collision_vehicle", i.collision_vehicle as f32),
        ("collision_static", i.collision_static as f32),
        ("red_light", i.red_light as f32),
        ("stop_sign", i.stop_sign as f32),
        ("route_deviation", i.route_deviation as f32),
        ("agent_blocked", i.agent_blocked as f32),
        ("route_timeout", i.route_timeout as f32),
    ] {
        rep.infractions_per_km.insert(k.to_string(), v / km);
    }
}

impl EvalReport {
    /// Bench2Drive-style text table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("policy: {}   runs: {}   errors: {}\n", self.policy, self.runs.len(), self.errors.len()));
        s.push_str(&format!("{:<22}{:>6}{:>9}{:>8}{:>9}\n", "scenario", "runs", "DS", "RC%", "success%"));
        for (k, v) in &self.per_scenario {
            s.push_str(&format!(
                "{:<22}{:>6}{:>9.1}{:>8.1}{:>9.1}\n",
                k,
                v.runs,
                v.driving_score,
                v.route_completion * 100.0,
                v.success_rate * 100.0
            ));
        }
        s.push_str(&format!(
            "{:<22}{:>6}{:>9.1}{:>8.1}{:>9.1}\n",
            "ALL",
            self.runs.len(),
            self.driving_score,
            self.route_completion * 100.0,
            self.success_rate * 100.0
        ));
        s.push_str(&format!("infractions: {}\n", self.infractions.describe()));
        s
    }
}

/// Built-in policies that need no model.
pub fn builtin_episode(policy: &str, scenario: &str, seed: u64) -> anyhow::Result<EpisodeMetrics> {
    let mut w = World::new(scenario, seed)?;
    match policy {
        "expert" | "blind" => {
            w.expert_state.blind = policy == "blind";
            let mut ctl = super::ExpertController::new();
            while !w.done() {
                let plan = w.expert_plan();
                let cmd = ctl.step(&plan.waypoints, w.ego.speed);
                w.step(&cmd, DT);
            }
        }
        "idle" => {
            while !w.done() {
                w.step(&Command { steer: 0.0, throttle: 0.0, brake: 0.0 }, DT);
            }
        }
        "random" => {
            let mut rng = Pcg32::seed_from_u64(seed ^ 0xAB_CDEF);
            let mut cmd = Command::default();
            while !w.done() {
                if w.step_count % 10 == 0 {
                    cmd = Command {
                        steer: rng.random_range(-1.0..1.0),
                        throttle: rng.random_range(0.0..1.0),
                        brake: if rng.random::<f32>() < 0.2 { 1.0 } else { 0.0 },
                    };
                }
                w.step(&cmd, DT);
            }
        }
        other => anyhow::bail!("unknown built-in policy '{other}'"),
    }
    Ok(w.metrics())
}
