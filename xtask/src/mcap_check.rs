//! CI: MCAP exports read back by Foxglove's reference reader (the `mcap` package from PyPI, pinned, in the
//! training venv), so the files are judged by code we did not write. A fast simulated drive writes a store; `rtvla
//! store export --mcap` and `rtvla explain --mcap` export it; the reader must find a summary section whose
//! per-channel statistics equal the messages it reads through the chunk indexes, the exporter's own count and the
//! events the store lists.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{distill_python, release_bin, run, tempdir};

/// Reads the MCAP at argv[1] twice — indexed (summary, chunk indexes) and linear (record by record) — and prints
/// one JSON object. Every message must be valid JSON.
const READER: &str = r#"
import json, sys
from collections import Counter
from mcap.reader import make_reader, NonSeekingReader

def count(messages):
    c = Counter()
    for _, channel, message in messages:
        json.loads(message.data)
        c[channel.topic] += 1
    return dict(c)

with open(sys.argv[1], "rb") as f:
    reader = make_reader(f)
    summary = reader.get_summary()
    if summary is None or summary.statistics is None:
        print(json.dumps({"error": "no summary section with statistics"}))
        sys.exit(0)
    stats = summary.statistics
    out = {
        "library": reader.get_header().library,
        "message_count": stats.message_count,
        "summary_counts": {summary.channels[c].topic: n for c, n in stats.channel_message_counts.items()},
        "schemas": {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()},
        "chunks": len(summary.chunk_indexes),
        "stats_chunks": stats.chunk_count,
        "compression": sorted({ci.compression for ci in summary.chunk_indexes}),
        "uncompressed_bytes": sum(ci.uncompressed_size for ci in summary.chunk_indexes),
        "indexed_counts": count(reader.iter_messages()),
    }
with open(sys.argv[1], "rb") as f:
    out["linear_counts"] = count(NonSeekingReader(f).iter_messages())
print(json.dumps(out))
"#;

/// The CI step: drive, export both ways, read back, compare, print the summaries.
pub fn check(root: &Path) -> Result<()> {
    let dir = tempdir()?.join("mcap-check");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let store = dir.join("store");
    // Held-out pedestrian crossing, simulated time: deterministic, and the student writes snapshots there.
    run(Command::new(release_bin(root))
        .args(["drive", "--quiet", "--fast", "--scenario", "pedestrian_crossing", "--seed", "1000004", "--store"])
        .arg(&store))?;
    let events = crate::store_ls_json(root, &store)?.len() as u64;
    if events == 0 {
        bail!("mcap check: the drive wrote no snapshot to export");
    }
    // The reader is pinned in models/distill/requirements.txt, installed with the training venv.
    let py = distill_python(root)?;
    let plain = dir.join("events.mcap");
    let n = export(root, &["store", "export"], &store, "--mcap", &plain)?;
    check_file(&py, &plain, n, events, &["/telemetry", "/events", "/thumbnail"])?;
    let explained = dir.join("explained.mcap");
    let n = export(root, &["explain"], &store, "--mcap", &explained)?;
    check_file(&py, &explained, n, events, &["/telemetry", "/events", "/thumbnail", "/commentary"])?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Run an `rtvla` export and return the message count it reports ("wrote FILE (N messages)").
fn export(root: &Path, cmd: &[&str], store: &Path, flag: &str, file: &Path) -> Result<u64> {
    let out = Command::new(release_bin(root)).args(cmd).arg(store).arg(flag).arg(file).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("rtvla {cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line = stdout.lines().find(|l| l.contains(&file.display().to_string()) && l.ends_with(" messages)"));
    let n = line.and_then(|l| l.rsplit('(').next()?.split(' ').next()?.parse().ok());
    n.with_context(|| format!("rtvla {cmd:?}: no message count in its output: {stdout}"))
}

/// Read `file` with the reference reader and hold it to the exporter's count, the store's events and `topics`.
fn check_file(py: &Path, file: &Path, exported: u64, events: u64, topics: &[&str]) -> Result<()> {
    let out = Command::new(py).arg("-c").arg(READER).arg(file).output()?;
    if !out.status.success() {
        bail!("mcap reader on {}: {}", file.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).context("mcap reader output")?;
    print_summary(file, &r);
    let problems = problems(&r, exported, events, topics);
    if !problems.is_empty() {
        bail!("mcap check {}: {}", file.display(), problems.join("; "));
    }
    Ok(())
}

/// Every way the reader's view disagrees with what was written (empty: the file is good).
fn problems(r: &serde_json::Value, exported: u64, events: u64, topics: &[&str]) -> Vec<String> {
    if let Some(e) = r["error"].as_str() {
        return vec![e.to_string()];
    }
    let mut p = Vec::new();
    let summary = &r["summary_counts"];
    for counts in ["indexed_counts", "linear_counts"] {
        if &r[counts] != summary {
            p.push(format!("{counts} {} ≠ summary {summary}", r[counts]));
        }
    }
    let total: u64 = summary.as_object().map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    if r["message_count"].as_u64() != Some(exported) || total != exported {
        p.push(format!("statistics say {} messages (channels {total}), rtvla wrote {exported}", r["message_count"]));
    }
    if summary["/events"].as_u64() != Some(events) {
        p.push(format!("/events has {} messages, the store lists {events} events", summary["/events"]));
    }
    let mut listed: Vec<&str> = summary.as_object().map_or(vec![], |m| m.keys().map(|k| k.as_str()).collect());
    listed.sort_unstable();
    let mut want = topics.to_vec();
    want.sort_unstable();
    if listed != want {
        p.push(format!("channels {listed:?}, expected {want:?}"));
    }
    if r["schemas"]["/thumbnail"] != "foxglove.CompressedImage" {
        p.push(format!("/thumbnail schema {}", r["schemas"]["/thumbnail"]));
    }
    if r["chunks"].as_u64().unwrap_or(0) == 0 || r["chunks"] != r["stats_chunks"] {
        p.push(format!("{} chunk indexes, statistics say {} chunks", r["chunks"], r["stats_chunks"]));
    }
    if r["compression"] != serde_json::json!(["lz4"]) {
        p.push(format!("chunk compression {}, expected lz4", r["compression"]));
    }
    p
}

fn print_summary(file: &Path, r: &serde_json::Value) {
    let bytes = std::fs::metadata(file).map_or(0, |m| m.len());
    eprintln!(
        "{}: {bytes} bytes, {} messages in {} chunks ({}, {} bytes uncompressed), per channel {}, written by {}",
        file.file_name().unwrap_or_default().to_string_lossy(),
        r["message_count"],
        r["chunks"],
        r["compression"],
        r["uncompressed_bytes"],
        r["summary_counts"],
        r["library"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> serde_json::Value {
        let counts = serde_json::json!({"/events": 2, "/telemetry": 120, "/thumbnail": 6});
        serde_json::json!({
            "message_count": 128, "summary_counts": counts, "indexed_counts": counts, "linear_counts": counts,
            "schemas": {"/thumbnail": "foxglove.CompressedImage"}, "chunks": 1, "stats_chunks": 1,
            "compression": ["lz4"],
        })
    }

    const TOPICS: [&str; 3] = ["/telemetry", "/events", "/thumbnail"];

    #[test]
    fn a_good_file_passes() {
        assert_eq!(problems(&good(), 128, 2, &TOPICS), Vec::<String>::new());
    }

    #[test]
    fn missing_summary_and_disagreeing_counts_fail() {
        let none = serde_json::json!({"error": "no summary section with statistics"});
        assert_eq!(problems(&none, 128, 2, &TOPICS), vec!["no summary section with statistics"]);
        assert_eq!(problems(&good(), 129, 2, &TOPICS).len(), 1, "exporter count");
        assert_eq!(problems(&good(), 128, 3, &TOPICS).len(), 1, "store events");
        let mut r = good();
        r["linear_counts"]["/telemetry"] = 119.into();
        r["compression"] = serde_json::json!([""]);
        r["chunks"] = 0.into();
        assert_eq!(problems(&r, 128, 2, &TOPICS).len(), 3, "{:?}", problems(&r, 128, 2, &TOPICS));
        assert_eq!(problems(&good(), 128, 2, &["/telemetry"]).len(), 1, "channels");
    }
}
