//! `cargo xtask eval`: the measured table of issue 4 / models/MODEL_CARD.md, from the bundled models, in one run.
//!
//! Driving score and route completion come from closed-loop `rtvla sim eval` on held-out seeds (through the runtime,
//! tract, simulated time); tract latency from `rtvla model bench` (all models round-robin in one process, nothing else
//! running); ONNX Runtime latency and commentary from `models/distill/evaluate.py`; parity from `rtvla model check`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::{read_json, release_bin, run, step};

/// Runs per model per block in the warm latency pass.
const WARM_BLOCK: usize = 20;

/// `cargo xtask eval` options.
#[derive(clap::Args)]
pub struct EvalOptions {
    /// Directory with teacher/student/student_int8/student_nodistill manifests and the language branches.
    #[arg(long, default_value = "models/student")]
    pub models: PathBuf,
    /// Scenarios driven (held-out = all 12 on held-out seeds; or NAME[,NAME...] for a quick look).
    #[arg(long, default_value = "held-out")]
    pub scenarios: String,
    /// Held-out seeds per scenario.
    #[arg(long, default_value_t = 4)]
    pub seeds: u64,
    /// Held-out seeds per scenario for the int8 student (tract int8 is slow on CPUs without an int8 dot-product
    /// unit, e.g. this AVX2 box: ~13 ms a tick for the 67 k-parameter student; use fewer for a quick look — a subset
    /// is compared with the f32 student on the same runs).
    #[arg(long, default_value_t = 4)]
    pub int8_seeds: u64,
    /// Scenarios the int8 student drives (`held-out` = all 12, or NAME[,NAME...]).
    #[arg(long, default_value = "held-out")]
    pub int8_scenarios: String,
    /// Held-out seeds per scenario for the teacher driving language-in-the-loop (22 decoder steps per tick, its
    /// graph runs unoptimised on tract: ~0.3 s a tick, so a subset; compared with the student on the same runs).
    #[arg(long, default_value_t = 1)]
    pub teacher_lang_seeds: u64,
    /// Scenarios the language-in-the-loop teacher drives (`held-out` = all 12, or NAME[,NAME...]). The default is
    /// the model card's row: at ~0.3 s a tick all 12 scenarios take ~40 minutes here, these two ~4; the student is
    /// compared with it on the same runs.
    #[arg(long, default_value = "lane_keep,red_light")]
    pub teacher_lang_scenarios: String,
    /// Held-out frames scored for commentary.
    #[arg(long, default_value_t = 600)]
    pub frames: usize,
    /// Timed tract inferences per model.
    #[arg(long, default_value_t = 200)]
    pub iters: usize,
    #[arg(long, default_value = "models/eval.json")]
    pub out: PathBuf,
    #[arg(long, default_value = "models/MODEL_CARD.md")]
    pub card: PathBuf,
    /// Keep the closed-loop results of the previous run (target/eval/ds-*.json) for every driving graph whose ONNX
    /// file is older than them: for a re-measure after only the language branches changed (saves most of a full
    /// run's ~15–20 minutes).
    #[arg(long)]
    pub reuse_driving: bool,
    /// Only rewrite the card's generated block from the existing models/eval.json (and the bundle's
    /// closedloop.json), measuring nothing: after a change to how the card is written.
    #[arg(long)]
    pub card_only: bool,
}

/// The rows of the table, in order: (row label, key of its results, manifest stem; None for a built-in policy of
/// `rtvla sim eval`, the key then names it). The blind expert follows the route and ignores every other road user:
/// a model under it has not learnt to see anybody.
const ROWS: [(&str, &str, Option<&str>); 7] = [
    ("expert", "expert", None),
    ("blind expert (ignores other road users)", "blind", None),
    ("teacher (vision-only)", "teacher", Some("teacher")),
    ("teacher (language-in-the-loop)", "teacher_lang", Some("teacher_lang")),
    ("student (distilled, f32)", "student", Some("student")),
    ("student (quantized, int8)", "student_int8", Some("student_int8")),
    ("student without distillation", "student_nodistill", Some("student_nodistill")),
];
/// Paired comparisons on the runs both drove (same scenario and seed): (label, key a, key b), a − b.
const PAIRS: [(&str, &str, &str); 5] = [
    ("student − teacher", "student", "teacher"),
    ("student − ablation", "student", "student_nodistill"),
    ("student − blind expert", "student", "blind"),
    ("teacher − blind expert", "teacher", "blind"),
    ("int8 − f32 student", "student_int8", "student"),
];
const HELD_OUT_FIRST_SEED: u64 = 1_000_000;
/// Language branches of the distilled student and of the ablation.
const LANGUAGE: [&str; 2] = ["language", "language_nodistill"];

pub fn eval(root: &Path, o: &EvalOptions) -> Result<()> {
    if o.card_only {
        let mut out = read_json(&root.join(&o.out))?;
        out["closed_loop"] = read_json(&root.join(&o.models).join("closedloop.json")).unwrap_or(Value::Null);
        update_card(&root.join(&o.card), &render_table(&out))?;
        eprintln!("rewrote the generated block of {} from {}", o.card.display(), o.out.display());
        return Ok(());
    }
    let bin = release_bin(root);
    if !bin.exists() {
        step("building the release binary");
        run(crate::cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    }
    let models = root.join(&o.models);
    for (_, _, stem) in ROWS {
        if let Some(s) = stem {
            if !models.join(format!("{s}.toml")).exists() {
                bail!("{}: missing {s}.toml (run `cargo xtask train` and bundle its export)", models.display());
            }
        }
    }
    let work = root.join("target/eval");
    std::fs::create_dir_all(&work)?;
    let t0 = std::time::Instant::now();

    step("parity: runtime preprocess + tract vs the exporter's reference outputs (rtvla model check)");
    let mut parity = serde_json::Map::new();
    // Driving graphs, then the language branches `rtvla explain` runs (keyframe contexts: logits + greedy sentence).
    for s in ROWS.iter().filter_map(|(_, _, stem)| *stem).chain(LANGUAGE) {
        let j = work.join(format!("check-{s}.json"));
        let status = Command::new(&bin)
            .arg("model")
            .arg("check")
            .arg(models.join(format!("{s}.toml")))
            .arg("--json")
            .arg(&j)
            .status()?;
        parity.insert(s.into(), if j.exists() { read_json(&j)? } else { json!({"error": status.to_string()}) });
    }

    // Twice: strict round-robin (each inference after another model's: cold caches, the table's numbers) and in
    // blocks of WARM_BLOCK runs per model (warm, as the control loop runs its one model tick after tick).
    let bench_pass = |file: &str, block: usize| -> Result<Vec<Value>> {
        let path = work.join(file);
        let mut cmd = Command::new(&bin);
        cmd.args(["model", "bench", "--iters", &o.iters.to_string(), "--block", &block.to_string(), "--json"])
            .arg(&path);
        for s in ["student", "teacher", "teacher_lang", "student_int8", "student_nodistill"] {
            cmd.arg(models.join(format!("{s}.toml")));
        }
        run(&mut cmd)?;
        Ok(read_json(&path)?.as_array().cloned().unwrap_or_default())
    };
    step(&format!("tract latency, all models round-robin in one process ({} timed runs each)", o.iters));
    let tract = bench_pass("bench.json", 1)?;
    step(&format!("tract latency, warm: blocks of {WARM_BLOCK} consecutive runs per model, models alternating"));
    let tract_warm = bench_pass("bench-warm.json", WARM_BLOCK)?;
    let median_of = |rows: &[Value], name: &str| {
        rows.iter().find(|r| r["model"] == name).and_then(|r| r["median_ms"].as_f64()).unwrap_or(f64::NAN)
    };
    let tract_ms = |name: &str| median_of(&tract, name);
    let warm_ms = |name: &str| median_of(&tract_warm, name);

    step("held-out dataset for commentary");
    // Written afresh every run (600 frames take ~3 s): a kept copy would go stale silently whenever the renderer or
    // the expert's labels change, and the commentary would then be scored on frames the simulator no longer draws.
    let heldout = work.join(format!("heldout-dataset-{}", o.frames));
    let _ = std::fs::remove_dir_all(&heldout);
    let tmp = work.join("heldout-dataset.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    run(Command::new(&bin)
        .args(["sim", "dataset", "--frames", &o.frames.to_string(), "--every", "30", "--seeds"])
        .arg(format!("{HELD_OUT_FIRST_SEED}..1100000"))
        .arg("--out")
        .arg(&tmp))?;
    std::fs::rename(&tmp, &heldout)?;

    step("commentary (language branches via onnxruntime) + ONNX Runtime latency (models/distill/evaluate.py)");
    let py_json = work.join("python.json");
    run(Command::new(crate::distill_python(root)?)
        .arg(root.join("models/distill/evaluate.py"))
        .arg("--models")
        .arg(&models)
        .arg("--data")
        .arg(&heldout)
        .arg("--json")
        .arg(&py_json)
        .arg("--limit")
        .arg(o.frames.to_string()))?;
    let py = read_json(&py_json)?;

    step(&format!(
        "closed-loop driving score, held-out scenarios, seeds {HELD_OUT_FIRST_SEED}..+{} (int8: +{}), 2 at a time",
        o.seeds, o.int8_seeds
    ));
    // --reuse-driving keeps a result only when it is newer than the model it measured (the graph did not change since).
    let newer = |key: &str, model: Option<&str>| -> bool {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let ds = mtime(&work.join(format!("ds-{key}.json")));
        let onnx = model.map_or(Some(std::time::SystemTime::UNIX_EPOCH), |m| mtime(&models.join(format!("{m}.onnx"))));
        matches!((ds, onnx), (Some(d), Some(o)) if d > o)
    };
    let mut pending: Vec<(String, Command)> = Vec::new();
    let mut reused = Vec::new();
    for (label, key, stem) in ROWS {
        if !o.reuse_driving {
            let _ = std::fs::remove_file(work.join(format!("ds-{key}.json")));
        }
        let (n, scen) = match stem {
            Some("student_int8") => (o.int8_seeds, &o.int8_scenarios),
            Some("teacher_lang") => (o.teacher_lang_seeds, &o.teacher_lang_scenarios),
            _ => (o.seeds, &o.scenarios),
        };
        if n == 0 {
            continue; // skipped on request (--int8-seeds 0): its row shows no score
        }
        if o.reuse_driving && newer(key, stem) {
            eprintln!("  reused: {label} (target/eval/ds-{key}.json, newer than its model)");
            reused.push(label.to_string());
            continue;
        }
        let mut c = Command::new(&bin);
        // Two tables at a time (run_parallel below), one run at a time each.
        c.args(["sim", "eval", "--jobs", "1", "--scenarios", scen, "--seeds"])
            .arg(format!("{HELD_OUT_FIRST_SEED}..{}", HELD_OUT_FIRST_SEED + n))
            .arg("--json")
            .arg(work.join(format!("ds-{key}.json")));
        match stem {
            None => c.args(["--policy", key]),
            Some(s) => c.args(["--policy", "model", "--model"]).arg(models.join(format!("{s}.toml"))),
        };
        c.env("RUST_LOG", "warn");
        pending.push((label.to_string(), c));
    }
    run_parallel(pending, 2)?;

    // ------------------------------------------------------------------ assemble
    let mut rows = Vec::new();
    for (label, key, stem) in ROWS {
        let ds_path = work.join(format!("ds-{key}.json"));
        let ds = if ds_path.exists() { read_json(&ds_path)? } else { json!({}) };
        // Both teacher rows are one model: its commentary is the one it writes before its waypoints.
        let com = &py["commentary"][if key == "teacher_lang" { "teacher" } else { key }];
        rows.push(json!({
            "row": label,
            "model": stem,
            "policy": key,
            "driving_score": ds["driving_score"],
            "route_completion": ds["route_completion"],
            "success_rate": ds["success_rate"],
            "runs": ds["runs"].as_array().map_or(0, |a| a.len()),
            "errors": ds["errors"].as_array().map_or(0, |a| a.len()),
            "tract_ms": stem.map(tract_ms),
            "ort_ms": stem.map(|s| py["ort_latency_ms"][s].clone()),
            "commentary_action_object": com.get("action_object").cloned(),
            "commentary_exact": com.get("exact").cloned(),
            "commentary_action": com.get("action").cloned(),
            "commentary_object": com.get("object").cloned(),
            "parity": stem.map(|s| parity[s].clone()),
        }));
    }
    // The int8 student and the language-in-the-loop teacher drive subsets: the f32 student's score on exactly
    // those runs is the fair comparison.
    // The f32 student must have driven; its per-run scores, as `paired` reads them.
    let f32_json = work.join("ds-student.json");
    ensure!(f32_json.exists(), "{}: the f32 student's runs are missing", f32_json.display());
    let f32_runs = run_scores(&work, "student")?;
    let student_ds_on = |stem: &str| -> Result<Value> {
        let runs = run_scores(&work, stem)?;
        let same: Vec<f64> =
            runs.iter().filter_map(|(k, _)| f32_runs.iter().find(|(f, _)| f == k).map(|(_, score)| *score)).collect();
        Ok(if same.len() == runs.len() && !same.is_empty() {
            json!(same.iter().sum::<f64>() / same.len() as f64)
        } else {
            Value::Null
        })
    };
    let ratio = |a: f64, b: f64| if a.is_finite() && b.is_finite() && b > 0.0 { json!(a / b) } else { Value::Null };
    let ort = |s: &str| py["ort_latency_ms"][s].as_f64().unwrap_or(f64::NAN);
    let summary = json!({
        "int8_scenarios": o.int8_scenarios,
        "teacher_lang_scenarios": o.teacher_lang_scenarios,
        "student_f32_ds_on_int8_runs": student_ds_on("student_int8")?,
        "student_f32_ds_on_teacher_lang_runs": student_ds_on("teacher_lang")?,
        "teacher_lang_student_ratio": ratio(tract_ms("teacher_lang"), tract_ms("student")),
        "ort_teacher_lang_student_ratio": ratio(ort("teacher_lang"), ort("student")),
        "teacher_student_ratio": ratio(tract_ms("teacher"), tract_ms("student")),
        "teacher_student_ratio_warm": ratio(warm_ms("teacher"), warm_ms("student")),
        "tract_warm_ms": {"student": warm_ms("student"), "teacher": warm_ms("teacher"),
                          "student_int8": warm_ms("student_int8"), "student_nodistill": warm_ms("student_nodistill")},
        "quantized_speedup": ratio(tract_ms("student"), tract_ms("student_int8")),
        "tract_vs_ort": ratio(tract_ms("student"), ort("student")),
        "tract_vs_ort_int8": ratio(tract_ms("student_int8"), ort("student_int8")),
        "ort_quantized_speedup": ratio(ort("student"), ort("student_int8")),
        "ort_teacher_student_ratio": ratio(ort("teacher"), ort("student")),
        "paired": PAIRS.iter().map(|(label, a, b)| Ok((label.to_string(), paired(&work, a, b)?)))
            .collect::<Result<serde_json::Map<_, _>>>()?,
    });
    let out = json!({
        "measured_utc": utc_now(),
        "machine": machine(),
        "scenarios": o.scenarios,
        "held_out_seeds": [HELD_OUT_FIRST_SEED, HELD_OUT_FIRST_SEED + o.seeds],
        "int8_held_out_seeds": [HELD_OUT_FIRST_SEED, HELD_OUT_FIRST_SEED + o.int8_seeds],
        "teacher_lang_held_out_seeds": [HELD_OUT_FIRST_SEED, HELD_OUT_FIRST_SEED + o.teacher_lang_seeds],
        "commentary_frames": py["frames"],
        "rows": rows,
        "summary": summary,
        "tract_bench": tract,
        "tract_bench_warm": tract_warm,
        "driving_reused": reused,
        "language_parity": LANGUAGE.iter().map(|s| (s.to_string(), parity[*s].clone())).collect::<serde_json::Map<_, _>>(),
        "closed_loop": read_json(&models.join("closedloop.json")).unwrap_or(Value::Null),
        "wall_s": t0.elapsed().as_secs_f64(),
    });
    let out_path = root.join(&o.out);
    std::fs::write(&out_path, serde_json::to_string_pretty(&out)? + "\n")?;
    let table = render_table(&out);
    println!("\n{table}");
    update_card(&root.join(&o.card), &table)?;
    eprintln!("wrote {} and the table in {}", out_path.display(), o.card.display());
    Ok(())
}

/// Per-run driving scores of `target/eval/ds-<key>.json`, by (scenario, seed).
fn run_scores(work: &Path, key: &str) -> Result<Vec<((String, u64), f64)>> {
    let p = work.join(format!("ds-{key}.json"));
    if !p.exists() {
        return Ok(vec![]);
    }
    Ok(read_json(&p)?["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some(((r["scenario"].as_str()?.to_string(), r["seed"].as_u64()?), r["score"].as_f64()?)))
        .collect())
}

/// a − b over the runs both drove: mean, its standard error, and how many runs a was ahead / behind. One seed of a
/// scenario is the same world for every policy, so the pairs remove most of the scenario-to-scenario spread that
/// dominates two unpaired means.
fn paired(work: &Path, a: &str, b: &str) -> Result<Value> {
    let bs = run_scores(work, b)?;
    let d: Vec<f64> = run_scores(work, a)?
        .iter()
        .filter_map(|(k, x)| bs.iter().find(|(kb, _)| kb == k).map(|(_, y)| x - y))
        .collect();
    if d.is_empty() {
        return Ok(Value::Null);
    }
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = if d.len() > 1 { d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { f64::NAN };
    Ok(json!({
        "runs": d.len(),
        "mean": mean,
        "standard_error": (var / n).sqrt(),
        "ahead": d.iter().filter(|x| **x > 0.05).count(),
        "behind": d.iter().filter(|x| **x < -0.05).count(),
    }))
}

/// Run labelled commands, at most `jobs` at once; fail after all finished if any failed.
fn run_parallel(mut pending: Vec<(String, Command)>, jobs: usize) -> Result<()> {
    pending.reverse();
    let mut running: Vec<(String, Child, std::time::Instant)> = Vec::new();
    let mut failed = Vec::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < jobs {
            let Some((label, mut c)) = pending.pop() else { break };
            eprintln!("  started: {label}");
            running.push((label, c.spawn().context("spawning rtvla sim eval")?, std::time::Instant::now()));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        let mut i = 0;
        while i < running.len() {
            if let Some(st) = running[i].1.try_wait()? {
                let (label, _, t) = running.remove(i);
                eprintln!("  finished: {label} ({st}, {:.0} s)", t.elapsed().as_secs_f64());
                if !st.success() {
                    failed.push(label);
                }
            } else {
                i += 1;
            }
        }
    }
    if !failed.is_empty() {
        bail!("sim eval failed for: {}", failed.join(", "));
    }
    Ok(())
}

fn fmt_num(v: &Value, scale: f64, digits: usize, suffix: &str) -> String {
    v.as_f64().map_or("—".into(), |x| format!("{:.*}{suffix}", digits, x * scale))
}

/// The markdown table of the issue (plus the side-by-side latency columns and run counts).
pub fn render_table(out: &Value) -> String {
    let sm = &out["summary"];
    let mut s = String::from(
        "| | DS held-out | route compl. | runs | latency tract (ms, median) | latency ONNX Runtime (ms) | commentary: action+object correct |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in out["rows"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r["row"].as_str().unwrap_or("?"),
            fmt_num(&r["driving_score"], 1.0, 1, ""),
            fmt_num(&r["route_completion"], 100.0, 1, " %"),
            r["runs"],
            fmt_num(&r["tract_ms"], 1.0, 2, ""),
            fmt_num(&r["ort_ms"], 1.0, 2, ""),
            fmt_num(&r["commentary_action_object"], 100.0, 1, " %"),
        );
    }
    let row = |stem: &str| {
        out["rows"].as_array().and_then(|r| r.iter().find(|r| r["model"] == stem)).cloned().unwrap_or(Value::Null)
    };
    let (int8, tl, student, ablation) =
        (row("student_int8"), row("teacher_lang"), row("student"), row("student_nodistill"));
    s += &format!(
        "\nint8 student: {} runs ({}), DS {}; the f32 student on the same runs: DS {}.\n",
        int8["runs"],
        sm["int8_scenarios"].as_str().unwrap_or("?"),
        fmt_num(&int8["driving_score"], 1.0, 1, ""),
        fmt_num(&sm["student_f32_ds_on_int8_runs"], 1.0, 1, ""),
    );
    s += &format!(
        "teacher language-in-the-loop: {} runs ({}), DS {}; the f32 student on the same runs: DS {}. Its tract latency is \
         of the unoptimised graph (`optimize = false`: tract's optimiser does not finish on its ~10 000 nodes in \
         reasonable time); ONNX Runtime optimises it.\n",
        tl["runs"],
        sm["teacher_lang_scenarios"].as_str().unwrap_or("held-out"),
        fmt_num(&tl["driving_score"], 1.0, 1, ""),
        fmt_num(&sm["student_f32_ds_on_teacher_lang_runs"], 1.0, 1, ""),
    );
    s += &format!(
        "teacher/student latency on tract: vision-only {}× (ONNX Runtime: {}×), language-in-the-loop {}× (ONNX Runtime: \
         {}×); int8 speed-up on tract: {}× (ONNX Runtime: {}×); tract/ONNX Runtime f32 student: {}×, int8: {}×.\n",
        fmt_num(&sm["teacher_student_ratio"], 1.0, 2, ""),
        fmt_num(&sm["ort_teacher_student_ratio"], 1.0, 2, ""),
        fmt_num(&sm["teacher_lang_student_ratio"], 1.0, 2, ""),
        fmt_num(&sm["ort_teacher_lang_student_ratio"], 1.0, 2, ""),
        fmt_num(&sm["quantized_speedup"], 1.0, 2, ""),
        fmt_num(&sm["ort_quantized_speedup"], 1.0, 2, ""),
        fmt_num(&sm["tract_vs_ort"], 1.0, 2, ""),
        fmt_num(&sm["tract_vs_ort_int8"], 1.0, 2, ""),
    );
    s += &format!(
        "tract warm ({WARM_BLOCK} consecutive runs per model, as the control loop runs one model tick after tick; the \
         table is strict round-robin, each run after another model's): student {} ms, teacher {} ms, vision-only \
         ratio {}×; int8 {} ms, ablation {} ms.\n",
        fmt_num(&sm["tract_warm_ms"]["student"], 1.0, 2, ""),
        fmt_num(&sm["tract_warm_ms"]["teacher"], 1.0, 2, ""),
        fmt_num(&sm["teacher_student_ratio_warm"], 1.0, 2, ""),
        fmt_num(&sm["tract_warm_ms"]["student_int8"], 1.0, 2, ""),
        fmt_num(&sm["tract_warm_ms"]["student_nodistill"], 1.0, 2, ""),
    );
    let pct = |v: &Value| fmt_num(v, 100.0, 1, " %");
    s += &format!(
        "commentary, action / object alone: teacher {} / {}, student {} / {}, ablation {} / {}.\n",
        pct(&row("teacher")["commentary_action"]),
        pct(&row("teacher")["commentary_object"]),
        pct(&student["commentary_action"]),
        pct(&student["commentary_object"]),
        pct(&ablation["commentary_action"]),
        pct(&ablation["commentary_object"]),
    );
    s += &paired_line(&sm["paired"]);
    s += &closed_loop_section(&out["closed_loop"]);
    if let Some(r) = out["driving_reused"].as_array().filter(|r| !r.is_empty()) {
        let names: Vec<&str> = r.iter().filter_map(|x| x.as_str()).collect();
        s += &format!(
            "Closed-loop scores of {} are those of the previous run (`--reuse-driving`: their graphs are unchanged).\n",
            names.join(", ")
        );
    }
    for (s_name, p) in out["language_parity"].as_object().into_iter().flatten() {
        s += &format!(
            "{s_name} on tract vs PyTorch: max |Δ logits| {}, same greedy sentence {}/{} keyframe contexts.\n",
            p["max_abs_diff_logits"].as_f64().map_or("—".into(), |x| format!("{x:.1e}")),
            p["same_tokens"],
            p["cases"],
        );
    }
    s += &format!(
        "Measured {} on {} by `cargo xtask eval` (scenarios {}, seeds {} (int8: {}, teacher language-in-the-loop: {}); \
         commentary on {} held-out frames).\n",
        out["measured_utc"].as_str().unwrap_or("?"),
        out["machine"].as_str().unwrap_or("?"),
        out["scenarios"],
        out["held_out_seeds"],
        out["int8_held_out_seeds"],
        out["teacher_lang_held_out_seeds"],
        out["commentary_frames"],
    );
    s
}

/// "Paired on the same runs: student − teacher +1.2 ± 0.8 DS (48 runs, ahead in 10, behind in 7); …"
fn paired_line(p: &Value) -> String {
    let parts: Vec<String> = p
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            format!(
                "{k} {} ± {} DS ({} runs, ahead in {}, behind in {})",
                v["mean"].as_f64().map_or("—".into(), |x| format!("{x:+.1}")),
                fmt_num(&v["standard_error"], 1.0, 1, ""),
                v["runs"],
                v["ahead"],
                v["behind"]
            )
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "Paired on the same runs (mean difference ± standard error; a run counts as ahead or behind when the scores \
         differ by more than 0.05): {}.\n",
        parts.join("; ")
    )
}

/// The closed-loop rounds the bundled models came from (`closedloop.json` of the training run, copied beside the
/// models by the export): held-out DS per round, β, on-policy frames, and what each round cost.
fn closed_loop_section(cl: &Value) -> String {
    let mut s = String::new();
    for (kind, title) in [
        ("teacher", "teacher, DAgger (the expert labels)"),
        ("student", "student, on-policy distillation (the teacher labels)"),
    ] {
        let Some(rounds) = cl[kind].as_array().filter(|r| !r.is_empty()) else { continue };
        let kept = cl[format!("{kind}_best_round")].as_u64();
        s += &format!(
            "\nClosed-loop rounds, {title} (round 0 = trained offline; DS over each round's {} held-out runs, seeds \
             disjoint from the table's; kept: round {}):\n\n| round | DS | route compl. | β | frames driven | \
             aggregate | minutes (rollout + learning + evaluation) |\n|---|---|---|---|---|---|---|\n",
            rounds[0]["runs"],
            kept.map_or("?".into(), |k| k.to_string()),
        );
        for r in rounds {
            // A rollout reused after the run was killed and resumed was not timed in that run: say so instead of
            // counting it as 0 minutes.
            let untimed = r["round"].as_u64() > Some(0) && r["rollout_s"].as_f64().is_none_or(|x| x < 1.0);
            s += &format!(
                "| {} | {} | {} | {} | {} | {} | {}{} |\n",
                r["round"],
                fmt_num(&r["driving_score"], 1.0, 1, ""),
                fmt_num(&r["route_completion"], 100.0, 1, " %"),
                fmt_num(&r["beta"], 1.0, 2, ""),
                r["rollout_frames"].as_u64().map_or("—".into(), |x| x.to_string()),
                r["aggregate_frames"].as_u64().map_or("—".into(), |x| x.to_string()),
                fmt_num(&r["minutes"], 1.0, 1, ""),
                if untimed { " + rollout (not timed: reused after a restart)" } else { "" },
            );
        }
    }
    if !s.is_empty() {
        s += "\n![held-out DS per closed-loop round](student/ds_rounds.svg)\n\n";
    }
    s
}

const BEGIN: &str = "<!-- xtask eval: begin (generated, do not edit) -->";
const END: &str = "<!-- xtask eval: end -->";

/// Replace the generated block of the model card (or append one).
fn update_card(card: &Path, table: &str) -> Result<()> {
    let text = std::fs::read_to_string(card).unwrap_or_else(|_| "# Model card\n\n".into());
    let block = format!("{BEGIN}\n{table}{END}");
    let new = match (text.find(BEGIN), text.find(END)) {
        (Some(a), Some(b)) if b > a => format!("{}{block}{}", &text[..a], &text[b + END.len()..]),
        _ => format!("{text}\n{block}\n"),
    };
    std::fs::write(card, new)?;
    Ok(())
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// CPU model, core count and the x86 SIMD extensions tract and ONNX Runtime pick kernels by: the caption of
/// every measured table (`eval`, `bench`).
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let isa: Vec<&str> =
        ["avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"].into_iter().filter(|f| flags.contains(f)).collect();
    format!("{cpu}, {cores} cores, {}", isa.join("+"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_runs(dir: &Path, key: &str, runs: &[(&str, u64, f64)]) {
        let runs: Vec<Value> =
            runs.iter().map(|(s, seed, score)| json!({"scenario": s, "seed": seed, "score": score})).collect();
        std::fs::write(dir.join(format!("ds-{key}.json")), json!({ "runs": runs }).to_string()).unwrap();
    }

    #[test]
    fn paired_compares_only_the_runs_both_drove() {
        let dir = std::env::temp_dir().join(format!("xtask-paired-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write_runs(&dir, "a", &[("lane_keep", 1, 100.0), ("lane_keep", 2, 60.0), ("red_light", 1, 70.0)]);
        write_runs(&dir, "b", &[("lane_keep", 1, 90.0), ("lane_keep", 2, 60.0), ("cut_in", 1, 0.0)]);
        let p = paired(&dir, "a", "b").unwrap();
        assert_eq!(p["runs"], 2, "{p}");
        assert!((p["mean"].as_f64().unwrap() - 5.0).abs() < 1e-9, "{p}");
        assert!((p["standard_error"].as_f64().unwrap() - 5.0).abs() < 1e-9, "{p}");
        assert_eq!((p["ahead"].as_u64(), p["behind"].as_u64()), (Some(1), Some(0)));
        assert!(paired(&dir, "a", "missing").unwrap().is_null());
        let line = paired_line(&json!({ "a − b": p }));
        assert!(line.contains("a − b +5.0 ± 5.0 DS (2 runs, ahead in 1, behind in 0)"), "{line}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn closed_loop_rounds_become_a_table_per_arm() {
        let cl = json!({
            "teacher": [{"round": 0, "driving_score": 60.0, "route_completion": 0.9, "runs": 24},
                        {"round": 1, "driving_score": 70.5, "route_completion": 0.95, "beta": 0.5,
                         "rollout_frames": 2000, "aggregate_frames": 26000, "minutes": 12.25, "rollout_s": 0.0},
                        {"round": 2, "driving_score": 71.0, "rollout_s": 300.0, "minutes": 17.0}],
            "teacher_best_round": 1,
        });
        let s = closed_loop_section(&cl);
        assert!(s.contains("teacher, DAgger") && s.contains("kept: round 1"), "{s}");
        assert!(s.contains("| 1 | 70.5 | 95.0 % | 0.50 | 2000 | 26000 | 12.2 + rollout (not timed"), "{s}");
        assert!(s.contains("| 17.0 |"), "{s}");
        assert!(!s.contains("on-policy distillation"), "{s}");
        assert!(closed_loop_section(&Value::Null).is_empty());
    }
}
