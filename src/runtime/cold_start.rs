//! Cold start: how long from exec until the loop sent its first command that came from the model, and where that
//! time went. A car that reboots (a watchdog restart, a brown-out) drives blind for exactly this long, so it is a
//! figure of the product, not of the benchmark: it goes into every drive's report (`cold_start_ms`).
//!
//! The origin is the process's start (its `starttime` in /proc/self/stat, 10 ms resolution) so the dynamic
//! loader and the Rust runtime's start-up count too; `mark_process_start` is called first thing in `main`, and
//! the parts are timed with `Instant`s from there on. Only the first drive of a process that marked its start
//! reports one (later episodes of `sim eval` start warm).
//!
//! `main` only takes an `Instant`; /proc/self/stat is read when a drive starts, and the time from exec to `main`
//! is that reading less the time since `main`. Why not read it in `main`: every command would then parse a file
//! whose numbers (pid, parent pid, start time) change width from run to run, and the ARM ledger's `bench`
//! commands must retire the same instructions every run (a pid that gained a digit moved a count by 5).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::report::ColdStartMs;

/// `main`'s first instant.
static PROCESS_START: OnceLock<Instant> = OnceLock::new();
/// The cold start was already reported by an earlier drive of this process.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Call first thing in `main`: the origin of the cold start. Idempotent.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(Instant::now);
}

/// Milliseconds from exec to `main_start`: the time since exec now, less the time since `main_start`.
fn pre_main_at(main_start: Instant) -> f64 {
    since_exec_ms().map_or(0.0, |ms| (ms - main_start.elapsed().as_secs_f64() * 1e3).max(0.0))
}

/// Milliseconds from the process's start (fork + exec, the loader, Rust's runtime) to now, from the kernel's
/// `starttime` (clock ticks since boot) against CLOCK_BOOTTIME. `None` where /proc is not there, and where the
/// process ran something else before it exec'ed us: `starttime` is the fork's, so under `cargo run` (which builds,
/// then execs the binary in its own process) it would count the whole build as start-up. Such a process has
/// already reaped children (cargo's rustc), which a plain fork + exec has not: their page faults (`cminflt`) are
/// not zero. A warm `cargo run` that builds nothing reaps no child, so there the figure includes cargo's own start-up.
fn since_exec_ms() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields counted after the command name (which may hold spaces): the rest starts at field 3.
    let field = |n: usize| stat[stat.rfind(')')? + 1..].split_whitespace().nth(n - 3)?.parse::<f64>().ok();
    let (children_faults, start_ticks) = (field(11)?, field(22)?);
    if children_faults > 0.0 {
        return None;
    }
    // SAFETY: sysconf and clock_gettime with a valid, writable timespec.
    let (hz, now) = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        if libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) != 0 {
            return None;
        }
        (libc::sysconf(libc::_SC_CLK_TCK) as f64, ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
    };
    (hz > 0.0).then(|| ((now - start_ticks / hz) * 1e3).max(0.0))
}

/// The parts of one drive's start-up, timed as `drive` goes.
pub(super) struct ColdStartTimer {
    last: Instant,
    parts: ColdStartMs,
}

impl ColdStartTimer {
    /// Before the drive's first step: the time from exec to `main` is measured here (once per process).
    pub(super) fn start() -> ColdStartTimer {
        let mut parts = ColdStartMs::default();
        if let (Some(&main_start), false) = (PROCESS_START.get(), TAKEN.load(Ordering::Relaxed)) {
            parts.pre_main = pre_main_at(main_start);
        }
        ColdStartTimer { last: Instant::now(), parts }
    }

    /// Milliseconds since the previous lap (or the start), and a new lap begins.
    pub(super) fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let ms = (now - self.last).as_secs_f64() * 1e3;
        self.last = now;
        ms
    }

    /// The parts so far, to be filled in by name (`timer.parts().model_load += timer.lap()`).
    pub(super) fn parts(&mut self) -> &mut ColdStartMs {
        &mut self.parts
    }

    /// The breakdown once the first model command went out at `first_command` (after `first_inference_ms` of
    /// inference in that tick, the loop having started at `loop_start`); `None` for a process that did not mark
    /// its start, for a later drive of the same process, or when no model command was ever sent.
    pub(super) fn finish(
        self,
        loop_start: Instant,
        first_command: Option<Instant>,
        first_inference_ms: f64,
    ) -> Option<ColdStartMs> {
        let main_start = *PROCESS_START.get()?;
        let first = first_command?;
        if TAKEN.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some(close(self.parts, main_start, loop_start, first, first_inference_ms))
    }
}

/// The parts measured in the loop, the total from the process's start, and what no named part holds (`other`:
/// argument parsing, logging set-up, the status socket, ...).
fn close(mut p: ColdStartMs, main_start: Instant, loop_start: Instant, first: Instant, infer_ms: f64) -> ColdStartMs {
    p.first_inference = infer_ms;
    p.first_tick_rest = ((first - loop_start).as_secs_f64() * 1e3 - infer_ms).max(0.0);
    p.total = p.pre_main + (first - main_start).as_secs_f64() * 1e3;
    p.other = (p.total - p.named_sum()).max(0.0);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn pre_main_is_a_finite_nonnegative_duration_on_linux() {
        // cargo test spawns the test binary (fork + exec), so its start is measurable.
        let ms = since_exec_ms().expect("/proc/self/stat of a freshly spawned process");
        assert!(ms.is_finite() && ms >= 0.0, "{ms}");
    }

    #[test]
    fn the_breakdown_adds_up_to_the_total() {
        let main_start = Instant::now();
        let mut t = ColdStartTimer::start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        t.parts().model_load += t.lap();
        t.parts().pre_main = 3.0;
        let loop_start = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let c = close(t.parts, main_start, loop_start, Instant::now(), 0.5);
        assert!(c.model_load >= 2.0 && c.first_tick_rest >= 0.5, "{c:?}");
        assert!(c.total >= 3.0 + 3.0, "{c:?}");
        assert!((c.named_sum() + c.other - c.total).abs() < 1e-6, "{c:?}");
        assert!(c.is_consistent(), "{c:?}");
    }
}
