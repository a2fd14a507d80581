//! Cross builds for the boards (`cargo xtask build --board B`) and the host prerequisites they need, installed
//! idempotently: Debian packages through apt-get (only the missing ones, one `apt-get update` per run) and rustup
//! targets. See ../shared/notes-cross-and-qemu.md for the recipe this follows.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, run, step, target_dir};

/// Debian packages a cross build of rtvla needs: the aarch64 C compiler + linker and libc headers, and qemu-user to
/// run aarch64 test binaries. No libclang: the V4L2 bindings are checked in (`moq-v4l`), nothing runs bindgen.
pub const CROSS_PACKAGES: &[&str] = &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross", "qemu-user"];

/// The triple this machine builds natively.
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// True when dpkg says the package is installed.
fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// This process runs as root (then apt, dpkg and root-owned files need no sudo).
pub(crate) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `apt-get` as root, or through sudo when not root.
pub(crate) fn apt_get() -> Command {
    let mut c = if running_as_root() {
        Command::new("apt-get")
    } else {
        let mut c = Command::new("sudo");
        c.arg("apt-get");
        c
    };
    // Wait for another apt (an unattended upgrade) instead of failing on its lock.
    c.args(["-o", "DPkg::Lock::Timeout=600"]).env("DEBIAN_FRONTEND", "noninteractive");
    c
}

/// Install the Debian packages that are missing (none: no apt call at all), and make sure every one of `pkgs` is
/// installed afterwards: apt may remove one it was not asked for to resolve a conflict. A fresh machine here has
/// qemu-utils 10 from bookworm-backports, and installing bookworm's qemu-system-x86 7.2 removes it (and with it
/// qemu-img) — so a package removed by the first install is installed again, in the version that fits.
pub fn ensure_apt(pkgs: &[&str]) -> Result<()> {
    let missing = not_installed(pkgs);
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("apt-get install {}", missing.join(" ")));
    run(apt_get().args(["update", "-qq"]))?;
    apt_install(&missing)?;
    let removed = not_installed(pkgs);
    if !removed.is_empty() {
        step(&format!("apt-get install {} (removed by the install above: a version conflict)", removed.join(" ")));
        apt_install(&removed)?;
    }
    let still = not_installed(pkgs);
    if !still.is_empty() {
        bail!("Debian packages still not installed after apt-get install: {}", still.join(" "));
    }
    Ok(())
}

fn not_installed<'a>(pkgs: &[&'a str]) -> Vec<&'a str> {
    pkgs.iter().copied().filter(|p| !installed(p)).collect()
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    run(apt_get().args(["install", "-y", "-qq", "--no-install-recommends"]).args(pkgs))
        .context("installing Debian packages (needs root or sudo and a reachable Debian mirror)")
}

/// `dpkg --add-architecture arm64` (for `apt-get download ...:arm64`), once.
pub fn ensure_arm64_arch() -> Result<()> {
    let out = Command::new("dpkg").arg("--print-foreign-architectures").output().context("running dpkg")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == "arm64") {
        return Ok(());
    }
    step("dpkg --add-architecture arm64");
    if running_as_root() {
        run(Command::new("dpkg").args(["--add-architecture", "arm64"]))?;
    } else {
        run(Command::new("sudo").args(["dpkg", "--add-architecture", "arm64"]))?;
    }
    run(apt_get().args(["update", "-qq"]))
}

/// `rustup target add` for the targets that are not installed yet.
pub fn ensure_rust_target(triple: &str) -> Result<()> {
    let out = Command::new("rustup").args(["target", "list", "--installed"]).output().context("running rustup")?;
    if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == triple) {
        return Ok(());
    }
    step(&format!("rustup target add {triple}"));
    run(Command::new("rustup").args(["target", "add", triple]))
}

/// Host prerequisites of an aarch64 build (packages + rustup target).
pub fn ensure_cross(triple: &str) -> Result<()> {
    if triple == HOST_TRIPLE {
        return Ok(());
    }
    if !triple.starts_with("aarch64-unknown-linux-") {
        bail!("target {triple}: only x86_64 and aarch64-unknown-linux-{{gnu,musl}} are supported");
    }
    ensure_apt(CROSS_PACKAGES)?;
    ensure_rust_target(triple)
}

/// Environment a cross `cargo build/test` for `triple` needs: crates that compile bundled C (the MCAP writer's
/// compressors) use Debian's aarch64 gcc; the `cc` crate would look for `aarch64-linux-musl-gcc`, which Debian lacks.
pub fn cross_env(cmd: &mut Command, triple: &str) {
    if triple.starts_with("aarch64") {
        cmd.env(format!("CC_{}", triple.replace('-', "_")), "aarch64-linux-gnu-gcc");
        cmd.env(format!("AR_{}", triple.replace('-', "_")), "aarch64-linux-gnu-ar");
    }
}

/// The `[board] target` of a profile.
pub fn board_target(board: &Path) -> Result<String> {
    let text = std::fs::read_to_string(board).with_context(|| format!("reading {}", board.display()))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", board.display()))?;
    table
        .get("board")
        .and_then(|b| b.get("target"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .with_context(|| format!("{}: [board] target is missing", board.display()))
}

/// Resolve `--board` as a path or a name under boards/.
pub fn board_path(root: &Path, board: &str) -> Result<PathBuf> {
    let p = PathBuf::from(board);
    if p.exists() {
        return Ok(p);
    }
    let named = root.join("boards").join(format!("{board}.toml"));
    if named.exists() {
        return Ok(named);
    }
    let known: Vec<String> = std::fs::read_dir(root.join("boards"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    bail!("board {board:?}: no such profile (known: {})", known.join(", "))
}

/// `cargo xtask build --board B`: release binary for the board's target; prints size and, last, its path.
pub fn build(root: &Path, board: &str) -> Result<PathBuf> {
    let profile = board_path(root, board)?;
    let triple = board_target(&profile)?;
    ensure_cross(&triple)?;
    step(&format!("cargo build of rtvla for {triple} (board {})", profile.display()));
    let host = triple == HOST_TRIPLE;
    let mut cmd = cargo();
    cmd.args(["build", "--bin", "rtvla"]);
    if host {
        // The host build keeps target/release (shared with `cargo test --release`), not a second tract compile.
        cmd.arg("--release");
    } else {
        // Profile `board` (Cargo.toml): release without debug info, stripped.
        cmd.args(["--profile", "board", "--target", &triple]);
    }
    cross_env(&mut cmd, &triple);
    run(&mut cmd)?;
    let bin =
        if host { target_dir(root).join("release/rtvla") } else { target_dir(root).join(&triple).join("board/rtvla") };
    let size = std::fs::metadata(&bin).with_context(|| format!("{} was not built", bin.display()))?.len();
    let file = Command::new("file").arg("-b").arg(&bin).output().ok();
    let kind = file.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    eprintln!("board {board}: {triple}, {:.1} MiB ({size} bytes)", size as f64 / (1024.0 * 1024.0));
    if !kind.is_empty() {
        eprintln!("{kind}");
    }
    if triple.ends_with("musl") && !kind.is_empty() && !kind.contains("statically linked") {
        bail!("{}: expected a statically linked binary, `file` says: {kind}", bin.display());
    }
    println!("{}", bin.display());
    Ok(bin)
}

/// Unit tests of the library for aarch64, run under qemu-aarch64 user mode (the runner in .cargo/config.toml).
/// Same target and profile as the board binaries, so the dependencies (tract) compile once for both.
pub fn test_aarch64(_root: &Path) -> Result<()> {
    let triple = "aarch64-unknown-linux-musl";
    ensure_cross(triple)?;
    step(&format!("unit tests for {triple} under qemu-aarch64 (user mode)"));
    let mut cmd = cargo();
    cmd.args(["test", "--profile", "board", "--lib", "--target", triple]);
    // Host-side training tooling, not board code: a model-driven `sim dataset` takes 0.8 s natively but did not
    // finish in 10 min under qemu-aarch64 (2026-11-30; not yet understood, see the closing note). Skipped here by
    // name, run by the host test suite.
    cmd.args(["--", "--skip", "sim::dataset::tests::a_model_drives_beta_mixed_and_the_expert_labels"]);
    cross_env(&mut cmd, triple);
    run(&mut cmd)
}
