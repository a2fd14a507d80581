//! `cargo xtask bench`: figures measured side by side in one run (ratios, not absolute timings), and `--json`.
//!
//! One run measures: the real-time loop (overhead against inference, wake-up jitter, deadline misses, RSS drift),
//! the bundled models on tract with one and two threads, the same graphs on ONNX Runtime with one and two threads
//! and this machine's peak f32 GEMM throughput (both from the training venv, in the same run), and prints a Markdown
//! summary naming the machine it ran on (the README's table is a copy of it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::arm_ledger::ArmOptions;
use crate::{cargo, distill_python, read_json, release_bin, rss::rss_kib, run, step, tempdir};

/// The models compared between tract and ONNX Runtime (the language-in-the-loop teacher is tract-only: its graph
/// is 22 unrolled decoder steps and is measured unoptimised).
const COMPARED: [&str; 3] = ["student", "teacher", "student_int8"];

pub fn bench(root: &Path, quick: bool, json: Option<PathBuf>, arm: Option<ArmOptions>) -> Result<()> {
    bench_with(root, quick, json, true, arm)
}

pub fn bench_with(root: &Path, quick: bool, json: Option<PathBuf>, build: bool, arm: Option<ArmOptions>) -> Result<()> {
    if build {
        run(cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    }
    let dir = tempdir()?;
    let lp = loop_figures(root, &dir, quick)?;
    let models = model_figures(root, &dir, quick)?;
    step("cold start: fresh `rtvla drive` processes, exec to the first command (median per part)");
    let cold = crate::soak::cold_start_ms(root, if quick { 3 } else { 9 })?;
    let mut out = lp;
    out.as_object_mut().expect("object").extend(models.as_object().expect("object").clone());
    out["cold_start_ms"] = cold;
    if let Some(a) = arm {
        out["arm_insns"] = crate::arm_ledger::ledger(root, &a)?;
    }
    out["machine"] = json!(crate::eval::machine());
    print!("{}", markdown(&out));
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&out)? + "\n")?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// The figures `bench --json` promises (README, docs/ARCHITECTURE.md): CI fails when one is missing or not a number,
/// so a renamed key or a silently skipped part of the bench cannot pass.
pub fn require_keys(out: &Value) -> Result<()> {
    let number = |v: &Value| v.as_f64().is_some_and(f64::is_finite);
    let checks: [(&str, bool); 8] = [
        ("p99_jitter_ms", number(&out["p99_jitter_ms"])),
        ("deadline_misses", number(&out["deadline_misses"])),
        ("rss_drift_kb", number(&out["rss_drift_kb"])),
        ("overhead_ratio", number(&out["overhead_ratio"])),
        ("cold_start_ms.total", number(&out["cold_start_ms"]["total"])),
        ("tract_vs_ort.student.1_thread.ratio", number(&out["tract_vs_ort"]["student"]["1_thread"]["ratio"])),
        ("tract_vs_ort.teacher.2_thread.ratio", number(&out["tract_vs_ort"]["teacher"]["2_thread"]["ratio"])),
        ("arm_insns", out["arm_insns"].is_object()),
    ];
    let missing: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(k, _)| *k).collect();
    anyhow::ensure!(missing.is_empty(), "bench JSON lacks {}", missing.join(", "));
    Ok(())
}

/// The board's student in the real-time loop on host-sim: overhead, jitter, misses, and RSS after warm-up vs at
/// the end (sampled from /proc while it drives).
fn loop_figures(root: &Path, dir: &Path, quick: bool) -> Result<Value> {
    let ticks = if quick { 200 } else { 1200 };
    let report = dir.join("bench-drive.json");
    step(&format!("real-time drive, the board's student, {ticks} ticks at 20 Hz"));
    let mut child = Command::new(release_bin(root))
        .args(["drive", "--quiet", "--no-store", "--repeat", "--board", "boards/host-sim.toml"])
        .args(["--ticks", &ticks.to_string()])
        .arg("--report-json")
        .arg(&report)
        .spawn()
        .context("starting rtvla drive")?;
    // Warm-up: tract's first inferences and the histogram pages; a quarter of the run, at least two seconds.
    let warm = Duration::from_secs_f64((ticks as f64 / 20.0 / 4.0).max(2.0));
    let (t0, mut rss_start, mut rss_end) = (Instant::now(), None, None);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if let Some(kib) = rss_kib(child.id()) {
            rss_end = Some(kib);
            if rss_start.is_none() && t0.elapsed() >= warm {
                rss_start = Some(kib);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    anyhow::ensure!(status.success(), "rtvla drive failed: {status}");
    let r = read_json(&report)?;
    let f = |k: &str, q: &str| r[k][q].as_f64().unwrap_or(f64::NAN);
    let drift = match (rss_start, rss_end) {
        (Some(a), Some(b)) => json!(b as i64 - a as i64),
        _ => Value::Null,
    };
    Ok(json!({
        "overhead_ratio": r["overhead_ratio"],
        "overhead_ratio_median": f("overhead_ms", "p50") / f("infer_ms", "p50"),
        "infer_ms": r["infer_ms"],
        "overhead_ms": r["overhead_ms"],
        "preprocess_ms": r["preprocess_ms"],
        "camera_ms": r["camera_ms"],
        "jitter_ms": r["jitter_ms"],
        "p99_jitter_ms": f("jitter_ms", "p99"),
        "deadline_misses": r["deadline_misses"],
        "loop_ticks": r["ticks"],
        "rss_kb": {"after_warmup": rss_start, "end": rss_end},
        "rss_drift_kb": drift,
        "allocs_per_tick_outside_inference": r["allocs_per_tick_outside_inference"],
        "allocs_per_inference": r["allocs_per_inference"],
        "model": r["model"],
    }))
}

/// tract (1 thread, then ONNX Runtime and the GEMM roof, then tract on 2 threads: one run, back to back).
fn model_figures(root: &Path, dir: &Path, quick: bool) -> Result<Value> {
    let bundle = root.join("models/student");
    if !bundle.join("teacher.toml").exists() {
        eprintln!("models/student has no teacher: model figures skipped");
        return Ok(json!({}));
    }
    let iters = if quick { 10 } else { 50 };
    let one = tract_bench(root, dir, &bundle, &["student", "teacher", "student_int8", "teacher_lang"], iters, 1)?;
    let ort = ort_bench(root, dir, &bundle, iters)?;
    let two = tract_bench(root, dir, &bundle, &COMPARED, iters, 2)?;
    let tract_ms = |rows: &Value, m: &str| -> f64 {
        rows.as_array()
            .and_then(|a| a.iter().find(|r| r["manifest"].as_str().is_some_and(|p| p.ends_with(&format!("/{m}.toml")))))
            .and_then(|r| r["median_ms"].as_f64())
            .unwrap_or(f64::NAN)
    };
    let mut vs = serde_json::Map::new();
    for m in COMPARED {
        let mut per = serde_json::Map::new();
        for (t, rows) in [("1", &one), ("2", &two)] {
            let (tr, o) = (tract_ms(rows, m), ort["ort_ms"][t][m].as_f64().unwrap_or(f64::NAN));
            per.insert(format!("{t}_thread"), json!({"tract_ms": tr, "ort_ms": o, "ratio": tr / o}));
        }
        vs.insert(m.into(), Value::Object(per));
    }
    let r = |a: f64, b: f64| a / b;
    let (student, teacher, int8) =
        (tract_ms(&one, "student"), tract_ms(&one, "teacher"), tract_ms(&one, "student_int8"));
    let macs = one[0]["macs"].as_f64().unwrap_or(f64::NAN);
    let peak = ort["peak_gemm"]["1"]["gflops"].as_f64().unwrap_or(f64::NAN);
    let student_gflops = 2.0 * macs / (student * 1e-3) / 1e9;
    Ok(json!({
        "tract_models": one,
        "tract_models_2_threads": two,
        "teacher_student_ratio": r(teacher, student),
        "teacher_lang_student_ratio": r(tract_ms(&one, "teacher_lang"), student),
        "quantized_speedup": r(student, int8),
        "tract_vs_ort": Value::Object(vs),
        "ort": ort,
        "student_gemm": {
            "macs": macs,
            "tract_gflops": student_gflops,
            "ort_gflops": 2.0 * macs / (ort["ort_ms"]["1"]["student"].as_f64().unwrap_or(f64::NAN) * 1e-3) / 1e9,
            "peak_gflops": peak,
            "tract_fraction_of_peak": student_gflops / peak,
        },
    }))
}

fn tract_bench(root: &Path, dir: &Path, bundle: &Path, models: &[&str], iters: usize, threads: usize) -> Result<Value> {
    step(&format!("tract, {threads} thread(s): {}", models.join(", ")));
    let j = dir.join(format!("model-bench-{threads}.json"));
    let mut cmd = Command::new(release_bin(root));
    cmd.args(["model", "bench", "--threads", &threads.to_string(), "--iters", &iters.to_string(), "--json"]).arg(&j);
    for m in models {
        cmd.arg(bundle.join(format!("{m}.toml")));
    }
    run(&mut cmd)?;
    read_json(&j)
}

/// ONNX Runtime on the same graphs, 1 and 2 threads, and PyTorch's sgemm roof (models/distill/bench_ort.py).
fn ort_bench(root: &Path, dir: &Path, bundle: &Path, iters: usize) -> Result<Value> {
    step("ONNX Runtime, 1 and 2 threads, and the machine's peak f32 GEMM (models/distill/bench_ort.py)");
    let j = dir.join("ort-bench.json");
    run(Command::new(distill_python(root)?)
        .arg("bench_ort.py")
        .arg("--models")
        .arg(bundle)
        .args(["--runs", &iters.to_string(), "--json"])
        .arg(&j)
        .current_dir(root.join("models/distill")))?;
    read_json(&j)
}

/// The summary a person reads (and the README keeps a copy of).
fn markdown(o: &Value) -> String {
    let n = |v: &Value, d: usize| v.as_f64().map_or("—".to_string(), |x| format!("{x:.d$}"));
    let mut s = format!("\n### `cargo xtask bench` on {}\n\n", o["machine"].as_str().unwrap_or("?"));
    s += "| loop (host-sim, 20 Hz) | value |\n|---|---|\n";
    s += &format!("| ticks | {} |\n", o["loop_ticks"]);
    s += &format!("| inference p50 / p99 ms | {} / {} |\n", n(&o["infer_ms"]["p50"], 3), n(&o["infer_ms"]["p99"], 3));
    s += &format!(
        "| loop overhead / inference (mean, median) | {} % / {} % (goal ≤ 2 %) |\n",
        n(&json!(o["overhead_ratio"].as_f64().map(|x| x * 100.0)), 2),
        n(&json!(o["overhead_ratio_median"].as_f64().map(|x| x * 100.0)), 2)
    );
    s += &format!(
        "| wake-up jitter p50 / p99 / max ms | {} / {} / {} |\n",
        n(&o["jitter_ms"]["p50"], 3),
        n(&o["jitter_ms"]["p99"], 3),
        n(&o["jitter_ms"]["max"], 3)
    );
    s += &format!("| deadline misses | {} |\n", o["deadline_misses"]);
    let c = &o["cold_start_ms"];
    s += &format!(
        "| cold start, exec → first command (median of {}) | {} ms: optimise {}, model load {}, camera open {}, \
         first inference {}, store open {} (goal ≤ 1000) |\n",
        c["runs"],
        n(&c["total"], 0),
        n(&c["optimise"], 1),
        n(&c["model_load"], 1),
        n(&c["camera_open"], 1),
        n(&c["first_inference"], 1),
        n(&c["store_open"], 1)
    );
    s += &format!("| RSS after warm-up → end (KiB) | {} → {} |\n", o["rss_kb"]["after_warmup"], o["rss_kb"]["end"]);
    s += &format!(
        "| allocations per tick outside inference / per inference | {} / {} |\n",
        n(&o["allocs_per_tick_outside_inference"], 2),
        n(&o["allocs_per_inference"], 1)
    );
    if let Some(vs) = o["tract_vs_ort"].as_object() {
        s +=
            "\n| model | tract 1 thr ms | ORT 1 thr ms | tract / ORT | tract 2 thr ms | ORT 2 thr ms | tract / ORT |\n";
        s += "|---|---|---|---|---|---|---|\n";
        for (m, v) in vs {
            let (a, b) = (&v["1_thread"], &v["2_thread"]);
            s += &format!(
                "| {m} | {} | {} | {}× | {} | {} | {}× |\n",
                n(&a["tract_ms"], 3),
                n(&a["ort_ms"], 3),
                n(&a["ratio"], 2),
                n(&b["tract_ms"], 3),
                n(&b["ort_ms"], 3),
                n(&b["ratio"], 2)
            );
        }
        let g = &o["student_gemm"];
        s += &format!(
            "\nStudent: {} MMAC per inference; tract {} GFLOP/s, ONNX Runtime {} GFLOP/s, against this machine's peak \
             f32 GEMM of {} GFLOP/s on one core (tract reaches {} % of it{}). Teacher / student on tract: {}×; \
             int8 speed-up on tract: {}×.\n",
            n(&json!(g["macs"].as_f64().map(|x| x / 1e6)), 2),
            n(&g["tract_gflops"], 2),
            n(&g["ort_gflops"], 2),
            n(&g["peak_gflops"], 1),
            n(&json!(g["tract_fraction_of_peak"].as_f64().map(|x| x * 100.0)), 1),
            if g["tract_fraction_of_peak"].as_f64().is_some_and(|x| x < 0.25) {
                ": at a few MMAC per inference, per-op overhead and memory traffic dominate, not arithmetic"
            } else {
                ""
            },
            n(&o["teacher_student_ratio"], 1),
            n(&o["quantized_speedup"], 2)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete() -> Value {
        json!({
            "p99_jitter_ms": 0.3, "deadline_misses": 0, "rss_drift_kb": 4, "overhead_ratio": 0.01,
            "cold_start_ms": {"total": 120.0},
            "tract_vs_ort": {"student": {"1_thread": {"ratio": 2.0}}, "teacher": {"2_thread": {"ratio": 1.5}}},
            "arm_insns": {"cortex-a76": {}},
        })
    }

    #[test]
    fn a_complete_bench_passes_and_a_gap_is_named() {
        require_keys(&complete()).unwrap();
        let mut o = complete();
        o["rss_drift_kb"] = Value::Null;
        o.as_object_mut().unwrap().remove("arm_insns");
        let e = require_keys(&o).unwrap_err().to_string();
        assert!(e.contains("rss_drift_kb") && e.contains("arm_insns"), "{e}");
        let mut o = complete();
        o["tract_vs_ort"]["student"]["1_thread"]["ratio"] = json!(f64::NAN);
        assert!(require_keys(&o).unwrap_err().to_string().contains("student.1_thread"));
    }
}
