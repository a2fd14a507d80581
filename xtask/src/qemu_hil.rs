//! `cargo xtask hil --target qemu`: the static aarch64 rtvla as the HIL device inside the arm64 VM (Debian's
//! kernel, busybox initramfs, a virtio NIC on qemu's user-mode network), the rig (`rtvla sim serve`) on the host.
//! The guest reaches the host as 10.0.2.2, so the link is off loopback and keyed, as on a real bench.
//!
//! The VM's CPU is emulated, so the run is lockstep on the rig's clock (`vehicle.pacing = "lockstep"`), as fast as
//! the emulated CPU goes; frames travel as JPEG to keep the emulated NIC's datagram count down.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cross::{self, ensure_apt, ensure_arm64_arch};
use crate::hil::{free_udp_port, start_rig, HilOptions};
use crate::{qemu, read_json, release_bin, step};

/// Modules for a virtio NIC on `-M virt` (virtio and virtio_ring are built into Debian's arm64 kernel).
const NET_MODULES: &[&str] = &["virtio_mmio", "failover", "net_failover", "virtio_net"];
/// The guest's address on qemu's user network, and the host's as the guest sees it.
const GUEST_IP: &str = "10.0.2.15";
const HOST_IP: &str = "10.0.2.2";

pub fn hil(root: &Path, o: &HilOptions, dir: &Path, key: &Path, serve_json: &Path) -> Result<serde_json::Value> {
    if o.pacing != "lockstep" {
        bail!("--target qemu runs lockstep only (the VM's CPU is emulated: it cannot keep a real-time rate)");
    }
    ensure_arm64_arch()?;
    ensure_apt(qemu::QEMU_PACKAGES)?;
    let arm = cross::build(root, "qemu-virt")?;
    let cache = qemu::cache_dir(root);
    std::fs::create_dir_all(&cache)?;
    step("arm64 kernel + busybox from apt (cached)");
    let (vmlinuz, modules) = qemu::kernel(&cache)?;
    let episodes = episode_count(root, o)?;
    let port = free_udp_port()?;
    step(&format!("initramfs: busybox, virtio-net modules, the aarch64 rtvla, a keyed net board ({episodes} runs)"));
    let initrd = initramfs(root, dir, &cache, &arm, &modules, key, port, episodes)?;
    step(&format!("rig on 127.0.0.1:{port} (the guest's {HOST_IP}:{port}); VM: qemu-system-aarch64 -M virt"));
    let host_bin = release_bin(root);
    let bind = format!("127.0.0.1:{port}");
    let mut rig = start_rig(&host_bin, &bind, key, o, serve_json, &["--hello-timeout-s", "900", "--format", "jpeg"])?;
    let nic = ["-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"];
    let booted = qemu::boot_with(dir, &vmlinuz, &initrd, Duration::from_secs(1800), &nic);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = rig.try_wait()? {
            break Some(s);
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = rig.kill();
            let _ = rig.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = booted?;
    report_guest_runs(&log, episodes)?;
    match status {
        Some(s) if s.success() => read_json(serve_json),
        Some(s) => bail!("rtvla sim serve failed ({s})"),
        None => bail!("the rig was still waiting after the VM powered off"),
    }
}

/// How many runs the rig will score: scenarios × seeds (the guest drives once per run).
fn episode_count(root: &Path, o: &HilOptions) -> Result<usize> {
    let seeds = match o.seeds.split_once("..") {
        Some((a, b)) => b.trim().parse::<u64>()?.saturating_sub(a.trim().parse::<u64>()?),
        None => 1,
    } as usize;
    let scenarios = match o.scenarios.as_str() {
        "train" | "held-out" | "heldout" | "all" => {
            let out = Command::new(release_bin(root)).args(["sim", "list"]).output()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().find_map(|l| l.strip_prefix("scenarios: ")).context("rtvla sim list")?;
            line.split(',').count()
        }
        list => list.split(',').count(),
    };
    Ok(seeds * scenarios)
}

/// What /init runs: bring up the NIC, then one `rtvla drive` per run, each report between markers.
fn init_script(episodes: usize) -> String {
    let modules = NET_MODULES.join(" ");
    let prologue = qemu::INIT_PROLOGUE;
    format!(
        r#"{prologue}echo "@@RTVLA kernel $(uname -r) $(uname -m), $(grep -c ^processor /proc/cpuinfo) cpus"
for m in {modules}; do insmod /lib/modules/$m.ko || echo "@@RTVLA insmod-failed $m"; done
ip link set lo up
ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0 && ip route add default via {HOST_IP}
echo "@@RTVLA net $(ip -o -4 addr show eth0 | awk '{{print $4}}')"
cd /rtvla
i=0
while [ $i -lt {episodes} ]; do
  ./rtvla drive --quiet --no-store --ticks 4000 --board boards/hil-qemu.toml --report-json /tmp/r$i.json
  echo "@@RTVLA run$i-exit $?"
  echo "@@RTVLA run$i-begin"
  cat /tmp/r$i.json
  echo "@@RTVLA run$i-end"
  i=$((i+1))
done
echo "@@RTVLA done"
poweroff -f
"#
    )
}

#[allow(clippy::too_many_arguments)]
fn initramfs(
    root: &Path,
    dir: &Path,
    cache: &Path,
    bin: &Path,
    modules: &Path,
    key: &Path,
    port: u16,
    episodes: usize,
) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let stage = dir.join("initramfs");
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "tmp", "rtvla/boards", "rtvla/models/student"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    std::fs::copy(cache.join("kernel-root/bin/busybox"), stage.join("bin/busybox"))?;
    qemu::copy_modules(modules, NET_MODULES, &stage.join("lib/modules"))?;
    std::fs::copy(bin, stage.join("rtvla/rtvla"))?;
    let board = std::fs::read_to_string(root.join("boards/hil-local.toml"))?
        .replace("name = \"hil-local\"", "name = \"hil-qemu\"")
        .replace("target = \"x86_64-unknown-linux-gnu\"", "target = \"aarch64-unknown-linux-musl\"")
        .replace("bind = \"127.0.0.1:0\"", "bind = \"0.0.0.0:47701\"")
        .replace("\"127.0.0.1:47700\"", &format!("\"{HOST_IP}:{port}\""))
        .replace("# key_file = \"rig.key\"", "key_file = \"rig.key\"");
    std::fs::write(stage.join("rtvla/boards/hil-qemu.toml"), board)?;
    let staged_key = stage.join("rtvla/boards/rig.key");
    std::fs::copy(key, &staged_key)?;
    std::fs::set_permissions(&staged_key, std::fs::Permissions::from_mode(0o600))?;
    for f in ["student.toml", "student.onnx"] {
        std::fs::copy(root.join("models/student").join(f), stage.join("rtvla/models/student").join(f))?;
    }
    let img = dir.join("initrd-hil.cpio.gz");
    qemu::pack_initramfs(&stage, &init_script(episodes), &img)?;
    Ok(img)
}

/// Every guest run exited 0 and ended on the rig's `done`; print what each saw of the wire.
fn report_guest_runs(log: &str, episodes: usize) -> Result<()> {
    if let Some(m) = qemu::marker(log, "insmod-failed") {
        bail!("the VM could not load {m}");
    }
    eprintln!("guest network: {}", qemu::marker(log, "net").unwrap_or("?"));
    for i in 0..episodes {
        let exit = qemu::marker(log, &format!("run{i}-exit")).with_context(|| format!("guest run {i} never ended"))?;
        let json = qemu::section(log, &format!("run{i}"));
        let r: serde_json::Value = json.and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
        eprintln!(
            "guest run {i}: exit {exit}, {} ticks, infer p50 {} ms, faults {}, frames delivered {}, auth_failed {}",
            r["ticks"], r["infer_ms"]["p50"], r["faults"], r["link"]["frames_delivered"], r["link"]["auth_failed"]
        );
        if exit.trim() != "0" {
            bail!("guest run {i} exited {exit}");
        }
    }
    Ok(())
}
