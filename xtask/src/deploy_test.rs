//! `cargo xtask deploy-test`: `cargo xtask deploy` against a real OpenSSH server (Debian's `openssh-server`) on
//! loopback, with a temporary host key, client key and device root. The device runs rtvla under the pidfile
//! service (this machine's PID 1 is not systemd); the generated systemd unit is checked with
//! `systemd-analyze verify` and `systemd-analyze security` (exposure printed).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::deploy::{self, DeployOptions};
use crate::{release_bin, run, step};

struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "rtvla-deploy-test", "-f"]).arg(path))
}

fn free_tcp_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// sshd on 127.0.0.1:<free port>, key authentication only, this test's keys.
fn start_sshd(dir: &Path) -> Result<Sshd> {
    crate::cross::ensure_apt(&["openssh-server", "openssh-client"])?;
    std::fs::create_dir_all("/run/sshd")?; // privilege separation directory
    keygen(&dir.join("host_key"))?;
    keygen(&dir.join("client_key"))?;
    keygen(&dir.join("other_key"))?;
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))?;
    let port = free_tcp_port()?;
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
            d = dir.display()
        ),
    )?;
    let child = Command::new("/usr/sbin/sshd").args(["-D", "-e", "-f"]).arg(&cfg).stderr(Stdio::null()).spawn()?;
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("sshd did not listen on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub"))?;
    let mut parts = host_pub.split_whitespace();
    let (kind, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{port} {kind} {key}\n"))?;
    std::fs::write(dir.join("empty_known_hosts"), "")?;
    Ok(Sshd { child, port, dir: dir.to_path_buf() })
}

/// host-sim with a [deploy] section for this device, the model path absolute; `edit` changes the text.
fn board(
    root: &Path,
    dir: &Path,
    name: &str,
    install_dir: &Path,
    port: u16,
    edit: &dyn Fn(String) -> String,
) -> Result<PathBuf> {
    let deploy = format!(
        "host = \"127.0.0.1\"\nuser = \"root\"\nport = {port}\ninstall_dir = {:?}\nservice = \"script\"\nkeep_releases = 2\n",
        install_dir.display().to_string()
    );
    host_sim_board(root, dir, name, &deploy, edit)
}

/// boards/host-sim.toml with the model path made absolute, `edit` applied, and this `[deploy]` section.
pub(crate) fn host_sim_board(
    root: &Path,
    dir: &Path,
    name: &str,
    deploy: &str,
    edit: &dyn Fn(String) -> String,
) -> Result<PathBuf> {
    let model = root.join("models/student/student.toml");
    let text = std::fs::read_to_string(root.join("boards/host-sim.toml"))?
        .replace("\"../models/student/student.toml\"", &format!("{:?}", model.display().to_string()));
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, edit(text) + "\n[deploy]\n" + deploy)?;
    Ok(p)
}

fn opts(root: &Path, board: &Path, ssh: &Sshd) -> DeployOptions {
    DeployOptions {
        board: board.display().to_string(),
        host: None,
        port: None,
        key: Some(ssh.dir.join("client_key")),
        known_hosts: Some(ssh.dir.join("known_hosts")),
        dry_run: false,
        health_timeout_s: 20,
        binary: Some(release_bin(root)),
        interrupt_upload_after_bytes: None,
    }
}

fn current(install: &Path) -> Result<PathBuf> {
    std::fs::read_link(install.join("current")).context("reading the device's current link")
}

/// The running drive's pid (from the pidfile service) and the release its executable lives in.
fn running(install: &Path) -> Result<(u32, PathBuf)> {
    let pid: u32 = std::fs::read_to_string(install.join("run/rtvla.pid"))?.trim().parse()?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).with_context(|| format!("pid {pid} is not running"))?;
    Ok((pid, exe.parent().unwrap().to_path_buf()))
}

fn expect_err(what: &str, r: Result<()>, needle: &str) -> Result<String> {
    match r {
        Ok(()) => bail!("{what}: deploy succeeded, expected an error naming {needle:?}"),
        Err(e) => {
            let msg = format!("{e:#}");
            if !msg.contains(needle) {
                bail!("{what}: expected {needle:?} in the error, got: {msg}");
            }
            eprintln!("ok ({what}): {msg}");
            Ok(msg)
        }
    }
}

pub fn deploy_test(root: &Path) -> Result<()> {
    let bin = release_bin(root);
    if !bin.exists() {
        run(crate::cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    }
    let dir = crate::tempdir()?.join("deploy-test");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    step("sshd (Debian's openssh-server) on loopback, temporary host and client keys");
    let ssh = start_sshd(&dir)?;
    let install = dir.join("device/opt/rtvla");
    let result = scenario(root, &dir, &install, &ssh);
    // Leave nothing running.
    if let Ok((pid, _)) = running(&install) {
        // SAFETY: kill(2) on a pid we started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    result
}

fn scenario(root: &Path, dir: &Path, install: &Path, ssh: &Sshd) -> Result<()> {
    let good = board(root, dir, "good", install, ssh.port, &|t| t)?;
    step("deploy 1: a good release → healthy");
    deploy::deploy(root, &opts(root, &good, ssh))?;
    let first = current(install)?;
    let (pid1, rel1) = running(install)?;
    if !rel1.ends_with(&first) && rel1 != first {
        bail!("running {} but current is {}", rel1.display(), first.display());
    }
    eprintln!("ok: release {} running as pid {pid1}", first.display());

    step("deploy 2: a release that fails its health check (cpu_affinity names a CPU the device lacks) → rollback");
    std::thread::sleep(Duration::from_millis(1100));
    let bad = board(root, dir, "bad", install, ssh.port, &|t| t.replace("cpu_affinity = []", "cpu_affinity = [63]"))?;
    let mut o = opts(root, &bad, ssh);
    o.health_timeout_s = 6;
    expect_err("unhealthy release", deploy::deploy(root, &o), "rolled back")?;
    let (pid, rel) = running(install)?;
    if current(install)? != first || rel != first {
        bail!(
            "after the rollback: current {}, running {} (pid {pid}); expected {}",
            current(install)?.display(),
            rel.display(),
            first.display()
        );
    }
    eprintln!("ok: rolled back — {} running again as pid {pid}", first.display());

    step("bad input: each a one-line error, the running release untouched");
    let mut o = opts(root, &good, ssh);
    o.port = Some(free_tcp_port()?);
    expect_err("unreachable host", deploy::deploy(root, &o), "unreachable")?;
    let mut o = opts(root, &good, ssh);
    o.key = Some(ssh.dir.join("other_key"));
    expect_err("refused key", deploy::deploy(root, &o), "refused the ssh key")?;
    let mut o = opts(root, &good, ssh);
    o.known_hosts = Some(ssh.dir.join("empty_known_hosts"));
    expect_err("unknown host key", deploy::deploy(root, &o), "host key")?;
    let tampered = tampered_manifest(root, dir)?;
    let wrong_model = board(root, dir, "wrong-model", install, ssh.port, &|t| {
        let model = root.join("models/student/student.toml").display().to_string();
        t.replace(&format!("{model:?}"), &format!("{:?}", tampered.display().to_string()))
    })?;
    expect_err("model sha256 mismatch", deploy::deploy(root, &opts(root, &wrong_model, ssh)), "does not match")?;
    let mut o = opts(root, &good, ssh);
    o.interrupt_upload_after_bytes = Some(4 << 20);
    expect_err("interrupted upload", deploy::deploy(root, &o), "running release is untouched")?;
    full_disk(root, dir, ssh)?;
    let (pid, rel) = running(install)?;
    if rel != first || current(install)? != first {
        bail!("a failed deploy changed the device: running {} (pid {pid})", rel.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(install.join("releases"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".incoming"))
        .collect();
    if !leftovers.is_empty() {
        bail!("a failed upload left {} partial release(s) on the device", leftovers.len());
    }
    eprintln!("ok: after every failed deploy {} is still running as pid {pid}", first.display());
    systemd_checks(root, install)
}

/// A copy of the student's manifest whose sha256 names other bytes.
fn tampered_manifest(root: &Path, dir: &Path) -> Result<PathBuf> {
    let src = root.join("models/student");
    let text = std::fs::read_to_string(src.join("student.toml"))?;
    let sha = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("sha256 = "))
        .context("manifest sha256")?
        .trim_matches('"')
        .to_string();
    let dst = dir.join("tampered");
    std::fs::create_dir_all(&dst)?;
    std::fs::write(dst.join("student.toml"), text.replace(&sha, &"0".repeat(64)))?;
    std::fs::copy(src.join("student.onnx"), dst.join("student.onnx"))?;
    Ok(dst.join("student.toml"))
}

/// A device whose disk is a 4 MiB tmpfs: refused before the upload, in one line.
fn full_disk(root: &Path, dir: &Path, ssh: &Sshd) -> Result<()> {
    let small = dir.join("small-disk");
    std::fs::create_dir_all(&small)?;
    run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"]).arg(&small))?;
    let b = board(root, dir, "small", &small.join("opt/rtvla"), ssh.port, &|t| t);
    let r =
        b.and_then(|b| expect_err("full disk", deploy::deploy(root, &opts(root, &b, ssh)), "disk is full").map(|_| ()));
    let _ = Command::new("umount").arg(&small).status();
    r
}

/// The generated unit on the device: `systemd-analyze verify` (it names the real binary) and the exposure.
fn systemd_checks(root: &Path, install: &Path) -> Result<()> {
    step("the generated systemd unit: systemd-analyze verify + security (exposure)");
    let unit = install.join("current/rtvla.service");
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || err.lines().any(|l| l.contains("rtvla.service")) {
        bail!("systemd-analyze verify {}: {err}", unit.display());
    }
    eprintln!("ok: systemd-analyze verify {}", unit.display());
    for (name, board) in [("host-sim", "boards/host-sim.toml"), ("raspberry-pi-5", "boards/raspberry-pi-5.toml")] {
        let b: toml::Value = toml::from_str(&std::fs::read_to_string(root.join(board))?)?;
        let text = crate::deploy::unit::render(&crate::deploy::unit::UnitSpec {
            board: &b,
            install_dir: Path::new("/opt/rtvla"),
            repeat: name == "host-sim",
        });
        let p = crate::tempdir()?.join(format!("rtvla-{name}.service"));
        std::fs::write(&p, text)?;
        let out = Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&p).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let exposure = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for").nth(1))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("systemd-analyze security printed no exposure: {text}"))?;
        eprintln!("systemd-analyze security, unit for {name}: exposure {exposure:.1} (goal ≤ 2.0)");
        if exposure > 2.0 {
            bail!("unit for {name}: exposure {exposure} > 2.0");
        }
    }
    Ok(())
}
