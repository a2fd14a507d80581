//! `cargo xtask qemu`: the cross-built rtvla in a real arm64 Linux kernel, capturing from the kernel's `vivid`
//! virtual V4L2 camera (qemu-system-aarch64 -M virt, Debian's arm64 kernel from apt, a busybox initramfs).
//!
//! Inside the VM, /init loads the V4L2 + vivid modules, then runs a fixed script of checks and prints each result
//! between markers on the serial console; this side parses them and fails with the first check that did not hold:
//! 1. a drive of N ticks with the bundled student on /dev/video0 (format negotiated, ticks done, a manual snapshot
//!    requested with `kill -USR1` and written, `rtvla store verify` clean, `store ls` count = events_written);
//!    then a drive with vivid's "Percentage of Dropped Buffers" control at 50 % (set through the board's
//!    `camera.controls`): the report must count about that share of the frames as dropped (V4L2 sequence gaps);
//! 2. no such device → exit code and one-line error;
//! 3. a format the device does not offer → exit 2 naming the offered formats;
//! 4. the device vanishes mid-run (vivid unbound, then bound again through sysfs) → stale-frame fault (safe stop),
//!    reconnect, ticks go on.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cross::{self, ensure_apt, ensure_arm64_arch};
use crate::{run, step};

/// Host packages: the system emulator, cpio for the initramfs, kmod to read module dependencies.
pub(crate) const QEMU_PACKAGES: &[&str] = &["qemu-system-arm", "cpio", "kmod", "xz-utils"];

/// Kernel modules vivid needs, in load order (see ../shared/notes-cross-and-qemu.md).
const MODULES: &[&str] = &[
    "rc-core",
    "cec",
    "mc",
    "videodev",
    "videobuf2-common",
    "videobuf2-v4l2",
    "videobuf2-memops",
    "videobuf2-vmalloc",
    "videobuf2-dma-contig",
    "v4l2-dv-timings",
    "v4l2-tpg",
    "vivid",
];

/// vivid's "Percentage of Dropped Buffers" error-injection control for the frame-drop check: that share of
/// capture buffers is skipped by the driver (their sequence numbers too), so the V4L2 source must count drops.
const DROP_PERCENT: u32 = 50;
/// Ticks of the frame-drop drive (0.2 Hz: 15 s of capture at the board's 10 fps).
const DROP_TICKS: u64 = 3;

#[derive(Clone, Debug)]
pub struct QemuOptions {
    pub ticks: u64,
    /// Kill the VM after this long.
    pub timeout: Duration,
    /// Skip the unplug/format/no-device checks (faster look at the drive only).
    pub drive_only: bool,
}

pub(crate) fn cache_dir(root: &Path) -> PathBuf {
    // Next to the cargo target dir, so CI's cached target dir also caches the downloaded kernel.
    crate::target_dir(root).join("qemu")
}

pub(crate) fn output(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Download (once, into the cache) and unpack a Debian package (`name` or `name:arch`) into `dest`.
pub(crate) fn fetch_deb(cache: &Path, pkg: &str, dest: &Path) -> Result<()> {
    let debs = cache.join("debs");
    std::fs::create_dir_all(&debs)?;
    let have = |d: &Path| -> Option<PathBuf> {
        std::fs::read_dir(d).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().starts_with(&format!("{}_", pkg.split(':').next().unwrap_or(pkg))))
                .unwrap_or(false)
        })
    };
    let deb = match have(&debs) {
        Some(d) => d,
        None => {
            step(&format!("apt-get download {pkg}"));
            run(Command::new("apt-get").current_dir(&debs).args(["download", "-q", pkg]))?;
            have(&debs).with_context(|| format!("apt-get download {pkg} left no .deb in {}", debs.display()))?
        }
    };
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(dest))
}

/// The versioned arm64 kernel image package behind the `linux-image-arm64` metapackage.
fn kernel_package() -> Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-arm64:arm64"]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim().trim_end_matches(":arm64").to_string())
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-arm64"))
        .context("apt-cache depends linux-image-arm64:arm64 names no linux-image-*-arm64")
}

/// Unpacked kernel: (vmlinuz, modules dir of that version).
pub(crate) fn kernel(cache: &Path) -> Result<(PathBuf, PathBuf)> {
    let (vmlinuz, modules, _) =
        unpack_kernel(cache, &|| Ok(format!("{}:arm64", kernel_package()?)), "busybox-static:arm64")?;
    Ok((vmlinuz, modules))
}

/// A Debian kernel image package and busybox, unpacked once into `cache/kernel-root`:
/// (vmlinuz, modules dir of that version, busybox). `kernel_pkg` is asked only when nothing is cached yet.
pub(crate) fn unpack_kernel(
    cache: &Path,
    kernel_pkg: &dyn Fn() -> Result<String>,
    busybox_pkg: &str,
) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let root = cache.join("kernel-root");
    let stamp = root.join(".rtvla-unpacked");
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        let pkg = kernel_pkg()?;
        fetch_deb(cache, &pkg, &root)?;
        fetch_deb(cache, busybox_pkg, &root)?;
        std::fs::write(&stamp, pkg)?;
    }
    let vmlinuz = std::fs::read_dir(root.join("boot"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .context("no /boot/vmlinuz-* in the kernel package")?;
    let version = vmlinuz.file_name().unwrap().to_string_lossy().trim_start_matches("vmlinuz-").to_string();
    Ok((vmlinuz, root.join("lib/modules").join(version), root.join("bin/busybox")))
}

/// The start of every initramfs /init here: busybox's applets, and /proc, /sys, /dev, /tmp mounted.
pub(crate) const INIT_PROLOGUE: &str = "#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
";

/// Copy the `names` modules (`<name>.ko`, or `.ko.xz` decompressed: busybox insmod takes plain files) from the
/// modules tree into `out_dir`, in one walk of the tree.
pub(crate) fn copy_modules(modules: &Path, names: &[&str], out_dir: &Path) -> Result<()> {
    let mut found: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            let stem = file.strip_suffix(".ko").or_else(|| file.strip_suffix(".ko.xz"));
            if let Some(name) = stem.filter(|n| names.contains(n)) {
                found.insert(name.to_string(), p);
            }
        }
    }
    for name in names {
        let p = found.get(*name).with_context(|| format!("module {name} not found under {}", modules.display()))?;
        let dest = out_dir.join(format!("{name}.ko"));
        if p.extension().is_some_and(|x| x == "xz") {
            let raw = Command::new("xz").arg("-dc").arg(p).output()?;
            if !raw.status.success() {
                bail!("xz -dc {} failed", p.display());
            }
            std::fs::write(&dest, raw.stdout)?;
        } else {
            std::fs::copy(p, &dest)?;
        }
    }
    Ok(())
}

/// The script /init runs inside the VM. Results go to the console between `@@RTVLA <name>` markers.
fn init_script(ticks: u64, drive_only: bool) -> String {
    let modules = MODULES.join(" ");
    let unplug_ticks = 10;
    let drop_ticks = DROP_TICKS;
    let checks = if drive_only {
        String::new()
    } else {
        format!(
            r#"
echo "@@RTVLA nodev-begin"
./rtvla drive --board boards/qemu-virt-nodev.toml --ticks 3 --no-store 2>/tmp/nodev.err
echo "@@RTVLA nodev-exit $?"
cat /tmp/nodev.err
echo "@@RTVLA nodev-end"

echo "@@RTVLA badfmt-begin"
./rtvla drive --board boards/qemu-virt-mjpeg.toml --ticks 3 --no-store 2>/tmp/badfmt.err
echo "@@RTVLA badfmt-exit $?"
cat /tmp/badfmt.err
echo "@@RTVLA badfmt-end"

echo "@@RTVLA unplug-begin"
./rtvla drive --quiet --board boards/qemu-virt.toml --ticks {unplug_ticks} --no-store --report-json /tmp/unplug.json &
pid=$!
sleep 8
echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind && echo "@@RTVLA unplugged (video nodes: $(ls /dev/video* 2>/dev/null | wc -l))"
sleep 8
echo vivid.0 > /sys/bus/platform/drivers/vivid/bind && echo "@@RTVLA replugged (video nodes: $(ls /dev/video* 2>/dev/null | wc -l))"
wait $pid
echo "@@RTVLA unplug-exit $?"
echo "@@RTVLA unplug-json-begin"
cat /tmp/unplug.json
echo "@@RTVLA unplug-json-end"
"#
        )
    };
    format!(
        r#"{INIT_PROLOGUE}echo "@@RTVLA kernel $(uname -r) $(uname -m), $(grep -c ^processor /proc/cpuinfo) cpus"
for m in {modules}; do
  if [ "$m" = vivid ]; then insmod /lib/modules/$m.ko n_devs=1 node_types=0x1 || echo "@@RTVLA insmod-failed $m";
  else insmod /lib/modules/$m.ko || echo "@@RTVLA insmod-failed $m"; fi
done
echo "@@RTVLA video-nodes $(ls /dev/video* 2>/dev/null)"
cd /rtvla
echo "@@RTVLA drive-begin"
./rtvla drive --quiet --board boards/qemu-virt.toml --ticks {ticks} --store /store --report-json /tmp/drive.json &
pid=$!
sleep 16
kill -USR1 $pid && echo "@@RTVLA sigusr1 sent"
wait $pid
echo "@@RTVLA drive-exit $?"
echo "@@RTVLA drive-json-begin"
cat /tmp/drive.json
echo "@@RTVLA drive-json-end"
./rtvla store verify /store
echo "@@RTVLA verify-exit $?"
echo "@@RTVLA ls-json-begin"
./rtvla store ls /store --json
echo "@@RTVLA ls-json-end"

./rtvla drive --quiet --board boards/qemu-virt-drops.toml --ticks {drop_ticks} --no-store --report-json /tmp/drops.json
echo "@@RTVLA drops-exit $?"
echo "@@RTVLA drops-json-begin"
cat /tmp/drops.json
echo "@@RTVLA drops-json-end"
{checks}
echo "@@RTVLA done"
poweroff -f
"#
    )
}

/// Build the initramfs (busybox, modules, rtvla, boards, the bundled student) as a gzip'd newc cpio.
fn initramfs(root: &Path, cache: &Path, bin: &Path, modules: &Path, opts: &QemuOptions) -> Result<PathBuf> {
    let dir = cache.join("initramfs");
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "tmp", "store", "rtvla/boards", "rtvla/models/student"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(cache.join("kernel-root/bin/busybox"), dir.join("bin/busybox"))
        .context("busybox from busybox-static:arm64")?;
    copy_modules(modules, MODULES, &dir.join("lib/modules"))?;
    std::fs::copy(bin, dir.join("rtvla/rtvla"))?;
    let board = std::fs::read_to_string(root.join("boards/qemu-virt.toml"))?;
    std::fs::write(dir.join("rtvla/boards/qemu-virt.toml"), &board)?;
    std::fs::write(
        dir.join("rtvla/boards/qemu-virt-nodev.toml"),
        board.replace("device = \"/dev/video0\"", "device = \"/dev/video9\""),
    )?;
    std::fs::write(
        dir.join("rtvla/boards/qemu-virt-drops.toml"),
        board.replacen(
            "[camera]\n",
            &format!("[camera]\ncontrols = {{ percentage_of_dropped_buffers = {DROP_PERCENT} }}\n"),
            1,
        ),
    )?;
    std::fs::write(
        dir.join("rtvla/boards/qemu-virt-mjpeg.toml"),
        board.replace("format = \"yuyv\"", "format = \"mjpeg\""),
    )?;
    // The board's model (f32 student) and its ONNX.
    let manifest = root.join("models/student/student.toml");
    std::fs::copy(&manifest, dir.join("rtvla/models/student/student.toml"))?;
    std::fs::copy(root.join("models/student/student.onnx"), dir.join("rtvla/models/student/student.onnx"))?;
    let img = cache.join("initrd.cpio.gz");
    pack_initramfs(&dir, &init_script(opts.ticks, opts.drive_only), &img)?;
    Ok(img)
}

/// Write `init` (mode 755) into the staged tree `dir` and pack the tree as a gzip'd newc cpio at `img`.
pub(crate) fn pack_initramfs(dir: &Path, init: &str, img: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("init");
    std::fs::write(&path, init)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    let status = Command::new("sh")
        .current_dir(dir)
        .arg("-c")
        .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > {}", img.display()))
        .status()?;
    if !status.success() {
        bail!("building the initramfs {} failed", img.display());
    }
    Ok(())
}

/// Boot the VM, stream its console to stderr and into a log file, return the console text.
fn boot(cache: &Path, vmlinuz: &Path, initrd: &Path, timeout: Duration) -> Result<String> {
    boot_with(cache, vmlinuz, initrd, timeout, &["-nic", "none"])
}

/// [`boot`] with the VM's network given as qemu arguments (`-nic none`, or a virtio NIC with user networking).
pub(crate) fn boot_with(
    cache: &Path,
    vmlinuz: &Path,
    initrd: &Path,
    timeout: Duration,
    nic: &[&str],
) -> Result<String> {
    let log_path = cache.join("console.log");
    let mut child = Command::new("qemu-system-aarch64")
        .args(["-M", "virt", "-cpu", "cortex-a72", "-smp", "2", "-m", "1024", "-nographic", "-no-reboot"])
        .args(nic)
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyAMA0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-aarch64")?;
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("  vm| {line}");
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let text = reader.join().unwrap_or_default();
            std::fs::write(&log_path, &text)?;
            eprintln!(
                "VM exited ({status}) after {:.0} s; console log {}",
                t0.elapsed().as_secs_f64(),
                log_path.display()
            );
            if !status.success() {
                bail!("qemu-system-aarch64 failed ({status}); console log {}", log_path.display());
            }
            return Ok(text);
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let text = reader.join().unwrap_or_default();
            std::fs::write(&log_path, &text)?;
            bail!("the VM did not finish within {:?} (console log {})", timeout, log_path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Text between `@@RTVLA <name>-begin` and `@@RTVLA <name>-end`.
pub(crate) fn section<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let b = format!("@@RTVLA {name}-begin\n");
    let e = format!("@@RTVLA {name}-end");
    let start = log.find(&b)? + b.len();
    let end = start + log[start..].find(&e)?;
    Some(&log[start..end])
}

/// The value after `@@RTVLA <key> `.
pub(crate) fn marker<'a>(log: &'a str, key: &str) -> Option<&'a str> {
    let k = format!("@@RTVLA {key} ");
    log.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix(&k))
}

fn exit_of(log: &str, key: &str) -> Option<i32> {
    marker(log, &format!("{key}-exit")).and_then(|v| v.trim().parse().ok())
}

fn json_of(log: &str, name: &str) -> Result<serde_json::Value> {
    let text = section(log, name).with_context(|| format!("no {name} section in the console log"))?;
    // The console may interleave kernel messages: keep from the first '{' / '[' on.
    let start = text.find(['{', '[']).with_context(|| format!("{name}: no JSON"))?;
    serde_json::from_str(text[start..].trim()).with_context(|| format!("{name}: bad JSON: {text}"))
}

/// Check the console log; returns one summary line per check.
pub fn check_log(log: &str, ticks: u64, drive_only: bool) -> Result<Vec<String>> {
    let log = &log.replace('\r', "");
    let mut lines = Vec::new();
    if let Some(m) = marker(log, "insmod-failed") {
        bail!("insmod failed in the VM: {m}");
    }
    let nodes = marker(log, "video-nodes").unwrap_or("").trim().to_string();
    if !nodes.contains("/dev/video0") {
        bail!("vivid did not create /dev/video0 (video nodes: {nodes:?})");
    }
    lines.push(format!("{} — vivid loaded, nodes: {nodes}", marker(log, "kernel").unwrap_or("?")));

    let drive_exit = exit_of(log, "drive").context("the drive never finished (no drive-exit marker)")?;
    if drive_exit != 0 {
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        bail!("rtvla drive exited {drive_exit} in the VM: {}", errors.join(" | "));
    }
    let r = json_of(log, "drive-json")?;
    let camera = r["camera"].as_str().unwrap_or("").to_string();
    if !camera.contains("YUYV 320x180") {
        bail!("report camera = {camera:?}: expected the negotiated YUYV 320x180");
    }
    if r["ticks"].as_u64() != Some(ticks) {
        bail!("drive: ticks = {}, expected {ticks}", r["ticks"]);
    }
    if r["frames_captured"].as_u64().unwrap_or(0) == 0 {
        bail!("drive: no frames captured");
    }
    if exit_of(log, "verify") != Some(0) {
        bail!("rtvla store verify failed in the VM");
    }
    let events = json_of(log, "ls-json")?;
    let events = events.as_array().cloned().unwrap_or_default();
    let listed = events.len() as u64;
    if Some(listed) != r["events_written"].as_u64() {
        bail!("store ls lists {listed} events, the report says {} written", r["events_written"]);
    }
    // The manual request is its own event, or part of one that fired on the same tick (its cause says so).
    let manual = |e: &serde_json::Value| {
        e["trigger"] == "external" || e["cause"].as_str().is_some_and(|c| c.contains("external request"))
    };
    if !events.iter().any(manual) {
        bail!("no external snapshot in the store after `kill -USR1` (events: {events:?})");
    }
    lines.push(format!(
        "drive: {camera}; {} ticks, {} frames ({} dropped), infer mean {:.0} ms, {} deadline misses (emulated CPU), \
         {} snapshots written (one by SIGUSR1), listed and verified",
        r["ticks"],
        r["frames_captured"],
        r["frames_dropped"],
        r["infer_ms"]["mean"].as_f64().unwrap_or(f64::NAN),
        r["deadline_misses"],
        r["events_written"]
    ));
    lines.push(drops_check(log, &r)?);
    if drive_only {
        return Ok(lines);
    }

    let nodev_exit = exit_of(log, "nodev").context("no nodev-exit marker")?;
    let nodev = section(log, "nodev").unwrap_or("").trim().to_string();
    let err_lines: Vec<&str> = nodev.lines().filter(|l| l.starts_with("error:")).collect();
    if nodev_exit == 0 || err_lines.len() != 1 || !err_lines[0].contains("/dev/video9") {
        bail!(
            "missing camera: expected a non-zero exit and one error line naming /dev/video9, got {nodev_exit}: {nodev}"
        );
    }
    lines.push(format!("no device: exit {nodev_exit}, {}", err_lines[0]));

    let badfmt_exit = exit_of(log, "badfmt").context("no badfmt-exit marker")?;
    let badfmt = section(log, "badfmt").unwrap_or("").trim().to_string();
    let err_lines: Vec<&str> = badfmt.lines().filter(|l| l.starts_with("error:")).collect();
    if badfmt_exit != 2 || err_lines.len() != 1 || !err_lines[0].contains("formats offered") {
        bail!(
            "unsupported format: expected exit 2 and one line naming the offered formats, got {badfmt_exit}: {badfmt}"
        );
    }
    lines.push(format!("unsupported format: exit 2, {}", err_lines[0]));

    let unplug_exit = exit_of(log, "unplug").context("no unplug-exit marker")?;
    let u = json_of(log, "unplug-json")?;
    let stale = u["faults"]["stale_frame"].as_u64().unwrap_or(0) + u["faults"]["no_frame"].as_u64().unwrap_or(0);
    if marker(log, "unplugged").is_none() || marker(log, "replugged").is_none() {
        bail!("vivid could not be unbound/bound through sysfs");
    }
    // Recovered means driving again after the replug: ticks in nominal mode after the last fallback ended (ticks
    // from before the unplug do not count).
    let recovered = u["nominal_ticks_at_end"].as_u64().unwrap_or(0) > 0;
    if unplug_exit != 0
        || u["camera_reconnects"].as_u64().unwrap_or(0) < 1
        || stale == 0
        || u["fallbacks"].as_u64() == Some(0)
        || !recovered
    {
        bail!(
            "device vanished mid-run: expected exit 0, a stale-frame safe stop and a reconnect; got exit {unplug_exit}, \
             reconnects {}, faults {}, fallbacks {} ({} of {} ticks in fallback)",
            u["camera_reconnects"],
            u["faults"],
            u["fallbacks"],
            u["fallback_ticks"],
            u["ticks"]
        );
    }
    lines.push(format!(
        "device vanished mid-run: stale frame → {} supervisor fallback(s) (safe stop, {} ticks), {} reconnect(s), \
         driving again for the last {} of {} ticks (after the replug), exit 0",
        u["fallbacks"], u["fallback_ticks"], u["camera_reconnects"], u["nominal_ticks_at_end"], u["ticks"]
    ));
    if marker(log, "done").is_none() && !log.contains("@@RTVLA done") {
        bail!("the VM script did not reach its end");
    }
    Ok(lines)
}

/// The frame-drop drive: with vivid dropping DROP_PERCENT % of its buffers, the report counts dropped frames
/// (sequence gaps) near that share of all frames the driver produced, well above the plain drive's share.
fn drops_check(log: &str, plain: &serde_json::Value) -> Result<String> {
    let exit = exit_of(log, "drops").context("the frame-drop drive never finished (no drops-exit marker)")?;
    if exit != 0 {
        let errors: Vec<&str> = log.lines().filter(|l| l.starts_with("error:")).collect();
        bail!("rtvla drive with vivid dropping buffers exited {exit}: {}", errors.join(" | "));
    }
    let d = json_of(log, "drops-json")?;
    let share = |r: &serde_json::Value| {
        let (got, dropped) =
            (r["frames_captured"].as_u64().unwrap_or(0) as f64, r["frames_dropped"].as_u64().unwrap_or(0) as f64);
        (got, dropped, if got + dropped > 0.0 { dropped / (got + dropped) } else { 0.0 })
    };
    let (got, dropped, frac) = share(&d);
    let (_, _, plain_frac) = share(plain);
    let want = f64::from(DROP_PERCENT) / 100.0;
    if dropped == 0.0 || frac < want * 0.6 || frac < plain_frac + 0.2 {
        bail!(
            "vivid dropping {DROP_PERCENT} % of buffers: the report counts {dropped} dropped of {} frames ({:.0} %; \
             without drops {:.0} %): the V4L2 sequence-gap count is off",
            got + dropped,
            frac * 100.0,
            plain_frac * 100.0
        );
    }
    Ok(format!(
        "frame drops: vivid's percentage_of_dropped_buffers = {DROP_PERCENT} (set by the board's camera.controls) -> \
         {dropped} of {} frames counted dropped ({:.0} %; {:.0} % without it)",
        got + dropped,
        frac * 100.0,
        plain_frac * 100.0
    ))
}

/// `cargo xtask qemu`.
pub fn qemu(root: &Path, opts: &QemuOptions) -> Result<()> {
    let t0 = Instant::now();
    ensure_arm64_arch()?;
    ensure_apt(QEMU_PACKAGES)?;
    let bin = cross::build(root, "qemu-virt")?;
    let cache = cache_dir(root);
    std::fs::create_dir_all(&cache)?;
    step("arm64 kernel + busybox from apt (cached)");
    let (vmlinuz, modules) = kernel(&cache)?;
    step("initramfs: busybox, V4L2 + vivid modules, rtvla, boards/qemu-virt.toml, the bundled student");
    let initrd = initramfs(root, &cache, &bin, &modules, opts)?;
    eprintln!("{} ({} KiB)", initrd.display(), std::fs::metadata(&initrd)?.len() / 1024);
    step(&format!("qemu-system-aarch64 -M virt, kernel {}", vmlinuz.display()));
    let log = boot(&cache, &vmlinuz, &initrd, opts.timeout)?;
    let lines = check_log(&log, opts.ticks, opts.drive_only)?;
    eprintln!("\nqemu checks passed in {:.0} s:", t0.elapsed().as_secs_f64());
    for l in lines {
        eprintln!("  ok: {l}");
    }
    Ok(())
}
