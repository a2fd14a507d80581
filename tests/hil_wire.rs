//! Hardware-in-the-loop over the wire, for real: `rtvla sim serve` as the rig and `rtvla drive` on a `net` board,
//! two processes talking UDP on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod process_common;
use process_common::wait_or_kill;

const BIN: &str = env!("CARGO_BIN_EXE_rtvla");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn key_file(dir: &Path, name: &str, byte: u8) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, format!("{:02x}", byte).repeat(32)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// hil-local with this test's port, key and pacing (the model path made absolute).
fn board(dir: &Path, port: u16, key: &Path, pacing: &str) -> PathBuf {
    board_bound(dir, port, key, pacing, 0)
}

fn board_bound(dir: &Path, port: u16, key: &Path, pacing: &str, bind_port: u16) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(ROOT).join("boards/hil-local.toml")).unwrap();
    let model = Path::new(ROOT).join("models/student/student.toml");
    let text = text
        .replace("\"../models/student/student.toml\"", &format!("{:?}", model.display().to_string()))
        .replace("127.0.0.1:47700", &format!("127.0.0.1:{port}"))
        .replace("bind = \"127.0.0.1:0\"", &format!("bind = \"127.0.0.1:{bind_port}\""))
        .replace("pacing = \"lockstep\"", &format!("pacing = {pacing:?}"))
        .replace("# key_file = \"rig.key\"", &format!("key_file = {:?}", key.display().to_string()));
    let p = dir.join(format!("board-{pacing}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn serve(port: u16, key: &Path, extra: &[&str]) -> Child {
    Command::new(BIN)
        .args(["sim", "serve", "--bind", &format!("127.0.0.1:{port}"), "--scenarios", "following"])
        .args(["--seeds", "1000000", "--hello-timeout-s", "20", "--key"])
        .arg(key)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn drive(board: &Path, ticks: u64, dir: &Path) -> serde_json::Value {
    let report = dir.join("report.json");
    let out = Command::new(BIN)
        .args(["drive", "--quiet", "--no-store", "--ticks", &ticks.to_string(), "--board"])
        .arg(board)
        .arg("--report-json")
        .arg(&report)
        .output()
        .unwrap();
    assert!(out.status.success(), "drive failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

fn link(r: &serde_json::Value, k: &str) -> u64 {
    r["link"][k].as_u64().unwrap_or_else(|| panic!("report.link.{k} missing: {}", r["link"]))
}

/// 10 % of the rig's datagrams lost, 10 % reordered, 10 % duplicated, and one second of nothing: the loop keeps
/// its rate, the losses are counted, the car is stopped while frames are stale and drives again after.
#[test]
fn lossy_wire_real_time_keeps_rate_stops_when_stale_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let key = key_file(dir.path(), "k", 7);
    let faults = ["--loss", "10", "--reorder", "10", "--duplicate", "10", "--blackout", "2,1"];
    let mut rig = serve(port, &key, &[&["--pacing", "realtime", "--format", "jpeg"][..], &faults[..]].concat());
    let started = Instant::now();
    let r = drive(&board(dir.path(), port, &key, "realtime"), 120, dir.path());
    let _ = rig.kill();
    let _ = rig.wait();
    let wall = r["wall_s"].as_f64().unwrap();
    assert_eq!(r["ticks"], 120);
    // 120 ticks at 20 Hz: 6 s, whatever the network did (skipped ticks would show a loop that fell behind).
    assert!((5.5..7.5).contains(&wall), "wall {wall} s for 120 ticks at 20 Hz");
    assert!(started.elapsed() < Duration::from_secs(30));
    // The loop never waits on the wire: had it blocked through the 1 s blackout it would have skipped ~20 ticks.
    // A tick or two lost to the OS's scheduler (CI runs these three tests at once on two cores, without
    // realtime priority) is not that, and is tolerated: the loop's timing is measured by `xtask bench` and `soak`.
    let skipped = r["skipped_ticks"].as_u64().unwrap();
    assert!(skipped <= 3, "{skipped} ticks skipped: the loop fell behind by more than a scheduler hiccup: {r}");
    assert!(skipped == 0 || r["deadline_misses"].as_u64().unwrap() > 0, "a skip follows a missed deadline: {r}");
    // Lost chunks leave frames incomplete; a duplicated datagram repeats its sequence number: refused as a replay.
    for k in ["frames_incomplete", "replayed", "frames_delivered"] {
        assert!(link(&r, k) > 0, "{k} = 0: {}", r["link"]);
    }
    let faults = &r["faults"];
    assert!(faults["stale_frame"].as_u64().unwrap_or(0) + faults["no_frame"].as_u64().unwrap_or(0) > 0, "{r}");
    // Stopped more than once means it drove again in between: frames returned after a stale spell (the blackout,
    // and the spells 10 % loss makes: a frame of ~7 chunks arrives whole about half the time). And it drove a good
    // part of the run, not only stopped.
    let (ticks, held) = (r["ticks"].as_u64().unwrap(), r["fallback_ticks"].as_u64().unwrap());
    assert!(r["fallbacks"].as_u64().unwrap() >= 2, "stops when stale, drives again when frames return: {r}");
    assert!(ticks - held >= 20, "drove {} of {ticks} ticks: {r}", ticks - held);
    assert_eq!(link(&r, "auth_failed"), 0);
    // The wire's receive thread does the work; the loop thread allocates nothing per tick.
    assert_eq!(r["allocs_per_tick_outside_inference"], 0.0, "{r}");
}

/// A rig with another key: every datagram is refused and counted, no state or frame reaches the loop, and every
/// command the runtime computes is the supervisor's stop.
#[test]
fn a_rig_with_the_wrong_key_never_moves_the_car() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let rig_key = key_file(dir.path(), "rig", 1);
    let our_key = key_file(dir.path(), "ours", 2);
    // The rig knows the runtime's address (a bench wired to one device), so it sends without our Hello.
    let ours = free_port();
    let mut rig = serve(port, &rig_key, &["--pacing", "realtime", "--peer", &format!("127.0.0.1:{ours}")]);
    let r = drive(&board_bound(dir.path(), port, &our_key, "realtime", ours), 40, dir.path());
    let _ = rig.kill();
    let _ = rig.wait();
    assert_eq!(link(&r, "states"), 0);
    assert_eq!(link(&r, "frames_delivered"), 0);
    assert_eq!(r["fallback_ticks"], r["ticks"], "every tick a stop: {r}");
    assert_eq!(r["nominal_ticks_at_end"], 0);
    assert!(link(&r, "auth_failed") > 40, "every datagram of the rig refused and counted: {}", r["link"]);
}

#[test]
fn a_stop_signal_ends_a_rig_that_waits_for_a_runtime() {
    // No `drive` ever announces itself: the rig waits up to --hello-timeout-s (20 s here) for one. A SIGTERM ends
    // that wait, and the table, at once.
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "rig.key", 0x5a);
    let mut rig = Command::new(BIN)
        .args(["sim", "serve", "--bind", &format!("127.0.0.1:{}", free_port()), "--scenarios", "following"])
        .args(["--seeds", "1000000", "--hello-timeout-s", "20", "--key"])
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The rig installs its stop handlers before it says it listens.
    let mut err = std::io::BufReader::new(rig.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("rig listening") {
        line.clear();
        assert_ne!(std::io::BufRead::read_line(&mut err, &mut line).unwrap(), 0, "the rig exited before listening");
    }
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(rig.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status =
        wait_or_kill(&mut rig, Duration::from_secs(10), "the rig still waits for a runtime 10 s after SIGTERM");
    assert_eq!(status.code(), Some(130), "interrupted, as sim eval is");
}
