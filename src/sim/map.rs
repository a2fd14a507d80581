//! Road network and its ground raster (material per 0.1 m cell, sparse tiles) used by the renderer and the off-road check.

use super::geom::{Path, PATH_STEP};
use crate::types::Point;

/// Ground materials; a higher value wins when two roads paint the same cell.
pub mod mat {
    pub const GRASS: u8 = 0;
    pub const SIDEWALK: u8 = 1;
    pub const CURB: u8 = 2;
    pub const ROAD: u8 = 3;
    pub const WHITE: u8 = 4;
    pub const YELLOW: u8 = 5;
    pub const STOPLINE: u8 = 6;
    pub const CROSSWALK: u8 = 7;
    pub const COUNT: usize = 8;
}

/// A road: centreline plus lanes on each side. Traffic drives on the right: lanes at positive (right) offsets run along
/// the centreline direction, lanes at negative offsets run against it.
#[derive(Clone, Debug)]
pub struct Road {
    pub path: Path,
    pub lanes_right: u8,
    pub lanes_left: u8,
    pub lane_w: f32,
    pub sidewalk_w: f32,
}

impl Road {
    pub fn new(path: Path, lanes_right: u8, lanes_left: u8) -> Road {
        Road { path, lanes_right, lanes_left, lane_w: LANE_W, sidewalk_w: 3.0 }
    }
    /// Lateral offset of lane `k` (0 = next to the centre). `k >= 0`: right lanes; `k < 0`: left lanes (-1 nearest).
    pub fn lane_offset(&self, k: i32) -> f32 {
        (k as f32 + 0.5) * self.lane_w
    }
    pub fn right_edge(&self) -> f32 {
        self.lanes_right as f32 * self.lane_w
    }
    pub fn left_edge(&self) -> f32 {
        -(self.lanes_left as f32) * self.lane_w
    }
    /// Path of the centre of lane `k`, in its driving direction.
    pub fn lane_path(&self, k: i32) -> Path {
        let p = self.path.offset(self.lane_offset(k));
        if k >= 0 {
            p
        } else {
            p.reversed()
        }
    }
}

/// Lane width, metres.
pub const LANE_W: f32 = 3.5;

/// Junction area in which lane markings are not painted.
#[derive(Clone, Copy, Debug)]
pub struct Junction {
    pub c: Point,
    pub r: f32,
}

/// Cell size of the ground raster, metres.
pub const CELL: f32 = 0.1;
const TILE_BITS: usize = 7;
const TILE: usize = 1 << TILE_BITS;
const NONE: u32 = u32::MAX;

/// Sparse raster of ground materials.
pub struct Ground {
    pub origin: Point,
    gw: usize,
    gh: usize,
    grid: Vec<u32>,
    tiles: Vec<Box<[u8]>>,
}

impl Ground {
    pub fn new(min: Point, max: Point) -> Ground {
        let gw = (((max[0] - min[0]) / CELL) as usize / TILE) + 1;
        let gh = (((max[1] - min[1]) / CELL) as usize / TILE) + 1;
        Ground { origin: min, gw, gh, grid: vec![NONE; gw * gh], tiles: Vec::new() }
    }

    #[inline]
    pub fn cell(&self, p: Point) -> (i32, i32) {
        (
            ((p[0] - self.origin[0]) * (1.0 / CELL)).floor() as i32,
            ((p[1] - self.origin[1]) * (1.0 / CELL)).floor() as i32,
        )
    }

    /// Material of cell (ix, iy).
    #[inline]
    pub fn at_cell(&self, ix: i32, iy: i32) -> u8 {
        if ix < 0 || iy < 0 {
            return mat::GRASS;
        }
        let (tx, ty) = (ix as usize >> TILE_BITS, iy as usize >> TILE_BITS);
        if tx >= self.gw || ty >= self.gh {
            return mat::GRASS;
        }
        let t = self.grid[ty * self.gw + tx];
        if t == NONE {
            return mat::GRASS;
        }
        self.tiles[t as usize][((iy as usize) & (TILE - 1)) * TILE + ((ix as usize) & (TILE - 1))]
    }

    #[inline]
    pub fn at(&self, p: Point) -> u8 {
        let (ix, iy) = self.cell(p);
        self.at_cell(ix, iy)
    }

    fn slot(&mut self, p: Point) -> Option<&mut u8> {
        let (ix, iy) = self.cell(p);
        if ix < 0 || iy < 0 {
            return None;
        }
        let (tx, ty) = (ix as usize >> TILE_BITS, iy as usize >> TILE_BITS);
        if tx >= self.gw || ty >= self.gh {
            return None;
        }
        let g = ty * self.gw + tx;
        if self.grid[g] == NONE {
            self.grid[g] = self.tiles.len() as u32;
            self.tiles.push(vec![mat::GRASS; TILE * TILE].into_boxed_slice());
        }
        let t = self.grid[g] as usize;
        Some(&mut self.tiles[t][((iy as usize) & (TILE - 1)) * TILE + ((ix as usize) & (TILE - 1))])
    }

    /// Paint keeping the higher material.
    #[inline]
    pub fn paint_max(&mut self, p: Point, m: u8) {
        if let Some(c) = self.slot(p) {
            if m > *c {
                *c = m;
            }
        }
    }

    /// Paint unconditionally.
    #[inline]
    pub fn paint(&mut self, p: Point, m: u8) {
        if let Some(c) = self.slot(p) {
            *c = m;
        }
    }
}

const PAINT_STEP: f32 = 0.06;

/// The static world: roads, junctions, ground raster.
pub struct Map {
    pub roads: Vec<Road>,
    pub junctions: Vec<Junction>,
    pub ground: Ground,
}

impl Map {
    pub fn build(roads: Vec<Road>, junctions: Vec<Junction>) -> Map {
        let mut min = [f32::MAX; 2];
        let mut max = [f32::MIN; 2];
        for r in &roads {
            let m = r.right_edge().max(-r.left_edge()) + r.sidewalk_w + 2.0;
            for p in &r.path.pts {
                min = [min[0].min(p[0] - m), min[1].min(p[1] - m)];
                max = [max[0].max(p[0] + m), max[1].max(p[1] + m)];
            }
        }
        let mut ground = Ground::new(min, max);
        for r in &roads {
            paint_road(&mut ground, r, &junctions);
        }
        Map { roads, junctions, ground }
    }

    /// Paint a stop line across the lanes right of the centre of `road` at arc length `s`.
    pub fn stop_line(&mut self, road: usize, s: f32) {
        let r = &self.roads[road];
        let (d0, d1) = (0.3, r.right_edge() - 0.3);
        let mut ss = s - 0.25;
        while ss < s + 0.25 {
            let mut d = d0;
            while d < d1 {
                let p = r.path.point_at(ss, d);
                self.ground.paint(p, mat::STOPLINE);
                d += PAINT_STEP;
            }
            ss += PAINT_STEP;
        }
    }

    /// Paint a zebra crossing over the full width of `road` between arc lengths s0 and s0+3.
    pub fn crosswalk(&mut self, road: usize, s0: f32) {
        let r = &self.roads[road];
        let (d0, d1) = (r.left_edge(), r.right_edge());
        let mut ss = s0;
        while ss < s0 + 3.0 {
            let mut d = d0 + 0.2;
            while d < d1 - 0.2 {
                if (d - d0).rem_euclid(1.0) < 0.5 {
                    let p = r.path.point_at(ss, d);
                    self.ground.paint(p, mat::CROSSWALK);
                }
                d += PAINT_STEP;
            }
            ss += PAINT_STEP;
        }
    }
}

fn paint_road(g: &mut Ground, r: &Road, junctions: &[Junction]) {
    let (le, re) = (r.left_edge(), r.right_edge());
    let sw = r.sidewalk_w;
    let len = r.path.len();
    let mut s = -PATH_STEP;
    while s <= len + PATH_STEP {
        let (c, yaw) = r.path.pose_at(s);
        let rv = super::geom::right(yaw);
        let in_junction = junctions.iter().any(|j| super::geom::dist(j.c, c) < j.r + 14.0);
        let dash_on = s.rem_euclid(9.0) < 3.0;
        let mut d = le - sw - 0.2;
        while d <= re + sw + 0.2 {
            let p = [c[0] + rv[0] * d, c[1] + rv[1] * d];
            let m = if d < le - 0.2 || d > re + 0.2 {
                if sw > 0.0 {
                    mat::SIDEWALK
                } else {
                    mat::GRASS
                }
            } else if d < le || d > re {
                mat::CURB
            } else {
                let marking = if in_junction && junctions.iter().any(|j| super::geom::dist(j.c, p) < j.r) {
                    None
                } else if r.lanes_left > 0 && r.lanes_right > 0 && (0.08..0.22).contains(&d.abs()) {
                    Some(mat::YELLOW)
                } else if (d - le - 0.3).abs() < 0.08 || (re - d - 0.3).abs() < 0.08 {
                    Some(mat::WHITE)
                } else {
                    let q = d / r.lane_w;
                    let k = q.round();
                    if k != 0.0 && (q - k).abs() * r.lane_w < 0.075 && dash_on && d > le + 0.5 && d < re - 0.5 {
                        Some(mat::WHITE)
                    } else {
                        None
                    }
                };
                marking.unwrap_or(mat::ROAD)
            };
            if m != mat::GRASS {
                g.paint_max(p, m);
            }
            d += PAINT_STEP;
        }
        s += PAINT_STEP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::geom::PathBuilder;

    #[test]
    fn raster_has_road_markings_and_sidewalk() {
        let road = Road::new(PathBuilder::new([0.0, 0.0], 0.0).straight(40.0).build(), 2, 2);
        let m = Map::build(vec![road], vec![]);
        assert_eq!(m.ground.at([20.0, 1.75]), mat::ROAD);
        assert_eq!(m.ground.at([20.0, 0.15]), mat::YELLOW);
        assert_eq!(m.ground.at([20.0, 9.0]), mat::SIDEWALK);
        assert_eq!(m.ground.at([20.0, 30.0]), mat::GRASS);
        assert_eq!(m.ground.at([-100.0, 30.0]), mat::GRASS);
    }
}
