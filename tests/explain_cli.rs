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
    // Held-out pedestrian crossing: the bundled student comes close to the pedestrian (a near-miss snapshot).
    let out = rtvla()
        .args(["drive", "--quiet", "--fast", "--scenario", "pedestrian_crossing", "--seed", "1000001", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = dir.path().join("explain.json");
    let html = dir.path().join("explain.html");
    let out = rtvla().arg("explain").arg(&store).arg("--json").arg(&json).arg("--html").arg(&html).output().unwrap();
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
        assert_eq!(e["keyframes"].as_array().unwrap().len(), 3, "{e}");
    }
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("data:image/jpeg;base64,") && page.contains("<svg"));
    assert!(page.contains(events[0]["commentary"].as_str().unwrap()));
}

fn bad_language_manifest(dir: &Path, name: &str, from: &str, to: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student");
    let mut text = std::fs::read_to_string(root.join("language.toml")).unwrap();
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
            "expected \"language\"",
        ),
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
