//! `cargo xtask deploy-test --vm`: the whole deploy path with systemd as PID 1. A Debian bookworm root filesystem
//! built from Debian's packages (mmdebstrap: systemd, openssh-server, Debian's kernel; cached next to the cargo
//! target dir like the QEMU kernel), booted in qemu-system-x86_64 (KVM where /dev/kvm works), reached over ssh on a
//! forwarded port. Deploy → healthy under the generated unit → the watchdog restarts a hung loop → a release that
//! fails its health check is rolled back → `systemd-analyze security` on the device.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::deploy::{self, DeployOptions};
use crate::{release_bin, run, step};

const PACKAGES: &[&str] = &["mmdebstrap", "qemu-system-x86", "e2fsprogs", "qemu-utils"];
const INCLUDE: &str =
    "systemd,systemd-sysv,udev,dbus,openssh-server,linux-image-amd64,initramfs-tools,procps,coreutils";

struct Vm {
    child: Child,
    ssh_port: u16,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The cached image: root filesystem with our client key authorised, its kernel and initrd, its host key.
struct Image {
    disk: PathBuf,
    vmlinuz: PathBuf,
    initrd: PathBuf,
    client_key: PathBuf,
    host_pub: String,
}

fn image(root: &Path) -> Result<Image> {
    let cache = crate::target_dir(root).join("deploy-vm");
    let rootfs = cache.join("rootfs");
    let stamp = cache.join(".built");
    let client_key = cache.join("client_key");
    // Every run, not only when the image is built: the VM needs qemu-system-x86_64 and qemu-img, and another step's
    // apt install may have removed one since (a no-op when all are there).
    crate::cross::ensure_apt(PACKAGES)?;
    if !stamp.exists() {
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::create_dir_all(&cache)?;
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&client_key))?;
        let pubkey = std::fs::read_to_string(client_key.with_extension("pub"))?;
        step("Debian bookworm root filesystem with systemd + openssh-server (mmdebstrap, cached)");
        let hooks = [
            format!("mkdir -p \"$1/root/.ssh\" && echo '{}' > \"$1/root/.ssh/authorized_keys\" && chmod 700 \"$1/root/.ssh\" && chmod 600 \"$1/root/.ssh/authorized_keys\"", pubkey.trim()),
            "printf '[Match]\\nName=en*\\n[Network]\\nDHCP=yes\\n' > \"$1/etc/systemd/network/20-wired.network\"".into(),
            "chroot \"$1\" systemctl enable systemd-networkd".into(),
            "echo rtvla-vm > \"$1/etc/hostname\"".into(),
            "echo '/dev/vda / ext4 rw,relatime 0 1' > \"$1/etc/fstab\"".into(),
            "echo 'PasswordAuthentication no' > \"$1/etc/ssh/sshd_config.d/rtvla.conf\"".into(),
        ];
        let mut cmd = Command::new("mmdebstrap");
        cmd.args(["--variant=minbase", "--mode=root", "--format=directory", &format!("--include={INCLUDE}")]);
        for h in &hooks {
            cmd.arg(format!("--customize-hook={h}"));
        }
        cmd.args(["bookworm"]).arg(&rootfs).arg("http://deb.debian.org/debian");
        run(&mut cmd)?;
        let disk = cache.join("rootfs.img");
        run(Command::new("mkfs.ext4").args(["-q", "-L", "root", "-d"]).arg(&rootfs).arg(&disk).arg("3G"))?;
        std::fs::write(&stamp, "")?;
    }
    let boot = rootfs.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
            .with_context(|| format!("no {prefix}* in {}", boot.display()))
    };
    Ok(Image {
        disk: cache.join("rootfs.img"),
        vmlinuz: find("vmlinuz-")?,
        initrd: find("initrd.img-")?,
        client_key,
        host_pub: std::fs::read_to_string(rootfs.join("etc/ssh/ssh_host_ed25519_key.pub"))?,
    })
}

/// Boot a throwaway copy-on-write overlay of the image; wait for sshd.
fn boot(img: &Image, dir: &Path) -> Result<Vm> {
    let overlay = dir.join("overlay.qcow2");
    let _ = std::fs::remove_file(&overlay);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&img.disk)
        .arg(&overlay))?;
    let ssh_port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let kvm = kvm_boots(img)?;
    eprintln!("booting the VM ({}), ssh on 127.0.0.1:{ssh_port}", if kvm { "KVM" } else { "emulated: slow" });
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm {
        cmd.args(["-enable-kvm", "-cpu", "host"]);
    }
    let console = std::fs::File::create(dir.join("vm-console.log"))?;
    cmd.args(["-m", "1024", "-smp", "2", "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&img.vmlinuz)
        .arg("-initrd")
        .arg(&img.initrd)
        .args(["-append", "root=/dev/vda rw console=ttyS0 quiet"])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"),
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .stdin(Stdio::null())
        .stdout(console);
    let vm = Vm { child: cmd.spawn().context("starting qemu-system-x86_64")?, ssh_port };
    let mut parts = img.host_pub.split_whitespace();
    let (kind, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    std::fs::write(dir.join("known_hosts"), format!("[127.0.0.1]:{ssh_port} {kind} {key}\n"))?;
    let t = Instant::now();
    loop {
        if ssh(img, dir, &vm, "systemctl is-system-running --wait >/dev/null 2>&1; true").is_ok() {
            break;
        }
        if t.elapsed() > Duration::from_secs(if kvm { 120 } else { 900 }) {
            bail!("the VM's sshd did not answer (console: {})", dir.join("vm-console.log").display());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("VM up in {:.0} s", t.elapsed().as_secs_f64());
    Ok(vm)
}

/// Whether KVM really runs this kernel: /dev/kvm can open and still hang every guest (nested virtualisation
/// without support). The kernel must print its banner within 15 s; otherwise the VM runs emulated.
fn kvm_boots(img: &Image) -> Result<bool> {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return Ok(false);
    }
    let mut probe = Command::new("qemu-system-x86_64")
        .args(["-enable-kvm", "-cpu", "host", "-m", "256", "-nographic", "-no-reboot", "-kernel"])
        .arg(&img.vmlinuz)
        .args(["-append", "console=ttyS0 panic=-1 init=/bin/false"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = probe.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("Linux version") {
                let _ = tx.send(());
                return;
            }
        }
    });
    let ok = rx.recv_timeout(Duration::from_secs(15)).is_ok();
    let _ = probe.kill();
    let _ = probe.wait();
    if !ok {
        eprintln!("/dev/kvm opens but a KVM guest prints nothing in 15 s (nested virtualisation?): emulating");
    }
    Ok(ok)
}

fn ssh(img: &Image, dir: &Path, vm: &Vm, script: &str) -> Result<String> {
    let out = Command::new("ssh")
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", dir.join("known_hosts").display()))
        .arg("-i")
        .arg(&img.client_key)
        .args(["-p", &vm.ssh_port.to_string(), "root@127.0.0.1", script])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("ssh {script}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn board(root: &Path, dir: &Path, name: &str, port: u16, edit: &dyn Fn(String) -> String) -> Result<PathBuf> {
    let deploy = format!(
        "host = \"127.0.0.1\"\nuser = \"root\"\nport = {port}\ninstall_dir = \"/opt/rtvla\"\nservice = \"systemd\"\n"
    );
    crate::deploy_test::host_sim_board(root, dir, name, &deploy, edit)
}

fn main_pid(img: &Image, dir: &Path, vm: &Vm) -> Result<u32> {
    Ok(ssh(img, dir, vm, "systemctl show -p MainPID --value rtvla")?.parse()?)
}

pub fn deploy_vm_test(root: &Path) -> Result<()> {
    let bin = release_bin(root);
    if !bin.exists() {
        run(crate::cargo().args(["build", "--release", "--bin", "rtvla"]))?;
    }
    let img = image(root)?;
    let dir = crate::tempdir()?.join("deploy-vm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    step("VM with systemd as PID 1 (Debian bookworm, qemu-system-x86_64)");
    let vm = boot(&img, &dir)?;
    let opts = |b: &Path| DeployOptions {
        board: b.display().to_string(),
        host: None,
        port: None,
        key: Some(img.client_key.clone()),
        known_hosts: Some(dir.join("known_hosts")),
        dry_run: false,
        health_timeout_s: 60,
        binary: Some(bin.clone()),
        interrupt_upload_after_bytes: None,
    };
    step("deploy 1 to the VM: systemd unit, Type=notify, healthy");
    let good = board(root, &dir, "vm-good", vm.ssh_port, &|t| t)?;
    deploy::deploy(root, &opts(&good))?;
    let first = ssh(&img, &dir, &vm, "readlink /opt/rtvla/current")?;
    let pid = main_pid(&img, &dir, &vm)?;
    eprintln!(
        "ok: {first} running under systemd as pid {pid} ({})",
        ssh(&img, &dir, &vm, "systemctl is-active rtvla")?
    );

    step("a hung loop: SIGSTOP the service; the watchdog (WatchdogSec=3) must restart it");
    ssh(&img, &dir, &vm, &format!("kill -STOP {pid}"))?;
    let t = Instant::now();
    let restarted = loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = main_pid(&img, &dir, &vm).unwrap_or(0);
        if now != 0
            && now != pid
            && ssh(&img, &dir, &vm, "/opt/rtvla/current/rtvla status --dir /run/rtvla >/dev/null").is_ok()
        {
            break now;
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the watchdog did not restart the stopped service within 30 s");
        }
    };
    let restarts = ssh(&img, &dir, &vm, "systemctl show -p NRestarts --value rtvla")?;
    let reason = ssh(&img, &dir, &vm, "journalctl -u rtvla --no-pager -o cat | grep -i watchdog | tail -n 1")?;
    eprintln!(
        "ok: watchdog restart after {:.0} s: pid {pid} → {restarted} (NRestarts {restarts}; journal: {reason})",
        t.elapsed().as_secs_f64()
    );
    if reason.is_empty() {
        bail!("the journal does not name the watchdog as the reason for the restart");
    }

    step("deploy 2: a release that fails its health check → rolled back under systemd");
    let bad = board(root, &dir, "vm-bad", vm.ssh_port, &|t| t.replace("cpu_affinity = []", "cpu_affinity = [63]"))?;
    let mut o = opts(&bad);
    o.health_timeout_s = 20;
    match deploy::deploy(root, &o) {
        Ok(()) => bail!("an unhealthy release was kept"),
        Err(e) if format!("{e:#}").contains("rolled back") => eprintln!("ok: {e:#}"),
        Err(e) => return Err(e),
    }
    let now = ssh(&img, &dir, &vm, "readlink /opt/rtvla/current")?;
    let exe = ssh(&img, &dir, &vm, "readlink /proc/$(systemctl show -p MainPID --value rtvla)/exe")?;
    if now != first || !exe.starts_with(&first) {
        bail!("after the rollback current = {now}, running {exe}; expected {first}");
    }
    eprintln!("ok: {first} running again under systemd ({exe})");
    let security = ssh(&img, &dir, &vm, "systemd-analyze security rtvla.service --no-pager | tail -n 1")?;
    eprintln!("on the device: {security}");
    let _ = ssh(&img, &dir, &vm, "systemctl poweroff");
    drop(vm);
    Ok(())
}
