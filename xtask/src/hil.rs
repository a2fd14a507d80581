//! `cargo xtask hil`: hardware-in-the-loop over the wire. The device side runs `rtvla drive` on a `net` board (a
//! local process, or the static aarch64 binary in the QEMU VM); the host runs `rtvla sim serve` as the rig and
//! scores each run. In lockstep the scores and commands hashes must equal `rtvla sim eval --policy model` on the
//! same seeds: the wire changes nothing about what the car does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{read_json, release_bin, run, step};

#[derive(Clone, Debug, clap::Args)]
pub struct HilOptions {
    /// Where the device side runs: local (a process here) or qemu (the static aarch64 binary in the arm64 VM).
    #[arg(long, default_value = "local")]
    pub target: String,
    /// Scenarios, as `sim eval` takes them.
    #[arg(long, default_value = "following,cut_in")]
    pub scenarios: String,
    /// Seed range A..B, as `sim eval` takes it (held-out seeds by default).
    #[arg(long, default_value = "1000000..1000002")]
    pub seeds: String,
    /// lockstep (deterministic, compared with sim eval) or realtime (reports the network latency).
    #[arg(long, default_value = "lockstep")]
    pub pacing: String,
    /// Write the rig's JSON report (sim eval's format plus the wire's figures and the comparison) here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// A key the rig and the device share for this run (mode 600, as the runtime demands).
pub(crate) fn write_key(dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("rig.key");
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))?;
    std::fs::write(&p, bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    Ok(p)
}

pub(crate) fn free_udp_port() -> Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// boards/hil-local.toml with this run's rig address, key and pacing; the model path made absolute.
pub(crate) fn local_board(root: &Path, dir: &Path, rig: &str, key: &Path, pacing: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(root.join("boards/hil-local.toml"))?;
    let model = root.join("models/student/student.toml");
    let text = text
        .replace("\"../models/student/student.toml\"", &format!("{:?}", model.display().to_string()))
        .replace("\"127.0.0.1:47700\"", &format!("{rig:?}"))
        .replace("pacing = \"lockstep\"", &format!("pacing = {pacing:?}"))
        .replace("# key_file = \"rig.key\"", &format!("key_file = {:?}", key.display().to_string()));
    let p = dir.join("hil-board.toml");
    std::fs::write(&p, text)?;
    Ok(p)
}

pub fn hil(root: &Path, o: &HilOptions) -> Result<()> {
    let bin = release_bin(root);
    if !bin.exists() {
        run(crate::cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    }
    let dir = crate::tempdir()?.join("hil");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = write_key(&dir)?;
    let serve_json = dir.join("serve.json");
    let report = match o.target.as_str() {
        "local" => {
            step(&format!("HIL, local device: rtvla drive on a net board ⇄ rtvla sim serve ({})", o.pacing));
            let port = free_udp_port()?;
            let rig = format!("127.0.0.1:{port}");
            let board = local_board(root, &dir, &rig, &key, &o.pacing)?;
            let serve = start_rig(&bin, &rig, &key, o, &serve_json, &[])?;
            drive_until_rig_done(serve, || {
                Command::new(&bin)
                    .args(["drive", "--quiet", "--no-store", "--board"])
                    .arg(&board)
                    .spawn()
                    .map_err(Into::into)
            })?;
            read_json(&serve_json)?
        }
        "qemu" => {
            step("HIL, device in the arm64 VM: the static aarch64 rtvla ⇄ rtvla sim serve on the host");
            crate::qemu_hil::hil(root, o, &dir, &key, &serve_json)?
        }
        other => bail!("--target {other:?}: expected local or qemu"),
    };
    let mut report = report;
    summarise(&report)?;
    // In the VM the model runs on (emulated) aarch64 and the frames travel as JPEG: not bit-identical, not compared.
    if o.pacing == "lockstep" && o.target == "local" {
        step("the same seeds in-process: rtvla sim eval --policy model");
        let eval_json = dir.join("eval.json");
        run(Command::new(&bin)
            .args(["sim", "eval", "--policy", "model", "--scenarios", &o.scenarios, "--seeds", &o.seeds, "--json"])
            .arg(&eval_json))?;
        let matched = compare(&report, &read_json(&eval_json)?)?;
        report["matches_sim_eval"] = serde_json::json!(matched);
    }
    if let Some(p) = &o.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

/// `rtvla sim serve` for the options' scenarios and seeds, in the background.
pub(crate) fn start_rig(
    bin: &Path,
    bind: &str,
    key: &Path,
    o: &HilOptions,
    json: &Path,
    extra: &[&str],
) -> Result<Child> {
    Command::new(bin)
        .args(["sim", "serve", "--bind", bind, "--pacing", &o.pacing, "--scenarios", &o.scenarios])
        .args(["--seeds", &o.seeds, "--verbose", "--key"])
        .arg(key)
        .arg("--json")
        .arg(json)
        .args(extra)
        .spawn()
        .context("starting rtvla sim serve")
}

/// One device run per episode until the rig has scored them all (each run ends with the rig's `done`).
fn drive_until_rig_done(mut rig: Child, mut device: impl FnMut() -> Result<Child>) -> Result<()> {
    let started = Instant::now();
    loop {
        if let Some(status) = rig.try_wait()? {
            if !status.success() {
                bail!("rtvla sim serve failed ({status})");
            }
            return Ok(());
        }
        let mut d = device()?;
        loop {
            if let Some(st) = d.try_wait()? {
                if !st.success() {
                    let _ = rig.kill();
                    bail!("the device's rtvla drive failed ({st})");
                }
                break;
            }
            if rig.try_wait()?.is_some() {
                // All episodes scored: this run waits for a rig that is gone.
                let _ = d.kill();
                let _ = d.wait();
                break;
            }
            if started.elapsed() > Duration::from_secs(1800) {
                let _ = d.kill();
                let _ = rig.kill();
                bail!("HIL run took longer than 30 minutes");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn summarise(r: &serde_json::Value) -> Result<()> {
    let w = &r["wire"];
    eprintln!(
        "HIL: DS {:.1} over {} runs ({} errors); frame→command latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms; \
         {} datagrams sent, {} refused, {} frames unanswered, {} resends",
        r["driving_score"].as_f64().unwrap_or(f64::NAN),
        r["runs"].as_array().map_or(0, Vec::len),
        r["errors"].as_array().map_or(0, Vec::len),
        w["latency_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
        w["latency_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        w["latency_ms"]["max"].as_f64().unwrap_or(f64::NAN),
        w["datagrams_sent"],
        w["refused"],
        w["frames_unanswered"],
        w["resends"],
    );
    if let Some(e) = r["errors"].as_array().filter(|e| !e.is_empty()) {
        bail!("HIL runs failed: {e:?}");
    }
    Ok(())
}

/// Lockstep over the wire must drive exactly as in-process: same score and commands hash, run by run.
fn compare(wire: &serde_json::Value, eval: &serde_json::Value) -> Result<bool> {
    let runs = |v: &serde_json::Value| -> Vec<(String, u64, f64, String)> {
        v["runs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| {
                        (
                            r["scenario"].as_str().unwrap_or("").to_string(),
                            r["seed"].as_u64().unwrap_or(0),
                            r["score"].as_f64().unwrap_or(f64::NAN),
                            r["commands_hash"].as_str().unwrap_or("none").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let (a, b) = (runs(wire), runs(eval));
    for (w, e) in a.iter().zip(&b) {
        eprintln!("  {:<12} {:>8}  wire DS {:>6.1} {}   in-process DS {:>6.1} {}", w.0, w.1, w.2, w.3, e.2, e.3);
    }
    if a.len() != b.len() || a.iter().zip(&b).any(|(w, e)| w.0 != e.0 || w.1 != e.1 || w.2 != e.2 || w.3 != e.3) {
        bail!("lockstep HIL differs from sim eval --policy model on the same seeds (see above)");
    }
    eprintln!("lockstep HIL = sim eval --policy model: {} runs, same driving scores and commands hashes", a.len());
    Ok(true)
}

/// CI: the reference Python rig (standard library only) drives the binary for a few ticks over a keyed link.
pub fn python_client_check(root: &Path) -> Result<()> {
    let bin = release_bin(root);
    let dir = crate::tempdir()?.join("pyrig");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let key = write_key(&dir)?;
    let rig = format!("127.0.0.1:{}", free_udp_port()?);
    let board = local_board(root, &dir, &rig, &key, "lockstep")?;
    let rig_json = dir.join("rig.json");
    let mut py = Command::new("python3")
        .arg(root.join("tools/rtvla_rig.py"))
        .args(["--bind", &rig, "--ticks", "20", "--timeout", "20", "--key"])
        .arg(&key)
        .arg("--json")
        .arg(&rig_json)
        .stdout(Stdio::inherit())
        .spawn()
        .context("starting tools/rtvla_rig.py")?;
    std::thread::sleep(Duration::from_millis(300));
    let report = dir.join("report.json");
    run(Command::new(&bin)
        .args(["drive", "--quiet", "--no-store", "--board"])
        .arg(&board)
        .arg("--report-json")
        .arg(&report))?;
    if !py.wait()?.success() {
        bail!("tools/rtvla_rig.py failed");
    }
    let r = read_json(&report)?;
    let rig = read_json(&rig_json)?;
    eprintln!(
        "python rig: {} commands, {} refused; runtime: {} ticks, {} frames delivered, faults {}",
        rig["commands"], rig["refused"], r["ticks"], r["link"]["frames_delivered"], r["faults"]
    );
    if r["ticks"].as_u64() != Some(21) || r["link"]["frames_delivered"].as_u64() != Some(21) {
        bail!("expected 21 ticks on 21 frames from the Python rig: {}", r);
    }
    if r["faults"].as_object().is_some_and(|f| !f.is_empty()) || r["link"]["auth_failed"].as_u64() != Some(0) {
        bail!("the Python rig's run had faults or refused datagrams: {}", r);
    }
    Ok(())
}

/// The runtime's files, which must not know the simulator: it plugs in from outside (a `Plant`, or a rig on the
/// wire). Everything under `src/` except the simulator itself, the CLI entry point and the offline tools.
const NOT_SIM: &[&str] = &["sim/", "main.rs"];

/// CI: no file of the runtime names the simulator's module (`crate::sim`, `super::sim`, `rtvla::sim`).
pub fn runtime_does_not_import_sim(root: &Path) -> Result<()> {
    let src = root.join("src");
    let mut offenders = Vec::new();
    let mut checked = 0;
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let p = entry?.path();
            let rel = p.strip_prefix(&src)?.to_string_lossy().replace('\\', "/");
            if NOT_SIM.iter().any(|n| rel == *n || rel.starts_with(n)) {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if rel.ends_with(".rs") {
                checked += 1;
                for (i, line) in std::fs::read_to_string(&p)?.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    if ["crate::sim", "super::sim", "rtvla::sim"].iter().any(|m| code.contains(m)) {
                        offenders.push(format!("src/{rel}:{}: {}", i + 1, line.trim()));
                    }
                }
            }
        }
    }
    if checked < 20 {
        bail!("checked only {checked} files under src/: the layout changed, update this check");
    }
    if !offenders.is_empty() {
        bail!("the runtime imports the simulator:\n{}", offenders.join("\n"));
    }
    eprintln!("{checked} runtime files checked: none imports the simulator");
    Ok(())
}
