//! Benchmark: loop-thread cost of the recorder (idle tick, trigger tick, hand-off/enqueue tick) in µs, and writer
//! throughput in snapshots/s (JPEG + postcard + append, per fsync policy).
//!
//! `cargo run --release --example store_bench [-- DIR]` (DIR defaults to a temp dir; use the board's flash to measure it).

use std::time::{Duration, Instant};

use rtvla::events::{EventRecorder, RecorderConfig, TickOutcome, TickTelemetry, TriggerConfig};
use rtvla::store::segment::{FsyncPolicy, SegmentStore, StoreConfig};
use rtvla::store::writer::SlotEncoder;
use rtvla::store::{spawn_writer, WriterConfig};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let arg = std::env::args().nth(1);
    let tmp = tempfile::tempdir()?;
    let base = arg.map(std::path::PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    let feats: Vec<f32> = (0..2048).map(|i| (i as f32 * 0.01).sin()).collect();
    let (fw, fh) = (640usize, 320usize);
    let frame: Vec<u8> = (0..fw * fh * 3).map(|i| ((i * 7) % 251) as u8).collect();

    // 1. Loop-thread cost.
    let cfg =
        RecorderConfig { triggers: TriggerConfig { refractory_us: 0, ..Default::default() }, ..Default::default() };
    let (mut rec, sink) = EventRecorder::new(cfg)?;
    let store = StoreConfig { fsync: FsyncPolicy::Never, ..Default::default() };
    let w = spawn_writer(WriterConfig::new(base.join("loop"), store), sink)?;
    let ext = rec.external_trigger();
    let (mut idle, mut start, mut collect, mut handoff) = (vec![], vec![], vec![], vec![]);
    for i in 0..20_000u64 {
        if i % 30 == 29 {
            ext.request();
        }
        let t = TickTelemetry { time_us: i * 50_000, tick: i, speed: 5.0, ..Default::default() };
        let t0 = Instant::now();
        let out = rec.on_tick(&t, Some(&feats), Some((&frame, fw, fh)));
        let us = t0.elapsed().as_secs_f64() * 1e6;
        match out {
            TickOutcome::Idle => idle.push(us),
            TickOutcome::Started(_) => start.push(us),
            TickOutcome::Collecting => collect.push(us),
            TickOutcome::HandedOff => handoff.push(us),
            TickOutcome::Dropped => {}
        }
        if i % 10 == 0 {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    let ws = w.stop();
    println!("loop-thread cost per tick, µs (p50 / p99 / max), 640x320 frame, 32x64 features:");
    for (name, v) in
        [("idle", &mut idle), ("trigger", &mut start), ("collect", &mut collect), ("hand-off", &mut handoff)]
    {
        println!("  {name:<9} n={:<6} {:>7.2} / {:>7.2} / {:>7.2}", v.len(), pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
    }
    println!("  recorder {:?}; writer wrote {} dropped {}", rec.stats(), ws.written, ws.dropped_store);

    // 2. Writer throughput: a full slot (40+20 ticks, 3 keyframes with features + thumbnails).
    let (mut rec, mut sink) = EventRecorder::new(RecorderConfig::default())?;
    let ext = rec.external_trigger();
    let mut i = 0u64;
    let slot = loop {
        if i == 50 {
            ext.request();
        }
        let t = TickTelemetry { time_us: i * 50_000, tick: i, speed: 5.0, ..Default::default() };
        rec.on_tick(&t, Some(&feats), Some((&frame, fw, fh)));
        i += 1;
        if let Ok(s) = sink.full.pop() {
            break s;
        }
    };
    let mut slot = slot;
    let mut enc = SlotEncoder::new(75);
    let n = 300;
    let t0 = Instant::now();
    let mut bytes = 0;
    for _ in 0..n {
        bytes = enc.encode(&mut slot)?.0.len();
    }
    let enc_s = t0.elapsed().as_secs_f64();
    println!("writer: encode only (3 JPEG + postcard, {bytes} B): {:.0} snapshots/s", n as f64 / enc_s);
    for (name, fsync) in [("every_record", FsyncPolicy::EveryRecord), ("never", FsyncPolicy::Never)] {
        let dir = base.join(format!("w-{name}"));
        let (mut st, _) = SegmentStore::open(&dir, StoreConfig { fsync, ..Default::default() })?;
        let t0 = Instant::now();
        for _ in 0..n {
            let (b, _) = enc.encode(&mut slot)?;
            st.append(b)?;
        }
        st.sync()?;
        let s = t0.elapsed().as_secs_f64();
        println!(
            "writer: encode + append, fsync {name:<12}: {:.0} snapshots/s ({:.1} MB/s) on {}",
            n as f64 / s,
            n as f64 * bytes as f64 / s / 1e6,
            dir.display()
        );
    }
    Ok(())
}
