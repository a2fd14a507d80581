//! `cargo xtask soak`: a long real-time host-sim drive (episodes repeat) with frequent manual triggers
//! (`kill -USR1` every few seconds on top of the loop's own), then the store is listed and verified.
//!
//! Issue 21 item 3, the loop under load: `--stress` keeps both cores busy with `stress-ng --cpu 2` (Debian's
//! package, installed when missing) for the whole drive; `--knobs on` drives a copy of host-sim with the real-time
//! knobs (SCHED_FIFO 50, mlockall, CPU 1), `off` host-sim as is, `both` the two side by side at the same time, so
//! they see the same load. Per drive: deadline misses, wake-up jitter, RSS after the warm-up and at the end (from
//! /proc/PID/status, as `cargo xtask rss` reads it), allocations per tick, snapshots verified.
//!
//! Fails on a knobs-on deadline miss, on knobs that did not take effect, on a store that does not verify, and (the
//! soak as it always was) on a deadline miss of host-sim on an unloaded host. Knobs-off misses under stress are
//! the figure being measured, not a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::{cargo, check_store_matches_report, read_json, release_bin, run, step};

/// The real-time knobs `--knobs on` sets on host-sim (issue 21): SCHED_FIFO priority, mlockall, the loop's CPU.
const RT_PRIORITY: u32 = 50;
const RT_CPU: usize = 1;
/// RSS counts as flat within this drift after the warm-up, KiB (as `cargo xtask rss`'s default allowance).
const RSS_FLAT_KIB: i64 = 512;
/// The p99 wake-up jitter goal with the knobs on, ms.
const P99_JITTER_GOAL_MS: f64 = 1.0;

/// Which board(s) the soak drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Knobs {
    /// host-sim with SCHED_FIFO 50, mlockall and the loop on CPU 1 (needs root or CAP_SYS_NICE + CAP_IPC_LOCK).
    On,
    /// host-sim as is.
    Off,
    /// Both drives at the same time, under the same load.
    Both,
}

pub struct SoakOptions {
    pub minutes: f64,
    pub trigger_every_s: f64,
    /// Run `stress-ng --cpu 2` for the whole drive.
    pub stress: bool,
    pub knobs: Knobs,
    /// Write the per-knobs figures here.
    pub json: Option<PathBuf>,
}

/// One drive of the soak and what this side sampled of it.
struct Drive {
    /// "on" or "off".
    knobs: &'static str,
    child: Child,
    store: PathBuf,
    report: PathBuf,
    /// (seconds since start, VmRSS KiB), one a second.
    rss: Vec<(f64, u64)>,
    rss_start: Option<u64>,
    triggers_sent: u64,
}

impl Drop for Drive {
    /// A drive still running when the soak gives up (an error) must not outlive it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `stress-ng --cpu 2` in its own process group, stopped (the whole group) when dropped.
struct Stress(Child);

impl Stress {
    fn start(dir: &Path, seconds: u64) -> Result<Stress> {
        crate::cross::ensure_apt(&["stress-ng"])?;
        let log = std::fs::File::create(dir.join("stress-ng.log"))?;
        let mut cmd = Command::new("stress-ng");
        // The timeout is a backstop only: the soak stops it as soon as the drives end.
        cmd.args(["--cpu", "2", "--timeout", &format!("{seconds}s")])
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().context("starting stress-ng")?;
        std::thread::sleep(Duration::from_secs(1));
        if let Some(s) = child.try_wait()? {
            bail!("stress-ng exited at once ({s}); see {}", dir.join("stress-ng.log").display());
        }
        Ok(Stress(child))
    }
}

impl Drop for Stress {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of our own child (it leads it: process_group(0)).
        unsafe { libc::kill(-(self.0.id() as libc::pid_t), libc::SIGINT) };
        let _ = self.0.wait();
    }
}

pub fn soak(root: &Path, o: &SoakOptions) -> Result<()> {
    run(cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    let dir = std::env::temp_dir().join(format!("rtvla-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ticks = (o.minutes * 60.0 * 20.0).round() as u64;
    let warmup_s = (o.minutes * 60.0 / 10.0).min(60.0);
    let which: &[&'static str] = match o.knobs {
        Knobs::On => &["on"],
        Knobs::Off => &["off"],
        Knobs::Both => &["on", "off"],
    };
    let stress = if o.stress { Some(Stress::start(&dir, (o.minutes * 60.0) as u64 + 300)?) } else { None };
    step(&format!(
        "real-time drive on host-sim, {ticks} ticks ({:.1} min), episodes repeating, SIGUSR1 every {} s; knobs {}{}{}",
        o.minutes,
        o.trigger_every_s,
        which.join(" and "),
        if which.len() > 1 { ", side by side at the same time (the same load)" } else { "" },
        if o.stress { "; under stress-ng --cpu 2 (both cores busy) for the whole drive" } else { "" }
    ));
    let mut drives = which.iter().map(|k| start_drive(root, &dir, k, ticks)).collect::<Result<Vec<_>>>()?;
    watch(&mut drives, o, warmup_s)?;
    drop(stress);
    let figures: Vec<Value> = drives.iter().map(|d| figures(root, d)).collect::<Result<_>>()?;
    print_table(&figures, o, warmup_s);
    let out = json!({
        "minutes": o.minutes,
        "stress": o.stress.then_some("stress-ng --cpu 2"),
        "side_by_side": which.len() > 1,
        "warmup_s": warmup_s,
        "goals": {"deadline_misses_knobs_on": 0, "p99_jitter_ms_knobs_on_below": P99_JITTER_GOAL_MS,
                  "rss_drift_kb_within": RSS_FLAT_KIB},
        "knobs": figures.iter().map(|f| (f["knobs"].as_str().unwrap_or("?").to_string(), f.clone()))
            .collect::<serde_json::Map<_, _>>(),
    });
    if let Some(p) = &o.json {
        std::fs::write(p, serde_json::to_string_pretty(&out)? + "\n").with_context(|| format!("{}", p.display()))?;
        eprintln!("figures: {}", p.display());
    }
    let failures: Vec<String> = figures.iter().flat_map(|f| failures(f, o.stress)).collect();
    if !failures.is_empty() {
        bail!("soak: {} (drive logs, reports and stores kept in {})", failures.join("; "), dir.display());
    }
    drop(drives);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Start one drive: host-sim as is ("off") or the copy with the real-time knobs written into the run dir ("on").
fn start_drive(root: &Path, dir: &Path, knobs: &'static str, ticks: u64) -> Result<Drive> {
    let board = if knobs == "on" { rt_board(root, dir)? } else { root.join("boards/host-sim.toml") };
    let store = dir.join(format!("store-{knobs}"));
    let report = dir.join(format!("report-{knobs}.json"));
    let log = std::fs::File::create(dir.join(format!("drive-{knobs}.log")))?;
    let child = Command::new(release_bin(root))
        .args(["drive", "--quiet", "--repeat", "--board"])
        .arg(&board)
        .args(["--ticks", &ticks.to_string(), "--store"])
        .arg(&store)
        .arg("--report-json")
        .arg(&report)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting rtvla drive")?;
    Ok(Drive { knobs, child, store, report, rss: Vec::new(), rss_start: None, triggers_sent: 0 })
}

/// boards/host-sim.toml with the real-time knobs on and the model path made absolute (the copy lives in `dir`).
fn rt_board(root: &Path, dir: &Path) -> Result<PathBuf> {
    let model = root.join("models/student/student.toml");
    let edits = [
        ("\"../models/student/student.toml\"", format!("{:?}", model.display().to_string())),
        ("name = \"host-sim\"", "name = \"host-sim-rt\"".to_string()),
        ("cpu_affinity = []", format!("cpu_affinity = [{RT_CPU}]")),
        ("rt_priority = 0", format!("rt_priority = {RT_PRIORITY}")),
        ("mlockall = false", "mlockall = true".to_string()),
    ];
    let mut text = std::fs::read_to_string(root.join("boards/host-sim.toml"))?;
    for (from, to) in &edits {
        if !text.contains(from) {
            bail!("boards/host-sim.toml no longer has `{from}`: cannot derive the knobs-on board");
        }
        text = text.replace(from, to);
    }
    let p = dir.join("host-sim-rt.toml");
    std::fs::write(&p, text)?;
    Ok(p)
}

/// Until every drive has exited: SIGUSR1 each every `trigger_every_s`, its RSS once a second, and after the
/// warm-up its start RSS and (knobs on) a check that the knobs took effect, so a refused knob fails in a minute.
fn watch(drives: &mut [Drive], o: &SoakOptions, warmup_s: f64) -> Result<()> {
    let t0 = Instant::now();
    let mut next_trigger = o.trigger_every_s;
    let mut next_sample = 0.0;
    loop {
        let t = t0.elapsed().as_secs_f64();
        let mut running = 0;
        for d in drives.iter_mut() {
            if d.child.try_wait()?.is_some() {
                continue;
            }
            running += 1;
            let pid = d.child.id();
            if t >= next_trigger {
                // SAFETY: kill(2) on our own child's pid (a manual snapshot request).
                if unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) } == 0 {
                    d.triggers_sent += 1;
                }
            }
            if t >= next_sample {
                if let Some(kib) = crate::rss::rss_kib(pid) {
                    d.rss.push((t, kib));
                    if d.rss_start.is_none() && t >= warmup_s {
                        d.rss_start = Some(kib);
                        if d.knobs == "on" {
                            check_knobs_applied(pid).context("--knobs on")?;
                        }
                    }
                }
            }
        }
        if running == 0 {
            break;
        }
        if t >= next_trigger {
            next_trigger += o.trigger_every_s;
        }
        if t >= next_sample {
            next_sample += 1.0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for d in drives.iter_mut() {
        let status = d.child.wait()?;
        if !status.success() {
            bail!("rtvla drive (knobs {}) failed: {status}", d.knobs);
        }
    }
    Ok(())
}

/// The loop thread (the process's main thread) runs SCHED_FIFO at the knobs' priority, only on the knobs' CPU,
/// with its memory locked: read from /proc, not taken on the drive's word.
fn check_knobs_applied(pid: u32) -> Result<()> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let (policy, prio) = sched_of_stat(&stat).context("parsing /proc/PID/stat")?;
    let cpus = crate::rss::status_field(&status, "Cpus_allowed_list:").unwrap_or_default();
    let locked_kib: u64 = crate::rss::status_kib(&status, "VmLck:").unwrap_or(0);
    let mut missing = Vec::new();
    if policy != libc::SCHED_FIFO as u64 || prio != RT_PRIORITY as u64 {
        missing.push(format!("SCHED_FIFO {RT_PRIORITY} (policy {policy}, priority {prio})"));
    }
    if cpus != RT_CPU.to_string() {
        missing.push(format!("cpu_affinity [{RT_CPU}] (allowed CPUs {cpus})"));
    }
    if locked_kib == 0 {
        missing.push("mlockall (VmLck 0 kB)".into());
    }
    if !missing.is_empty() {
        bail!(
            "the real-time knobs did not take effect: {} (needs root, or CAP_SYS_NICE and CAP_IPC_LOCK and a \
             memlock limit; CPU {RT_CPU} must exist)",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Scheduling policy and real-time priority of a thread from its /proc stat line (fields 41 and 40; the command
/// name before them may hold spaces and parentheses, so count from the last ')').
fn sched_of_stat(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    Some((fields.get(41 - 3)?.parse().ok()?, fields.get(40 - 3)?.parse().ok()?))
}

/// What one drive measured (its report) and what this side sampled (RSS, triggers), and its store verified.
fn figures(root: &Path, d: &Drive) -> Result<Value> {
    let r = read_json(&d.report)?;
    let verified = match check_store_matches_report(root, &d.store, &r["events_written"]) {
        Ok(events) => Ok(events.len()),
        Err(e) => Err(format!("{e:#}")),
    };
    let rss_end = d.rss.last().map(|s| s.1);
    let drift = match (d.rss_start, rss_end) {
        (Some(a), Some(b)) => Some(b as i64 - a as i64),
        _ => None,
    };
    Ok(json!({
        "knobs": d.knobs,
        "realtime": r["realtime"],
        "ticks": r["ticks"],
        "wall_s": r["wall_s"],
        "deadline_misses": r["deadline_misses"],
        "skipped_ticks": r["skipped_ticks"],
        "p50_jitter_ms": r["jitter_ms"]["p50"],
        "p99_jitter_ms": r["jitter_ms"]["p99"],
        "max_jitter_ms": r["jitter_ms"]["max"],
        "tick_p99_ms": r["tick_ms"]["p99"],
        "infer_p50_ms": r["infer_ms"]["p50"],
        "rss_start_kb": d.rss_start,
        "rss_end_kb": rss_end,
        "rss_peak_kb": d.rss.iter().map(|s| s.1).max(),
        "rss_drift_kb": drift,
        "allocs_per_tick_outside_inference": r["allocs_per_tick_outside_inference"],
        "allocs_per_inference": r["allocs_per_inference"],
        "triggers_sent": d.triggers_sent,
        "snapshots_written": r["events_written"],
        "snapshots_dropped": r["events_dropped"],
        "snapshots_verified": verified.as_ref().ok(),
        "store_error": verified.as_ref().err(),
        "episodes": r["episodes"],
        "driving_score": r["driving_score"],
        "cold_start_ms": r["cold_start_ms"],
    }))
}

/// What makes the soak fail for one drive (see the module doc).
fn failures(f: &Value, stress: bool) -> Vec<String> {
    let k = f["knobs"].as_str().unwrap_or("?");
    let mut out = Vec::new();
    let misses = f["deadline_misses"].as_u64().unwrap_or(u64::MAX);
    if misses != 0 && (k == "on" || !stress) {
        out.push(format!("knobs {k}: {misses} deadline misses"));
    }
    if k == "on" {
        let rt = f["realtime"].as_str().unwrap_or("");
        let want = [format!("cpus [{RT_CPU}]"), format!("SCHED_FIFO {RT_PRIORITY}"), "mlockall".to_string()];
        if let Some(w) = want.iter().find(|w| !rt.contains(w.as_str())) {
            out.push(format!("knobs on: the drive reports realtime {rt:?}, without {w}"));
        }
    }
    if let Some(e) = f["store_error"].as_str() {
        out.push(format!("knobs {k}: store verification: {e}"));
    }
    out
}

/// A table row: its name, how a drive's cell reads, the goal.
type Row<'a> = (&'a str, &'a dyn Fn(&Value) -> String, &'a str);

/// The readable table: one column per drive, the goal beside each figure.
fn print_table(figures: &[Value], o: &SoakOptions, warmup_s: f64) {
    let load = if o.stress { "stress-ng --cpu 2 on both cores" } else { "no added load" };
    let together = if figures.len() > 1 { ", drives side by side at the same time (same load)" } else { "" };
    println!("\nsoak: {:.1} min real time, {load}{together}", o.minutes);
    let num = |v: &Value, p: usize| v.as_f64().map_or("n/a".to_string(), |x| format!("{x:.p$}"));
    let rows: [Row; 13] = [
        ("realtime", &|f| f["realtime"].as_str().unwrap_or("?").to_string(), ""),
        ("ticks", &|f| f["ticks"].to_string(), ""),
        ("deadline misses", &|f| f["deadline_misses"].to_string(), "0 with knobs on"),
        ("skipped ticks", &|f| f["skipped_ticks"].to_string(), ""),
        ("jitter p50 ms", &|f| num(&f["p50_jitter_ms"], 3), ""),
        ("jitter p99 ms", &|f| num(&f["p99_jitter_ms"], 3), "< 1 ms with knobs on"),
        ("jitter max ms", &|f| num(&f["max_jitter_ms"], 3), ""),
        ("RSS start KiB", &|f| f["rss_start_kb"].to_string(), ""),
        ("RSS end KiB", &|f| f["rss_end_kb"].to_string(), ""),
        ("RSS drift KiB", &|f| f["rss_drift_kb"].to_string(), "flat (within ±512)"),
        ("allocs/tick (outside)", &|f| num(&f["allocs_per_tick_outside_inference"], 2), "0"),
        ("allocs/inference", &|f| num(&f["allocs_per_inference"], 1), ""),
        ("snapshots verified", &|f| snapshots(f), "all written"),
    ];
    let head: String =
        figures.iter().map(|f| format!("{:>26}", format!("knobs {}", f["knobs"].as_str().unwrap_or("?")))).collect();
    println!("{:<22}{head}   goal", "");
    for (name, cell, goal) in rows {
        let cells: String = figures.iter().map(|f| format!("{:>26}", cell(f))).collect();
        println!("{name:<22}{cells}   {goal}");
    }
    println!("(RSS start: at {warmup_s:.0} s, after the warm-up; end: the last sample before the drive exited)");
}

fn snapshots(f: &Value) -> String {
    match f["snapshots_verified"].as_u64() {
        Some(n) => format!("{n} of {}", f["snapshots_written"]),
        None => "FAILED".to_string(),
    }
}

/// Issue 21 item 5: the median cold start of `runs` fresh `rtvla drive` processes on host-sim (the bundled
/// student, a fresh store each), from each report's `cold_start_ms`: an object with every part's median, ms, and
/// `runs`. Uses the release binary as built (callers build it first). Medians are per part, so they need not add
/// up to the median total exactly.
pub fn cold_start_ms(root: &Path, runs: usize) -> Result<Value> {
    if runs == 0 {
        bail!("cold start: at least one run");
    }
    let dir = crate::tempdir()?.join("cold-start");
    let mut samples: Vec<serde_json::Map<String, Value>> = Vec::new();
    for i in 0..runs {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let report = dir.join("report.json");
        run(Command::new(release_bin(root))
            .args(["drive", "--quiet", "--board", "boards/host-sim.toml", "--ticks", "5", "--store"])
            .arg(dir.join("store"))
            .arg("--report-json")
            .arg(&report)
            .stdout(Stdio::null()))?;
        let r = read_json(&report)?;
        let c = r["cold_start_ms"].as_object().cloned();
        samples.push(c.with_context(|| format!("cold start run {}: the report has no cold_start_ms", i + 1))?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = serde_json::Map::new();
    for key in samples[0].keys() {
        let mut v: Vec<f64> = samples.iter().filter_map(|s| s.get(key).and_then(Value::as_f64)).collect();
        v.sort_by(f64::total_cmp);
        out.insert(key.clone(), json!(median(&v)));
    }
    out.insert("runs".into(), json!(runs));
    Ok(Value::Object(out))
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `cargo xtask cold-start`: the median breakdown, one line per part, largest first, against the 1 s goal.
pub fn cold_start(root: &Path, runs: usize, json_out: Option<&Path>) -> Result<()> {
    run(cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    step(&format!("cold start: {runs} fresh `rtvla drive` processes on host-sim, median per part"));
    let c = cold_start_ms(root, runs)?;
    let total = c["total"].as_f64().unwrap_or(f64::NAN);
    let mut parts: Vec<(&String, f64)> = c
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "total" && *k != "runs")
        .filter_map(|(k, v)| Some((k, v.as_f64()?)))
        .collect();
    parts.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("cold start, exec to the first model command: {total:.0} ms median of {runs} (goal <= 1000 ms)");
    for (k, v) in parts {
        println!("  {k:<16} {v:>8.1} ms  {:>5.1} %", v / total * 100.0);
    }
    if let Some(p) = json_out {
        std::fs::write(p, serde_json::to_string_pretty(&c)? + "\n").with_context(|| format!("{}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn sched_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a ')' in it; policy 1 (SCHED_FIFO), rt_priority 50.
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[40 - 3] = "50".into();
        fields[41 - 3] = "1".into();
        let stat = format!("1234 (rt vla) x) {}", fields.join(" "));
        assert_eq!(sched_of_stat(&stat), Some((1, 50)));
        assert_eq!(sched_of_stat("1234 (short) S 1"), None);
    }

    #[test]
    fn misses_fail_with_knobs_on_and_on_an_idle_host_only() {
        let f = |k: &str, misses: u64| json!({"knobs": k, "deadline_misses": misses, "realtime": "cpus [1], SCHED_FIFO 50, mlockall"});
        assert!(failures(&f("off", 7), true).is_empty(), "knobs-off misses under stress are a figure");
        assert_eq!(failures(&f("off", 7), false).len(), 1);
        assert_eq!(failures(&f("on", 1), true).len(), 1);
        assert!(failures(&f("on", 0), true).is_empty());
    }

    #[test]
    fn knobs_on_fails_when_the_drive_could_not_apply_them() {
        let f = json!({"knobs": "on", "deadline_misses": 0, "realtime": "cpus [1]"});
        let e = failures(&f, true);
        assert!(e[0].contains("without SCHED_FIFO 50"), "{e:?}");
    }

    #[test]
    fn a_store_that_does_not_verify_fails_either_way() {
        let f = json!({"knobs": "off", "deadline_misses": 3, "realtime": "none", "store_error": "crc at 0x40"});
        assert_eq!(failures(&f, true), vec!["knobs off: store verification: crc at 0x40".to_string()]);
    }

    #[test]
    fn the_knobs_board_is_host_sim_with_the_knobs_set() {
        let root = crate::project_root();
        let dir = std::env::temp_dir().join(format!("rtvla-soak-board-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(rt_board(&root, &dir).unwrap()).unwrap();
        for want in ["rt_priority = 50", "mlockall = true", "cpu_affinity = [1]", "host-sim-rt"] {
            assert!(text.contains(want), "{want} missing");
        }
        assert!(!text.contains("\"../models"), "the model path must be absolute in a copy elsewhere");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
