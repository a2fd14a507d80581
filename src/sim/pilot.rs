//! A compact SimLingo-style controller used by the expert's closed loop when `crate::control` is not available.
//! Lateral PID on the heading to a speed-dependent lookahead point of the path; longitudinal PID on the speed implied
//! by the speed waypoints (desired = ‖wp0 − wp2‖·2), braking when desired < 0.4 or speed/desired > 1.1.

use crate::types::{Command, Waypoints};

/// SimLingo-like PID controller (linear path resampling instead of PCHIP).
#[derive(Clone, Debug)]
pub struct Pilot {
    lat: [f32; 6],
    lat_n: usize,
    lat_prev: f32,
    spd: [f32; 20],
    spd_i: usize,
    spd_prev: f32,
}

impl Default for Pilot {
    fn default() -> Self {
        Self::new()
    }
}

impl Pilot {
    pub fn new() -> Pilot {
        Pilot {
            lat: [0.0; 6],
            lat_n: 0,
            lat_prev: 0.0,
            spd: [0.0; 20],
            spd_i: 0,
            spd_prev: 0.0,
        }
    }

    pub fn reset(&mut self) {
        *self = Pilot::new();
    }

    /// One control step.
    pub fn step(&mut self, wps: &Waypoints, speed: f32) -> Command {
        // lateral: lookahead point on the path (with (0,0) prepended) at 0.1·(idx+1) m
        let kmh = speed * 3.6;
        let idx = (0.9755 * kmh + 1.9153).clamp(24.0, 105.0) as usize;
        let la = 0.1 * (idx as f32 + 1.0);
        let mut prev = [0.0f32, 0.0];
        let mut acc = 0.0;
        let mut target = *wps.path.last().unwrap();
        for p in &wps.path {
            let d = ((p[0] - prev[0]).powi(2) + (p[1] - prev[1]).powi(2)).sqrt();
            if acc + d >= la && d > 1e-6 {
                let t = (la - acc) / d;
                target = [
                    prev[0] + (p[0] - prev[0]) * t,
                    prev[1] + (p[1] - prev[1]) * t,
                ];
                break;
            }
            acc += d;
            prev = *p;
        }
        let ang = target[1].atan2(target[0]);
        let ang =
            (ang + std::f32::consts::PI).rem_euclid(std::f32::consts::TAU) - std::f32::consts::PI;
        let err = ang * 2.0 / std::f32::consts::PI;
        if self.lat_n == self.lat.len() {
            self.lat.rotate_left(1);
            self.lat_n -= 1;
        }
        self.lat[self.lat_n] = err;
        self.lat_n += 1;
        let integ = self.lat[..self.lat_n].iter().sum::<f32>() / self.lat_n as f32;
        let deriv = if self.lat_n >= 2 {
            err - self.lat_prev
        } else {
            0.0
        };
        self.lat_prev = err;
        let steer = (3.1184 * err + 0.6406 * integ + 1.3783 * deriv).clamp(-1.0, 1.0);
        let steer = (steer * 1000.0).round() / 1000.0;

        // longitudinal
        let w0 = wps.speed_wps[0];
        let w2 = wps.speed_wps[2];
        let desired = ((w0[0] - w2[0]).powi(2) + (w0[1] - w2[1]).powi(2)).sqrt() * 2.0;
        let brake = desired < 0.4 || speed / desired.max(1e-6) > 1.1;
        let delta = (desired - speed).clamp(0.0, 1.0);
        self.spd[self.spd_i] = delta;
        self.spd_i = (self.spd_i + 1) % self.spd.len();
        let integ = self.spd.iter().sum::<f32>() / self.spd.len() as f32;
        let deriv = delta - self.spd_prev;
        self.spd_prev = delta;
        let mut throttle = (1.75 * delta + 1.0 * integ + 2.0 * deriv).clamp(0.0, 1.0);
        if brake {
            throttle = 0.0;
        }
        Command {
            steer,
            throttle,
            brake: if brake { 1.0 } else { 0.0 },
        }
    }
}
