//! The `rtvla` binary end to end: exit codes, one-line errors, determinism of the simulator drive.

use std::path::Path;
use std::process::Command;

mod process_common;
use process_common::wait_or_kill;

fn rtvla() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rtvla"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run_fail(args: &[&str]) -> (i32, String) {
    let out = rtvla().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.code().unwrap_or(-1), err)
}

fn assert_bad_input(args: &[&str], needle: &str) {
    let (code, err) = run_fail(args);
    assert_eq!(code, 2, "exit code for {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got: {err}");
    assert!(err.contains(needle), "{err:?} should name {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

fn fixture_manifest_with(dir: &Path, from: &str, to: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("models/fixture/student_fixture.toml")).unwrap();
    let onnx = root.join("models/fixture/student_fixture.onnx");
    let text = text.replace("onnx = \"student_fixture.onnx\"", &format!("onnx = {:?}", onnx.display().to_string()));
    assert!(text.contains(from), "fixture manifest lacks {from:?}");
    let p = dir.join("m.toml");
    std::fs::write(&p, text.replace(from, to)).unwrap();
    p.display().to_string()
}

#[test]
fn bad_board_key_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let board = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/boards/host-sim.toml")).unwrap();
    let p = dir.path().join("b.toml");
    std::fs::write(&p, board.replace("[camera]\n", "[camera]\nwidht = 3\n")).unwrap();
    assert_bad_input(&["drive", "--ticks", "3", "--board", p.to_str().unwrap()], "widht");
    assert_bad_input(&["drive", "--ticks", "3", "--board", "/nonexistent/board.toml"], "/nonexistent/board.toml");
}

#[test]
fn model_mismatches_exit_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = fixture_manifest_with(d, "shape = [1, 10, 2]", "shape = [1, 12, 2]");
    assert_bad_input(&["drive", "--ticks", "3", "--model", &m], "speed_wps");
    let m = fixture_manifest_with(d, "shape = [1, 3, 128, 256]", "shape = [1, 3, 64, 256]");
    assert_bad_input(&["drive", "--ticks", "3", "--model", &m], "cannot type the graph with the manifest's shapes");
    let m = fixture_manifest_with(d, "sha256 = \"", "sha256 = \"00");
    assert_bad_input(&["drive", "--ticks", "3", "--model", &m], "sha256 mismatch");
    let m = fixture_manifest_with(d, "dtype = \"f32\"\nshape = [1, 1]", "dtype = \"i64\"\nshape = [1, 1]");
    assert_bad_input(&["drive", "--ticks", "3", "--model", &m], "dtype i64");
    let m = fixture_manifest_with(d, "name = \"speed\"", "name = \"velocity\"");
    assert_bad_input(&["drive", "--ticks", "3", "--model", &m], "velocity");
    assert_bad_input(&["drive", "--ticks", "3", "--model", "/nonexistent/m.toml"], "/nonexistent/m.toml");
}

#[test]
fn corrupt_onnx_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let garbage = d.join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf \x01\x02\x03").unwrap();
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&garbage).unwrap()))
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("models/fixture/student_fixture.toml")).unwrap();
    let text = text.replace("onnx = \"student_fixture.onnx\"", "onnx = \"garbage.onnx\"");
    let start = text.find("sha256 = \"").unwrap() + 10;
    let text = format!("{}{}{}", &text[..start], sha, &text[start + 64..]);
    let m = d.join("m.toml");
    std::fs::write(&m, text).unwrap();
    assert_bad_input(&["drive", "--ticks", "3", "--model", m.to_str().unwrap()], "not a loadable ONNX model");
}

#[test]
fn unwritable_report_path_exits_2_before_driving() {
    assert_bad_input(&["drive", "--ticks", "3", "--report-json", "/nonexistent-dir/r.json"], "--report-json");
}

#[test]
fn unknown_scenario_exits_2() {
    assert_bad_input(&["drive", "--ticks", "3", "--fast", "--scenario", "moon-landing"], "moon-landing");
}

#[test]
fn same_seed_same_commands_in_simulated_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut hashes = Vec::new();
    for (i, seed) in [7u64, 7, 8].iter().enumerate() {
        let report = dir.path().join(format!("r{i}.json"));
        let out = rtvla()
            .args([
                "drive",
                "--quiet",
                "--fast",
                "--no-store",
                "--ticks",
                "80",
                "--seed",
                &seed.to_string(),
                "--report-json",
            ])
            .arg(&report)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(r["ticks"], 80);
        assert!(r["driving_score"].is_number() && r["route_completion"].is_number());
        hashes.push(r["commands_hash"].as_str().unwrap().to_string());
    }
    assert_eq!(hashes[0], hashes[1], "same seed must give the same commands");
    assert_ne!(hashes[0], hashes[2], "another seed should give other commands");
}

#[test]
fn sigusr1_writes_an_external_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let report = dir.path().join("r.json");
    // Real time at 20 Hz with the fixture: 80 ticks = 4 s; the signal arrives after 1.5 s (pre-window filled).
    let mut child = rtvla()
        .args(["drive", "--quiet", "--ticks", "80", "--model", "models/fixture/student_fixture.toml", "--store"])
        .arg(&store)
        .arg("--report-json")
        .arg(&report)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) }, 0);
    assert!(child.wait().unwrap().success(), "the signal must not end the run");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["ticks"], 80);
    let ls = rtvla().args(["store", "ls", "--json"]).arg(&store).output().unwrap();
    let events: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let external: Vec<_> = events.as_array().unwrap().iter().filter(|e| e["trigger"] == "external").collect();
    assert_eq!(external.len(), 1, "{events}");
    assert_eq!(Some(events.as_array().unwrap().len() as u64), r["events_written"].as_u64());
}

#[test]
fn v4l2_board_without_its_camera_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let board = std::fs::read_to_string(root.join("boards/qemu-virt.toml")).unwrap();
    let board = board
        .replace("device = \"/dev/video0\"", "device = \"/dev/rtvla-test-no-camera\"")
        .replace("../models/student/student.toml", &root.join("models/student/student.toml").display().to_string());
    let p = dir.path().join("b.toml");
    std::fs::write(&p, board).unwrap();
    let (code, err) = run_fail(&["drive", "--ticks", "3", "--no-store", "--board", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("/dev/rtvla-test-no-camera") && errors[0].contains("cannot open"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn board_precision_must_match_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let board = std::fs::read_to_string(root.join("boards/host-sim.toml")).unwrap();
    let board = board.replace(
        "manifest = \"../models/student/student.toml\"",
        &format!(
            "manifest = {:?}\nprecision = \"int8\"",
            root.join("models/student/student.toml").display().to_string()
        ),
    );
    let p = dir.path().join("b.toml");
    std::fs::write(&p, board).unwrap();
    assert_bad_input(
        &["drive", "--ticks", "3", "--no-store", "--board", p.to_str().unwrap()],
        "expects model precision int8",
    );
}

#[test]
fn repeat_drives_the_next_seed_when_the_route_ends() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let run = |extra: &[&str]| {
        let mut args =
            vec!["drive", "--quiet", "--fast", "--no-store", "--policy", "expert", "--scenario", "lane_keep"];
        args.extend_from_slice(extra);
        let out = rtvla().args(&args).arg("--report-json").arg(&report).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&report).unwrap()).unwrap()
    };
    // One episode alone ends at its route end.
    let single = run(&["--seed", "5"]);
    assert_eq!(single["episodes"], 1);
    let episode_ticks = single["ticks"].as_u64().unwrap();
    // With --repeat the run goes on for the ticks asked, through more than two episodes.
    let ticks = (episode_ticks * 5 / 2).to_string();
    let soak = run(&["--seed", "5", "--repeat", "--ticks", &ticks]);
    assert_eq!(soak["ticks"].as_u64().unwrap().to_string(), ticks);
    assert!(soak["episodes"].as_u64().unwrap() >= 3, "{}", soak["episodes"]);
    assert!(soak["driving_score"].as_f64().unwrap() > 50.0, "the expert keeps driving well: {}", soak["driving_score"]);
}

#[test]
fn stop_signals_end_the_run_cleanly_with_a_report() {
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("r.json");
        let mut child = rtvla()
            .args(["drive", "--quiet", "--ticks", "400", "--model", "models/fixture/student_fixture.toml", "--store"])
            .arg(dir.path().join("store"))
            .arg("--report-json")
            .arg(&report)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
        let status = child.wait().unwrap();
        assert!(status.success(), "signal {sig}: {status}");
        let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        let ticks = r["ticks"].as_u64().unwrap();
        assert!(ticks > 0 && ticks < 400, "signal {sig}: stopped early, cleanly: {ticks} ticks");
    }
}

#[test]
fn a_stop_signal_ends_sim_eval_after_the_run_in_progress() {
    // Each episode of `sim eval --policy model` is a runtime run with its own stop flag. Before the process-wide
    // flag, SIGTERM only ended the episode in progress and the table went on with the next one (and between two
    // episodes it was ignored): `kill` could not stop an evaluation.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("eval.json");
    let mut child = rtvla()
        .args(["sim", "eval", "--policy", "model", "--model", "models/fixture/student_fixture.toml"])
        .args(["--scenarios", "lane_keep", "--seeds", "0..20", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status =
        wait_or_kill(&mut child, std::time::Duration::from_secs(60), "sim eval still running 60 s after SIGTERM");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: stopped by a signal after") && err.contains("of 20 runs"), "{err}");
    assert!(!json.exists(), "a partial table must not be written as the report");
}

#[test]
fn sim_eval_jobs_do_not_change_the_table() {
    // `--jobs` runs episodes of the model through the runtime on several threads at once (a closed-loop training
    // round waits for this table): each run must stay its own, bit for bit (commands fingerprints included).
    let dir = tempfile::tempdir().unwrap();
    let table = |jobs: &str| -> serde_json::Value {
        let json = dir.path().join(format!("eval-{jobs}.json"));
        let out = rtvla()
            .args(["sim", "eval", "--policy", "model", "--model", "models/fixture/student_fixture.toml"])
            .args(["--scenarios", "lane_keep,following", "--seeds", "7..9", "--jobs", jobs, "--json"])
            .arg(&json)
            .output()
            .unwrap();
        assert!(out.status.success(), "--jobs {jobs}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
    };
    let (one, three) = (table("1"), table("3"));
    assert_eq!(one["runs"].as_array().map(Vec::len), Some(4));
    assert!(one["runs"].as_array().unwrap().iter().all(|r| r["commands_hash"].is_string()));
    assert_eq!(one, three);
    let zero = rtvla().args(["sim", "eval", "--jobs", "0"]).output().unwrap();
    assert_eq!(zero.status.code(), Some(2), "--jobs 0 is bad input");
}

#[test]
fn an_early_manual_snapshot_request_does_not_kill_the_process() {
    let mut child = rtvla()
        .args(["drive", "--quiet", "--ticks", "10", "--no-store"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Long before the model is loaded and the recorder takes SIGUSR1 over.
    std::thread::sleep(std::time::Duration::from_millis(30));
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) }, 0);
    assert!(child.wait().unwrap().success());
}

#[test]
fn profiles_that_cannot_drive_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let board = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/boards/host-sim.toml")).unwrap();
    let cases = [
        ("stale_after_ms = 150", "stale_after_ms = 0", "every frame would be stale"),
        ("cpu_affinity = []", "cpu_affinity = [999]", "names CPU 999"),
        ("cpu_affinity = []", "cpu_affinity = [5000]", "beyond what Linux can address"),
        ("[store]\n", "[store]\npath = \"\"\n", "store.path is empty"),
        ("budget_bytes = 67108864", "budget_bytes = 4096", "store.budget_bytes = 4096"),
    ];
    for (i, (from, to, needle)) in cases.into_iter().enumerate() {
        let p = dir.path().join(format!("b{i}.toml"));
        assert!(board.contains(from));
        std::fs::write(&p, board.replace(from, to)).unwrap();
        assert_bad_input(&["drive", "--ticks", "3", "--no-store", "--board", p.to_str().unwrap()], needle);
    }
    let (std, mean) = ("std = [0.229, 0.224, 0.225]", "mean = [0.485, 0.456, 0.406]");
    for (from, bad) in
        [(std, "std = [0.0, 1.0, 1.0]"), (std, "std = [nan, 1.0, 1.0]"), (mean, "mean = [inf, 0.0, 0.0]")]
    {
        let m = fixture_manifest_with(dir.path(), from, bad);
        assert_bad_input(&["drive", "--ticks", "3", "--no-store", "--model", &m], "[preprocess]");
    }
}

#[test]
fn the_report_breaks_the_cold_start_down_into_parts_that_fit_the_total() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let out = rtvla().args(["drive", "--no-store", "--ticks", "10", "--report-json"]).arg(&report).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let c = r["cold_start_ms"].as_object().expect("cold_start_ms in the report");
    let ms = |k: &str| c.get(k).and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("cold_start_ms.{k} missing: {c:?}"));
    let total = ms("total");
    assert!(total.is_finite() && total > 0.0, "{c:?}");
    let named = ["model_load", "optimise", "first_inference", "camera_open", "store_open", "pre_main", "other"];
    for k in named {
        assert!(ms(k).is_finite() && ms(k) >= 0.0 && ms(k) <= total, "{k}: {c:?}");
    }
    let sum: f64 = c.iter().filter(|(k, _)| *k != "total").map(|(_, v)| v.as_f64().unwrap()).sum();
    assert!(sum <= total + 1e-6, "parts add up to {sum} ms, more than the total {total} ms: {c:?}");
    assert!(ms("model_load") > 0.0 && ms("optimise") > 0.0 && ms("first_inference") > 0.0, "{c:?}");
    // The human summary has it on one line.
    let summary = String::from_utf8_lossy(&out.stdout);
    assert_eq!(summary.lines().filter(|l| l.contains("cold start")).count(), 1, "{summary}");
}

/// `cargo run` builds and then execs the binary in its own, long-running process: the kernel's start time of that
/// process is not the binary's, so the report leaves the time before `main` out rather than count the build.
#[test]
fn the_cold_start_leaves_out_a_start_time_from_before_an_exec() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    let bin = env!("CARGO_BIN_EXE_rtvla");
    let script = r#"/bin/sleep 0.5; exec "$0" drive --no-store --ticks 10 --report-json "$1""#;
    let out =
        Command::new("sh").args(["-c", script, bin]).arg(&report).current_dir(env!("CARGO_MANIFEST_DIR")).output();
    let out = out.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let pre_main = r["cold_start_ms"]["pre_main"].as_f64().expect("cold_start_ms.pre_main");
    assert_eq!(pre_main, 0.0, "the shell's 0.5 s before the exec counted as start-up: {}", r["cold_start_ms"]);
}
