//! A board profile, wired into the loop's two ends: the frame source and the vehicle link.
//!
//! | camera.source | vehicle.link | frames from | state from / commands to |
//! |---|---|---|---|
//! | `v4l2` | `udp` | the V4L2 device | the wire |
//! | `net` | `udp` | the wire | the wire (one rig, one socket) |
//! | `sim` / `v4l2` | `sim` | the plant / the device | the plant (in-process world) |

use std::sync::Arc;
use std::time::Duration;

use crate::board::{Board, CameraSource, LinkKind, PacingConfig};
use crate::camera::FrameSource;
use crate::error::bad_input;
use crate::model::Student;
use crate::report::RunReport;
use crate::vehicle::VehicleLink;

/// What the runtime asks of a plant for one run.
#[derive(Clone, Debug)]
pub struct PlantRequest {
    pub width: usize,
    pub height: usize,
    /// Seconds per control tick (a world steps this much per command unless its profile says otherwise).
    pub period_s: f32,
    /// The loop runs in simulated time (as fast as possible).
    pub virtual_time: bool,
    /// How long a lockstep camera waits for the frame answering the last command.
    pub sync_timeout: Duration,
    /// The run drives with the plant's privileged policy (its frames must carry the privileged targets).
    pub privileged: bool,
}

/// The ends a plant hands the loop. `camera` is `None` when the board's camera is a real one (the plant is then
/// only the vehicle and its world, and should not render).
pub struct PlantIo {
    pub camera: Option<Box<dyn FrameSource>>,
    pub vehicle: Box<dyn VehicleLink>,
}

/// A world plugged into the runtime in-process (the simulator). It supplies the frame source and the vehicle
/// link of a board whose `camera.source` or `vehicle.link` is `sim`, its privileged policy if it has one, and,
/// after the run, its own account of it (score, scenario) in the report. The runtime knows nothing else of it.
pub trait Plant {
    /// Start the world for this run. `frames`: whether the plant renders the camera too.
    fn open(&mut self, req: &PlantRequest, frames: bool) -> anyhow::Result<PlantIo>;
    /// A policy that reads privileged targets from the plant's frames (`--policy expert`), if it has one.
    fn privileged_policy(&self) -> Option<Box<dyn Student>>;
    /// Scenario and seed, copied into every snapshot of the run.
    fn run_label(&self) -> Option<(String, u64)>;
    /// After the loop (its ends already dropped): stop the world and add its account to the report.
    fn finish(&mut self, report: &mut RunReport) -> anyhow::Result<()>;
}

/// Builds a plant from the board profile.
pub type MakePlant = dyn Fn(&Board) -> anyhow::Result<Box<dyn Plant>> + Send + Sync;

/// Makes the plant for a board (the simulator's factory closes over the scenario, seed and options the CLI gave).
#[derive(Clone)]
pub struct PlantFactory(pub Arc<MakePlant>);

impl std::fmt::Debug for PlantFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlantFactory")
    }
}

/// The plant a board needs, or none; a board that needs one without a factory is refused before the first tick.
pub(super) fn plant_for(board: &Board, factory: Option<&PlantFactory>) -> anyhow::Result<Option<Box<dyn Plant>>> {
    if !super::board_uses_plant(board) {
        return Ok(None);
    }
    let f = factory.ok_or_else(|| {
        bad_input(format!(
            "board {} drives the in-process simulator (camera.source or vehicle.link = \"sim\"), which this \
             entry point does not provide",
            board.board.name
        ))
    })?;
    (f.0)(board).map(Some)
}

/// The loop's ends for one run, and what keeps them alive.
pub(super) struct Io {
    pub camera: Box<dyn FrameSource>,
    pub vehicle: Box<dyn VehicleLink>,
    /// The negotiated camera (V4L2), for the report.
    pub camera_desc: Option<String>,
    /// The wire's receive thread, stopped when the run's ends are dropped.
    _endpoint: Option<crate::net::NetEndpoint>,
}

/// Open the board's frame source and vehicle link. Every bad setting fails here, before the first tick.
pub(super) fn open(board: &Board, plant: Option<&mut Box<dyn Plant>>, req: &PlantRequest) -> anyhow::Result<Io> {
    let (source, link) = (board.camera.source, board.vehicle.link);
    match (source, link, plant) {
        (CameraSource::Sim, LinkKind::Sim, Some(p)) => {
            let io = p.open(req, true)?;
            let camera = io.camera.ok_or_else(|| anyhow::anyhow!("the plant rendered no camera"))?;
            Ok(Io { camera, vehicle: io.vehicle, camera_desc: None, _endpoint: None })
        }
        #[cfg(target_os = "linux")]
        (CameraSource::V4l2, LinkKind::Sim, Some(p)) => {
            let (camera, desc) = open_v4l2(board)?;
            let io = p.open(req, false)?;
            Ok(Io { camera, vehicle: io.vehicle, camera_desc: Some(desc), _endpoint: None })
        }
        #[cfg(target_os = "linux")]
        (CameraSource::V4l2, LinkKind::Udp, _) => {
            let (camera, desc) = open_v4l2(board)?;
            let (endpoint, vehicle, _) = crate::net::NetEndpoint::open(net_config(board, req, false)?)?;
            Ok(Io { camera, vehicle: Box::new(vehicle), camera_desc: Some(desc), _endpoint: Some(endpoint) })
        }
        (CameraSource::Net, LinkKind::Udp, _) => {
            let (endpoint, vehicle, camera) = crate::net::NetEndpoint::open(net_config(board, req, true)?)?;
            let camera = camera.ok_or_else(|| anyhow::anyhow!("the net endpoint opened no frame source"))?;
            let desc = format!("wire frames {}x{} from {}", board.camera.width, board.camera.height, peer(board));
            Ok(Io {
                camera: Box::new(camera),
                vehicle: Box::new(vehicle),
                camera_desc: Some(desc),
                _endpoint: Some(endpoint),
            })
        }
        (source, link, _) => Err(bad_input(format!(
            "board {}: camera.source {source:?} with vehicle.link {link:?} is not supported",
            board.board.name
        ))),
    }
}

fn peer(board: &Board) -> &str {
    board.vehicle.peer.as_deref().unwrap_or("?")
}

fn net_config(board: &Board, req: &PlantRequest, frames: bool) -> anyhow::Result<crate::net::NetConfig> {
    let v = &board.vehicle;
    let key = match &v.key_file {
        Some(p) => Some(crate::wire::WireKey::load(&board.resolve(p))?),
        None => None,
    };
    let lockstep = v.pacing == PacingConfig::Lockstep;
    let state_timeout = Duration::from_millis(v.state_timeout_ms as u64);
    Ok(crate::net::NetConfig {
        bind: v.bind.clone().unwrap_or_else(|| "0.0.0.0:0".into()),
        peer: v.peer.clone().ok_or_else(|| bad_input("vehicle.peer is required for the udp link"))?,
        key,
        frames: frames.then_some((board.camera.width, board.camera.height)),
        lockstep,
        sync_timeout: req.sync_timeout,
        // Lockstep runs on the rig's clock: the state answering this frame is current however long the wall
        // clock took (an emulated CPU); a rig that stops answering shows as a missing frame after the sync wait.
        state_timeout: if lockstep { state_timeout.max(req.sync_timeout * 2) } else { state_timeout },
    })
}

/// The board's V4L2 camera, opened and negotiated (bad format / missing device fail here, before the first tick).
#[cfg(target_os = "linux")]
fn open_v4l2(board: &Board) -> anyhow::Result<(Box<dyn FrameSource>, String)> {
    // Format and device were checked when the profile loaded (Board::validate).
    let cam = &board.camera;
    let mut c = crate::camera::v4l2::V4l2Config::new(&cam.device, cam.format, cam.width, cam.height, cam.fps);
    // Declare the device lost a little after the loop would call the frame stale.
    c.frame_timeout = Duration::from_millis(cam.stale_after_ms as u64).max(Duration::from_millis(500)) * 2;
    c.controls = cam.controls.iter().map(|(k, v)| (k.clone(), *v)).collect();
    let camera = crate::camera::v4l2::V4l2Camera::open(c)?;
    let desc = camera.info().to_string();
    tracing::info!("camera format negotiated: {desc}");
    Ok((Box::new(camera), desc))
}
