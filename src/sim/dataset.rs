//! Expert driving dataset writer.
//!
//! Layout of `--out DIR`:
//! - `images_XXXX.npy`: uint8 array N×H×W×3 (RGB), one per shard (numpy `np.load(mmap_mode="r")` friendly);
//! - `index.jsonl`: one JSON object per frame (shard, index, scenario, seed, step, inputs, targets, labels, Q&A);
//! - `DATA_CARD.md` and `data_card.json`: counts per scenario / action / object and provenance.
//!
//! Who drives: the privileged expert (default), or — for closed-loop training (DAgger, on-policy distillation) — a
//! model given by its manifest ([`PolicyMix`]), optionally β-mixed with the expert: each tick the expert's command is
//! applied with probability β, else the model's. Either way every record holds the **expert's** labels (waypoints,
//! commentary, Q&A) for the state the driving policy reached, and the camera frame the model saw.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;
use serde::{Deserialize, Serialize};

use super::{ExpertController, Renderer, World, DT};
use crate::types::Command;

/// What to write.
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    pub out: PathBuf,
    pub frames: usize,
    pub seeds: std::ops::Range<u64>,
    pub scenarios: Vec<&'static str>,
    pub width: usize,
    pub height: usize,
    /// Record every k-th tick.
    pub every: u32,
    /// Frames per shard.
    pub shard: usize,
    /// Per-tick probability of starting a steering perturbation.
    pub noise: f32,
    pub progress: bool,
    /// Drive a model (β-mixed with the expert) instead of the expert; `None`: the expert drives.
    pub policy: Option<PolicyMix>,
}

/// A model that drives while the expert labels (DAgger-style data collection).
#[derive(Clone, Debug)]
pub struct PolicyMix {
    /// Driving-graph manifest (student or teacher), run through tract as the runtime runs it.
    pub model: PathBuf,
    /// Per-tick probability that the expert's command is applied instead of the model's (0: the model alone).
    pub beta: f32,
}

/// Summary written as `data_card.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DataCard {
    pub format_version: u32,
    pub frames: usize,
    pub shards: usize,
    pub episodes: usize,
    pub width: usize,
    pub height: usize,
    pub every_ticks: u32,
    pub control_hz: f32,
    pub seeds: [u64; 2],
    pub perturbed_frames: usize,
    pub per_scenario: BTreeMap<String, usize>,
    pub per_action: BTreeMap<String, usize>,
    pub per_object: BTreeMap<String, usize>,
    pub per_time_of_day: BTreeMap<String, usize>,
    pub expert_mean_driving_score: f32,
    pub expert_episodes_completed: usize,
    /// `expert`, or `model` when a model drove (β-mixed); absent (= expert) in datasets before 2026-11-30.
    #[serde(default)]
    pub driver: Option<String>,
    /// The model that drove: its manifest path and ONNX sha256.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub model_sha256: Option<String>,
    /// Per-tick probability that the expert's command was applied (model-driven datasets).
    #[serde(default)]
    pub beta: Option<f32>,
    /// Control ticks simulated, and of those the ticks whose applied command was the model's.
    #[serde(default)]
    pub ticks: usize,
    #[serde(default)]
    pub model_ticks: usize,
}

/// Ticks between a frame and the `speed_prev` recorded with it (0.5 s at the simulator's 20 Hz).
pub const SPEED_PREV_STEPS: usize = 10;

/// One line of `index.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FrameRecord {
    pub shard: usize,
    pub index: usize,
    pub scenario: String,
    pub seed: u64,
    pub step: u32,
    pub time_s: f32,
    pub speed: f32,
    /// Ego speed [`SPEED_PREV_STEPS`] ticks (0.5 s) earlier — what a snapshot's window lets the language branch
    /// compare with; the spawn speed before that. Absent in datasets written before 2026-11-26.
    #[serde(default)]
    pub speed_prev: Option<f32>,
    pub target_points: [[f32; 2]; 2],
    pub path: Vec<[f32; 2]>,
    pub speed_wps: Vec<[f32; 2]>,
    pub target_speed: f32,
    /// Command of the controller on the expert's targets (clean).
    pub command: Command,
    /// Command actually applied (differs while perturbed).
    pub applied: Command,
    pub perturbed: bool,
    pub commentary: String,
    pub action: String,
    pub object: String,
    pub object_dist: Option<f32>,
    pub qa: Vec<(String, String)>,
    pub time_of_day: u8,
    pub rain: bool,
    pub fog: bool,
    /// Who drove this tick: `expert` or `model` (absent in expert datasets written before 2026-11-30).
    #[serde(default)]
    pub driver: Option<String>,
    /// The driving model's own plan on this frame (model-driven datasets only).
    #[serde(default)]
    pub model_path: Option<Vec<[f32; 2]>>,
    #[serde(default)]
    pub model_speed_wps: Option<Vec<[f32; 2]>>,
}

/// The model side of a [`PolicyMix`]: tract student, the runtime's preprocess and controller.
struct ModelDriver {
    student: crate::model::TractStudent,
    pre: crate::preprocess::Preprocessor,
    beta: f32,
}

impl ModelDriver {
    fn load(mix: &PolicyMix, width: usize, height: usize) -> anyhow::Result<ModelDriver> {
        use crate::model::Student;
        anyhow::ensure!((0.0..=1.0).contains(&mix.beta), "--beta {} must be in 0..=1", mix.beta);
        let student = crate::model::TractStudent::load(&mix.model)?;
        let [_, h, w] = student.image_shape();
        // The runtime's camera crop (host-sim board: 256x144 -> drop the bottom 16 rows -> 256x128): the rows kept
        // are those that give the model's aspect ratio at the camera's width.
        let kept = width * h / w;
        anyhow::ensure!(
            kept > 0 && kept <= height,
            "camera {width}x{height} cannot feed the model's {w}x{h} input (no crop keeps its aspect ratio)"
        );
        let pre =
            crate::preprocess::Preprocessor::new(width, height, height - kept, w, h, &student.manifest().preprocess);
        Ok(ModelDriver { student, pre, beta: mix.beta })
    }
}

/// Write an `.npy` header for a uint8 array of the given shape.
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape_s}, }}");
    let total = 10 + dict.len() + 1;
    let pad = (64 - total % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut h = Vec::with_capacity(10 + dict.len());
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    h.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    h
}

fn write_shard(dir: &Path, k: usize, data: &[u8], n: usize, h: usize, w: usize) -> anyhow::Result<()> {
    let p = dir.join(format!("images_{k:04}.npy"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p)?);
    f.write_all(&npy_header(&[n, h, w, 3]))?;
    f.write_all(data)?;
    f.flush()?;
    Ok(())
}

/// Generate the dataset; returns its card.
pub fn write_dataset(o: &DatasetOptions) -> anyhow::Result<DataCard> {
    anyhow::ensure!(!o.scenarios.is_empty(), "no scenarios");
    anyhow::ensure!(o.seeds.end > o.seeds.start, "empty seed range");
    std::fs::create_dir_all(&o.out)?;
    let mut index = std::io::BufWriter::new(std::fs::File::create(o.out.join("index.jsonl"))?);
    let frame_bytes = o.width * o.height * 3;
    let mut shard_buf: Vec<u8> = Vec::with_capacity(frame_bytes * o.shard.min(o.frames.max(1)));
    let mut shard_n = 0usize;
    let mut shard_k = 0usize;
    let mut card = DataCard {
        format_version: 1,
        width: o.width,
        height: o.height,
        every_ticks: o.every,
        control_hz: 1.0 / DT,
        seeds: [o.seeds.start, o.seeds.end],
        ..Default::default()
    };
    let mut model = match &o.policy {
        Some(mix) => {
            let m = ModelDriver::load(mix, o.width, o.height)?;
            card.driver = Some("model".into());
            card.model = Some(mix.model.display().to_string());
            card.model_sha256 = Some(m.student.manifest().model.sha256.clone());
            card.beta = Some(mix.beta);
            Some(m)
        }
        None => {
            card.driver = Some("expert".into());
            None
        }
    };
    let mut renderer = Renderer::new(o.width, o.height);
    let mut img = vec![0u8; frame_bytes];
    let pb = if o.progress { indicatif::ProgressBar::new(o.frames as u64) } else { indicatif::ProgressBar::hidden() };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames {msg} [{elapsed}<{eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let n_sc = o.scenarios.len() as u64;
    let n_seeds = o.seeds.end - o.seeds.start;
    let mut episode: u64 = 0;
    let mut ds_sum = 0.0;
    while card.frames < o.frames {
        anyhow::ensure!(episode < n_sc * n_seeds, "seed range exhausted after {} frames", card.frames);
        let sc = o.scenarios[(episode % n_sc) as usize];
        let seed = o.seeds.start + episode / n_sc;
        episode += 1;
        let mut w = World::new(sc, seed)?;
        let mut ctl = ExpertController::new();
        let mut rng = Pcg32::seed_from_u64(seed.wrapping_mul(31) ^ 0xDA7A);
        // The model's own controller, and the β coin (a stream of its own: expert datasets stay bit-identical).
        let mut model_ctl = ExpertController::new();
        let mut mix_rng = Pcg32::seed_from_u64(seed.wrapping_mul(131) ^ 0xBE7A);
        let mut perturb_left = 0u32;
        let mut perturb_steer = 0.0f32;
        // Ego speed of the last SPEED_PREV_STEPS ticks, by tick modulo (spawn speed until filled).
        let mut speed_hist = [w.ego.speed; SPEED_PREV_STEPS];
        pb.set_message(format!("{sc} {seed}"));
        while !w.done() && card.frames < o.frames {
            let slot = w.step_count as usize % SPEED_PREV_STEPS;
            let speed_prev = std::mem::replace(&mut speed_hist[slot], w.ego.speed);
            let record = w.step_count % o.every == 0;
            let out = if record { Some(w.expert()) } else { None };
            let plan_wps = match &out {
                Some(x) => x.waypoints,
                None => w.expert_plan().waypoints,
            };
            let clean = ctl.step(&plan_wps, w.ego.speed);
            // Model-driven: the model sees this tick's frame (rendered once, also recorded) and proposes a command;
            // the expert's is applied instead with probability β.
            let mut base = clean;
            let mut model_plan = None;
            let mut driver = "expert";
            if let Some(md) = model.as_mut() {
                use crate::model::Student;
                w.render(&mut renderer, &mut img);
                let ego = w.ego();
                let image = md.pre.run(&img).ok_or_else(|| anyhow::anyhow!("camera frame size mismatch"))?;
                let inf = md.student.infer(&crate::model::PolicyInput { image, ego: &ego, privileged: None })?;
                let wps = inf.waypoints;
                let proposed = model_ctl.step(&wps, w.ego.speed);
                if !(md.beta > 0.0 && mix_rng.random::<f32>() < md.beta) {
                    base = proposed;
                    driver = "model";
                    card.model_ticks += 1;
                }
                model_plan = Some(wps);
            }
            card.ticks += 1;
            if perturb_left == 0 && o.noise > 0.0 && w.ego.speed > 2.0 && rng.random::<f32>() < o.noise {
                perturb_left = rng.random_range(8..25);
                perturb_steer = rng.random_range(0.08..0.3) * if rng.random::<bool>() { 1.0 } else { -1.0 };
            }
            let mut applied = base;
            let perturbed = perturb_left > 0;
            if perturbed {
                applied.steer = (applied.steer + perturb_steer).clamp(-1.0, 1.0);
                perturb_left -= 1;
            }
            if let Some(x) = out {
                if model.is_none() {
                    w.render(&mut renderer, &mut img);
                }
                shard_buf.extend_from_slice(&img);
                let rec = FrameRecord {
                    shard: shard_k,
                    index: shard_n,
                    scenario: sc.to_string(),
                    seed,
                    step: w.step_count,
                    time_s: w.t,
                    speed: w.ego.speed,
                    speed_prev: Some(speed_prev),
                    target_points: x.target_points,
                    path: x.waypoints.path.to_vec(),
                    speed_wps: x.waypoints.speed_wps.to_vec(),
                    target_speed: x.target_speed,
                    command: clean,
                    applied,
                    perturbed,
                    commentary: x.commentary.clone(),
                    action: x.action.name().to_string(),
                    object: x.object.name().to_string(),
                    object_dist: x.object_dist,
                    qa: x.qa.clone(),
                    time_of_day: w.env.time_of_day,
                    rain: w.env.rain > 0.0,
                    fog: w.env.fog_density > 0.005,
                    driver: Some(driver.to_string()),
                    model_path: model_plan.map(|p| p.path.to_vec()),
                    model_speed_wps: model_plan.map(|p| p.speed_wps.to_vec()),
                };
                serde_json::to_writer(&mut index, &rec)?;
                index.write_all(b"\n")?;
                *card.per_scenario.entry(sc.to_string()).or_default() += 1;
                *card.per_action.entry(x.action.name().to_string()).or_default() += 1;
                *card.per_object.entry(x.object.name().to_string()).or_default() += 1;
                let tod = ["day", "dusk", "night"][w.env.time_of_day.min(2) as usize];
                *card.per_time_of_day.entry(tod.to_string()).or_default() += 1;
                card.perturbed_frames += usize::from(perturbed);
                card.frames += 1;
                shard_n += 1;
                pb.inc(1);
                if shard_n == o.shard {
                    write_shard(&o.out, shard_k, &shard_buf, shard_n, o.height, o.width)?;
                    shard_buf.clear();
                    shard_n = 0;
                    shard_k += 1;
                }
            }
            w.step(&applied, DT);
        }
        card.episodes += 1;
        if w.done() {
            let m = w.metrics();
            ds_sum += m.driving_score;
            card.expert_episodes_completed += 1;
        }
    }
    if shard_n > 0 {
        write_shard(&o.out, shard_k, &shard_buf, shard_n, o.height, o.width)?;
        shard_k += 1;
    }
    index.flush()?;
    card.shards = shard_k;
    card.expert_mean_driving_score =
        if card.expert_episodes_completed > 0 { ds_sum / card.expert_episodes_completed as f32 } else { 0.0 };
    pb.finish_and_clear();
    std::fs::write(o.out.join("data_card.json"), serde_json::to_string_pretty(&card)?)?;
    std::fs::write(o.out.join("DATA_CARD.md"), card_markdown(&card, o))?;
    Ok(card)
}

fn card_markdown(c: &DataCard, o: &DatasetOptions) -> String {
    let mut s = String::new();
    s.push_str("# rtvla simulator dataset\n\n");
    s.push_str(&format!(
        "Expert driving in the rtvla closed-loop simulator (`rtvla sim dataset`), {} frames of {}×{} RGB in {} shards, \
         recorded every {} control ticks at {} Hz from {} episodes; seeds {}..{} (training range {:?}, held-out {:?}).\n\n",
        c.frames, c.width, c.height, c.shards, c.every_ticks, c.control_hz, c.episodes, c.seeds[0], c.seeds[1],
        super::TRAIN_SEEDS, super::HELD_OUT_SEEDS
    ));
    if let (Some("model"), Some(m)) = (c.driver.as_deref(), &c.model) {
        s.push_str(&format!(
            "**Model-driven (closed-loop training data):** `{}` (onnx sha256 {}) drove, β-mixed with the expert \
             (β = {}: per tick, the expert's command applied with that probability); the model's command was applied \
             on {} of {} ticks. Every label is the privileged expert's, for the state the mix reached; each record's \
             `driver` says who drove that tick, `model_path` / `model_speed_wps` hold the model's own plan.\n\n",
            m,
            c.model_sha256.as_deref().unwrap_or("?"),
            c.beta.unwrap_or(0.0),
            c.model_ticks,
            c.ticks
        ));
    }
    s.push_str(
        "Files: `images_XXXX.npy` (uint8 N×H×W×3), `index.jsonl` (one record per frame: `shard`, `index`, inputs \
                `speed`, `target_points`; targets `path` (20 points, 1 m), `speed_wps` (10 points, 0.25 s); `command`, \
                `commentary`, `action`, `object`, `object_dist`, `qa`). Ego frame x forward, y right, metres.\n\n",
    );
    s.push_str(&format!(
        "Steering perturbations (recovery data): {} frames ({:.1}%) are recorded while a steering offset is applied; their \
         targets are the expert's clean plan from the perturbed state. Perturbation rate per tick: {}.\n\n",
        c.perturbed_frames,
        100.0 * c.perturbed_frames as f32 / c.frames.max(1) as f32,
        o.noise
    ));
    s.push_str(&format!(
        "Mean driving score of the driving policy (the expert, or the model mix above) over the {} completed \
         episodes (with perturbations): {:.1}\n\n",
        c.expert_episodes_completed, c.expert_mean_driving_score
    ));
    for (title, m) in [
        ("Scenario", &c.per_scenario),
        ("Action", &c.per_action),
        ("Object", &c.per_object),
        ("Time of day", &c.per_time_of_day),
    ] {
        s.push_str(&format!("## Frames per {}\n\n| {} | frames |\n|---|---:|\n", title.to_lowercase(), title));
        for (k, v) in m {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_parsable() {
        let h = npy_header(&[3, 4, 5, 3]);
        assert_eq!(h.len() % 64, 0);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.contains("'shape': (3, 4, 5, 3)") && text.ends_with('\n'));
    }

    fn records(dir: &Path) -> Vec<FrameRecord> {
        let idx = std::fs::read_to_string(dir.join("index.jsonl")).unwrap();
        idx.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn a_model_drives_beta_mixed_and_the_expert_labels() {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fixture/student_fixture.toml");
        let dir = tempfile::tempdir().unwrap();
        let opts = |beta: f32, sub: &str| DatasetOptions {
            out: dir.path().join(sub),
            frames: 40,
            seeds: 3..4,
            scenarios: vec!["following"],
            width: 256,
            height: 144,
            every: 2,
            shard: 64,
            noise: 0.0,
            progress: false,
            policy: Some(PolicyMix { model: fixture.into(), beta }),
        };
        // β = 1: the expert drives every tick, exactly as without a model; the model's plan is still recorded.
        write_dataset(&DatasetOptions { policy: None, ..opts(1.0, "expert") }).unwrap();
        let c1 = write_dataset(&opts(1.0, "beta1")).unwrap();
        let (e, m1) = (records(&dir.path().join("expert")), records(&dir.path().join("beta1")));
        assert_eq!(c1.model_ticks, 0);
        assert_eq!(e.len(), m1.len());
        for (a, b) in e.iter().zip(&m1) {
            assert_eq!((a.applied, a.command, a.step), (b.applied, b.command, b.step));
            assert_eq!(b.driver.as_deref(), Some("expert"));
            assert_eq!(b.model_path.as_ref().map(Vec::len), Some(20));
        }
        // β = 0: the model alone drives; the labels stay the expert's (its command differs from the applied one).
        let c0 = write_dataset(&opts(0.0, "beta0")).unwrap();
        let m0 = records(&dir.path().join("beta0"));
        assert!(c0.ticks > 0 && c0.model_ticks == c0.ticks, "{} of {}", c0.model_ticks, c0.ticks);
        assert!(m0.iter().all(|r| r.driver.as_deref() == Some("model")));
        assert!(m0.iter().any(|r| r.applied != r.command), "the fixture drove exactly like the expert?");
        assert_eq!(c0.driver.as_deref(), Some("model"));
        // β = 0.5: both drive, about half the ticks each.
        let ch = write_dataset(&opts(0.5, "beta05")).unwrap();
        let frac = ch.model_ticks as f32 / ch.ticks as f32;
        assert!((0.25..0.75).contains(&frac), "model drove {frac} of the ticks at beta 0.5");
    }
}
