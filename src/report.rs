//! The run report: JSON for machines (`--report-json`), one screen for people.

use serde::{Deserialize, Serialize};

use crate::stats::LatencyHistogram;

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Quantiles {
    pub fn of(h: &LatencyHistogram) -> Quantiles {
        Quantiles { p50: h.quantile(0.5), p99: h.quantile(0.99), max: h.max(), mean: h.mean() }
    }
}

/// Everything `rtvla drive` measured. Sim-only fields are `null` on a real vehicle.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// This run's id (also in every snapshot it wrote and, on the host, the name of its store directory).
    pub run_id: String,
    pub board: String,
    pub model: String,
    pub model_is_fixture: bool,
    pub policy: String,
    pub clock: &'static str,
    pub rate_hz: f64,
    /// The board's real-time knobs that took effect (CPU pinning, SCHED_FIFO, mlockall), or "none".
    pub realtime: String,
    pub ticks: u64,
    pub deadline_ms: f64,
    pub deadline_misses: u64,
    /// Ticks skipped because an overrun ran past the next period (never caught up back-to-back).
    pub skipped_ticks: u64,
    pub tick_ms: Quantiles,
    pub infer_ms: Quantiles,
    pub overhead_ms: Quantiles,
    /// Tick start lateness against the schedule (0 in virtual time).
    pub jitter_ms: Quantiles,
    /// Time to get the frame (a sim camera's bounded wait for its lockstep frame included).
    pub camera_ms: Quantiles,
    pub preprocess_ms: Quantiles,
    /// Mean loop overhead (everything but inference) as a fraction of mean inference time.
    pub overhead_ratio: f64,
    /// Heap allocations per tick on the loop thread outside the inference call, after warm-up.
    /// `null` when the counting allocator is not installed.
    pub allocs_per_tick_outside_inference: Option<f64>,
    /// Heap allocations per tick inside the inference call (tract allocates op outputs), after warm-up.
    pub allocs_per_inference: Option<f64>,
    pub measured_ticks: u64,
    pub fallbacks: u64,
    pub fallback_ticks: u64,
    /// Ticks driven since the last fallback ended, at the end of the run (all ticks when there was none).
    pub nominal_ticks_at_end: u64,
    pub faults: std::collections::BTreeMap<String, u64>,
    /// Frames the camera skipped (driver sequence gaps).
    pub frames_dropped: u64,
    /// Frames the camera delivered.
    pub frames_captured: u64,
    /// Times the camera was lost and reopened.
    pub camera_reconnects: u64,
    /// Camera buffers that failed to convert (short buffer, bad JPEG).
    pub camera_bad_frames: u64,
    /// The negotiated camera (device, driver, format, size, rate); null for the simulator's camera.
    pub camera: Option<String>,
    /// What the vehicle link counted (the wire: datagrams, refused by MAC / replay / version, frames lost); empty
    /// for the in-process simulator.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub link: std::collections::BTreeMap<String, u64>,
    /// Snapshot events flagged by the supervisor (fallback entries).
    pub events_flagged: u64,
    /// Snapshots committed to the store (written and fsynced per the board's policy).
    pub events_written: u64,
    /// Snapshots lost: no free slot, queue full, store or encode error.
    pub events_dropped: u64,
    /// Trigger firings that started a snapshot.
    pub event_triggers: u64,
    /// Store directory (null when recording was off).
    pub store_dir: Option<String>,
    pub commands_hash: String,
    pub scenario: Option<String>,
    pub seed: Option<u64>,
    pub route_completion: Option<f64>,
    pub infractions: Option<serde_json::Value>,
    /// Simulator: the infractions in words ("1 vehicle collision, ..." or "none").
    pub infractions_text: Option<String>,
    /// Simulator: false when the run stopped (`--ticks`, Ctrl-C) before the route ended, so the driving score
    /// covers only the part driven.
    pub route_ended: Option<bool>,
    /// Simulator: mean over the episodes driven (more than one with `--repeat`).
    pub driving_score: Option<f64>,
    /// Simulator: episodes driven (each route end starts the next seed with `--repeat`).
    pub episodes: Option<usize>,
    pub wall_s: f64,
    /// From exec to the first command from the model, and its parts (the first drive of a process only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cold_start_ms: Option<ColdStartMs>,
}

/// Where a cold start's time went, ms. The named parts and `other` add up to `total` (from the process's start to
/// the first command the model produced went to the vehicle link).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct ColdStartMs {
    pub total: f64,
    /// Exec to `main` (the kernel's process start time has 10 ms resolution); 0 where that start is not this
    /// binary's: a process that ran other programs before it exec'ed this one, as `cargo run` does after its build.
    pub pre_main: f64,
    /// Read and check the board profile.
    pub board_load: f64,
    /// Build the in-process world (simulator boards).
    pub plant: f64,
    /// Read the model file, verify its sha256, parse the ONNX, type it with the manifest's shapes.
    pub model_load: f64,
    /// tract's into_optimized + into_runnable and the inference state.
    pub optimise: f64,
    /// CPU affinity, SCHED_FIFO, mlockall (mlockall faults every mapped page in).
    pub realtime_setup: f64,
    /// Event recorder (its ring and snapshot slots) and the store writer (scan of the existing segments).
    pub store_open: f64,
    /// The frame source and the vehicle link (a V4L2 device, the wire, or the simulator's world thread).
    pub camera_open: f64,
    /// The first inference call that produced the command.
    pub first_inference: f64,
    /// The rest of the loop until that command went out (waiting for a frame, preprocess, controller).
    pub first_tick_rest: f64,
    /// Everything else (argument parsing, logging, the status socket and monitor, ...).
    pub other: f64,
}

impl ColdStartMs {
    /// The named parts (all but `total` and `other`).
    pub fn named_sum(&self) -> f64 {
        self.parts().iter().filter(|(k, _)| *k != "other").map(|(_, v)| v).sum()
    }

    /// Every part, by name, in start-up order.
    pub fn parts(&self) -> [(&'static str, f64); 11] {
        [
            ("pre_main", self.pre_main),
            ("board_load", self.board_load),
            ("plant", self.plant),
            ("model_load", self.model_load),
            ("optimise", self.optimise),
            ("realtime_setup", self.realtime_setup),
            ("store_open", self.store_open),
            ("camera_open", self.camera_open),
            ("first_inference", self.first_inference),
            ("first_tick_rest", self.first_tick_rest),
            ("other", self.other),
        ]
    }

    /// Every figure finite and non-negative, and no part (nor all of them together) longer than the total.
    pub fn is_consistent(&self) -> bool {
        let parts = self.parts();
        let ok = |v: f64| v.is_finite() && v >= 0.0;
        let sum: f64 = parts.iter().map(|(_, v)| v).sum();
        ok(self.total)
            && parts.iter().all(|(_, v)| ok(*v) && *v <= self.total)
            && sum <= self.total * (1.0 + 1e-9) + 1e-6
    }

    /// One line for the drive's summary: the total, then the parts of at least 1 ms, largest first.
    pub fn line(&self) -> String {
        let mut parts: Vec<(&str, f64)> = self.parts().into_iter().filter(|(_, v)| *v >= 1.0).collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        let text: Vec<String> = parts.iter().map(|(k, v)| format!("{} {v:.0}", k.replace('_', " "))).collect();
        format!("{:.0} ms to the first command ({})", self.total, text.join(", "))
    }
}

impl RunReport {
    /// The human summary printed on exit.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let fixture = if self.model_is_fixture { " (FIXTURE, untrained)" } else { "" };
        s += &format!("rtvla drive — board {}, policy {}, model {}{}\n", self.board, self.policy, self.model, fixture);
        s += &format!(
            "  ticks        {} at {} Hz ({} clock), {:.1} s wall\n",
            self.ticks, self.rate_hz, self.clock, self.wall_s
        );
        s += &format!(
            "  tick         p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   budget {:.1} ms\n",
            self.tick_ms.p50, self.tick_ms.p99, self.tick_ms.max, self.deadline_ms
        );
        s += &format!("  wake jitter  p50 {:.3} ms  p99 {:.3} ms\n", self.jitter_ms.p50, self.jitter_ms.p99);
        s += &format!(
            "  stages       camera p50 {:.3} ms, preprocess p50 {:.3} ms\n",
            self.camera_ms.p50, self.preprocess_ms.p50
        );
        s += &format!("  inference    p50 {:.2} ms  p99 {:.2} ms\n", self.infer_ms.p50, self.infer_ms.p99);
        let ratio = if self.infer_ms.mean > 1e-3 {
            format!("({:.2} % of inference)", self.overhead_ratio * 100.0)
        } else {
            "(no model inference in this run)".to_string()
        };
        s += &format!(
            "  overhead     p50 {:.3} ms  p99 {:.3} ms   {ratio}\n",
            self.overhead_ms.p50, self.overhead_ms.p99
        );
        if let Some(c) = &self.cold_start_ms {
            s += &format!("  cold start   {}\n", c.line());
        }
        s += &format!("  deadlines    {} missed, {} ticks skipped\n", self.deadline_misses, self.skipped_ticks);
        if self.deadline_misses > 0 && self.clock == "real" && self.realtime == "none" {
            s += "               the loop ran without real-time settings: set loop.rt_priority (SCHED_FIFO; root or \
                  CAP_SYS_NICE), cpu_affinity and mlockall in the board profile\n";
        }
        let allocs =
            |v: Option<f64>| v.map_or("n/a (counting allocator not installed)".to_string(), |a| format!("{a:.2}"));
        s += &format!(
            "  allocations  {} per tick outside inference, {} inside\n",
            allocs(self.allocs_per_tick_outside_inference),
            allocs(self.allocs_per_inference)
        );
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        s += &format!(
            "  supervisor   {} fallbacks ({} ticks){}{}\n",
            self.fallbacks,
            self.fallback_ticks,
            if faults.is_empty() { String::new() } else { format!(": {}", faults.join(", ")) },
            if self.frames_dropped > 0 { format!(", {} frames dropped", self.frames_dropped) } else { String::new() }
        );
        if let Some(cam) = &self.camera {
            s += &format!(
                "  camera       {cam}: {} frames, {} dropped, {} reconnects, {} bad\n",
                self.frames_captured, self.frames_dropped, self.camera_reconnects, self.camera_bad_frames
            );
        }
        if let (Some(ds), Some(rc)) = (self.driving_score, self.route_completion) {
            s += &format!(
                "  driving      score {:.1}, route completion {:.1} % ({} seed {}{})\n",
                ds,
                rc * 100.0,
                self.scenario.as_deref().unwrap_or("?"),
                self.seed.unwrap_or(0),
                match self.episodes {
                    Some(n) if n > 1 => format!(", mean of {n} episodes"),
                    _ => String::new(),
                }
            );
            if self.route_ended == Some(false) {
                s += &format!(
                    "               route not finished: stopped after {} ticks; the score covers only the part driven\n",
                    self.ticks
                );
            }
            if let Some(inf) = &self.infractions_text {
                s += &format!("  infractions  {inf}\n");
            }
        }
        if let Some(dir) = &self.store_dir {
            s += &format!(
                "  events       {} triggers, {} snapshots written to {}, {} dropped\n",
                self.event_triggers, self.events_written, dir, self.events_dropped
            );
        }
        s += &format!("  commands     hash {}   run {}\n", self.commands_hash, self.run_id);
        s
    }

    /// One line saying what to run next: explain the events just recorded.
    pub fn next_step(&self) -> Option<String> {
        let dir = self.store_dir.as_ref().filter(|_| self.events_written > 0)?;
        let html = std::path::Path::new(dir).join("report.html");
        Some(format!("next: explain them with  rtvla explain {dir} --html {}", html.display()))
    }
}
