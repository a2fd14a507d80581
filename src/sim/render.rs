//! Software front camera: per-pixel ray/ground intersection into the material raster, shaded 3-D boxes with an
//! inverse-depth buffer, sky gradient, sun/dusk/night lighting with headlights, fog and rain.
//!
//! Camera (SimLingo): 110° horizontal FOV, 1.5 m behind the vehicle centre, 2.0 m above the ground, no pitch.

use super::geom::{fwd, right, Obb};
use super::map::CELL;
use super::{ActorKind, LightState, World, EGO_HALF_WIDTH};

/// Horizontal field of view, degrees.
pub const FOV_DEG: f32 = 110.0;
/// Camera mount: metres behind the vehicle centre, and height.
pub const CAM_BACK: f32 = 1.5;
pub const CAM_HEIGHT: f32 = 2.0;

#[derive(Clone, Copy, Debug)]
struct Box3 {
    obb: Obb,
    z0: f32,
    z1: f32,
    color: [f32; 3],
    emissive: bool,
}

/// Preallocated render scratch for one image size.
pub struct Renderer {
    pub width: usize,
    pub height: usize,
    invz: Vec<f32>,
    boxes: Vec<Box3>,
    noise: Vec<i16>,
}

impl Renderer {
    pub fn new(width: usize, height: usize) -> Renderer {
        assert!(width >= 8 && height >= 8, "image too small");
        // fixed pseudo-random ground texture (64×64 cells), two octaves
        let mut noise = vec![0i16; 64 * 64];
        let mut h: u32 = 0x1234_5678;
        for v in noise.iter_mut() {
            h ^= h << 13;
            h ^= h >> 17;
            h ^= h << 5;
            *v = (h % 256) as i16 - 128;
        }
        Renderer { width, height, invz: vec![0.0; width * height], boxes: Vec::with_capacity(512), noise }
    }

    /// Render `w` into `out` (packed RGB8, `width*height*3` bytes).
    pub fn render(&mut self, w: &World, out: &mut [u8]) {
        let (wd, ht) = (self.width, self.height);
        assert_eq!(out.len(), wd * ht * 3, "output buffer must be width*height*3");
        let env = &w.env;
        let yaw = w.ego.yaw;
        let f = fwd(yaw);
        let r = right(yaw);
        let cam = [w.ego.pos[0] - f[0] * CAM_BACK, w.ego.pos[1] - f[1] * CAM_BACK];
        let focal = (wd as f32 * 0.5) / (FOV_DEG.to_radians() * 0.5).tan();
        let (cx, cy) = (wd as f32 * 0.5, ht as f32 * 0.5);
        let sun_light = env.ambient + env.sun * env.sun_dir[2].max(0.0);
        let night = env.time_of_day == 2;
        let fogc = env.fog_color;
        let g = &w.map.ground;
        let ox = g.origin;
        let noise_amp = env.ground_noise * 255.0 / 128.0;
        let wear = (env.marking_wear * 128.0) as i16 - 64;

        // ---- sky and ground, row by row
        for y in 0..ht {
            let vrow = y as f32 + 0.5;
            let row = &mut out[y * wd * 3..(y + 1) * wd * 3];
            let zrow = &mut self.invz[y * wd..(y + 1) * wd];
            if vrow <= cy + 0.5 {
                let t = ((cy - vrow) / cy).clamp(0.0, 1.0);
                let haze = (env.fog_density * 40.0).min(1.0) * (1.0 - t);
                let mut c = [0.0f32; 3];
                for k in 0..3 {
                    let base = env.sky_horizon[k] + (env.sky_top[k] - env.sky_horizon[k]) * t.sqrt();
                    c[k] = base + (fogc[k] - base) * haze;
                }
                let px = to_u8(c);
                for x in 0..wd {
                    row[x * 3..x * 3 + 3].copy_from_slice(&px);
                    zrow[x] = 0.0;
                }
                continue;
            }
            let z = (CAM_HEIGHT * focal / (vrow - cy)).min(2000.0);
            let fog = 1.0 - (-env.fog_density * z).exp();
            // headlights brighten the road ahead at night
            let hl =
                if env.headlights && z < 50.0 { 1.3 * (-z / 18.0).exp() * if night { 1.0 } else { 0.4 } } else { 0.0 };
            let mut pal = [[0i16; 3]; super::map::mat::COUNT];
            let mut pal_lit = [[0i16; 3]; super::map::mat::COUNT];
            for (m, (p, pl)) in pal.iter_mut().zip(pal_lit.iter_mut()).enumerate() {
                for k in 0..3 {
                    let base = env.ground[m][k] * sun_light;
                    let lit = (env.ground[m][k] * (sun_light + hl)).min(0.75f32.max(base));
                    p[k] = ((base + (fogc[k] - base) * fog) * 255.0) as i16;
                    pl[k] = ((lit + (fogc[k] - lit) * fog) * 255.0) as i16;
                }
            }
            let invz = 1.0 / z;
            let scale = z / focal;
            let u0 = 0.5 - cx;
            let lat0 = u0 * scale;
            let px0 = cam[0] + f[0] * z + r[0] * lat0;
            let py0 = cam[1] + f[1] * z + r[1] * lat0;
            let mut gx = (px0 - ox[0]) / CELL;
            let mut gy = (py0 - ox[1]) / CELL;
            let dgx = r[0] * scale / CELL;
            let dgy = r[1] * scale / CELL;
            let beam = 0.45 * z + 1.0;
            let namp = noise_amp * (1.0 - fog);
            for x in 0..wd {
                let ix = gx.floor() as i32;
                let iy = gy.floor() as i32;
                let mut m = g.at_cell(ix, iy);
                let n1 = self.noise[((iy & 63) * 64 + (ix & 63)) as usize];
                let n2 = self.noise[(((iy >> 4) & 63) * 64 + ((ix >> 4) & 63)) as usize];
                if m >= super::map::mat::WHITE && n2 < wear {
                    m = super::map::mat::ROAD;
                }
                let lat = (x as f32 + u0) * scale;
                let c = if hl > 0.0 && lat.abs() < beam { &pal_lit[m as usize] } else { &pal[m as usize] };
                let n = ((n1 + n2) as f32 * 0.5 * namp) as i16;
                let o = &mut row[x * 3..x * 3 + 3];
                o[0] = (c[0] + n).clamp(0, 255) as u8;
                o[1] = (c[1] + n).clamp(0, 255) as u8;
                o[2] = (c[2] + n).clamp(0, 255) as u8;
                zrow[x] = invz;
                gx += dgx;
                gy += dgy;
            }
        }

        // ---- boxes
        self.boxes.clear();
        collect_boxes(w, &mut self.boxes, cam, f);
        let ctx = Ctx {
            cam,
            f,
            r,
            focal,
            cx,
            cy,
            wd,
            ht,
            sun: env.sun_dir,
            ambient: env.ambient,
            sunk: env.sun,
            fog_density: env.fog_density,
            fogc,
            headlights: env.headlights,
        };
        for b in &self.boxes {
            draw_box(&ctx, b, out, &mut self.invz);
        }

        // ---- rain streaks
        if env.rain > 0.0 {
            let thr = (env.rain * 18.0) as u32;
            let off = w.step_count.wrapping_mul(5);
            for y in 0..ht {
                for x in 0..wd {
                    let k = (y as u32).wrapping_add(off) / 5;
                    let mut h = (x as u32).wrapping_mul(0x9E37_79B1) ^ k.wrapping_mul(0x85EB_CA77);
                    h ^= h >> 15;
                    h = h.wrapping_mul(0x2C1B_3C6D);
                    h ^= h >> 12;
                    if h % 1000 < thr {
                        let o = &mut out[(y * wd + x) * 3..(y * wd + x) * 3 + 3];
                        for v in o.iter_mut() {
                            *v = ((*v as u16 + 170) / 2) as u8;
                        }
                    }
                }
            }
        }
    }
}

fn to_u8(c: [f32; 3]) -> [u8; 3] {
    [
        (c[0] * 255.0).clamp(0.0, 255.0) as u8,
        (c[1] * 255.0).clamp(0.0, 255.0) as u8,
        (c[2] * 255.0).clamp(0.0, 255.0) as u8,
    ]
}

fn rgb(c: [u8; 3]) -> [f32; 3] {
    [c[0] as f32 / 255.0, c[1] as f32 / 255.0, c[2] as f32 / 255.0]
}

#[allow(clippy::too_many_arguments)]
fn push_box(
    out: &mut Vec<Box3>,
    c: [f32; 2],
    yaw: f32,
    hl: f32,
    hw: f32,
    z0: f32,
    z1: f32,
    color: [f32; 3],
    emissive: bool,
) {
    if out.len() < out.capacity() {
        out.push(Box3 { obb: Obb { c, yaw, hl, hw }, z0, z1, color, emissive });
    }
}

fn offset(c: [f32; 2], yaw: f32, along: f32, side: f32) -> [f32; 2] {
    let f = fwd(yaw);
    let r = right(yaw);
    [c[0] + f[0] * along + r[0] * side, c[1] + f[1] * along + r[1] * side]
}

/// Amber hazard lamps, lit day and night, on all four corners of a parked car: what CARLA's scenario_runner does to
/// the blocking car of `ParkedObstacle` (`RightBlinker | LeftBlinker | Position`), and the one cue in a single frame
/// that tells a car parked in the lane (go around it) from a car queueing in it (wait behind it). CARLA's blink; these
/// stay lit, because the models see one frame at a time and a dark half-period would make the cue vanish. Oversized
/// (0.6 × 0.5 m, like the traffic lights' lamps): at 25 m the two rear ones still cover ~8 pixels of the 256×128
/// model image, where the whole car is ~7 pixels wide.
fn push_hazard_lamps(out: &mut Vec<Box3>, a: &super::Actor) {
    const AMBER: [f32; 3] = [1.0, 0.55, 0.05];
    for along in [a.half_len, -a.half_len] {
        for sd in [-1.0f32, 1.0] {
            let c = offset(a.pos, a.yaw, along, sd * (a.half_width - 0.3));
            push_box(out, c, a.yaw, 0.05, 0.3, 0.45, 0.95, AMBER, true);
        }
    }
}

fn collect_boxes(w: &World, out: &mut Vec<Box3>, cam: [f32; 2], f: [f32; 2]) {
    let visible = |c: [f32; 2], size: f32| {
        let d = [c[0] - cam[0], c[1] - cam[1]];
        let along = d[0] * f[0] + d[1] * f[1];
        along > -size && d[0] * d[0] + d[1] * d[1] < 220.0 * 220.0
    };
    let lights_on = w.env.headlights;
    // ego hood
    let e = &w.ego;
    push_box(
        out,
        offset(e.pos, e.yaw, -0.25, 0.0),
        e.yaw,
        1.25,
        EGO_HALF_WIDTH - 0.05,
        0.0,
        0.45,
        [0.08, 0.09, 0.11],
        false,
    );
    for p in &w.props {
        if visible(p.obb.c, p.obb.hl + p.obb.hw) {
            push_box(out, p.obb.c, p.obb.yaw, p.obb.hl, p.obb.hw, p.z0, p.z1, rgb(p.color), false);
        }
    }
    for a in &w.actors {
        if !visible(a.pos, 3.0) {
            continue;
        }
        let col = rgb(a.color);
        match a.kind {
            ActorKind::Car | ActorKind::Parked => {
                let h = a.height;
                push_box(out, a.pos, a.yaw, a.half_len, a.half_width, 0.25, 0.55 * h + 0.1, col, false);
                let cab = offset(a.pos, a.yaw, -0.1 * a.half_len, 0.0);
                let dark = [col[0] * 0.55 + 0.05, col[1] * 0.55 + 0.07, col[2] * 0.55 + 0.1];
                push_box(out, cab, a.yaw, 0.55 * a.half_len, a.half_width - 0.08, 0.55 * h + 0.1, h, dark, false);
                // wheels (dark, slightly outside the body)
                for (al, sd) in [(0.65, 1.0), (0.65, -1.0), (-0.65, 1.0), (-0.65, -1.0)] {
                    let c = offset(a.pos, a.yaw, al * a.half_len, sd * (a.half_width - 0.15));
                    push_box(out, c, a.yaw, 0.33, 0.16, 0.0, 0.6, [0.04, 0.04, 0.04], false);
                }
                if a.kind == ActorKind::Parked {
                    push_hazard_lamps(out, a);
                    continue;
                }
                // lamps
                let (head, tail) = if lights_on {
                    ([1.0, 0.97, 0.8], [1.0, 0.1, 0.05])
                } else {
                    ([0.75, 0.75, 0.7], [0.5, 0.05, 0.05])
                };
                for sd in [-1.0f32, 1.0] {
                    let c = offset(a.pos, a.yaw, a.half_len, sd * (a.half_width - 0.25));
                    push_box(out, c, a.yaw, 0.04, 0.16, 0.55, 0.72, head, lights_on);
                    let c = offset(a.pos, a.yaw, -a.half_len, sd * (a.half_width - 0.25));
                    push_box(out, c, a.yaw, 0.04, 0.18, 0.6, 0.78, tail, lights_on);
                }
            }
            ActorKind::Pedestrian => {
                let h = a.height;
                let walking = a.v > 0.1;
                let swing = if walking { (a.s * 3.0).sin() * 0.12 } else { 0.0 };
                for sd in [-1.0f32, 1.0] {
                    let c = offset(a.pos, a.yaw, swing * sd, sd * 0.1);
                    push_box(out, c, a.yaw, 0.09, 0.08, 0.0, 0.47 * h, [0.15, 0.15, 0.22], false);
                }
                push_box(out, a.pos, a.yaw, 0.14, 0.24, 0.47 * h, 0.86 * h, col, false);
                push_box(out, a.pos, a.yaw, 0.1, 0.1, 0.86 * h, h, [0.85, 0.67, 0.55], false);
            }
        }
    }
    for l in &w.lights {
        if !visible(l.pos, 8.0) {
            continue;
        }
        // pole on the near corner with an arm over the ego's lanes, a second pole on the far corner; housings with
        // three (oversized, so they read at low resolution) lamps facing the ego
        let fy = l.yaw;
        push_box(out, l.pos, fy, 0.12, 0.12, 0.0, 5.6, [0.25, 0.25, 0.27], false);
        let arm_len = 6.0;
        let arm_c = offset(l.pos, fy, 0.0, arm_len * 0.5);
        push_box(out, arm_c, fy, 0.08, arm_len * 0.5, 5.3, 5.5, [0.25, 0.25, 0.27], false);
        let far = offset(l.pos, fy, -l.far, 0.0);
        if l.far > 0.0 {
            push_box(out, far, fy, 0.12, 0.12, 0.0, 3.0, [0.25, 0.25, 0.27], false);
        }
        for (k, base) in [(0usize, offset(l.pos, fy, 0.15, arm_len - 0.6)), (1, offset(l.pos, fy, 0.15, 0.0)), (2, far)]
        {
            if k == 2 && l.far <= 0.0 {
                continue;
            }
            let hc = if k == 2 { offset(base, fy, 0.15, 0.0) } else { base };
            let (z0, z1) = if k == 0 { (3.4, 5.3) } else { (2.0, 3.9) };
            push_box(out, hc, fy, 0.2, 0.36, z0, z1, [0.08, 0.08, 0.08], false);
            for (i, st) in [LightState::Red, LightState::Yellow, LightState::Green].iter().enumerate() {
                let on = l.state == *st;
                let c = match (st, on) {
                    (LightState::Red, true) => [1.0, 0.12, 0.1],
                    (LightState::Yellow, true) => [1.0, 0.8, 0.1],
                    (LightState::Green, true) => [0.2, 1.0, 0.4],
                    _ => [0.12, 0.12, 0.12],
                };
                let zc = z1 - 0.35 - 0.6 * i as f32;
                let lc = offset(hc, fy, 0.22, 0.0);
                push_box(out, lc, fy, 0.03, 0.26, zc - 0.25, zc + 0.25, c, on);
            }
        }
    }
    for s in &w.stops {
        if !visible(s.pos, 3.0) {
            continue;
        }
        push_box(out, s.pos, s.yaw, 0.05, 0.05, 0.0, 2.1, [0.6, 0.6, 0.62], false);
        let pc = offset(s.pos, s.yaw, 0.07, 0.0);
        push_box(out, pc, s.yaw, 0.03, 0.55, 1.9, 3.0, [0.85, 0.05, 0.05], false);
        let tc = offset(s.pos, s.yaw, 0.11, 0.0);
        push_box(out, tc, s.yaw, 0.01, 0.4, 2.35, 2.55, [0.95, 0.95, 0.95], false);
    }
}

struct Ctx {
    cam: [f32; 2],
    f: [f32; 2],
    r: [f32; 2],
    focal: f32,
    cx: f32,
    cy: f32,
    wd: usize,
    ht: usize,
    sun: [f32; 3],
    ambient: f32,
    sunk: f32,
    fog_density: f32,
    fogc: [f32; 3],
    headlights: bool,
}

impl Ctx {
    /// World (x, y, z) -> camera (forward, right, up).
    #[inline]
    fn to_cam(&self, p: [f32; 2], z: f32) -> [f32; 3] {
        let d = [p[0] - self.cam[0], p[1] - self.cam[1]];
        [d[0] * self.f[0] + d[1] * self.f[1], d[0] * self.r[0] + d[1] * self.r[1], z - CAM_HEIGHT]
    }
}

fn draw_box(ctx: &Ctx, b: &Box3, out: &mut [u8], invz: &mut [f32]) {
    let c = b.obb.corners(); // front-right, front-left(? see geom), back..., in order around the box
    let bot: [[f32; 3]; 4] =
        [ctx.to_cam(c[0], b.z0), ctx.to_cam(c[1], b.z0), ctx.to_cam(c[2], b.z0), ctx.to_cam(c[3], b.z0)];
    let top: [[f32; 3]; 4] =
        [ctx.to_cam(c[0], b.z1), ctx.to_cam(c[1], b.z1), ctx.to_cam(c[2], b.z1), ctx.to_cam(c[3], b.z1)];
    if bot.iter().chain(top.iter()).all(|p| p[0] < 0.1) {
        return;
    }
    let centre = ctx.to_cam(b.obb.c, 0.5 * (b.z0 + b.z1));
    let dist = (centre[0] * centre[0] + centre[1] * centre[1] + centre[2] * centre[2]).sqrt();
    let fog = 1.0 - (-ctx.fog_density * dist).exp();
    let shade = |n: [f32; 3]| -> [u8; 3] {
        let mut col = b.color;
        if !b.emissive {
            let ndl = (n[0] * ctx.sun[0] + n[1] * ctx.sun[1] + n[2] * ctx.sun[2]).max(0.0);
            let mut k = ctx.ambient + ctx.sunk * ndl + 0.06 * n[2];
            if ctx.headlights && centre[0] > 0.0 && centre[0] < 40.0 && centre[1].abs() < centre[0] * 0.5 + 2.0 {
                k += 1.2 * (-centre[0] / 15.0).exp();
            }
            for v in col.iter_mut() {
                *v *= k;
            }
        }
        let fk = if b.emissive { fog * 0.5 } else { fog };
        to_u8([
            col[0] + (ctx.fogc[0] - col[0]) * fk,
            col[1] + (ctx.fogc[1] - col[1]) * fk,
            col[2] + (ctx.fogc[2] - col[2]) * fk,
        ])
    };
    // side faces: edge k -> k+1 ; world normals from the OBB axes
    for k in 0..4 {
        let k2 = (k + 1) % 4;
        let mid = [(c[k][0] + c[k2][0]) * 0.5, (c[k][1] + c[k2][1]) * 0.5];
        let nrm = [mid[0] - b.obb.c[0], mid[1] - b.obb.c[1]];
        let nl = (nrm[0] * nrm[0] + nrm[1] * nrm[1]).sqrt().max(1e-6);
        let n2 = [nrm[0] / nl, nrm[1] / nl];
        // visible if the camera is on the outer side
        let to_cam = [ctx.cam[0] - mid[0], ctx.cam[1] - mid[1]];
        if n2[0] * to_cam[0] + n2[1] * to_cam[1] <= 0.0 {
            continue;
        }
        let col = shade([n2[0], n2[1], 0.0]);
        fill(ctx, &[bot[k], bot[k2], top[k2], top[k]], col, out, invz);
    }
    if CAM_HEIGHT > b.z1 {
        let col = shade([0.0, 0.0, 1.0]);
        fill(ctx, &top, col, out, invz);
    } else if CAM_HEIGHT < b.z0 {
        let col = shade([0.0, 0.0, -1.0]);
        fill(ctx, &bot, col, out, invz);
    }
}

/// Rasterise a planar convex quad given in camera coordinates with an inverse-depth test.
fn fill(ctx: &Ctx, q: &[[f32; 3]; 4], col: [u8; 3], out: &mut [u8], invz: &mut [f32]) {
    const NEAR: f32 = 0.1;
    // clip against the near plane
    let mut poly = [[0.0f32; 3]; 8];
    let mut n = 0;
    for i in 0..4 {
        let a = q[i];
        let b = q[(i + 1) % 4];
        let ain = a[0] >= NEAR;
        let bin = b[0] >= NEAR;
        if ain {
            poly[n] = a;
            n += 1;
        }
        if ain != bin {
            let t = (NEAR - a[0]) / (b[0] - a[0]);
            poly[n] = [NEAR, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t];
            n += 1;
        }
    }
    if n < 3 {
        return;
    }
    // plane: normal in camera coords
    let e1 = [q[1][0] - q[0][0], q[1][1] - q[0][1], q[1][2] - q[0][2]];
    let e2 = [q[3][0] - q[0][0], q[3][1] - q[0][1], q[3][2] - q[0][2]];
    let nrm = [e1[1] * e2[2] - e1[2] * e2[1], e1[2] * e2[0] - e1[0] * e2[2], e1[0] * e2[1] - e1[1] * e2[0]];
    let d = nrm[0] * q[0][0] + nrm[1] * q[0][1] + nrm[2] * q[0][2];
    if d.abs() < 1e-9 {
        return;
    }
    // 1/forward = (n_f + n_r*(sx-cx)/F - n_u*(sy-cy)/F) / d
    let a_x = nrm[1] / (ctx.focal * d);
    let a_y = -nrm[2] / (ctx.focal * d);
    let a_0 = nrm[0] / d - a_x * ctx.cx - a_y * ctx.cy;
    let mut sp = [[0.0f32; 2]; 8];
    let mut ymin = f32::MAX;
    let mut ymax = f32::MIN;
    for i in 0..n {
        let p = poly[i];
        let sx = ctx.cx + ctx.focal * p[1] / p[0];
        let sy = ctx.cy - ctx.focal * p[2] / p[0];
        sp[i] = [sx, sy];
        ymin = ymin.min(sy);
        ymax = ymax.max(sy);
    }
    let y0 = (ymin - 0.5).ceil().max(0.0) as usize;
    let y1 = ((ymax - 0.5).floor()).min(ctx.ht as f32 - 1.0);
    if y1 < 0.0 {
        return;
    }
    let y1 = y1 as usize;
    for y in y0..=y1 {
        let yc = y as f32 + 0.5;
        let mut xl = f32::MAX;
        let mut xr = f32::MIN;
        for i in 0..n {
            let a = sp[i];
            let b = sp[(i + 1) % n];
            if (a[1] <= yc && b[1] >= yc) || (b[1] <= yc && a[1] >= yc) {
                let x = if (b[1] - a[1]).abs() < 1e-6 {
                    a[0].min(b[0])
                } else {
                    a[0] + (b[0] - a[0]) * (yc - a[1]) / (b[1] - a[1])
                };
                let x2 = if (b[1] - a[1]).abs() < 1e-6 { a[0].max(b[0]) } else { x };
                xl = xl.min(x);
                xr = xr.max(x2);
            }
        }
        if xl > xr {
            continue;
        }
        let x0 = (xl - 0.5).ceil().max(0.0) as usize;
        let x1 = (xr - 0.5).floor().min(ctx.wd as f32 - 1.0);
        if x1 < 0.0 {
            continue;
        }
        let x1 = x1 as usize;
        let base = a_0 + a_y * yc;
        let zr = &mut invz[y * ctx.wd..(y + 1) * ctx.wd];
        let orow = &mut out[y * ctx.wd * 3..(y + 1) * ctx.wd * 3];
        for x in x0..=x1 {
            let iz = base + a_x * (x as f32 + 0.5);
            if iz > zr[x] {
                zr[x] = iz;
                orow[x * 3..x * 3 + 3].copy_from_slice(&col);
            }
        }
    }
}

/// Render benchmark: frames/s at `w`×`h` over `frames` frames of several driven scenarios (stepping excluded).
pub fn bench(w: usize, h: usize, frames: usize) -> f64 {
    let mut r = Renderer::new(w, h);
    let mut out = vec![0u8; w * h * 3];
    let names = ["lane_keep", "red_light", "pedestrian_crossing", "unprotected_left"];
    let per = frames.div_ceil(names.len()).max(1);
    let mut total = std::time::Duration::ZERO;
    let mut n = 0usize;
    for (k, name) in names.iter().enumerate() {
        let mut world = World::new(name, super::HELD_OUT_SEEDS.start + k as u64).expect("scenario");
        let mut ctl = super::ExpertController::new();
        for _ in 0..per {
            let p = world.expert_plan();
            let cmd = ctl.step(&p.waypoints, world.ego.speed);
            world.step(&cmd, super::DT);
            let t0 = std::time::Instant::now();
            r.render(&world, &mut out);
            total += t0.elapsed();
            n += 1;
        }
    }
    std::hint::black_box(&out);
    n as f64 / total.as_secs_f64().max(1e-9)
}
