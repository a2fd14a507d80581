//! The run report: what the loop measured plus what the camera, the link, the recorder and the store counted.
//! The world's own account (score, scenario), if a plant drove, is added by the plant afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{LoopOutcome, PolicyKind};
use crate::alloc_counter;
use crate::board::Board;
use crate::camera::SourceStats;
use crate::events::RecorderStats;
use crate::report::{Quantiles, RunReport};
use crate::store::WriterStats;
use crate::supervisor::Fault;

/// Everything besides the loop's outcome that the report needs.
pub(super) struct RunFacts<'a> {
    pub run_id: String,
    pub board: &'a Board,
    pub manifest: &'a crate::model::Manifest,
    pub policy: PolicyKind,
    pub clock: &'static str,
    pub realtime: String,
    pub camera_stats: SourceStats,
    pub camera_desc: Option<String>,
    pub link: Vec<(&'static str, u64)>,
    pub recorder: Option<RecorderStats>,
    pub writer: Option<WriterStats>,
    pub store_dir: PathBuf,
}

pub(super) fn build(outcome: &LoopOutcome, run: RunFacts<'_>) -> RunReport {
    let mut faults = BTreeMap::new();
    for (i, f) in Fault::ALL.iter().enumerate() {
        if outcome.fault_counts[i] > 0 {
            faults.insert(f.name().to_string(), outcome.fault_counts[i]);
        }
    }
    let measured = outcome.measured_ticks.max(1) as f64;
    let counting = alloc_counter::is_installed();
    let infer_mean = outcome.infer.mean();
    let (board, manifest, camera_stats) = (run.board, run.manifest, run.camera_stats);
    let (rec_stats, writer_stats) = (run.recorder, run.writer);
    let expert = run.policy == PolicyKind::Expert;
    RunReport {
        run_id: run.run_id,
        board: board.board.name.clone(),
        model: if expert { "privileged expert".into() } else { manifest.model.name.clone() },
        model_is_fixture: !expert && manifest.model.fixture,
        policy: format!("{:?}", run.policy).to_lowercase(),
        clock: run.clock,
        rate_hz: board.control_loop.rate_hz,
        realtime: run.realtime,
        ticks: outcome.ticks,
        deadline_ms: board.deadline_ms(),
        deadline_misses: outcome.deadline_misses,
        skipped_ticks: outcome.skipped_ticks,
        tick_ms: Quantiles::of(&outcome.tick),
        infer_ms: Quantiles::of(&outcome.infer),
        overhead_ms: Quantiles::of(&outcome.overhead),
        jitter_ms: Quantiles::of(&outcome.jitter),
        camera_ms: Quantiles::of(&outcome.camera),
        preprocess_ms: Quantiles::of(&outcome.preprocess),
        overhead_ratio: if infer_mean > 0.0 { outcome.overhead.mean() / infer_mean } else { 0.0 },
        allocs_per_tick_outside_inference: counting.then(|| outcome.allocs_outside as f64 / measured),
        allocs_per_inference: counting.then(|| outcome.allocs_inside as f64 / measured),
        measured_ticks: outcome.measured_ticks,
        fallbacks: outcome.fallbacks,
        fallback_ticks: outcome.fallback_ticks,
        nominal_ticks_at_end: outcome.nominal_ticks_at_end,
        faults,
        frames_dropped: camera_stats.dropped,
        frames_captured: camera_stats.frames,
        camera_reconnects: camera_stats.reconnects,
        camera_bad_frames: camera_stats.bad,
        camera: run.camera_desc,
        link: run.link.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        events_flagged: outcome.fallbacks,
        events_written: writer_stats.as_ref().map_or(0, |w| w.written),
        events_dropped: rec_stats.map_or(0, |r| r.dropped_no_slot + r.dropped_queue_full)
            + writer_stats.as_ref().map_or(0, |w| w.dropped_store + w.dropped_encode),
        event_triggers: rec_stats.map_or(0, |r| r.triggers),
        store_dir: writer_stats.as_ref().map(|_| run.store_dir.display().to_string()),
        commands_hash: outcome.commands_hash.hex(),
        scenario: None,
        seed: None,
        route_completion: None,
        infractions: None,
        infractions_text: None,
        route_ended: None,
        driving_score: None,
        episodes: None,
        wall_s: outcome.wall.as_secs_f64(),
        cold_start_ms: None,
    }
}
