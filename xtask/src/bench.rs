//! `cargo xtask bench`: figures measured side by side in one run (ratios, not absolute timings), and `--json`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use crate::arm_ledger::ArmOptions;
use crate::{cargo, read_json, release_bin, run, tempdir};

pub fn bench(root: &Path, quick: bool, json: Option<PathBuf>, arm: Option<ArmOptions>) -> Result<()> {
    bench_with(root, quick, json, true, arm)
}

pub fn bench_with(root: &Path, quick: bool, json: Option<PathBuf>, build: bool, arm: Option<ArmOptions>) -> Result<()> {
    if build {
        run(cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    }
    let dir = tempdir()?;
    let ticks = if quick { "200" } else { "1200" };
    let report = dir.join("bench-drive.json");
    eprintln!("real-time drive, the board's student, {ticks} ticks at 20 Hz ...");
    run(Command::new(release_bin(root))
        .args(["drive", "--quiet", "--no-store", "--board", "boards/host-sim.toml", "--ticks", ticks, "--report-json"])
        .arg(&report))?;
    let r = read_json(&report)?;
    let f = |k: &str, q: &str| r[k][q].as_f64().unwrap_or(f64::NAN);
    let overhead_ratio = r["overhead_ratio"].as_f64().unwrap_or(f64::NAN);
    println!("loop, one run ({} ticks, {} model):", r["ticks"], r["model"]);
    println!(
        "  inference      mean {:.3} ms  p50 {:.3}  p99 {:.3}",
        f("infer_ms", "mean"),
        f("infer_ms", "p50"),
        f("infer_ms", "p99")
    );
    println!(
        "  loop overhead  mean {:.3} ms  p50 {:.3}  p99 {:.3}",
        f("overhead_ms", "mean"),
        f("overhead_ms", "p50"),
        f("overhead_ms", "p99")
    );
    let median_ratio = f("overhead_ms", "p50") / f("infer_ms", "p50");
    println!(
        "  overhead / inference = {:.2} % of mean, {:.2} % of median  (goal <= 2 %)",
        overhead_ratio * 100.0,
        median_ratio * 100.0
    );
    println!(
        "  of which preprocess p50 {:.3} ms, camera p50 {:.3} ms",
        f("preprocess_ms", "p50"),
        f("camera_ms", "p50")
    );
    println!("  wake-up jitter p99 {:.3} ms, deadline misses {}", f("jitter_ms", "p99"), r["deadline_misses"]);
    // Model latencies on tract, measured now, side by side in one process (rtvla model bench).
    let (mut teacher_student, mut quantized, mut teacher_lang_student) =
        (serde_json::Value::Null, serde_json::Value::Null, serde_json::Value::Null);
    let bundle = root.join("models/student");
    if bundle.join("teacher.toml").exists() {
        let j = dir.join("model-bench.json");
        let mut cmd = Command::new(release_bin(root));
        cmd.args(["model", "bench", "--iters", if quick { "10" } else { "50" }, "--json"]).arg(&j);
        for m in ["student", "teacher", "student_int8", "teacher_lang"] {
            cmd.arg(bundle.join(format!("{m}.toml")));
        }
        run(&mut cmd)?;
        let rows = read_json(&j)?;
        teacher_student = rows[1]["ratio_to_first"].clone();
        quantized = rows[2]["ratio_to_first"].as_f64().map_or(serde_json::Value::Null, |r| serde_json::json!(1.0 / r));
        teacher_lang_student = rows[3]["ratio_to_first"].clone();
        println!(
            "models on tract (median, one run): teacher / student = {:.2}x vision-only, {:.2}x language-in-the-loop \
             (its graph unoptimised), int8 speed-up = {:.2}x",
            teacher_student.as_f64().unwrap_or(f64::NAN),
            teacher_lang_student.as_f64().unwrap_or(f64::NAN),
            quantized.as_f64().unwrap_or(f64::NAN)
        );
    }
    // tract vs ONNX Runtime needs the Python venv: taken from the last `cargo xtask eval` (models/eval.json).
    let tract_vs_ort = read_json(&root.join("models/eval.json"))
        .map_or(serde_json::Value::Null, |e| e["summary"]["tract_vs_ort"].clone());
    let mut out = serde_json::json!({
        "overhead_ratio": overhead_ratio,
        "overhead_ratio_median": median_ratio,
        "infer_ms": r["infer_ms"],
        "overhead_ms": r["overhead_ms"],
        "p99_jitter_ms": f("jitter_ms", "p99"),
        "deadline_misses": r["deadline_misses"],
        "allocs_per_tick_outside_inference": r["allocs_per_tick_outside_inference"],
        "allocs_per_inference": r["allocs_per_inference"],
        "model": r["model"],
        "teacher_student_ratio": teacher_student,
        "teacher_lang_student_ratio": teacher_lang_student,
        "quantized_speedup": quantized,
        "tract_vs_ort": tract_vs_ort,
        "tract_vs_ort_source": "models/eval.json (cargo xtask eval)",
    });
    if let Some(a) = arm {
        out["arm_insns"] = crate::arm_ledger::ledger(root, &a)?;
    }
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&out)? + "\n")?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}
