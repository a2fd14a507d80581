//! `rtvla explain` end to end: a simulated drive with the bundled student writes snapshots, the bundled language
//! branch explains them on tract; bad language manifests are one-line errors.

use std::path::Path;
use std::process::Command;

fn rtvla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtvla"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn explains_every_snapshot_of_a_drive() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // Held-out pedestrian crossing: the bundled student brakes hard for the pedestrian three times (snapshots with
    // full windows; seed 1000001 wrote none once the closed-loop student of 2026-11-30 was bundled).
    let out = rtvla()
        .args(["drive", "--quiet", "--fast", "--scenario", "pedestrian_crossing", "--seed", "1000004", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = dir.path().join("explain.json");
    let html = dir.path().join("explain.html");
    let mcap = dir.path().join("explain.mcap");
    let out = rtvla()
        .arg("explain")
        .arg(&store)
        .arg("--json")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .arg("--mcap")
        .arg(&mcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let events = events.as_array().unwrap();
    assert!(!events.is_empty(), "the drive should have written at least one snapshot");
    let listed = rtvla().args(["store", "ls", "--json"]).arg(&store).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), events.len(), "one explanation per stored event");
    for e in events {
        assert!(e["id"].is_u64());
        let text = e["commentary"].as_str().unwrap();
        // A sentence of the expert's vocabulary: capitalised, ends with a full stop, no unknown tokens.
        assert!(text.ends_with('.') && text.chars().next().unwrap().is_uppercase(), "{text:?}");
        assert!(!text.contains('<'), "{text:?}");
        // The lead-up (three keyframes before the trigger), the trigger tick and two after; the event's
        // commentary is the trigger tick's.
        let kfs = e["keyframes"].as_array().unwrap();
        assert_eq!(kfs.len(), 6, "{e}");
        assert_eq!(kfs.iter().filter(|k| k["offset_s"].as_f64().unwrap() < 0.0).count(), 3, "{e}");
        assert_eq!(kfs[3]["offset_s"].as_f64(), Some(0.0));
        assert_eq!(kfs[3]["commentary"], e["commentary"]);
    }
    // Every keyframe's sentence is a message on /commentary (foxglove.Log).
    let sentences: usize = events.iter().map(|e| e["keyframes"].as_array().unwrap().len()).sum();
    assert_eq!(mcap_channel_counts(&mcap)["/commentary"], sentences);
    let bytes = std::fs::read(&mcap).unwrap();
    let summary = mcap::Summary::read(&bytes).unwrap().expect("a summary section");
    let log = summary.channels.values().find(|c| c.topic == "/commentary").unwrap();
    assert_eq!(log.schema.as_ref().unwrap().name, "foxglove.Log");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("data:image/jpeg;base64,") && page.contains("<svg"));
    assert!(page.contains(events[0]["commentary"].as_str().unwrap()));

    // The snapshots name the graph that wrote their features; the ablation's language branch was trained on other
    // features and refuses them (a one-line reason per event, no commentary) instead of explaining them.
    let student = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student/student.toml");
    let sha = rtvla::model::Manifest::load(&student).unwrap().model.sha256;
    let other = dir.path().join("other.json");
    let out = rtvla()
        .arg("explain")
        .arg(&store)
        .args(["--model", "models/student/language_nodistill.toml", "--json"])
        .arg(&other)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let other: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&other).unwrap()).unwrap();
    assert_eq!(other.as_array().unwrap().len(), events.len());
    for e in other.as_array().unwrap() {
        assert_eq!(e["commentary"], "", "{e}");
        let why = e["skipped"].as_str().unwrap();
        assert!(why.starts_with(&format!("features of driving model {}", &sha[..16])), "{why}");
    }
}

/// The bundled language manifest with one edit, its ONNX paths made absolute and — unless `sealed` — its
/// `[integrity]` table dropped (as a hand-written manifest has none), so each case reaches the check it is for.
fn bad_language_manifest(dir: &Path, name: &str, from: &str, to: &str) -> String {
    edited_language_manifest(dir, name, from, to, false)
}

fn edited_language_manifest(dir: &Path, name: &str, from: &str, to: &str, sealed: bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student");
    let mut text = std::fs::read_to_string(root.join("language.toml")).unwrap();
    if !sealed {
        text.truncate(text.find("\n[integrity]\n").expect("the bundled manifest is sealed") + 1);
    }
    for f in ["language_resampler.onnx", "language_step.onnx"] {
        text = text.replace(&format!("\"{f}\""), &format!("{:?}", root.join(f).display().to_string()));
    }
    assert!(text.contains(from), "language.toml lacks {from:?}");
    let p = dir.join(name);
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    p.display().to_string()
}

#[test]
fn bad_language_manifests_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("empty-store");
    std::fs::create_dir(&store).unwrap();
    let cases = [
        (
            bad_language_manifest(dir.path(), "a.toml", "resampler_sha256 = \"", "resampler_sha256 = \"00"),
            "sha256 mismatch",
        ),
        (
            bad_language_manifest(dir.path(), "b.toml", "kind = \"language\"", "kind = \"student\""),
            "not a language manifest",
        ),
        (edited_language_manifest(dir.path(), "s.toml", "max_len = 24", "max_len = 23", true), "edited after export"),
        (
            bad_language_manifest(dir.path(), "c.toml", "features = [1, 32, 64]", "features = [1, 32, 65]"),
            "cannot build",
        ),
        (dir.path().join("missing.toml").display().to_string(), "missing.toml"),
    ];
    for (manifest, needle) in cases {
        let out = rtvla().arg("explain").arg(&store).args(["--model", &manifest]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_eq!(out.status.code(), Some(2), "{manifest}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// Per-topic message counts of an MCAP file (read in file order by the mcap crate); panics if a channel's log times
/// ever go back.
fn mcap_channel_counts(path: &Path) -> std::collections::BTreeMap<String, usize> {
    let b = std::fs::read(path).unwrap();
    let (mut counts, mut last) = (std::collections::BTreeMap::new(), std::collections::BTreeMap::new());
    for m in mcap::MessageStream::new(&b).unwrap() {
        let m = m.unwrap();
        let topic = m.channel.topic.clone();
        assert!(m.log_time >= *last.get(&topic).unwrap_or(&0), "{topic}: log time went back");
        last.insert(topic.clone(), m.log_time);
        *counts.entry(topic).or_insert(0) += 1;
    }
    counts
}

#[test]
fn mcap_of_two_runs_keeps_every_tick_in_time_order() {
    // Two simulated-time runs into one store: the second run's clock starts at 0 again.
    let dir = tempfile::tempdir().unwrap();
    let drive = |store: &Path| {
        let out = rtvla()
            .args(["drive", "--quiet", "--fast", "--scenario", "pedestrian_crossing", "--seed", "1000004", "--store"])
            .arg(store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    drive(&one);
    drive(&two);
    drive(&two);
    let export = |store: &Path, name: &str| {
        let p = dir.path().join(name);
        let out = rtvla().arg("explain").arg(store).arg("--mcap").arg(&p).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        mcap_channel_counts(&p)
    };
    let (c1, c2) = (export(&one, "one.mcap"), export(&two, "two.mcap"));
    // Same runs twice: twice every channel (telemetry of the second run is not mistaken for ticks already written).
    for (ch, n) in &c1 {
        assert_eq!(c2[ch], 2 * n, "channel {ch}: {c1:?} vs {c2:?}");
    }
    assert_eq!(c1.len(), 4, "telemetry, events, thumbnails, commentary: {c1:?}");
}
