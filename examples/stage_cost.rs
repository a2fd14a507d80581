//! Quick per-stage cost probe (not a test): controller step and supervisor filter in a tight loop.
use rtvla::control::Controller;
use rtvla::supervisor::{Faults, Supervisor, SupervisorConfig};
use rtvla::types::Waypoints;
use std::time::Instant;

fn main() {
    let mut w = Waypoints::default();
    for i in 0..20 {
        w.path[i] = [(i + 1) as f32, 0.02 * (i * i) as f32];
    }
    for i in 0..10 {
        w.speed_wps[i] = [(i + 1) as f32 * 1.5, 0.0];
    }
    let mut c = Controller::new();
    let n = 20_000;
    let t = Instant::now();
    let mut acc = 0.0;
    for k in 0..n {
        acc += c.step(&w, 4.0 + (k % 7) as f32 * 0.1).command.steer;
    }
    println!("controller.step: {:.2} us ({acc})", t.elapsed().as_secs_f64() * 1e6 / n as f64);
    let mut s = Supervisor::new(SupervisorConfig::default());
    let t = Instant::now();
    for _ in 0..n {
        let _ = s.filter(Faults::default(), Some(rtvla::types::Command { steer: 0.1, throttle: 0.3, brake: 0.0 }));
    }
    println!("supervisor.filter: {:.3} us", t.elapsed().as_secs_f64() * 1e6 / n as f64);
}
