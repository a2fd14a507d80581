//! The bundled models, checked in CI as shipped: `rtvla model check` (tract against the exporter's reference outputs)
//! on every manifest in `models/student/` with the host binary, and the students the ARM boards run (f32, int8) with
//! the cross-built static binary under `qemu-aarch64 -cpu cortex-a76` (the Raspberry Pi 5's core).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The students an aarch64 board profile may name.
const ARM_STUDENTS: &[&str] = &["student.toml", "student_int8.toml"];

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
