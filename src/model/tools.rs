//! Model-level checks that run on the target itself: parity of tract against the training framework's outputs
//! (through the runtime's own preprocess), and tract latency of several models measured side by side.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{PolicyInput, Student, TractStudent};
use crate::error::bad_input;
use crate::preprocess::Preprocessor;
use crate::types::{EgoState, PATH_POINTS, SPEED_POINTS};

/// Reference vectors written next to a model at export time (`<name>.parity.json`): raw camera frames and what the
/// reference framework computed from them (after the same crop/resize/normalise the runtime does).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParityVectors {
    /// Who computed the expected outputs, e.g. "pytorch" or "onnxruntime (int8)".
    pub reference: String,
    /// Largest acceptable |tract − reference| over the waypoints (metres).
    pub tolerance: f32,
    /// Same for the features (default: `tolerance`). f16 needs more: tract's f16 graph is compared with the f32
    /// reference. int8 does not: tract and ONNX Runtime run the same integer arithmetic on the same file.
    #[serde(default)]
    pub features_tolerance: Option<f32>,
    pub frame_width: usize,
    pub frame_height: usize,
    pub crop_bottom: usize,
    pub cases: Vec<ParityCase>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParityCase {
    /// Packed RGB8 camera frame, base64.
    pub rgb_b64: String,
    pub speed: f32,
    pub target_points: [[f32; 2]; 2],
    pub path: Vec<[f32; 2]>,
    pub speed_wps: Vec<[f32; 2]>,
    /// Flattened `features` output (empty if the reference did not record it).
    #[serde(default)]
    pub features: Vec<f32>,
}

/// Result of `rtvla model check`.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    pub model: String,
    pub precision: String,
    pub reference: String,
    pub cases: usize,
    pub max_abs_diff_waypoints: f32,
    pub max_abs_diff_features: f32,
    pub tolerance: f32,
    pub features_tolerance: f32,
    pub passed: bool,
}

/// The vectors file a manifest's export wrote: `<manifest stem>.parity.json` beside it.
pub fn default_vectors_path(manifest: &Path) -> PathBuf {
    manifest.with_extension("parity.json")
}

/// Read a parity-vectors JSON (`vectors`, or the file export wrote beside `manifest`); refuses a file without cases.
pub fn read_vectors<T: serde::de::DeserializeOwned>(
    manifest: &Path,
    vectors: Option<&Path>,
    cases: impl Fn(&T) -> usize,
) -> anyhow::Result<(PathBuf, T)> {
    let vpath = vectors.map(Path::to_path_buf).unwrap_or_else(|| default_vectors_path(manifest));
    let text = std::fs::read_to_string(&vpath)
        .map_err(|e| bad_input(format!("parity vectors {}: {e} (export writes them)", vpath.display())))?;
    let v: T =
        serde_json::from_str(&text).map_err(|e| bad_input(format!("parity vectors {}: {e}", vpath.display())))?;
    if cases(&v) == 0 {
        return Err(bad_input(format!("parity vectors {}: no cases", vpath.display())));
    }
    Ok((vpath, v))
}

/// Load a model, run every reference case through the runtime's preprocess and tract, compare.
pub fn check(manifest: &Path, vectors: Option<&Path>) -> anyhow::Result<CheckReport> {
    let (vpath, v) = read_vectors(manifest, vectors, |v: &ParityVectors| v.cases.len())?;
    if v.crop_bottom >= v.frame_height {
        return Err(bad_input(format!("parity vectors {}: crop_bottom ≥ frame height", vpath.display())));
    }
    let mut student = TractStudent::load(manifest)?;
    let [_, h, w] = student.image_shape();
    let mut pre = Preprocessor::new(v.frame_width, v.frame_height, v.crop_bottom, w, h, &student.manifest().preprocess);
    let (mut wp_diff, mut feat_diff) = (0.0f32, 0.0f32);
    for (i, case) in v.cases.iter().enumerate() {
        let bad = |what: &str| bad_input(format!("parity vectors {}: case {i}: {what}", vpath.display()));
        let rgb = base64::engine::general_purpose::STANDARD.decode(&case.rgb_b64).map_err(|_| bad("rgb_b64"))?;
        if case.path.len() != PATH_POINTS || case.speed_wps.len() != SPEED_POINTS {
            return Err(bad("expected 20 path points and 10 speed waypoints"));
        }
        let image = pre.run(&rgb).ok_or_else(|| bad("frame shorter than frame_width × frame_height × 3"))?.to_vec();
        let ego = EgoState { speed_mps: case.speed, target_points: case.target_points };
        let out = student.infer(&PolicyInput { image: &image, ego: &ego, privileged: None })?;
        let got = out.waypoints.path.iter().chain(&out.waypoints.speed_wps);
        for (g, e) in got.zip(case.path.iter().chain(&case.speed_wps)) {
            wp_diff = wp_diff.max((g[0] - e[0]).abs()).max((g[1] - e[1]).abs());
        }
        if !case.features.is_empty() {
            if case.features.len() != out.features.len() {
                return Err(bad("features length differs from the model's features output"));
            }
            for (g, e) in out.features.iter().zip(&case.features) {
                feat_diff = feat_diff.max((g - e).abs());
            }
        }
    }
    let feat_tol = v.features_tolerance.unwrap_or(v.tolerance);
    let m = &student.manifest().model;
    Ok(CheckReport {
        model: m.name.clone(),
        precision: m.precision.clone(),
        reference: v.reference,
        cases: v.cases.len(),
        max_abs_diff_waypoints: wp_diff,
        max_abs_diff_features: feat_diff,
        tolerance: v.tolerance,
        features_tolerance: feat_tol,
        passed: wp_diff.is_finite() && wp_diff <= v.tolerance && feat_diff.is_finite() && feat_diff <= feat_tol,
    })
}

/// Multiply-accumulates of one inference: the `FMA` cost tract's decluttered graph reports for its convolutions and
/// matrix products (`Conv`, `EinSum`: attention and linear layers included), the work a SIMD MAC kernel does.
/// Element-wise ops are left out. The ARM ledger divides instructions per inference by this to size students.
pub fn macs(manifest_path: &Path) -> anyhow::Result<u64> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::ops::{cnn::Conv, einsum::EinSum, Cost};
    let manifest = super::Manifest::load(manifest_path)?;
    let bytes = manifest.verify_file()?;
    let model = super::student::typed_graph(&manifest, &bytes)?.into_decluttered()?;
    let mut total = 0u64;
    for node in &model.nodes {
        if node.op_as::<Conv>().is_none() && node.op_as::<EinSum>().is_none() {
            continue;
        }
        let inputs: TVec<&TypedFact> = node.inputs.iter().map(|i| model.outlet_fact(*i)).collect::<TractResult<_>>()?;
        for (cost, n) in node.op.cost(&inputs)? {
            if matches!(cost, Cost::FMA(_)) {
                total += n.to_i64().context("symbolic MAC count")? as u64;
            }
        }
    }
    Ok(total)
}

/// One model's tract latency, measured interleaved with the others.
#[derive(Debug, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub manifest: String,
    pub kind: String,
    pub precision: String,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    /// This model's median over the first model's median.
    pub ratio_to_first: f64,
    /// Threads tract's matrix products ran on.
    pub threads: usize,
    /// Multiply-accumulates per inference (tract's cost model) and what the median achieved: 2 FLOP per MAC.
    pub macs: u64,
    pub gflops: f64,
}

/// Time `iters` inferences of every model after `warmup` each, rotating between the models so that load changes hit
/// them all alike. `block` = consecutive inferences of one model before the next: 1 is strict round-robin (each
/// inference starts with caches the other models used); a larger block measures each model warm, as a control loop
/// that runs one model every tick sees it.
pub fn bench(
    manifests: &[PathBuf],
    iters: usize,
    warmup: usize,
    block: usize,
    threads: usize,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<Vec<BenchRow>> {
    if manifests.is_empty() {
        return Err(bad_input("model bench: give at least one manifest"));
    }
    set_matmul_threads(threads)?;
    let mut models = Vec::new();
    for m in manifests {
        let s = TractStudent::load(m).with_context(|| format!("loading {}", m.display()))?;
        let [c, h, w] = s.image_shape();
        // A deterministic, textured image: tract's kernels take the same time whatever the values, but NaN-free.
        let image: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0).collect();
        models.push((s, image, Vec::with_capacity(iters)));
    }
    let ego = EgoState { speed_mps: 5.0, target_points: [[15.0, 0.5], [35.0, 1.0]] };
    let (total, block) = (warmup + iters, block.max(1));
    for start in (0..total).step_by(block) {
        for (s, image, times) in models.iter_mut() {
            for run in start..(start + block).min(total) {
                let t0 = Instant::now();
                s.infer(&PolicyInput { image, ego: &ego, privileged: None })?;
                if run >= warmup {
                    times.push(t0.elapsed());
                }
            }
        }
        progress((start + block).min(total), total);
    }
    let mut rows = Vec::new();
    let mut first_median = None;
    for ((s, _, mut times), path) in models.into_iter().zip(manifests) {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let median = ms(times[times.len() / 2]);
        let p90 = ms(times[(times.len() * 9 / 10).min(times.len() - 1)]);
        let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
        let first = *first_median.get_or_insert(median);
        let m = &s.manifest().model;
        let n_macs = macs(path)?;
        rows.push(BenchRow {
            model: m.name.clone(),
            manifest: path.display().to_string(),
            kind: m.kind.clone(),
            precision: m.precision.clone(),
            median_ms: median,
            p90_ms: p90,
            mean_ms: mean,
            ratio_to_first: median / first,
            threads,
            macs: n_macs,
            gflops: 2.0 * n_macs as f64 / (median * 1e-3) / 1e9,
        });
    }
    Ok(rows)
}

/// tract runs single-threaded unless a multi-threaded executor is installed (matrix products only; the rest of a
/// graph stays on the calling thread). The drive loop never calls this: one inference thread is the design.
fn set_matmul_threads(threads: usize) -> anyhow::Result<()> {
    use tract_linalg::multithread::{set_default_executor, Executor};
    match threads {
        0 => Err(bad_input("model bench: --threads must be at least 1")),
        1 => {
            set_default_executor(Executor::SingleThread);
            Ok(())
        }
        n => {
            set_default_executor(Executor::multithread(n));
            Ok(())
        }
    }
}

/// A small fixed-width table of bench rows.
pub fn render_bench(rows: &[BenchRow]) -> String {
    let mut s = format!(
        "{:<28} {:<8} {:<6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
        "model", "kind", "prec", "median ms", "p90 ms", "mean ms", "× first", "MMAC", "GFLOP/s"
    );
    for r in rows {
        s += &format!(
            "{:<28} {:<8} {:<6} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8.2}\n",
            r.model,
            r.kind,
            r.precision,
            r.median_ms,
            r.p90_ms,
            r.mean_ms,
            r.ratio_to_first,
            r.macs as f64 / 1e6,
            r.gflops
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fixture/student_fixture.toml");

    fn vectors_from_fixture(dir: &Path, tolerance: f32, nudge: f32) -> PathBuf {
        // Expected outputs computed by tract itself, then optionally nudged: checks the comparison, not the model.
        let mut s = TractStudent::load(Path::new(FIXTURE)).unwrap();
        let [_, h, w] = s.image_shape();
        let (fw, fh, crop) = (256, 144, 16);
        let rgb: Vec<u8> = (0..fw * fh * 3).map(|i| (i % 251) as u8).collect();
        let mut pre = Preprocessor::new(fw, fh, crop, w, h, &s.manifest().preprocess);
        let image = pre.run(&rgb).unwrap().to_vec();
        let ego = EgoState { speed_mps: 3.0, target_points: [[12.0, 1.0], [30.0, -2.0]] };
        let out = s.infer(&PolicyInput { image: &image, ego: &ego, privileged: None }).unwrap().clone();
        let mut path: Vec<[f32; 2]> = out.waypoints.path.to_vec();
        path[3][1] += nudge;
        let v = ParityVectors {
            reference: "tract (self-test)".into(),
            tolerance,
            features_tolerance: None,
            frame_width: fw,
            frame_height: fh,
            crop_bottom: crop,
            cases: vec![ParityCase {
                rgb_b64: base64::engine::general_purpose::STANDARD.encode(&rgb),
                speed: ego.speed_mps,
                target_points: ego.target_points,
                path,
                speed_wps: out.waypoints.speed_wps.to_vec(),
                features: out.features.clone(),
            }],
        };
        let p = dir.join("v.parity.json");
        std::fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
        p
    }

    #[test]
    fn check_passes_on_matching_vectors_and_fails_on_a_nudged_point() {
        let dir = std::env::temp_dir().join(format!("rtvla-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = check(Path::new(FIXTURE), Some(&vectors_from_fixture(&dir, 1e-5, 0.0))).unwrap();
        assert!(ok.passed, "{ok:?}");
        assert_eq!(ok.max_abs_diff_waypoints, 0.0);
        let bad = check(Path::new(FIXTURE), Some(&vectors_from_fixture(&dir, 1e-3, 0.5))).unwrap();
        assert!(!bad.passed);
        assert!((bad.max_abs_diff_waypoints - 0.5).abs() < 1e-4, "{bad:?}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_or_corrupt_vectors_are_bad_input() {
        let dir = std::env::temp_dir().join(format!("rtvla-check-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.parity.json");
        for body in [
            None,
            Some("{"),
            Some(r#"{"reference":"x","tolerance":1,"frame_width":4,"frame_height":4,"crop_bottom":0,"cases":[]}"#),
        ] {
            if let Some(b) = body {
                std::fs::write(&p, b).unwrap();
            }
            let e = check(Path::new(FIXTURE), Some(&p)).unwrap_err();
            assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn macs_count_the_fixture_convolutions() {
        // The fixture's trunk (make_fixture.py) is convolutions over a 3x128x256 image: at least one MAC per input
        // value, and far fewer than a dense layer over the whole image would take.
        let n = macs(Path::new(FIXTURE)).unwrap();
        assert!((3 * 128 * 256..1_000_000_000).contains(&n), "{n}");
    }

    #[test]
    fn bench_reports_every_model_with_ratios_to_the_first() {
        let m = PathBuf::from(FIXTURE);
        let rows = bench(&[m.clone(), m.clone()], 3, 1, 2, 1, |_, _| {}).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ratio_to_first, 1.0);
        assert!(rows.iter().all(|r| r.median_ms > 0.0 && r.p90_ms >= r.median_ms));
        // The fixture's convolutions and head cost the same MACs in both rows, and they are not zero.
        assert!(rows[0].macs > 0 && rows[0].macs == rows[1].macs, "{:?}", rows[0].macs);
        assert!(rows.iter().all(|r| r.gflops.is_finite() && r.gflops > 0.0 && r.threads == 1));
        assert!(render_bench(&rows).lines().count() == 3);
        let e = bench(&[m], 3, 1, 1, 0, |_, _| {}).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2, "{e:#}");
    }
}
