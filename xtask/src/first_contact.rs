//! What a new user meets first, checked in CI exactly as they meet it: the README's run command builds with no
//! system library (nothing runs bindgen, pkg-config or cmake), and the installed binary works from `/`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, read_json, run, tempdir};

/// Build-time crates that look for (or generate bindings to) system libraries: a fresh machine has none of them.
const SYSTEM_BUILD_DEPS: &[&str] =
    &["bindgen", "clang-sys", "pkg-config", "cmake", "vcpkg", "system-deps", "metadeps", "autotools"];

/// Fails when the default host build of `rtvla` (normal + build dependencies, default features) pulls in any of
/// [`SYSTEM_BUILD_DEPS`]; lists the crates that compile bundled C with gcc (allowed: a fresh machine has gcc).
pub fn check_no_system_build_deps() -> Result<()> {
    let out = cargo()
        .args(["tree", "--package", "rtvla", "--edges", "normal,build", "--prefix", "none", "--format", "{p}"])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!("cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: std::collections::BTreeSet<&str> =
        tree.lines().filter_map(|l| l.split_whitespace().next()).filter(|c| !c.is_empty()).collect();
    let bad: Vec<&&str> = crates.iter().filter(|c| SYSTEM_BUILD_DEPS.contains(c)).collect();
    if !bad.is_empty() {
        bail!("the default build needs system libraries or tools a fresh machine lacks: {bad:?} (see `cargo tree -i NAME`)");
    }
    let c_builds: Vec<&&str> = crates.iter().filter(|c| c.ends_with("-sys")).collect();
    eprintln!(
        "default build: {} crates, none of {SYSTEM_BUILD_DEPS:?}; bundled-C crates (gcc only): {c_builds:?}",
        crates.len()
    );
    Ok(())
}

/// `cargo run --release -- drive`, word for word, with a fresh state directory: it builds, drives the route and
/// prints where its events went and what to run next.
pub fn readme_run_command(root: &Path) -> Result<()> {
    let state = tempdir()?.join("readme-state");
    let out = cargo()
        .args(["run", "--release", "--", "drive"])
        .current_dir(root)
        .env("XDG_STATE_HOME", &state)
        .output()
        .context("running the README's run command")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprint!("{stdout}");
    if !out.status.success() {
        bail!("`cargo run --release -- drive` failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    }
    if !stdout.contains("driving      score") {
        bail!("the drive summary has no driving score");
    }
    let latest = state.join("rtvla/runs/latest");
    if !latest.is_dir() {
        bail!("no per-run store at {}", latest.display());
    }
    Ok(())
}

/// The installed binary from `/`: `cargo xtask install --prefix P`, then `cd / && rtvla drive --ticks 100` and
/// `rtvla explain <its store>`, with no checkout on the way (RTVLA_HOME unset, HOME and XDG_STATE_HOME fresh).
pub fn from_anywhere(root: &Path) -> Result<()> {
    let dir = tempdir()?.join("anywhere");
    let _ = std::fs::remove_dir_all(&dir);
    let prefix = dir.join("prefix");
    crate::install::install(root, &prefix)?;
    let rtvla = prefix.join("bin/rtvla");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(&rtvla);
        c.args(args)
            .current_dir("/")
            .env_remove("RTVLA_HOME")
            .env("HOME", &dir)
            .env("XDG_STATE_HOME", dir.join("state"));
        c
    };
    let report = dir.join("drive.json");
    let mut drive = cmd(&["drive", "--ticks", "100", "--report-json"]).arg(&report).spawn()?;
    // A manual event (SIGUSR1) 2 s into the 5 s run, so there is something to explain even on a quiet route.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: kill(2) on our own child's pid.
    if unsafe { libc::kill(drive.id() as libc::pid_t, libc::SIGUSR1) } != 0 {
        bail!("SIGUSR1 to rtvla drive: {}", std::io::Error::last_os_error());
    }
    if !drive.wait()?.success() {
        bail!("rtvla drive from / failed");
    }
    let r = read_json(&report)?;
    let store = r["store_dir"].as_str().context("the drive report names no store")?.to_string();
    if !store.starts_with(&dir.join("state/rtvla/runs").display().to_string()) {
        bail!("store {store} is not under the state directory");
    }
    if r["route_ended"].as_bool() != Some(false) {
        bail!("a 100-tick drive should report the route as not finished: {}", r["route_ended"]);
    }
    let explained = dir.join("explain.json");
    run(cmd(&["explain", &store, "--json"]).arg(&explained))?;
    let events = read_json(&explained)?.as_array().map_or(0, Vec::len);
    eprintln!("from /: drove 100 ticks, {} events in {store}, {events} explained", r["events_written"]);
    if events == 0 || r["events_written"].as_u64() != Some(events as u64) {
        bail!(
            "explain saw {events} events, the drive wrote {} (at least the manual one expected)",
            r["events_written"]
        );
    }
    Ok(())
}
