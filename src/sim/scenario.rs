//! Bench2Drive-style scenario kinds with seeded parameters.

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;

use super::geom::{dist, Obb, Path, PathBuilder};
use super::map::{mat, Junction, Map, Road, LANE_W};
use super::{Actor, ActorKind, Behavior, Ego, Env, Light, LightState, Prop, Route, StopSign, World};
use crate::types::Point;

/// Scenario kinds.
pub const NAMES: &[&str] = &[
    "lane_keep",
    "following",
    "hard_brake",
    "cut_in",
    "merging",
    "pedestrian_crossing",
    "red_light",
    "stop_sign",
    "unprotected_left",
    "right_turn",
    "parked_obstacle",
    "obstacle_two_ways",
];

const CAR_COLORS: &[[u8; 3]] = &[
    [200, 30, 30],
    [30, 60, 170],
    [230, 230, 230],
    [25, 25, 28],
    [120, 120, 125],
    [190, 190, 195],
    [20, 110, 60],
    [230, 180, 40],
    [110, 40, 20],
    [60, 150, 200],
];

fn mix_seed(name: &str, seed: u64) -> u64 {
    // FNV-1a over the name, folded with the seed (stable across platforms and versions).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

struct B {
    rng: Pcg32,
    roads: Vec<Road>,
    junctions: Vec<Junction>,
    paths: Vec<Path>,
    actors: Vec<Actor>,
    lights: Vec<Light>,
    stops: Vec<StopSign>,
    props: Vec<Prop>,
    stop_lines: Vec<(usize, f32)>,
    crosswalks: Vec<(usize, f32)>,
    route: Option<Route>,
    speed_limit: f32,
    ego_v0: f32,
}

impl B {
    fn new(seed: u64) -> B {
        B {
            rng: Pcg32::seed_from_u64(seed),
            roads: vec![],
            junctions: vec![],
            paths: vec![],
            actors: vec![],
            lights: vec![],
            stops: vec![],
            props: vec![],
            stop_lines: vec![],
            crosswalks: vec![],
            route: None,
            speed_limit: 10.0,
            ego_v0: 0.0,
        }
    }
    fn u(&mut self, lo: f32, hi: f32) -> f32 {
        self.rng.random_range(lo..hi)
    }
    fn chance(&mut self, p: f32) -> bool {
        self.rng.random::<f32>() < p
    }
    fn color(&mut self) -> [u8; 3] {
        CAR_COLORS[self.rng.random_range(0..CAR_COLORS.len())]
    }
    fn add_path(&mut self, p: Path) -> usize {
        self.paths.push(p);
        self.paths.len() - 1
    }
    fn car(&mut self, path: usize, s: f32, v: f32, behavior: Behavior) -> usize {
        let color = self.color();
        let hl = self.u(2.1, 2.5);
        let hw = self.u(0.88, 1.0);
        let h = self.u(1.4, 1.8);
        self.actors.push(Actor {
            kind: ActorKind::Car,
            path,
            s,
            v,
            v_target: v,
            lat: 0.0,
            lat_v: 0.0,
            half_len: hl,
            half_width: hw,
            height: h,
            color,
            behavior,
            pos: [0.0; 2],
            yaw: 0.0,
            route_s: 0.0,
            route_lat: 0.0,
            route_hint: 0,
            collided: false,
        });
        self.actors.len() - 1
    }
    fn pedestrian(&mut self, path: usize, v: f32, trigger: f32) {
        let color = [self.rng.random_range(20..230), self.rng.random_range(20..230), self.rng.random_range(20..230)];
        let height = self.u(1.55, 1.9);
        self.actors.push(Actor {
            kind: ActorKind::Pedestrian,
            path,
            s: 0.0,
            v: 0.0,
            v_target: v,
            lat: 0.0,
            lat_v: 0.0,
            half_len: 0.25,
            half_width: 0.3,
            height,
            color,
            behavior: Behavior::Walk { trigger, started: false },
            pos: [0.0; 2],
            yaw: 0.0,
            route_s: 0.0,
            route_lat: 0.0,
            route_hint: 0,
            collided: false,
        });
    }

    /// A long road of straights and arcs starting at the origin heading 0; returns the road index.
    fn corridor(&mut self, lanes_r: u8, lanes_l: u8, curvy: f32, len: f32) -> usize {
        let mut pb = PathBuilder::new([0.0, 0.0], 0.0).straight(45.0);
        let mut acc = 45.0;
        while acc < len {
            if self.chance(curvy) {
                let r = self.u(35.0, 110.0);
                let ang = self.u(0.25, 0.9) * if self.chance(0.5) { 1.0 } else { -1.0 };
                pb = pb.arc(r, ang);
                acc += r * ang.abs();
            } else {
                let l = self.u(20.0, 50.0);
                pb = pb.straight(l);
                acc += l;
            }
        }
        self.roads.push(Road::new(pb.build(), lanes_r, lanes_l));
        self.roads.len() - 1
    }

    /// Route along lane `k` of `road`, starting at arc length 25 and `len` m long.
    fn lane_route(&mut self, road: usize, k: i32, len: f32) {
        let r = &self.roads[road];
        let path = r.lane_path(k);
        let o = r.lane_offset(k);
        let lo = 0.3 - o;
        let hi = r.right_edge() - 0.3 - o;
        let start_s = 25.0;
        let goal_s = (start_s + len).min(path.len() - 45.0);
        let allowed = vec![(lo, hi); path.pts.len()];
        let targets = targets_for(&path);
        self.route = Some(Route { path, start_s, goal_s, allowed, targets, junctions: vec![] });
    }

    fn decorate_corridor(&mut self, road: usize) {
        let r = self.roads[road].clone();
        let len = r.path.len();
        // pedestrians walking along the sidewalks (they never step onto the road)
        for _ in 0..self.rng.random_range(0..5) {
            let side = if self.chance(0.5) { 1.0 } else { -1.0 };
            let d = if side > 0.0 { r.right_edge() + 1.2 } else { r.left_edge() - 1.2 };
            let mut p = r.path.offset(d + self.u(-0.3, 0.8) * side);
            if self.chance(0.5) {
                p = p.reversed();
            }
            let plen = p.len();
            let pi = self.add_path(p);
            let v = self.u(0.9, 1.6);
            let s = self.u(0.0, plen * 0.8);
            self.pedestrian(pi, v, 0.0);
            let a = self.actors.last_mut().unwrap();
            a.behavior = Behavior::Cruise;
            a.s = s;
            a.v = v;
        }
        for side in [-1.0f32, 1.0] {
            let edge = if side > 0.0 { r.right_edge() } else { -r.left_edge() } + r.sidewalk_w;
            let mut s = self.u(0.0, 10.0);
            while s < len {
                let depth = self.u(8.0, 16.0);
                let flen = self.u(8.0, 22.0);
                let (c, yaw) = r.path.pose_at(s + flen * 0.5);
                let off = edge + self.u(2.0, 7.0) + depth * 0.5;
                let rr = super::geom::right(yaw);
                let bc = [c[0] + rr[0] * off * side, c[1] + rr[1] * off * side];
                let h = self.u(4.0, 22.0);
                if self.chance(0.8) {
                    let g = self.u(90.0, 210.0);
                    let tint = [self.u(0.8, 1.15), self.u(0.8, 1.1), self.u(0.75, 1.1)];
                    let color = [
                        (g * tint[0]).min(255.0) as u8,
                        (g * tint[1]).min(255.0) as u8,
                        (g * tint[2]).min(255.0) as u8,
                    ];
                    self.props.push(Prop {
                        obb: Obb { c: bc, yaw, hl: flen * 0.5, hw: depth * 0.5 },
                        z0: 0.0,
                        z1: h,
                        color,
                    });
                } else {
                    // tree: trunk + crown
                    let tc = [c[0] + rr[0] * (edge + 2.0) * side, c[1] + rr[1] * (edge + 2.0) * side];
                    self.props.push(Prop {
                        obb: Obb { c: tc, yaw, hl: 0.2, hw: 0.2 },
                        z0: 0.0,
                        z1: 2.5,
                        color: [90, 60, 35],
                    });
                    let cs = self.u(1.2, 2.2);
                    let green =
                        [self.rng.random_range(30..70), self.rng.random_range(90..150), self.rng.random_range(30..60)];
                    self.props.push(Prop {
                        obb: Obb { c: tc, yaw, hl: cs, hw: cs },
                        z0: 2.0,
                        z1: 2.0 + cs * 2.2,
                        color: green,
                    });
                }
                s += flen + self.u(2.0, 12.0);
            }
            // lamp posts on the sidewalk
            let mut s = self.u(0.0, 25.0);
            while s < len {
                let p = r.path.point_at(s, side * (edge - r.sidewalk_w + 0.6));
                self.props.push(Prop {
                    obb: Obb { c: p, yaw: 0.0, hl: 0.1, hw: 0.1 },
                    z0: 0.0,
                    z1: 6.0,
                    color: [70, 70, 75],
                });
                s += self.u(25.0, 40.0);
            }
        }
    }

    /// Four-way junction at the origin: road 0 along +x (the ego's), road 1 along +y. Both 2+2 lanes.
    /// The ego approaches along road 0 from x = -approach in lane 0 and goes straight (turn 0), left (-1) or right (1).
    fn junction(&mut self, approach: f32, turn: i8) -> (usize, usize) {
        let w = LANE_W;
        let a = self.roads.len();
        let l_back = approach + 45.0;
        self.roads.push(Road::new(PathBuilder::new([-l_back, 0.0], 0.0).straight(l_back + 130.0).build(), 2, 2));
        self.roads.push(Road::new(
            PathBuilder::new([0.0, -130.0], std::f32::consts::FRAC_PI_2).straight(260.0).build(),
            2,
            2,
        ));
        let (ha, hb) = (2.0 * w, 2.0 * w);
        self.junctions.push(Junction { c: [0.0, 0.0], r: (ha * ha + hb * hb).sqrt() + 0.5 });
        let y_lane = w * 0.5;
        let start_x = -approach - 25.0;
        let half_pi = std::f32::consts::FRAC_PI_2;
        let path = match turn {
            0 => PathBuilder::new([start_x, y_lane], 0.0).straight(approach + 25.0 + 110.0).build(),
            1 => {
                let r = 6.0;
                let x0 = -w * 0.5 - r;
                PathBuilder::new([start_x, y_lane], 0.0).straight(x0 - start_x).arc(r, half_pi).straight(110.0).build()
            }
            _ => {
                let r = 9.0;
                let x0 = w * 0.5 - r;
                PathBuilder::new([start_x, y_lane], 0.0).straight(x0 - start_x).arc(r, -half_pi).straight(110.0).build()
            }
        };
        // junction zone on the route and allowed lateral range
        let inside = |p: &Point| p[0].abs() < hb + 1.0 && p[1].abs() < ha + 1.0;
        let first = path.pts.iter().position(inside).unwrap_or(0);
        let last = path.pts.iter().rposition(inside).unwrap_or(0);
        let (s_in, s_out) = (path.s[first], path.s[last]);
        let allowed =
            path.s
                .iter()
                .map(|&s| {
                    if s > s_in - 6.0 && s < s_out + 6.0 {
                        (-3.0, 3.0)
                    } else {
                        (0.3 - w * 0.5, 2.0 * w - 0.3 - w * 0.5)
                    }
                })
                .collect();
        let start_s = 25.0;
        let goal_s = s_out + 45.0;
        let targets = targets_for(&path);
        self.route = Some(Route { path, start_s, goal_s, allowed, targets, junctions: vec![(s_in, s_out, turn)] });
        // stop line and crosswalks on each approach of road 0 and road 1
        let sa = l_back - hb - 4.5;
        self.stop_lines.push((a, sa));
        for (road, c) in [(a, l_back), (a + 1, 130.0)] {
            self.crosswalks.push((road, c - hb - 3.6));
            self.crosswalks.push((road, c + hb + 0.6));
        }
        (a, a + 1)
    }

    /// Stop-line arc length on the route for the junction approach.
    fn route_stop_s(&self) -> f32 {
        let r = self.route.as_ref().unwrap();
        r.junctions[0].0 - 3.5
    }

    fn decorate_junction(&mut self) {
        let h = 2.0 * LANE_W + 3.0;
        for (sx, sy) in [(-1.0f32, -1.0f32), (1.0, -1.0), (-1.0, 1.0), (1.0, 1.0)] {
            let mut x = h + 3.0;
            while x < 110.0 {
                let flen = self.u(8.0, 20.0);
                let depth = self.u(8.0, 14.0);
                let ht = self.u(5.0, 25.0);
                let g = self.u(90.0, 210.0);
                let color = [g as u8, (g * self.u(0.85, 1.05)) as u8, (g * self.u(0.8, 1.05)) as u8];
                let off = h + self.u(2.0, 6.0) + depth * 0.5;
                // along road 0 (x axis) and along road 1 (y axis)
                self.props.push(Prop {
                    obb: Obb { c: [sx * (x + flen * 0.5), sy * off], yaw: 0.0, hl: flen * 0.5, hw: depth * 0.5 },
                    z0: 0.0,
                    z1: ht,
                    color,
                });
                let ht2 = self.u(5.0, 25.0);
                self.props.push(Prop {
                    obb: Obb {
                        c: [sx * off, sy * (x + flen * 0.5 + depth)],
                        yaw: std::f32::consts::FRAC_PI_2,
                        hl: flen * 0.5,
                        hw: depth * 0.5,
                    },
                    z0: 0.0,
                    z1: ht2,
                    color: [color[2], color[1], color[0]],
                });
                x += flen + self.u(4.0, 14.0);
            }
        }
    }

    fn light(&mut self, seq: [(LightState, f32); 3], trigger: f32) {
        let hb = 2.0 * LANE_W;
        let s = self.route_stop_s();
        self.lights.push(Light {
            route_s: s,
            pos: [-hb - 1.5, 2.0 * LANE_W + 1.0],
            yaw: std::f32::consts::PI,
            state: seq[0].0,
            seq,
            phase: 0,
            t_in: 0.0,
            trigger,
            armed: trigger.is_infinite(),
            passed: false,
            far: 2.0 * hb + 3.0,
        });
    }

    fn finish(mut self, name: &'static str, seed: u64) -> World {
        let mut map = Map::build(std::mem::take(&mut self.roads), std::mem::take(&mut self.junctions));
        for &(r, s) in &self.stop_lines {
            map.stop_line(r, s);
        }
        for &(r, s) in &self.crosswalks {
            map.crosswalk(r, s);
        }
        // drop props that stand on a road, a sidewalk or another prop's footprint centre
        let props: Vec<Prop> = std::mem::take(&mut self.props);
        let mut kept: Vec<Prop> = Vec::with_capacity(props.len());
        for p in props {
            let small = p.obb.hl < 0.5;
            let mut pts = p.obb.corners().to_vec();
            pts.push(p.obb.c);
            let elevated = p.z0 >= 1.5;
            let clear = pts.iter().all(|q| {
                let m = map.ground.at(*q);
                m == mat::GRASS || ((small || elevated) && m == mat::SIDEWALK)
            });
            let overlap = !small && !elevated && kept.iter().any(|k| k.obb.hl >= 0.5 && k.obb.overlaps(&p.obb));
            if clear && !overlap {
                kept.push(p);
            }
        }
        let route = self.route.take().expect("scenario sets a route");
        let (p0, yaw0) = route.path.pose_at(route.start_s);
        let time_limit = (route.goal_s - route.start_s) / 2.0 + 45.0;
        let mut rng_env = Pcg32::seed_from_u64(mix_seed(name, seed) ^ 0x005E_ED0F_E4F1);
        let env = make_env(&mut rng_env);
        let mut w = World {
            scenario: name,
            seed,
            map,
            paths: self.paths,
            route,
            ego: Ego { pos: p0, yaw: yaw0, speed: self.ego_v0, ..Default::default() },
            actors: self.actors,
            lights: self.lights,
            stops: self.stops,
            props: kept,
            env,
            speed_limit: self.speed_limit,
            t: 0.0,
            step_count: 0,
            time_limit,
            m: Default::default(),
            expert_state: Default::default(),
        };
        let (h, _, _) = w.route.path.project_global(p0);
        w.ego.route_hint = h;
        for a in &mut w.actors {
            let (c, yaw) = w.paths[a.path].pose_at(a.s);
            let r = super::geom::right(yaw);
            a.pos = [c[0] + r[0] * a.lat, c[1] + r[1] * a.lat];
            a.yaw = yaw;
            let (h, _, _) = w.route.path.project_global(a.pos);
            a.route_hint = h;
        }
        w
    }
}

/// Sparse route target points every 20 m.
fn targets_for(path: &Path) -> Vec<f32> {
    let mut t = vec![];
    let mut s = 20.0;
    while s < path.len() {
        t.push(s);
        s += 20.0;
    }
    t.push(path.len());
    t
}

fn make_env(rng: &mut Pcg32) -> Env {
    let r: f32 = rng.random();
    let time_of_day = if r < 0.6 {
        0
    } else if r < 0.8 {
        1
    } else {
        2
    };
    let az: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let el: f32 = match time_of_day {
        0 => rng.random_range(0.4..1.3),
        1 => rng.random_range(0.05..0.25),
        _ => 0.3,
    };
    let sun_dir = [el.cos() * az.cos(), el.cos() * az.sin(), el.sin()];
    let (ambient, sun) = match time_of_day {
        0 => (rng.random_range(0.45..0.6), rng.random_range(0.45..0.65)),
        1 => (rng.random_range(0.3..0.4), rng.random_range(0.3..0.45)),
        _ => (rng.random_range(0.12..0.2), 0.05),
    };
    let (sky_top, sky_horizon) = match time_of_day {
        0 => ([0.25, 0.45, 0.85], [0.7, 0.8, 0.92]),
        1 => ([0.2, 0.2, 0.45], [0.95, 0.55, 0.3]),
        _ => ([0.01, 0.01, 0.04], [0.08, 0.08, 0.12]),
    };
    let fog_density = if rng.random::<f32>() < 0.3 { rng.random_range(0.008..0.04) } else { 0.0015 };
    let rain = if rng.random::<f32>() < 0.2 { rng.random_range(0.3..1.0) } else { 0.0 };
    let fog_color = match time_of_day {
        0 => [0.72, 0.75, 0.78],
        1 => [0.55, 0.45, 0.42],
        _ => [0.06, 0.06, 0.08],
    };
    let a = rng.random_range(0.22..0.42f32);
    let wet = if rain > 0.0 { 0.75 } else { 1.0 };
    let grass = [rng.random_range(0.2..0.45), rng.random_range(0.35..0.55), rng.random_range(0.12..0.25)];
    let sw = rng.random_range(0.55..0.8f32);
    let mut ground = [[0.0; 3]; super::map::mat::COUNT];
    ground[mat::GRASS as usize] = grass;
    ground[mat::SIDEWALK as usize] = [sw, sw * 0.97, sw * 0.92];
    ground[mat::CURB as usize] = [0.85, 0.85, 0.85];
    ground[mat::ROAD as usize] = [a * wet, a * wet, (a + 0.02) * wet];
    let wb = rng.random_range(0.75..0.95f32);
    ground[mat::WHITE as usize] = [wb, wb, wb];
    ground[mat::YELLOW as usize] = [0.9, 0.72, 0.15];
    ground[mat::STOPLINE as usize] = [wb, wb, wb];
    ground[mat::CROSSWALK as usize] = [wb, wb, wb];
    Env {
        time_of_day,
        sun_dir,
        ambient,
        sun,
        fog_density,
        fog_color,
        rain,
        sky_top,
        sky_horizon,
        ground,
        ground_noise: rng.random_range(0.04..0.14),
        marking_wear: rng.random_range(0.0..0.35),
        headlights: time_of_day == 2 || (time_of_day == 1 && rng.random::<f32>() < 0.5),
    }
}

/// Build scenario `name` (a valid entry of [`NAMES`]) for `seed`.
pub fn build(name: &'static str, seed: u64) -> World {
    let mut b = B::new(mix_seed(name, seed));
    b.speed_limit = b.u(8.3, 13.9);
    b.ego_v0 = 0.0;
    match name {
        "lane_keep" => {
            let lr = b.rng.random_range(1..=2u8);
            let ll = b.rng.random_range(1..=2u8);
            let road = b.corridor(lr, ll, 0.6, 320.0);
            let k = b.rng.random_range(0..lr as i32);
            let len = b.u(160.0, 230.0);
            b.lane_route(road, k, len);
            // oncoming traffic
            let on = b.add_path(b.roads[road].lane_path(-1));
            let n = b.rng.random_range(0..4);
            let plen = b.paths[on].len();
            for _ in 0..n {
                let s = b.u(0.0, plen - 40.0);
                let v = b.u(6.0, 11.0);
                b.car(on, s, v, Behavior::Cruise);
            }
            b.decorate_corridor(road);
        }
        "following" | "hard_brake" => {
            let lr = b.rng.random_range(1..=2u8);
            let road = {
                let ll = b.rng.random_range(1..=2u8);
                b.corridor(lr, ll, 0.4, 300.0)
            };
            let k = b.rng.random_range(0..lr as i32);
            let len = b.u(150.0, 210.0);
            b.lane_route(road, k, len);
            let lane = b.add_path(b.route.as_ref().unwrap().path.clone());
            let s0 = 25.0 + b.u(18.0, 35.0);
            if name == "following" {
                let v = b.u(3.5, b.speed_limit - 1.5);
                b.car(lane, s0, v, Behavior::Cruise);
                if b.chance(0.4) {
                    let s1 = s0 + b.u(15.0, 30.0);
                    b.car(lane, s1, v, Behavior::Cruise);
                }
            } else {
                let v = b.u(6.0, 9.0);
                let beh = Behavior::HardBrake {
                    trigger_gap: b.u(14.0, 24.0),
                    decel: b.u(3.5, 6.5),
                    hold: b.u(1.5, 4.0),
                    phase: 0,
                    t0: 0.0,
                };
                b.car(lane, s0, v, beh);
            }
            let on = b.add_path(b.roads[road].lane_path(-1));
            let plen = b.paths[on].len();
            for _ in 0..b.rng.random_range(0..3) {
                let s = b.u(0.0, plen - 40.0);
                let v = b.u(6.0, 11.0);
                b.car(on, s, v, Behavior::Cruise);
            }
            b.decorate_corridor(road);
        }
        "cut_in" | "merging" => {
            let road = {
                let ll = b.rng.random_range(1..=2u8);
                b.corridor(2, ll, 0.3, 300.0)
            };
            let k = b.rng.random_range(0..2);
            let len = b.u(150.0, 200.0);
            b.lane_route(road, k, len);
            let lane = b.add_path(b.route.as_ref().unwrap().path.clone());
            let from_lat = if k == 0 { LANE_W } else { -LANE_W };
            if name == "cut_in" {
                let s0 = 25.0 + b.u(20.0, 35.0);
                let v = b.u(4.0, 7.0);
                let beh = Behavior::LaneShift {
                    trigger_gap: b.u(7.0, 14.0),
                    min_gap: 3.0,
                    from_lat,
                    to_lat: 0.0,
                    dur: b.u(1.8, 3.0),
                    t0: -1.0,
                    v_after: v,
                };
                let i = b.car(lane, s0, v, beh);
                b.actors[i].lat = from_lat;
                b.speed_limit = b.speed_limit.max(10.0);
            } else {
                b.speed_limit = b.u(7.0, 8.5);
                let s0 = 25.0 - b.u(5.0, 15.0);
                let v = b.u(10.5, 12.5);
                let beh = Behavior::LaneShift {
                    trigger_gap: b.u(9.0, 14.0),
                    min_gap: 4.0,
                    from_lat,
                    to_lat: 0.0,
                    dur: b.u(2.0, 3.0),
                    t0: -1.0,
                    v_after: b.u(2.5, 5.0),
                };
                let i = b.car(lane, s0, v, beh);
                b.actors[i].lat = from_lat;
            }
            b.decorate_corridor(road);
        }
        "pedestrian_crossing" => {
            let lr = b.rng.random_range(1..=2u8);
            let road = {
                let ll = b.rng.random_range(1..=2u8);
                b.corridor(lr, ll, 0.25, 280.0)
            };
            let k = b.rng.random_range(0..lr as i32);
            let len = b.u(140.0, 190.0);
            b.lane_route(road, k, len);
            let sp = 25.0 + b.u(55.0, 95.0);
            let r = b.roads[road].clone();
            let (re, le) = (r.right_edge() + 1.2, r.left_edge() - 1.2);
            let from_right = b.chance(0.6);
            let (d0, d1) = if from_right { (re, le) } else { (le, re) };
            let p0 = r.path.point_at(sp, d0);
            let p1 = r.path.point_at(sp, d1);
            let dir = [p1[0] - p0[0], p1[1] - p0[1]];
            let p2 = [p1[0] + dir[0] * 0.3, p1[1] + dir[1] * 0.3];
            let pp = b.add_path(Path::from_points(vec![p0, p1, p2]).resampled(0.5));
            if b.chance(0.5) {
                b.crosswalks.push((road, sp - 1.5));
            }
            let v = b.u(1.2, 2.0);
            let trig = b.u(22.0, 35.0);
            b.pedestrian(pp, v, trig);
            b.decorate_corridor(road);
        }
        "red_light" | "stop_sign" | "unprotected_left" | "right_turn" => {
            let approach = b.u(55.0, 85.0);
            let turn: i8 = match name {
                "unprotected_left" => -1,
                "right_turn" => 1,
                _ => [0i8, 0, -1, 1][b.rng.random_range(0..4)],
            };
            let (ra, rb) = b.junction(approach, turn);
            let w = LANE_W;
            // paths of other traffic: road 1 northbound (+y, lane x=-w/2), southbound, road 0 westbound (oncoming)
            let north = b.add_path(b.roads[rb].lane_path(0));
            let south = b.add_path(b.roads[rb].lane_path(-1));
            let oncoming = b.add_path(b.roads[ra].lane_path(-1));
            // time for the ego to reach the junction from standstill (accelerating at ~2 m/s² to the limit)
            let t_arrive = {
                let (a, v) = (2.0, b.speed_limit);
                let d = approach - 8.0;
                let d_acc = v * v / (2.0 * a);
                if d < d_acc {
                    (2.0 * d / a).sqrt()
                } else {
                    v / a + (d - d_acc) / v
                }
            } + if turn != 0 { 1.5 } else { 0.0 };
            match name {
                "red_light" => {
                    if b.chance(0.7) {
                        let red = t_arrive + b.u(2.0, 8.0);
                        b.light(
                            [(LightState::Red, red), (LightState::Green, f32::INFINITY), (LightState::Green, 0.0)],
                            f32::INFINITY,
                        );
                        // cross traffic passing during the red phase
                        for _ in 0..b.rng.random_range(0..3) {
                            let (p, t_at) = (if b.chance(0.5) { north } else { south }, b.u(1.0, (red - 4.0).max(1.5)));
                            let v = b.u(7.0, 10.0);
                            let s = 130.0 - v * t_at;
                            if s > 0.0 {
                                b.car(p, s, v, Behavior::Cruise);
                            }
                        }
                    } else {
                        let trig = b.u(32.0, 48.0);
                        let red = b.u(5.0, 10.0);
                        b.light([(LightState::Green, 0.0), (LightState::Yellow, 2.5), (LightState::Red, red)], trig);
                        b.lights[0].seq =
                            [(LightState::Yellow, 2.5), (LightState::Red, red), (LightState::Green, f32::INFINITY)];
                        b.lights[0].state = LightState::Green;
                    }
                }
                "stop_sign" => {
                    let s = b.route_stop_s();
                    b.stops.push(StopSign {
                        route_s: s,
                        pos: [-2.0 * w - 1.5, 2.0 * w + 1.2],
                        yaw: std::f32::consts::PI,
                        min_speed: f32::INFINITY,
                        passed: false,
                    });
                    if b.chance(0.6) {
                        let p = if b.chance(0.5) { north } else { south };
                        let v = b.u(6.0, 9.0);
                        let t_at = t_arrive + b.u(0.0, 4.0);
                        let s = (130.0 - v * t_at).max(5.0);
                        b.car(p, s, v, Behavior::Cruise);
                    }
                }
                "unprotected_left" => {
                    if b.chance(0.5) {
                        b.light(
                            [(LightState::Green, f32::INFINITY), (LightState::Green, 0.0), (LightState::Green, 0.0)],
                            f32::INFINITY,
                        );
                    }
                    let n = b.rng.random_range(2..=4);
                    let mut t_at = t_arrive + b.u(-3.0, 1.0);
                    let l_back = approach + 45.0;
                    let plen = b.paths[oncoming].len();
                    for _ in 0..n {
                        let v = b.u(7.0, 10.0);
                        // oncoming path starts at x = +130 going -x; junction centre at arc length 130
                        let s = 130.0 - v * t_at;
                        if s > 0.0 && s < plen - l_back {
                            b.car(oncoming, s, v, Behavior::Cruise);
                        }
                        t_at += b.u(2.0, 4.5);
                    }
                }
                _ => {
                    // right turn: cross traffic from the left going north (the target lane), or a pedestrian on the crosswalk
                    if b.chance(0.5) {
                        b.light(
                            [(LightState::Green, f32::INFINITY), (LightState::Green, 0.0), (LightState::Green, 0.0)],
                            f32::INFINITY,
                        );
                    }
                    if b.chance(0.6) {
                        let v = b.u(6.0, 9.0);
                        let t_at = t_arrive + b.u(-1.0, 3.0);
                        let s = 130.0 - v * t_at;
                        if s > 0.0 {
                            b.car(north, s, v, Behavior::Cruise);
                        }
                    } else {
                        let y = 2.0 * w + 2.1;
                        let from_left = b.chance(0.5);
                        let (x0, x1) =
                            if from_left { (2.0 * w + 1.5, -2.0 * w - 1.5) } else { (-2.0 * w - 1.5, 2.0 * w + 1.5) };
                        let pp = b.add_path(Path::from_points(vec![[x0, y], [x1, y], [x1 * 1.6, y]]).resampled(0.5));
                        let v = b.u(1.2, 1.8);
                        let trig = b.u(30.0, 40.0);
                        b.pedestrian(pp, v, trig);
                    }
                }
            }
            if name != "red_light" && b.chance(0.3) {
                // some through traffic on the far lanes for visual clutter
                let v = b.u(6.0, 9.0);
                let plen = b.paths[oncoming].len();
                let s = plen - 20.0;
                b.car(oncoming, s, v, Behavior::Cruise);
            }
            b.decorate_junction();
        }
        "parked_obstacle" => {
            let road = {
                let ll = b.rng.random_range(1..=2u8);
                b.corridor(2, ll, 0.2, 300.0)
            };
            let len = b.u(150.0, 200.0);
            b.lane_route(road, 1, len);
            let lane = b.add_path(b.route.as_ref().unwrap().path.clone());
            let s0 = 25.0 + b.u(45.0, 85.0);
            let n = b.rng.random_range(1..=2);
            for i in 0..n {
                let sp = s0 + i as f32 * b.u(7.0, 10.0);
                let c = b.car(lane, sp, 0.0, Behavior::Static);
                b.actors[c].kind = ActorKind::Parked;
                b.actors[c].lat = b.u(0.0, 0.6);
            }
            b.decorate_corridor(road);
        }
        "obstacle_two_ways" => {
            // a parked car blocks the only lane; going around borrows the oncoming lane between oncoming cars
            let road = b.corridor(1, 1, 0.15, 300.0);
            let len = b.u(150.0, 200.0);
            b.lane_route(road, 0, len);
            let lane = b.add_path(b.route.as_ref().unwrap().path.clone());
            let s_obs = 25.0 + b.u(55.0, 90.0);
            let c = b.car(lane, s_obs, 0.0, Behavior::Static);
            b.actors[c].kind = ActorKind::Parked;
            b.actors[c].lat = b.u(0.0, 0.4);
            {
                let r = b.route.as_mut().unwrap();
                for (k, a) in r.allowed.iter_mut().enumerate() {
                    let s = r.path.s[k];
                    if s > s_obs - 38.0 && s < s_obs + 25.0 {
                        a.0 = -LANE_W - 1.45;
                    }
                }
            }
            let on = b.add_path(b.roads[road].lane_path(-1));
            let obs_p = b.route.as_ref().unwrap().path.point_at(s_obs, 0.0);
            let s_on = b.paths[on].project_global(obs_p).1;
            let t_arr = {
                let (a, v) = (2.0, b.speed_limit);
                let d = s_obs - 25.0 - 20.0;
                let d_acc = v * v / (2.0 * a);
                if d < d_acc {
                    (2.0 * d / a).sqrt()
                } else {
                    v / a + (d - d_acc) / v
                }
            };
            let mut t_k = t_arr + b.u(-4.0, 2.0);
            for _ in 0..b.rng.random_range(1..=3) {
                let v = b.u(6.0, 10.0);
                let s = s_on - v * t_k;
                if s > 0.0 {
                    b.car(on, s, v, Behavior::Cruise);
                }
                t_k += b.u(3.0, 7.0);
            }
            b.decorate_corridor(road);
        }
        _ => unreachable!("validated by World::new"),
    }
    b.finish(name, seed)
}

/// Mean of two points (used by replay).
pub fn mid(a: Point, b: Point) -> Point {
    [(a[0] + b[0]) * 0.5, (a[1] + b[1]) * 0.5]
}

#[allow(dead_code)]
fn _unused(a: Point, b: Point) -> f32 {
    dist(a, b)
}
