//! Issue 17's must-show, store side: in a simulated cut-in the bundled student hits the car cutting in; the store
//! holds a collision event anchored on the impact, tagged with its run, whose keyframes cover the second before
//! the impact, and the HTML report shows that event with its lead-up. (`cargo xtask ci` also renders this report
//! in headless Chromium: xtask/src/report_check.rs; both take the drive from tests/collision_common.)

use std::path::Path;
use std::process::Command;

use rtvla::events::snapshot::{Snapshot, TriggerKind, FLAG_COLLISION};

mod collision_common;
use collision_common::{SCENARIO, SEED};

fn rtvla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtvla"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

/// The decoded collision events of a store.
fn collision_events(store: &Path) -> Vec<Box<Snapshot>> {
    let mut out = Vec::new();
    rtvla::store::export::for_each_snapshot(
        store,
        |_, s| {
            if s.trigger == TriggerKind::Collision {
                out.push(s);
            }
            Ok(())
        },
        |c, _| panic!("corrupt record {c:?}"),
    )
    .unwrap();
    out
}

#[test]
fn a_cut_in_collision_is_stored_with_its_lead_up_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = (dir.path().join("store"), dir.path().join("r.json"));
    let out = rtvla()
        .args(["drive", "--quiet", "--fast", "--scenario", SCENARIO, "--seed", &SEED.to_string(), "--store"])
        .arg(&store)
        .arg("--report-json")
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!(
        r["infractions"]["collision_vehicle"].as_u64().unwrap_or(0) >= 1,
        "{SCENARIO} seed {SEED} no longer collides (a retrained model?): pick another seed in \
         tests/collision_common/mod.rs. Infractions: {}",
        r["infractions"]
    );

    let hits = collision_events(&store);
    assert!(!hits.is_empty(), "no collision event in the store");
    let s = &hits[0];
    // Anchored on the impact: the trigger tick is the one the simulator flagged, inside a full window.
    let impact = s.pre.iter().chain(&s.post).find(|t| t.flags & FLAG_COLLISION != 0).expect("impact in the window");
    assert_eq!(impact.tick, s.trigger_tick);
    assert!(s.pre.len() >= 40 && !s.post.is_empty(), "pre {} post {}", s.pre.len(), s.post.len());
    let offsets: Vec<f64> = s.keyframes.iter().map(|k| (k.time_us as f64 - s.mono_time_us as f64) / 1e6).collect();
    assert!(offsets.iter().any(|o| (-1.0..0.0).contains(o)), "no keyframe in the second before impact: {offsets:?}");
    assert!(offsets.iter().filter(|o| **o < 0.0).count() >= 3, "{offsets:?}");
    assert!(s.keyframes.iter().all(|k| !k.jpeg.is_empty() && !k.features.is_empty()));
    // Tagged with its run.
    assert_eq!(s.run.scenario.as_deref(), Some(SCENARIO));
    assert_eq!(s.run.seed, Some(SEED));
    assert_eq!((s.run.board.as_str(), s.run.policy.as_str()), ("host-sim", "model"));
    assert_eq!(s.run.run_id.len(), 21, "{}", s.run.run_id);
    let student = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/student/student.toml");
    let sha = rtvla::model::Manifest::load(&student).unwrap().model.sha256;
    assert_eq!(s.run.model_sha256_hex().as_deref(), Some(sha.as_str()));

    // `store ls --json` tells the run apart.
    let ls = rtvla().args(["store", "ls", "--json"]).arg(&store).output().unwrap();
    let ls: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let row = ls.as_array().unwrap().iter().find(|e| e["trigger"] == "collision").unwrap().clone();
    assert_eq!((row["scenario"].as_str(), row["seed"].as_u64()), (Some(SCENARIO), Some(SEED)));
    assert_eq!((row["run"].as_str(), row["model"].as_str()), (Some(s.run.run_id.as_str()), Some(&sha[..12])));

    // The HTML shows the collision, its run and its lead-up.
    let html = dir.path().join("report.html");
    let out = rtvla().arg("explain").arg(&store).arg("--html").arg(&html).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    let card = &page[page.find("<section class=\"collision\">").expect("a collision card")..];
    let card = &card[..card.find("</section>").unwrap()];
    assert!(card.contains(&format!("scenario {SCENARIO} / seed {SEED}")) && card.contains(s.run.run_id.as_str()));
    assert!(card.contains(">impact<") && card.contains(">t=0<"));
    for o in offsets {
        assert!(card.contains(&format!("t = {o:+.2} s")), "keyframe at {o:+.2} s not on the page");
    }
    assert!(card.contains("time to collision") && card.contains("steering"));
}
