//! Self-contained HTML replay of an episode: bird's-eye canvas + camera frames (embedded JPEGs), slider and play button.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg32;

use super::{ActorKind, EpisodeMetrics, ExpertController, LightState, Renderer, World, DT};
use crate::types::Command;

/// Encode packed RGB8 as JPEG.
pub fn jpeg(rgb: &[u8], w: usize, h: usize) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut buf, 85);
    enc.encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)?;
    Ok(buf)
}

fn poly_json(pts: &[[f32; 2]]) -> String {
    let mut s = String::from("[");
    for (i, p) in pts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "[{:.1},{:.1}]", p[0], p[1]);
    }
    s.push(']');
    s
}

/// Run an episode with `policy` and write the replay page. Returns the episode metrics. The built-ins `expert`,
/// `idle` and `random` step the world here; `model` drives the student through the runtime, exactly as
/// `rtvla drive --fast` does (see [`model_replay`]).
pub fn write_replay(
    scenario: &str,
    seed: u64,
    policy: &str,
    html: &Path,
    every: u32,
    width: usize,
    height: usize,
) -> anyhow::Result<EpisodeMetrics> {
    if policy == "model" {
        return model_replay(scenario, seed, None, html, every, width, height);
    }
    let mut w = World::new(scenario, seed)?;
    let mut ctl = ExpertController::new();
    let mut rng = Pcg32::seed_from_u64(seed ^ 0xAB_CDEF);
    let mut rcmd = Command::default();
    let mut page = ReplayPage::new(&w, every, width, height);
    loop {
        let plan = w.expert();
        let cmd = match policy {
            "expert" => ctl.step(&plan.waypoints, w.ego.speed),
            "idle" => Command::default(),
            "random" => {
                if w.step_count % 10 == 0 {
                    rcmd = Command {
                        steer: rng.random_range(-1.0..1.0),
                        throttle: rng.random_range(0.0..1.0),
                        brake: if rng.random::<f32>() < 0.2 { 1.0 } else { 0.0 },
                    };
                }
                rcmd
            }
            other => {
                return Err(crate::error::bad_input(format!(
                    "replay supports policies expert, idle, random, model (got '{other}')"
                )))
            }
        };
        page.observe(&mut w, &cmd, true)?;
        if w.done() {
            break;
        }
        w.step(&cmd, DT);
    }
    let m = w.metrics();
    page.finish(&format!("{scenario} seed {seed} policy {policy}"), &m, html)?;
    Ok(m)
}

/// Replay of the student (`model`, or the manifest given): the runtime drives the in-process simulator in
/// simulated time, and the simulator thread hands every state it steps through to the page.
pub fn model_replay(
    scenario: &str,
    seed: u64,
    model: Option<&Path>,
    html: &Path,
    every: u32,
    width: usize,
    height: usize,
) -> anyhow::Result<EpisodeMetrics> {
    let start = World::new(scenario, seed).map_err(|e| crate::error::bad_input(format!("sim: {e}")))?;
    let page = Arc::new(Mutex::new(Some(ReplayPage::new(&start, every, width, height))));
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let (p, f) = (page.clone(), failed.clone());
    let observer = super::harness::SimObserver::new(move |w: &mut World, cmd: &Command| {
        let mut page = p.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Err(e)) = page.as_mut().map(|pg| pg.observe(w, cmd, false)) {
            *f.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
        }
    });
    let run = super::plant::SimRun {
        scenario: Some(scenario.into()),
        seed: Some(seed),
        repeat: false,
        observer: Some(observer),
    };
    let (report, mut episodes) = super::plant::drive_episode(crate::runtime::PolicyKind::Model, model, run)?;
    let m = episodes.pop().ok_or_else(|| anyhow::anyhow!("the simulator returned no metrics"))?;
    if let Some(e) = failed.lock().unwrap_or_else(|e| e.into_inner()).take() {
        anyhow::bail!("replay page: {e}");
    }
    let page = page.lock().unwrap_or_else(|e| e.into_inner()).take().expect("the page is taken once");
    page.finish(&format!("{scenario} seed {seed} policy model ({})", report.model), &m, html)?;
    Ok(m)
}

/// The replay page being built: the static map once, then one JSON frame per kept tick.
pub struct ReplayPage {
    statics: String,
    frames: String,
    kept: usize,
    every: u32,
    width: usize,
    height: usize,
    renderer: Renderer,
    img: Vec<u8>,
}

impl ReplayPage {
    /// Start a page for the world's map, keeping every `every`-th tick at `width`×`height`.
    pub fn new(w: &World, every: u32, width: usize, height: usize) -> ReplayPage {
        ReplayPage {
            statics: static_map_json(w),
            frames: String::from("["),
            kept: 0,
            every: every.max(1),
            width,
            height,
            renderer: Renderer::new(width, height),
            img: vec![0u8; width * height * 3],
        }
    }

    /// Record the world as the command `cmd` is about to be applied (kept every `every` ticks and at the end).
    /// `show_plan` draws the expert's planned path (the policy drove along it); the student's own plan is not
    /// visible to the simulator, so its replays show none.
    pub fn observe(&mut self, w: &mut World, cmd: &Command, show_plan: bool) -> anyhow::Result<()> {
        if !w.step_count.is_multiple_of(self.every) && !w.done() {
            return Ok(());
        }
        let plan = w.expert();
        w.render(&mut self.renderer, &mut self.img);
        let jp = base64::engine::general_purpose::STANDARD.encode(jpeg(&self.img, self.width, self.height)?);
        let m = w.metrics();
        let path_w: Vec<[f32; 2]> = if show_plan {
            plan.waypoints.path.iter().map(|p| super::geom::to_world(w.ego.pos, w.ego.yaw, *p)).collect()
        } else {
            Vec::new()
        };
        if self.kept > 0 {
            self.frames.push(',');
        }
        let _ = write!(
            self.frames,
            "{{\"t\":{:.2},\"img\":\"{}\",\"ego\":{},\"pos\":[{:.1},{:.1}],\"v\":{:.2},\"cmd\":[{:.2},{:.2},{:.2}],\"actors\":{},\"lights\":[{}],\"path\":{},\"txt\":{},\"act\":\"{}\",\"obj\":\"{}\",\"rc\":{:.3},\"ds\":{:.1}}}",
            w.t,
            jp,
            poly_json(&w.ego.obb().corners()),
            w.ego.pos[0],
            w.ego.pos[1],
            w.ego.speed,
            cmd.steer,
            cmd.throttle,
            cmd.brake,
            actors_json(w),
            lights_json(w),
            poly_json(&path_w),
            serde_json::to_string(&plan.commentary)?,
            plan.action.name(),
            plan.object.name(),
            m.route_completion,
            m.driving_score
        );
        self.kept += 1;
        Ok(())
    }

    /// Write the self-contained page.
    pub fn finish(mut self, title: &str, m: &EpisodeMetrics, html: &Path) -> anyhow::Result<()> {
        self.frames.push(']');
        let page = TEMPLATE
            .replace("__TITLE__", title)
            .replace("__W__", &self.width.to_string())
            .replace("__H__", &self.height.to_string())
            .replace("__SUMMARY__", &serde_json::to_string(m)?)
            .replace("__STATIC__", &self.statics)
            .replace("__FRAMES__", &self.frames);
        std::fs::write(html, page).map_err(|e| crate::error::bad_input(format!("{}: {e}", html.display())))
    }
}

/// Road and sidewalk polygons, the route and the props, as the page's JSON.
fn static_map_json(w: &World) -> String {
    let mut statics = String::from("{\"roads\":[");
    for (i, road) in w.map.roads.iter().enumerate() {
        let p = road.path.resampled(2.0);
        let mk = |d0: f32, d1: f32| {
            let mut pts: Vec<[f32; 2]> = p.s.iter().map(|&s| p.point_at(s, d1)).collect();
            pts.extend(p.s.iter().rev().map(|&s| p.point_at(s, d0)));
            poly_json(&pts)
        };
        if i > 0 {
            statics.push(',');
        }
        let _ = write!(
            statics,
            "{{\"walk\":{},\"road\":{}}}",
            mk(road.left_edge() - road.sidewalk_w, road.right_edge() + road.sidewalk_w),
            mk(road.left_edge(), road.right_edge())
        );
    }
    let rp = w.route.path.resampled(2.0);
    let route_pts: Vec<[f32; 2]> =
        rp.s.iter().filter(|&&s| s >= w.route.start_s && s <= w.route.goal_s).map(|&s| rp.point_at(s, 0.0)).collect();
    let props: Vec<String> = w.props.iter().filter(|p| p.obb.hl > 0.5).map(|p| poly_json(&p.obb.corners())).collect();
    let _ = write!(statics, "],\"route\":{},\"props\":[{}]}}", poly_json(&route_pts), props.join(","));
    statics
}

fn actors_json(w: &World) -> String {
    let mut actors = String::from("[");
    for (i, a) in w.actors.iter().enumerate() {
        if i > 0 {
            actors.push(',');
        }
        let k = match a.kind {
            ActorKind::Car => "car",
            ActorKind::Pedestrian => "ped",
            ActorKind::Parked => "parked",
        };
        let _ = write!(
            actors,
            "{{\"k\":\"{}\",\"c\":{},\"col\":\"rgb({},{},{})\"}}",
            k,
            poly_json(&a.obb().corners()),
            a.color[0],
            a.color[1],
            a.color[2]
        );
    }
    actors.push(']');
    actors
}

fn lights_json(w: &World) -> String {
    let lights: Vec<String> = w
        .lights
        .iter()
        .map(|l| {
            let c = match l.state {
                LightState::Red => "red",
                LightState::Yellow => "orange",
                LightState::Green => "lime",
            };
            format!("{{\"p\":[{:.1},{:.1}],\"s\":\"{}\"}}", l.pos[0], l.pos[1], c)
        })
        .collect();
    lights.join(",")
}

const TEMPLATE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>rtvla replay: __TITLE__</title>
<style>
body{font-family:system-ui,sans-serif;background:#1b1d22;color:#e6e6e6;margin:16px}
#row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
canvas,img{border:1px solid #444;background:#000}
#cam{width:__W__px;height:__H__px;image-rendering:auto}
#txt{font-size:15px;margin:8px 0;min-height:1.4em;color:#ffd76a}
#info{font-family:monospace;font-size:13px;white-space:pre}
input[type=range]{width:520px}
button{font-size:15px;padding:2px 12px}
</style></head><body>
<h3>rtvla replay: __TITLE__</h3>
<div id="row">
 <canvas id="bev" width="480" height="480"></canvas>
 <div><img id="cam" alt="camera"><div id="txt"></div><div id="info"></div></div>
</div>
<div><button id="play">play</button> <input type="range" id="sl" min="0" value="0"> <span id="fi"></span></div>
<details><summary>episode metrics</summary><pre id="sum"></pre></details>
<script>
const ST=__STATIC__;
const FR=__FRAMES__;
const SUM=__SUMMARY__;
document.getElementById('sum').textContent=JSON.stringify(SUM,null,1);
const cv=document.getElementById('bev'),cx=cv.getContext('2d');
const sl=document.getElementById('sl');sl.max=FR.length-1;
const SC=4.0;
function poly(p,fill,stroke){cx.beginPath();p.forEach((q,i)=>{i?cx.lineTo(q[0],q[1]):cx.moveTo(q[0],q[1])});cx.closePath();if(fill){cx.fillStyle=fill;cx.fill()}if(stroke){cx.strokeStyle=stroke;cx.lineWidth=0.3;cx.stroke()}}
function line(p,col,w){cx.beginPath();p.forEach((q,i)=>{i?cx.lineTo(q[0],q[1]):cx.moveTo(q[0],q[1])});cx.strokeStyle=col;cx.lineWidth=w;cx.stroke()}
function draw(i){
 const f=FR[i];
 cx.setTransform(1,0,0,1,0,0);cx.fillStyle='#2f4a2a';cx.fillRect(0,0,cv.width,cv.height);
 cx.setTransform(SC,0,0,SC,cv.width/2-SC*f.pos[0],cv.height/2-SC*f.pos[1]);
 ST.roads.forEach(r=>poly(r.walk,'#8a8a86'));ST.roads.forEach(r=>poly(r.road,'#3c3c40'));
 ST.props.forEach(p=>poly(p,'#6d6a78','#222'));
 line(ST.route,'rgba(80,160,255,0.45)',1.0);
 line(f.path,'#ffd76a',0.35);
 f.actors.forEach(a=>poly(a.c,a.col,a.k=='ped'?'#fff':'#111'));
 f.lights.forEach(l=>{cx.beginPath();cx.arc(l.p[0],l.p[1],1.2,0,7);cx.fillStyle=l.s;cx.fill()});
 poly(f.ego,'#36d','#fff');
 document.getElementById('cam').src='data:image/jpeg;base64,'+f.img;
 document.getElementById('txt').textContent=f.txt;
 document.getElementById('info').textContent=
  `t ${f.t.toFixed(2)} s   speed ${f.v.toFixed(1)} m/s\nsteer ${f.cmd[0]} throttle ${f.cmd[1]} brake ${f.cmd[2]}\naction ${f.act}   object ${f.obj}\nroute completion ${(100*f.rc).toFixed(1)}%   driving score ${f.ds.toFixed(1)}`;
 document.getElementById('fi').textContent=`${i+1}/${FR.length}`;
}
sl.oninput=()=>draw(+sl.value);
let timer=null;
document.getElementById('play').onclick=()=>{
 if(timer){clearInterval(timer);timer=null;return}
 timer=setInterval(()=>{let i=+sl.value+1;if(i>=FR.length){clearInterval(timer);timer=null;return}sl.value=i;draw(i)},100);
};
// open at a frame with replay.html#N
const start=Math.min(FR.length-1,Math.max(0,parseInt(location.hash.slice(1))||0));sl.value=start;draw(start);
</script></body></html>
"#;

/// Encode packed RGB8 as an uncompressed PNG (stored deflate blocks; no dependencies).
pub fn png(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = Vec::with_capacity(4 + data.len());
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    let mut raw = Vec::with_capacity((w * 3 + 1) * h);
    for y in 0..h {
        raw.push(0);
        raw.extend_from_slice(&rgb[y * w * 3..(y + 1) * w * 3]);
    }
    let mut z = vec![0x78, 0x01];
    let mut chunks = raw.chunks(65535).peekable();
    while let Some(c) = chunks.next() {
        z.push(u8::from(chunks.peek().is_none()));
        z.extend_from_slice(&(c.len() as u16).to_le_bytes());
        z.extend_from_slice(&(!(c.len() as u16)).to_le_bytes());
        z.extend_from_slice(c);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&(w as u32).to_be_bytes());
    ihdr.extend_from_slice(&(h as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}
