//! `rtvla status` against a real running `rtvla drive`: the socket answers while the loop ticks, and is gone (exit
//! 1, "no rtvla drive is running") once the drive ends.

use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rtvla");

fn status(dir: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(BIN).args(["status", "--json", "--dir"]).arg(dir).output().unwrap();
    (out.status.code(), serde_json::from_slice(&out.stdout).unwrap_or_default())
}

#[test]
fn status_answers_while_the_loop_ticks_and_not_after() {
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = dir.path().join("run");
    let mut drive = Command::new(BIN)
        .args(["drive", "--quiet", "--ticks", "120", "--no-store"])
        .env("RTVLA_STATUS_DIR", &sock_dir)
        .spawn()
        .unwrap();
    let t = Instant::now();
    let seen = loop {
        let (code, v) = status(&sock_dir);
        if v.as_array().is_some_and(|a| a.first().is_some_and(|s| s["ticks"].as_u64().unwrap_or(0) > 5)) {
            assert_eq!(code, Some(0), "a ticking drive: exit 0");
            break v[0].clone();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "status never answered: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(seen["ticking"], true);
    assert_eq!(seen["board"], "host-sim");
    assert_eq!(seen["pid"], drive.id());
    assert!(seen["model_sha256"].as_str().is_some_and(|s| s.len() == 64));
    assert!(drive.wait().unwrap().success());
    let (code, v) = status(&sock_dir);
    assert_eq!(code, Some(1), "nothing running: exit 1");
    assert_eq!(v, serde_json::json!([]));
    assert_eq!(std::fs::read_dir(&sock_dir).unwrap().count(), 0, "the socket is removed when the drive ends");
}
