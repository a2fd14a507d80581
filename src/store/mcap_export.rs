//! MCAP export of a store (<https://mcap.dev/spec>), written by Foxglove's own `mcap` crate: chunked, lz4-compressed,
//! with message indexes and a summary section (statistics, chunk indexes), so Foxglove opens a long export at once
//! and seeks in it, and any reader can check the counts without scanning the file.
//!
//! Channels carry JSON messages with `jsonschema` schemas: `/telemetry` (`rtvla.TickTelemetry`, one per tick,
//! numbers as numbers for the Plot panel), `/events` (`rtvla.Event`, one per event at its trigger tick),
//! `/thumbnail` (`foxglove.CompressedImage`, JPEG) and, from `rtvla explain --mcap`, `/commentary` (`foxglove.Log`).
//! lz4 rather than zstd: the `lz4` crate builds from bundled C with gcc alone (zstd-sys pulls in pkg-config).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context;
use mcap::records::MessageHeader;
use serde::Serialize;

use super::export::{base64, check_dir, for_each_snapshot, format_utc};
use crate::events::snapshot::{
    Keyframe, Snapshot, TickTelemetry, FLAG_DEADLINE_MISS, FLAG_EXTERNAL, FLAG_FALLBACK, FLAG_NAN, FLAG_STALE_FRAME,
};
use crate::types::Point;

/// MCAP magic (the first and last 8 bytes of every MCAP file).
pub const MCAP_MAGIC: &[u8; 8] = b"\x89MCAP0\r\n";

/// Target uncompressed chunk size: a few events per chunk, so a viewer decompresses little to show one moment.
const CHUNK_BYTES: u64 = 256 * 1024;

/// Commentary lines of one stored event, `(keyframe tick, text)`, looked up by store sequence number.
pub type CommentaryOf<'a> = &'a dyn Fn(u64) -> Vec<(u64, String)>;

/// Export every event to one MCAP file: `/telemetry` (one JSON message per tick; ticks shared by overlapping events
/// written once), `/events` (one per event, at the trigger tick) and `/thumbnail` (`foxglove.CompressedImage`, JPEG,
/// base64 in JSON). Log times are the ticks' monotonic times in ns (shifted forward for a later run whose clock
/// restarted). Returns the number of messages written.
pub fn export_mcap(dir: &Path, out: &Path) -> anyhow::Result<u64> {
    export_mcap_with_commentary(dir, out, None)
}

/// [`export_mcap`], plus (when given) a `/commentary` channel (`foxglove.Log`, shown in Foxglove's Log panel): the
/// language branch's sentence at each explained keyframe (`rtvla explain --mcap`).
pub fn export_mcap_with_commentary(dir: &Path, out: &Path, commentary: Option<CommentaryOf>) -> anyhow::Result<u64> {
    // A missing store is bad input: say so before creating the output file.
    check_dir(dir)?;
    let mut m = McapOut::create(out, commentary.is_some())?;
    let mut clock = LogClock::default();
    for_each_snapshot(
        dir,
        |r, s| {
            let lines = commentary.map(|c| c(r.seq)).unwrap_or_default();
            m.event(r.seq, &s, &lines, &mut clock)
        },
        |_, _| {},
    )?;
    m.finish()
}

/// The channels, in registration order (the index into [`McapOut::channels`]).
#[derive(Clone, Copy, Debug)]
enum Topic {
    Telemetry,
    Events,
    Thumbnail,
    Commentary,
}

/// The `mcap` writer plus per-channel ids, sequence numbers and last log times.
struct McapOut {
    w: mcap::Writer<BufWriter<File>>,
    channels: Vec<u16>,
    seq: [u32; 4],
    last_ns: [u64; 4],
    messages: u64,
}

impl McapOut {
    /// Create `out` and register the schemas and channels (the commentary channel only when there is commentary).
    fn create(out: &Path, commentary: bool) -> anyhow::Result<Self> {
        // An output path that cannot be created (missing directory, no permission) is a bad argument: exit 2.
        let file =
            File::create(out).map_err(|e| crate::error::bad_input(format!("cannot create {}: {e}", out.display())))?;
        let opts = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Lz4))
            .chunk_size(Some(CHUNK_BYTES))
            .library(concat!("rtvla ", env!("CARGO_PKG_VERSION"), " (mcap crate)"));
        let mut w = opts.create(BufWriter::new(file))?;
        let mut channels = vec![
            channel(&mut w, "/telemetry", "rtvla.TickTelemetry", &telemetry_schema())?,
            channel(&mut w, "/events", "rtvla.Event", EVENT_SCHEMA)?,
            channel(&mut w, "/thumbnail", "foxglove.CompressedImage", IMAGE_SCHEMA)?,
        ];
        if commentary {
            channels.push(channel(&mut w, "/commentary", "foxglove.Log", LOG_SCHEMA)?);
        }
        Ok(McapOut { w, channels, seq: [0; 4], last_ns: [0; 4], messages: 0 })
    }

    /// One JSON message on `topic` at `ns` (log and publish time). A message earlier than the channel's last one
    /// (a keyframe or commentary line inside a window that overlaps the previous event's) is logged at that last
    /// time, so each channel stays in order for readers that stream the file instead of using its index; the
    /// message's own `timestamp` keeps the true time.
    fn write(&mut self, topic: Topic, ns: u64, msg: &impl Serialize) -> anyhow::Result<()> {
        let i = topic as usize;
        let channel_id = *self.channels.get(i).with_context(|| format!("no MCAP channel for {topic:?}"))?;
        let ns = ns.max(self.last_ns[i]);
        self.last_ns[i] = ns;
        let header = MessageHeader { channel_id, sequence: self.seq[i], log_time: ns, publish_time: ns };
        self.w.write_to_known_channel(&header, &serde_json::to_vec(msg)?)?;
        self.seq[i] = self.seq[i].wrapping_add(1);
        self.messages += 1;
        Ok(())
    }

    /// One snapshot, in time order: each tick's telemetry, the event marker at the trigger tick, and each thumbnail
    /// and commentary line at its keyframe. Whatever lies past the last tick is written at the end, so every stored
    /// event, thumbnail and line is in the file.
    fn event(&mut self, seq: u64, s: &Snapshot, lines: &[(u64, String)], clock: &mut LogClock) -> anyhow::Result<()> {
        clock.start_event(s);
        let mut kfs = s.keyframes.iter().filter(|k| !k.jpeg.is_empty()).peekable();
        let mut lines = lines.iter().peekable();
        let mut event_written = false;
        for t in s.pre.iter().chain(s.post.iter()) {
            let ns = clock.ns(t.time_us);
            if !event_written && t.tick >= s.trigger_tick {
                self.write(Topic::Events, ns, &event_msg(seq, s))?;
                event_written = true;
            }
            if clock.is_new_tick(ns) {
                self.write(Topic::Telemetry, ns, &TelemetryMsg::new(s.event_id, t))?;
            }
            while let Some(k) = kfs.next_if(|k| k.tick <= t.tick) {
                let kns = clock.ns(k.time_us);
                self.write(Topic::Thumbnail, kns, &thumbnail_msg(k, kns))?;
            }
            while let Some((_, text)) = lines.next_if(|(tick, _)| *tick <= t.tick) {
                self.write(Topic::Commentary, ns, &log_msg(s.event_id, text, ns))?;
            }
        }
        let end_ns = clock.end_ns();
        if !event_written {
            self.write(Topic::Events, clock.ns(s.mono_time_us).max(end_ns), &event_msg(seq, s))?;
        }
        for k in kfs {
            let ns = clock.ns(k.time_us);
            self.write(Topic::Thumbnail, ns, &thumbnail_msg(k, ns))?;
        }
        for (_, text) in lines {
            self.write(Topic::Commentary, end_ns, &log_msg(s.event_id, text, end_ns))?;
        }
        Ok(())
    }

    /// Close the last chunk, write the summary section and footer, flush. Returns the message count.
    fn finish(mut self) -> anyhow::Result<u64> {
        self.w.finish()?;
        self.w.into_inner().flush()?;
        Ok(self.messages)
    }
}

/// Register a JSON channel with its `jsonschema` schema; returns the channel id.
fn channel(w: &mut mcap::Writer<BufWriter<File>>, topic: &str, name: &str, schema: &str) -> anyhow::Result<u16> {
    let schema_id = w.add_schema(name, "jsonschema", schema.as_bytes())?;
    Ok(w.add_channel(schema_id, topic, "json", &BTreeMap::new())?)
}

/// Maps a snapshot's monotonic µs to MCAP log time (ns). A store can hold several runs whose clocks restart. In one
/// run an event triggers only after the previous one's window ended (the recorder collects one at a time), so a
/// trigger at or before the previous event's end means a new clock: that event is shifted to follow, and every
/// channel stays in time order. Ticks already written by an overlapping pre-window are not repeated.
#[derive(Debug, Default)]
struct LogClock {
    offset_ns: u64,
    last_event_end_ns: u64,
    last_tick_ns: Option<u64>,
}

impl LogClock {
    /// Shift the clock for `s` if its run's clock restarted; remember where its window ends.
    fn start_event(&mut self, s: &Snapshot) {
        let first_us = s.pre.first().map_or(s.mono_time_us, |t| t.time_us.min(s.mono_time_us));
        if self.last_event_end_ns > 0 && self.ns(s.mono_time_us) <= self.last_event_end_ns {
            self.offset_ns = self.last_event_end_ns.saturating_add(1_000_000_000) - first_us.saturating_mul(1000);
        }
        self.last_event_end_ns = self.ns(s.post.last().or(s.pre.last()).map_or(s.mono_time_us, |t| t.time_us));
    }

    /// Log time of a monotonic time of the current event's run.
    fn ns(&self, mono_us: u64) -> u64 {
        mono_us.saturating_mul(1000).saturating_add(self.offset_ns)
    }

    /// Log time of the current event's last tick.
    fn end_ns(&self) -> u64 {
        self.last_event_end_ns
    }

    /// True (and remembered) when a tick at `ns` is later than every tick written so far.
    fn is_new_tick(&mut self, ns: u64) -> bool {
        let new = self.last_tick_ns.is_none_or(|last| ns > last);
        if new {
            self.last_tick_ns = Some(ns);
        }
        new
    }
}

/// A float as JSON: non-finite values (TTC is infinite when nothing is ahead) become `null`, never invalid JSON.
fn num(x: f32) -> Option<f32> {
    x.is_finite().then_some(x)
}

/// A point as `{x, y}` (ego frame, metres), so a plot path reads `.path[0].x`.
#[derive(Serialize)]
struct Xy {
    x: Option<f32>,
    y: Option<f32>,
}

fn xy(points: &[Point]) -> Vec<Xy> {
    points.iter().map(|p| Xy { x: num(p[0]), y: num(p[1]) }).collect()
}

/// One tick on `/telemetry`: every scalar at the top level so Foxglove's Plot panel takes `/telemetry.speed` etc.
#[derive(Serialize)]
struct TelemetryMsg {
    event_id: u64,
    tick: u64,
    time_us: u64,
    speed: Option<f32>,
    steer: Option<f32>,
    throttle: Option<f32>,
    brake: Option<f32>,
    ttc_s: Option<f32>,
    tick_ms: Option<f32>,
    infer_ms: Option<f32>,
    flags: u16,
    fallback: bool,
    deadline_miss: bool,
    external: bool,
    stale_frame: bool,
    nan: bool,
    target_points: Vec<Xy>,
    path: Vec<Xy>,
    speed_wps: Vec<Xy>,
}

impl TelemetryMsg {
    fn new(event_id: u64, t: &TickTelemetry) -> Self {
        TelemetryMsg {
            event_id,
            tick: t.tick,
            time_us: t.time_us,
            speed: num(t.speed),
            steer: num(t.command.steer),
            throttle: num(t.command.throttle),
            brake: num(t.command.brake),
            ttc_s: num(t.ttc_s),
            tick_ms: num(t.tick_ms),
            infer_ms: num(t.infer_ms),
            flags: t.flags,
            fallback: t.flags & FLAG_FALLBACK != 0,
            deadline_miss: t.flags & FLAG_DEADLINE_MISS != 0,
            external: t.flags & FLAG_EXTERNAL != 0,
            stale_frame: t.flags & FLAG_STALE_FRAME != 0,
            nan: t.flags & FLAG_NAN != 0,
            target_points: xy(&t.target_points),
            path: xy(&t.path),
            speed_wps: xy(&t.speed_wps),
        }
    }
}

/// The JSON schema of [`TelemetryMsg`] (floats may be null: non-finite).
fn telemetry_schema() -> String {
    let number = serde_json::json!({"type": ["number", "null"]});
    let points =
        serde_json::json!({"type": "array", "items": {"type": "object", "properties": {"x": number, "y": number}}});
    let mut props = serde_json::Map::new();
    for k in ["event_id", "tick", "time_us", "flags"] {
        props.insert(k.into(), serde_json::json!({"type": "integer", "minimum": 0}));
    }
    for k in ["speed", "steer", "throttle", "brake", "ttc_s", "tick_ms", "infer_ms"] {
        props.insert(k.into(), number.clone());
    }
    for k in ["fallback", "deadline_miss", "external", "stale_frame", "nan"] {
        props.insert(k.into(), serde_json::json!({"type": "boolean"}));
    }
    for k in ["target_points", "path", "speed_wps"] {
        props.insert(k.into(), points.clone());
    }
    serde_json::json!({"type": "object", "title": "rtvla.TickTelemetry", "properties": props}).to_string()
}

/// A log time as Foxglove's `time` (`{sec, nsec}`).
fn stamp(ns: u64) -> serde_json::Value {
    serde_json::json!({"sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000})
}

fn event_msg(seq: u64, s: &Snapshot) -> serde_json::Value {
    serde_json::json!({
        "id": s.event_id, "seq": seq, "trigger": s.trigger.name(), "cause": s.cause.as_str(),
        "time": format_utc(s.wall_time_us), "duration_s": s.duration_s(),
    })
}

fn thumbnail_msg(k: &Keyframe, ns: u64) -> serde_json::Value {
    serde_json::json!({"timestamp": stamp(ns), "frame_id": "camera_front", "data": base64(&k.jpeg), "format": "jpeg"})
}

fn log_msg(event_id: u64, text: &str, ns: u64) -> serde_json::Value {
    serde_json::json!({
        "timestamp": stamp(ns), "level": 2, "message": text, "name": format!("event {event_id}"), "file": "", "line": 0,
    })
}

const EVENT_SCHEMA: &str = r#"{"type":"object","title":"rtvla.Event","properties":{"id":{"type":"integer"},"seq":{"type":"integer"},"trigger":{"type":"string"},"cause":{"type":"string"},"time":{"type":"string"},"duration_s":{"type":"number"}}}"#;
/// Foxglove's well-known `foxglove.CompressedImage` (JSON form: `data` is base64).
const IMAGE_SCHEMA: &str = r#"{"type":"object","title":"foxglove.CompressedImage","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}},"frame_id":{"type":"string"},"data":{"type":"string","contentEncoding":"base64"},"format":{"type":"string"}}}"#;
/// Foxglove's well-known `foxglove.Log` (level 2 = INFO).
const LOG_SCHEMA: &str = r#"{"type":"object","title":"foxglove.Log","properties":{"timestamp":{"type":"object","title":"time","properties":{"sec":{"type":"integer","minimum":0},"nsec":{"type":"integer","minimum":0,"maximum":999999999}}},"level":{"type":"integer"},"message":{"type":"string"},"name":{"type":"string"},"file":{"type":"string"},"line":{"type":"integer","minimum":0}}}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_telemetry_is_null_and_valid_json() {
        let mut t = TickTelemetry { speed: f32::NAN, flags: FLAG_FALLBACK | FLAG_NAN, ..Default::default() };
        t.path[0] = [f32::NEG_INFINITY, 1.5];
        let text = serde_json::to_string(&TelemetryMsg::new(7, &t)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(v["speed"].is_null() && v["ttc_s"].is_null(), "{text}");
        assert_eq!((v["path"][0]["x"].is_null(), v["path"][0]["y"].as_f64()), (true, Some(1.5)));
        assert_eq!(
            (v["fallback"].as_bool(), v["nan"].as_bool(), v["external"].as_bool()),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(v["brake"].as_f64(), Some(0.0));
        // Every field the message has is in the schema.
        let schema: serde_json::Value = serde_json::from_str(&telemetry_schema()).unwrap();
        for k in v.as_object().unwrap().keys() {
            assert!(schema["properties"].get(k).is_some(), "{k} not in the schema");
        }
    }

    #[test]
    fn a_restarted_clock_is_shifted_past_the_previous_event() {
        let mut s = Snapshot::new_boxed();
        s.mono_time_us = 5_000_000;
        s.pre.push(TickTelemetry { time_us: 4_000_000, ..Default::default() }).unwrap();
        s.post.push(TickTelemetry { time_us: 6_000_000, ..Default::default() }).unwrap();
        let mut c = LogClock::default();
        c.start_event(&s);
        assert_eq!((c.ns(4_000_000), c.end_ns()), (4_000_000_000, 6_000_000_000));
        assert!(c.is_new_tick(c.ns(6_000_000)) && !c.is_new_tick(c.ns(5_000_000)));
        c.start_event(&s); // same times again: a new run
        assert_eq!(c.ns(4_000_000), 7_000_000_000);
        assert!(c.is_new_tick(c.ns(4_000_000)));
    }
}
