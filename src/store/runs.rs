//! Where a board without a fixed `store.path` (the host simulator) keeps its events: one store directory per run
//! under the user's state directory, `$XDG_STATE_HOME/rtvla/runs/<run id>/` (XDG base directory spec; default
//! `~/.local/state`), so two runs never mix and a run is found by its id. `runs/latest` points at the newest run,
//! and only the newest [`KEEP_RUNS`] runs are kept, so the host's disk use stays bounded as a car's flash does.
//!
//! Boards with flash keep one fixed store (a segment ring under a byte budget); their snapshots carry the run id.

use std::path::{Path, PathBuf};

use crate::error::bad_input;

/// Run directories kept under `runs/`; older ones are deleted when a new run starts.
pub const KEEP_RUNS: usize = 50;

/// `$XDG_STATE_HOME`, else `$HOME/.local/state` (a relative XDG value is ignored, as the spec says).
pub fn state_home() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).filter(|p| p.is_absolute());
    xdg.or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".local/state")))
}

/// `<state home>/rtvla/runs`.
pub fn runs_dir() -> anyhow::Result<PathBuf> {
    state_home().map(|s| s.join("rtvla").join("runs")).ok_or_else(|| {
        bad_input("no state directory for the event store: set XDG_STATE_HOME or HOME, or pass --store DIR")
    })
}

/// A run id that sorts by time and is unique across runs started in the same second:
/// `20261130T045012Z-3fa9` (UTC start time, 16 random bits).
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let stamp = super::export::format_utc(now.as_micros() as u64);
    // 2026-11-30T04:50:12.345Z -> 20261130T045012Z
    let compact: String = stamp[..19].chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
    format!("{compact}Z-{:04x}", rand::random::<u16>())
}

/// Create `<runs>/<run_id>`, point `<runs>/latest` at it and delete the oldest runs beyond [`KEEP_RUNS`].
pub fn new_run_store(runs: &Path, run_id: &str) -> anyhow::Result<PathBuf> {
    let dir = runs.join(run_id);
    std::fs::create_dir_all(&dir).map_err(|e| bad_input(format!("event store {}: {e}", dir.display())))?;
    let latest = runs.join("latest");
    let tmp = runs.join(format!(".latest-{run_id}"));
    let _ = std::fs::remove_file(&tmp);
    // Atomic switch: a new symlink renamed over the old one.
    if std::os::unix::fs::symlink(run_id, &tmp).and_then(|_| std::fs::rename(&tmp, &latest)).is_err() {
        tracing::debug!("could not update {}", latest.display());
    }
    prune(runs, KEEP_RUNS);
    Ok(dir)
}

/// Delete the oldest run directories (by name: ids sort by start time) so that at most `keep` remain.
fn prune(runs: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(runs) else { return };
    let mut ids: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.as_bytes().first().is_some_and(u8::is_ascii_digit))
        })
        .collect();
    ids.sort();
    let excess = ids.len().saturating_sub(keep);
    for old in &ids[..excess] {
        if let Err(e) = std::fs::remove_dir_all(old) {
            tracing::warn!("could not delete old run {}: {e}", old.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_by_time_and_differ() {
        let a = new_run_id();
        assert_eq!(a.len(), "20261130T045012Z-3fa9".len(), "{a}");
        assert!(a.as_bytes()[8] == b'T' && a.as_bytes()[15] == b'Z', "{a}");
        let ids: std::collections::HashSet<String> = (0..20).map(|_| new_run_id()).collect();
        assert!(ids.len() > 1, "random suffix");
    }

    #[test]
    fn each_run_gets_its_own_store_latest_follows_and_old_runs_go() {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("runs");
        for i in 0..5 {
            let dir = new_run_store(&runs, &format!("2026113{i}T000000Z-0000")).unwrap();
            assert!(dir.is_dir());
            assert_eq!(std::fs::canonicalize(runs.join("latest")).unwrap(), std::fs::canonicalize(&dir).unwrap());
        }
        prune(&runs, 3);
        let mut left: Vec<String> = std::fs::read_dir(&runs)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["20261132T000000Z-0000", "20261133T000000Z-0000", "20261134T000000Z-0000"]);
        assert!(runs.join("latest").exists(), "latest still points at the newest run");
    }
}
