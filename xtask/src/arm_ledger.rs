//! `cargo xtask bench --arm`: the ARM cost ledger — instructions retired per inference and per tick on emulated
//! ARM cores, counted by our own TCG plugin (tools/qemu-plugins/insn_ledger.c) under Debian's `qemu-aarch64`.
//!
//! Why instructions and not milliseconds: there is no board here, and qemu-user timings mean nothing; the number of
//! instructions the board binary retires is deterministic (repeat runs agree exactly, which the ledger checks), so
//! it can be a regression gate and a cost model. For a student that fits in cache it is the dominant term; it ignores
//! issue width and memory stalls, which is why budgets below assume a conservative IPC of 1.
//!
//! Method: each workload runs twice with different iteration counts; per-iteration figures are the difference
//! divided by the iteration difference, so loading and optimising the model cancels out. Workloads: every bundled
//! driving model (`rtvla bench infer --iters N M.toml`: untimed, so nothing in the run depends on the clock) and
//! one whole tick without inference
//! (`rtvla bench tick --iters N --board B`), on `-cpu cortex-a76` (the Pi 5's core; the stand-in for the Orin's
//! A78AE, same ISA level) and `-cpu max`. From them: instructions per MAC of the student, the precision each board
//! should run, and the largest student each board's tick budget allows.
//!
//! Exact repeatability takes a fixed guest: a fixed environment, `-seed`, a `/proc/cpuinfo` of the emulated CPU and
//! getrandom failing over to a fixed `/dev/urandom` (tools/qemu-plugins/no_getrandom.c), each explained where set;
//! and a guest that reads nothing whose width varies (its pid: the repeat pass runs in a new PID namespace, see
//! [`Pass`]).
//!
//! Everything it needs is installed here, idempotently: qemu-user and libglib2.0-dev through apt-get, a `deb-src`
//! entry for Debian's main archive, and `qemu-plugin.h` from Debian's qemu source package (cached next to the cargo
//! target dir, like the qemu task's kernel packages).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::cross::{apt_get, ensure_apt, running_as_root};
use crate::{run, step};

/// What `--arm` was asked for.
pub struct ArmOptions {
    /// Rewrite the checked-in baseline with this run's figures instead of comparing against it.
    pub update_baseline: bool,
    /// Students and the tick on cortex-a76 only (cheap enough for CI's `bench --quick`).
    pub quick: bool,
}

/// The checked-in baseline, relative to the project root.
pub const BASELINE: &str = "bench/arm-ledger.json";
/// A count more than this fraction above its baseline fails the bench.
const TOLERANCE: f64 = 0.02;
/// Host packages: qemu-aarch64 (dynamically linked: the static one cannot load plugins), glib + pkg-config to build
/// the plugin.
const PACKAGES: &[&str] = &["qemu-user", "libglib2.0-dev", "pkg-config"];
const PLUGIN_SOURCE: &str = "tools/qemu-plugins/insn_ledger.c";
/// Fraction of a tick the student may use, at [`IPC`] instructions per cycle: the rest is headroom for the
/// capture thread's interrupts, cache misses, and the scheduler.
const BUDGET_SHARE: f64 = 0.10;
/// Instructions per cycle assumed for the budget: conservative for an out-of-order A76 / A78AE (they issue up to 4).
const IPC: f64 = 1.0;

/// A board's cores as the cost model sees them. Clocks are the vendors' specifications, not measurements:
/// Raspberry Pi 5 = BCM2712, 4× Cortex-A76 at 2.4 GHz; Jetson Orin Nano = 6× Cortex-A78AE at up to 1.5 GHz
/// (developer kit, default power mode). qemu 7.2 has no A78 model: the A76 (same Armv8.2 + dotprod + fp16 ISA)
/// stands in for it, so the Orin's instruction counts are the A76's and only its clock differs.
struct BoardCpu {
    board: &'static str,
    qemu_cpu: &'static str,
    core: &'static str,
    ghz: f64,
}

const BOARDS: &[BoardCpu] = &[
    BoardCpu { board: "raspberry-pi-5", qemu_cpu: "cortex-a76", core: "Cortex-A76", ghz: 2.4 },
    BoardCpu { board: "jetson-orin-nano", qemu_cpu: "cortex-a76", core: "Cortex-A78AE (A76 model)", ghz: 1.5 },
];

/// One workload of the ledger.
#[derive(Clone)]
struct Row {
    name: String,
    /// rtvla arguments for `iters` iterations.
    args: fn(&str, u64) -> Vec<String>,
    /// What `args` gets besides the iteration count: a manifest or a board.
    target: String,
    iters: (u64, u64),
    kind: &'static str,
    /// Measured on this CPU model only.
    only_cpu: Option<&'static str>,
}

fn model_args(manifest: &str, iters: u64) -> Vec<String> {
    ["bench", "infer", "--iters", &iters.to_string(), manifest].map(str::to_string).to_vec()
}

fn tick_args(board: &str, iters: u64) -> Vec<String> {
    ["bench", "tick", "--board", board, "--iters", &iters.to_string()].map(str::to_string).to_vec()
}

/// The workloads: the four driving models and each ARM board's tick. Iteration pairs start at 1 or more so the
/// first inference's one-off work (state and scratch allocation) cancels too.
fn rows(quick: bool) -> Vec<Row> {
    let model = |name: &str, iters| Row {
        name: name.into(),
        args: model_args,
        target: format!("models/student/{name}.toml"),
        iters,
        kind: "inference",
        only_cpu: None,
    };
    let tick = |board: &str| Row {
        name: format!("tick:{board}"),
        args: tick_args,
        target: format!("boards/{board}.toml"),
        iters: (10, 60),
        kind: "tick without inference",
        only_cpu: None,
    };
    let mut rows = vec![model("student", (2, 6)), model("student_int8", (2, 6)), model("student_f16", (2, 6))];
    if !quick {
        // On cortex-a76 only: under `-cpu max` one teacher run did not finish in 4 min (qemu's emulation of the
        // wider vector extensions max offers is slow), against 13 s on cortex-a76.
        rows.push(Row { only_cpu: Some("cortex-a76"), ..model("teacher", (1, 2)) });
    }
    rows.extend(BOARDS.iter().map(|b| tick(b.board)));
    rows
}

fn cpus(quick: bool) -> &'static [&'static str] {
    if quick {
        &["cortex-a76"]
    } else {
        &["cortex-a76", "max"]
    }
}

/// What the plugin wrote for one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counts {
    insns: u64,
    simd_mac: u64,
    undecoded: u64,
}

/// One row on one CPU: raw counts of both runs and the per-iteration figures.
#[derive(Clone, Debug)]
struct Measured {
    row: String,
    kind: &'static str,
    cpu: String,
    iters: (u64, u64),
    lo: Counts,
    hi: Counts,
}

impl Measured {
    /// (instructions, SIMD MACs, undecoded) per iteration.
    fn per_iter(&self) -> Result<(f64, f64, f64)> {
        let d = (self.iters.1 - self.iters.0) as f64;
        let f = |hi: u64, lo: u64, what: &str| -> Result<f64> {
            if hi < lo {
                bail!("{} on {}: {what} fell from {lo} to {hi} with more iterations", self.row, self.cpu);
            }
            Ok((hi - lo) as f64 / d)
        };
        Ok((
            f(self.hi.insns, self.lo.insns, "instructions")?,
            f(self.hi.simd_mac, self.lo.simd_mac, "SIMD MACs")?,
            f(self.hi.undecoded, self.lo.undecoded, "undecoded instructions")?,
        ))
    }
}

/// Everything the ledger runs with.
struct Tools {
    /// tools/qemu-plugins/no_getrandom.c, built: runs qemu with getrandom failing (see there why).
    no_getrandom: PathBuf,
    qemu: PathBuf,
    plugin: PathBuf,
    rtvla: PathBuf,
    out: PathBuf,
    /// Per CPU model: a `-L` prefix holding the `/proc/cpuinfo` that CPU would show (see [`cpuinfo_prefix`]).
    prefixes: BTreeMap<String, PathBuf>,
}

/// Linux's names of the arm64 AT_HWCAP bits 0..31, in bit order: what /proc/cpuinfo prints as "Features".
const HWCAP_NAMES: [&str; 32] = [
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid",
    "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit",
    "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
];

/// Main ID register part numbers tract reads from "CPU part" (only to tell A53/A55/A7x/Neoverse apart).
fn cpu_part(cpu: &str) -> Option<&'static str> {
    (cpu == "cortex-a76").then_some("0xd0b")
}

/// The Features line for an AT_HWCAP value.
fn hwcap_features(hwcap: u64) -> String {
    HWCAP_NAMES.iter().enumerate().filter(|(i, _)| hwcap & (1 << i) != 0).map(|(_, n)| *n).collect::<Vec<_>>().join(" ")
}

/// A `-L` prefix whose `proc/cpuinfo` shows the emulated CPU's features. Why: qemu-user 7.2 passes the *host's*
/// /proc/cpuinfo through to aarch64 guests, and tract decides on its fp16 kernels from the "asimdhp" in that file
/// (dotprod it reads from AT_HWCAP, which qemu sets right): without this, the f16 student would run tract's generic
/// code under qemu and on the board its fp16 kernels. The features come from the emulated CPU itself: glibc's
/// aarch64 loader run under qemu with LD_SHOW_AUXV prints the AT_HWCAP qemu gives that CPU; qemu's `path()`
/// redirects the guest's open of /proc/cpuinfo to `<prefix>/proc/cpuinfo`.
fn cpuinfo_prefix(cache: &Path, cpu: &str) -> Result<PathBuf> {
    let loader = "/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1";
    let out = Command::new("qemu-aarch64")
        .args(["-cpu", cpu, loader, "--version"])
        .env("LD_SHOW_AUXV", "1")
        .output()
        .with_context(|| format!("running {loader} under qemu-aarch64"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The loader prints its own auxv last: the last AT_HWCAP line is the guest's.
    let hwcap = text
        .lines()
        .filter_map(|l| l.strip_prefix("AT_HWCAP:"))
        .next_back()
        .and_then(|v| u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).ok())
        .with_context(|| format!("LD_SHOW_AUXV=1 {loader} under qemu -cpu {cpu} printed no AT_HWCAP: {text}"))?;
    let prefix = cache.join(format!("cpuinfo-{cpu}"));
    std::fs::create_dir_all(prefix.join("proc"))?;
    let mut info =
        format!("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {}\nCPU implementer\t: 0x41\n", hwcap_features(hwcap));
    if let Some(part) = cpu_part(cpu) {
        info += &format!("CPU architecture: 8\nCPU variant\t: 0x4\nCPU part\t: {part}\nCPU revision\t: 1\n");
    }
    std::fs::write(prefix.join("proc/cpuinfo"), info + "\n")?;
    // What the guest reads for randomness once getrandom fails (no_getrandom.c): fixed bytes, so hash maps probe
    // the same way every run.
    std::fs::create_dir_all(prefix.join("dev"))?;
    std::fs::write(
        prefix.join("dev/urandom"),
        (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect::<Vec<u8>>(),
    )?;
    Ok(prefix)
}

/// `cargo xtask bench --arm`: measure, check determinism and the baseline, print the table; returns the JSON that
/// goes under `arm_insns` in the bench JSON.
pub fn ledger(root: &Path, opts: &ArmOptions) -> Result<Value> {
    let t0 = Instant::now();
    let tools = prepare(root)?;
    let rows = rows(opts.quick);
    step(&format!(
        "ARM ledger: {} workloads on {} CPU models, all but the teacher twice",
        rows.len(),
        cpus(opts.quick).len()
    ));
    let first = measure_all(root, &tools, &rows, cpus(opts.quick), Pass::First)?;
    // The determinism pass repeats everything but the teacher (a third of the time, and not a board's model).
    let again: Vec<Row> = rows.iter().filter(|r| r.name != "teacher").cloned().collect();
    let second = measure_all(root, &tools, &again, cpus(opts.quick), Pass::NewPidNamespace)?;
    check_deterministic(&first, &second)?;
    let macs = student_macs(root, &tools)?;
    let mut ledger = to_json(&first, macs, &tools)?;
    add_board_figures(root, &mut ledger)?;
    ledger["seconds"] = json!((t0.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    print!("{}", render(&ledger));
    check_board_precisions(&ledger)?;
    let baseline = root.join(BASELINE);
    if opts.update_baseline {
        std::fs::create_dir_all(baseline.parent().unwrap_or(root))?;
        std::fs::write(&baseline, serde_json::to_string_pretty(&ledger)? + "\n")?;
        eprintln!("wrote {}", baseline.display());
    } else {
        let base = crate::read_json(&baseline).with_context(|| {
            format!("no baseline: run `cargo xtask bench --arm --update-baseline` to write {BASELINE}")
        })?;
        compare(&ledger, &base)?;
    }
    eprintln!("ARM ledger: {:.0} s", t0.elapsed().as_secs_f64());
    Ok(ledger)
}

/// Host packages, the plugin and the board binary.
fn prepare(root: &Path) -> Result<Tools> {
    ensure_apt(PACKAGES)?;
    let cache = crate::target_dir(root).join("arm-ledger");
    std::fs::create_dir_all(&cache)?;
    let header_dir = plugin_header(&cache)?;
    let plugin = build_plugin(root, &cache, &header_dir)?;
    let no_getrandom = build_c(root, &cache, NO_GETRANDOM_SOURCE, "no_getrandom", &["-O2"])?;
    step("static aarch64 rtvla (board build of raspberry-pi-5)");
    let rtvla = crate::cross::build(root, "raspberry-pi-5")?;
    let out = crate::tempdir()?.join("arm-ledger");
    std::fs::create_dir_all(&out)?;
    let mut prefixes = BTreeMap::new();
    for cpu in cpus(false) {
        prefixes.insert(cpu.to_string(), cpuinfo_prefix(&cache, cpu)?);
    }
    Ok(Tools { no_getrandom, qemu: PathBuf::from("qemu-aarch64"), plugin, rtvla, out, prefixes })
}

/// The directory holding `qemu-plugin.h` of the installed qemu's version, from Debian's qemu source package
/// (downloaded once into the cache; only the header is unpacked).
fn plugin_header(cache: &Path) -> Result<PathBuf> {
    let version = qemu_version()?;
    let src = cache.join("qemu-src");
    let include = src.join(format!("qemu-{version}/include/qemu"));
    if include.join("qemu-plugin.h").exists() {
        return Ok(include);
    }
    std::fs::create_dir_all(&src)?;
    if find_orig_tarball(&src).is_none() {
        ensure_deb_src()?;
        step("apt-get source --download-only qemu (Debian's qemu source: the TCG plugin API header)");
        run(Command::new("apt-get").current_dir(&src).args(["source", "--download-only", "-q", "qemu"]))
            .context("downloading Debian's qemu source package")?;
    }
    let tarball = find_orig_tarball(&src).context("apt-get source left no qemu_*.orig.tar.xz")?;
    let member = format!("qemu-{version}/include/qemu/qemu-plugin.h");
    run(Command::new("tar").current_dir(&src).arg("-xJf").arg(&tarball).arg(&member)).with_context(|| {
        format!(
            "{} holds no {member}: its version differs from the installed qemu-aarch64 {version}",
            tarball.display()
        )
    })?;
    Ok(include)
}

/// Upstream version of the installed qemu-aarch64 as its source tree names it ("7.2.0" for Debian's 7.2.x).
fn qemu_version() -> Result<String> {
    let out = crate::qemu::output(Command::new("qemu-aarch64").arg("--version"))?;
    parse_qemu_version(&out).with_context(|| format!("qemu-aarch64 --version: cannot read a version from {out:?}"))
}

/// "qemu-aarch64 version 7.2.22 (Debian ...)" → "7.2.0": Debian's orig tarball is the x.y.0 release.
fn parse_qemu_version(text: &str) -> Option<String> {
    let v = text.split_whitespace().skip_while(|w| *w != "version").nth(1)?;
    let mut parts = v.split('.');
    let (major, minor) = (parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?);
    Some(format!("{major}.{minor}.0"))
}

fn find_orig_tarball(dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).find(|p| {
        p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("qemu_") && n.ends_with(".orig.tar.xz"))
    })
}

const DEB_SRC_FILE: &str = "/etc/apt/sources.list.d/rtvla-deb-src.sources";

/// A `deb-src` entry for Debian's main archive (for `apt-get source`), unless one exists; then `apt-get update`.
fn ensure_deb_src() -> Result<()> {
    if has_deb_src() {
        return Ok(());
    }
    let codename = os_codename().context("/etc/os-release names no VERSION_CODENAME (not Debian?)")?;
    let entry = format!(
        "# Added by `cargo xtask bench --arm` (rtvla): source packages, for qemu's TCG plugin header.\n\
         Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: {codename} {codename}-updates\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    step(&format!("adding a deb-src entry ({DEB_SRC_FILE})"));
    write_as_root(Path::new(DEB_SRC_FILE), &entry)?;
    run(apt_get().args(["update", "-qq"]))
}

fn has_deb_src() -> bool {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()).any(|t| declares_deb_src(&t))
}

/// True when an apt sources text (one-line or deb822 format) enables source packages.
fn declares_deb_src(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| l.starts_with("deb-src ") || (l.starts_with("Types:") && l.split_whitespace().any(|w| w == "deb-src")))
}

fn os_codename() -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map(|v| v.trim_matches('"').to_string())
}

/// Write a root-owned file: directly as root, else through `sudo tee`.
fn write_as_root(path: &Path, text: &str) -> Result<()> {
    if running_as_root() {
        return std::fs::write(path, text).with_context(|| format!("writing {}", path.display()));
    }
    use std::io::Write;
    let mut child = Command::new("sudo")
        .arg("tee")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("sudo tee")?;
    child.stdin.take().context("sudo tee stdin")?.write_all(text.as_bytes())?;
    if !child.wait()?.success() {
        bail!("sudo tee {} failed", path.display());
    }
    Ok(())
}

const NO_GETRANDOM_SOURCE: &str = "tools/qemu-plugins/no_getrandom.c";

/// Compile the plugin (a shared library against qemu-plugin.h and glib).
fn build_plugin(root: &Path, cache: &Path, include: &Path) -> Result<PathBuf> {
    let glib = |what: &str| -> Result<Vec<String>> {
        let out = crate::qemu::output(Command::new("pkg-config").args([what, "glib-2.0"]))?;
        Ok(out.split_whitespace().map(str::to_string).collect())
    };
    let mut flags =
        vec!["-shared".to_string(), "-fPIC".into(), "-O2".into(), "-I".into(), include.display().to_string()];
    flags.extend(glib("--cflags")?);
    flags.extend(glib("--libs")?);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    build_c(root, cache, PLUGIN_SOURCE, "libinsn_ledger.so", &flags)
}

/// Compile a C source of ours into the cache when it is newer than the cached output.
fn build_c(root: &Path, cache: &Path, source: &str, output: &str, flags: &[&str]) -> Result<PathBuf> {
    let src = root.join(source);
    let out = cache.join(output);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&out).is_some() && modified(&out) >= modified(&src) {
        return Ok(out);
    }
    step(&format!("building {source}"));
    run(Command::new("gcc").args(["-Wall", "-Wextra", "-Werror"]).arg(&src).arg("-o").arg(&out).args(flags))?;
    Ok(out)
}

/// Which pass of the ledger a run belongs to.
#[derive(Clone, Copy)]
enum Pass {
    First,
    /// The determinism pass runs qemu as pid 1 of a new PID namespace (`unshare --pid --fork`), so its pids are one
    /// digit long where the first pass's are four or five. Why: the guest once parsed /proc/self/stat at start-up,
    /// and a pid that gained a digit moved a count by 5 instructions -- a CI run failed on it once in many. Pids
    /// that always differ in width make such a dependence fail the ledger every run, not by chance.
    NewPidNamespace,
}

/// Every row at both iteration counts on every CPU, one qemu at a time (niced: the machine is shared).
fn measure_all(root: &Path, tools: &Tools, rows: &[Row], cpus: &[&str], pass: Pass) -> Result<Vec<Measured>> {
    let mut out = Vec::new();
    for cpu in cpus {
        for row in rows.iter().filter(|r| r.only_cpu.is_none_or(|c| c == *cpu)) {
            let t = Instant::now();
            let lo = count(root, tools, cpu, row, row.iters.0, pass)?;
            let hi = count(root, tools, cpu, row, row.iters.1, pass)?;
            eprintln!(
                "  {cpu:<11} {:<26} {:>14} / {:>14} insns  ({:.0} s)",
                row.name,
                lo.insns,
                hi.insns,
                t.elapsed().as_secs_f64()
            );
            out.push(Measured {
                row: row.name.clone(),
                kind: row.kind,
                cpu: cpu.to_string(),
                iters: row.iters,
                lo,
                hi,
            });
        }
    }
    Ok(out)
}

/// One run of the board binary under qemu with the plugin; its counts.
fn count(root: &Path, tools: &Tools, cpu: &str, row: &Row, iters: u64, pass: Pass) -> Result<Counts> {
    let file = tools.out.join(format!("{cpu}-{}-{iters}.json", row.name.replace(':', "-")));
    let _ = std::fs::remove_file(&file);
    let target = root.join(&row.target);
    let mut cmd = match pass {
        Pass::First => Command::new(&tools.no_getrandom),
        Pass::NewPidNamespace => {
            let mut c = Command::new("unshare");
            // Not root: a user namespace first (unprivileged namespaces).
            if !running_as_root() {
                c.args(["--user", "--map-root-user"]);
            }
            c.args(["--pid", "--fork", "--kill-child"]).arg(&tools.no_getrandom);
            c
        }
    };
    let out = cmd
        // qemu-user hands its environment to the guest, and the guest's environment changes what it executes:
        // with RUST_BACKTRACE=1 every error tract raises and catches while optimising captures a backtrace (model
        // loading took 2.6 G instructions instead of 0.14 G); TRACT_* knobs change kernels. A fixed environment.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_BACKTRACE", "0")
        // No log lines: their timestamps are formatted from the clock, a few hundred instructions that vary.
        .env("RUST_LOG", "error")
        .args(["nice", "-n", "10"])
        .arg(&tools.qemu)
        // -seed: the guest's getrandom and AT_RANDOM come from a seeded generator, so hash maps (tract's
        // optimiser uses them) probe the same way every run.
        .args(["-seed", "1", "-cpu", cpu, "-L"])
        .arg(&tools.prefixes[cpu])
        .arg("-plugin")
        .arg(format!("{},out={}", tools.plugin.display(), file.display()))
        .arg(&tools.rtvla)
        .args((row.args)(&target.display().to_string(), iters))
        .current_dir(root)
        .output()
        .context("starting qemu-aarch64")?;
    if !out.status.success() {
        bail!(
            "{} on {cpu} ({iters} iterations) failed ({}): {}",
            row.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_counts(&std::fs::read_to_string(&file).with_context(|| format!("the plugin wrote no {}", file.display()))?)
}

fn parse_counts(text: &str) -> Result<Counts> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("plugin output {text:?}"))?;
    let n = |k: &str| v[k].as_u64().with_context(|| format!("plugin output {text:?} has no {k}"));
    Ok(Counts { insns: n("insns")?, simd_mac: n("simd_mac")?, undecoded: n("undecoded")? })
}

/// Both passes must agree to the instruction: otherwise the figures are not a cost model.
fn check_deterministic(a: &[Measured], b: &[Measured]) -> Result<()> {
    let mut diffs = Vec::new();
    for y in b {
        let x = a.iter().find(|x| x.row == y.row && x.cpu == y.cpu).context("a repeated run has no first run")?;
        if (x.lo, x.hi) != (y.lo, y.hi) {
            diffs.push(format!("{} on {}: {:?}/{:?} then {:?}/{:?}", x.row, x.cpu, x.lo, x.hi, y.lo, y.hi));
        }
    }
    if !diffs.is_empty() {
        bail!("ARM ledger not deterministic: {}", diffs.join("; "));
    }
    eprintln!(
        "determinism: both passes (the second in a new PID namespace) agree exactly on all {} repeated runs",
        2 * b.len()
    );
    Ok(())
}

/// MACs per inference of each bundled driving model, from tract's cost model (`rtvla model macs`, run by the same
/// board binary under qemu without the plugin).
fn student_macs(root: &Path, tools: &Tools) -> Result<BTreeMap<String, u64>> {
    let names = ["student", "teacher"];
    let mut cmd = Command::new(&tools.qemu);
    cmd.args(["-cpu", "max"]).arg(&tools.rtvla).args(["model", "macs"]).current_dir(root);
    for n in names {
        cmd.arg(format!("models/student/{n}.toml"));
    }
    let text = crate::qemu::output(&mut cmd)?;
    let mut macs = BTreeMap::new();
    for (name, line) in names.iter().zip(text.lines()) {
        let n = line.rsplit(": ").next().and_then(|s| s.strip_suffix(" MACs")).and_then(|s| s.parse().ok());
        macs.insert(name.to_string(), n.with_context(|| format!("rtvla model macs printed {line:?}"))?);
    }
    Ok(macs)
}

fn to_json(rows: &[Measured], macs: BTreeMap<String, u64>, tools: &Tools) -> Result<Value> {
    let mut out = Vec::new();
    for m in rows {
        let (insns, simd_mac, undecoded) = m.per_iter()?;
        out.push(json!({
            "row": m.row, "kind": m.kind, "cpu": m.cpu, "insns": insns, "simd_mac": simd_mac,
            "undecoded": undecoded, "iters": [m.iters.0, m.iters.1],
            "raw_insns": [m.lo.insns, m.hi.insns],
        }));
    }
    Ok(json!({
        "method": "qemu-aarch64 (Debian, TCG) + tools/qemu-plugins/insn_ledger.c: retired instructions of the \
                   static board binary; per iteration = (count at iters[1] - count at iters[0]) / difference",
        "qemu": crate::qemu::output(Command::new(&tools.qemu).arg("--version"))?.lines().next().unwrap_or(""),
        "rows": out,
        "macs_per_inference": macs,
    }))
}

/// A row's per-iteration instruction count on a CPU, if measured.
fn figure(ledger: &Value, row: &str, cpu: &str, key: &str) -> Option<f64> {
    ledger["rows"].as_array()?.iter().find(|r| r["row"] == row && r["cpu"] == cpu)?[key].as_f64()
}

/// Per board: instructions of each student precision, the fewest, what the board profile ships, and the largest
/// student its budget allows.
fn add_board_figures(root: &Path, ledger: &mut Value) -> Result<()> {
    let student_macs = ledger["macs_per_inference"]["student"].as_f64().context("no student MAC count")?;
    let mut boards = serde_json::Map::new();
    for b in BOARDS {
        let profile = root.join(format!("boards/{}.toml", b.board));
        let (rate_hz, shipped) = board_profile(&profile)?;
        let insns = |row: &str| figure(ledger, row, b.qemu_cpu, "insns");
        let mut precisions = serde_json::Map::new();
        for (p, row) in [("f32", "student"), ("int8", "student_int8"), ("f16", "student_f16")] {
            if let Some(n) = insns(row) {
                precisions.insert(p.into(), json!(n));
            }
        }
        let fewest =
            precisions.iter().min_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap()).map(|p| p.0.clone());
        let shipped_row = match shipped.as_str() {
            "int8" => "student_int8",
            "f16" => "student_f16",
            _ => "student",
        };
        let tick = insns(&format!("tick:{}", b.board)).context("no tick row")?;
        let model = insns(shipped_row).context("no row for the shipped precision")?;
        let sizing = largest_student(rate_hz, b.ghz, tick, model / student_macs, student_macs);
        boards.insert(
            b.board.into(),
            json!({
                "core": b.core, "qemu_cpu": b.qemu_cpu, "ghz": b.ghz, "rate_hz": rate_hz,
                "student_insns": precisions, "fewest_insns": fewest, "shipped_precision": shipped,
                "largest_student": sizing,
            }),
        );
    }
    ledger["boards"] = Value::Object(boards);
    ledger["budget_rule"] = json!(format!(
        "student instructions per tick <= {:.0} % of the tick at IPC {IPC} and the board's clock, minus the measured \
         tick without inference; MACs scale at the shipped student's instructions per MAC",
        BUDGET_SHARE * 100.0
    ));
    Ok(())
}

/// A board must not ship a precision that retires clearly more instructions (> [`TOLERANCE`]) than the cheapest
/// one the ledger measured on its core: that is how int8 was shipped on the Pi 5 while it cost 1.6x f32 there.
fn check_board_precisions(ledger: &Value) -> Result<()> {
    let mut bad = Vec::new();
    for (board, b) in ledger["boards"].as_object().into_iter().flatten() {
        let shipped = b["shipped_precision"].as_str().unwrap_or("?");
        let n = |p: &str| b["student_insns"][p].as_f64();
        let (Some(have), Some(best)) = (n(shipped), b["fewest_insns"].as_str().and_then(n)) else { continue };
        if have > best * (1.0 + TOLERANCE) {
            bad.push(format!(
                "{board} ships {shipped} ({have:.0} insns per inference), {} retires {best:.0} ({:.2}x fewer)",
                b["fewest_insns"].as_str().unwrap_or("?"),
                have / best
            ));
        }
    }
    if !bad.is_empty() {
        bail!("board precision against the ledger: {} (change [model] in boards/, with the reason)", bad.join("; "));
    }
    Ok(())
}

/// `[loop] rate_hz` and `[model] precision` of a board profile.
fn board_profile(path: &Path) -> Result<(f64, String)> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let t: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let rate =
        t.get("loop").and_then(|l| l.get("rate_hz")).and_then(|r| r.as_float().or(r.as_integer().map(|i| i as f64)));
    let precision = t.get("model").and_then(|m| m.get("precision")).and_then(|p| p.as_str()).unwrap_or("f32");
    Ok((rate.with_context(|| format!("{}: no [loop] rate_hz", path.display()))?, precision.to_string()))
}

/// The largest student a board's budget allows: instructions left for inference, divided by instructions per MAC.
fn largest_student(rate_hz: f64, ghz: f64, tick_insns: f64, insns_per_mac: f64, student_macs: f64) -> Value {
    let budget = BUDGET_SHARE * ghz * 1e9 * IPC / rate_hz;
    let for_model = (budget - tick_insns).max(0.0);
    let max_macs = for_model / insns_per_mac;
    json!({
        "insn_budget": budget.round(), "tick_insns": tick_insns.round(), "model_insn_budget": for_model.round(),
        "insns_per_mac": (insns_per_mac * 1e4).round() / 1e4, "max_macs": max_macs.round(),
        "multiple_of_student": (max_macs / student_macs * 100.0).round() / 100.0,
    })
}

/// Fail on a count more than [`TOLERANCE`] above its baseline (or SIMD MACs that fell by as much: a kernel that
/// stopped vectorising); name every such row.
fn compare(now: &Value, base: &Value) -> Result<()> {
    let mut bad = Vec::new();
    for r in now["rows"].as_array().into_iter().flatten() {
        let (row, cpu) = (r["row"].as_str().unwrap_or(""), r["cpu"].as_str().unwrap_or(""));
        let Some(b) = base["rows"].as_array().and_then(|a| a.iter().find(|x| x["row"] == row && x["cpu"] == cpu))
        else {
            eprintln!("  {row} on {cpu}: not in the baseline");
            continue;
        };
        for key in ["insns", "simd_mac"] {
            let (n, was) = (r[key].as_f64().unwrap_or(f64::NAN), b[key].as_f64().unwrap_or(f64::NAN));
            if let Some(msg) = regression(key, n, was) {
                bad.push(format!("{row} on {cpu}: {msg}"));
            }
        }
    }
    if !bad.is_empty() {
        bail!("ARM ledger regressed against {BASELINE} (> {:.0} %): {}", TOLERANCE * 100.0, bad.join("; "));
    }
    eprintln!("baseline: every count within {:.0} % of {BASELINE}", TOLERANCE * 100.0);
    Ok(())
}

/// Why `now` against `was` is a regression, if it is: more instructions, or fewer SIMD MACs.
fn regression(key: &str, now: f64, was: f64) -> Option<String> {
    if !now.is_finite() || !was.is_finite() {
        return Some(format!("{key} missing ({now} vs {was})"));
    }
    let rel = if was == 0.0 {
        if now == 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    } else {
        (now - was) / was
    };
    let worse = if key == "simd_mac" { -rel } else { rel };
    (worse > TOLERANCE).then(|| format!("{key} {now:.0} vs baseline {was:.0} ({:+.1} %)", rel * 100.0))
}

/// The readable table.
fn render(ledger: &Value) -> String {
    let mut s = format!(
        "\nARM ledger (instructions retired per iteration, qemu TCG; {})\n{:<26} {:<11} {:>14} {:>14} {:>8}\n",
        ledger["qemu"].as_str().unwrap_or(""),
        "workload",
        "cpu",
        "insns",
        "SIMD MACs",
        "MAC %"
    );
    for r in ledger["rows"].as_array().into_iter().flatten() {
        let (i, m) = (r["insns"].as_f64().unwrap_or(0.0), r["simd_mac"].as_f64().unwrap_or(0.0));
        s += &format!(
            "{:<26} {:<11} {:>14.0} {:>14.0} {:>7.1}%\n",
            r["row"].as_str().unwrap_or(""),
            r["cpu"].as_str().unwrap_or(""),
            i,
            m,
            100.0 * m / i.max(1.0)
        );
    }
    for (board, b) in ledger["boards"].as_object().into_iter().flatten() {
        let l = &b["largest_student"];
        s += &format!(
            "{board}: {} @ {} GHz; student insns {}; fewest: {}, ships {}; budget {} insns/tick - tick {} = {} for \
             the model at {} insns/MAC -> max {} MACs = {}x today's student\n",
            b["core"].as_str().unwrap_or(""),
            b["ghz"],
            b["student_insns"],
            b["fewest_insns"].as_str().unwrap_or("?"),
            b["shipped_precision"].as_str().unwrap_or("?"),
            l["insn_budget"],
            l["tick_insns"],
            l["model_insn_budget"],
            l["insns_per_mac"],
            l["max_macs"],
            l["multiple_of_student"]
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_versions_map_to_the_source_tree() {
        assert_eq!(
            parse_qemu_version("qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright"),
            Some("7.2.0".into())
        );
        assert_eq!(parse_qemu_version("qemu-aarch64 version 8.0.4"), Some("8.0.0".into()));
        assert_eq!(parse_qemu_version("no version here"), None);
    }

    #[test]
    fn hwcaps_read_as_linux_prints_them() {
        // What qemu 7.2 gives -cpu cortex-a76 (the Pi 5's /proc/cpuinfo shows the same list).
        assert_eq!(
            hwcap_features(0x119ffb),
            "fp asimd aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
        );
        assert_eq!(hwcap_features(0), "");
    }

    #[test]
    fn deb_src_entries_are_recognised_in_both_formats() {
        assert!(declares_deb_src("deb-src http://deb.debian.org/debian bookworm main\n"));
        assert!(declares_deb_src("Types: deb deb-src\nURIs: http://x\n"));
        assert!(!declares_deb_src("Types: deb\nURIs: http://deb.debian.org/debian\n# deb-src commented\n"));
        assert!(!declares_deb_src("# deb-src http://x bookworm main\n"));
    }

    #[test]
    fn per_iteration_figures_are_differences_and_refuse_a_shrinking_count() {
        let c = |insns, simd_mac| Counts { insns, simd_mac, undecoded: 0 };
        let m =
            Measured { row: "r".into(), kind: "k", cpu: "c".into(), iters: (2, 6), lo: c(1000, 10), hi: c(5000, 50) };
        assert_eq!(m.per_iter().unwrap(), (1000.0, 10.0, 0.0));
        let bad = Measured { hi: c(900, 50), ..m };
        assert!(bad.per_iter().unwrap_err().to_string().contains("fell"));
    }

    #[test]
    fn regressions_are_more_instructions_or_fewer_macs_beyond_two_percent() {
        assert!(regression("insns", 102.5, 100.0).is_some());
        assert!(regression("insns", 101.9, 100.0).is_none());
        assert!(regression("insns", 50.0, 100.0).is_none(), "fewer instructions is not a regression");
        assert!(regression("simd_mac", 97.0, 100.0).is_some(), "a kernel that stopped vectorising");
        assert!(regression("simd_mac", 0.0, 0.0).is_none());
        assert!(regression("insns", f64::NAN, 100.0).is_some());
    }

    #[test]
    fn compare_names_the_row_that_regressed() {
        let row =
            |insns: f64| json!({"rows": [{"row": "student", "cpu": "cortex-a76", "insns": insns, "simd_mac": 10.0}]});
        assert!(compare(&row(100.0), &row(100.0)).is_ok());
        let e = compare(&row(110.0), &row(100.0)).unwrap_err().to_string();
        assert!(e.contains("student on cortex-a76") && e.contains("+10.0 %"), "{e}");
    }

    #[test]
    fn a_board_shipping_a_costlier_precision_fails() {
        let board = |shipped: &str| {
            json!({"boards": {"raspberry-pi-5": {"shipped_precision": shipped, "fewest_insns": "f32",
                "student_insns": {"f32": 3.06e6, "int8": 4.98e6, "f16": 4.1e6}}}})
        };
        assert!(check_board_precisions(&board("f32")).is_ok());
        let e = check_board_precisions(&board("int8")).unwrap_err().to_string();
        assert!(e.contains("raspberry-pi-5 ships int8") && e.contains("1.63x"), "{e}");
    }

    #[test]
    fn the_budget_is_a_tenth_of_the_tick_at_ipc_one_minus_the_tick() {
        // 20 Hz at 2.4 GHz: 120 M cycles per tick, 12 M for the model and the tick; 2 M of tick leaves 10 M.
        let v = largest_student(20.0, 2.4, 2e6, 0.5, 4e6);
        assert_eq!(v["insn_budget"], json!(12e6));
        assert_eq!(v["model_insn_budget"], json!(10e6));
        assert_eq!(v["max_macs"], json!(20e6));
        assert_eq!(v["multiple_of_student"], json!(5.0));
    }

    #[test]
    fn counts_parse_from_the_plugin_output() {
        let c = parse_counts("{\"insns\": 36100, \"simd_mac\": 3, \"undecoded\": 0}\n").unwrap();
        assert_eq!(c, Counts { insns: 36100, simd_mac: 3, undecoded: 0 });
        assert!(parse_counts("{\"insns\": 1}").is_err());
    }
}
