//! Plain data that crosses stage boundaries. Kept `Copy` and fixed-size so the loop never allocates.
//!
//! Conventions follow SimLingo: ego frame x forward, y right, metres; speed in m/s.

use serde::{Deserialize, Serialize};

/// Number of path points the student predicts (1 m apart).
pub const PATH_POINTS: usize = 20;
/// Number of speed waypoints the student predicts (0.25 s apart).
pub const SPEED_POINTS: usize = 10;
/// Time between two speed waypoints, seconds.
pub const SPEED_WP_DT: f32 = 0.25;

/// A 2-D point in the ego frame (x forward, y right), metres.
pub type Point = [f32; 2];

/// What the vehicle is told to do. Positive steer turns right.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Steering in [-1, 1], positive = right.
    pub steer: f32,
    /// Throttle in [0, 1].
    pub throttle: f32,
    /// Brake in [0, 1] (SimLingo brakes fully; the supervisor ramps).
    pub brake: f32,
}

impl Command {
    /// Full stop request: no throttle, full brake, wheel straight.
    pub const STOP: Command = Command { steer: 0.0, throttle: 0.0, brake: 1.0 };

    /// True when every field is finite and in its range.
    pub fn is_valid(&self) -> bool {
        self.steer.is_finite()
            && self.throttle.is_finite()
            && self.brake.is_finite()
            && (-1.0..=1.0).contains(&self.steer)
            && (0.0..=1.0).contains(&self.throttle)
            && (0.0..=1.0).contains(&self.brake)
    }
}

/// Ego state that the model needs besides the image: speed and the two next route target points.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EgoState {
    /// Forward speed, m/s.
    pub speed_mps: f32,
    /// Two route target points in the ego frame (7.5 m ≤ distance ≤ 50 m in SimLingo).
    pub target_points: [Point; 2],
}

impl EgoState {
    /// Fastest forward speed a state may report, m/s (250 km/h).
    pub const MAX_SPEED_MPS: f32 = 70.0;
    /// Slowest: a little backward roll is real, fast reversing is not something this driver does.
    pub const MIN_SPEED_MPS: f32 = -1.0;
    /// Farthest a route target point may be, metres (SimLingo's are within 50 m).
    pub const MAX_TARGET_M: f32 = 200.0;

    /// Why no car can be in this state (non-finite, or speed / target points out of physical range); `None` when
    /// it is plausible. A link or rig that sends such a state is faulty, and the supervisor stops the car.
    pub fn implausible(&self) -> Option<&'static str> {
        let s = self.speed_mps;
        if !s.is_finite() {
            return Some("speed is not finite");
        }
        if !(Self::MIN_SPEED_MPS..=Self::MAX_SPEED_MPS).contains(&s) {
            return Some("speed out of range");
        }
        for [x, y] in self.target_points {
            if !(x.is_finite() && y.is_finite()) {
                return Some("target point is not finite");
            }
            if x.hypot(y) > Self::MAX_TARGET_M {
                return Some("target point too far");
            }
        }
        None
    }
}

/// What the driving branch predicts: a geometric path and a timed speed profile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Waypoints {
    /// 20 path points, 1 m apart, ego frame.
    pub path: [Point; PATH_POINTS],
    /// 10 speed waypoints, 0.25 s apart, ego frame.
    pub speed_wps: [Point; SPEED_POINTS],
}

impl Default for Waypoints {
    fn default() -> Self {
        Waypoints { path: [[0.0; 2]; PATH_POINTS], speed_wps: [[0.0; 2]; SPEED_POINTS] }
    }
}

impl Waypoints {
    /// True when every coordinate is finite and within `limit` metres.
    pub fn is_sane(&self, limit: f32) -> bool {
        self.path.iter().chain(self.speed_wps.iter()).flatten().all(|v| v.is_finite() && v.abs() <= limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_states_are_named() {
        let ok = EgoState { speed_mps: 8.0, target_points: [[10.0, 0.5], [30.0, -2.0]] };
        assert_eq!(ok.implausible(), None);
        let with = |speed_mps: f32, tp: Point| EgoState { speed_mps, target_points: [tp, [30.0, 0.0]] };
        assert_eq!(with(-50.0, [10.0, 0.0]).implausible(), Some("speed out of range"));
        assert_eq!(with(-0.5, [10.0, 0.0]).implausible(), None, "a little roll back is real");
        assert_eq!(with(1e30, [10.0, 0.0]).implausible(), Some("speed out of range"));
        assert_eq!(with(f32::NAN, [10.0, 0.0]).implausible(), Some("speed is not finite"));
        assert_eq!(with(5.0, [f32::INFINITY, 0.0]).implausible(), Some("target point is not finite"));
        assert_eq!(with(5.0, [1e30, 0.0]).implausible(), Some("target point too far"));
    }
}
