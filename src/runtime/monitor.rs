//! The monitor: live stats off the loop thread (a progress line on a terminal, a tracing line every few seconds,
//! the status socket and systemd's watchdog).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control_loop::LiveStats;
use super::status::StatusServer;

/// Live stats off the loop thread: a progress line on a terminal and a tracing line every few seconds.
pub(super) struct Monitor {
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub(super) fn start(
        live: Arc<LiveStats>,
        total: Option<u64>,
        progress: bool,
        mut status: Option<StatusServer>,
    ) -> Monitor {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let handle = std::thread::Builder::new()
            .name("rtvla-monitor".into())
            .spawn(move || {
                super::os::helper_thread_below_loop();
                let bar = if progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                    let b = match total {
                        Some(t) => indicatif::ProgressBar::new(t),
                        None => indicatif::ProgressBar::new_spinner(),
                    };
                    b.set_style(
                        indicatif::ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} ticks {msg}")
                            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                    Some(b)
                } else {
                    None
                };
                let mut last_log = Instant::now();
                while !d.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if let Some(s) = status.as_mut() {
                        s.poll(&live);
                    }
                    let ticks = live.ticks.load(Ordering::Relaxed);
                    let msg = format!(
                        "tick {:.2} ms, infer {:.2} ms, misses {}, fallbacks {}",
                        live.last_tick_us.load(Ordering::Relaxed) as f64 / 1e3,
                        live.last_infer_us.load(Ordering::Relaxed) as f64 / 1e3,
                        live.deadline_misses.load(Ordering::Relaxed),
                        live.fallbacks.load(Ordering::Relaxed)
                    );
                    if let Some(b) = &bar {
                        b.set_position(ticks);
                        b.set_message(msg.clone());
                    }
                    if last_log.elapsed() >= Duration::from_secs(5) {
                        tracing::info!(ticks, "{msg}");
                        last_log = Instant::now();
                    }
                }
                if let Some(b) = bar {
                    b.finish_and_clear();
                }
            })
            .ok();
        Monitor { done, handle }
    }

    pub(super) fn finish(mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
