//! MCAP export read back with Foxglove's `mcap` crate: the summary section (statistics, chunk indexes, schemas) and
//! every message agree with what the store holds — across two runs whose clocks restart, overlapping windows,
//! keyframes without a thumbnail and non-finite telemetry.

mod store_common;
use store_common as common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use rtvla::events::snapshot::{Keyframe, Snapshot, TickTelemetry, TriggerKind, FLAG_FALLBACK};
use rtvla::store::export::export_mcap_with_commentary;
use rtvla::store::segment::StoreConfig;
use rtvla::store::{export_mcap, SegmentStore};

const TICK_US: u64 = 50_000;

/// One event of `run`: 40 ticks before the trigger at `trigger_s` (the last is the trigger tick), 20 after, and
/// `kfs` keyframes (the second one without a thumbnail).
fn snapshot(id: u64, trigger_s: u64, kfs: usize) -> Box<Snapshot> {
    let mut s = Snapshot::new_boxed();
    s.event_id = id;
    s.trigger = TriggerKind::HardBrake;
    s.cause.push_str("brake 1.00 at 8.0 m/s").unwrap();
    s.wall_time_us = 1_764_000_000_000_000 + trigger_s * 1_000_000;
    s.mono_time_us = trigger_s * 1_000_000;
    s.trigger_tick = s.mono_time_us / TICK_US;
    for i in 0..60u64 {
        let tick = s.trigger_tick + i - 39;
        let mut t = TickTelemetry { time_us: tick * TICK_US, tick, speed: 8.0, ..Default::default() };
        t.command.brake = if i >= 39 { 1.0 } else { 0.0 };
        if i == 10 {
            (t.speed, t.flags) = (f32::NAN, FLAG_FALLBACK);
        }
        if i < 40 {
            s.pre.push(t).unwrap()
        } else {
            s.post.push(t).unwrap()
        }
    }
    for k in 0..kfs as u64 {
        let tick = s.trigger_tick - 20 + 10 * k;
        let mut kf = Keyframe {
            tick,
            time_us: tick * TICK_US,
            shape: [0, 0],
            features: heapless::Vec::new(),
            thumb_w: 96,
            thumb_h: 48,
            jpeg: heapless::Vec::new(),
        };
        if k != 1 {
            kf.jpeg.extend_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0, k as u8, 0xFF, 0xD9]).unwrap();
        }
        s.keyframes.push(kf).unwrap();
    }
    s
}

/// What the store holds, counted independently of the exporter.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    events: u64,
    thumbnails: u64,
    /// Distinct (run, tick) pairs: overlapping windows of one run share ticks.
    ticks: u64,
}

/// Two runs (the second one's clock restarts at 0); in the first, the third event's pre-window overlaps the
/// second's post-window.
fn make_store(dir: &Path) -> Expected {
    let (mut store, _) = SegmentStore::open(dir, StoreConfig::default()).unwrap();
    let runs: [&[(u64, usize)]; 2] = [&[(10, 3), (20, 3), (22, 0)], &[(10, 3), (20, 2)]];
    let mut exp = Expected::default();
    let mut id = 0;
    for (run, events) in runs.iter().enumerate() {
        let mut ticks = BTreeSet::new();
        for &(trigger_s, kfs) in events.iter() {
            id += 1;
            let s = snapshot(id, trigger_s, kfs);
            store.append(&s.encode().unwrap()).unwrap();
            exp.events += 1;
            exp.thumbnails += s.keyframes.iter().filter(|k| !k.jpeg.is_empty()).count() as u64;
            ticks.extend(s.pre.iter().chain(s.post.iter()).map(|t| (run, t.tick)));
        }
        exp.ticks += ticks.len() as u64;
    }
    exp
}

/// Messages per topic, read in file order; checks JSON validity and per-channel time order on the way.
fn read_messages(bytes: &[u8]) -> BTreeMap<String, u64> {
    let (mut counts, mut last) = (BTreeMap::new(), BTreeMap::<String, u64>::new());
    for m in mcap::MessageStream::new(bytes).unwrap() {
        let m = m.unwrap();
        let topic = m.channel.topic.clone();
        assert_eq!(m.channel.message_encoding, "json");
        assert!(m.log_time >= *last.get(&topic).unwrap_or(&0), "{topic}: log time went back");
        last.insert(topic.clone(), m.log_time);
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap_or_else(|e| panic!("{topic}: {e}"));
        if topic == "/thumbnail" {
            assert_eq!((v["format"].as_str(), v["frame_id"].as_str()), (Some("jpeg"), Some("camera_front")));
            assert!(v["data"].as_str().unwrap().starts_with("/9j/"), "base64 of FF D8 FF");
            let stamp =
                v["timestamp"]["sec"].as_u64().unwrap() * 1_000_000_000 + v["timestamp"]["nsec"].as_u64().unwrap();
            assert_eq!(stamp, m.log_time);
        }
        if topic == "/telemetry" {
            assert!(v["speed"].is_null() || v["speed"].as_f64() == Some(8.0), "{v}");
            assert_eq!(v["speed"].is_null(), v["fallback"] == true, "NaN speed is null, on the fallback tick");
            assert!(v["ttc_s"].is_null(), "infinite TTC is null");
            assert_eq!(v["path"].as_array().unwrap().len(), 20);
        }
        *counts.entry(topic).or_insert(0) += 1;
    }
    counts
}

/// The summary section: statistics per channel, schemas by name, chunk indexes (lz4) covering every message.
fn check_summary(bytes: &[u8], counts: &BTreeMap<String, u64>, schemas: &[(&str, &str)]) {
    let summary = mcap::Summary::read(bytes).unwrap().expect("a summary section");
    let stats = summary.stats.as_ref().expect("a statistics record");
    assert_eq!(stats.channel_count as usize, schemas.len());
    assert_eq!(stats.message_count, counts.values().sum::<u64>());
    for (topic, schema) in schemas {
        let ch = summary.channels.values().find(|c| c.topic == *topic).unwrap_or_else(|| panic!("no {topic}"));
        let s = ch.schema.as_ref().unwrap();
        assert_eq!((s.name.as_str(), s.encoding.as_str()), (*schema, "jsonschema"));
        serde_json::from_slice::<serde_json::Value>(&s.data).expect("the schema is JSON");
        assert_eq!(stats.channel_message_counts.get(&ch.id).copied(), counts.get(*topic).copied(), "{topic}");
    }
    assert!(!summary.chunk_indexes.is_empty(), "chunk indexes");
    assert_eq!(stats.chunk_count as usize, summary.chunk_indexes.len());
    assert!(summary.chunk_indexes.iter().all(|c| c.compression == "lz4"));
    let indexed: u64 = summary
        .chunk_indexes
        .iter()
        .map(|c| summary.read_message_indexes(bytes, c).unwrap())
        .map(|idx| idx.values().map(|v| v.len() as u64).sum::<u64>())
        .sum();
    assert_eq!(indexed, stats.message_count, "every message is in a chunk's message index");
    println!(
        "{} bytes, {} chunks, {} messages: {counts:?}",
        bytes.len(),
        summary.chunk_indexes.len(),
        stats.message_count
    );
}

#[test]
fn mcap_summary_and_messages_match_the_store() {
    let (store, out) = (common::tmp(), common::tmp());
    let exp = make_store(store.path());
    let path = out.path().join("e.mcap");
    let n = export_mcap(store.path(), &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let counts = read_messages(&bytes);
    let got = Expected { events: counts["/events"], thumbnails: counts["/thumbnail"], ticks: counts["/telemetry"] };
    assert_eq!(got, exp);
    assert_eq!(n, counts.values().sum::<u64>());
    let schemas =
        [("/telemetry", "rtvla.TickTelemetry"), ("/events", "rtvla.Event"), ("/thumbnail", "foxglove.CompressedImage")];
    check_summary(&bytes, &counts, &schemas);
}

#[test]
fn mcap_with_commentary_has_a_log_channel() {
    let (store, out) = (common::tmp(), common::tmp());
    let exp = make_store(store.path());
    let path = out.path().join("c.mcap");
    // Two lines per event: one before the window (written at its first tick), one past it (written at its end).
    let lookup = |seq: u64| vec![(0, format!("Brake for event {seq}.")), (u64::MAX, "Late.".to_string())];
    let n = export_mcap_with_commentary(store.path(), &path, Some(&lookup)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let counts = read_messages(&bytes);
    assert_eq!(counts["/commentary"], 2 * exp.events);
    assert_eq!(n, counts.values().sum::<u64>());
    let schemas = [
        ("/telemetry", "rtvla.TickTelemetry"),
        ("/events", "rtvla.Event"),
        ("/thumbnail", "foxglove.CompressedImage"),
        ("/commentary", "foxglove.Log"),
    ];
    check_summary(&bytes, &counts, &schemas);
}

#[test]
fn missing_store_is_bad_input_and_writes_nothing() {
    let out = common::tmp();
    let path = out.path().join("x.mcap");
    let err = export_mcap(&out.path().join("nope"), &path).unwrap_err();
    assert_eq!(rtvla::error::exit_code(&err), 2, "{err:#}");
    assert!(!path.exists());
    let err = export_mcap(out.path(), &out.path().join("no/such/dir.mcap")).unwrap_err();
    assert_eq!(rtvla::error::exit_code(&err), 2, "{err:#}");
    let empty = common::tmp();
    assert_eq!(export_mcap(empty.path(), &path).unwrap(), 0);
    let summary = mcap::Summary::read(&std::fs::read(&path).unwrap()).unwrap().expect("a summary section");
    assert_eq!(summary.stats.unwrap().message_count, 0);
}
