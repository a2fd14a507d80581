//! Privileged rule-based expert: plans a path (lane keeping, going around parked cars, junction turns) and a speed
//! profile (speed limit, curves, car following, pedestrians, red lights, stop signs, yielding at junctions), and writes
//! SimLingo-style commentary and Q&A from templates.

use serde::{Deserialize, Serialize};

use super::geom::{to_local, wrap};
use super::{ActorKind, LightState, World, EGO_HALF_LEN, EGO_HALF_WIDTH};
use crate::types::{Point, Waypoints, SPEED_POINTS, SPEED_WP_DT};

/// What the expert does (fixed label set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Accelerate,
    KeepSpeed,
    Decelerate,
    Stop,
    Wait,
    GoAround,
    TurnLeft,
    TurnRight,
}

impl Action {
    pub const ALL: [Action; 8] = [
        Action::Accelerate,
        Action::KeepSpeed,
        Action::Decelerate,
        Action::Stop,
        Action::Wait,
        Action::GoAround,
        Action::TurnLeft,
        Action::TurnRight,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Action::Accelerate => "accelerate",
            Action::KeepSpeed => "keep_speed",
            Action::Decelerate => "decelerate",
            Action::Stop => "stop",
            Action::Wait => "wait",
            Action::GoAround => "go_around",
            Action::TurnLeft => "turn_left",
            Action::TurnRight => "turn_right",
        }
    }
}

/// The object the action is about (fixed label set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectLabel {
    None,
    Car,
    Pedestrian,
    RedLight,
    StopSign,
    ParkedCar,
    Junction,
    Curve,
}

impl ObjectLabel {
    pub const ALL: [ObjectLabel; 8] = [
        ObjectLabel::None,
        ObjectLabel::Car,
        ObjectLabel::Pedestrian,
        ObjectLabel::RedLight,
        ObjectLabel::StopSign,
        ObjectLabel::ParkedCar,
        ObjectLabel::Junction,
        ObjectLabel::Curve,
    ];
    pub fn name(self) -> &'static str {
        match self {
            ObjectLabel::None => "none",
            ObjectLabel::Car => "car",
            ObjectLabel::Pedestrian => "pedestrian",
            ObjectLabel::RedLight => "red_light",
            ObjectLabel::StopSign => "stop_sign",
            ObjectLabel::ParkedCar => "parked_car",
            ObjectLabel::Junction => "junction",
            ObjectLabel::Curve => "curve",
        }
    }
}

/// Why the speed is limited (finer than the object label; drives the templates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Limit,
    Curve,
    LeadCar,
    YieldCar,
    Pedestrian,
    PedestrianNear,
    /// Waiting for oncoming traffic before going around an obstacle through the opposite lane.
    OncomingCar,
    RedLight,
    YellowLight,
    StopSign,
}

/// Allocation-free expert output.
#[derive(Clone, Copy, Debug)]
pub struct ExpertPlan {
    pub waypoints: Waypoints,
    pub target_speed: f32,
    pub action: Action,
    pub object: ObjectLabel,
    /// Distance from the ego's front to the object, metres (NaN when none).
    pub object_dist: f32,
    pub reason: Reason,
    /// Upcoming junction turn within 40 m: -1 left, 0 straight/none, 1 right.
    pub turn: i8,
    /// Next traffic light state and distance within 60 m.
    pub light: Option<(LightState, f32)>,
    /// Lateral offset of the plan from the route at the ego (going around).
    pub lateral_offset: f32,
}

/// Full expert output with commentary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExpertOutput {
    pub waypoints: Waypoints,
    pub target_points: [Point; 2],
    pub target_speed: f32,
    pub action: Action,
    pub object: ObjectLabel,
    pub object_dist: Option<f32>,
    pub commentary: String,
    pub qa: Vec<(String, String)>,
}

/// Memory of the expert across ticks.
#[derive(Clone, Debug, Default)]
pub struct ExpertState {
    /// Ignore every object, light and sign (a lane-following baseline that shows what the scenarios demand).
    pub blind: bool,
    stop_done: u64,
    stop_timer: f32,
    last_t: f32,
    /// Per path and route junction: (actor-path arc length, route arc length) of the conflict point, if any.
    conflicts: Vec<Vec<Option<(f32, f32)>>>,
}

#[derive(Clone, Copy)]
struct Constraint {
    gap: f32,
    v_obj: f32,
    headway: f32,
    reason: Reason,
    dist: f32,
}

const MAX_C: usize = 16;
const B_COMF: f32 = 3.0;

fn smooth(u: f32) -> f32 {
    let u = u.clamp(0.0, 1.0);
    u * u * (3.0 - 2.0 * u)
}

fn compute_conflicts(w: &World) -> Vec<Vec<Option<(f32, f32)>>> {
    let route = &w.route.path;
    w.paths
        .iter()
        .map(|p| {
            w.route
                .junctions
                .iter()
                .map(|&(s_in, s_out, _)| {
                    let lo = route.s.iter().position(|&s| s >= s_in - 4.0).unwrap_or(0);
                    let hi = route.s.iter().position(|&s| s >= s_out + 6.0).unwrap_or(route.s.len() - 1);
                    for (k, q) in p.pts.iter().enumerate() {
                        for i in lo..=hi {
                            let r = route.pts[i];
                            if super::geom::dist(*q, r) < EGO_HALF_WIDTH + 1.6 {
                                // exclude paths that run along the route in the same direction before the junction
                                let dy = wrap(p.yaw[k] - route.yaw[i]).abs();
                                if dy < 0.3 && route.s[i] < s_in + 1.0 {
                                    continue;
                                }
                                return Some((p.s[k], route.s[i]));
                            }
                        }
                    }
                    None
                })
                .collect()
        })
        .collect()
}

/// Time for the ego to cover `d` metres from speed `v` accelerating at 2 m/s² up to `vmax`.
fn time_to(d: f32, v: f32, vmax: f32) -> f32 {
    if d <= 0.0 {
        return 0.0;
    }
    let a = 2.0;
    let vmax = vmax.max(v).max(1.0);
    let t_acc = (vmax - v) / a;
    let d_acc = v * t_acc + 0.5 * a * t_acc * t_acc;
    if d <= d_acc {
        (-v + (v * v + 2.0 * a * d).sqrt()) / a
    } else {
        t_acc + (d - d_acc) / vmax
    }
}

/// Plan for the current state (allocation free after the first call).
pub fn plan(w: &mut World) -> ExpertPlan {
    if w.expert_state.conflicts.len() != w.paths.len() {
        w.expert_state.conflicts = compute_conflicts(w);
    }
    let e = w.ego;
    let s0 = e.route_s;
    let v = e.speed;
    let front = s0 + EGO_HALF_LEN;
    let route = &w.route;
    let dt = (w.t - w.expert_state.last_t).max(0.0);
    w.expert_state.last_t = w.t;

    // ---- lateral: go around parked cars blocking the lane
    let mut idx = e.route_hint.min(route.allowed.len() - 1);
    let mut zones = [(0.0f32, 0.0f32); 4];
    let mut nz = 0;
    for a in &w.actors {
        if !w.expert_state.blind
            && a.kind == ActorKind::Parked
            && a.route_s > s0 - 15.0
            && a.route_s < s0 + 80.0
            && a.route_lat.abs() < 2.5
            && nz < 4
        {
            zones[nz] = (a.route_s - a.half_len - 5.0, a.route_s + a.half_len + 4.0);
            if nz == 0 {
                idx = a.route_hint.min(route.allowed.len() - 1);
            }
            nz += 1;
        }
    }
    // go around on the side the route allows at the obstacle
    let (lo, hi) = route.allowed[idx];
    let side = if lo < -3.0 {
        -1.0
    } else if hi > 3.0 {
        1.0
    } else {
        0.0
    };
    let shift = super::map::LANE_W * side;
    // wait before the manoeuvre while oncoming traffic in the lane we would borrow could meet us
    let mut wait_at = f32::NAN;
    if nz > 0 && side != 0.0 {
        let a0 = zones[..nz].iter().map(|z| z.0).fold(f32::MAX, f32::min);
        let b0 = zones[..nz].iter().map(|z| z.1).fold(f32::MIN, f32::max);
        let ramp_start = a0 - 16.0;
        if front < ramp_start - 0.5 {
            let t_through = time_to(b0 + 5.0 + EGO_HALF_LEN - s0, v, w.speed_limit);
            let blocked = w.actors.iter().any(|a| {
                if a.kind != ActorKind::Car {
                    return false;
                }
                let ryaw = route.path.pose_at(a.route_s).1;
                let opposite = wrap(a.yaw - ryaw).abs() > std::f32::consts::FRAC_PI_2;
                if !opposite || (a.route_lat - shift).abs() > 2.5 || a.route_s < a0 - 10.0 || a.route_s > s0 + 200.0 {
                    return false;
                }
                let t_arr = (a.route_s - a.half_len - b0 - 5.0).max(0.0) / a.v.max(0.1);
                t_arr < t_through + 2.0
            });
            if blocked {
                wait_at = ramp_start;
                nz = 0;
            }
        }
    }
    let offset = |s: f32| -> f32 {
        let mut m = 0.0f32;
        for &(a, b) in &zones[..nz] {
            let r = if s < a {
                smooth(1.0 - (a - s) / 16.0)
            } else if s <= b {
                1.0
            } else {
                smooth(1.0 - (s - b) / 14.0)
            };
            m = m.max(r);
        }
        m * shift
    };

    let mut wps = Waypoints::default();
    for (i, p) in wps.path.iter_mut().enumerate() {
        let s = s0 + (i + 1) as f32;
        *p = to_local(e.pos, e.yaw, route.path.point_at(s, offset(s)));
    }

    // ---- longitudinal constraints
    let mut cs = [Constraint { gap: 0.0, v_obj: 0.0, headway: 0.0, reason: Reason::Limit, dist: f32::NAN }; MAX_C];
    let mut nc = 0;
    let mut push = |c: Constraint| {
        if nc < MAX_C {
            cs[nc] = c;
            nc += 1;
        }
    };
    // static speed cap: limit and curvature ahead
    let mut cap = w.speed_limit;
    let mut cap_reason = Reason::Limit;
    for k in 0..25 {
        let ds = 2.0 * k as f32;
        let kappa = route.path.curvature_at(s0 + ds).abs();
        if kappa > 1e-3 {
            let vc = (2.5 / kappa).sqrt();
            let va = (vc * vc + 2.0 * 2.0 * (ds - 3.0).max(0.0)).sqrt();
            if va < cap {
                cap = va;
                cap_reason = Reason::Curve;
            }
        }
    }
    let corridor = EGO_HALF_WIDTH + 0.45;
    let blind = w.expert_state.blind;
    for a in w.actors.iter().filter(|_| !blind) {
        let ahead = a.route_s - s0;
        if !(-2.0..70.0).contains(&ahead) {
            continue;
        }
        match a.kind {
            ActorKind::Car | ActorKind::Parked => {
                let rel = a.route_lat - offset(a.route_s);
                let pred = rel + a.lat_v * 1.0;
                let lim = a.half_width + corridor;
                let in_lane = rel.abs() < lim || (pred.abs() < lim && rel.abs() < lim + 3.6);
                if !in_lane || ahead < 0.0 {
                    continue;
                }
                let ryaw = route.path.pose_at(a.route_s).1;
                let v_along = (a.v * wrap(a.yaw - ryaw).cos()).max(0.0);
                let gap = ahead - a.half_len - EGO_HALF_LEN - 3.0;
                push(Constraint {
                    gap,
                    v_obj: v_along,
                    headway: 1.0,
                    reason: Reason::LeadCar,
                    dist: ahead - a.half_len - EGO_HALF_LEN,
                });
            }
            ActorKind::Pedestrian => {
                if ahead < 0.0 {
                    continue;
                }
                let p = &w.paths[a.path];
                let (_, pyaw) = p.pose_at(a.s);
                let ryaw = route.path.pose_at(a.route_s).1;
                let walking = matches!(a.behavior, super::Behavior::Walk { started: true, .. }) && a.s < p.len() - 0.5;
                let lat_rate = if walking { a.v_target * wrap(pyaw - ryaw).sin() } else { 0.0 };
                let rel = a.route_lat - offset(a.route_s);
                let half = corridor + 0.8;
                let inside = rel.abs() < half;
                let approaching = walking && rel * lat_rate < 0.0;
                let t_enter =
                    if approaching { (rel.abs() - half).max(0.0) / lat_rate.abs().max(0.1) } else { f32::INFINITY };
                let t_reach = ahead / v.max(1.0);
                let dist = ahead - EGO_HALF_LEN;
                // once the ego can no longer stop short of the crossing line, it goes through if it clears in time
                let can_stop = v * v / (2.0 * 6.0) < (ahead - EGO_HALF_LEN - 1.0).max(0.0);
                let t_clear = (ahead + EGO_HALF_LEN + 1.0) / v.max(0.5);
                if inside || (t_enter < t_reach + 2.5 && (can_stop || t_enter < t_clear + 0.5)) {
                    push(Constraint {
                        gap: ahead - EGO_HALF_LEN - 4.0,
                        v_obj: 0.0,
                        headway: 0.0,
                        reason: Reason::Pedestrian,
                        dist,
                    });
                } else if rel.abs() < 9.0
                    && matches!(a.behavior, super::Behavior::Walk { .. })
                    && !(walking && rel * lat_rate > 0.0)
                    && ahead < 45.0
                {
                    // waiting at the kerb (or walking towards the road): be ready to stop
                    push(Constraint {
                        gap: f32::INFINITY,
                        v_obj: 6.0,
                        headway: 0.0,
                        reason: Reason::PedestrianNear,
                        dist,
                    });
                }
            }
        }
    }
    for l in w.lights.iter().filter(|_| !blind) {
        let d = l.route_s - front;
        if !(-0.5..=80.0).contains(&d) {
            continue;
        }
        let stop = match l.state {
            LightState::Red => true,
            LightState::Yellow => v * v / (2.0 * 5.0) < d,
            LightState::Green => false,
        };
        if stop {
            push(Constraint {
                gap: d - 1.0,
                v_obj: 0.0,
                headway: 0.0,
                reason: if l.state == LightState::Red { Reason::RedLight } else { Reason::YellowLight },
                dist: d,
            });
        }
    }
    for (i, st) in w.stops.iter().enumerate().filter(|_| !blind) {
        let d = st.route_s - front;
        let bit = 1u64 << (i & 63);
        if w.expert_state.stop_done & bit != 0 || !(-0.5..=80.0).contains(&d) {
            continue;
        }
        if v < 0.05 && d < 6.0 {
            w.expert_state.stop_timer += dt;
            if w.expert_state.stop_timer > 1.0 {
                w.expert_state.stop_done |= bit;
                w.expert_state.stop_timer = 0.0;
                continue;
            }
        } else {
            w.expert_state.stop_timer = 0.0;
        }
        push(Constraint { gap: d - 1.0, v_obj: 0.0, headway: 0.0, reason: Reason::StopSign, dist: d });
    }
    // yield at junctions
    let mut turn = 0i8;
    for (j, &(s_in, s_out, tr)) in route.junctions.iter().enumerate() {
        if front < s_out && s_in - front < 40.0 {
            turn = tr;
        }
        if front > s_in + 0.5 || s_in - front > 45.0 {
            continue;
        }
        let vmax = cap.min(6.0);
        for a in w.actors.iter().filter(|_| !blind) {
            if a.kind != ActorKind::Car {
                continue;
            }
            let Some((sc, rs)) = w.expert_state.conflicts[a.path][j] else {
                continue;
            };
            let d = sc - a.s;
            if d < -(a.half_len + 3.0) {
                continue;
            }
            let va = a.v.max(0.1);
            let t_arr = ((d - a.half_len - 3.0).max(0.0)) / va;
            let t_leave = if a.v < 0.3 { f32::INFINITY } else { (d + a.half_len + 3.0) / va };
            if a.v < 0.3 && d > 12.0 {
                continue;
            }
            let t_in = time_to(rs - 3.0 - front, v, vmax);
            let t_out = time_to(rs + 3.0 + EGO_HALF_LEN - s0, v, vmax);
            if t_arr < t_out + 1.5 && t_leave + 1.0 > t_in {
                let dd = s_in - front;
                // only if we can still stop before the junction
                if v * v / (2.0 * 6.0) < dd + 1.0 {
                    push(Constraint { gap: dd - 1.0, v_obj: 0.0, headway: 0.0, reason: Reason::YieldCar, dist: dd });
                }
            }
        }
    }

    if wait_at.is_finite() {
        push(Constraint {
            gap: wait_at - 1.0 - front,
            v_obj: 0.0,
            headway: 0.0,
            reason: Reason::OncomingCar,
            dist: wait_at - front + 16.0,
        });
    }

    // ---- speed profile
    let eval = |x: f32, t: f32| -> (f32, usize) {
        let mut vt = cap;
        let mut arg = usize::MAX;
        for (k, c) in cs[..nc].iter().enumerate() {
            let g = c.gap + c.v_obj * t - x;
            let vl = if c.gap.is_infinite() {
                c.v_obj
            } else {
                let m = g - c.headway * c.v_obj - 0.3;
                if m <= 0.0 && c.v_obj < 0.5 {
                    0.0
                } else {
                    (c.v_obj * c.v_obj + 2.0 * B_COMF * m).max(0.0).sqrt()
                }
            };
            if vl < vt {
                vt = vl;
                arg = k;
            }
        }
        (vt, arg)
    };
    let (_, mut arg0) = eval(0.0, 0.0);
    let mut bound = false;
    let mut v_1s = v;
    let mut x = 0.0f32;
    let mut vv = v;
    let sub = 0.05f32;
    let per = (SPEED_WP_DT / sub).round() as usize;
    for k in 0..SPEED_POINTS {
        for j in 0..per {
            let t = (k * per + j) as f32 * sub;
            let (vt, arg) = eval(x, t);
            if !bound && vt < vv - 0.05 {
                // the first constraint that makes the profile slow down names the object
                bound = true;
                if arg != usize::MAX {
                    arg0 = arg;
                }
            }
            let nv = if vt < 0.05 && vv < 1.0 { 0.0 } else { (vv + (vt - vv).clamp(-7.0 * sub, 2.0 * sub)).max(0.0) };
            x += 0.5 * (vv + nv) * sub;
            vv = nv;
        }
        if k == 3 {
            v_1s = vv;
        }
        let s = s0 + x;
        wps.speed_wps[k] = to_local(e.pos, e.yaw, route.path.point_at(s, offset(s)));
    }

    // ---- labels
    let (reason, dist) = if arg0 == usize::MAX { (cap_reason, f32::NAN) } else { (cs[arg0].reason, cs[arg0].dist) };
    let object = match reason {
        Reason::Limit => ObjectLabel::None,
        Reason::Curve => ObjectLabel::Curve,
        Reason::LeadCar | Reason::YieldCar | Reason::OncomingCar => ObjectLabel::Car,
        Reason::Pedestrian | Reason::PedestrianNear => ObjectLabel::Pedestrian,
        Reason::RedLight | Reason::YellowLight => ObjectLabel::RedLight,
        Reason::StopSign => ObjectLabel::StopSign,
    };
    // a constraint that ends in a standstill (light, sign, pedestrian, yielding, stopped car)
    let stop_type = arg0 != usize::MAX && cs[arg0].v_obj < 0.5 && cs[arg0].gap.is_finite();
    let target0 = v_1s;
    let mut action = if v < 0.3 && v_1s < 0.3 {
        Action::Wait
    } else if stop_type && v_1s <= v + 0.1 {
        Action::Stop
    } else if v_1s < v - 0.3 {
        Action::Decelerate
    } else if v_1s > v + 0.3 {
        Action::Accelerate
    } else {
        Action::KeepSpeed
    };
    let mut object = object;
    let mut dist = dist;
    let lateral_offset = offset(s0 + 3.0);
    let bypass_ahead = (0..20).any(|k| offset(s0 + k as f32).abs() > 0.3);
    if bypass_ahead
        && matches!(action, Action::Accelerate | Action::KeepSpeed | Action::Decelerate)
        && reason != Reason::LeadCar
    {
        action = Action::GoAround;
        object = ObjectLabel::ParkedCar;
        dist = w
            .actors
            .iter()
            .filter(|a| a.kind == ActorKind::Parked && a.route_s > s0)
            .map(|a| a.route_s - a.half_len - front)
            .fold(f32::NAN, |m, d| if m.is_nan() || d < m { d } else { m });
    } else if turn != 0 && matches!(reason, Reason::Limit | Reason::Curve) && action != Action::Wait {
        action = if turn < 0 { Action::TurnLeft } else { Action::TurnRight };
        object = ObjectLabel::Junction;
        let s_in = route.junctions.iter().find(|j| front < j.1).map(|j| j.0).unwrap_or(front);
        dist = (s_in - front).max(0.0);
    }
    let light = w
        .lights
        .iter()
        .filter(|l| l.route_s - front > -0.5 && l.route_s - front < 60.0)
        .map(|l| (l.state, (l.route_s - front).max(0.0)))
        .next();
    ExpertPlan {
        waypoints: wps,
        target_speed: target0,
        action,
        object,
        object_dist: dist,
        reason,
        turn,
        light,
        lateral_offset,
    }
}

fn light_name(s: LightState) -> &'static str {
    match s {
        LightState::Green => "green",
        LightState::Yellow => "yellow",
        LightState::Red => "red",
    }
}

/// Commentary sentence for a plan (SimLingo style).
pub fn commentary(p: &ExpertPlan) -> String {
    let d = if p.object_dist.is_finite() { p.object_dist.max(0.0).round() as i32 } else { 0 };
    use Action as A;
    match (p.reason, p.action) {
        (_, A::GoAround) => {
            format!("Go around the parked car in {d} m by moving to the adjacent lane.")
        }
        (_, A::TurnLeft) => "Turn left at the junction. Slow down for the turn.".to_string(),
        (_, A::TurnRight) => "Turn right at the junction. Slow down for the turn.".to_string(),
        (Reason::Pedestrian, A::Wait) => "Wait for the pedestrian to finish crossing.".to_string(),
        (Reason::Pedestrian, A::Stop) => "Stop now due to the pedestrian crossing your path.".to_string(),
        (Reason::Pedestrian, _) => {
            format!("Slow down and stop for the pedestrian crossing in {d} m.")
        }
        (Reason::PedestrianNear, _) => {
            format!("Slow down because of the pedestrian next to the road in {d} m.")
        }
        (Reason::RedLight, A::Wait) => "Wait at the red light until it turns green.".to_string(),
        (Reason::RedLight, _) => format!("Slow down and stop at the red light in {d} m."),
        (Reason::YellowLight, _) => format!("The light turns yellow. Stop at the line in {d} m."),
        (Reason::StopSign, A::Wait) => "Wait at the stop sign, then check the junction.".to_string(),
        (Reason::StopSign, _) => format!("Stop at the stop sign in {d} m."),
        (Reason::OncomingCar, A::Wait) => {
            "Wait for the oncoming car to pass before going around the parked car.".to_string()
        }
        (Reason::OncomingCar, _) => {
            format!("Slow down and let the oncoming car pass before going around the parked car in {d} m.")
        }
        (Reason::YieldCar, A::Wait) => "Wait for the crossing car to pass before entering the junction.".to_string(),
        (Reason::YieldCar, _) => {
            format!("Slow down and yield to the car crossing the junction in {d} m.")
        }
        (Reason::LeadCar, A::Wait) => format!("Wait behind the stopped car in {d} m."),
        (Reason::LeadCar, A::Stop) => format!("Stop now to stay behind the braking car in {d} m."),
        (Reason::LeadCar, A::Decelerate) => format!("Decelerate to stay behind the car in {d} m."),
        (Reason::LeadCar, A::Accelerate) => format!("Accelerate to follow the car in {d} m."),
        (Reason::LeadCar, _) => format!("Keep the distance to the car in {d} m."),
        (Reason::Curve, A::Accelerate) => "Follow the curve. Accelerate gently.".to_string(),
        (Reason::Curve, _) => "Slow down for the curve ahead.".to_string(),
        (Reason::Limit, A::Accelerate) => "Follow the route. Accelerate to reach the speed limit.".to_string(),
        (Reason::Limit, A::Decelerate | A::Stop) => "Follow the route. Slow down to the speed limit.".to_string(),
        (Reason::Limit, _) => "Follow the route. Keep the current speed.".to_string(),
    }
}

/// Commentary plus Q&A for the current state.
pub fn describe(w: &World, p: &ExpertPlan) -> ExpertOutput {
    let c = commentary(p);
    let mut qa = Vec::with_capacity(4);
    qa.push(("What should the ego vehicle do?".to_string(), c.clone()));
    let light = match p.light {
        Some((s, d)) => format!("Yes, the traffic light {} m ahead is {}.", d.round() as i32, light_name(s)),
        None => "No, there is no traffic light ahead.".to_string(),
    };
    qa.push(("Is there a traffic light ahead?".to_string(), light));
    let obj = match (p.object, p.object_dist.is_finite()) {
        (ObjectLabel::None, _) | (ObjectLabel::Curve, _) => "There is no object that requires a reaction.".to_string(),
        (o, true) => format!("The {} in {} m.", o.name().replace('_', " "), p.object_dist.max(0.0).round() as i32),
        (o, false) => format!("The {}.", o.name().replace('_', " ")),
    };
    qa.push(("Which object is most important for the ego vehicle?".to_string(), obj));
    let route = match p.turn {
        -1 => "Turn left at the next junction.",
        1 => "Turn right at the next junction.",
        _ => "Follow the road.",
    };
    qa.push(("Where does the route go?".to_string(), route.to_string()));
    qa.push((
        "How fast is the ego vehicle driving?".to_string(),
        format!("About {} km/h.", (w.ego.speed * 3.6).round() as i32),
    ));
    ExpertOutput {
        waypoints: p.waypoints,
        target_points: w.target_points(),
        target_speed: p.target_speed,
        action: p.action,
        object: p.object,
        object_dist: if p.object_dist.is_finite() { Some(p.object_dist) } else { None },
        commentary: c,
        qa,
    }
}
