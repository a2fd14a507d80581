//! What a run asks of the operating system: real-time scheduling from the board profile, and the stop signals.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use crate::board::Board;

/// Best effort: CPU affinity, SCHED_FIFO and mlockall from the board profile; warns where not permitted. Returns
/// what took effect, in words, for the report ("none" when the profile asks for nothing).
pub(crate) fn apply_realtime_settings(board: &Board) -> String {
    let l = &board.control_loop;
    let mut applied = Vec::new();
    // SAFETY: plain libc calls on the current thread with valid, initialised arguments.
    unsafe {
        if !l.cpu_affinity.is_empty() {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for cpu in &l.cpu_affinity {
                libc::CPU_SET(*cpu, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                tracing::warn!("cpu_affinity {:?} not applied: {}", l.cpu_affinity, std::io::Error::last_os_error());
            } else {
                applied.push(format!("cpus {:?}", l.cpu_affinity));
            }
        }
        if l.rt_priority > 0 {
            // musl's sched_param has more fields than glibc's: start from zeroes.
            let mut p: libc::sched_param = std::mem::zeroed();
            p.sched_priority = l.rt_priority as i32;
            if libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
                tracing::warn!("SCHED_FIFO {} not permitted: {}", l.rt_priority, std::io::Error::last_os_error());
            } else {
                applied.push(format!("SCHED_FIFO {}", l.rt_priority));
            }
        }
        if l.mlockall {
            if libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) != 0 {
                tracing::warn!("mlockall failed: {}", std::io::Error::last_os_error());
            } else {
                applied.push("mlockall".into());
            }
        }
    }
    if applied.is_empty() {
        "none".into()
    } else {
        applied.join(", ")
    }
}

/// Call first thing on a helper thread (store writer, monitor, capture, wire receiver, an in-process world). A thread
/// inherits its creator's policy, so with `rt_priority` set every helper started after the knobs ran SCHED_FIFO at
/// the loop's own priority on the loop's CPU, and FIFO does not preempt at equal priority: a helper mid-work (a
/// snapshot being encoded, a frame rendered) held the loop's wake-up back. One priority below the loop, helpers still
/// run before ordinary load but the loop preempts them the moment it wakes. No-op for a thread not SCHED_FIFO.
pub fn helper_thread_below_loop() {
    // SAFETY: plain libc calls on the calling thread (pid 0) with a zeroed, then filled sched_param.
    unsafe {
        if libc::sched_getscheduler(0) != libc::SCHED_FIFO {
            return;
        }
        let mut p: libc::sched_param = std::mem::zeroed();
        if libc::sched_getparam(0, &mut p) != 0 || p.sched_priority <= 1 {
            return;
        }
        p.sched_priority -= 1;
        if libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) != 0 {
            tracing::warn!("helper thread keeps the loop's priority: {}", std::io::Error::last_os_error());
        }
    }
}

/// Signal handlers of one run, unregistered when it ends (also on an early error return).
pub(crate) struct SignalGuard(pub(crate) Vec<signal_hook::SigId>);

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for id in self.0.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

const STOP_SIGNALS: [i32; 3] = [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGHUP];

/// Set by the process's first stop signal and never cleared. Per-run handlers alone left a gap: between two runs of
/// `sim eval` none was registered, and signal-hook does not restore the default action when the last one is
/// unregistered, so SIGTERM was ignored there, and during a run it only ended that run: the next one started.
static PROCESS_STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(Default::default);
static PROCESS_STOP_INSTALLED: Mutex<bool> = Mutex::new(false);

/// Has this process been asked to stop (Ctrl-C, SIGTERM, SIGHUP) since its first run installed the handlers?
/// Loops over many runs (`sim eval`) check it before starting the next one.
pub fn stop_requested() -> bool {
    PROCESS_STOP.load(Ordering::SeqCst)
}

/// The process-wide stop handlers, once per process and never unregistered: a stop signal sets `stop_requested`,
/// and a second one exits at once (status 130).
pub fn install_process_stop_signals() -> anyhow::Result<()> {
    let mut installed = PROCESS_STOP_INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if !*installed {
        for sig in STOP_SIGNALS {
            // Order matters: the conditional exit sees the flag as it was before this signal set it.
            signal_hook::flag::register_conditional_shutdown(sig, 130, PROCESS_STOP.clone())?;
            signal_hook::flag::register(sig, PROCESS_STOP.clone())?;
        }
        *installed = true;
    }
    Ok(())
}

/// Ctrl-C, SIGTERM (how systemd stops a service) and SIGHUP end the loop cleanly: the car is stopped, the store
/// flushed and the report written. A second one while stopping exits at once (status 130). The run's own flag is
/// registered per run and unregistered after it; the process-wide handlers (`install_process_stop_signals`) stay, so
/// a signal between two runs is not lost and the caller of many runs stops after the one it ended.
pub(crate) fn install_stop_signals(stop: &Arc<AtomicBool>) -> anyhow::Result<Vec<signal_hook::SigId>> {
    install_process_stop_signals()?;
    if stop_requested() {
        stop.store(true, Ordering::SeqCst);
    }
    STOP_SIGNALS.iter().map(|&sig| Ok(signal_hook::flag::register(sig, stop.clone())?)).collect()
}
