//! Faults injected into the real loop (real time, simulator as camera + vehicle): the supervisor stops the car in
//! the same tick, flags the fault, and recovers when it clears. Never a panic.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use rtvla::camera::{Frame, FrameSource, SourceStats};
use rtvla::clock::{EmbassyClock, VirtualClock};
use rtvla::control::Controller;
use rtvla::model::manifest::PreprocessSpec;
use rtvla::model::{Inference, PolicyInput, Student};
use rtvla::preprocess::Preprocessor;
use rtvla::runtime::{run_loop, LiveStats, LoopConfig, LoopOutcome, Stages};
use rtvla::sim::harness::{SimHarness, SimOptions};
use rtvla::supervisor::{Fault, Supervisor, SupervisorConfig};
use rtvla::types::{Command, Waypoints};
use rtvla::vehicle::{LinkError, VehicleLink, VehicleState};

/// Drives straight at ~4 m/s, and misbehaves on chosen ticks.
struct Scripted {
    tick: u64,
    nan_ticks: std::ops::Range<u64>,
    slow_tick: Option<u64>,
    fail_ticks: std::ops::Range<u64>,
    out: Inference,
}

impl Scripted {
    fn new() -> Self {
        let mut w = Waypoints::default();
        for i in 0..20 {
            w.path[i] = [(i + 1) as f32, 0.0];
        }
        for i in 0..10 {
            w.speed_wps[i] = [(i + 1) as f32 * 1.0, 0.0];
        }
        Scripted {
            tick: 0,
            nan_ticks: 0..0,
            slow_tick: None,
            fail_ticks: 0..0,
            out: Inference { waypoints: w, features: vec![], feature_shape: [0, 0] },
        }
    }
}

impl Student for Scripted {
    fn image_shape(&self) -> [usize; 3] {
        [3, 64, 128]
    }
    fn infer(&mut self, _: &PolicyInput<'_>) -> anyhow::Result<&Inference> {
        let t = self.tick;
        self.tick += 1;
        if Some(t) == self.slow_tick {
            std::thread::sleep(Duration::from_millis(70));
        }
        if self.fail_ticks.contains(&t) {
            anyhow::bail!("injected inference failure");
        }
        self.out.waypoints.path[3][1] = if self.nan_ticks.contains(&t) { f32::NAN } else { 0.0 };
        Ok(&self.out)
    }
}

/// Records every command, forwards to an inner link.
struct Recording<V> {
    inner: V,
    sent: Vec<Command>,
    fail_state: std::ops::Range<u64>,
    /// Ticks whose state reports an impossible speed (a faulty rig: -50 m/s).
    bad_state: std::ops::Range<u64>,
    ticks: u64,
}

impl<V: VehicleLink> VehicleLink for Recording<V> {
    fn state(&mut self) -> Result<VehicleState, LinkError> {
        if self.fail_state.contains(&self.ticks) {
            return Err(LinkError::NoState);
        }
        let mut s = self.inner.state()?;
        if self.bad_state.contains(&self.ticks) {
            s.ego.speed_mps = -50.0;
        }
        Ok(s)
    }
    fn send(&mut self, tick: u64, cmd: &Command) -> Result<(), LinkError> {
        self.ticks = tick + 1;
        self.sent.push(*cmd);
        self.inner.send(tick, cmd)
    }
}

/// A small, fast simulator: 128×72 frames, the following scenario.
fn sim_options(sync_timeout: Duration) -> SimOptions {
    SimOptions {
        scenario: "following".into(),
        seed: 1,
        width: 128,
        height: 72,
        dt: 0.05,
        with_expert: false,
        sync_timeout,
        repeat: false,
        render: true,
        observer: None,
    }
}

fn run(
    student: &mut Scripted,
    fail_state: std::ops::Range<u64>,
    ticks: u64,
    real_time: bool,
) -> (LoopOutcome, Vec<Command>) {
    run_with_bad_state(student, fail_state, 0..0, ticks, real_time)
}

fn run_with_bad_state(
    student: &mut Scripted,
    fail_state: std::ops::Range<u64>,
    bad_state: std::ops::Range<u64>,
    ticks: u64,
    real_time: bool,
) -> (LoopOutcome, Vec<Command>) {
    let (harness, mut camera, vehicle) = SimHarness::spawn(sim_options(Duration::from_millis(25))).unwrap();
    let sent = Vec::with_capacity(ticks as usize + 1);
    let mut vehicle = Recording { inner: vehicle, sent, fail_state, bad_state, ticks: 0 };
    let cfg = LoopConfig {
        period_us: 50_000,
        deadline_us: 50_000,
        stale_after: Duration::from_millis(150),
        max_ticks: Some(ticks),
        warmup_ticks: 2,
    };
    let mut pre = Preprocessor::new(128, 72, 8, 128, 64, &PreprocessSpec::default());
    let mut sup = Supervisor::new(SupervisorConfig::default());
    let live = LiveStats::default();
    let stop = AtomicBool::new(false);
    let mut real = EmbassyClock::new();
    let mut virt = VirtualClock::default();
    let clock: &mut dyn rtvla::clock::Clock = if real_time { &mut real } else { &mut virt };
    let mut stages = Stages {
        source: &mut camera,
        pre: &mut pre,
        student,
        controller: &mut Controller::new(),
        supervisor: &mut sup,
        vehicle: &mut vehicle,
        recorder: None,
    };
    let o = run_loop(&cfg, clock, &mut stages, &live, &stop);
    harness.finish().unwrap();
    let mut sent = vehicle.sent;
    sent.pop(); // the final STOP sent on exit
    (o, sent)
}

fn fault_count(o: &LoopOutcome, f: Fault) -> u64 {
    o.fault_counts[Fault::ALL.iter().position(|x| *x == f).unwrap()]
}

#[test]
fn nan_output_stops_in_the_same_tick_and_recovers() {
    let mut s = Scripted::new();
    s.nan_ticks = 10..13;
    let (o, sent) = run(&mut s, 0..0, 40, false);
    assert_eq!(o.ticks, 40);
    assert!(sent[9].throttle > 0.0 || sent[9].brake == 0.0, "driving before the fault: {:?}", sent[9]);
    for (t, c) in sent.iter().enumerate().take(15).skip(10) {
        assert_eq!(c.throttle, 0.0, "tick {t} must not accelerate: {c:?}");
        assert!(c.brake > 0.0, "tick {t} must brake: {c:?}");
    }
    assert_eq!(o.fallbacks, 1);
    assert_eq!(fault_count(&o, Fault::BadModelOutput), 1);
    assert!(sent[20..].iter().any(|c| c.brake == 0.0), "recovered after the fault cleared");
    let after = o.nominal_ticks_at_end;
    assert!(after > 0 && after <= 40 - 13, "driving since the fault cleared, not counting ticks before it: {after}");
}

#[test]
fn inference_error_and_link_loss_are_controlled_stops() {
    let mut s = Scripted::new();
    s.fail_ticks = 5..7;
    let (o, sent) = run(&mut s, 20..24, 40, false);
    assert_eq!(o.fallbacks, 2, "{:?}", o.fault_counts);
    assert_eq!(fault_count(&o, Fault::InferenceError), 1);
    assert_eq!(fault_count(&o, Fault::LinkState), 1);
    assert!(sent[5].brake > 0.0 && sent[20].brake > 0.0);
    assert!(sent.iter().all(|c| c.is_valid()));
}

#[test]
fn an_impossible_vehicle_state_is_a_fault_not_a_command() {
    let mut s = Scripted::new();
    let (o, sent) = run_with_bad_state(&mut s, 0..0, 12..52, 70, false);
    assert_eq!(fault_count(&o, Fault::BadState), 1, "{:?}", o.fault_counts);
    assert_eq!(o.fallbacks, 1);
    for (t, c) in sent.iter().enumerate().take(52).skip(12) {
        assert_eq!(c.throttle, 0.0, "tick {t}: no throttle on a -50 m/s state: {c:?}");
        assert!(c.brake > 0.0, "tick {t} brakes: {c:?}");
    }
    assert!(sent[56..].iter().any(|c| c.brake == 0.0), "recovers once the states are sane again");
}

#[test]
fn deadline_miss_in_real_time_triggers_fallback_and_skips_ticks() {
    let mut s = Scripted::new();
    s.slow_tick = Some(8);
    let (o, sent) = run(&mut s, 0..0, 30, true);
    assert!(o.deadline_misses >= 1, "the 70 ms tick overran its 50 ms budget");
    assert!(o.skipped_ticks >= 1, "an overrun past the next period skips ticks instead of bursting");
    assert_eq!(fault_count(&o, Fault::DeadlineMiss), 1, "{:?}", o.fault_counts);
    assert!(sent[9].brake > 0.0 && sent[9].throttle == 0.0, "the tick after the overrun stops: {:?}", sent[9]);
    assert!(sent[20..].iter().any(|c| c.brake == 0.0), "recovers");
}

/// A camera that never delivers: NoFrame every tick, the car is held stopped, nothing panics.
struct DeadCamera;
impl FrameSource for DeadCamera {
    fn latest(&mut self) -> Option<&Frame> {
        None
    }
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

#[test]
fn unplugged_camera_holds_the_car_stopped() {
    let (o, sent) = run_with_source(&mut DeadCamera, &mut VirtualClock::default(), 50_000, 10);
    assert_eq!(o.nominal_ticks_at_end, 0, "never drove: no recovery to claim");
    assert_eq!(o.ticks, 10);
    assert_eq!(fault_count(&o, Fault::NoFrame), 1);
    assert!(sent.iter().all(|c| c.throttle == 0.0 && c.brake > 0.0));
}

/// Run the loop over a given frame source (the simulator is still the vehicle); returns the commands sent, without
/// the final STOP sent on exit.
fn run_with_source(
    source: &mut dyn FrameSource,
    clock: &mut dyn rtvla::clock::Clock,
    period_us: u64,
    ticks: u64,
) -> (LoopOutcome, Vec<Command>) {
    let (harness, _camera, vehicle) = SimHarness::spawn(sim_options(Duration::from_millis(5))).unwrap();
    let mut vehicle = Recording { inner: vehicle, sent: vec![], fail_state: 0..0, bad_state: 0..0, ticks: 0 };
    let cfg = LoopConfig {
        period_us,
        deadline_us: period_us,
        stale_after: Duration::from_millis(150),
        max_ticks: Some(ticks),
        warmup_ticks: 0,
    };
    let mut pre = Preprocessor::new(128, 72, 8, 128, 64, &PreprocessSpec::default());
    let mut sup = Supervisor::new(SupervisorConfig::default());
    let mut stages = Stages {
        source,
        pre: &mut pre,
        student: &mut Scripted::new(),
        controller: &mut Controller::new(),
        supervisor: &mut sup,
        vehicle: &mut vehicle,
        recorder: None,
    };
    let o = run_loop(&cfg, clock, &mut stages, &LiveStats::default(), &AtomicBool::new(false));
    harness.finish().unwrap();
    vehicle.sent.pop();
    (o, vehicle.sent)
}

/// A camera whose only frame is old (the capture thread hung): stale by age → stop, in real time.
struct FrozenCamera(Frame);
impl FrameSource for FrozenCamera {
    fn latest(&mut self) -> Option<&Frame> {
        Some(&self.0)
    }
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

#[test]
fn stale_frame_by_age_stops_the_car() {
    let mut frame = Frame::blank(128, 72);
    frame.seq = 1;
    frame.captured_at = std::time::Instant::now() - Duration::from_millis(400);
    let (o, sent) = run_with_source(&mut FrozenCamera(frame), &mut EmbassyClock::new(), 20_000, 5);
    assert_eq!(fault_count(&o, Fault::StaleFrame), 1);
    assert!(sent.iter().all(|c| c.throttle == 0.0 && c.brake > 0.0), "{sent:?}");
}
