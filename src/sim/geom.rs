//! Planar geometry for the simulator: dense polylines with arc length, oriented boxes.
//!
//! World frame: x, y in metres with the same handedness as the ego frame (x forward, y right when the heading is 0), so a
//! positive yaw rate turns right. `right(yaw) = (-sin yaw, cos yaw)`.

use crate::types::Point;

/// Unit forward vector for a heading.
#[inline]
pub fn fwd(yaw: f32) -> Point {
    [yaw.cos(), yaw.sin()]
}

/// Unit right vector for a heading.
#[inline]
pub fn right(yaw: f32) -> Point {
    [-yaw.sin(), yaw.cos()]
}

/// Wrap an angle into [-pi, pi).
#[inline]
pub fn wrap(a: f32) -> f32 {
    (a + std::f32::consts::PI).rem_euclid(std::f32::consts::TAU) - std::f32::consts::PI
}

/// World point -> frame at (`pos`, `yaw`) (x forward, y right).
#[inline]
pub fn to_local(pos: Point, yaw: f32, p: Point) -> Point {
    let dx = p[0] - pos[0];
    let dy = p[1] - pos[1];
    let (s, c) = yaw.sin_cos();
    [dx * c + dy * s, -dx * s + dy * c]
}

/// Frame point -> world.
#[inline]
pub fn to_world(pos: Point, yaw: f32, p: Point) -> Point {
    let (s, c) = yaw.sin_cos();
    [pos[0] + p[0] * c - p[1] * s, pos[1] + p[0] * s + p[1] * c]
}

#[inline]
pub fn dist(a: Point, b: Point) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// A dense polyline with cumulative arc length and per-sample heading.
#[derive(Clone, Debug, Default)]
pub struct Path {
    pub pts: Vec<Point>,
    pub s: Vec<f32>,
    pub yaw: Vec<f32>,
}

/// Sample spacing of built paths, metres.
pub const PATH_STEP: f32 = 0.5;

impl Path {
    pub fn from_points(pts: Vec<Point>) -> Path {
        let n = pts.len();
        assert!(n >= 2, "a path needs two points");
        let mut s = Vec::with_capacity(n);
        let mut yaw = Vec::with_capacity(n);
        let mut acc = 0.0;
        for i in 0..n {
            if i > 0 {
                acc += dist(pts[i - 1], pts[i]);
            }
            s.push(acc);
            let (a, b) = if i + 1 < n { (pts[i], pts[i + 1]) } else { (pts[i - 1], pts[i]) };
            yaw.push((b[1] - a[1]).atan2(b[0] - a[0]));
        }
        Path { pts, s, yaw }
    }

    pub fn len(&self) -> f32 {
        *self.s.last().unwrap()
    }

    /// Segment index i such that s[i] <= s < s[i+1] (clamped).
    #[inline]
    fn seg(&self, s: f32) -> usize {
        let n = self.s.len();
        match self.s.binary_search_by(|v| v.partial_cmp(&s).unwrap_or(std::cmp::Ordering::Less)) {
            Ok(i) => i.min(n - 2),
            Err(i) => i.saturating_sub(1).min(n - 2),
        }
    }

    /// Position and heading at arc length `s` (extrapolated linearly beyond both ends).
    pub fn pose_at(&self, s: f32) -> (Point, f32) {
        let i = self.seg(s);
        let a = self.pts[i];
        let b = self.pts[i + 1];
        let l = (self.s[i + 1] - self.s[i]).max(1e-6);
        let t = (s - self.s[i]) / l;
        let yaw = (b[1] - a[1]).atan2(b[0] - a[0]);
        ([a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t], yaw)
    }

    /// Position at arc length `s` shifted `d` metres to the right.
    pub fn point_at(&self, s: f32, d: f32) -> Point {
        let (p, yaw) = self.pose_at(s);
        let r = right(yaw);
        [p[0] + r[0] * d, p[1] + r[1] * d]
    }

    /// Curvature (1/m, positive = turning right) around arc length `s`, estimated over +-2 m.
    pub fn curvature_at(&self, s: f32) -> f32 {
        let (_, y0) = self.pose_at(s - 2.0);
        let (_, y1) = self.pose_at(s + 2.0);
        wrap(y1 - y0) / 4.0
    }

    /// Project `p` onto the path searching samples within `window` of `hint`: (sample index, arc length, lateral offset right).
    pub fn project(&self, p: Point, hint: usize, window: usize) -> (usize, f32, f32) {
        let n = self.pts.len();
        let lo = hint.saturating_sub(window);
        let hi = (hint + window).min(n - 1);
        let mut best = (f32::MAX, lo);
        for i in lo..=hi {
            let q = self.pts[i];
            let d2 = (q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2);
            if d2 < best.0 {
                best = (d2, i);
            }
        }
        let i = best.1;
        let j = if i + 1 < n { i } else { i - 1 };
        let a = self.pts[j];
        let b = self.pts[j + 1];
        let ab = [b[0] - a[0], b[1] - a[1]];
        let l2 = (ab[0] * ab[0] + ab[1] * ab[1]).max(1e-9);
        let ap = [p[0] - a[0], p[1] - a[1]];
        let mut t = (ap[0] * ab[0] + ap[1] * ab[1]) / l2;
        if j == 0 || j + 2 == n {
            // allow extrapolation at the ends
        } else {
            t = t.clamp(-0.5, 1.5);
        }
        let l = l2.sqrt();
        let s = self.s[j] + t * l;
        let lat = (ab[0] * ap[1] - ab[1] * ap[0]) / l;
        (i, s, lat)
    }

    /// Global projection (slow, for set-up only).
    pub fn project_global(&self, p: Point) -> (usize, f32, f32) {
        let n = self.pts.len();
        self.project(p, n / 2, n)
    }

    /// A copy shifted `d` metres to the right, resampled.
    pub fn offset(&self, d: f32) -> Path {
        let pts = self
            .pts
            .iter()
            .zip(&self.yaw)
            .map(|(p, &y)| {
                let r = right(y);
                [p[0] + r[0] * d, p[1] + r[1] * d]
            })
            .collect();
        Path::from_points(pts).resampled(PATH_STEP)
    }

    /// The same curve traversed backwards.
    pub fn reversed(&self) -> Path {
        let mut pts = self.pts.clone();
        pts.reverse();
        Path::from_points(pts)
    }

    /// Resample at uniform arc-length spacing.
    pub fn resampled(&self, step: f32) -> Path {
        let len = self.len();
        let n = (len / step).ceil().max(1.0) as usize;
        let pts = (0..=n).map(|k| self.pose_at(len * k as f32 / n as f32).0).collect();
        Path::from_points(pts)
    }

    /// Concatenate `other` (whose start should coincide with this end).
    pub fn concat(&self, other: &Path) -> Path {
        let mut pts = self.pts.clone();
        let skip = if dist(*pts.last().unwrap(), other.pts[0]) < 0.05 { 1 } else { 0 };
        pts.extend_from_slice(&other.pts[skip..]);
        Path::from_points(pts).resampled(PATH_STEP)
    }
}

/// Builds a path from straight and circular-arc pieces.
pub struct PathBuilder {
    pos: Point,
    yaw: f32,
    pts: Vec<Point>,
}

impl PathBuilder {
    pub fn new(pos: Point, yaw: f32) -> PathBuilder {
        PathBuilder { pos, yaw, pts: vec![pos] }
    }
    pub fn straight(mut self, len: f32) -> Self {
        let n = (len / PATH_STEP).ceil().max(1.0) as usize;
        let f = fwd(self.yaw);
        let p0 = self.pos;
        for k in 1..=n {
            let t = len * k as f32 / n as f32;
            self.pts.push([p0[0] + f[0] * t, p0[1] + f[1] * t]);
        }
        self.pos = *self.pts.last().unwrap();
        self
    }
    /// Arc of `radius` through signed `angle` (radians, positive = right turn).
    pub fn arc(mut self, radius: f32, angle: f32) -> Self {
        let len = radius * angle.abs();
        let n = (len / PATH_STEP).ceil().max(1.0) as usize;
        let sgn = angle.signum();
        let r = right(self.yaw);
        let c = [self.pos[0] + r[0] * radius * sgn, self.pos[1] + r[1] * radius * sgn];
        let y0 = self.yaw;
        for k in 1..=n {
            let y = y0 + angle * k as f32 / n as f32;
            let rr = right(y);
            self.pts.push([c[0] - rr[0] * radius * sgn, c[1] - rr[1] * radius * sgn]);
        }
        self.yaw = y0 + angle;
        self.pos = *self.pts.last().unwrap();
        self
    }
    pub fn build(self) -> Path {
        Path::from_points(self.pts).resampled(PATH_STEP)
    }
}

/// An oriented box on the ground plane.
#[derive(Clone, Copy, Debug, Default)]
pub struct Obb {
    pub c: Point,
    pub yaw: f32,
    /// Half length (along heading) and half width.
    pub hl: f32,
    pub hw: f32,
}

impl Obb {
    pub fn corners(&self) -> [Point; 4] {
        let f = fwd(self.yaw);
        let r = right(self.yaw);
        let mut out = [[0.0; 2]; 4];
        for (k, (a, b)) in [(1.0, 1.0), (1.0, -1.0), (-1.0, -1.0), (-1.0, 1.0)].iter().enumerate() {
            out[k] = [
                self.c[0] + f[0] * self.hl * a + r[0] * self.hw * b,
                self.c[1] + f[1] * self.hl * a + r[1] * self.hw * b,
            ];
        }
        out
    }

    /// Separating-axis overlap test.
    pub fn overlaps(&self, o: &Obb) -> bool {
        if dist(self.c, o.c) > self.hl + self.hw + o.hl + o.hw {
            return false;
        }
        let ca = self.corners();
        let cb = o.corners();
        for axis in [fwd(self.yaw), right(self.yaw), fwd(o.yaw), right(o.yaw)] {
            let proj = |cs: &[Point; 4]| {
                let mut lo = f32::MAX;
                let mut hi = f32::MIN;
                for p in cs {
                    let v = p[0] * axis[0] + p[1] * axis[1];
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
                (lo, hi)
            };
            let (a0, a1) = proj(&ca);
            let (b0, b1) = proj(&cb);
            if a1 < b0 || b1 < a0 {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_right_is_positive_y() {
        let p = to_local([1.0, 2.0], 0.3, to_world([1.0, 2.0], 0.3, [3.0, -4.0]));
        assert!((p[0] - 3.0).abs() < 1e-5 && (p[1] + 4.0).abs() < 1e-5);
        assert_eq!(right(0.0), [-0.0, 1.0]);
    }

    #[test]
    fn arc_turns_right_for_positive_angle() {
        let p = PathBuilder::new([0.0, 0.0], 0.0).straight(10.0).arc(10.0, std::f32::consts::FRAC_PI_2).build();
        let end = *p.pts.last().unwrap();
        assert!((end[0] - 20.0).abs() < 0.05 && (end[1] - 10.0).abs() < 0.05, "{end:?}");
        assert!((p.len() - (10.0 + 10.0 * std::f32::consts::FRAC_PI_2)).abs() < 0.1);
        let (_, s, lat) = p.project_global([5.0, 1.0]);
        assert!((s - 5.0).abs() < 1e-3 && (lat - 1.0).abs() < 1e-3);
        assert!(p.curvature_at(15.0) > 0.09);
    }

    #[test]
    fn obb_overlap() {
        let a = Obb { c: [0.0, 0.0], yaw: 0.0, hl: 2.0, hw: 1.0 };
        assert!(a.overlaps(&Obb { c: [3.5, 0.0], yaw: 0.5, hl: 2.0, hw: 1.0 }));
        assert!(!a.overlaps(&Obb { c: [0.0, 2.5], yaw: 0.0, hl: 2.0, hw: 1.0 }));
    }
}
