//! `rtvla sim ...` subcommands.

use std::path::PathBuf;

use clap::Subcommand;

use super::eval::{self, EvalReport};

/// Simulator commands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Closed-loop evaluation of a policy over scenarios × seeds (Bench2Drive-style table).
    Eval {
        /// expert | blind | idle | random | model (over the wire: `sim serve` + `drive` on a net board)
        #[arg(long, default_value = "expert")]
        policy: String,
        /// Model manifest (policy model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// train | held-out | all | NAME[,NAME...]
        #[arg(long, default_value = "held-out")]
        scenarios: String,
        /// Seed range A..B (exclusive); default: the first 10 seeds of the chosen split.
        #[arg(long)]
        seeds: Option<String>,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print one line per run.
        #[arg(long)]
        verbose: bool,
        /// Runs at a time, each on its own thread with its own model (default: the CPUs this process may use). The
        /// table and the JSON do not depend on it.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
        jobs: Option<u16>,
    },
    /// Be the rig of a hardware-in-the-loop run: render frames and ego state to a runtime over the wire
    /// (`docs/wire-protocol.md`), apply its commands, and score each episode as `sim eval` does. One `rtvla drive`
    /// per episode, on a board with `camera.source = "net"` and `vehicle.peer` = this rig's address.
    Serve {
        /// Address to listen on (the board's `vehicle.peer`).
        #[arg(long, default_value = "127.0.0.1:47700")]
        bind: String,
        /// The runtime's address, when known (its board's `vehicle.bind`): start each episode at once instead of
        /// waiting for the runtime to announce itself.
        #[arg(long)]
        peer: Option<String>,
        /// Pre-shared key file (the board's `vehicle.key_file`); without one, loopback only.
        #[arg(long)]
        key: Option<PathBuf>,
        /// lockstep (deterministic: step when the command for the current frame arrives) or realtime.
        #[arg(long, default_value = "lockstep")]
        pacing: String,
        /// Real time: steps per second.
        #[arg(long, default_value_t = 20.0)]
        rate_hz: f64,
        /// train | held-out | all | NAME[,NAME...]
        #[arg(long, default_value = "held-out")]
        scenarios: String,
        /// Seed range A..B (exclusive); default: the first 10 seeds of the chosen split.
        #[arg(long)]
        seeds: Option<String>,
        /// Frame encoding on the wire: rgb8 or jpeg.
        #[arg(long, default_value = "rgb8")]
        format: String,
        #[arg(long, default_value_t = 256)]
        width: usize,
        #[arg(long, default_value_t = 144)]
        height: usize,
        /// Seconds to wait for a runtime to announce itself before each episode.
        #[arg(long, default_value_t = 60.0)]
        hello_timeout_s: f64,
        /// Fault injection on what the rig sends, percent of datagrams: lost, reordered, duplicated.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        #[arg(long, default_value_t = 0.0)]
        reorder: f64,
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
        /// Real time: send nothing for B seconds from A seconds into each episode ("A,B").
        #[arg(long)]
        blackout: Option<String>,
        /// Write the JSON report (sim eval's, plus the wire's figures) here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Print one line per run.
        #[arg(long)]
        verbose: bool,
    },
    /// Write an expert driving dataset (image shards + JSONL index + data card).
    Dataset {
        #[arg(long)]
        out: PathBuf,
        /// Number of frames to write.
        #[arg(long, default_value_t = 1000)]
        frames: usize,
        /// Seed range A..B (default: the training range).
        #[arg(long)]
        seeds: Option<String>,
        /// all | train | NAME[,NAME...]
        #[arg(long, default_value = "all")]
        scenarios: String,
        /// Image width and height.
        #[arg(long, default_value_t = 256)]
        width: usize,
        #[arg(long, default_value_t = 144)]
        height: usize,
        /// Record every k-th control tick.
        #[arg(long, default_value_t = 2)]
        every: u32,
        /// Frames per shard.
        #[arg(long, default_value_t = 2048)]
        shard: usize,
        /// Probability per tick to start a steering perturbation (recovery data).
        #[arg(long, default_value_t = 0.01)]
        noise: f32,
        /// Closed-loop training data: this driving model (manifest) drives, the expert labels every state it reaches.
        #[arg(long)]
        model: Option<PathBuf>,
        /// With --model: per-tick probability of applying the expert's command instead of the model's (DAgger's β).
        #[arg(long, default_value_t = 0.0)]
        beta: f32,
    },
    /// Write a self-contained HTML replay (bird's-eye + camera) of one episode.
    Replay {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 1_000_000)]
        seed: u64,
        /// expert | idle | random | model (the student, driven through the same runtime path as `drive`)
        #[arg(long, default_value = "expert")]
        policy: String,
        /// Student manifest for `--policy model` (default: the host-sim board's student).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        html: PathBuf,
        /// Keep every k-th tick.
        #[arg(long, default_value_t = 2)]
        every: u32,
        #[arg(long, default_value_t = 256)]
        width: usize,
        #[arg(long, default_value_t = 144)]
        height: usize,
    },
    /// Render benchmark: frames/s at 256×128 and 512×256.
    BenchRender {
        #[arg(long, default_value_t = 400)]
        frames: usize,
    },
    /// Drive the expert for `--step` ticks and write the camera frame as JPEG.
    Frame {
        #[arg(long)]
        scenario: String,
        #[arg(long, default_value_t = 1_000_000)]
        seed: u64,
        #[arg(long, default_value_t = 0)]
        step: u32,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 512)]
        width: usize,
        #[arg(long, default_value_t = 288)]
        height: usize,
    },
    /// List scenario kinds and seed ranges.
    List,
}

pub(super) fn default_seeds(split: &str) -> std::ops::Range<u64> {
    if split == "train" {
        super::TRAIN_SEEDS.start..super::TRAIN_SEEDS.start + 10
    } else {
        super::HELD_OUT_SEEDS.start..super::HELD_OUT_SEEDS.start + 10
    }
}

/// Boxed episode runner: (scenario, seed) -> metrics; threads may share it (`sim eval --jobs`).
pub type EpisodeRunner = Box<eval::SharedRunner>;

/// Episode runner for a policy name: built-ins here, `model` through the runtime.
pub fn episode_runner(policy: &str, model: Option<PathBuf>) -> anyhow::Result<EpisodeRunner> {
    match policy {
        "expert" | "blind" | "idle" | "random" => {
            let p = policy.to_string();
            Ok(Box::new(move |sc: &str, seed: u64| eval::builtin_episode(&p, sc, seed)))
        }
        "model" => {
            // Bad input fails here, once, before any episode runs (not once per run of the table).
            let board = super::plant::sim_eval_board()?;
            let manifest = match &model {
                Some(m) => m.clone(),
                None => crate::board::Board::load(&board)?.model_manifest(),
            };
            crate::model::Manifest::load(&manifest)?;
            let p = policy.to_string();
            Ok(Box::new(move |sc: &str, seed: u64| runtime_episode(&p, model.as_deref(), sc, seed)))
        }
        other => Err(BadInput(format!("unknown policy '{other}'; valid: expert, blind, idle, random, model")).into()),
    }
}

/// Policies that run the student go through the runtime (`super::plant::sim_episode`): the same path as
/// `rtvla drive` on the host-sim board, in virtual time.
fn runtime_episode(
    policy: &str,
    model: Option<&std::path::Path>,
    scenario: &str,
    seed: u64,
) -> anyhow::Result<super::EpisodeMetrics> {
    super::plant::sim_episode(policy, model, scenario, seed)
}

pub use crate::error::BadInput;

/// Run a table with a progress bar (and a line per run with `verbose`): `evaluate` is `eval::evaluate` or
/// `eval::evaluate_parallel` over `total` runs, given the callback that moves the bar.
pub(super) fn evaluate_with_progress(
    total: u64,
    verbose: bool,
    evaluate: impl FnOnce(&mut dyn FnMut(&super::EpisodeMetrics)) -> EvalReport,
) -> EvalReport {
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}<{eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut prog = |m: &super::EpisodeMetrics| {
        pb.inc(1);
        if verbose {
            pb.println(format!(
                "{:<20} {:>8} DS {:>6.1} RC {:>5.1}%  {}{}",
                m.scenario,
                m.seed,
                m.driving_score,
                m.route_completion * 100.0,
                m.termination.as_deref().map_or(String::new(), |t| format!("ended: {t}; ")),
                m.infractions.describe()
            ));
        }
    };
    let rep = evaluate(&mut prog);
    pb.finish_and_clear();
    rep
}

/// `--jobs`, or the CPUs this process may use.
fn eval_jobs(jobs: Option<u16>) -> usize {
    jobs.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), usize::from)
}

/// Print the table and the first errors, write the JSON; exit 1 when no run succeeded. An evaluation a stop signal
/// ended early prints its partial table but writes no JSON (a reader would take it for the whole table) and exits
/// 130, as a shell does for Ctrl-C.
pub(super) fn finish_eval(rep: &EvalReport, json: Option<&std::path::Path>) -> anyhow::Result<i32> {
    print!("{}", rep.table());
    for e in rep.errors.iter().take(5) {
        eprintln!("error: {e}");
    }
    if let Some(why) = &rep.interrupted {
        let skipped = json.map_or(String::new(), |p| format!("; {} not written", p.display()));
        eprintln!("interrupted: {why} (the run in progress is not counted){skipped}");
        return Ok(130);
    }
    if let Some(p) = json {
        std::fs::write(p, serde_json::to_string_pretty(rep)?)?;
    }
    Ok(if !rep.errors.is_empty() && rep.runs.is_empty() { 1 } else { 0 })
}

pub(super) fn bad<T>(r: anyhow::Result<T>) -> anyhow::Result<T> {
    r.map_err(|e| BadInput(format!("{e:#}")).into())
}

/// Run a simulator command; returns the process exit code (0 ok, 2 bad input, 1 runtime fault).
pub fn run(cmd: SimCommand) -> anyhow::Result<i32> {
    match run_inner(cmd) {
        Ok(c) => Ok(c),
        Err(e) if e.downcast_ref::<BadInput>().is_some() || e.downcast_ref::<super::SimError>().is_some() => {
            eprintln!("error: {e:#}");
            Ok(2)
        }
        Err(e) => Err(e),
    }
}

fn run_inner(cmd: SimCommand) -> anyhow::Result<i32> {
    match cmd {
        SimCommand::Serve { .. } => super::serve_cli::run(cmd),
        SimCommand::Eval { policy, model, scenarios, seeds, json, verbose, jobs } => {
            let names = bad(eval::resolve_scenarios(&scenarios))?;
            let seeds = match seeds {
                Some(s) => bad(eval::parse_seeds(&s))?,
                None => default_seeds(&scenarios),
            };
            // Before the first run, so that a stop signal ends the table after the run in progress, for every policy.
            crate::runtime::os::install_process_stop_signals()?;
            let runner = episode_runner(&policy, model)?;
            let total = names.len() as u64 * (seeds.end - seeds.start);
            let rep = evaluate_with_progress(total, verbose, |prog| {
                eval::evaluate_parallel(&policy, &names, seeds, eval_jobs(jobs), &*runner, Some(prog))
            });
            finish_eval(&rep, json.as_deref())
        }
        SimCommand::Dataset { out, frames, seeds, scenarios, width, height, every, shard, noise, model, beta } => {
            if !(0.0..=1.0).contains(&beta) || (beta != 0.0 && model.is_none()) {
                return Err(BadInput(format!("--beta {beta}: a probability in 0..=1, and only with --model")).into());
            }
            if let Some(m) = &model {
                crate::model::Manifest::load(m)?;
            }
            let names = bad(eval::resolve_scenarios(&scenarios))?;
            let seeds = match seeds {
                Some(s) => bad(eval::parse_seeds(&s))?,
                None => super::TRAIN_SEEDS,
            };
            let opts = super::dataset::DatasetOptions {
                out,
                frames,
                seeds,
                scenarios: names,
                width,
                height,
                every: every.max(1),
                shard: shard.max(1),
                noise,
                progress: true,
                policy: model.map(|model| super::dataset::PolicyMix { model, beta }),
            };
            let card = super::dataset::write_dataset(&opts)?;
            println!("wrote {} frames in {} shards to {}", card.frames, card.shards, opts.out.display());
            Ok(0)
        }
        SimCommand::Replay { scenario, seed, policy, model, html, every, width, height } => {
            if !["expert", "idle", "random", "model"].contains(&policy.as_str()) {
                return Err(BadInput(format!("unknown policy '{policy}'; valid: expert, idle, random, model")).into());
            }
            if !(8..=4096).contains(&width) || !(8..=4096).contains(&height) {
                return Err(BadInput(format!("--width/--height {width}x{height}: each must be 8..=4096")).into());
            }
            if model.is_some() && policy != "model" {
                return Err(BadInput("--model goes with --policy model".into()).into());
            }
            if let Some(m) = &model {
                crate::model::Manifest::load(m)?;
            }
            if !super::scenario_names().contains(&scenario.as_str()) {
                return Err(BadInput(format!(
                    "unknown scenario '{scenario}'; valid: {}",
                    super::scenario_names().join(", ")
                ))
                .into());
            }
            let m = match model {
                Some(m) => super::replay::model_replay(&scenario, seed, Some(&m), &html, every.max(1), width, height)?,
                None => super::replay::write_replay(&scenario, seed, &policy, &html, every.max(1), width, height)?,
            };
            println!(
                "{} seed {}: DS {:.1} RC {:.1}%, infractions: {} -> {}",
                scenario,
                seed,
                m.driving_score,
                m.route_completion * 100.0,
                m.infractions.describe(),
                html.display()
            );
            Ok(0)
        }
        SimCommand::BenchRender { frames } => {
            for (w, h) in [(256usize, 128usize), (512, 256)] {
                let fps = super::render::bench(w, h, frames);
                println!("render {w}x{h}: {fps:.0} frames/s");
            }
            Ok(0)
        }
        SimCommand::Frame { scenario, seed, step, out, width, height } => {
            let mut w = super::World::new(&scenario, seed)?;
            let mut ctl = super::ExpertController::new();
            while w.step_count < step && !w.done() {
                let p = w.expert_plan();
                let c = ctl.step(&p.waypoints, w.ego.speed);
                w.step(&c, super::DT);
            }
            let mut r = super::Renderer::new(width, height);
            let mut img = vec![0u8; width * height * 3];
            w.render(&mut r, &mut img);
            let bytes = if out.extension().is_some_and(|e| e == "png") {
                super::replay::png(&img, width, height)
            } else {
                super::replay::jpeg(&img, width, height)?
            };
            std::fs::write(&out, bytes)?;
            println!("{}", w.expert().commentary);
            for a in &w.actors {
                let l = super::geom::to_local(w.ego.pos, w.ego.yaw, a.pos);
                println!("  {:?} at ({:.1}, {:.1}) ego frame, v {:.1}", a.kind, l[0], l[1], a.v);
            }
            Ok(0)
        }
        SimCommand::List => {
            println!("scenarios: {}", super::scenario_names().join(", "));
            println!("train seeds: {:?}   held-out seeds: {:?}", super::TRAIN_SEEDS, super::HELD_OUT_SEEDS);
            Ok(0)
        }
    }
}
