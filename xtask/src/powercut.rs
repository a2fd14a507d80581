//! `cargo xtask powercut`: power really lost (issue 18 item 2, DESIGN §5). SIGKILL of a process keeps the page
//! cache, so it cannot show that a record the writer called committed was on the disk; killing the whole machine
//! can. The machine here is a `qemu-system-x86_64` VM (TCG: KVM does not work on this kind of host, see
//! ../shared/notes-cross-and-qemu.md) with Debian's cloud-amd64 kernel, a busybox initramfs holding the host's
//! release `rtvla` and its glibc libraries, and the event store on an ext4 file system on a virtio disk (a raw
//! image, `cache=none`: every guest write goes to the image as it is issued and a guest flush is an fdatasync of
//! the image; what only the guest's page cache held dies with the VM).
//!
//! Each boot, /init mounts the disk (ext4 replays its journal), runs `rtvla store verify --json` and `rtvla store
//! ls --json` on the store the previous cut left, then starts `rtvla drive` (board `qemu-x86-powercut`, simulated
//! time, the expert driving, `kill -USR1` every 50 ms so snapshots are written back to back) with the writer's
//! per-record line on (`rtvla::store::commit`: `store append seq=N event=E durable=true` once write + fsync
//! returned). This side reads the console, and a random time after the first record of the boot SIGKILLs qemu:
//! no shutdown, no flush. The next boot checks that every record reported committed so far is listed (same seq,
//! same event id), that verify finds 0 corrupt records (a torn tail, the record being written when the power
//! went, is allowed: it is counted and recovery truncates it), and then drives and is cut again. A last boot only
//! checks. `--fsync never` runs the same test with the board's fsync policy off and every appended record taken
//! as committed (what a build whose fsync did nothing would report): that run must lose records, or the test
//! could not tell.
//!
//! Not modelled: a disk whose own volatile write cache loses acknowledged writes (qemu hands each write to the
//! host as it comes, like a disk with power-loss protection); the guest kernel's flush/FUA ordering is trusted.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cross::ensure_apt;
use crate::qemu::{copy_modules, output};
use crate::{run, step};

/// Host packages: the x86 system emulator, cpio for the initramfs, mkfs.ext4 for the disk.
const PACKAGES: &[&str] = &["qemu-system-x86", "cpio", "e2fsprogs"];

/// Modules for the virtio disk, in load order (ext4 and jbd2 are built into Debian's cloud kernel).
const MODULES: &[&str] =
    &["virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "virtio_blk"];

/// The board the VM drives (its store is /store/events on the ext4 disk).
const BOARD: &str = "boards/qemu-x86-powercut.toml";

/// Size of the raw disk image (sparse on the host).
const DISK_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct PowercutOptions {
    /// Power cuts (the VM boots `cycles + 1` times: the last boot only checks).
    pub cycles: u32,
    /// Run with the board's fsync policy set to `never` and expect lost records.
    pub fsync_never: bool,
    /// The cut comes uniformly in [0, max_cut_s] seconds after the first record of a boot was appended.
    pub max_cut_s: f64,
    /// Seed of the cut times (printed, so a run can be repeated).
    pub seed: Option<u64>,
    /// Build the release binary first (CI passes false: its test build made it).
    pub build: bool,
}

/// What a run measured.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub cycles: u32,
    /// Records the writer reported committed (with `--fsync never`: appended).
    pub committed: u64,
    /// Of those, found after the cuts.
    pub found: u64,
    pub lost: u64,
    /// Boots whose store had a torn tail (an incomplete last record) before recovery.
    pub torn_tails: u64,
    /// Corrupt records `store verify` reported, summed over the boots.
    pub corrupt: u64,
    pub seconds: f64,
}

fn cache_dir(root: &Path) -> PathBuf {
    crate::target_dir(root).join("powercut")
}

/// The versioned image package behind `linux-image-cloud-amd64`.
fn kernel_package() -> Result<String> {
    let depends = || output(Command::new("apt-cache").args(["depends", "linux-image-cloud-amd64"]));
    let deps = match depends() {
        Ok(d) => d,
        Err(_) => {
            // No package lists yet (a fresh image): fetch them once.
            run(crate::cross::apt_get().args(["update", "-qq"]))?;
            depends()?
        }
    };
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim().to_string())
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-cloud-amd64"))
        .context("apt-cache depends linux-image-cloud-amd64 names no linux-image-*-cloud-amd64")
}

/// Unpacked kernel + busybox (cached): (vmlinuz, modules dir, busybox).
fn kernel(cache: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    crate::qemu::unpack_kernel(cache, &kernel_package, "busybox-static")
}

/// The shared libraries `ldd` names for `bin` (absolute paths, the dynamic loader included).
fn shared_libs(bin: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    if !libs.iter().any(|p| p.to_string_lossy().contains("ld-linux")) {
        bail!("ldd {}: no dynamic loader found in {text:?}", bin.display());
    }
    Ok(libs)
}

/// The script /init runs: check the store the last cut left, then (rtvla.mode=drive) drive until killed.
fn init_script() -> String {
    let modules = MODULES.join(" ");
    let prologue = crate::qemu::INIT_PROLOGUE;
    format!(
        r#"{prologue}for m in {modules}; do insmod /lib/modules/$m.ko || echo "@@RTVLA insmod-failed $m"; done
mount -t ext4 -o ro /dev/vdb /rtvla || {{ echo "@@RTVLA mount-failed tools"; poweroff -f; }}
mount -t ext4 /dev/vda /store || {{ echo "@@RTVLA mount-failed store"; poweroff -f; }}
echo "@@RTVLA mounted $(cut -d' ' -f1 /proc/uptime)"
cd /rtvla
if [ -d /store/events ]; then
  echo "@@RTVLA verify-begin"
  ./rtvla store verify --json /store/events
  echo "@@RTVLA verify-exit $?"
  ./rtvla store ls --json /store/events > /tmp/ls.json
  echo "@@RTVLA ls-exit $?"
  echo "@@RTVLA ls-begin"
  grep -E '"(id|seq)":' /tmp/ls.json
  echo "@@RTVLA ls-end"
else
  echo "@@RTVLA no-store"
fi
case " $(cat /proc/cmdline) " in
  *" rtvla.mode=drive "*) ;;
  *) umount /store; echo "@@RTVLA done"; poweroff -f;;
esac
echo "@@RTVLA drive-begin $(cut -d' ' -f1 /proc/uptime)"
./rtvla --log warn,rtvla::store::commit=debug drive --board boards/powercut.toml --fast --repeat --policy expert --quiet &
pid=$!
# A SIGUSR1 before rtvla's main() ignores it would end the process: wait until it runs threads.
while [ -d /proc/$pid ] && [ "$(ls /proc/$pid/task | wc -l)" -lt 2 ]; do sleep 0.05; done
while kill -USR1 $pid 2>/dev/null; do sleep 0.05; done
wait $pid
echo "@@RTVLA drive-exit $?"
poweroff -f
"#
    )
}

/// The boot files: a small initramfs (busybox, virtio modules, /init) and a read-only ext4 image (`/dev/vdb`, made
/// with `mkfs.ext4 -d`) holding the stripped rtvla with its libraries, the board and the student's manifest (the
/// board names it; the expert drives, so the model is never run). The binary stays out of the initramfs, which
/// the kernel would unpack at every boot. Returns (initrd, tools image).
fn boot_files(root: &Path, cache: &Path, bin: &Path, fsync: &str) -> Result<(PathBuf, PathBuf)> {
    let (_, modules, busybox) = kernel(cache)?;
    let dir = cache.join("initramfs");
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["bin", "lib/modules", "proc", "sys", "dev", "tmp", "store", "rtvla"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    std::fs::copy(&busybox, dir.join("bin/busybox")).context("busybox from busybox-static")?;
    copy_modules(&modules, MODULES, &dir.join("lib/modules"))?;
    // The libraries live on the tools disk under /rtvla/root; their directories here point there.
    let libs = shared_libs(bin)?;
    let lib_dirs: BTreeSet<PathBuf> =
        libs.iter().filter_map(|l| l.parent()).map(|d| d.strip_prefix("/").unwrap_or(d).to_path_buf()).collect();
    for d in &lib_dirs {
        let link = dir.join(d);
        std::fs::create_dir_all(link.parent().unwrap())?;
        std::os::unix::fs::symlink(Path::new("/rtvla/root").join(d), &link)?;
    }
    let init = dir.join("init");
    std::fs::write(&init, init_script())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    let img = cache.join("initrd.cpio.gz");
    let status = Command::new("sh")
        .current_dir(&dir)
        .arg("-c")
        .arg(format!("find . | cpio -o -H newc --quiet | gzip -1 > {}", img.display()))
        .status()?;
    if !status.success() {
        bail!("building the initramfs failed");
    }

    let tools = cache.join("tools");
    let _ = std::fs::remove_dir_all(&tools);
    for d in ["boards", "models/student"] {
        std::fs::create_dir_all(tools.join(d))?;
    }
    run(Command::new("strip").arg("-o").arg(tools.join("rtvla")).arg(bin))?;
    for lib in &libs {
        let dest = tools.join("root").join(lib.strip_prefix("/")?);
        std::fs::create_dir_all(dest.parent().unwrap())?;
        std::fs::copy(lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }
    let board = std::fs::read_to_string(root.join(BOARD))?;
    let policy = "fsync = \"every_record\"";
    if !board.contains(policy) {
        bail!("{BOARD} must say {policy} (the test rewrites it for --fsync never)");
    }
    std::fs::write(tools.join("boards/powercut.toml"), board.replace(policy, &format!("fsync = {fsync:?}")))?;
    for f in ["student.toml", "student.onnx"] {
        std::fs::copy(root.join("models/student").join(f), tools.join("models/student").join(f))?;
    }
    let size: u64 = dir_size(&tools)?;
    let tools_img = cache.join("tools.img");
    let _ = std::fs::remove_file(&tools_img);
    std::fs::File::create(&tools_img)?.set_len(size + size / 4 + 16 * 1024 * 1024)?;
    run(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&tools).arg(&tools_img))?;
    Ok((img, tools_img))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() { dir_size(&e.path())? } else { m.len() };
    }
    Ok(n)
}

/// A fresh sparse raw image with an empty ext4 file system (inode tables and journal initialised now, so the guest
/// does no background zeroing).
fn fresh_disk(cache: &Path) -> Result<PathBuf> {
    let disk = cache.join("disk.img");
    let _ = std::fs::remove_file(&disk);
    std::fs::File::create(&disk)?.set_len(DISK_BYTES)?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", "rtvla-store"])
        .arg(&disk))?;
    Ok(disk)
}

/// `cache=none` (O_DIRECT) where the host file system takes it, else `cache=writeback`: in both a guest flush is
/// an fdatasync of the image and a write the guest issued is in the host's hands, so killing qemu loses exactly
/// what the guest had not written out. (`cache=unsafe` would drop the guest's flushes.)
fn cache_mode(disk: &Path) -> &'static str {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(disk).is_ok();
    if direct {
        "none"
    } else {
        "writeback"
    }
}

/// splitmix64: the cut times, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Console text without terminal colour codes and carriage returns.
fn plain(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI (ESC [ ... letter: colours, cursor) or a two-character escape (ESC c: the firmware's reset).
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// One boot: its console lines, and whether this side cut the power (else the VM powered off by itself).
struct Boot {
    lines: Vec<String>,
    cut: bool,
}

/// Boot the VM on `disk`. In drive mode, SIGKILL it `cut_after` after the first appended record.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    disk: &Path,
    tools: &Path,
    cache: &str,
    cut_after: Option<Duration>,
    log: &mut std::fs::File,
) -> Result<Boot> {
    let mode = if cut_after.is_some() { "drive" } else { "check" };
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "qemu64", "-m", "512", "-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 panic=-1 quiet mitigations=off nokaslr rtvla.mode={mode}")])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,cache={cache}", disk.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio,readonly=on", tools.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(plain(&line)).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let timeout = Duration::from_secs(180);
    let mut lines = Vec::new();
    let mut first_append: Option<Instant> = None;
    let mut cut = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(5)) {
            Ok(line) => {
                writeln!(log, "[{:7.2}] {line}", t0.elapsed().as_secs_f64())?;
                if first_append.is_none() && line.contains("store append") {
                    first_append = Some(Instant::now());
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let (Some(t), Some(after)) = (first_append, cut_after) {
            if !cut && t.elapsed() >= after {
                // Power cut: SIGKILL, no shutdown of anything in the guest.
                child.kill().context("killing qemu")?;
                cut = true;
            }
        }
        if !cut && t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "boot ({mode}) did not {} within {timeout:?}",
                if first_append.is_none() { "append a record" } else { "end" }
            );
        }
    }
    let status = child.wait()?;
    let _ = reader.join();
    if !cut && !status.success() {
        bail!("qemu-system-x86_64 failed ({status})");
    }
    Ok(Boot { lines, cut })
}

/// The value after `@@RTVLA <key> ` on some line.
fn marker<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    let k = format!("@@RTVLA {key}");
    lines.iter().find_map(|l| l.strip_prefix(&k).map(str::trim))
}

fn between<'a>(lines: &'a [String], begin: &str, end: &str) -> Option<&'a [String]> {
    let b = lines.iter().position(|l| l.starts_with(&format!("@@RTVLA {begin}")))?;
    let e = b + lines[b..].iter().position(|l| l.starts_with(&format!("@@RTVLA {end}")))?;
    Some(&lines[b + 1..e])
}

/// What the check at the start of a boot found.
struct Check {
    /// seq -> event id of every listed record (None: no store yet).
    found: Option<BTreeMap<u64, u64>>,
    verify_exit: i32,
    corrupt: u64,
    torn: Option<String>,
}

fn parse_check(lines: &[String]) -> Result<Check> {
    if let Some(m) = marker(lines, "insmod-failed") {
        bail!("insmod failed in the VM: {m}");
    }
    if let Some(m) = marker(lines, "mount-failed") {
        bail!("the VM could not mount its {m} disk");
    }
    if marker(lines, "no-store").is_some() {
        return Ok(Check { found: None, verify_exit: 0, corrupt: 0, torn: None });
    }
    let verify = between(lines, "verify-begin", "verify-exit").context("no verify section on the console")?;
    let verify_exit: i32 = marker(lines, "verify-exit").and_then(|v| v.parse().ok()).context("no verify exit code")?;
    let json = verify.iter().find(|l| l.starts_with('{')).context("store verify printed no JSON")?;
    let v: serde_json::Value = serde_json::from_str(json).with_context(|| format!("store verify --json: {json}"))?;
    let corrupt = v["corrupt"].as_array().map_or(0, |a| a.len() as u64);
    let torn = v["torn_tail"]
        .as_object()
        .map(|t| format!("{} @ byte {} ({} bytes)", t["segment"].as_str().unwrap_or("?"), t["offset"], t["len"]));
    if marker(lines, "ls-exit") != Some("0") {
        bail!("rtvla store ls failed in the VM (exit {:?})", marker(lines, "ls-exit"));
    }
    let mut found = BTreeMap::new();
    let mut id = None;
    for l in between(lines, "ls-begin", "ls-end").context("no ls section on the console")? {
        let num =
            |k: &str| l.trim().strip_prefix(k).and_then(|r| r.trim().trim_end_matches(',').trim().parse::<u64>().ok());
        if let Some(i) = num("\"id\":") {
            id = Some(i);
        } else if let Some(s) = num("\"seq\":") {
            found.insert(s, id.take().context("store ls: a seq without an id")?);
        }
    }
    Ok(Check { found: Some(found), verify_exit, corrupt, torn })
}

/// `(seq, event id, durable)` of every `store append` line.
fn appends(lines: &[String]) -> Vec<(u64, u64, bool)> {
    let field = |l: &str, k: &str| -> Option<String> {
        l.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string)
    };
    lines
        .iter()
        .filter(|l| l.contains("store append"))
        .filter_map(|l| {
            let seq = field(l, "seq=")?.parse().ok()?;
            let event = field(l, "event=")?.parse().ok()?;
            let durable = field(l, "durable=")? == "true";
            Some((seq, event, durable))
        })
        .collect()
}

/// `cargo xtask powercut`.
pub fn powercut(root: &Path, bin: &Path, opts: &PowercutOptions) -> Result<Summary> {
    let t0 = Instant::now();
    ensure_apt(PACKAGES)?;
    if opts.build {
        run(crate::cargo().args(["build", "--release", "--package", "rtvla", "--bin", "rtvla"]))?;
    }
    let cache = cache_dir(root);
    std::fs::create_dir_all(&cache)?;
    step("x86_64 kernel (Debian cloud-amd64) + busybox-static from apt (cached)");
    let (vmlinuz, _, _) = kernel(&cache)?;
    let fsync = if opts.fsync_never { "never" } else { "every_record" };
    step(&format!(
        "initramfs (busybox, virtio modules) + a read-only disk: rtvla, its libraries, {BOARD} with fsync = {fsync}"
    ));
    let (initrd, tools) = boot_files(root, &cache, bin, fsync)?;
    let disk = fresh_disk(&cache)?;
    let cache_mode = cache_mode(&disk);
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng(seed);
    let log_path = cache.join(format!("console-{fsync}.log"));
    let mut log = std::fs::File::create(&log_path)?;
    step(&format!(
        "{} power cuts: qemu-system-x86_64 (TCG), ext4 on virtio (cache={cache_mode}), SIGKILL 0–{:.1} s after a \
         boot's first record; seed {seed}; console log {}",
        opts.cycles,
        opts.max_cut_s,
        log_path.display()
    ));
    // (cycle, seq) -> event id of every record reported committed so far; and the ones found missing.
    let mut reported: BTreeMap<(u32, u64), u64> = BTreeMap::new();
    let mut committed_seqs: BTreeSet<u64> = BTreeSet::new();
    let mut lost: BTreeSet<(u32, u64)> = BTreeSet::new();
    let mut s = Summary { cycles: opts.cycles, ..Default::default() };
    let mut failures: Vec<String> = Vec::new();
    let t_cycles = Instant::now();
    for cycle in 0..=opts.cycles {
        let last = cycle == opts.cycles;
        let cut_after = (!last).then(|| Duration::from_secs_f64(rng.next_f64() * opts.max_cut_s));
        writeln!(log, "==== boot {cycle} ({}) ====", if last { "check" } else { "drive + cut" })?;
        let tb = Instant::now();
        let b = boot(&vmlinuz, &initrd, &disk, &tools, cache_mode, cut_after, &mut log)?;
        let check =
            parse_check(&b.lines).with_context(|| format!("boot {cycle} (console log {})", log_path.display()))?;
        // Every record reported committed in an earlier cycle must be listed, with its event id.
        let found = check.found.clone().unwrap_or_default();
        let mut missing_now = Vec::new();
        for (&(c, seq), &event) in &reported {
            if found.get(&seq) != Some(&event) && lost.insert((c, seq)) {
                missing_now.push(format!("seq {seq} (event {event}, cycle {c})"));
            }
        }
        if check.found.is_none() && !reported.is_empty() {
            missing_now.push("the whole store directory".into());
        }
        s.corrupt += check.corrupt;
        if check.torn.is_some() {
            s.torn_tails += 1;
        }
        if check.verify_exit != 0 || check.corrupt > 0 {
            failures.push(format!("boot {cycle}: store verify exit {}, {} corrupt", check.verify_exit, check.corrupt));
        }
        // Then the records this boot's drive reported before the cut.
        let mut new = 0;
        if !last {
            if !b.cut {
                bail!(
                    "boot {cycle}: the VM stopped before the power cut (drive exit {:?})",
                    marker(&b.lines, "drive-exit")
                );
            }
            for (seq, event, durable) in appends(&b.lines) {
                if !opts.fsync_never && !durable {
                    bail!("boot {cycle}: seq {seq} appended without fsync under fsync = every_record");
                }
                if !opts.fsync_never && !committed_seqs.insert(seq) {
                    failures
                        .push(format!("boot {cycle}: seq {seq} reported committed twice (sequence numbers went back)"));
                }
                reported.insert((cycle, seq), event);
                new += 1;
            }
            if new == 0 {
                bail!("boot {cycle}: cut after the first record, yet no `store append` line was read");
            }
        }
        eprintln!(
            "boot {cycle:>3}: {:>5.1} s  listed {:>5}  torn tail {:<32} corrupt {}  lost so far {:>4}{}{}",
            tb.elapsed().as_secs_f64(),
            found.len(),
            check.torn.as_deref().unwrap_or("-"),
            check.corrupt,
            lost.len(),
            if last {
                String::new()
            } else {
                format!("  +{new} reported, cut {:.2} s after the first", cut_after.unwrap().as_secs_f64())
            },
            match missing_now.len() {
                0 => String::new(),
                n if n <= 4 => format!("  MISSING: {}", missing_now.join(", ")),
                n => format!("  MISSING: {}, … ({n} in all)", missing_now[..3].join(", ")),
            },
        );
    }
    s.committed = reported.len() as u64;
    s.lost = lost.len() as u64;
    s.found = s.committed - s.lost;
    s.seconds = t_cycles.elapsed().as_secs_f64();
    let what = if opts.fsync_never {
        "appended (fsync = never: what a build without fsync calls committed)"
    } else {
        "committed (write + fsync returned)"
    };
    eprintln!(
        "\npower-cut test, fsync = {fsync}: {} cycles in {:.0} s ({:.1} s per cycle; {:.0} s in all), seed {seed}\n  \
         records {what}: {}\n  found after the cuts: {}\n  lost: {}\n  torn tails (truncated by recovery): {}\n  \
         corrupt: {}",
        s.cycles,
        s.seconds,
        s.seconds / f64::from(s.cycles.max(1)),
        t0.elapsed().as_secs_f64(),
        s.committed,
        s.found,
        s.lost,
        s.torn_tails,
        s.corrupt
    );
    if opts.fsync_never {
        if s.lost == 0 {
            bail!(
                "with fsync = never no record was lost in {} power cuts: the test cannot tell fsync from none",
                s.cycles
            );
        }
        eprintln!("ok: without fsync the power cuts lost {} of {} records (the test can fail)", s.lost, s.committed);
    } else {
        if s.lost > 0 {
            failures.push(format!("{} committed record(s) lost", s.lost));
        }
        if !failures.is_empty() {
            bail!("power-cut test failed: {}", failures.join("; "));
        }
        eprintln!("ok: every committed record survived {} power cuts; 0 corrupt", s.cycles);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_parse() {
        let l = plain("\u{1b}[2m2026-11-30T07:18:00Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m store append \u{1b}[3mseq\u{1b}[0m\u{1b}[2m=\u{1b}[0m7 \u{1b}[3mevent\u{1b}[0m\u{1b}[2m=\u{1b}[0m5 \u{1b}[3mdurable\u{1b}[0m\u{1b}[2m=\u{1b}[0mtrue\r");
        assert_eq!(l, "2026-11-30T07:18:00Z DEBUG store append seq=7 event=5 durable=true");
        assert_eq!(appends(&[l]), vec![(7, 5, true)]);
        assert_eq!(plain("\u{1b}c\u{1b}[?7l\u{1b}[2J@@RTVLA no-store"), "@@RTVLA no-store");
        let lines: Vec<String> = [
            "@@RTVLA verify-begin",
            r#"{"segments":1,"records_ok":2,"snapshots_ok":2,"corrupt":[],"torn_tail":{"segment":"seg-000001.rtv","offset":100,"len":9,"reason":"x","torn":true},"not_segments":[]}"#,
            "@@RTVLA verify-exit 0",
            "@@RTVLA ls-exit 0",
            "@@RTVLA ls-begin",
            r#"    "id": 1,"#,
            r#"    "seq": 1,"#,
            r#"    "id": 3,"#,
            r#"    "seq": 2,"#,
            "@@RTVLA ls-end",
        ]
        .map(String::from)
        .into();
        let c = parse_check(&lines).unwrap();
        assert_eq!(c.found.unwrap().into_iter().collect::<Vec<_>>(), vec![(1, 1), (2, 3)]);
        assert_eq!((c.verify_exit, c.corrupt), (0, 0));
        assert_eq!(c.torn.as_deref(), Some("seg-000001.rtv @ byte 100 (9 bytes)"));
    }
}
