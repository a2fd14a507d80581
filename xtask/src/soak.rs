//! `cargo xtask soak`: a long real-time host-sim drive (episodes repeat) with frequent manual triggers
//! (`kill -USR1` every few seconds on top of the loop's own), then the store is listed and verified.
//! Fails unless every tick met its deadline and every snapshot the report counts as written is listed and verifies.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, check_store_matches_report, read_json, release_bin, run, step};

pub struct SoakOptions {
    pub minutes: f64,
    pub trigger_every_s: f64,
}

pub fn soak(root: &Path, o: &SoakOptions) -> Result<()> {
    run(cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    let dir = std::env::temp_dir().join(format!("rtvla-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = dir.join("store");
    let report = dir.join("report.json");
    let ticks = (o.minutes * 60.0 * 20.0).round() as u64;
    step(&format!(
        "real-time drive on host-sim, {ticks} ticks ({:.1} min), episodes repeating, SIGUSR1 every {} s",
        o.minutes, o.trigger_every_s
    ));
    let mut child = Command::new(release_bin(root))
        .args(["drive", "--quiet", "--repeat", "--board", "boards/host-sim.toml", "--ticks"])
        .arg(ticks.to_string())
        .arg("--store")
        .arg(&store)
        .arg("--report-json")
        .arg(&report)
        .spawn()
        .context("starting rtvla drive")?;
    let t0 = Instant::now();
    let mut next = Duration::from_secs_f64(o.trigger_every_s);
    let mut sent = 0u64;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if t0.elapsed() >= next {
            // SAFETY: kill(2) on our own child's pid.
            if unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) } == 0 {
                sent += 1;
            }
            next += Duration::from_secs_f64(o.trigger_every_s);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        bail!("rtvla drive failed: {status}");
    }
    let r = read_json(&report)?;
    let events = check_store_matches_report(root, &store, &r["events_written"])?;
    let mut by_kind = std::collections::BTreeMap::<String, u64>::new();
    for e in &events {
        *by_kind.entry(e["trigger"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    let bytes: u64 = events.iter().filter_map(|e| e["bytes"].as_u64()).sum();
    println!(
        "soak: {:.1} min wall, {} ticks, {} deadline misses, {} skipped",
        r["wall_s"].as_f64().unwrap_or(0.0) / 60.0,
        r["ticks"],
        r["deadline_misses"],
        r["skipped_ticks"]
    );
    println!(
        "  tick p50 {:.2} ms p99 {:.2} ms max {:.2} ms; infer p50 {:.2} ms; overhead p99 {:.3} ms; jitter p99 {:.3} ms",
        r["tick_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        r["tick_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        r["tick_ms"]["max"].as_f64().unwrap_or(f64::NAN),
        r["infer_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        r["overhead_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        r["jitter_ms"]["p99"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "  {} episodes, mean driving score {:.1}; allocations per tick outside inference {}",
        r["episodes"],
        r["driving_score"].as_f64().unwrap_or(f64::NAN),
        r["allocs_per_tick_outside_inference"]
    );
    println!(
        "  {sent} SIGUSR1 sent; {} triggers fired, {} snapshots written, {} dropped; store lists {} ({} KiB): {:?}",
        r["event_triggers"],
        r["events_written"],
        r["events_dropped"],
        events.len(),
        bytes / 1024,
        by_kind
    );
    if r["deadline_misses"].as_u64() != Some(0) {
        bail!("soak: {} deadline misses", r["deadline_misses"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
