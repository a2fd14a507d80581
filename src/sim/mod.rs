//! Closed-loop driving simulator: a deterministic world (roads, junctions, vehicles, pedestrians, lights, stop signs), a
//! software front camera, a privileged expert with SimLingo-style commentary, Bench2Drive-style scenarios and scoring.
//!
//! Frames: world x, y in metres with the ego-frame handedness (x forward, y right at yaw 0; positive yaw turns right).
//! Everything is a pure function of (scenario, seed, commands): no clocks, no thread RNG.
//!
//! - [`World`]: `new(scenario, seed)`, `step(cmd, dt)` (kinematic bicycle, 4 m/s² / 7 m/s² limits, allocation free),
//!   `ego()`, `render()`, `expert()` / `expert_plan()`, `done()`, `metrics()` (route completion × CARLA penalties).
//! - [`scenario`]: 11 kinds ([`scenario_names`]); [`TRAIN_SEEDS`] and [`HELD_OUT_SEEDS`] are disjoint.
//! - [`render`]: ray/ground raster + shaded boxes, day/dusk/night (headlights), fog, rain, palette/texture variation.
//! - [`expert`]: path + speed profile from ground truth, driven through `crate::control::Controller`; fixed action
//!   and object label sets; commentary and Q&A templates.
//! - CLI ([`cli`]): `rtvla sim eval|dataset|replay|bench-render|frame|list`.
//!
//! Reproduce: `rtvla sim eval --policy expert --scenarios held-out --seeds 1000000..1000200 --json out.json`,
//! `rtvla sim bench-render`, `rtvla sim dataset --out DIR --frames N`,
//! `rtvla sim replay --scenario unprotected_left --seed 1000002 --html replay.html` (open `replay.html#N` for frame N).

pub mod cli;
pub mod dataset;
pub mod eval;
pub mod expert;
pub mod geom;
pub mod harness;
pub mod map;
pub mod plant;
pub mod render;
pub mod replay;
pub mod scenario;
pub mod serve;
mod serve_cli;

use geom::{fwd, to_local, Obb, Path};
use map::Map;
use serde::{Deserialize, Serialize};

pub use expert::{Action, ExpertOutput, ExpertPlan, ObjectLabel};
pub use render::Renderer;

use crate::types::{Command, EgoState, Point};

/// Seeds used for training data. Disjoint from [`HELD_OUT_SEEDS`].
pub const TRAIN_SEEDS: std::ops::Range<u64> = 0..100_000;
/// Seeds reserved for evaluation.
pub const HELD_OUT_SEEDS: std::ops::Range<u64> = 1_000_000..1_100_000;

/// Ego vehicle geometry and dynamics.
pub const EGO_HALF_LEN: f32 = 2.4;
pub const EGO_HALF_WIDTH: f32 = 1.0;
pub const WHEELBASE: f32 = 2.9;
/// Front wheel angle at |steer| = 1, radians.
pub const MAX_WHEEL_ANGLE: f32 = 0.7;
/// Peak acceleration at full throttle from standstill, m/s².
pub const MAX_ACCEL: f32 = 4.0;
/// Deceleration at full brake, m/s².
pub const MAX_BRAKE: f32 = 7.0;
/// Seconds without route progress after which the episode ends as blocked.
pub const BLOCKED_TIMEOUT_S: f32 = 30.0;

/// Simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("unknown scenario '{name}'; valid scenarios: {valid}")]
    UnknownScenario { name: String, valid: String },
}

/// All scenario kinds.
pub fn scenario_names() -> &'static [&'static str] {
    scenario::NAMES
}

/// Infraction counts of one episode (Bench2Drive / CARLA leaderboard kinds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Infractions {
    pub collision_pedestrian: u32,
    pub collision_vehicle: u32,
    pub collision_static: u32,
    pub red_light: u32,
    pub stop_sign: u32,
    /// Metres driven outside the route's lanes.
    pub outside_lanes_m: f32,
    pub route_deviation: u32,
    pub agent_blocked: u32,
    pub route_timeout: u32,
}

impl Infractions {
    /// Multiplicative penalty; `route_len` converts the off-lane distance into a fraction.
    pub fn penalty(&self, route_len: f32) -> f32 {
        let off = (self.outside_lanes_m / route_len.max(1.0)).clamp(0.0, 1.0);
        0.5f32.powi(self.collision_pedestrian as i32)
            * 0.6f32.powi(self.collision_vehicle as i32)
            * 0.65f32.powi(self.collision_static as i32)
            * 0.7f32.powi(self.red_light as i32)
            * 0.8f32.powi(self.stop_sign as i32)
            * (1.0 - off)
    }
    /// The infractions in words, e.g. "1 vehicle collision, 3.2 m outside the lanes"; "none" when clean.
    pub fn describe(&self) -> String {
        let counts = [
            (self.collision_pedestrian, "pedestrian collision", "pedestrian collisions"),
            (self.collision_vehicle, "vehicle collision", "vehicle collisions"),
            (self.collision_static, "collision with a static object", "collisions with static objects"),
            (self.red_light, "red light run", "red lights run"),
            (self.stop_sign, "stop sign run", "stop signs run"),
            (self.route_deviation, "route deviation", "route deviations"),
            (self.agent_blocked, "time blocked too long", "times blocked too long"),
            (self.route_timeout, "route timeout", "route timeouts"),
        ];
        let mut parts: Vec<String> = counts
            .iter()
            .filter(|(n, _, _)| *n > 0)
            .map(|(n, one, many)| if *n == 1 { format!("1 {one}") } else { format!("{n} {many}") })
            .collect();
        if self.outside_lanes_m >= 0.1 {
            parts.push(format!("{:.1} m outside the lanes", self.outside_lanes_m));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }

    /// Number of penalised events (collisions, lights, stop signs, plus off-lane if more than 1 m).
    pub fn count(&self) -> u32 {
        self.collision_pedestrian
            + self.collision_vehicle
            + self.collision_static
            + self.red_light
            + self.stop_sign
            + u32::from(self.outside_lanes_m > 1.0)
    }
    /// Collisions of any kind so far.
    pub fn collisions(&self) -> u32 {
        self.collision_pedestrian + self.collision_vehicle + self.collision_static
    }
    /// Discrete traffic-rule infractions so far: red lights, stop signs, route deviations.
    pub fn rule_breaks(&self) -> u32 {
        self.red_light + self.stop_sign + self.route_deviation
    }
    pub fn add(&mut self, o: &Infractions) {
        self.collision_pedestrian += o.collision_pedestrian;
        self.collision_vehicle += o.collision_vehicle;
        self.collision_static += o.collision_static;
        self.red_light += o.red_light;
        self.stop_sign += o.stop_sign;
        self.outside_lanes_m += o.outside_lanes_m;
        self.route_deviation += o.route_deviation;
        self.agent_blocked += o.agent_blocked;
        self.route_timeout += o.route_timeout;
    }
}

/// Outcome of one episode.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EpisodeMetrics {
    pub scenario: String,
    pub seed: u64,
    /// Fraction of the route driven, [0, 1].
    pub route_completion: f32,
    pub infractions: Infractions,
    pub infraction_penalty: f32,
    /// 100 × route completion × infraction penalty.
    pub driving_score: f32,
    /// Route completed without any penalised infraction.
    pub success: bool,
    pub sim_time_s: f32,
    pub steps: u32,
    pub route_length_m: f32,
    /// Why the episode ended early (route_deviation, agent_blocked, route_timeout), if it did.
    pub termination: Option<String>,
    /// The episode is over (route finished or terminated); false when the run was cut short (`--ticks`, Ctrl-C),
    /// so its score covers only the part driven.
    #[serde(default = "ended_by_default")]
    pub ended: bool,
    /// Fingerprint of the commands that drove the episode (the runtime's `commands_hash` of the same run), when
    /// the policy ran through the runtime (in-process or over the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands_hash: Option<String>,
}

/// Metrics recorded before `ended` existed were of finished episodes.
fn ended_by_default() -> bool {
    true
}

/// Kind of a dynamic or static actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActorKind {
    Car,
    Pedestrian,
    /// A parked (static) vehicle.
    Parked,
}

/// What an actor does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Behavior {
    Static,
    /// Follow the path at `v_target` with IDM car following.
    Cruise,
    /// Cruise, then brake at `decel` to a stop once ahead of the ego by less than `trigger_gap`, hold `hold` s, resume.
    HardBrake {
        trigger_gap: f32,
        decel: f32,
        hold: f32,
        phase: u8,
        t0: f32,
    },
    /// Cruise, then shift laterally to `to_lat` over `dur` s once ahead of the ego (along the route) by
    /// `trigger_gap` or less (and at least `min_gap`).
    LaneShift {
        trigger_gap: f32,
        min_gap: f32,
        from_lat: f32,
        to_lat: f32,
        dur: f32,
        t0: f32,
        /// Target speed once the shift starts.
        v_after: f32,
    },
    /// Stand still until the ego's front is within `trigger` m (along the route) of the actor's crossing point, then walk.
    Walk {
        trigger: f32,
        started: bool,
    },
    /// Stand still until sim time `t`, then cruise.
    Depart {
        t: f32,
    },
}

/// A vehicle, pedestrian or parked car moving along one of the world's paths.
#[derive(Clone, Debug)]
pub struct Actor {
    pub kind: ActorKind,
    pub path: usize,
    pub s: f32,
    pub v: f32,
    pub v_target: f32,
    /// Lateral offset from the path (right), and its rate.
    pub lat: f32,
    pub lat_v: f32,
    pub half_len: f32,
    pub half_width: f32,
    pub height: f32,
    pub color: [u8; 3],
    pub behavior: Behavior,
    pub pos: Point,
    pub yaw: f32,
    /// Projection on the ego route: arc length, lateral offset, sample hint.
    pub route_s: f32,
    pub route_lat: f32,
    pub route_hint: usize,
    pub collided: bool,
}

impl Actor {
    pub fn obb(&self) -> Obb {
        Obb { c: self.pos, yaw: self.yaw, hl: self.half_len, hw: self.half_width }
    }
    pub fn is_vehicle(&self) -> bool {
        matches!(self.kind, ActorKind::Car | ActorKind::Parked)
    }
}

/// Traffic light state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LightState {
    Green,
    Yellow,
    Red,
}

/// A traffic light controlling the ego's approach at route arc length `route_s` (the stop line).
#[derive(Clone, Debug)]
pub struct Light {
    pub route_s: f32,
    pub pos: Point,
    /// Direction the lamps face.
    pub yaw: f32,
    pub state: LightState,
    /// Phase sequence (state, duration s); the last phase lasts forever.
    pub seq: [(LightState, f32); 3],
    pub phase: usize,
    pub t_in: f32,
    /// Phase 0 holds until the ego's front is within this distance of the stop line.
    pub trigger: f32,
    pub armed: bool,
    pub passed: bool,
    /// Distance to a second head on the far corner of the junction (0: none).
    pub far: f32,
}

/// A stop sign with its stop line at route arc length `route_s`.
#[derive(Clone, Debug)]
pub struct StopSign {
    pub route_s: f32,
    pub pos: Point,
    pub yaw: f32,
    pub min_speed: f32,
    pub passed: bool,
}

/// A static decoration box (building, pole, tree, lamp post).
#[derive(Clone, Copy, Debug)]
pub struct Prop {
    pub obb: Obb,
    pub z0: f32,
    pub z1: f32,
    pub color: [u8; 3],
}

/// The ego's route: a lane-centre path, the goal arc length, the allowed lateral range per sample, target points.
#[derive(Clone, Debug)]
pub struct Route {
    pub path: Path,
    /// Arc length where the episode starts (ego centre) and where it ends.
    pub start_s: f32,
    pub goal_s: f32,
    /// Per path sample: allowed lateral range (min, max) of the ego centre.
    pub allowed: Vec<(f32, f32)>,
    /// Arc lengths of the sparse route target points.
    pub targets: Vec<f32>,
    /// Junction conflict zones on the route: (s_in, s_out, turn: -1 left, 0 straight, 1 right).
    pub junctions: Vec<(f32, f32, i8)>,
}

/// Ego vehicle state.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ego {
    pub pos: Point,
    pub yaw: f32,
    pub speed: f32,
    pub wheel: f32,
    pub accel: f32,
    pub route_s: f32,
    pub route_lat: f32,
    pub route_hint: usize,
    pub last_cmd: Command,
}

impl Ego {
    pub fn obb(&self) -> Obb {
        Obb { c: self.pos, yaw: self.yaw, hl: EGO_HALF_LEN, hw: EGO_HALF_WIDTH }
    }
}

/// Lighting, weather and palette of one world (rendering only).
#[derive(Clone, Debug)]
pub struct Env {
    /// 0 day, 1 dusk, 2 night.
    pub time_of_day: u8,
    pub sun_dir: [f32; 3],
    pub ambient: f32,
    pub sun: f32,
    pub fog_density: f32,
    pub fog_color: [f32; 3],
    pub rain: f32,
    pub sky_top: [f32; 3],
    pub sky_horizon: [f32; 3],
    /// Base colour per ground material.
    pub ground: [[f32; 3]; map::mat::COUNT],
    pub ground_noise: f32,
    pub marking_wear: f32,
    pub headlights: bool,
}

#[derive(Clone, Debug, Default)]
struct MetricState {
    progress_s: f32,
    progress_mark: f32,
    progress_mark_t: f32,
    infr: Infractions,
    finished: bool,
    terminated: Option<&'static str>,
}

/// The simulated world. Deterministic from (scenario, seed) and the command sequence.
pub struct World {
    pub scenario: &'static str,
    pub seed: u64,
    pub map: Map,
    pub paths: Vec<Path>,
    pub route: Route,
    pub ego: Ego,
    pub actors: Vec<Actor>,
    pub lights: Vec<Light>,
    pub stops: Vec<StopSign>,
    pub props: Vec<Prop>,
    pub env: Env,
    pub speed_limit: f32,
    pub t: f32,
    pub step_count: u32,
    pub time_limit: f32,
    m: MetricState,
    pub expert_state: expert::ExpertState,
}

impl World {
    /// Deterministic from (scenario, seed). Err for an unknown scenario name (message lists valid names).
    pub fn new(scenario: &str, seed: u64) -> Result<World, SimError> {
        let Some(&name) = scenario::NAMES.iter().find(|n| **n == scenario) else {
            return Err(SimError::UnknownScenario { name: scenario.to_string(), valid: scenario::NAMES.join(", ") });
        };
        let mut w = scenario::build(name, seed);
        w.update_projections();
        w.m.progress_s = w.ego.route_s.max(0.0);
        w.m.progress_mark = w.m.progress_s;
        Ok(w)
    }

    /// Advance by `dt` seconds applying `cmd` to the ego. Allocation free.
    pub fn step(&mut self, cmd: &Command, dt: f32) {
        if self.done() {
            return;
        }
        self.step_ego(cmd, dt);
        self.step_actors(dt);
        self.step_lights(dt);
        self.t += dt;
        self.step_count += 1;
        self.update_projections();
        self.check(dt);
    }

    fn step_ego(&mut self, cmd: &Command, dt: f32) {
        let fin = |v: f32, lo: f32, hi: f32| if v.is_finite() { v.clamp(lo, hi) } else { 0.0 };
        let steer = fin(cmd.steer, -1.0, 1.0);
        let thr = fin(cmd.throttle, 0.0, 1.0);
        let brk = if cmd.brake.is_finite() { cmd.brake.clamp(0.0, 1.0) } else { 1.0 };
        self.ego.last_cmd = Command { steer, throttle: thr, brake: brk };
        let e = &mut self.ego;
        // steering actuator: rate limited
        let target = steer * MAX_WHEEL_ANGLE;
        let max_d = 6.0 * dt;
        e.wheel += (target - e.wheel).clamp(-max_d, max_d);
        let v = e.speed;
        let drag = if v > 0.01 { 0.15 + 0.009 * v * v } else { 0.0 };
        let a = thr * MAX_ACCEL * (1.0 - v / 40.0).max(0.0) - brk * MAX_BRAKE - drag;
        let nv = (v + a * dt).max(0.0);
        e.accel = (nv - v) / dt;
        let vm = 0.5 * (v + nv);
        e.speed = nv;
        let beta = (0.5 * e.wheel.tan()).atan();
        let f = fwd(e.yaw + beta);
        e.pos[0] += vm * f[0] * dt;
        e.pos[1] += vm * f[1] * dt;
        e.yaw = geom::wrap(e.yaw + vm / (0.5 * WHEELBASE) * beta.sin() * dt);
    }

    fn step_actors(&mut self, dt: f32) {
        let ego_s = self.ego.route_s + EGO_HALF_LEN;
        let ego_pos = self.ego.pos;
        let ego_speed = self.ego.speed;
        for i in 0..self.actors.len() {
            let (kind, path_i, s, v) = {
                let a = &self.actors[i];
                (a.kind, a.path, a.s, a.v)
            };
            if kind == ActorKind::Parked {
                continue;
            }
            let gap_to_ego = self.actors[i].route_s - self.actors[i].half_len - ego_s;
            let mut v_target = self.actors[i].v_target;
            let mut hard_decel = None;
            let t = self.t;
            let mut beh = self.actors[i].behavior;
            let route_lat = self.actors[i].route_lat;
            let mut lat = self.actors[i].lat;
            let mut lat_v = self.actors[i].lat_v;
            let mut skip = false;
            match &mut beh {
                Behavior::Static => skip = true,
                Behavior::Cruise => {}
                Behavior::HardBrake { trigger_gap, decel, hold, phase, t0 } => match *phase {
                    0 if gap_to_ego < *trigger_gap && route_lat.abs() < 2.0 => *phase = 1,
                    1 => {
                        hard_decel = Some(*decel);
                        v_target = 0.0;
                        if v <= 0.0 {
                            *phase = 2;
                            *t0 = t;
                        }
                    }
                    2 => {
                        v_target = 0.0;
                        hard_decel = Some(*decel);
                        if t - *t0 > *hold {
                            *phase = 3;
                        }
                    }
                    _ => {}
                },
                Behavior::LaneShift { trigger_gap, min_gap, from_lat, to_lat, dur, t0, v_after } => {
                    if *t0 < 0.0 {
                        lat = *from_lat;
                        // fair cut-in: only with room for the ego to brake comfortably (3.5 m/s²) to the cutter's speed
                        let rel = (ego_speed - v).max(0.0);
                        let need = *min_gap + rel * rel / (2.0 * 3.5);
                        if gap_to_ego < trigger_gap.max(need + 2.0) && gap_to_ego > need {
                            *t0 = t;
                            v_target = *v_after;
                            self.actors[i].v_target = *v_after;
                        }
                    } else {
                        let u = ((t - *t0) / *dur).clamp(0.0, 1.0);
                        let sm = u * u * (3.0 - 2.0 * u);
                        let nl = *from_lat + (*to_lat - *from_lat) * sm;
                        lat_v = (nl - lat) / dt;
                        lat = nl;
                    }
                }
                Behavior::Walk { trigger, started } => {
                    if !*started && self.actors[i].route_s - ego_s < *trigger {
                        *started = true;
                    }
                    if !*started {
                        skip = true;
                    }
                }
                Behavior::Depart { t: td } => {
                    if t < *td {
                        skip = true;
                    }
                }
            }
            {
                let a = &mut self.actors[i];
                a.behavior = beh;
                a.lat = lat;
                a.lat_v = lat_v;
            }
            if skip {
                continue;
            }
            // longitudinal: IDM against the nearest leader on the same path and the ego if it is in the way
            let mut gap = f32::MAX;
            let mut v_lead = 0.0;
            if kind == ActorKind::Car {
                for (j, o) in self.actors.iter().enumerate() {
                    if j != i && o.path == path_i && o.s > s {
                        let g = o.s - s - o.half_len - self.actors[i].half_len;
                        if g < gap {
                            gap = g;
                            v_lead = o.v;
                        }
                    }
                }
                let me = &self.actors[i];
                if geom::dist(me.pos, ego_pos) < 35.0 {
                    let l = to_local(me.pos, me.yaw, ego_pos);
                    if l[0] > 0.0 && l[1].abs() < 2.2 {
                        let g = l[0] - me.half_len - EGO_HALF_LEN;
                        if g < gap {
                            gap = g;
                            v_lead = ego_speed;
                        }
                    }
                }
            }
            let a = &mut self.actors[i];
            let acc = if kind == ActorKind::Pedestrian {
                (v_target - v) / dt
            } else if let Some(d) = hard_decel {
                -d
            } else {
                let (amax, b) = (2.0f32, 3.0f32);
                let v0 = v_target.max(0.1);
                let free = (1.0 - (v / v0).powi(4)).max(-1.5);
                let inter = if gap < 200.0 {
                    let s_star = 2.0 + v * 1.2 + v * (v - v_lead) / (2.0 * (amax * b).sqrt());
                    (s_star.max(0.0) / gap.max(0.1)).powi(2)
                } else {
                    0.0
                };
                (amax * (free - inter)).max(-8.0)
            };
            let nv = (v + acc * dt).clamp(0.0, v_target.max(v));
            a.v = nv;
            a.s += 0.5 * (v + nv) * dt;
            let p = &self.paths[path_i];
            if kind == ActorKind::Pedestrian && a.s >= p.len() {
                a.s = p.len();
                a.v = 0.0;
                a.v_target = 0.0;
            }
            let (c, yaw) = p.pose_at(a.s);
            let r = geom::right(yaw);
            a.pos = [c[0] + r[0] * a.lat, c[1] + r[1] * a.lat];
            a.yaw = if a.kind == ActorKind::Car && a.v > 0.1 { yaw + (a.lat_v / a.v).atan() } else { yaw };
        }
    }

    fn step_lights(&mut self, dt: f32) {
        let front = self.ego.route_s + EGO_HALF_LEN;
        for l in &mut self.lights {
            if !l.armed {
                if l.route_s - front < l.trigger {
                    l.armed = true;
                } else {
                    continue;
                }
            }
            l.t_in += dt;
            if l.phase + 1 < l.seq.len() && l.t_in >= l.seq[l.phase].1 {
                l.phase += 1;
                l.t_in = 0.0;
            }
            l.state = l.seq[l.phase].0;
        }
    }

    fn update_projections(&mut self) {
        let (hint, s, lat) = self.route.path.project(self.ego.pos, self.ego.route_hint, 24);
        self.ego.route_hint = hint;
        self.ego.route_s = s;
        self.ego.route_lat = lat;
        for a in &mut self.actors {
            let (h, s, lat) = self.route.path.project(a.pos, a.route_hint, 24);
            a.route_hint = h;
            a.route_s = s;
            a.route_lat = lat;
        }
    }

    fn check(&mut self, dt: f32) {
        let e = self.ego;
        // collisions
        let eb = e.obb();
        for a in &mut self.actors {
            if !a.collided && eb.overlaps(&a.obb()) {
                a.collided = true;
                match a.kind {
                    ActorKind::Pedestrian => self.m.infr.collision_pedestrian += 1,
                    ActorKind::Car => self.m.infr.collision_vehicle += 1,
                    ActorKind::Parked => self.m.infr.collision_static += 1,
                }
            }
        }
        for p in &self.props {
            if geom::dist(p.obb.c, e.pos) < 30.0 && eb.overlaps(&p.obb) && self.m.infr.collision_static == 0 {
                self.m.infr.collision_static += 1;
            }
        }
        // lights and stop signs (front bumper against the stop line)
        let front = e.route_s + EGO_HALF_LEN;
        let on_route = e.route_lat.abs() < 6.0;
        for l in &mut self.lights {
            if !l.passed && on_route && front > l.route_s + 0.5 {
                l.passed = true;
                if l.state == LightState::Red {
                    self.m.infr.red_light += 1;
                }
            }
        }
        for st in &mut self.stops {
            if !st.passed && on_route {
                if front > st.route_s - 6.0 && front < st.route_s + 1.0 {
                    st.min_speed = st.min_speed.min(e.speed);
                }
                if front > st.route_s + 2.0 {
                    st.passed = true;
                    if st.min_speed > 0.3 {
                        self.m.infr.stop_sign += 1;
                    }
                }
            }
        }
        // lanes and deviation
        let idx = e.route_hint.min(self.route.allowed.len() - 1);
        let (lo, hi) = self.route.allowed[idx];
        if e.route_lat < lo || e.route_lat > hi {
            self.m.infr.outside_lanes_m += e.speed * dt;
        }
        if e.route_lat.abs() > 12.0 {
            self.m.infr.route_deviation += 1;
            self.m.terminated = Some("route_deviation");
        }
        if e.route_lat.abs() < 4.0 && e.route_s > self.m.progress_s {
            self.m.progress_s = e.route_s.min(self.route.goal_s);
        }
        if self.m.progress_s >= self.route.goal_s - 0.01 {
            self.m.finished = true;
        }
        if self.m.progress_s > self.m.progress_mark + 0.5 {
            self.m.progress_mark = self.m.progress_s;
            self.m.progress_mark_t = self.t;
        }
        if !self.m.finished && self.m.terminated.is_none() {
            if self.t - self.m.progress_mark_t > BLOCKED_TIMEOUT_S {
                self.m.infr.agent_blocked += 1;
                self.m.terminated = Some("agent_blocked");
            } else if self.t > self.time_limit {
                self.m.infr.route_timeout += 1;
                self.m.terminated = Some("route_timeout");
            }
        }
    }

    /// Privileged time-to-collision, seconds: the nearest actor ahead in the ego's corridor (lateral overlap along
    /// the route) divided by the closing speed; infinity when nothing closes in. The near-miss trigger reads it.
    pub fn ttc(&self) -> f32 {
        let e = &self.ego;
        let mut best = f32::INFINITY;
        for a in &self.actors {
            let ahead = a.route_s - e.route_s;
            if !(0.0..80.0).contains(&ahead) || (a.route_lat - e.route_lat).abs() > a.half_width + EGO_HALF_WIDTH + 0.3
            {
                continue;
            }
            let gap = (ahead - a.half_len - EGO_HALF_LEN).max(0.0);
            // The actor's speed along the route (a crossing pedestrian contributes ~0).
            let route_yaw = self.route.path.pose_at(a.route_s).1;
            let along = a.v * (a.yaw - route_yaw).cos();
            let closing = e.speed - along;
            if closing > 0.1 {
                best = best.min(gap / closing);
            }
        }
        best
    }

    /// Ego speed + the two next route target points in the ego frame.
    pub fn ego(&self) -> EgoState {
        EgoState { speed_mps: self.ego.speed, target_points: self.target_points() }
    }

    /// The two next sparse route points at least 7.5 m ahead, in the ego frame, each at most 50 m away.
    pub fn target_points(&self) -> [Point; 2] {
        let s0 = self.ego.route_s + 7.5;
        let k = self.route.targets.iter().position(|&s| s >= s0).unwrap_or(self.route.targets.len() - 1);
        let k2 = (k + 1).min(self.route.targets.len() - 1);
        let mut out = [[0.0; 2]; 2];
        for (o, kk) in out.iter_mut().zip([k, k2]) {
            let s = self.route.targets[kk].min(self.ego.route_s + 50.0);
            let p = self.route.path.point_at(s, 0.0);
            *o = to_local(self.ego.pos, self.ego.yaw, p);
        }
        out
    }

    /// Render the front camera into `out` (packed RGB8, len = w*h*3).
    pub fn render(&self, renderer: &mut Renderer, out: &mut [u8]) {
        renderer.render(self, out);
    }

    /// Privileged expert: targets, labels and commentary for the current state.
    pub fn expert(&mut self) -> ExpertOutput {
        let plan = self.expert_plan();
        expert::describe(self, &plan)
    }

    /// Allocation-free part of the expert: waypoints and labels.
    pub fn expert_plan(&mut self) -> ExpertPlan {
        expert::plan(self)
    }

    /// Infractions so far (a copy, no allocation: the vehicle link reads it every step to flag new ones).
    pub fn infractions(&self) -> Infractions {
        self.m.infr
    }

    /// Route finished, ego stuck beyond a timeout, or a terminal failure.
    pub fn done(&self) -> bool {
        self.m.finished || self.m.terminated.is_some()
    }

    /// Score so far (final once `done()`).
    pub fn metrics(&self) -> EpisodeMetrics {
        let len = self.route_length();
        let rc = ((self.m.progress_s - self.route.start_s) / len).clamp(0.0, 1.0);
        let rc = if self.m.finished { 1.0 } else { rc };
        let pen = self.m.infr.penalty(len);
        EpisodeMetrics {
            scenario: self.scenario.to_string(),
            seed: self.seed,
            route_completion: rc,
            infractions: self.m.infr,
            infraction_penalty: pen,
            driving_score: 100.0 * rc * pen,
            success: self.m.finished && self.m.infr.count() == 0,
            sim_time_s: self.t,
            steps: self.step_count,
            route_length_m: len,
            termination: self.m.terminated.map(str::to_string),
            ended: self.done(),
            commands_hash: None,
        }
    }

    /// Length of the scored part of the route, metres.
    pub fn route_length(&self) -> f32 {
        (self.route.goal_s - self.route.start_s).max(1.0)
    }

    /// Arc length along the route reached so far.
    pub fn progress(&self) -> f32 {
        self.m.progress_s
    }
}

/// Control tick of the closed loop, seconds (20 Hz).
pub const DT: f32 = 0.05;

/// The controller that turns the expert's waypoints into commands: the runtime's SimLingo controller port
/// (`crate::control::Controller`), the same path the student is driven through.
pub struct ExpertController {
    inner: crate::control::Controller,
}

impl Default for ExpertController {
    fn default() -> Self {
        Self::new()
    }
}

impl ExpertController {
    pub fn new() -> Self {
        ExpertController { inner: crate::control::Controller::new() }
    }
    pub fn reset(&mut self) {
        self.inner.reset();
    }
    pub fn step(&mut self, wps: &crate::types::Waypoints, speed_mps: f32) -> Command {
        self.inner.step(wps, speed_mps).command
    }
}

/// Run one closed-loop episode with the privileged expert driving through the controller. Returns the final metrics.
pub fn run_expert_episode(scenario: &str, seed: u64) -> Result<EpisodeMetrics, SimError> {
    let mut w = World::new(scenario, seed)?;
    let mut ctl = ExpertController::new();
    while !w.done() {
        let plan = w.expert_plan();
        let cmd = ctl.step(&plan.waypoints, w.ego.speed);
        w.step(&cmd, DT);
    }
    Ok(w.metrics())
}

#[cfg(test)]
mod tests;
