//! `rtvla explain`: the language branch, run later and offline on the stored snapshots (docs/ARCHITECTURE.md §1, §3).
//!
//! Each event's keyframes (features + the telemetry of their tick: speed, target points, the plan the car drove)
//! go through the student's language branch on tract; the result is a commentary per keyframe, printed as a table,
//! and optionally a JSON array (`id`, `commentary`, …) and a self-contained HTML report with the thumbnails and
//! the speed/brake trace of every event.

pub mod language;
pub mod pick;
pub mod report;

use std::path::Path;

use serde::Serialize;

use crate::events::snapshot::{Snapshot, TickTelemetry};
use crate::store::export::{for_each_snapshot, format_utc};
pub use language::{Commentary, KeyframeContext, LanguageBranch, LanguageManifest};

/// The explanation of one keyframe.
#[derive(Debug, Clone, Serialize)]
pub struct KeyframeExplanation {
    pub tick: u64,
    /// Seconds after the trigger (0 for the trigger keyframe, negative in the lead-up).
    pub offset_s: f64,
    pub speed: f32,
    pub commentary: String,
}

/// The explanation of one event: `commentary` is the trigger keyframe's (the moment that fired).
#[derive(Debug, Clone, Serialize)]
pub struct EventExplanation {
    pub id: u64,
    pub seq: u64,
    pub time: String,
    pub trigger: String,
    pub cause: String,
    pub commentary: String,
    pub keyframes: Vec<KeyframeExplanation>,
    /// Why an event has no commentary (no keyframe with features, features of another shape or another model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// Telemetry of a given tick in a snapshot's windows.
fn tick_of(s: &Snapshot, tick: u64) -> Option<&TickTelemetry> {
    s.pre.iter().chain(s.post.iter()).find(|t| t.tick == tick)
}

/// Ego speed `before_s` seconds before `time_us`: the last tick of the windows at or before then, or the window's
/// first tick when it does not reach back that far (the training data use the spawn speed the same way).
fn speed_before(s: &Snapshot, time_us: u64, before_s: f64) -> Option<f32> {
    let at = time_us.saturating_sub((before_s * 1e6) as u64);
    let mut ticks = s.pre.iter().chain(s.post.iter());
    let first = ticks.clone().next()?;
    Some(ticks.rfind(|t| t.time_us <= at).unwrap_or(first).speed)
}

/// The language branch's inputs for keyframe `k` of a snapshot (None when that tick's telemetry is missing).
pub fn keyframe_context(s: &Snapshot, k: usize, speed_prev_s: f64) -> Option<KeyframeContext> {
    let kf = s.keyframes.get(k)?;
    let t = tick_of(s, kf.tick)?;
    Some(KeyframeContext {
        features: kf.features_f32().collect(),
        feature_shape: [kf.shape[0] as usize, kf.shape[1] as usize],
        speed: t.speed,
        speed_prev: speed_before(s, kf.time_us, speed_prev_s)?,
        target_points: t.target_points,
        path: t.path,
        speed_wps: t.speed_wps,
    })
}

/// Explain one snapshot: every keyframe that has features of the branch's shape.
pub fn explain_snapshot(branch: &LanguageBranch, seq: u64, s: &Snapshot) -> anyhow::Result<EventExplanation> {
    let mut out = EventExplanation {
        id: s.event_id,
        seq,
        time: format_utc(s.wall_time_us),
        trigger: s.trigger.name().to_string(),
        cause: s.cause.to_string(),
        commentary: String::new(),
        keyframes: Vec::new(),
        skipped: None,
    };
    if let Some(why) = branch.manifest().io.foreign_features(s.model_id_hex().as_deref()) {
        out.skipped = Some(why);
        return Ok(out);
    }
    let want = branch.feature_shape();
    for k in 0..s.keyframes.len() {
        let Some(ctx) = keyframe_context(s, k, branch.manifest().io.speed_prev_s) else { continue };
        if ctx.features.is_empty() {
            continue;
        }
        if ctx.feature_shape != want {
            out.skipped =
                Some(format!("keyframe features {:?}, the language branch reads {want:?}", ctx.feature_shape));
            continue;
        }
        let kf = &s.keyframes[k];
        // One keyframe the branch cannot read (e.g. non-finite telemetry from a faulty link) is named and skipped;
        // it must not abort the explanation of every other event in the store.
        let c = match branch.explain(&ctx) {
            Ok(c) => c,
            Err(e) => {
                out.skipped = Some(format!("keyframe at tick {}: {e:#}", kf.tick));
                continue;
            }
        };
        out.keyframes.push(KeyframeExplanation {
            tick: kf.tick,
            offset_s: (kf.time_us as f64 - s.mono_time_us as f64) / 1e6,
            speed: ctx.speed,
            commentary: c.text,
        });
    }
    // The event's commentary is the trigger tick's; keyframes before it (the lead-up) come first in the list.
    let at_trigger = out.keyframes.iter().find(|k| k.offset_s >= 0.0).or(out.keyframes.last());
    match at_trigger {
        Some(k) => out.commentary = k.commentary.clone(),
        None if out.skipped.is_none() => out.skipped = Some("no keyframe with visual features".into()),
        None => {}
    }
    Ok(out)
}

/// Explain every decodable event of a store, oldest first. `progress(done)` after each event; corrupt records
/// are skipped (as `store ls` does) and counted in the returned `corrupt`.
pub fn explain_store(
    dir: &Path,
    branch: &LanguageBranch,
    mut keep: impl FnMut(&EventExplanation, &Snapshot),
    mut progress: impl FnMut(usize),
) -> anyhow::Result<(Vec<EventExplanation>, usize)> {
    let mut out = Vec::new();
    let mut corrupt = 0usize;
    for_each_snapshot(
        dir,
        |r, s| {
            let e = explain_snapshot(branch, r.seq, &s)?;
            keep(&e, &s);
            out.push(e);
            progress(out.len());
            Ok(())
        },
        |_, tail| corrupt += usize::from(!tail),
    )?;
    Ok((out, corrupt))
}

/// The terminal table: one line per event.
pub fn render_table(events: &[EventExplanation]) -> String {
    let mut s = format!("{:>5}  {:<24} {:<12} {}\n", "id", "time (UTC)", "trigger", "commentary at the trigger");
    for e in events {
        let text = if e.commentary.is_empty() {
            format!("({})", e.skipped.as_deref().unwrap_or("none"))
        } else {
            e.commentary.clone()
        };
        s += &format!("{:>5}  {:<24} {:<12} {}\n", e.id, e.time, e.trigger, text);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::snapshot::TickTelemetry;

    /// A window of ticks 50 ms apart whose speed is the tick number.
    fn window(first_tick: u64, n: u64) -> Box<Snapshot> {
        let mut s = Snapshot::new_boxed();
        for tick in first_tick..first_tick + n {
            let t = TickTelemetry { tick, time_us: tick * 50_000, speed: tick as f32, ..Default::default() };
            s.pre.push(t).unwrap();
        }
        s
    }

    #[test]
    fn speed_before_reads_the_tick_half_a_second_earlier() {
        let s = window(0, 40);
        // Tick 30 is at 1.5 s; 0.5 s before it is tick 20.
        assert_eq!(speed_before(&s, 30 * 50_000, 0.5), Some(20.0));
        // Between ticks: the last tick at or before that time.
        assert_eq!(speed_before(&s, 30 * 50_000 + 30_000, 0.5), Some(20.0));
    }

    #[test]
    fn a_keyframe_the_branch_cannot_read_is_skipped_not_fatal() {
        let manifest = crate::bundle::find("models/student/language.toml").unwrap();
        let branch = LanguageBranch::load(&manifest).unwrap();
        let [tokens, dims] = branch.feature_shape();
        let mut s = window(0, 40);
        s.pre[35].speed = f32::NAN; // what a faulty link once put into the telemetry
        for tick in [20u64, 35] {
            let mut kf = crate::events::snapshot::Keyframe {
                tick,
                time_us: tick * 50_000,
                shape: [tokens as u16, dims as u16],
                features: heapless::Vec::new(),
                thumb_w: 0,
                thumb_h: 0,
                jpeg: heapless::Vec::new(),
            };
            for i in 0..tokens * dims {
                let bits = half::f16::from_f32((i % 7) as f32 * 0.1).to_bits();
                kf.features.extend_from_slice(&bits.to_le_bytes()).unwrap();
            }
            s.keyframes.push(kf).unwrap();
        }
        s.mono_time_us = 35 * 50_000;
        let out = explain_snapshot(&branch, 1, &s).expect("one bad keyframe does not fail the event");
        assert_eq!(out.keyframes.len(), 1, "the readable keyframe is explained");
        assert!(!out.keyframes[0].commentary.is_empty());
        assert!(out.skipped.as_deref().is_some_and(|w| w.starts_with("keyframe at tick 35")), "{:?}", out.skipped);
    }

    #[test]
    fn speed_before_falls_back_to_the_windows_first_tick() {
        // The window starts at tick 25 (1.25 s): 0.5 s before tick 30 is not in it, so its first tick stands in.
        let s = window(25, 10);
        assert_eq!(speed_before(&s, 30 * 50_000, 0.5), Some(25.0));
        assert_eq!(speed_before(&Snapshot::new_boxed(), 0, 0.5), None);
    }
}
