//! The bundled models, checked in CI as shipped: `rtvla model check` (tract against the exporter's reference outputs)
//! on every manifest in `models/student/` with the host binary, and the students the ARM boards run (f32, int8, f16) with
//! the cross-built static binary under `qemu-aarch64 -cpu cortex-a76` (the Raspberry Pi 5's core).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The students an aarch64 board profile may name.
/// f16 is checked here on the arm64 fp16 kernels it is meant for (on x86 tract runs f16 in scalar code).
const ARM_STUDENTS: &[&str] = &["student.toml", "student_int8.toml", "student_f16.toml"];

/// Every bundled manifest through the host binary.
pub fn host(root: &Path, rtvla: &Path) -> Result<()> {
    let mut manifests: Vec<_> = std::fs::read_dir(root.join("models/student"))
        .context("reading models/student")?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    manifests.sort();
    if manifests.is_empty() {
        bail!("models/student holds no manifest");
    }
    for m in &manifests {
        check(Command::new(rtvla).args(["model", "check"]).arg(m), m)?;
    }
    Ok(())
}

/// The CPU an x86 check runs as when the machine's own has more: Haswell has AVX2 and FMA but neither AVX-512 nor
/// VNNI, the CPU class whose int8 kernels (tract's and ONNX Runtime's) differ most from this workplace's machines.
pub const AVX2_ONLY_CPU: &str = "Haswell";

/// A student's manifest (bundled or exported) through the host binary as an AVX2-only CPU: `qemu-x86_64 -cpu
/// Haswell` answers CPUID as that CPU, so tract dispatches to its AVX2 kernels whatever CI machine this runs on.
/// Why: the int8 parity vectors are exact integer arithmetic, and a CI run on an AVX2-only machine is where an
/// inexact reference showed (models/distill/README.md, step 7); this keeps tract's own AVX2 path held to them.
pub fn x86_avx2(rtvla: &Path, manifest: &Path) -> Result<()> {
    crate::cross::ensure_apt(&["qemu-user"])?;
    check(
        Command::new("qemu-x86_64").args(["-cpu", AVX2_ONLY_CPU]).arg(rtvla).args(["model", "check"]).arg(manifest),
        manifest,
    )
}

/// The bundled f32 and int8 students through [`x86_avx2`].
pub fn x86_avx2_bundled(root: &Path, rtvla: &Path) -> Result<()> {
    for name in ["student.toml", "student_int8.toml"] {
        x86_avx2(rtvla, &root.join("models/student").join(name))?;
    }
    Ok(())
}

/// The ARM boards' students through the aarch64 binary under user-mode emulation.
pub fn aarch64(root: &Path, rtvla_aarch64: &Path) -> Result<()> {
    for name in ARM_STUDENTS {
        let m = root.join("models/student").join(name);
        check(
            Command::new("qemu-aarch64")
                .args(["-cpu", "cortex-a76"])
                .arg(rtvla_aarch64)
                .args(["model", "check"])
                .arg(&m),
            &m,
        )?;
    }
    Ok(())
}

fn check(cmd: &mut Command, manifest: &Path) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    eprint!("{text}");
    if !out.status.success() || !text.contains("-> ok") {
        bail!(
            "model check of {} failed ({}): {}",
            manifest.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// DS the bundled student may lose against its model card on the card's own runs before CI fails: the runs are
/// deterministic, so this only absorbs floating-point differences between CPUs that flip an outcome or two.
const DS_MARGIN: f64 = 5.0;

/// A closed-loop floor: the bundled student drives the model card's held-out runs (`models/eval.json`: its seeds
/// and scenarios) through `rtvla sim eval`, and must score at least the card's DS minus [`DS_MARGIN`].
pub fn closed_loop_floor(root: &Path, rtvla: &Path) -> Result<()> {
    let card = crate::read_json(&root.join("models/eval.json"))?;
    let row = card["rows"].as_array().and_then(|rows| rows.iter().find(|r| r["model"] == "student"));
    let card_ds = row.and_then(|r| r["driving_score"].as_f64()).context("models/eval.json has no student DS")?;
    let seeds = card["held_out_seeds"].as_array().context("models/eval.json has no held_out_seeds")?;
    let (a, b) = (seeds[0].as_u64().unwrap_or(0), seeds.get(1).and_then(|s| s.as_u64()).unwrap_or(0));
    let scenarios = card["scenarios"].as_str().unwrap_or("held-out");
    let out = crate::tempdir()?.join("floor.json");
    let seeds = format!("{a}..{b}");
    crate::run(
        Command::new(rtvla)
            .args(["sim", "eval", "--policy", "model", "--scenarios", scenarios, "--seeds", &seeds])
            .arg("--json")
            .arg(&out),
    )?;
    let got = crate::read_json(&out)?;
    let ds = got["driving_score"].as_f64().context("sim eval JSON has no driving_score")?;
    let runs = got["runs"].as_array().map_or(0, Vec::len);
    eprintln!(
        "student: DS {ds:.1} on the card's {runs} runs ({scenarios}, seeds {seeds}); card {card_ds:.1}, floor {:.1}",
        card_ds - DS_MARGIN
    );
    if ds < card_ds - DS_MARGIN {
        bail!("the bundled student drives DS {ds:.1}, below its card's {card_ds:.1} minus {DS_MARGIN}");
    }
    Ok(())
}
