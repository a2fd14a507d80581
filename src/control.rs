//! SimLingo's controller, ported step for step: a lateral PID on the PCHIP-resampled path and a
//! longitudinal PID on speed, plus the stuck/creep escape.
//!
//! Source: RenzKa/simlingo (Apache-2.0) `team_code/agent_simlingo.py` (`control_pid`,
//! `interpolate_waypoints`, the stuck block of `run_step`), `team_code/nav_planner.py`
//! (`LateralPIDController`), `team_code/transfuser_utils.py` (`PIDController`),
//! `team_code/config_simlingo.py`. SimLingo pins numpy 1.23 / scipy 1.10; where the precision of
//! an operation decides a comparison or a rounding we use the dtype that code ran in (mostly f32).
//! Frame: x forward, y right (CARLA), so a left curve has y < 0 and gives negative steer.

use crate::types::{Command, Point, Waypoints, PATH_POINTS, SPEED_POINTS};

/// Knots of the resampled curve: the ego origin plus the predicted path.
const KNOTS: usize = PATH_POINTS + 1;
/// Spacing of the resampled path, metres.
const RESAMPLE_STEP: f64 = 0.1;
/// Samples kept: the lookahead never reaches past index 105, so later samples are never read.
pub const RESAMPLE_LEN: usize = 106;

/// Lateral gains (nav_planner defaults; its constructor order is k_p, k_d, k_i).
const LAT_KP: f64 = 3.118357247806046;
const LAT_KD: f64 = 1.3782508892109167;
const LAT_KI: f64 = 0.6406067986034124;
/// Lookahead = speed_scale · v[km/h] + speed_offset, clipped to [24, 105] samples.
const LOOKAHEAD_SCALE: f64 = 0.9755321901954155;
const LOOKAHEAD_OFFSET: f64 = 1.9152884533402488;
const LOOKAHEAD_MIN: f32 = 24.0;
const LOOKAHEAD_MAX: f32 = 105.0;
/// Lateral memory: last 6 heading errors.
const LAT_WINDOW: usize = 6;

/// Longitudinal gains and memory (config_simlingo speed_kp/ki/kd/n).
const SPEED_KP: f64 = 1.75;
const SPEED_KI: f64 = 1.0;
const SPEED_KD: f64 = 2.0;
const SPEED_WINDOW: usize = 20;

/// Below this desired speed (m/s) the car brakes.
const BRAKE_SPEED: f64 = 0.4;
/// Brake when speed / desired exceeds this.
const BRAKE_RATIO: f64 = 1.1;
/// Speed error fed to the PID is clipped to [0, CLIP_DELTA].
const CLIP_DELTA: f32 = 1.0;
/// Throttle ceiling (SimLingo's clip_throttle).
const CLIP_THROTTLE: f32 = 1.0;

/// Speeds below this (after rounding) count as stopped.
const STOPPED_SPEED: f64 = 0.1;
/// Consecutive stopped calls tolerated before creeping (more than this triggers).
const STUCK_THRESHOLD: u32 = 800;
/// Creep length, counted from the last stopped call (including it).
const CREEP_DURATION: u32 = 15;
/// Minimum throttle while creeping.
const CREEP_THROTTLE: f32 = 0.4;

/// One control step's result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ControlOutput {
    /// steer in [-1,1] (+ right), throttle [0,1], brake 0.0 or 1.0.
    pub command: Command,
    /// m/s, from the speed waypoints (0 on rejected input).
    pub desired_speed: f32,
    /// Index into the 0.1 m resampled path that the lateral PID aimed at.
    pub lookahead_index: usize,
    /// True while the stuck escape overrides throttle and brake.
    pub creeping: bool,
}

impl ControlOutput {
    /// What a rejected (non-finite) input yields: stop, wheel straight, no state touched.
    pub const SAFE: ControlOutput =
        ControlOutput { command: Command::STOP, desired_speed: 0.0, lookahead_index: 0, creeping: false };
}

/// Monotone cubic interpolant with scipy's `PchipInterpolator` semantics (interior weighted
/// harmonic mean, Moler's one-sided end derivatives, linear for two knots, extrapolates).
#[derive(Clone, Copy, Debug)]
pub struct Pchip<const N: usize> {
    x: [f64; N],
    y: [f64; N],
    d: [f64; N],
}

impl<const N: usize> Pchip<N> {
    /// `None` where scipy raises: fewer than 2 knots, non-finite values, or x not strictly increasing.
    pub fn new(x: [f64; N], y: [f64; N]) -> Option<Self> {
        if N < 2 || !x.iter().chain(y.iter()).all(|v| v.is_finite()) || x.windows(2).any(|w| w[1] - w[0] <= 0.0) {
            return None;
        }
        let mut h = [0.0; N];
        let mut m = [0.0; N];
        for k in 0..N - 1 {
            h[k] = x[k + 1] - x[k];
            m[k] = (y[k + 1] - y[k]) / h[k];
        }
        let mut d = [0.0; N];
        if N == 2 {
            d[0] = m[0];
            d[1] = m[0];
            return Some(Pchip { x, y, d });
        }
        for k in 1..N - 1 {
            let (m0, m1) = (m[k - 1], m[k]);
            // scipy: zero where the slopes change sign or either is zero (np.sign compared).
            if sign(m1) != sign(m0) || m1 == 0.0 || m0 == 0.0 {
                d[k] = 0.0;
            } else {
                let w1 = 2.0 * h[k] + h[k - 1];
                let w2 = h[k] + 2.0 * h[k - 1];
                let whmean = (w1 / m0 + w2 / m1) / (w1 + w2);
                d[k] = 1.0 / whmean;
            }
        }
        d[0] = pchip_edge(h[0], h[1], m[0], m[1]);
        d[N - 1] = pchip_edge(h[N - 2], h[N - 3], m[N - 2], m[N - 3]);
        Some(Pchip { x, y, d })
    }

    /// Value at `t`, evaluated like scipy's PPoly (Hermite coefficients, then c3 + c2·s + c1·s² + c0·s³).
    pub fn eval(&self, t: f64) -> f64 {
        let i = self.interval(t);
        let dx = self.x[i + 1] - self.x[i];
        let slope = (self.y[i + 1] - self.y[i]) / dx;
        let tt = (self.d[i] + self.d[i + 1] - 2.0 * slope) / dx;
        let c0 = tt / dx;
        let c1 = (slope - self.d[i]) / dx - tt;
        let c2 = self.d[i];
        let c3 = self.y[i];
        let s = t - self.x[i];
        let mut res = c3;
        let mut z = s;
        res += c2 * z;
        z *= s;
        res += c1 * z;
        z *= s;
        res += c0 * z;
        res
    }

    /// The knot derivatives scipy chose (for tests and inspection).
    pub fn derivatives(&self) -> &[f64; N] {
        &self.d
    }

    /// scipy's find_interval: x[i] <= t < x[i+1], closed on the right, extrapolating at both ends.
    fn interval(&self, t: f64) -> usize {
        if t >= self.x[N - 1] {
            return N - 2;
        }
        let mut i = 0;
        while i < N - 2 && t >= self.x[i + 1] {
            i += 1;
        }
        i
    }
}

/// np.sign for finite floats (0 for ±0).
fn sign(v: f64) -> f64 {
    if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// scipy's `PchipInterpolator._edge_case`: one-sided three-point estimate, shape preserving.
fn pchip_edge(h0: f64, h1: f64, m0: f64, m1: f64) -> f64 {
    let d = ((2.0 * h0 + h1) * m0 - h0 * m1) / (h0 + h1);
    if sign(d) != sign(m0) {
        0.0
    } else if sign(m0) != sign(m1) && d.abs() > 3.0 * m0.abs() {
        3.0 * m0
    } else {
        d
    }
}

/// The path resampled every 0.1 m along the curve parameter; only the first `len` points are valid.
#[derive(Clone, Copy, Debug)]
pub struct Resampled {
    pub points: [[f64; 2]; RESAMPLE_LEN],
    /// Valid samples, at most RESAMPLE_LEN (the original may have more; none past 105 is ever read).
    pub len: usize,
    /// Samples the original would have produced (np.arange length, or 1 for the fallback).
    pub full_len: usize,
}

/// SimLingo's `interpolate_waypoints`: prepend the origin, parameterise by cumulative chord length
/// plus i·1e-4 (computed in f32 as the original), PCHIP x and y, sample at 0.1, 0.2, … < end.
/// With no sample (path shorter than 0.1 m) the last path point is the only sample.
/// `None` where scipy would raise (non-finite or non-increasing parameter).
pub fn pchip_resample(path: &[Point; PATH_POINTS]) -> Option<Resampled> {
    let mut pts = [[0.0f32; 2]; KNOTS];
    pts[1..].copy_from_slice(path);
    let mut t = [0.0f64; KNOTS];
    let mut xs = [0.0f64; KNOTS];
    let mut ys = [0.0f64; KNOTS];
    let mut cum = 0.0f32;
    for i in 0..KNOTS {
        if i > 0 {
            let dx = pts[i][0] - pts[i - 1][0];
            let dy = pts[i][1] - pts[i - 1][1];
            cum += (dx * dx + dy * dy).sqrt();
        }
        // f32 cumsum, plus an f64 i·1e-4, stored back into the f32 array.
        t[i] = (cum as f64 + i as f64 * 1e-4) as f32 as f64;
        xs[i] = pts[i][0] as f64;
        ys[i] = pts[i][1] as f64;
    }
    let fx = Pchip::new(t, xs)?;
    let fy = Pchip::new(t, ys)?;
    let end = t[KNOTS - 1];
    // np.arange(0.1, end, 0.1): length ceil((end - 0.1) / 0.1), values 0.1 + k·0.1.
    let n = ((end - RESAMPLE_STEP) / RESAMPLE_STEP).ceil();
    let full_len = if n > 0.0 { n as usize } else { 0 };
    let mut out = Resampled { points: [[0.0; 2]; RESAMPLE_LEN], len: 0, full_len };
    if full_len == 0 {
        let last = pts[KNOTS - 1];
        out.points[0] = [last[0] as f64, last[1] as f64];
        out.len = 1;
        out.full_len = 1;
        return Some(out);
    }
    out.len = full_len.min(RESAMPLE_LEN);
    for k in 0..out.len {
        let s = RESAMPLE_STEP + k as f64 * RESAMPLE_STEP;
        out.points[k] = [fx.eval(s), fy.eval(s)];
    }
    Some(out)
}

/// Lookahead sample index: int(clip(0.9755·v·3.6 + 1.915, 24, 105)), capped at the last sample.
/// Computed in f32 because SimLingo's speed is a float32 array, so truncation matches at the edges.
pub fn lookahead_index(speed_mps: f32, samples: usize) -> usize {
    let kmh = speed_mps * 3.6f64 as f32;
    let raw = LOOKAHEAD_SCALE as f32 * kmh + LOOKAHEAD_OFFSET as f32;
    let clipped = raw.clamp(LOOKAHEAD_MIN, LOOKAHEAD_MAX);
    (clipped as usize).min(samples.saturating_sub(1))
}

/// Heading error to `p`, wrapped to [-π, π) with numpy's floored modulo, scaled by 180/π/90.
pub fn heading_error(p: [f64; 2]) -> f64 {
    use std::f64::consts::PI;
    let yaw = p[1].atan2(p[0]);
    let two_pi = 2.0 * PI;
    // numpy remainder: fmod, shifted into the divisor's sign, +0.0 for an exact zero.
    let mut h = yaw % two_pi;
    if h == 0.0 {
        h = 0.0;
    } else if h < 0.0 {
        h += two_pi;
    }
    let h = if h < PI { h } else { h - two_pi };
    h * 180.0 / PI / 90.0
}

/// numpy `round(x, 3)`: rint(x·1000)/1000, ties to even on the scaled value.
pub fn round_steer(x: f64) -> f64 {
    (x * 1000.0).round_ties_even() / 1000.0
}

/// Python `round(v, 1)` held as float32, as SimLingo stores the measured speed.
/// v·10 is exact in f64 for any f32, so rounding it is the correctly rounded decimal.
pub fn round_speed(v: f32) -> f32 {
    ((v as f64 * 10.0).round_ties_even() / 10.0) as f32
}

/// ‖wp[0] − wp[2]‖ · 2 in f32: the speed waypoints are 0.25 s apart, so wp0→wp2 spans half a second.
pub fn desired_speed(speed_wps: &[Point; SPEED_POINTS]) -> f32 {
    let dx = speed_wps[0][0] - speed_wps[2][0];
    let dy = speed_wps[0][1] - speed_wps[2][1];
    (dx * dx + dy * dy).sqrt() * 2.0
}

/// SimLingo's lateral PID on heading error. Its window starts empty, so the first integral is the
/// first error itself and the first derivative is 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct LateralPid {
    window: [f64; LAT_WINDOW],
    len: usize,
}

impl LateralPid {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Push one heading error (already scaled to ±2 per ±π) and return steer clipped to [-1, 1].
    pub fn step_error(&mut self, heading_error: f64) -> f64 {
        if self.len < LAT_WINDOW {
            self.window[self.len] = heading_error;
            self.len += 1;
        } else {
            self.window.rotate_left(1);
            self.window[LAT_WINDOW - 1] = heading_error;
        }
        let w = &self.window[..self.len];
        let derivative = if w.len() == 1 { 0.0 } else { w[w.len() - 1] - w[w.len() - 2] };
        let integral = w.iter().fold(0.0, |acc, v| acc + v) / w.len() as f64;
        (LAT_KP * heading_error + LAT_KD * derivative + LAT_KI * integral).clamp(-1.0, 1.0)
    }

    /// Steer toward the lookahead sample of `route`; returns (steer, index used).
    pub fn step(&mut self, route: &Resampled, speed_mps: f32) -> (f64, usize) {
        let idx = lookahead_index(speed_mps, route.len);
        (self.step_error(heading_error(route.points[idx])), idx)
    }
}

/// SimLingo's longitudinal PID (transfuser_utils.PIDController). The window starts as 20 zeros, so
/// the integral is always sum/20 and the first derivative is the error itself; no dt anywhere.
/// Arithmetic in f32, as the original ran on float32 arrays.
#[derive(Clone, Copy, Debug, Default)]
pub struct SpeedPid {
    window: [f32; SPEED_WINDOW],
}

impl SpeedPid {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Push the speed error and return the raw (unclipped) PID output.
    pub fn step(&mut self, error: f32) -> f32 {
        self.window.rotate_left(1);
        self.window[SPEED_WINDOW - 1] = error;
        let integral = self.window.iter().fold(0.0f32, |acc, v| acc + v) / SPEED_WINDOW as f32;
        let derivative = self.window[SPEED_WINDOW - 1] - self.window[SPEED_WINDOW - 2];
        SPEED_KP as f32 * error + SPEED_KI as f32 * integral + SPEED_KD as f32 * derivative
    }
}

/// SimLingo's controller: lateral PID on the PCHIP-resampled path + longitudinal PID on speed, with stuck/creep logic.
#[derive(Clone, Copy, Debug, Default)]
pub struct Controller {
    lateral: LateralPid,
    speed: SpeedPid,
    /// Consecutive calls with rounded speed < 0.1 m/s.
    stuck_detector: u32,
    /// Remaining creep calls.
    force_move: u32,
}

impl Controller {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// One control step. Allocates nothing. Non-finite input (which would make SimLingo raise or
    /// emit NaN) yields [`ControlOutput::SAFE`] and leaves every PID window and counter untouched.
    pub fn step(&mut self, wps: &Waypoints, speed_mps: f32) -> ControlOutput {
        let finite =
            speed_mps.is_finite() && wps.path.iter().chain(wps.speed_wps.iter()).flatten().all(|v| v.is_finite());
        if !finite {
            return ControlOutput::SAFE;
        }
        let speed = round_speed(speed_mps);
        let desired = desired_speed(&wps.speed_wps);
        if !desired.is_finite() {
            return ControlOutput::SAFE;
        }
        let Some(route) = pchip_resample(&wps.path) else {
            return ControlOutput::SAFE;
        };

        // Longitudinal. `desired < 0.4` short-circuits before the ratio divides by zero.
        let mut brake = (desired as f64) < BRAKE_SPEED || speed / desired > BRAKE_RATIO as f32;
        let delta = (desired - speed).clamp(0.0, CLIP_DELTA);
        let mut throttle = self.speed.step(delta).clamp(0.0, CLIP_THROTTLE);
        if brake {
            throttle = 0.0;
        }

        // Lateral.
        let (steer, lookahead_index) = self.lateral.step(&route, speed);
        let steer = round_steer(steer.clamp(-1.0, 1.0)) as f32;

        // Stuck escape: creep from the 801st consecutive stopped call, for 14 calls after moving.
        if (speed as f64) < STOPPED_SPEED {
            self.stuck_detector = self.stuck_detector.saturating_add(1);
        } else {
            self.stuck_detector = 0;
        }
        if self.stuck_detector > STUCK_THRESHOLD {
            self.force_move = CREEP_DURATION;
        }
        let creeping = self.force_move > 0;
        if creeping {
            throttle = throttle.max(CREEP_THROTTLE);
            brake = false;
            self.force_move -= 1;
        }

        ControlOutput {
            command: Command { steer, throttle, brake: if brake { 1.0 } else { 0.0 } },
            desired_speed: desired,
            lookahead_index,
            creeping,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Reference values come from `tools/simlingo_reference.py`: SimLingo's own controller code
    //! re-implemented in numpy with scipy 1.17's real `PchipInterpolator` (same algorithm as the
    //! scipy 1.10 SimLingo pins), keeping SimLingo's float32 inputs and numpy-1.23 semantics.
    //! Inputs sit on a 1/256 m grid so float32 holds them exactly on both sides.
    use super::*;

    /// (steer, throttle, brake, desired_speed, lookahead_index, creeping) as printed by the script.
    type Out = (f64, f64, f64, f64, usize, bool);

    fn q(v: f64) -> f32 {
        ((v * 256.0).round_ties_even() / 256.0) as f32
    }

    fn straight_path() -> [Point; PATH_POINTS] {
        std::array::from_fn(|i| [q(i as f64 + 1.0), 0.0])
    }

    /// 20 points 1 m apart in arc length; side -1 = left (y < 0), +1 = right.
    fn arc_path(radius: f64, side: f64) -> [Point; PATH_POINTS] {
        std::array::from_fn(|i| {
            let a = (i as f64 + 1.0) / radius;
            [q(radius * a.sin()), q(side * radius * (1.0 - a.cos()))]
        })
    }

    fn speed_wps(spacing: f64) -> [Point; SPEED_POINTS] {
        std::array::from_fn(|i| [q(spacing * (i as f64 + 1.0)), 0.0])
    }

    fn bunched() -> [Point; SPEED_POINTS] {
        [[0.5, 0.0]; SPEED_POINTS]
    }

    fn wps(path: [Point; PATH_POINTS], speed_wps: [Point; SPEED_POINTS]) -> Waypoints {
        Waypoints { path, speed_wps }
    }

    #[track_caller]
    fn check(got: ControlOutput, want: Out) {
        let c = got.command;
        assert!((c.steer as f64 - want.0).abs() < 1e-6, "steer {} vs {}", c.steer, want.0);
        assert!((c.throttle as f64 - want.1).abs() < 1e-5, "throttle {} vs {}", c.throttle, want.1);
        assert_eq!(c.brake as f64, want.2, "brake");
        assert!((got.desired_speed as f64 - want.3).abs() < 1e-6, "desired {} vs {}", got.desired_speed, want.3);
        assert_eq!(got.lookahead_index, want.4, "lookahead index");
        assert_eq!(got.creeping, want.5, "creeping");
        assert!(c.is_valid());
    }

    fn one(path: [Point; PATH_POINTS], s: [Point; SPEED_POINTS], v: f32) -> ControlOutput {
        Controller::new().step(&wps(path, s), v)
    }

    #[test]
    fn straight_at_speed_goes_straight_with_throttle() {
        let out = one(straight_path(), speed_wps(2.5), 9.9);
        check(out, (0.0, 0.3800014555454254, 0.0, 10.0, 36, false));
        assert_eq!(out.command.steer, 0.0);
        assert!(out.command.throttle > 0.0);
    }

    #[test]
    fn left_curve_steers_negative_right_curve_positive() {
        let left = one(arc_path(20.0, -1.0), speed_wps(1.5), 5.0);
        let right = one(arc_path(20.0, 1.0), speed_wps(1.5), 5.0);
        check(left, (-0.15000000596046448, 1.0, 0.0, 6.0, 24, false));
        check(right, (0.15000000596046448, 1.0, 0.0, 6.0, 24, false));
        assert!(left.command.steer < 0.0 && right.command.steer > 0.0);
    }

    #[test]
    fn bunched_speed_waypoints_brake() {
        check(one(straight_path(), bunched(), 3.0), (0.0, 0.0, 1.0, 0.0, 24, false));
    }

    #[test]
    fn overspeed_brakes_and_ratio_exactly_1_1_does_not() {
        check(one(straight_path(), speed_wps(1.25), 5.6), (0.0, 0.0, 1.0, 5.0, 24, false));
        // 5.5 / 5.0 rounds to float32(1.1), which is not > float32(1.1).
        check(one(straight_path(), speed_wps(1.25), 5.5), (0.0, 0.0, 0.0, 5.0, 24, false));
    }

    #[test]
    fn lookahead_clips_to_105_at_high_speed() {
        check(one(arc_path(60.0, -1.0), speed_wps(4.0), 30.0), (-0.210999995470047, 0.0, 1.0, 16.0, 105, false));
        assert_eq!(lookahead_index(0.0, 200), 24);
        assert_eq!(lookahead_index(-3.0, 200), 24);
        assert_eq!(lookahead_index(10.0, 200), 37); // 0.9755·36 + 1.915 = 37.03
        assert_eq!(lookahead_index(1000.0, 200), 105);
        assert_eq!(lookahead_index(10.0, 30), 29);
        assert_eq!(lookahead_index(10.0, 1), 0);
    }

    #[test]
    fn lookahead_capped_by_short_path() {
        // A 3 m path yields 30 samples, so the index stops at 29.
        let three: [Point; PATH_POINTS] =
            std::array::from_fn(|i| [q(0.15 * (i as f64 + 1.0)), q(0.01 * (i as f64 + 1.0))]);
        check(one(three, speed_wps(1.5), 10.0), (0.1589999943971634, 0.0, 1.0, 6.0, 29, false));
        let r = pchip_resample(&three).unwrap();
        assert_eq!((r.len, r.full_len), (30, 30));
        assert!((r.points[29][0] - 2.9911634197639563).abs() < 1e-9);
        assert!((r.points[29][1] - 0.1988519357377948).abs() < 1e-9);
    }

    #[test]
    fn sequence_matches_reference_pid_memory() {
        // Both windows fill and slide; call 6 brakes while the speed PID keeps integrating.
        let seq: [(char, f64, f32); 10] = [
            ('L', 15.0, 9.3),
            ('L', 15.0, 9.6),
            ('R', 30.0, 9.9),
            ('S', 0.0, 10.0),
            ('L', 25.0, 10.4),
            ('R', 12.0, 11.2),
            ('R', 12.0, 10.6),
            ('L', 40.0, 9.8),
            ('S', 0.0, 9.0),
            ('L', 18.0, 9.5),
        ];
        let want: [Out; 10] = [
            (-0.2800000011920929, 1.0, 0.0, 10.0, 34, false),
            (-0.28999999165534973, 0.15499889850616455, 0.0, 10.0, 35, false),
            (0.257999986410141, 0.0, 0.0, 10.0, 36, false),
            (-0.07199999690055847, 0.0, 0.0, 10.0, 37, false),
            (-0.24500000476837158, 0.059999991208314896, 0.0, 10.0, 38, false),
            (0.5640000104904175, 0.0, 1.0, 10.0, 41, false),
            (0.33799999952316284, 0.059999991208314896, 0.0, 10.0, 39, false),
            (-0.25999999046325684, 0.8199992775917053, 0.0, 10.0, 36, false),
            (0.054999999701976776, 1.0, 0.0, 10.0, 33, false),
            (-0.27799999713897705, 0.019999980926513672, 0.0, 10.0, 35, false),
        ];
        let mut c = Controller::new();
        for (&(kind, radius, v), &w) in seq.iter().zip(want.iter()) {
            let path = match kind {
                'S' => straight_path(),
                'L' => arc_path(radius, -1.0),
                _ => arc_path(radius, 1.0),
            };
            check(c.step(&wps(path, speed_wps(2.5)), v), w);
        }
        // reset() forgets the memory: the first call matches a fresh controller.
        c.reset();
        check(c.step(&wps(arc_path(15.0, -1.0), speed_wps(2.5)), 9.3), want[0]);
    }

    #[test]
    fn lateral_window_starts_empty_and_averages_present_entries() {
        let mut p = LateralPid::new();
        // First call: derivative 0, integral = the error itself.
        let s1 = p.step_error(0.1);
        assert!((s1 - (LAT_KP * 0.1 + LAT_KI * 0.1)).abs() < 1e-12);
        let s2 = p.step_error(0.2);
        assert!((s2 - (LAT_KP * 0.2 + LAT_KD * (0.2 - 0.1) + LAT_KI * 0.15)).abs() < 1e-12);
        for e in [0.0, 0.0, 0.0, 0.0] {
            p.step_error(e);
        }
        // Window now [0.1, 0.2, 0, 0, 0, 0]; the 7th push drops 0.1.
        let s7 = p.step_error(0.03);
        assert!((s7 - (LAT_KP * 0.03 + LAT_KD * 0.03 + LAT_KI * (0.2 + 0.03) / 6.0)).abs() < 1e-12);
        // Clipped to [-1, 1].
        assert_eq!(p.step_error(5.0), 1.0);
        assert_eq!(p.step_error(-5.0), -1.0);
    }

    #[test]
    fn speed_window_starts_as_zeros_sum_over_20() {
        let mut p = SpeedPid::new();
        // First derivative = error - 0; integral = error / 20.
        assert!((p.step(0.5) - (1.75 * 0.5 + 0.5 / 20.0 + 2.0 * 0.5)).abs() < 1e-6);
        assert!((p.step(0.5) - (1.75 * 0.5 + 1.0 / 20.0)).abs() < 1e-6);
        assert!((p.step(0.0) - (1.0 / 20.0 - 2.0 * 0.5)).abs() < 1e-6);
        for _ in 0..20 {
            p.step(0.25);
        }
        assert!((p.step(0.25) - (1.75 * 0.25 + 0.25)).abs() < 1e-6);
        p.reset();
        assert!((p.step(0.5) - 1.9).abs() < 1e-6);
    }

    #[test]
    fn speed_pid_updates_while_braking() {
        let mut c = Controller::new();
        let s = speed_wps(2.5);
        let braked = c.step(&wps(straight_path(), s), 11.2); // 11.2 / 10 > 1.1
        assert_eq!(braked.command.brake, 1.0);
        // delta was clipped to 0 but still entered the window: next call's derivative sees it.
        let next = c.step(&wps(straight_path(), s), 9.9);
        let fresh = one(straight_path(), s, 9.9);
        let delta = 10.0f32 - 9.9;
        let expect = 1.75 * delta + delta / 20.0 + 2.0 * delta;
        assert!((next.command.throttle - expect).abs() < 1e-6);
        assert_eq!(next.command.throttle, fresh.command.throttle);
    }

    #[test]
    fn stuck_creeps_from_801st_stopped_call_and_lasts_14_after_moving() {
        let mut c = Controller::new();
        let w = wps(straight_path(), bunched());
        for _ in 0..800 {
            let o = c.step(&w, 0.0);
            assert!(!o.creeping);
            assert_eq!(o.command.brake, 1.0);
        }
        // 801st..803rd stopped calls creep (re-armed each time).
        for _ in 0..3 {
            check(c.step(&w, 0.0), (0.0, 0.4000000059604645, 0.0, 0.0, 24, true));
        }
        // Exactly 0.1 m/s is not stopped: 14 more creeping calls, then back to braking.
        for i in 0..16 {
            let o = c.step(&w, 0.1);
            assert_eq!(o.creeping, i < 14, "call {i}");
            if i < 14 {
                assert_eq!((o.command.throttle, o.command.brake), (0.4, 0.0));
            } else {
                check(o, (0.0, 0.0, 1.0, 0.0, 24, false));
            }
        }
    }

    #[test]
    fn moving_resets_the_stuck_count() {
        let mut c = Controller::new();
        let w = wps(straight_path(), bunched());
        for _ in 0..800 {
            c.step(&w, 0.0);
        }
        // 0.0999 rounds to 0.1: moving, so the count restarts.
        assert!(!c.step(&w, 0.0999).creeping);
        for _ in 0..800 {
            assert!(!c.step(&w, 0.04).creeping); // rounds to 0.0: stopped
        }
        assert!(c.step(&w, 0.0).creeping);
    }

    #[test]
    fn speed_rounds_like_python_round_1() {
        // Values and verdicts from the reference script (round(float(f32), 1) < 0.1).
        assert_eq!(round_speed(0.04), 0.0);
        assert_eq!(round_speed(0.0499), 0.0);
        assert_eq!(round_speed(0.05), 0.1); // f32 0.05 is 0.0500000007
        assert_eq!(round_speed(0.0999), 0.1);
        assert_eq!(round_speed(0.149), 0.1);
        assert_eq!(round_speed(0.25), 0.2); // exact binary tie: half to even
        assert_eq!(round_speed(9.87), 9.9);
    }

    #[test]
    fn steer_rounding_is_numpy_rint_ties_to_even() {
        // numpy: round(np.float64(0.0125), 3) == 0.012 (Python's round gives 0.013).
        assert_eq!(round_steer(0.0125), 0.012);
        assert_eq!(round_steer(-0.0125), -0.012);
        assert_eq!(round_steer(0.0135), 0.014);
        assert_eq!(round_steer(0.0625), 0.062);
        assert_eq!(round_steer(0.12345), 0.123);
        assert_eq!(round_steer(-0.9996), -1.0);
    }

    #[test]
    fn heading_error_wraps_with_floored_modulo() {
        use std::f64::consts::FRAC_1_SQRT_2;
        assert_eq!(heading_error([1.0, 0.0]), 0.0);
        assert!((heading_error([FRAC_1_SQRT_2, FRAC_1_SQRT_2]) - 0.5).abs() < 1e-12);
        assert!((heading_error([FRAC_1_SQRT_2, -FRAC_1_SQRT_2]) + 0.5).abs() < 1e-12);
        assert!((heading_error([0.0, -1.0]) + 1.0).abs() < 1e-12);
        // Straight behind: atan2 = π wraps to -π → -2.
        assert!((heading_error([-1.0, 0.0]) + 2.0).abs() < 1e-12);
        assert!((heading_error([-1.0, -1e-9]) + 2.0).abs() < 1e-6);
    }

    #[track_caller]
    fn check_pchip<const N: usize>(x: [f64; N], y: [f64; N], d: [f64; N], samples: &[(f64, f64)]) {
        let f = Pchip::new(x, y).unwrap();
        for (got, want) in f.derivatives().iter().zip(d.iter()) {
            assert!((got - want).abs() < 1e-12, "derivative {got} vs {want}");
        }
        for &(t, want) in samples {
            let got = f.eval(t);
            assert!((got - want).abs() < 1e-12, "f({t}) = {got} vs {want}");
        }
    }

    #[test]
    fn pchip_matches_scipy_including_end_derivatives() {
        // Start edge: d = 4 but slopes change sign and |d| > 3|m0| → 3·m0; end edge: sign flip → 0.
        check_pchip(
            [0., 1., 2., 3., 4.],
            [0., 1., -4., 1., 2.],
            [3.0, 0.0, 0.0, 1.6666666666666667, 0.0],
            &[
                (-0.5, -2.375),
                (0.0, 0.0),
                (0.5, 0.875),
                (1.0, 1.0),
                (3.08, 1.1310293333333334),
                (3.999, 1.9999986669999998),
                (4.0, 2.0),
                (4.4, 1.7653333333333325),
            ],
        );
        check_pchip(
            [0., 1., 2., 3., 4., 5.],
            [0., 1., 0.5, 0.5, 2., 3.],
            [1.75, 0.0, 0.0, 0.0, 1.2, 0.75],
            &[
                (-0.5, -0.96875),
                (0.0, 0.0),
                (0.5, 0.71875),
                (1.0, 1.0),
                (3.85, 1.7788249999999999),
                (4.999, 2.9992497000499996),
                (5.0, 3.0),
                (5.4, 3.2488),
            ],
        );
        check_pchip(
            [0.0, 0.3, 1.1, 1.5, 3.0, 3.2],
            [1., 2., 2.5, 2.6, 0., -0.5],
            [4.071969696969697, 1.1743772241992882, 0.34090909090909116, 0.0, -2.146325671738426, -2.5901960784313705],
            &[
                (-0.5, 1.5047509495908074),
                (0.0, 1.0),
                (0.15, 1.6086597177288904),
                (0.3, 2.0),
                (2.4640000000000004, 1.2338511304891373),
                (3.1990000000000003, -0.4974089440976681),
                (3.2, -0.5),
                (3.6, -0.975887494525169),
            ],
        );
        // Two knots: linear.
        check_pchip([0.5, 2.0], [1.0, -2.0], [-2.0, -2.0], &[(0.0, 2.0), (1.25, -0.5), (2.0, -2.0), (2.4, -2.8)]);
    }

    #[test]
    fn pchip_rejects_what_scipy_rejects() {
        assert!(Pchip::new([0.0, 1.0, 1.0], [0.0, 1.0, 2.0]).is_none());
        assert!(Pchip::new([0.0, 2.0, 1.0], [0.0, 1.0, 2.0]).is_none());
        assert!(Pchip::new([0.0, 1.0, 2.0], [0.0, f64::NAN, 2.0]).is_none());
    }

    #[test]
    fn resampled_path_matches_scipy() {
        type Samples = [(usize, f64, f64); 5];
        let cases: [([Point; PATH_POINTS], Samples); 3] = [
            (
                straight_path(),
                [
                    (0, 0.09998999934083856, 0.0),
                    (23, 2.3997600346803374, 0.0),
                    (24, 2.499750050528514, 0.0),
                    (50, 5.099489865653862, 0.0),
                    (105, 10.598940214142056, 0.0),
                ],
            ),
            (
                arc_path(20.0, -1.0),
                [
                    (0, 0.10008804427256554, -0.0003313697357563009),
                    (23, 2.394182590762153, -0.14416308602002836),
                    (24, 2.4935144937520843, -0.15612894482188117),
                    (50, 5.04496655749864, -0.6457221471389666),
                    (105, 10.110510413793863, -2.7439217587079368),
                ],
            ),
            (
                arc_path(20.0, 1.0),
                [
                    (0, 0.10008804427256554, 0.0003313697357563009),
                    (23, 2.394182590762153, 0.14416308602002836),
                    (24, 2.4935144937520843, 0.15612894482188117),
                    (50, 5.04496655749864, 0.6457221471389666),
                    (105, 10.110510413793863, 2.7439217587079368),
                ],
            ),
        ];
        for (path, samples) in cases {
            let r = pchip_resample(&path).unwrap();
            assert_eq!((r.len, r.full_len), (RESAMPLE_LEN, 200));
            for (k, x, y) in samples {
                assert!((r.points[k][0] - x).abs() < 1e-9 && (r.points[k][1] - y).abs() < 1e-9, "sample {k}");
            }
        }
    }

    #[test]
    fn resample_shorter_than_a_step_falls_back_to_last_point() {
        let short: [Point; PATH_POINTS] = std::array::from_fn(|i| [q(0.004 * (i as f64 + 1.0)), 0.0]);
        let r = pchip_resample(&short).unwrap();
        assert_eq!((r.len, r.full_len), (1, 1));
        assert_eq!(r.points[0], [0.078125, 0.0]);
    }

    #[test]
    fn all_points_at_origin_brake_straight() {
        let out = Controller::new().step(&Waypoints::default(), 0.0);
        check(out, (0.0, 0.0, 1.0, 0.0, 0, false));
    }

    #[test]
    fn non_finite_input_gives_safe_stop_and_keeps_state() {
        let good = wps(arc_path(15.0, -1.0), speed_wps(2.5));
        let mut bad_path = good;
        bad_path.path[7][1] = f32::NAN;
        let mut bad_speed = good;
        bad_speed.speed_wps[2][0] = f32::INFINITY;
        let mut huge = good;
        huge.path[19] = [1e30, -1e30]; // squares overflow f32: the curve parameter is not finite
        let mut c = Controller::new();
        for (w, v) in [(bad_path, 5.0), (bad_speed, 5.0), (huge, 5.0), (good, f32::NAN), (good, f32::INFINITY)] {
            let o = c.step(&w, v);
            assert_eq!(o, ControlOutput::SAFE);
            assert!(o.command.is_valid());
        }
        // Nothing above entered the PID windows or the stuck count.
        check(c.step(&good, 9.3), (-0.2800000011920929, 1.0, 0.0, 10.0, 34, false));
    }

    #[test]
    fn outputs_stay_in_range_on_odd_but_finite_input() {
        let mut c = Controller::new();
        let paths = [
            std::array::from_fn(|i| [-(i as f32) - 1.0, 0.0]), // straight behind
            std::array::from_fn(|i| [0.0, (i as f32 + 1.0) * 1e6]),
            [[3.0, -2.0]; PATH_POINTS], // all points coincide away from the origin
        ];
        for path in paths {
            for v in [0.0, 3.0, 40.0, -2.0] {
                let o = c.step(&wps(path, speed_wps(2.0)), v);
                assert!(o.command.is_valid(), "{o:?}");
                assert!(o.command.brake == 0.0 || o.command.brake == 1.0);
            }
        }
    }
}
