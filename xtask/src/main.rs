//! Host-side chores for rtvla (cargo-xtask convention): `cargo xtask <task>`.
//!
//! Every task installs what it needs itself (idempotently) so a fresh machine only needs Rust, gcc, Python and git.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

mod arm_ledger;
mod bench;
mod cross;
mod deploy;
mod deploy_test;
mod deploy_vm;
mod eval;
mod first_contact;
mod hil;
mod install;
mod mcap_check;
mod models_check;
mod powercut;
mod qemu;
mod qemu_hil;
mod report_check;
mod rss;
mod soak;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "rtvla host-side tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// The one test command: fmt, clippy -D warnings, all tests, and the end-to-end drive checks.
    Ci,
    /// Benchmarks: loop overhead vs inference, wake-up jitter, renderer frames/s. Prints ratios measured in one run.
    Bench {
        /// Shorter runs (CI smoke).
        #[arg(long)]
        quick: bool,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also the ARM cost ledger: instructions per inference and per tick on emulated Cortex-A76 / max cores
        /// (qemu-aarch64 + our TCG plugin), checked for determinism and against bench/arm-ledger.json (JSON key
        /// `arm_insns`). With --quick: the students and the tick on cortex-a76 only.
        #[arg(long)]
        arm: bool,
        /// With --arm: rewrite bench/arm-ledger.json from this run instead of comparing against it.
        #[arg(long, requires = "arm")]
        update_baseline: bool,
    },
    /// Static release binary for a board's target (e.g. aarch64-unknown-linux-musl), installing the cross
    /// toolchain first (apt: gcc-aarch64-linux-gnu, qemu-user; rustup target). Prints size, then path.
    Build {
        /// Board profile: a name under boards/ (raspberry-pi-5, jetson-orin-nano, qemu-virt, host-sim) or a path.
        #[arg(long, default_value = "host-sim")]
        board: String,
    },
    /// Boot the qemu-virt board: qemu-system-aarch64 -M virt with Debian's arm64 kernel and the vivid V4L2 driver;
    /// the cross-built rtvla drives from /dev/video0 and the camera error paths are exercised (see xtask/src/qemu.rs).
    Qemu {
        /// Ticks of the main drive (the VM's CPU is emulated: the board runs at 0.2 Hz).
        #[arg(long, default_value_t = 8)]
        ticks: u64,
        /// Kill the VM after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Only the drive, not the no-device / bad-format / unplug checks.
        #[arg(long)]
        drive_only: bool,
    },
    /// Power really lost: an x86_64 VM (qemu, TCG) with the event store on ext4 on a virtio disk, killed
    /// (SIGKILL) a random moment after it started writing snapshots, rebooted, checked; every record the writer
    /// reported committed must be listed and `store verify` must find 0 corrupt (see xtask/src/powercut.rs).
    Powercut {
        /// Power cuts (one boot each, plus a last boot that only checks).
        #[arg(long, default_value_t = 50)]
        cycles: u32,
        /// The board's fsync policy: every_record (the test), or never (must lose records: shows the test can fail).
        #[arg(long, default_value = "every_record", value_parser = ["every_record", "never"])]
        fsync: String,
        /// The cut comes uniformly within this many seconds after a boot's first record.
        #[arg(long, default_value_t = 2.0)]
        max_cut_s: f64,
        /// Seed of the cut times (default: from the clock; printed either way).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Memory over a long run: a host-sim drive in simulated time (--fast, episodes repeating, snapshots recorded);
    /// prints RSS against ticks and fails if it still grows after the warm-up (the first tenth).
    Rss {
        #[arg(long, default_value_t = 1_000_000)]
        ticks: u64,
        /// model (the student: tract inference every tick) or expert (no inference: about 20x faster).
        #[arg(long, default_value = "expert", value_parser = ["model", "expert"])]
        policy: String,
        /// Allowed RSS growth after the warm-up (end against warm-up end, and second-half peak against first), KiB.
        #[arg(long, default_value_t = 512)]
        max_growth_kib: u64,
        /// Record no snapshots (tells the store's share of any growth from the loop's and the simulator's).
        #[arg(long)]
        no_store: bool,
    },
    /// Soak: a long real-time host-sim drive (episodes repeat) with a manual trigger every few seconds; per drive
    /// deadline misses, wake-up jitter, RSS drift, allocations per tick; every snapshot written must verify.
    /// `--stress --knobs both`: the loop under load, with and without the real-time knobs, side by side.
    Soak {
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Seconds between `kill -USR1` manual triggers.
        #[arg(long, default_value_t = 4.0)]
        trigger_every_s: f64,
        /// Keep both cores busy with `stress-ng --cpu 2` for the whole drive (installed from Debian if missing).
        #[arg(long)]
        stress: bool,
        /// on: host-sim with SCHED_FIFO 50, mlockall, CPU 1 (fails on any deadline miss or a knob not applied);
        /// off: host-sim as is; both: the two at the same time under the same load.
        #[arg(long, value_enum, default_value = "off")]
        knobs: soak::Knobs,
        /// Write the figures per knobs setting (p99_jitter_ms, deadline_misses, rss_drift_kb, ...) as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Cold start: exec to the first model command of fresh `rtvla drive` processes on host-sim, median per part
    /// (model load, optimisation, first inference, camera, store, ...).
    ColdStart {
        #[arg(long, default_value_t = 7)]
        runs: usize,
        /// Write the median breakdown as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Hardware-in-the-loop over the wire: the device runs `rtvla drive` on a net board, the host runs
    /// `rtvla sim serve` as the rig; reports the driving score per scenario, the frame→command latency and loss,
    /// and in lockstep checks the runs equal `sim eval --policy model` on the same seeds.
    Hil(hil::HilOptions),
    /// Flash a device: build for the board, upload over ssh into a versioned release, switch `current`, install
    /// the generated systemd unit, restart, health-check (`rtvla status`), roll back automatically on failure.
    Deploy(deploy::DeployOptions),
    /// The deploy path tested for real: an OpenSSH server (Debian's) on loopback with a temporary key and root;
    /// deploy → healthy → a release that fails its health check → rolled back; bad inputs; the unit's
    /// `systemd-analyze verify` and `security` exposure. `--vm`: the whole path with systemd as PID 1 in a Debian VM.
    DeployTest {
        /// Also (or with --vm-only, only) the systemd VM: unit, watchdog restart, rollback.
        #[arg(long)]
        vm: bool,
        #[arg(long)]
        vm_only: bool,
    },
    /// Check the bundled models as CI does: `rtvla model check` on every manifest in models/student (and the
    /// students again as an AVX2-only CPU, under qemu-x86_64 -cpu Haswell), and the student's closed-loop driving score on the model card's held-out runs against its card value.
    ModelsCheck,
    /// Install the release binary in PREFIX/bin and its bundle (boards, models) in PREFIX/share/rtvla, where the
    /// binary finds them from any directory.
    Install {
        /// Install prefix (default: ~/.local).
        #[arg(long)]
        prefix: Option<PathBuf>,
    },
    /// The library's unit tests built for aarch64 and run under qemu-aarch64 (user mode).
    TestAarch64,
    /// Regenerate the fixture student ONNX from its script (needs a Python venv with onnx; created on demand).
    Fixture,
    /// Train teacher + distilled student + ablation and export them (models/distill/pipeline.py, own venv).
    Train {
        /// CI smoke: ~300 frames, a few steps per stage, export, parity (< 2 min once the venv exists).
        #[arg(long)]
        smoke: bool,
        /// Extra arguments passed to pipeline.py (e.g. --preset full --run-dir DIR).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure the bundled models (driving score held-out, tract + ONNX Runtime latency, commentary, parity) and
    /// write models/eval.json + the table in models/MODEL_CARD.md.
    Eval(eval::EvalOptions),
}

fn main() -> Result<()> {
    // Errors are one readable chain, not a backtrace (RUST_BACKTRACE=1 is common in dev shells).
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    let cli = Cli::parse();
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("project root {}", root.display()))?;
    let result = run_task(cli.task, &root);
    clean_scratch(result.is_ok());
    result
}

fn run_task(task: Task, root: &Path) -> Result<()> {
    match task {
        Task::Ci => ci(root),
        Task::Hil(o) => hil::hil(root, &o),
        Task::Deploy(o) => deploy::deploy(root, &o),
        Task::DeployTest { vm, vm_only } => {
            if !vm_only {
                deploy_test::deploy_test(root)?;
            }
            if vm || vm_only {
                deploy_vm::deploy_vm_test(root)?;
            }
            Ok(())
        }
        Task::Bench { quick, json, arm, update_baseline } => {
            let arm = arm.then_some(arm_ledger::ArmOptions { update_baseline, quick });
            bench::bench(root, quick, json, arm)
        }
        Task::Build { board } => cross::build(root, &board).map(|_| ()),
        Task::Qemu { ticks, timeout_s, drive_only } => qemu::qemu(
            root,
            &qemu::QemuOptions { ticks, timeout: std::time::Duration::from_secs(timeout_s), drive_only },
        ),
        Task::Powercut { cycles, fsync, max_cut_s, seed } => powercut::powercut(
            root,
            &release_bin(root),
            &powercut::PowercutOptions { cycles, fsync_never: fsync == "never", max_cut_s, seed, build: true },
        )
        .map(|_| ()),
        Task::Rss { ticks, policy, max_growth_kib, no_store } => {
            rss::rss(root, &rss::RssOptions { ticks, policy, build: true, max_growth_kib, no_store })
        }
        Task::Soak { minutes, trigger_every_s, stress, knobs, json } => {
            soak::soak(root, &soak::SoakOptions { minutes, trigger_every_s, stress, knobs, json })
        }
        Task::ColdStart { runs, json } => soak::cold_start(root, runs, json.as_deref()),
        Task::TestAarch64 => cross::test_aarch64(root),
        Task::ModelsCheck => {
            run(cargo().args(["build", "--release", "--package", "rtvla", "--bin", "rtvla"]))?;
            models_check::host(root, &release_bin(root))?;
            models_check::x86_avx2_bundled(root, &release_bin(root))?;
            models_check::closed_loop_floor(root, &release_bin(root))
        }
        Task::Install { prefix } => install::install(root, &prefix.map_or_else(install::default_prefix, Ok)?),
        Task::Fixture => fixture(root),
        Task::Train { smoke, args } => train(root, smoke, &args),
        Task::Eval(o) => eval::eval(root, &o),
    }
}

/// The workspace this xtask was run for. `cargo xtask` (`cargo run`) sets CARGO_MANIFEST_DIR when it starts us; that
/// beats the compile-time path, which is another checkout's when one target dir serves several clones (cargo
/// reuses a binary built in a clone at another path: `cargo xtask eval` in one tree then ran in the other).
fn project_root() -> PathBuf {
    let xtask_dir =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    xtask_dir.parent().expect("xtask lives in the workspace").to_path_buf()
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

/// Run a command, failing with its name when it fails.
fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {shown}"))?;
    if !status.success() {
        bail!("{shown} failed with {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Power cuts in `cargo xtask ci` (the issue asks for at least 50; about 8 s each on this kind of machine).
const CI_POWERCUT_CYCLES: u32 = 50;
/// Ticks of CI's RSS check (`cargo xtask rss` runs 1 M).
const CI_RSS_TICKS: u64 = 100_000;

fn ci(root: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    step("first contact: the default build needs no system library (no bindgen, pkg-config, cmake)");
    first_contact::check_no_system_build_deps()?;
    step("first contact: the README's run command, as written (cargo run --release -- drive)");
    first_contact::readme_run_command(root)?;
    step("layering: nothing in the runtime imports the simulator (it plugs in as a Plant or over the wire)");
    hil::runtime_does_not_import_sim(root)?;
    step("rustfmt check");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("clippy (all targets, -D warnings)");
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    // Tests run on the release profile, and the end-to-end checks below use the `rtvla` binary that this test
    // build produces: one compile of tract in CI (a separate `cargo build` resolves other dev-dependency features
    // and would compile tract again, minutes on 2 cores).
    step("tests (release profile; also builds target/release/rtvla)");
    run(cargo().args(["test", "--release", "--workspace"]))?;
    step("store faults that need root (tmpfs full, read-only): the ignored tests, run here, never skipped");
    run(cargo().args(["test", "--release", "--test", "store_faults", "--", "--ignored"]))?;
    step("end-to-end: default drive on host-sim, 200 ticks, real time");
    drive_check(root)?;
    step("MCAP export read back by Foxglove's reference reader (Python mcap)");
    mcap_check::check(root)?;
    report_check::check(root, &release_bin(root))?;
    step("end-to-end: the installed binary from / (cargo xtask install; cd / && rtvla drive && rtvla explain)");
    first_contact::from_anywhere(root)?;
    step("bundled models: rtvla model check on every manifest in models/student (tract vs the exporter's outputs)");
    models_check::host(root, &release_bin(root))?;
    step("bundled students on an AVX2-only CPU: rtvla model check under qemu-x86_64 -cpu Haswell (no AVX-512, VNNI)");
    models_check::x86_avx2_bundled(root, &release_bin(root))?;
    step("bundled student: closed-loop floor on the model card's held-out runs");
    models_check::closed_loop_floor(root, &release_bin(root))?;
    step("HIL over the wire (local, lockstep): same scores and commands hashes as sim eval on held-out seeds");
    hil::hil(
        root,
        &hil::HilOptions {
            target: "local".into(),
            scenarios: "following,cut_in".into(),
            seeds: "1000000..1000002".into(),
            pacing: "lockstep".into(),
            json: None,
        },
    )?;
    step("the reference Python rig (tools/rtvla_rig.py, standard library) drives the binary over a keyed link");
    hil::python_client_check(root)?;
    step("deploy against a real sshd on loopback: healthy → unhealthy release rolled back → bad inputs; unit checks");
    deploy_test::deploy_test(root)?;
    step("deploy with systemd as PID 1: a Debian VM (cached rootfs): unit, watchdog restart of a hung loop, rollback");
    let t = std::time::Instant::now();
    deploy_vm::deploy_vm_test(root)?;
    eprintln!("systemd VM deploy test: {:.0} s", t.elapsed().as_secs_f64());
    step("end-to-end: bad input exits 2 with one line");
    bad_input_checks(root)?;
    step("distillation smoke: tiny dataset, a few steps per stage, export, parity (models/distill)");
    distill_smoke(root)?;
    step("bench (quick)");
    // With the ARM ledger's quick pass: the students and one tick counted on cortex-a76, against the baseline.
    let arm = arm_ledger::ArmOptions { update_baseline: false, quick: true };
    bench::bench_with(root, true, Some(root.join("target-bench.json")), false, Some(arm))?;
    bench::require_keys(&read_json(&root.join("target-bench.json"))?)?;
    let _ = std::fs::remove_file(root.join("target-bench.json"));
    step("cross build: static aarch64 binary for raspberry-pi-5");
    let t = std::time::Instant::now();
    let arm_bin = cross::build(root, "raspberry-pi-5")?;
    eprintln!("cross build: {:.0} s", t.elapsed().as_secs_f64());
    step("bundled students on aarch64: rtvla model check under qemu-aarch64 -cpu cortex-a76");
    models_check::aarch64(root, &arm_bin)?;
    step("aarch64 unit tests under qemu-aarch64 (user mode)");
    let t = std::time::Instant::now();
    cross::test_aarch64(root)?;
    eprintln!("aarch64 unit tests: {:.0} s", t.elapsed().as_secs_f64());
    step("QEMU system test: arm64 kernel + vivid V4L2 camera, rtvla drive + camera error paths");
    qemu::qemu(root, &qemu::QemuOptions { ticks: 8, timeout: std::time::Duration::from_secs(900), drive_only: false })?;
    step("HIL in the arm64 VM: the static aarch64 rtvla drives a held-out route from the host's rig over a keyed link");
    hil::hil(
        root,
        &hil::HilOptions {
            target: "qemu".into(),
            scenarios: "following".into(),
            seeds: "1000000".into(),
            pacing: "lockstep".into(),
            json: None,
        },
    )?;
    step(&format!(
        "power cut: x86_64 VM with the store on ext4, SIGKILLed mid-write and rebooted, {CI_POWERCUT_CYCLES} cycles"
    ));
    let pc = |cycles, fsync_never| powercut::PowercutOptions {
        cycles,
        fsync_never,
        max_cut_s: 2.0,
        seed: None,
        build: false,
    };
    powercut::powercut(root, &release_bin(root), &pc(CI_POWERCUT_CYCLES, false))?;
    step("power cut with fsync = never: must lose records (the test can fail)");
    powercut::powercut(root, &release_bin(root), &pc(5, true))?;
    step(&format!("memory: RSS over {CI_RSS_TICKS} ticks in simulated time levels off"));
    rss::rss(
        root,
        &rss::RssOptions {
            ticks: CI_RSS_TICKS,
            policy: "expert".into(),
            build: false,
            max_growth_kib: 512,
            no_store: false,
        },
    )?;
    eprintln!("\nxtask ci: all checks passed in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// The cargo target dir (CI keeps it outside the clone through CARGO_TARGET_DIR).
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"))
}

fn release_bin(root: &Path) -> PathBuf {
    target_dir(root).join("release").join("rtvla")
}

/// Every snapshot a run report counts as written is listed by `rtvla store ls` and passes `rtvla store verify`.
/// Returns the listed events.
fn check_store_matches_report(
    root: &Path,
    store: &Path,
    written: &serde_json::Value,
) -> Result<Vec<serde_json::Value>> {
    let events = store_ls_json(root, store)?;
    if Some(events.len() as u64) != written.as_u64() {
        bail!("store lists {} events, the report says {written} written", events.len());
    }
    run(Command::new(release_bin(root)).args(["store", "verify"]).arg(store))?;
    Ok(events)
}

/// The events `rtvla store ls --json` lists.
fn store_ls_json(root: &Path, store: &Path) -> Result<Vec<serde_json::Value>> {
    let ls = Command::new(release_bin(root)).args(["store", "ls", "--json"]).arg(store).output()?;
    if !ls.status.success() {
        bail!("rtvla store ls failed: {}", String::from_utf8_lossy(&ls.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&ls.stdout).context("store ls --json")?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

fn read_json(p: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// The issue's must-show: 200 real-time ticks, no deadline miss, no allocation outside inference.
fn drive_check(root: &Path) -> Result<()> {
    let dir = tempdir()?;
    let report = dir.join("r.json");
    let store = dir.join("store");
    let _ = std::fs::remove_dir_all(&store);
    run(Command::new(release_bin(root))
        .args(["drive", "--board", "boards/host-sim.toml", "--ticks", "200", "--store"])
        .arg(&store)
        .arg("--report-json")
        .arg(&report))?;
    let r = read_json(&report)?;
    let get = |k: &str| r.get(k).cloned().unwrap_or(serde_json::Value::Null);
    eprintln!(
        "ticks {} deadline_misses {} allocs_per_tick_outside_inference {} overhead_ratio {} driving_score {}",
        get("ticks"),
        get("deadline_misses"),
        get("allocs_per_tick_outside_inference"),
        get("overhead_ratio"),
        get("driving_score")
    );
    if get("ticks").as_u64() != Some(200) {
        bail!("drive: ticks = {}, expected 200", get("ticks"));
    }
    if get("deadline_misses").as_u64() != Some(0) {
        bail!("drive: deadline_misses = {}, expected 0", get("deadline_misses"));
    }
    if get("allocs_per_tick_outside_inference").as_f64() != Some(0.0) {
        bail!("drive: allocs_per_tick_outside_inference = {}, expected 0", get("allocs_per_tick_outside_inference"));
    }
    for k in
        ["tick_ms", "infer_ms", "overhead_ms", "route_completion", "driving_score", "commands_hash", "events_written"]
    {
        if get(k).is_null() {
            bail!("drive report lacks {k}");
        }
    }
    // Every snapshot the report counts as written is listed and verifies.
    if store.exists() {
        let listed = check_store_matches_report(root, &store, &get("events_written"))?.len();
        eprintln!("store: {listed} events written, listed and verified");
        // ... and the language branch explains each of them offline (tract, KV cache).
        let explained = dir.join("explain.json");
        run(Command::new(release_bin(root)).arg("explain").arg(&store).arg("--json").arg(&explained))?;
        let events = read_json(&explained)?.as_array().cloned().unwrap_or_default();
        let with_text = events.iter().filter(|e| e["commentary"].as_str().is_some_and(|t| !t.is_empty())).count();
        if events.len() != listed || with_text != listed {
            bail!("explain: {} events, {with_text} with commentary, the store lists {listed}", events.len());
        }
    } else if get("events_written").as_u64() != Some(0) {
        bail!("the report says {} events written but {} does not exist", get("events_written"), store.display());
    }
    Ok(())
}

fn bad_input_checks(root: &Path) -> Result<()> {
    let dir = tempdir()?;
    let board = std::fs::read_to_string(root.join("boards/host-sim.toml"))?;
    let bad_board = dir.join("bad-board.toml");
    std::fs::write(&bad_board, board.replace("rate_hz = 20", "rate_hz = 20\nrate_hx = 1"))?;
    expect_exit2(root, &["drive", "--ticks", "5", "--board", bad_board.to_str().unwrap()], "rate_hx")?;
    let manifest = std::fs::read_to_string(root.join("models/fixture/student_fixture.toml"))?;
    let bad_manifest = dir.join("m.toml");
    std::fs::write(&bad_manifest, manifest.replace("shape = [1, 20, 2]", "shape = [1, 21, 2]"))?;
    let onnx = root.join("models/fixture/student_fixture.onnx");
    std::fs::write(
        &bad_manifest,
        std::fs::read_to_string(&bad_manifest)?
            .replace("onnx = \"student_fixture.onnx\"", &format!("onnx = {:?}", onnx.display().to_string())),
    )?;
    expect_exit2(root, &["drive", "--ticks", "5", "--model", bad_manifest.to_str().unwrap()], "[1, 21, 2]")?;
    // Up front, before any work: a missing model for a whole evaluation, a manifest of the wrong kind, an unknown
    // policy or board name.
    expect_exit2(
        root,
        &["sim", "eval", "--policy", "model", "--model", "missing.toml", "--seeds", "0..3"],
        "missing.toml",
    )?;
    let student = root.join("models/student/student.toml");
    expect_exit2(
        root,
        &["explain", dir.to_str().unwrap(), "--model", student.to_str().unwrap()],
        "not a language manifest",
    )?;
    let replay = dir.join("r.html");
    let replay_args =
        ["sim", "replay", "--scenario", "cut_in", "--policy", "autopilot", "--html", replay.to_str().unwrap()];
    expect_exit2(root, &replay_args, "unknown policy 'autopilot'")?;
    expect_exit2(root, &["drive", "--ticks", "5", "--board", "no-such-board"], "looked in")?;
    Ok(())
}

fn expect_exit2(root: &Path, args: &[&str], needle: &str) -> Result<()> {
    let out = Command::new(release_bin(root)).args(args).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if out.status.code() != Some(2) || lines.len() != 1 || !stderr.contains(needle) {
        bail!("rtvla {args:?}: expected exit 2 and one line naming {needle:?}, got {:?}: {stderr}", out.status.code());
    }
    eprintln!("ok: {}", lines[0]);
    Ok(())
}

/// This process's scratch directory: VM images, deploy releases, stores and reports of the end-to-end checks
/// (about 3 GiB after `cargo xtask ci`). [`clean_scratch`] removes it when the task succeeds.
fn tempdir() -> Result<PathBuf> {
    let d = scratch_path();
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn scratch_path() -> PathBuf {
    std::env::temp_dir().join(format!("rtvla-xtask-{}", std::process::id()))
}

/// Remove the scratch directory after a successful task, so that repeated CI runs do not fill the disk; after a
/// failure keep it, and say where, because its logs and reports are what one reads next.
fn clean_scratch(succeeded: bool) {
    let d = scratch_path();
    if !d.exists() {
        return;
    }
    if succeeded {
        if let Err(e) = std::fs::remove_dir_all(&d) {
            eprintln!("warning: could not remove the scratch directory {}: {e}", d.display());
        }
    } else {
        eprintln!("scratch directory kept for inspection: {}", d.display());
    }
}

fn fixture(root: &Path) -> Result<()> {
    let venv = root.join(".venv-tools");
    if !venv.join("bin/python").exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "onnx==1.17.0", "numpy<2.3"]))?;
    run(Command::new(venv.join("bin/python"))
        .args(["models/fixture/make_fixture.py", "models/fixture/student_fixture.onnx"]))?;
    eprintln!("fixture regenerated; update sha256 in models/fixture/student_fixture.toml if it changed (sha256sum models/fixture/student_fixture.onnx)");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------- train (distill)

/// `cargo xtask train [--smoke] [pipeline args]`: idempotent venv at models/distill/.venv from the pinned
/// requirements (reinstalled only when requirements.txt changes), then the one-command pipeline.
fn train(root: &Path, smoke: bool, args: &[String]) -> Result<()> {
    let dir = root.join("models/distill");
    let py = distill_python(root)?;
    let mut cmd = Command::new(py);
    cmd.arg(dir.join("pipeline.py"));
    if smoke {
        cmd.arg("--smoke");
    }
    cmd.args(args);
    if std::env::var_os("RTVLA_BIN").is_none() {
        // Always (incremental: seconds when up to date): the pipeline needs this tree's `rtvla sim dataset`, whose
        // closed-loop mode (`--model`, `--beta`) an older binary lacks, and `rtvla sim eval` for each round's DS.
        step("building the release binary (the pipeline generates its datasets with `rtvla sim dataset`)");
        run(cargo().args(["build", "--release"]))?;
        cmd.env("RTVLA_BIN", release_bin(root));
    }
    step("models/distill/pipeline.py");
    run(&mut cmd)
}

/// The training/export venv (models/distill/.venv), created and synced to the pinned requirements idempotently.
fn distill_python(root: &Path) -> Result<PathBuf> {
    let dir = root.join("models/distill");
    // CI keeps the ~5 GB venv outside the clone (like the target dir), so a fresh clone does not reinstall torch.
    let venv = std::env::var_os("RTVLA_DISTILL_VENV").map(PathBuf::from).unwrap_or_else(|| dir.join(".venv"));
    let py = venv.join("bin/python");
    let reqs = std::fs::read_to_string(dir.join("requirements.txt")).context("models/distill/requirements.txt")?;
    let stamp = venv.join("requirements.stamp");
    if !py.exists() {
        step(&format!("creating {}", venv.display()));
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(reqs.as_str()) {
        step("installing models/distill/requirements.txt (torch is large: minutes on first run)");
        run(Command::new(venv.join("bin/pip")).args(["install", "-q", "-r"]).arg(dir.join("requirements.txt")))?;
        std::fs::write(stamp, reqs)?;
    }
    Ok(py)
}

/// `train --smoke` into target/, then the runtime's own parity check (preprocess + tract vs PyTorch / ONNX Runtime)
/// on every exported driving graph.
fn distill_smoke(root: &Path) -> Result<()> {
    let t0 = std::time::Instant::now();
    let run_dir = root.join("target/ci-distill-smoke");
    let _ = std::fs::remove_dir_all(&run_dir);
    let run_dir_arg = run_dir.display().to_string();
    train(root, true, &["--run-dir".to_string(), run_dir_arg])?;
    // The pipeline's unit tests (shapes, KV-cache step = parallel decoder, cached teacher generation = generate,
    // a tiny overfit, export parity) in the venv `train` just made sure of.
    run(Command::new(distill_python(root)?)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "models/distill/tests"])
        .env("RTVLA_BIN", release_bin(root))
        .current_dir(root))?;
    // Driving graphs and both language branches (the teacher's language-in-the-loop graph is 22 unrolled decoder
    // steps: tract's optimiser takes minutes on it, so it is measured with ONNX Runtime only).
    for m in ["student", "student_nodistill", "teacher", "student_int8", "language", "language_nodistill"] {
        run(Command::new(release_bin(root)).arg("model").arg("check").arg(run_dir.join(format!("export/{m}.toml"))))?;
    }
    // The int8 reference is exact integer arithmetic: tract's AVX2 kernels must meet it too, whatever CPU CI has.
    models_check::x86_avx2(&release_bin(root), &run_dir.join("export/student_int8.toml"))?;
    eprintln!("distillation smoke: {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// UTC time as `YYYYMMDDTHHMMSSmmmZ` (release names, log files; milliseconds keep two quick deploys apart).
fn now_stamp() -> String {
    let out = Command::new("date").args(["-u", "+%Y%m%dT%H%M%S%3NZ"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_else(|_| "now".into())
}
