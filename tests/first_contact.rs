//! What a new user meets first: `rtvla` from any directory, one store per run under the state directory, a store in
//! use refused up front, the student replayed, and bad input refused before any work.

use std::path::Path;
use std::process::Command;

/// `rtvla` run from `/` with a fresh state directory and no `$RTVLA_HOME`: the defaults must not need the cwd.
fn rtvla_from_root(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtvla"));
    c.current_dir("/").env_remove("RTVLA_HOME").env("XDG_STATE_HOME", state);
    c
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn drive_from_root_writes_its_own_run_store_and_says_what_next() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let report = d.path().join("r.json");
    let out = rtvla_from_root(&state)
        .args(["drive", "--fast", "--ticks", "60", "--report-json"])
        .arg(&report)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r = json(&report);
    let run_id = r["run_id"].as_str().unwrap();
    let store = state.join("rtvla/runs").join(run_id);
    assert_eq!(r["store_dir"].as_str().unwrap(), store.display().to_string());
    assert!(store.is_dir());
    assert_eq!(std::fs::read_link(state.join("rtvla/runs/latest")).unwrap(), Path::new(run_id));
    // 60 ticks do not finish the route: the report and the summary say so, infractions read as words.
    assert_eq!(r["route_ended"], false);
    assert!(stdout.contains("route not finished: stopped after 60 ticks"), "{stdout}");
    assert_eq!(r["infractions_text"].as_str().unwrap(), "none");
    // No colour codes when the output is not a terminal.
    assert!(!String::from_utf8_lossy(&out.stderr).contains('\u{1b}'), "ANSI escape in piped logs");
    if r["events_written"].as_u64().unwrap() > 0 {
        assert!(stdout.contains(&format!("next: explain them with  rtvla explain {}", store.display())), "{stdout}");
    }
    // A second run gets a directory of its own; `latest` follows.
    let report2 = d.path().join("r2.json");
    let mut second = rtvla_from_root(&state);
    second.args(["drive", "--fast", "--ticks", "5", "--quiet", "--report-json"]).arg(&report2);
    assert!(second.status().unwrap().success());
    let run2 = json(&report2)["run_id"].as_str().unwrap().to_string();
    assert_ne!(run2, run_id);
    assert_eq!(std::fs::read_link(state.join("rtvla/runs/latest")).unwrap(), Path::new(&run2));
}

#[test]
fn explain_from_root_picks_the_language_branch_of_the_snapshots() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let drive = rtvla_from_root(d.path())
        .args(["drive", "--quiet", "--fast", "--scenario", "pedestrian_crossing", "--seed", "1000004", "--store"])
        .arg(&store)
        .status()
        .unwrap();
    assert!(drive.success());
    let out = d.path().join("e.json");
    let st = rtvla_from_root(d.path()).arg("explain").arg(&store).arg("--json").arg(&out).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let events = json(&out);
    let events = events.as_array().unwrap();
    assert!(!events.is_empty(), "the crossing run records events");
    assert!(events.iter().all(|e| !e["commentary"].as_str().unwrap().is_empty()), "{events:?}");
    assert!(String::from_utf8_lossy(&st.stdout).contains("explained by student-language"));
    // Every event names its run, in `store ls --json` and in the JSON export alike.
    let ls = rtvla_from_root(d.path()).args(["store", "ls", "--json"]).arg(&store).output().unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let exported = d.path().join("x.json");
    let ok = rtvla_from_root(d.path()).args(["store", "export"]).arg(&store).arg("--json").arg(&exported).status();
    assert!(ok.unwrap().success());
    let exported = json(&exported);
    for (l, x) in listed.as_array().unwrap().iter().zip(exported.as_array().unwrap()) {
        assert_eq!((l["scenario"].as_str(), l["seed"].as_u64()), (Some("pedestrian_crossing"), Some(1000004)));
        assert_eq!(x["run"]["run_id"], l["run"], "{x:?}");
        assert_eq!(x["run"]["board"], "host-sim");
        assert_eq!(x["run"]["scenario"], "pedestrian_crossing");
        assert!(x["run"]["model_sha256"].as_str().unwrap().starts_with(l["model"].as_str().unwrap()));
    }
    assert_eq!(listed.as_array().unwrap().len(), exported.as_array().unwrap().len());
}

#[test]
fn a_store_in_use_is_refused_up_front_naming_its_pid() {
    let d = tempfile::tempdir().unwrap();
    let cfg = rtvla::store::StoreConfig {
        budget_bytes: 1 << 24,
        segment_bytes: 1 << 20,
        fsync: rtvla::store::FsyncPolicy::Never,
    };
    let (_held, _) = rtvla::store::SegmentStore::open(d.path(), cfg).unwrap();
    let out =
        rtvla_from_root(d.path()).args(["drive", "--fast", "--ticks", "3", "--store"]).arg(d.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("in use by PID {}", std::process::id())), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn the_student_replays_through_the_runtime() {
    let d = tempfile::tempdir().unwrap();
    let html = d.path().join("replay.html");
    let out = rtvla_from_root(d.path())
        .args(["sim", "replay", "--scenario", "lane_keep", "--seed", "1000000", "--policy", "model", "--every", "10"])
        .args(["--width", "64", "--height", "36", "--html"])
        .arg(&html)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("infractions:"), "{stdout}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("policy model (student)"), "title names the student");
    // Several frames kept, each with a camera image.
    assert!(page.matches("\"img\":\"").count() >= 3);
}

#[test]
fn bad_input_is_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("state");
    let cases: [&[&str]; 3] = [
        &["sim", "eval", "--policy", "model", "--model", "missing.toml", "--seeds", "0..12"],
        &["drive", "--scenario", "moon-landing"],
        &["drive", "--model", "/nonexistent/m.toml"],
    ];
    for args in cases {
        let out = rtvla_from_root(&state).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line, got {err}");
    }
    assert!(!state.join("rtvla/runs").exists(), "no run directory made for a run that never started");
}
