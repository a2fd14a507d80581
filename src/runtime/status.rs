//! What a running `drive` is doing, for the person on the device and for the deploy health check: a Unix socket
//! served by the monitor thread (one JSON line per connection), read by `rtvla status`. Under systemd the monitor
//! also feeds the watchdog (`WATCHDOG=1`) while the loop ticks, so a hung loop gets the service restarted.
//!
//! Sockets live in one directory: `$RTVLA_STATUS_DIR`, else systemd's `$RUNTIME_DIRECTORY`, else
//! `$XDG_RUNTIME_DIR/rtvla`, else `/tmp/rtvla-<uid>`; each drive serves `drive-<pid>.sock` there, so
//! `rtvla status` finds every drive of the machine's user without being told a path.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::control_loop::LiveStats;
use crate::store::writer::WriterCounters;

/// One drive's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub board: String,
    pub model: String,
    pub model_sha256: String,
    pub run_id: String,
    pub rate_hz: f64,
    /// The loop ticked recently (within five periods, at least one second).
    pub ticking: bool,
    pub ticks: u64,
    /// Milliseconds since the last tick ended (null before the first).
    pub last_tick_age_ms: Option<u64>,
    pub deadline_misses: u64,
    pub fallbacks: u64,
    /// The supervisor holds the car stopped right now.
    pub in_fallback: bool,
    pub uptime_s: f64,
    pub events_written: u64,
    /// Store sequence number of the newest committed event (0: none yet).
    pub last_event_seq: u64,
    pub store_dir: Option<String>,
    /// Bytes this run appended to the store.
    pub store_bytes: u64,
    pub last_store_error: Option<String>,
}

/// What the status server knows besides the live counters (fixed for the run).
#[derive(Clone, Debug)]
pub struct StatusInfo {
    pub board: String,
    pub model: String,
    pub model_sha256: String,
    pub run_id: String,
    pub rate_hz: f64,
    pub store_dir: Option<String>,
    pub writer: Option<Arc<WriterCounters>>,
}

/// The directory status sockets live in (see the module doc).
pub fn status_dir() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("RTVLA_STATUS_DIR")
        .or_else(|| var("RUNTIME_DIRECTORY"))
        .or_else(|| var("XDG_RUNTIME_DIR").map(|d| d.join("rtvla")))
        // SAFETY: getuid has no failure mode.
        .unwrap_or_else(|| std::env::temp_dir().join(format!("rtvla-{}", unsafe { libc::getuid() })))
}

/// The monitor thread's server: answers each connection with the current status; feeds systemd.
pub(super) struct StatusServer {
    listener: Option<(UnixListener, PathBuf)>,
    info: StatusInfo,
    started: Instant,
    notify: bool,
    ready_sent: bool,
}

impl StatusServer {
    pub fn start(info: StatusInfo) -> StatusServer {
        let listener = match bind(&status_dir()) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("status socket not served ({e}); `rtvla status` will not see this run");
                None
            }
        };
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        StatusServer { listener, info, started: Instant::now(), notify, ready_sent: false }
    }

    /// Called by the monitor every ~200 ms: answer waiting clients, tell systemd the loop is alive.
    pub fn poll(&mut self, live: &LiveStats) {
        // The full status (the writer's counters, a JSON line) only for a client that asks.
        if let Some((l, _)) = &self.listener {
            while let Ok((mut s, _)) = l.accept() {
                let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                if let Ok(mut line) = serde_json::to_string(&self.status(live)) {
                    line.push('\n');
                    let _ = s.write_all(line.as_bytes());
                }
            }
        }
        if self.notify && self.tick_age_ms(live).is_some_and(|a| a <= self.ticking_limit_ms()) {
            let mut msgs = vec![sd_notify::NotifyState::Watchdog];
            if !self.ready_sent {
                msgs.push(sd_notify::NotifyState::Ready);
                self.ready_sent = true;
            }
            let _ = sd_notify::notify(false, &msgs);
        }
    }

    /// Milliseconds since the last tick ended; `None` before the first.
    fn tick_age_ms(&self, live: &LiveStats) -> Option<u64> {
        let ticks = live.ticks.load(Ordering::Relaxed);
        let last = live.last_tick_end_us.load(Ordering::Relaxed);
        (ticks > 0).then(|| live.since_us().saturating_sub(last) / 1000)
    }

    /// "Ticking": the last tick ended within five periods (at least one second).
    fn ticking_limit_ms(&self) -> u64 {
        ((5000.0 / self.info.rate_hz) as u64).max(1000)
    }

    fn status(&self, live: &LiveStats) -> Status {
        let ticks = live.ticks.load(Ordering::Relaxed);
        let age_ms = self.tick_age_ms(live);
        let w = self.info.writer.as_ref().map(|w| w.get());
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            board: self.info.board.clone(),
            model: self.info.model.clone(),
            model_sha256: self.info.model_sha256.clone(),
            run_id: self.info.run_id.clone(),
            rate_hz: self.info.rate_hz,
            ticking: age_ms.is_some_and(|a| a <= self.ticking_limit_ms()),
            ticks,
            last_tick_age_ms: age_ms,
            deadline_misses: live.deadline_misses.load(Ordering::Relaxed),
            fallbacks: live.fallbacks.load(Ordering::Relaxed),
            in_fallback: live.in_fallback.load(Ordering::Relaxed),
            uptime_s: self.started.elapsed().as_secs_f64(),
            events_written: w.as_ref().map_or(0, |w| w.written),
            last_event_seq: w.as_ref().map_or(0, |w| w.last_seq),
            store_dir: self.info.store_dir.clone(),
            store_bytes: w.as_ref().map_or(0, |w| w.bytes),
            last_store_error: w.and_then(|w| w.last_error),
        }
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        if let Some((_, path)) = self.listener.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn bind(dir: &Path) -> std::io::Result<(UnixListener, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("drive-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path); // a pid reused after a crash left its socket
    let l = UnixListener::bind(&path)?;
    l.set_nonblocking(true)?;
    Ok((l, path))
}

/// Ask every drive whose socket is in `dir`; sockets nobody answers on (a crashed drive) are left out.
pub fn query_all(dir: &Path) -> Vec<Status> {
    let mut socks: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    socks.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("drive-")));
    socks.sort();
    socks.iter().filter_map(|p| query(p).ok()).collect()
}

/// One drive's status from its socket (the monitor answers within ~200 ms).
pub fn query(socket: &Path) -> anyhow::Result<Status> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(serde_json::from_str(text.trim())?)
}

impl Status {
    /// What a person on the device reads first.
    pub fn render(&self) -> String {
        let state = match (self.ticking, self.in_fallback) {
            (true, false) => "ticking".to_string(),
            (true, true) => "ticking, car held stopped (fallback)".to_string(),
            (false, _) => format!(
                "NOT ticking (last tick {})",
                self.last_tick_age_ms.map_or("never".into(), |a| format!("{a} ms ago"))
            ),
        };
        format!(
            "rtvla {} pid {} — {state}\n  board {}  model {} ({})  run {}\n  ticks {} at {} Hz, {} deadline misses, {} fallbacks, up {:.0} s\n  events {} written (last seq {}), {} bytes this run in {}{}\n",
            self.version,
            self.pid,
            self.board,
            self.model,
            &self.model_sha256.get(..12).unwrap_or(&self.model_sha256),
            self.run_id,
            self.ticks,
            self.rate_hz,
            self.deadline_misses,
            self.fallbacks,
            self.uptime_s,
            self.events_written,
            self.last_event_seq,
            self.store_bytes,
            self.store_dir.as_deref().unwrap_or("(not recording)"),
            self.last_store_error.as_ref().map_or(String::new(), |e| format!("\n  store error: {e}")),
        )
    }
}
