//! CLI back-ends: `store ls`, `store verify`, `store export --mcap/--json`. Read-only: nothing here modifies a store.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;

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
    /// Torn tail of the last segment (expected after power loss; boot recovery truncates it). Not an error.
    pub torn_tail: Option<Corruption>,
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
        if let Some(t) = &self.torn_tail {
            s += &format!(
                "torn tail {} @ byte {} ({} bytes): {} (recovery truncates it)\n",
                t.segment, t.offset, t.len, t.reason
            );
        }
        s
    }
}

fn check_dir(dir: &Path) -> anyhow::Result<()> {
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
    let segs = segment::list_segments(dir)?;
    let last_name = segs.last().map(|(n, _)| segment::segment_name(*n));
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
            }),
        },
        |c| frames.push(c),
    )?;
    for c in frames {
        // A bad tail of the last segment is a torn write, not corruption.
        let tail = Some(&c.segment) == last_name.as_ref() && c.reason != "bad segment header" && is_tail(dir, &c);
        bad(c, tail);
    }
    for c in undecodable {
        bad(c, false);
    }
    err
}

fn is_tail(dir: &Path, c: &Corruption) -> bool {
    std::fs::metadata(dir.join(&c.segment)).is_ok_and(|m| c.offset + c.len == m.len())
}

/// Every event in the store, oldest first.
pub fn ls(dir: &Path) -> anyhow::Result<Vec<EventSummary>> {
    let mut out = Vec::new();
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
        |_, _| {},
    )?;
    Ok(out)
}

/// Highest event id in the store (reads only the newest segment that holds a snapshot), so a new run can continue
/// the numbering with `EventRecorder::set_next_event_id(id + 1)`. `None` for an empty or missing store.
pub fn last_event_id(dir: &Path) -> Option<u64> {
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
    let mut rep = VerifyReport { segments: segment::list_segments(dir)?.len(), ..Default::default() };
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

// ---- MCAP (https://mcap.dev/spec), written by hand: unindexed, uncompressed, readable by Foxglove -------------

/// MCAP magic.
pub const MCAP_MAGIC: &[u8; 8] = b"\x89MCAP0\r\n";

struct McapWriter<W: Write> {
    w: W,
    seq: u32,
}

impl<W: Write> McapWriter<W> {
    fn record(&mut self, op: u8, body: &[u8]) -> std::io::Result<()> {
        self.w.write_all(&[op])?;
        self.w.write_all(&(body.len() as u64).to_le_bytes())?;
        self.w.write_all(body)
    }
    fn schema(&mut self, id: u16, name: &str, data: &str) -> std::io::Result<()> {
        let mut b = id.to_le_bytes().to_vec();
        put_str(&mut b, name);
        put_str(&mut b, "jsonschema");
        put_str(&mut b, data);
        self.record(0x03, &b)
    }
    fn channel(&mut self, id: u16, schema: u16, topic: &str) -> std::io::Result<()> {
        let mut b = id.to_le_bytes().to_vec();
        b.extend_from_slice(&schema.to_le_bytes());
        put_str(&mut b, topic);
        put_str(&mut b, "json");
        b.extend_from_slice(&0u32.to_le_bytes()); // empty metadata map
        self.record(0x04, &b)
    }
    fn message(&mut self, channel: u16, log_time_ns: u64, data: &[u8]) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(22 + data.len());
        b.extend_from_slice(&channel.to_le_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&log_time_ns.to_le_bytes());
        b.extend_from_slice(&log_time_ns.to_le_bytes());
        b.extend_from_slice(data);
        self.seq = self.seq.wrapping_add(1);
        self.record(0x05, &b)
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

const TELEMETRY_SCHEMA: &str = r#"{"type":"object","title":"rtvla.TickTelemetry","properties":{"event_id":{"type":"integer"},"time_us":{"type":"integer"},"tick":{"type":"integer"},"speed":{"type":"number"},"target_points":{"type":"array","items":{"type":"array","items":{"type":"number"}}},"path":{"type":"array","items":{"type":"array","items":{"type":"number"}}},"speed_wps":{"type":"array","items":{"type":"array","items":{"type":"number"}}},"steer":{"type":"number"},"throttle":{"type":"number"},"brake":{"type":"number"},"tick_ms":{"type":"number"},"infer_ms":{"type":"number"},"ttc_s":{"type":["number","null"]},"flags":{"type":"integer"}}}"#;
const EVENT_SCHEMA: &str = r#"{"type":"object","title":"rtvla.Event","properties":{"id":{"type":"integer"},"seq":{"type":"integer"},"trigger":{"type":"string"},"cause":{"type":"string"},"time":{"type":"string"},"duration_s":{"type":"number"}}}"#;
const IMAGE_SCHEMA: &str = r#"{"type":"object","title":"foxglove.CompressedImage","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}},"frame_id":{"type":"string"},"data":{"type":"string","contentEncoding":"base64"},"format":{"type":"string"}}}"#;

/// Export every event to one MCAP file: `/telemetry` (one JSON message per tick; ticks shared by overlapping events
/// written once), `/events` (one per event, at the trigger tick) and `/thumbnail` (`foxglove.CompressedImage`, JPEG,
/// base64 in JSON). Log times are the ticks' monotonic times in ns (shifted forward for a later run whose clock restarted). Returns the number
/// of messages written.
pub fn export_mcap(dir: &Path, out: &Path) -> anyhow::Result<u64> {
    export_mcap_with_commentary(dir, out, None)
}

/// Commentary lines of one stored event, `(keyframe tick, text)`, looked up by store sequence number.
pub type CommentaryOf<'a> = &'a dyn Fn(u64) -> Vec<(u64, String)>;

const LOG_SCHEMA: &str = r#"{"type":"object","title":"foxglove.Log","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}},"level":{"type":"integer"},"message":{"type":"string"},"name":{"type":"string"},"file":{"type":"string"},"line":{"type":"integer","minimum":0}}}"#;

/// [`export_mcap`], plus (when given) a `/commentary` channel (`foxglove.Log`, shown in Foxglove's Log panel): the
/// language branch's sentence at each explained keyframe (`rtvla explain --mcap`).
pub fn export_mcap_with_commentary(dir: &Path, out: &Path, commentary: Option<CommentaryOf>) -> anyhow::Result<u64> {
    let mut m = McapWriter { w: BufWriter::new(File::create(out)?), seq: 0 };
    m.w.write_all(MCAP_MAGIC)?;
    let mut h = Vec::new();
    put_str(&mut h, "");
    put_str(&mut h, "rtvla store export");
    m.record(0x01, &h)?;
    m.schema(1, "rtvla.TickTelemetry", TELEMETRY_SCHEMA)?;
    m.schema(2, "rtvla.Event", EVENT_SCHEMA)?;
    m.schema(3, "foxglove.CompressedImage", IMAGE_SCHEMA)?;
    m.channel(1, 1, "/telemetry")?;
    m.channel(2, 2, "/events")?;
    m.channel(3, 3, "/thumbnail")?;
    if commentary.is_some() {
        m.schema(4, "foxglove.Log", LOG_SCHEMA)?;
        m.channel(4, 4, "/commentary")?;
    }
    let mut n = 0u64;
    let mut last_telemetry_ns = 0u64;
    let (mut offset_ns, mut last_event_ns) = (0u64, 0u64);
    for_each_snapshot(
        dir,
        |r, s| {
            let ev = serde_json::json!({
                "id": s.event_id, "seq": r.seq, "trigger": s.trigger.name(), "cause": s.cause.as_str(),
                "time": format_utc(s.wall_time_us), "duration_s": s.duration_s(),
            });
            // Log time = the tick's monotonic time (ns). A store can hold several runs whose clocks restart. In one run
            // an event triggers only after the previous one's window ended (the recorder collects one at a time), so
            // a trigger at or before the previous event's end means a new clock: that event is shifted to follow,
            // and every channel stays in time order. Ticks already written by an overlapping pre-window are not
            // repeated.
            let first_us = s.pre.first().map_or(s.mono_time_us, |t| t.time_us.min(s.mono_time_us));
            if last_event_ns > 0 && s.mono_time_us.saturating_mul(1000).saturating_add(offset_ns) <= last_event_ns {
                offset_ns = last_event_ns.saturating_add(1_000_000_000) - first_us.saturating_mul(1000);
            }
            let to_ns = |mono_us: u64| mono_us.saturating_mul(1000).saturating_add(offset_ns);
            last_event_ns = to_ns(s.post.last().map_or(s.mono_time_us, |t| t.time_us));
            let mut kfs = s.keyframes.iter().filter(|k| !k.jpeg.is_empty()).peekable();
            let lines = commentary.map(|c| c(r.seq)).unwrap_or_default();
            let mut lines = lines.iter().peekable();
            let mut event_written = false;
            for t in s.pre.iter().chain(s.post.iter()) {
                let ns = to_ns(t.time_us);
                if !event_written && t.tick >= s.trigger_tick {
                    m.message(2, ns, &serde_json::to_vec(&ev)?)?;
                    event_written = true;
                    n += 1;
                }
                if ns > last_telemetry_ns || last_telemetry_ns == 0 {
                    m.message(1, ns, &serde_json::to_vec(&telemetry_json(s.event_id, t))?)?;
                    last_telemetry_ns = ns;
                    n += 1;
                }
                while let Some(k) = kfs.next_if(|k| k.tick <= t.tick) {
                    let kns = to_ns(k.time_us);
                    let img = serde_json::json!({
                        "timestamp": {"sec": kns / 1_000_000_000, "nsec": kns % 1_000_000_000},
                        "frame_id": "camera_front",
                        "data": base64(&k.jpeg),
                        "format": "jpeg",
                    });
                    m.message(3, kns, &serde_json::to_vec(&img)?)?;
                    n += 1;
                }
                while let Some((_, text)) = lines.next_if(|(tick, _)| *tick <= t.tick) {
                    let log = serde_json::json!({
                        "timestamp": {"sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000},
                        "level": 2, "message": text, "name": format!("event {}", s.event_id), "file": "", "line": 0,
                    });
                    m.message(4, ns, &serde_json::to_vec(&log)?)?;
                    n += 1;
                }
            }
            Ok(())
        },
        |_, _| {},
    )?;
    m.record(0x0F, &0u32.to_le_bytes())?; // DataEnd, CRC not computed
    let mut footer = Vec::new();
    footer.extend_from_slice(&0u64.to_le_bytes()); // no summary section
    footer.extend_from_slice(&0u64.to_le_bytes());
    footer.extend_from_slice(&0u32.to_le_bytes());
    m.record(0x02, &footer)?;
    m.w.write_all(MCAP_MAGIC)?;
    m.w.flush()?;
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
