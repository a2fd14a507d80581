//! CLI back-ends: `store ls`, `store verify`, `store export --mcap/--json` (MCAP in [`super::mcap_export`]).
//! Read-only: nothing here modifies a store.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

pub use super::mcap_export::{export_mcap, export_mcap_with_commentary, CommentaryOf, MCAP_MAGIC};
use super::segment::{self, Corruption};
use crate::events::snapshot::{Snapshot, TickTelemetry};

/// One line of `store ls`.
#[derive(Clone, Debug, Serialize)]
pub struct EventSummary {
    /// Event id from the snapshot.
    pub id: u64,
    /// Store sequence number.
    pub seq: u64,
    /// Wall time of the trigger, UTC, RFC 3339.
    pub time: String,
    /// Trigger kind (snake_case).
    pub trigger: String,
    /// Cause text.
    pub cause: String,
    /// Window duration, seconds.
    pub duration_s: f64,
    /// Encoded snapshot bytes.
    pub bytes: usize,
    /// Keyframes.
    pub keyframes: usize,
    /// Segment file holding it.
    pub segment: String,
    /// The run that wrote it (empty for records older than schema 3).
    pub run: String,
    /// Board profile name of that run.
    pub board: String,
    /// Simulator scenario (None on a real vehicle or an older record).
    pub scenario: Option<String>,
    /// Simulator seed.
    pub seed: Option<u64>,
    /// The student's sha256, first 12 hex digits (None: unknown, or the expert drove); the full hash is in the
    /// JSON export.
    pub model: Option<String>,
}

/// Result of `store verify`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Records whose frame and CRC are valid.
    pub records_ok: u64,
    /// Records that also decode as a snapshot.
    pub snapshots_ok: u64,
    /// Corrupt regions and undecodable snapshots (segment file + byte offset).
    pub corrupt: Vec<Corruption>,
    /// Torn tail: the incomplete final frame of the newest segment (expected after power loss; boot recovery
    /// truncates it). Not an error. A complete record with a bad checksum is never this.
    pub torn_tail: Option<Corruption>,
    /// Entries named like a segment that are not regular files (e.g. a directory `seg-000009.rtv`): skipped, so
    /// they never hide the real segments; reported so they can be removed. They hold no records, so they do not
    /// make the store corrupt.
    pub not_segments: Vec<String>,
}

impl VerifyReport {
    /// True when nothing is corrupt (a torn tail alone is fine).
    pub fn is_ok(&self) -> bool {
        self.corrupt.is_empty()
    }

    /// Human-readable summary, one finding per line.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} segments, {} records ok, {} snapshots ok, {} corrupt\n",
            self.segments,
            self.records_ok,
            self.snapshots_ok,
            self.corrupt.len()
        );
        for c in &self.corrupt {
            s += &format!("CORRUPT {} @ byte {} ({} bytes): {}\n", c.segment, c.offset, c.len, c.reason);
        }
        for n in &self.not_segments {
            s += &format!("SKIPPED {n}: named like a segment but not a regular file (no records read from it)\n");
        }
        if let Some(t) = &self.torn_tail {
            s += &format!(
                "torn tail {} @ byte {} ({} bytes): {} (recovery truncates it)\n",
                t.segment, t.offset, t.len, t.reason
            );
        }
        s
    }
}

/// A missing store directory is bad input (exit 2), not an I/O fault.
pub(crate) fn check_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        return Err(crate::error::bad_input(format!("store directory {} does not exist", dir.display())));
    }
    Ok(())
}

/// Visit every decodable snapshot (oldest first) with its record; undecodable or corrupt records go to `bad`.
pub fn for_each_snapshot(
    dir: &Path,
    mut f: impl FnMut(&segment::Record, Box<Snapshot>) -> anyhow::Result<()>,
    mut bad: impl FnMut(Corruption, bool),
) -> anyhow::Result<()> {
    check_dir(dir)?;
    let mut err = Ok(());
    let mut undecodable = Vec::new();
    let mut frames = Vec::new();
    segment::for_each_record(
        dir,
        |r| match Snapshot::decode(&r.payload) {
            Ok(s) => {
                if err.is_ok() {
                    err = f(&r, s);
                }
            }
            Err(_) => undecodable.push(Corruption {
                segment: r.segment.clone(),
                offset: r.offset,
                len: r.payload.len() as u64,
                reason: "record is not a valid snapshot",
                torn: false,
            }),
        },
        |c| frames.push(c),
    )?;
    for c in frames {
        let torn = c.torn;
        bad(c, torn);
    }
    for c in undecodable {
        bad(c, false);
    }
    err
}

/// Every event in the store, oldest first.
pub fn ls(dir: &Path) -> anyhow::Result<Vec<EventSummary>> {
    Ok(ls_with_skipped(dir)?.0)
}

/// Every event in the store, oldest first, and the corrupt records that were skipped to list them (a torn tail is
/// not among them: it was never committed), so `store ls` can say that the list is incomplete.
pub fn ls_with_skipped(dir: &Path) -> anyhow::Result<(Vec<EventSummary>, Vec<Corruption>)> {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for_each_snapshot(
        dir,
        |r, s| {
            out.push(EventSummary {
                id: s.event_id,
                seq: r.seq,
                time: format_utc(s.wall_time_us),
                trigger: s.trigger.name().to_string(),
                cause: s.cause.to_string(),
                duration_s: s.duration_s(),
                bytes: r.payload.len(),
                keyframes: s.keyframes.len(),
                segment: r.segment.clone(),
                run: s.run.run_id.to_string(),
                board: s.run.board.to_string(),
                scenario: s.run.scenario.as_ref().map(|x| x.to_string()),
                seed: s.run.seed,
                model: s.run.model_sha256_hex().map(|h| h[..12].to_string()),
            });
            Ok(())
        },
        |c, torn| {
            if !torn {
                skipped.push(c)
            }
        },
    )?;
    Ok((out, skipped))
}

/// Highest event id ever given out in the store, so a new run can continue the numbering with
/// `EventRecorder::set_next_event_id(id + 1)` and an id never names two events: the larger of the persisted
/// high-water mark ([`super::hwm`], which survives corruption and truncation) and the ids readable in the newest
/// segment that holds a snapshot (stores written before the mark existed). `None` for an empty or missing store.
pub fn last_event_id(dir: &Path) -> Option<u64> {
    let from_hwm = super::hwm::read(dir).next_event_id.checked_sub(1).filter(|&i| i > 0);
    from_hwm.max(last_readable_event_id(dir))
}

/// Highest decodable event id in the newest segment that holds one (ids only grow, so older segments hold less).
fn last_readable_event_id(dir: &Path) -> Option<u64> {
    let segs = segment::list_segments(dir).ok()?;
    for (_, path) in segs.iter().rev() {
        let buf = segment::read_segment(path).ok()?;
        let scan = segment::scan_segment(&buf);
        let best = scan
            .records
            .iter()
            .filter_map(|r| Snapshot::decode(&buf[r.payload_range()]).ok())
            .map(|s| s.event_id)
            .max();
        if best.is_some() {
            return best;
        }
    }
    None
}

/// Print `ls` output as a table: one line per event, with the run that wrote it (id, board, scenario/seed, model)
/// so the runs of a shared, cumulative store can be told apart.
pub fn print_table(events: &[EventSummary], w: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        w,
        "{:>6} {:>6}  {:<24} {:<13} {:>7} {:>7} {:>3}  {:<21} {:<16} {:<24} {:<12}  cause",
        "id", "seq", "time (UTC)", "trigger", "dur s", "bytes", "kf", "run", "board", "scenario/seed", "model"
    )?;
    for e in events {
        let sim = match (&e.scenario, e.seed) {
            (Some(s), Some(seed)) => format!("{s}/{seed}"),
            (Some(s), None) => s.clone(),
            _ => "-".into(),
        };
        let dash = |x: &str| if x.is_empty() { "-".to_string() } else { x.to_string() };
        writeln!(
            w,
            "{:>6} {:>6}  {:<24} {:<13} {:>7.2} {:>7} {:>3}  {:<21} {:<16} {:<24} {:<12}  {}",
            e.id,
            e.seq,
            e.time,
            e.trigger,
            e.duration_s,
            e.bytes,
            e.keyframes,
            dash(&e.run),
            dash(&e.board),
            sim,
            e.model.as_deref().unwrap_or("-"),
            e.cause
        )?;
    }
    writeln!(w, "{} events, {} bytes", events.len(), events.iter().map(|e| e.bytes).sum::<usize>())
}

/// Check every record of every segment. `Ok(report)` even when corrupt: the caller exits 1 when `!report.is_ok()`.
pub fn verify(dir: &Path) -> anyhow::Result<VerifyReport> {
    check_dir(dir)?;
    let mut rep = VerifyReport {
        segments: segment::list_segments(dir)?.len(),
        not_segments: segment::non_segment_entries(dir)?,
        ..Default::default()
    };
    let mut records = 0u64;
    let mut snaps = 0u64;
    let mut corrupt = Vec::new();
    let mut torn = None;
    for_each_snapshot(
        dir,
        |_, _| {
            snaps += 1;
            Ok(())
        },
        |c, tail| {
            if tail {
                torn = Some(c)
            } else {
                corrupt.push(c)
            }
        },
    )?;
    segment::for_each_record(dir, |_| records += 1, |_| {})?;
    rep.records_ok = records;
    rep.snapshots_ok = snaps;
    rep.corrupt = corrupt;
    rep.torn_tail = torn;
    Ok(rep)
}

/// Days-from-civil (Howard Hinnant), for a dependency-free UTC timestamp.
pub fn format_utc(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let ms = (us / 1000) % 1000;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// Standard base64 (RFC 4648, padded).
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

fn telemetry_json(event_id: u64, t: &TickTelemetry) -> serde_json::Value {
    serde_json::json!({
        "event_id": event_id,
        "time_us": t.time_us,
        "tick": t.tick,
        "speed": t.speed,
        "target_points": t.target_points,
        "path": t.path,
        "speed_wps": t.speed_wps,
        "steer": t.command.steer,
        "throttle": t.command.throttle,
        "brake": t.command.brake,
        "tick_ms": t.tick_ms,
        "infer_ms": t.infer_ms,
        "ttc_s": if t.ttc_s.is_finite() { serde_json::json!(t.ttc_s) } else { serde_json::Value::Null },
        "flags": t.flags,
    })
}

/// Whole snapshot as JSON: telemetry, keyframe features as f32, thumbnails as base64 JPEG.
pub fn snapshot_json(seq: u64, s: &Snapshot) -> serde_json::Value {
    let ticks = |v: &[TickTelemetry]| v.iter().map(|t| telemetry_json(s.event_id, t)).collect::<Vec<_>>();
    serde_json::json!({
        "schema_version": s.schema_version,
        "model_id": s.model_id_hex(),
        "run": {
            "run_id": s.run.run_id.as_str(),
            "board": s.run.board.as_str(),
            "policy": s.run.policy.as_str(),
            "model_sha256": s.run.model_sha256_hex(),
            "scenario": s.run.scenario.as_ref().map(|x| x.as_str()),
            "seed": s.run.seed,
        },
        "id": s.event_id,
        "seq": seq,
        "trigger": s.trigger.name(),
        "cause": s.cause.as_str(),
        "time": format_utc(s.wall_time_us),
        "wall_time_us": s.wall_time_us,
        "mono_time_us": s.mono_time_us,
        "trigger_tick": s.trigger_tick,
        "duration_s": s.duration_s(),
        "pre": ticks(&s.pre),
        "post": ticks(&s.post),
        "keyframes": s.keyframes.iter().map(|k| serde_json::json!({
            "tick": k.tick,
            "time_us": k.time_us,
            "shape": k.shape,
            "features": k.features_f32().collect::<Vec<f32>>(),
            "thumb_w": k.thumb_w,
            "thumb_h": k.thumb_h,
            "jpeg_base64": base64(&k.jpeg),
        })).collect::<Vec<_>>(),
    })
}

/// Write every event as one JSON array to `out`. Returns the number of events.
pub fn export_json(dir: &Path, out: &Path) -> anyhow::Result<usize> {
    let mut w = BufWriter::new(File::create(out)?);
    let mut n = 0usize;
    w.write_all(b"[\n")?;
    for_each_snapshot(
        dir,
        |r, s| {
            if n > 0 {
                w.write_all(b",\n")?;
            }
            serde_json::to_writer(&mut w, &snapshot_json(r.seq, &s))?;
            n += 1;
            Ok(())
        },
        |_, _| {},
    )?;
    w.write_all(b"\n]\n")?;
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_and_base64() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_709_210_096_789_000), "2024-02-29T12:34:56.789Z");
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
