//! `rtvla sim serve` arguments → a [`Rig`] → sim eval's table, plus the wire's figures.

use std::time::Duration;

use super::cli::{bad, default_seeds, evaluate_with_progress, finish_eval, SimCommand};
use super::eval;
use super::serve::{FaultInjection, Rig, ServeOptions};
use crate::error::bad_input;
use crate::wire::{Pacing, WireFormat, WireKey};

pub(super) fn run(cmd: SimCommand) -> anyhow::Result<i32> {
    let SimCommand::Serve {
        bind,
        peer,
        key,
        pacing,
        rate_hz,
        scenarios,
        seeds,
        format,
        width,
        height,
        hello_timeout_s,
        loss,
        reorder,
        duplicate,
        blackout,
        json,
        verbose,
    } = cmd
    else {
        unreachable!("serve_cli::run takes `sim serve` only")
    };
    let names = bad(eval::resolve_scenarios(&scenarios))?;
    let seeds = match seeds {
        Some(s) => bad(eval::parse_seeds(&s))?,
        None => default_seeds(&scenarios),
    };
    let pacing = match pacing.as_str() {
        "lockstep" => Pacing::Lockstep,
        "realtime" | "real-time" => Pacing::RealTime,
        other => return Err(bad_input(format!("--pacing {other:?}: expected lockstep or realtime"))),
    };
    let format = match format.as_str() {
        "rgb8" | "rgb" => WireFormat::Rgb8,
        "jpeg" | "jpg" => WireFormat::Jpeg,
        other => return Err(bad_input(format!("--format {other:?}: expected rgb8 or jpeg"))),
    };
    if !(rate_hz.is_finite() && rate_hz > 0.0 && rate_hz <= 1000.0) {
        return Err(bad_input(format!("--rate-hz {rate_hz}: must be in (0, 1000]")));
    }
    let pct = |name: &str, v: f64| -> anyhow::Result<f64> {
        if (0.0..=100.0).contains(&v) {
            Ok(v / 100.0)
        } else {
            Err(bad_input(format!("--{name} {v}: a percentage, 0..=100")))
        }
    };
    let faults = FaultInjection {
        loss: pct("loss", loss)?,
        reorder: pct("reorder", reorder)?,
        duplicate: pct("duplicate", duplicate)?,
        blackout: blackout.as_deref().map(parse_blackout).transpose()?,
    };
    let peer =
        peer.map(|p| p.parse().map_err(|e| bad_input(format!("--peer {p:?}: {e} (expected IP:PORT)")))).transpose()?;
    let opts = ServeOptions {
        bind,
        peer,
        key: key.as_deref().map(WireKey::load).transpose()?,
        pacing,
        rate_hz,
        dt: super::DT,
        width,
        height,
        format,
        hello_timeout: Duration::from_secs_f64(hello_timeout_s.max(0.1)),
        faults,
    };
    if opts.key.is_none() {
        eprintln!("note: no --key: datagrams are not authenticated; runtimes accept this on loopback only");
    }
    // Before "listening" is printed: from then on a stop signal ends the table (exit 130) instead of killing it.
    crate::runtime::os::install_process_stop_signals()?;
    let mut rig = Rig::bind(opts)?;
    eprintln!("rig listening on {} ({pacing:?}); start `rtvla drive` once per episode", rig.local_addr()?);
    let mut runner = |sc: &str, seed: u64| rig.episode(sc, seed);
    let total = names.len() as u64 * (seeds.end - seeds.start);
    let mut rep =
        evaluate_with_progress(total, verbose, |prog| eval::evaluate("wire", &names, seeds, &mut runner, Some(prog)));
    let w = rig.summary.clone();
    println!(
        "wire ({}): frame→command latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms; {} datagrams sent ({} dropped by injection), {} frames, {} unanswered, {} commands, {} refused, {} resends",
        w.pacing,
        w.latency_ms.p50,
        w.latency_ms.p99,
        w.latency_ms.max,
        w.datagrams_sent,
        w.datagrams_dropped_by_injection,
        w.frames_sent,
        w.frames_unanswered,
        w.commands_received,
        w.refused,
        w.resends
    );
    rep.wire = Some(w);
    finish_eval(&rep, json.as_deref())
}

fn parse_blackout(s: &str) -> anyhow::Result<(f64, f64)> {
    let bad = || bad_input(format!("--blackout {s:?}: expected START_S,LENGTH_S"));
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if !(a >= 0.0 && b > 0.0 && a.is_finite() && b.is_finite()) {
        return Err(bad());
    }
    Ok((a, b))
}
