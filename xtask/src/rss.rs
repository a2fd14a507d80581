//! `cargo xtask rss`: does the runtime's memory level off (issue 18 item 6)? A host-sim drive in simulated time
//! (`--fast`: the virtual clock jumps to each deadline, so a million 20 Hz ticks, 14 h of driving, take minutes),
//! episodes repeating, snapshots recorded (a manual trigger every 2 s on top of the loop's own); this side reads
//! the process's resident set (VmRSS in /proc/PID/status) each time the drive logs its tick count (every 5 s) and
//! fails when it still grows after the warm-up.
//!
//! The default policy is the expert (no inference: a million ticks in minutes); `--policy model` runs the student,
//! so tract's per-inference allocations are part of what must level off (about 20x fewer ticks per second).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{release_bin, run, step};

#[derive(Clone, Debug)]
pub struct RssOptions {
    pub ticks: u64,
    /// `model` (the student, tract inference every tick) or `expert` (no inference: faster).
    pub policy: String,
    /// Build the release binary first.
    pub build: bool,
    /// Allowed growth after the warm-up (the first tenth of the ticks), KiB.
    pub max_growth_kib: u64,
    /// Record no snapshots (to tell the store's share of any growth from the loop's and the simulator's).
    pub no_store: bool,
}

/// Resident set of a process, KiB.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_kib(&status, "VmRSS:")
}

/// One field of a /proc/PID/status text, trimmed (`key` with its colon, e.g. "Cpus_allowed_list:").
pub(crate) fn status_field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(key)).map(str::trim)
}

/// A /proc/PID/status size field ("VmRSS:", "VmLck:", ...) in KiB.
pub(crate) fn status_kib(status: &str, key: &str) -> Option<u64> {
    status_field(status, key)?.trim_end_matches("kB").trim().parse().ok()
}

/// RSS samples `(ticks, KiB)` of one drive, and its wall time.
fn sample_drive(root: &Path, o: &RssOptions, store: &Path) -> Result<(Vec<(u64, u64)>, f64)> {
    let t0 = Instant::now();
    let mut child = Command::new(release_bin(root))
        .args(["--log", "info", "drive", "--fast", "--repeat", "--quiet", "--board", "boards/host-sim.toml"])
        .args(["--policy", &o.policy, "--ticks", &o.ticks.to_string()])
        .args(if o.no_store { vec!["--no-store".into()] } else { vec!["--store".into(), store.as_os_str().to_owned()] })
        .arg("--report-json")
        .arg(store.with_extension("json"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting rtvla drive")?;
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<u64>();
    let reader = std::thread::spawn(move || {
        let mut errors = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match line.rsplit_once("ticks=").and_then(|(_, n)| n.trim().parse::<u64>().ok()) {
                Some(t) => {
                    let _ = tx.send(t);
                }
                None if line.contains("ERROR") || line.contains("WARN") || line.starts_with("error") => {
                    errors.push(line)
                }
                None => {}
            }
        }
        errors
    });
    let mut samples = Vec::new();
    let mut next_trigger = Instant::now() + Duration::from_secs(2);
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(ticks) => {
                if let Some(kib) = rss_kib(pid) {
                    samples.push((ticks, kib));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if Instant::now() >= next_trigger {
            // SAFETY: kill(2) on our own child's pid (a manual snapshot request).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) };
            next_trigger += Duration::from_secs(2);
        }
    }
    let status = child.wait()?;
    let errors = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("rtvla drive failed ({status}): {}", errors.join(" | "));
    }
    Ok((samples, t0.elapsed().as_secs_f64()))
}

/// The sample nearest to `ticks`.
fn at(samples: &[(u64, u64)], ticks: u64) -> (u64, u64) {
    *samples.iter().min_by_key(|(t, _)| t.abs_diff(ticks)).expect("samples")
}

/// `cargo xtask rss`.
pub fn rss(root: &Path, o: &RssOptions) -> Result<()> {
    if o.build {
        run(crate::cargo().args(["build", "--release", "--package", "rtvla", "--bin", "rtvla"]))?;
    }
    let dir = std::env::temp_dir().join(format!("rtvla-rss-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    step(&format!(
        "RSS over {} ticks of host-sim in simulated time (--fast --repeat, policy {}, SIGUSR1 every 2 s)",
        o.ticks, o.policy
    ));
    let (samples, secs) = sample_drive(root, o, &dir.join("store"))?;
    let report = crate::read_json(&dir.join("store.json"))?;
    let _ = std::fs::remove_dir_all(&dir);
    if samples.len() < 4 {
        bail!("only {} RSS samples in {secs:.0} s: run more ticks (a sample every 5 s)", samples.len());
    }
    let last = *samples.last().unwrap();
    let warm = at(&samples, o.ticks / 10);
    let mid = at(&samples, o.ticks / 2);
    let first = samples[0];
    let peak = samples.iter().map(|s| s.1).max().unwrap();
    let step_n = (samples.len() / 12).max(1);
    eprintln!("   ticks      RSS KiB");
    for (t, kib) in samples.iter().step_by(step_n).chain(std::iter::once(&last)) {
        eprintln!("{t:>9} {kib:>10}");
    }
    let growth = last.1 as i64 - warm.1 as i64;
    let second_half = last.1 as i64 - mid.1 as i64;
    // Peaks, so the allocator's ups and downs (a few hundred KiB) are not taken for growth: a leak keeps setting
    // new highs in the second half.
    let peak_of = |from: u64, to: u64| samples.iter().filter(|s| s.0 >= from && s.0 <= to).map(|s| s.1).max();
    let peak_first = peak_of(warm.0, mid.0).unwrap_or(warm.1);
    let peak_second = peak_of(mid.0 + 1, last.0).unwrap_or(last.1);
    let new_high = peak_second as i64 - peak_first as i64;
    // Least-squares slope after the warm-up, KiB per 100k ticks (for the record).
    let after: Vec<(f64, f64)> = samples.iter().filter(|s| s.0 >= warm.0).map(|&(t, k)| (t as f64, k as f64)).collect();
    let n = after.len() as f64;
    let (mx, my) = (after.iter().map(|p| p.0).sum::<f64>() / n, after.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = after.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let slope = if sxx > 0.0 { after.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx * 1e5 } else { 0.0 };
    eprintln!(
        "RSS: {} KiB at tick {} (first sample), {} KiB at {} (warm-up end), {} KiB at {} (middle), {} KiB at {} \
         (end), peak {peak} KiB; after warm-up {growth:+} KiB, second half {second_half:+} KiB; peak of the second \
         half {new_high:+} KiB over the first's; trend {slope:+.1} KiB per 100k ticks; {} samples, {:.0} ticks/s",
        first.1,
        first.0,
        warm.1,
        warm.0,
        mid.1,
        mid.0,
        last.1,
        last.0,
        samples.len(),
        last.0 as f64 / secs
    );
    // What accumulates by design over such a run: the simulator keeps one metrics record per finished episode
    // (the report's mean driving score), the store one entry per segment.
    eprintln!(
        "the run: {} simulator episodes (--repeat), {} snapshots written",
        report["episodes"], report["events_written"]
    );
    let csv = crate::target_dir(root).join("rss.csv");
    let text: String = samples.iter().map(|(t, k)| format!("{t},{k}\n")).collect();
    if std::fs::write(&csv, format!("ticks,rss_kib\n{text}")).is_ok() {
        eprintln!("samples: {}", csv.display());
    }
    if growth > o.max_growth_kib as i64 || new_high > o.max_growth_kib as i64 {
        bail!(
            "RSS still grows after the warm-up: {growth:+} KiB from tick {} to {}, second-half peak {new_high:+} KiB \
             over the first's (allowed {} KiB)",
            warm.0,
            last.0,
            o.max_growth_kib
        );
    }
    eprintln!("ok: RSS levels off (within {} KiB after the warm-up)", o.max_growth_kib);
    Ok(())
}
