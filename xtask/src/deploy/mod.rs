//! `cargo xtask deploy`: flash a car computer in one command. Builds for the board, uploads over the system's
//! OpenSSH (key only, host key checked) into a versioned release, switches the atomic `current` symlink, installs
//! the generated systemd unit (or, on a device without systemd, starts rtvla under a pidfile), restarts, runs the
//! health check (`rtvla status`: ticking, on the new release) and rolls back to the previous release when it fails.
//!
//! Device layout (`deploy.install_dir`): `releases/<version>/{rtvla, board.toml, models/…, rtvla.service,
//! SHA256SUMS}`, `current -> releases/<version>`, `run/` (script service: pidfile, log, status sockets).

pub mod unit;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::step;

#[derive(Clone, Debug, clap::Args)]
pub struct DeployOptions {
    /// Board profile (name under boards/ or a path); its `[deploy]` section names the device.
    #[arg(long)]
    pub board: String,
    /// USER@HOST (default: the profile's deploy.user @ deploy.host).
    #[arg(long)]
    pub host: Option<String>,
    /// ssh port (default: the profile's deploy.port, else 22).
    #[arg(long)]
    pub port: Option<u16>,
    /// Private key for ssh (key authentication only; default: ssh's own).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// known_hosts file holding the device's host key (default: ssh's own). Unknown host keys are refused.
    #[arg(long)]
    pub known_hosts: Option<PathBuf>,
    /// Print each step and remote command without touching the device.
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds the new release has to show up ticking.
    #[arg(long, default_value_t = 20)]
    pub health_timeout_s: u64,
    /// Use this binary instead of building one (tests; must match the board's target).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Test hook: cut the upload stream after this many bytes, as a dropped connection would.
    #[arg(long, hide = true)]
    pub interrupt_upload_after_bytes: Option<u64>,
}

/// The device as ssh sees it, and how every remote step is run and logged.
pub struct Device {
    dest: String,
    port: u16,
    key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    dry_run: bool,
    log: Vec<String>,
    cut_upload_at: Option<u64>,
    /// Prefix of the commands that need root ("sudo -n " for a non-root deploy user).
    sudo: &'static str,
}

impl Device {
    fn ssh_base(&self) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"]);
        c.args(["-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"]);
        c.args(["-p", &self.port.to_string()]);
        if let Some(k) = &self.key {
            c.arg("-i").arg(k).args(["-o", "IdentitiesOnly=yes"]);
        }
        if let Some(k) = &self.known_hosts {
            c.arg("-o").arg(format!("UserKnownHostsFile={}", k.display()));
        }
        c.arg(&self.dest);
        c
    }

    /// Run one shell command on the device; its stdout, or a one-line error saying what failed.
    pub fn run(&mut self, what: &str, script: &str) -> Result<String> {
        self.log.push(format!("[{what}] {script}"));
        eprintln!("  remote: {what}");
        if self.dry_run {
            eprintln!("    $ {script}");
            return Ok(String::new());
        }
        let out = self.ssh_base().arg(script).stdin(Stdio::null()).output().context("running ssh")?;
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        self.log.push(format!("  exit {:?} {err}", out.status.code()));
        if !out.status.success() {
            bail!("{what}: {}", classify(&err, out.status.code()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stream a local tar of `dir` into a remote command's stdin.
    fn upload(&mut self, dir: &Path, remote_cmd: &str) -> Result<()> {
        self.log.push(format!("[upload] tar -C {} -cf - . | {remote_cmd}", dir.display()));
        eprintln!("  remote: upload {}", dir.display());
        if self.dry_run {
            eprintln!("    $ tar -C {} -cf - . | ssh … '{remote_cmd}'", dir.display());
            return Ok(());
        }
        let mut tar = Command::new("tar").arg("-C").arg(dir).args(["-cf", "-", "."]).stdout(Stdio::piped()).spawn()?;
        let mut ssh = self.ssh_base().arg(remote_cmd).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (mut from, mut to) = (tar.stdout.take().unwrap(), ssh.stdin.take().unwrap());
        let limit = self.cut_upload_at.unwrap_or(u64::MAX);
        let copied = std::io::copy(&mut std::io::Read::take(&mut from, limit), &mut to);
        drop(to); // end of stream (early, when cut): the device's tar sees where it stopped
        drop(from);
        let out = ssh.wait_with_output()?;
        let tar_ok = tar.wait()?.success() && copied.is_ok();
        if !out.status.success() || !tar_ok {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            bail!("upload: {}", classify(&err, out.status.code()));
        }
        Ok(())
    }
}

/// ssh's and the device's errors in one line a person can act on.
fn classify(stderr: &str, code: Option<i32>) -> String {
    let s = stderr.to_lowercase();
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    if s.contains("host key verification failed") || s.contains("no ") && s.contains("host key is known") {
        format!("the device's host key is not in known_hosts (add it: ssh-keyscan -p PORT HOST >> known_hosts): {last}")
    } else if s.contains("permission denied") {
        format!("the device refused the ssh key: {last}")
    } else if s.contains("connection refused")
        || s.contains("timed out")
        || s.contains("could not resolve")
        || s.contains("no route to host")
        || code == Some(255) && s.contains("connect to host")
    {
        format!("device unreachable: {last}")
    } else if s.contains("no space left") {
        format!("the device's disk is full: {last}")
    } else {
        format!("exit {code:?}: {last}")
    }
}

/// `cargo xtask deploy`.
pub fn deploy(root: &Path, o: &DeployOptions) -> Result<()> {
    let board_path = crate::cross::board_path(root, &o.board)?;
    let text = std::fs::read_to_string(&board_path)?;
    let board: toml::Value = toml::from_str(&text).with_context(|| format!("parsing {}", board_path.display()))?;
    let d = board.get("deploy").with_context(|| format!("{}: no [deploy] section", board_path.display()))?;
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let install_dir = PathBuf::from(s("install_dir").context("deploy.install_dir is required")?);
    let dest = match (&o.host, s("host")) {
        (Some(h), _) => h.clone(),
        (None, Some(h)) => s("user").map_or(h.clone(), |u| format!("{u}@{h}")),
        (None, None) => bail!("no --host and no deploy.host in {}", board_path.display()),
    };
    let port = o.port.or(d.get("port").and_then(|v| v.as_integer()).map(|p| p as u16)).unwrap_or(22);
    let keep = d.get("keep_releases").and_then(|v| v.as_integer()).unwrap_or(3).max(2) as usize;
    let service = s("service").unwrap_or_else(|| "systemd".into());
    if !["systemd", "script"].contains(&service.as_str()) {
        bail!("deploy.service = {service:?}: expected systemd or script");
    }
    let mut dev = Device {
        dest,
        port,
        key: o.key.clone(),
        known_hosts: o.known_hosts.clone(),
        dry_run: o.dry_run,
        log: vec![],
        cut_upload_at: o.interrupt_upload_after_bytes,
        sudo: "",
    };
    let t0 = Instant::now();
    let result = deploy_to(root, o, &board, &board_path, &install_dir, keep, &service, &mut dev);
    let log_dir = crate::target_dir(root).join("deploy");
    std::fs::create_dir_all(&log_dir)?;
    let log = log_dir.join(format!("deploy-{}.log", crate::now_stamp()));
    std::fs::write(&log, dev.log.join("\n") + "\n")?;
    eprintln!("deploy log: {} ({:.1} s)", log.display(), t0.elapsed().as_secs_f64());
    result
}

#[allow(clippy::too_many_arguments)]
fn deploy_to(
    root: &Path,
    o: &DeployOptions,
    board: &toml::Value,
    board_path: &Path,
    dir: &Path,
    keep: usize,
    service: &str,
    dev: &mut Device,
) -> Result<()> {
    step("check the device is reachable (ssh, key only, host key checked)");
    let reach = dev.run("reach", "echo $(uname -m) $(id -u)")?;
    let arch = reach.split_whitespace().next().unwrap_or("").to_string();
    // systemd's unit directory and systemctl need root: a non-root deploy user goes through sudo (no password).
    dev.sudo = if reach.split_whitespace().nth(1).is_some_and(|u| u != "0") { "sudo -n " } else { "" };
    step("build and stage the release (binary, board, model bundle, unit, SHA256SUMS)");
    let bin = match &o.binary {
        Some(b) => b.clone(),
        None if o.dry_run => PathBuf::from("<built binary>"),
        None => crate::cross::build(root, &board_path.display().to_string())?,
    };
    let version = release_version(root);
    let stage = crate::tempdir()?.join(format!("release-{version}"));
    if !o.dry_run {
        stage_release(root, board, board_path, &bin, dir, &stage)?;
    }
    eprintln!("release {version} for {} ({arch})", dev.dest);
    let rel = dir.join("releases").join(&version);
    let incoming = dir.join("releases").join(format!(".incoming-{version}"));
    let need_kib = if o.dry_run { 0 } else { du_kib(&stage)? * 2 };
    step("upload into a new release directory (nothing running is touched)");
    dev.run(
        "prepare",
        &format!(
            "set -e; mkdir -p {d}/releases {d}/run; rm -rf {d}/releases/.incoming-*; \
             avail=$(df -Pk {d}/releases | awk 'NR==2 {{print $4}}'); \
             if [ \"$avail\" -lt {need_kib} ]; then echo \"No space left on device: $avail KiB free, {need_kib} KiB needed\" >&2; exit 28; fi",
            d = dir.display()
        ),
    )?;
    let upload = dev.upload(&stage, &format!("mkdir -p {i} && tar -C {i} -xf -", i = incoming.display()));
    let verified = upload.and_then(|_| {
        dev.run(
            "verify (sha256 of every file)",
            &format!("cd {} && sha256sum --quiet -c SHA256SUMS", incoming.display()),
        )
    });
    if let Err(e) = verified {
        let _ = dev.run("clean up the partial upload", &format!("rm -rf {}", incoming.display()));
        return Err(e.context("upload failed; the running release is untouched"));
    }
    dev.run("publish the release", &format!("mv -T {} {}", incoming.display(), rel.display()))?;
    let previous = dev.run("previous release", &format!("readlink {}/current || true", dir.display()))?;
    let previous = previous.trim().to_string();
    // A release that cannot even start (systemd's restart job fails when a Type=notify service exits before
    // READY=1) is unhealthy like one that starts and does not tick: both roll back.
    let checked = switch_and_restart(dev, dir, &rel, service).and_then(|_| {
        step(&format!("health check: rtvla status on the device, up to {} s", o.health_timeout_s));
        health(dev, dir, &rel, service, o.health_timeout_s)
    });
    match checked {
        Ok(msg) => {
            eprintln!("healthy: {msg}");
            prune(dev, dir, &rel, &previous, keep)?;
            if dev.dry_run {
                eprintln!("dry run: every step above was printed, nothing on {} was changed", dev.dest);
            } else {
                eprintln!("deployed {version} to {}", dev.dest);
            }
            Ok(())
        }
        Err(e) if previous.is_empty() => {
            Err(e.context("the first release is unhealthy and there is none to roll back to"))
        }
        Err(e) => {
            let why = last_words(dev, dir, service);
            let e = e.context(format!("the new release's own words: {why}"));
            eprintln!("UNHEALTHY: {e:#}; rolling back to {previous}");
            let prev = PathBuf::from(&previous);
            let prev = if prev.is_absolute() { prev } else { dir.join(prev) };
            switch_and_restart(dev, dir, &prev, service)?;
            let msg = health(dev, dir, &prev, service, o.health_timeout_s)
                .context("the previous release is not healthy either")?;
            eprintln!("rolled back: {msg}");
            bail!("release {version} failed its health check ({e:#}); rolled back to {previous}, which is running")
        }
    }
}

/// Point `current` at `rel` atomically (rename over the link), then restart the service.
fn switch_and_restart(dev: &mut Device, dir: &Path, rel: &Path, service: &str) -> Result<()> {
    let d = dir.display();
    dev.run(
        "switch current (atomic rename of a symlink)",
        &format!("ln -sfn {} {d}/current.new && mv -T {d}/current.new {d}/current", rel.display()),
    )?;
    match service {
        "systemd" => {
            let sudo = dev.sudo;
            dev.run(
                "install the unit and restart",
                &format!(
                    "{sudo}install -m 644 {d}/current/rtvla.service /etc/systemd/system/rtvla.service && \
                     {sudo}systemctl daemon-reload && {sudo}systemctl enable --quiet rtvla && {sudo}systemctl restart rtvla"
                ),
            )?
        }
        _ => dev.run("restart (pidfile service)", &script_restart(dir))?,
    };
    Ok(())
}

/// A device without systemd: stop the pidfile's process (SIGTERM, as systemd would), start the new one detached.
fn script_restart(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "cd {d} && if [ -f run/rtvla.pid ]; then p=$(cat run/rtvla.pid); kill -TERM $p 2>/dev/null || true; \
         i=0; while kill -0 $p 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; kill -KILL $p 2>/dev/null || true; fi; \
         rm -rf run/status; mkdir -p run/status; \
         RTVLA_STATUS_DIR={d}/run/status XDG_STATE_HOME={d}/state setsid nohup $(cat current/exec-args) \
         </dev/null >run/rtvla.log 2>&1 & echo $! > run/rtvla.pid"
    )
}

/// Poll `rtvla status` on the device until a drive of `rel` ticks, or the timeout.
fn health(dev: &mut Device, dir: &Path, rel: &Path, service: &str, timeout_s: u64) -> Result<String> {
    if dev.dry_run {
        dev.run("health", "rtvla status --json")?;
        return Ok("dry run".into());
    }
    let status_dir =
        if service == "systemd" { "/run/rtvla".to_string() } else { format!("{}/run/status", dir.display()) };
    let t = Instant::now();
    let mut last = String::from("no status yet");
    while t.elapsed() < Duration::from_secs(timeout_s) {
        std::thread::sleep(Duration::from_millis(1000));
        let cmd = format!(
            "{}/rtvla status --json --dir {status_dir}; for p in $(ls {status_dir} 2>/dev/null | sed -n 's/^drive-\\([0-9]*\\)\\.sock$/\\1/p'); do echo \"exe $p $(readlink /proc/$p/exe)\"; done",
            rel.display()
        );
        let out = match dev.run("health: rtvla status", &cmd) {
            Ok(o) => o,
            Err(e) => {
                last = format!("{e:#}");
                continue;
            }
        };
        let json_end = out.rfind(']').map_or(0, |i| i + 1);
        let all: serde_json::Value = serde_json::from_str(&out[..json_end]).unwrap_or_default();
        let exe_in_rel = |pid: u64| out.lines().any(|l| l.starts_with(&format!("exe {pid} {}/", rel.display())));
        let good = all.as_array().into_iter().flatten().find(|s| {
            s["ticking"] == true && s["ticks"].as_u64().unwrap_or(0) >= 10 && exe_in_rel(s["pid"].as_u64().unwrap_or(0))
        });
        if let Some(s) = good {
            return Ok(format!(
                "pid {} of {} ticking: {} ticks, {} deadline misses, {} fallbacks",
                s["pid"],
                rel.display(),
                s["ticks"],
                s["deadline_misses"],
                s["fallbacks"]
            ));
        }
        last = format!("no drive of this release ticking (status: {})", all);
    }
    bail!("{last}")
}

/// The last lines the service wrote (why an unhealthy release did not tick), as one line.
fn last_words(dev: &mut Device, dir: &Path, service: &str) -> String {
    let cmd = if service == "systemd" {
        "journalctl -u rtvla -n 3 --no-pager -o cat 2>/dev/null || true".to_string()
    } else {
        format!("tail -n 3 {}/run/rtvla.log 2>/dev/null || true", dir.display())
    };
    let out = dev.run("the service's last lines", &cmd).unwrap_or_default();
    let words: Vec<&str> = out.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if words.is_empty() {
        "(nothing)".into()
    } else {
        words.join(" / ")
    }
}

/// Keep the newest `keep` releases, never the running one or its predecessor.
fn prune(dev: &mut Device, dir: &Path, rel: &Path, previous: &str, keep: usize) -> Result<()> {
    let d = dir.display();
    dev.run(
        "prune old releases",
        &format!(
            "cd {d}/releases && ls -1t | grep -v '^\\.' | tail -n +{} | while read r; do \
             [ \"{d}/releases/$r\" = \"{}\" ] || [ \"{d}/releases/$r\" = \"{previous}\" ] || rm -rf \"$r\"; done",
            keep + 1,
            rel.display()
        ),
    )?;
    Ok(())
}

/// `<crate version>-<git short sha>[-dirty]-<UTC timestamp>`: sortable, and says what was deployed.
fn release_version(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let sha = git(&["rev-parse", "--short", "HEAD"]).filter(|s| !s.is_empty()).unwrap_or_else(|| "nogit".into());
    let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    format!("{}-{sha}{}-{}", env!("CARGO_PKG_VERSION"), if dirty { "-dirty" } else { "" }, crate::now_stamp())
}

fn du_kib(dir: &Path) -> Result<u64> {
    let out = Command::new("du").arg("-sk").arg(dir).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("0").parse()?)
}

/// The release directory: binary, the board (model path made release-relative), the model bundle, the unit, the
/// start command for a script service, and SHA256SUMS over all of it. A model whose sha256 does not match its
/// manifest is refused here, before anything is uploaded.
fn stage_release(
    root: &Path,
    board: &toml::Value,
    board_path: &Path,
    bin: &Path,
    install_dir: &Path,
    stage: &Path,
) -> Result<()> {
    let _ = std::fs::remove_dir_all(stage);
    std::fs::create_dir_all(stage.join("models"))?;
    std::fs::copy(bin, stage.join("rtvla"))?;
    let manifest_rel = board
        .get("model")
        .and_then(|m| m.get("manifest"))
        .and_then(|v| v.as_str())
        .context("board has no model.manifest")?;
    let manifest = board_path.parent().unwrap_or(root).join(manifest_rel);
    let mtext = std::fs::read_to_string(&manifest).with_context(|| format!("model manifest {}", manifest.display()))?;
    let m: toml::Value = toml::from_str(&mtext)?;
    let onnx_name =
        m.get("model").and_then(|v| v.get("onnx")).and_then(|v| v.as_str()).context("manifest model.onnx")?;
    let want =
        m.get("model").and_then(|v| v.get("sha256")).and_then(|v| v.as_str()).context("manifest model.sha256")?;
    let onnx = manifest.parent().unwrap().join(onnx_name);
    let got = sha256_hex(&onnx)?;
    if got != want {
        bail!("model {}: sha256 {got} does not match its manifest's {want}; not deploying", onnx.display());
    }
    let mname = manifest.file_name().unwrap();
    std::fs::copy(&manifest, stage.join("models").join(mname))?;
    std::fs::copy(&onnx, stage.join("models").join(onnx_name))?;
    let mut b = board.clone();
    if let Some(t) = b.get_mut("model").and_then(|v| v.as_table_mut()) {
        t.insert("manifest".into(), toml::Value::String(format!("models/{}", mname.to_string_lossy())));
    }
    std::fs::write(stage.join("board.toml"), toml::to_string(&b)?)?;
    let sim = board.get("camera").and_then(|c| c.get("source")).and_then(|v| v.as_str()) == Some("sim");
    let unit = unit::render(&unit::UnitSpec { board, install_dir, repeat: sim });
    std::fs::write(stage.join("rtvla.service"), unit)?;
    let repeat = if sim { " --repeat" } else { "" };
    let d = install_dir.display();
    std::fs::write(
        stage.join("exec-args"),
        format!("{d}/current/rtvla drive --board {d}/current/board.toml --quiet{repeat}\n"),
    )?;
    let out = Command::new("sh")
        .current_dir(stage)
        .arg("-c")
        .arg("find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS")
        .status()?;
    if !out.success() {
        bail!("sha256sum over the release failed");
    }
    Ok(())
}

fn sha256_hex(p: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(p).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string())
}
