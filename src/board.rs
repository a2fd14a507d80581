//! Board profiles (`boards/*.toml`): everything that differs between the host simulator, QEMU and real boards.
//!
//! Unknown keys are errors (serde `deny_unknown_fields`) so a typo never silently falls back to a default.
//! Relative paths are resolved against the profile's own directory.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::camera::pixel::PixelFormat;
use crate::error::bad_input;

/// A whole board profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub board: BoardInfo,
    pub camera: CameraConfig,
    #[serde(rename = "loop")]
    pub control_loop: LoopConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub store: StoreConfig,
    pub vehicle: VehicleConfig,
    #[serde(default)]
    pub sim: SimConfig,
    #[serde(default)]
    pub deploy: Option<DeployConfig>,
    /// Directory of the profile file, for relative paths.
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardInfo {
    pub name: String,
    /// Rust target triple the board's binary is built for.
    pub target: String,
    #[serde(default)]
    pub description: String,
}

/// Where frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraSource {
    /// The in-process simulator renders frames.
    Sim,
    /// A V4L2 device (camera issue).
    V4l2,
    /// Frames over the wire protocol from a rig (`docs/wire-protocol.md`); needs `vehicle.link = "udp"`.
    Net,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub source: CameraSource,
    #[serde(default)]
    pub device: String,
    #[serde(default = "default_format")]
    pub format: PixelFormat,
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    /// SimLingo crops the bottom rows (ego hood) before resizing to the model input.
    #[serde(default)]
    pub crop_bottom_rows: usize,
    /// A frame older than this at tick time is stale: the supervisor stops the car.
    #[serde(default = "default_stale_ms")]
    pub stale_after_ms: u32,
    /// V4L2 controls set on the device when it is opened (and again after every reconnect), by name as the driver
    /// gives it or as `v4l2-ctl -l` prints it (case and punctuation ignored), e.g.
    /// `controls = { exposure_time_absolute = 100, auto_exposure = 1 }`. A name the device lacks is refused
    /// before the first tick, naming the controls it has.
    #[serde(default)]
    pub controls: std::collections::BTreeMap<String, i64>,
}

fn default_format() -> PixelFormat {
    PixelFormat::Rgb24
}
fn default_stale_ms() -> u32 {
    150
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    pub rate_hz: f64,
    /// Compute budget per tick; defaults to the whole period.
    #[serde(default)]
    pub deadline_ms: Option<f64>,
    #[serde(default)]
    pub cpu_affinity: Vec<usize>,
    /// SCHED_FIFO priority (0 = normal scheduling).
    #[serde(default)]
    pub rt_priority: u8,
    #[serde(default)]
    pub mlockall: bool,
    /// Ticks to run before allocation counting starts (tract and caches warm up).
    #[serde(default = "default_warmup")]
    pub warmup_ticks: u64,
}

fn default_warmup() -> u64 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Path of the student's manifest TOML.
    pub manifest: PathBuf,
    /// The precision the board expects (f32, int8, f16); checked against the manifest so a profile never runs a
    /// model other than the one it was sized for.
    #[serde(default)]
    pub precision: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Fixed store directory (a board's flash). Absent: one store per run under the user's state directory
    /// (`store::runs`), which is what a host wants.
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default = "default_budget")]
    pub budget_bytes: u64,
    #[serde(default = "default_fsync")]
    pub fsync: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: None, budget_bytes: default_budget(), fsync: default_fsync() }
    }
}

/// The smallest store budget a board may name: four of the smallest segments `drive` makes (256 KiB), so the
/// ring can evict one and still hold several 64 KiB snapshots.
pub const MIN_STORE_BUDGET: u64 = 4 * 256 * 1024;

fn default_budget() -> u64 {
    64 * 1024 * 1024
}
fn default_fsync() -> String {
    "every_record".into()
}

/// Which vehicle link carries commands out and ego state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Sim,
    Udp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VehicleConfig {
    pub link: LinkKind,
    /// Local UDP address to bind (udp link).
    #[serde(default)]
    pub bind: Option<String>,
    /// Peer UDP address commands are sent to (udp link).
    #[serde(default)]
    pub peer: Option<String>,
    /// Ego state older than this is a link fault.
    #[serde(default = "default_link_timeout")]
    pub state_timeout_ms: u32,
    /// Pre-shared key of the wire (udp link): a file of 64+ hex digits, mode 600, created by the user
    /// (`openssl rand -hex 32`). Without one the link is unauthenticated and refused off loopback.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// `realtime`: tick at the board's rate on the board's clock, freshest frame wins. `lockstep`: the rig steps
    /// once per command and the loop runs on the rig's clock (each tick waits for the frame that answers the last
    /// command): deterministic, for CI and scoring.
    #[serde(default)]
    pub pacing: PacingConfig,
}

/// `vehicle.pacing`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PacingConfig {
    #[default]
    Realtime,
    Lockstep,
}

fn default_link_timeout() -> u32 {
    200
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    #[serde(default = "default_scenario")]
    pub scenario: String,
    #[serde(default)]
    pub seed: u64,
    /// Simulated seconds per control tick (default: the loop period). A board whose loop runs slower than real
    /// hardware (an emulated CPU) slows the simulated world down alike instead of letting it jump seconds per tick.
    #[serde(default)]
    pub dt_s: Option<f32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { scenario: default_scenario(), seed: 0, dt_s: None }
    }
}

fn default_scenario() -> String {
    "following".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    pub host: String,
    #[serde(default)]
    pub user: Option<String>,
    /// ssh port (default 22).
    #[serde(default)]
    pub port: Option<u16>,
    pub install_dir: PathBuf,
    /// Releases kept on the device (the running one and its predecessor always are); default 3.
    #[serde(default)]
    pub keep_releases: Option<u32>,
    /// How the device runs rtvla: `systemd` (a generated, hardened `Type=notify` unit; the default) or `script`
    /// (a pidfile and `setsid`, for a device without systemd).
    #[serde(default)]
    pub service: Option<String>,
}

impl Board {
    /// Load and validate a profile. Every problem is `BadInput` naming the file and key.
    pub fn load(path: &Path) -> anyhow::Result<Board> {
        let text =
            std::fs::read_to_string(path).map_err(|e| bad_input(format!("board profile {}: {e}", path.display())))?;
        Self::parse(&text, path)
    }

    /// Parse profile text; `path` is used for messages and relative paths.
    pub fn parse(text: &str, path: &Path) -> anyhow::Result<Board> {
        let mut board: Board = toml::from_str(text).map_err(|e| {
            let msg = e.message().replace('\n', " ");
            bad_input(format!("board profile {}: {msg}", path.display()))
        })?;
        board.dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        board.validate().map_err(|m| bad_input(format!("board profile {}: {m}", path.display())))?;
        Ok(board)
    }

    fn validate(&self) -> Result<(), String> {
        let c = &self.camera;
        if !(self.control_loop.rate_hz > 0.0 && self.control_loop.rate_hz <= 1000.0) {
            return Err(format!("loop.rate_hz = {} must be in (0, 1000]", self.control_loop.rate_hz));
        }
        if let Some(d) = self.control_loop.deadline_ms {
            if !(d > 0.0 && d <= self.period_ms()) {
                return Err(format!("loop.deadline_ms = {d} must be in (0, period = {} ms]", self.period_ms()));
            }
        }
        if c.width == 0 || c.height == 0 || c.width > 8192 || c.height > 8192 {
            return Err(format!("camera.width/height = {}x{} out of range", c.width, c.height));
        }
        if c.crop_bottom_rows >= c.height {
            return Err(format!(
                "camera.crop_bottom_rows = {} must be < camera.height = {}",
                c.crop_bottom_rows, c.height
            ));
        }
        if self.vehicle.link == LinkKind::Udp && self.vehicle.peer.is_none() {
            return Err("vehicle.peer is required when vehicle.link = \"udp\"".into());
        }
        if let Some(dt) = self.sim.dt_s {
            if !(dt > 0.0 && dt <= 1.0) {
                return Err(format!("sim.dt_s = {dt} must be in (0, 1] seconds"));
            }
        }
        if self.camera.source == CameraSource::Net && self.vehicle.link != LinkKind::Udp {
            return Err(
                "camera.source = \"net\" needs vehicle.link = \"udp\" (frames and state come from one rig)".into()
            );
        }
        if self.vehicle.pacing == PacingConfig::Lockstep && self.camera.source != CameraSource::Net {
            return Err("vehicle.pacing = \"lockstep\" needs camera.source = \"net\" (the rig paces the frames)".into());
        }
        if self.camera.source != CameraSource::V4l2 && !self.camera.controls.is_empty() {
            return Err("camera.controls are V4L2 controls: they need camera.source = \"v4l2\"".into());
        }
        if self.camera.source == CameraSource::V4l2 && self.camera.device.is_empty() {
            return Err("camera.device is required when camera.source = \"v4l2\"".into());
        }
        if let Some(p) = &self.model.precision {
            if !matches!(p.as_str(), "f32" | "f16" | "int8") {
                return Err(format!("model.precision = {p:?} must be f32, f16 or int8"));
            }
        }
        // The store's own parser decides, so the profile accepts exactly what the store supports (interval:MS too).
        if let Err(e) = crate::store::segment::FsyncPolicy::parse(&self.store.fsync) {
            return Err(format!("store.fsync: {e}"));
        }
        self.validate_drivable()
    }

    /// Values that parse but make driving impossible: every frame stale, CPUs no Linux machine has.
    fn validate_drivable(&self) -> Result<(), String> {
        let c = &self.camera;
        if c.fps == 0 || c.fps > 1000 {
            return Err(format!("camera.fps = {} must be in 1..=1000", c.fps));
        }
        // A frame is at best one frame interval old when the loop reads it: a smaller limit faults every tick.
        let frame_ms = 1000 / c.fps;
        if c.stale_after_ms < frame_ms.max(1) {
            return Err(format!(
                "camera.stale_after_ms = {} is under one frame interval ({frame_ms} ms at {} fps): every frame \
                 would be stale",
                c.stale_after_ms, c.fps
            ));
        }
        if let Some(cpu) = self.control_loop.cpu_affinity.iter().find(|&&cpu| cpu >= libc::CPU_SETSIZE as usize) {
            return Err(format!("loop.cpu_affinity: CPU {cpu} is beyond what Linux can address"));
        }
        self.validate_store()
    }

    /// A store that could never hold an event would drop every snapshot and only say so at the end of the run.
    fn validate_store(&self) -> Result<(), String> {
        if self.store.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err("store.path is empty: name a directory, or leave the key out for one store per run".into());
        }
        if self.store.budget_bytes < MIN_STORE_BUDGET {
            return Err(format!(
                "store.budget_bytes = {} is under {MIN_STORE_BUDGET} (four 256 KiB segments: room for a few snapshots)",
                self.store.budget_bytes
            ));
        }
        Ok(())
    }

    /// The profile's CPUs against this machine's, checked when `drive` starts (a profile for a 4-core Pi still
    /// loads on a 2-core host for inspection, deploy and tests; driving it there is refused up front).
    pub fn check_cpus_here(&self) -> Result<(), String> {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize;
        match self.control_loop.cpu_affinity.iter().find(|&&cpu| cpu >= n) {
            Some(cpu) => Err(format!("loop.cpu_affinity names CPU {cpu}; this machine has CPUs 0..{}", n - 1)),
            None => Ok(()),
        }
    }

    /// Control period in milliseconds.
    pub fn period_ms(&self) -> f64 {
        1000.0 / self.control_loop.rate_hz
    }

    /// Compute budget per tick in milliseconds.
    pub fn deadline_ms(&self) -> f64 {
        self.control_loop.deadline_ms.unwrap_or_else(|| self.period_ms())
    }

    /// Resolve a path from the profile relative to the profile's directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }

    /// The student's manifest path, resolved.
    pub fn model_manifest(&self) -> PathBuf {
        self.resolve(&self.model.manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = include_str!("../boards/host-sim.toml");

    #[test]
    fn bundled_host_sim_profile_parses() {
        let b = Board::parse(GOOD, Path::new("boards/host-sim.toml")).unwrap();
        assert_eq!(b.board.name, "host-sim");
        assert_eq!(b.camera.source, CameraSource::Sim);
        assert_eq!(b.period_ms(), 50.0);
        assert_eq!(b.model_manifest(), Path::new("boards/../models/student/student.toml"));
    }

    #[test]
    fn every_bundled_profile_parses_and_its_model_exists() {
        for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/boards")).unwrap() {
            let path = entry.unwrap().path();
            let b = Board::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            let manifest = crate::model::Manifest::load(&b.model_manifest())
                .unwrap_or_else(|e| panic!("{}: model: {e:#}", path.display()));
            if let Some(p) = &b.model.precision {
                assert_eq!(&manifest.model.precision, p, "{}", path.display());
            }
            assert!(
                b.board.target == "x86_64-unknown-linux-gnu" || b.board.target.starts_with("aarch64-unknown-linux-")
            );
        }
    }

    #[test]
    fn fsync_policies_match_the_store() {
        for ok in ["every_record", "never", "interval", "interval:250"] {
            let text = GOOD.replace("fsync = \"every_record\"", &format!("fsync = {ok:?}"));
            Board::parse(&text, Path::new("b.toml")).unwrap_or_else(|e| panic!("{ok}: {e:#}"));
        }
        let text = GOOD.replace("fsync = \"every_record\"", "fsync = \"sometimes\"");
        let err = Board::parse(&text, Path::new("b.toml")).unwrap_err();
        assert!(err.to_string().contains("store.fsync") && err.to_string().contains("interval:MS"), "{err}");
    }

    #[test]
    fn unknown_camera_format_is_named() {
        let text = GOOD.replace("[camera]\n", "[camera]\nformat = \"bayer\"\n");
        let err = Board::parse(&text, Path::new("b.toml")).unwrap_err();
        assert!(err.to_string().contains("\"bayer\"") && err.to_string().contains("yuyv, mjpeg"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = GOOD.replace("rate_hz = 20", "rate_hz = 20\nrate_hx = 3");
        let err = Board::parse(&text, Path::new("b.toml")).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), 2);
        assert!(err.to_string().contains("rate_hx"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let text = GOOD.replace("rate_hz = 20", "rate_hz = -1");
        let err = Board::parse(&text, Path::new("b.toml")).unwrap_err();
        assert!(err.to_string().contains("loop.rate_hz"), "{err}");
        let text = GOOD.replace("rate_hz = 20", "rate_hz = \"fast\"");
        let err = Board::parse(&text, Path::new("b.toml")).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn missing_key_is_named() {
        let text = GOOD.replace("fps = 20\n", "");
        let err = Board::parse(&text, Path::new("b.toml")).unwrap_err();
        assert!(err.to_string().contains("fps"), "{err}");
    }
}
