//! Self-contained HTML replay of an episode: bird's-eye canvas + camera frames (embedded JPEGs), slider and play button.

use std::fmt::Write as _;
use std::path::Path;

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

/// Run an episode with `policy` (expert | idle | random) and write the replay page. Returns the episode metrics.
pub fn write_replay(
    scenario: &str,
    seed: u64,
    policy: &str,
    html: &Path,
    every: u32,
    width: usize,
    height: usize,
) -> anyhow::Result<EpisodeMetrics> {
    let mut w = World::new(scenario, seed)?;
    let mut ctl = ExpertController::new();
    let mut rng = Pcg32::seed_from_u64(seed ^ 0xAB_CDEF);
    let mut rcmd = Command::default();
    let mut r = Renderer::new(width, height);
    let mut img = vec![0u8; width * height * 3];
    let b64 = base64::engine::general_purpose::STANDARD;

    // static map: road and sidewalk polygons, route
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

    let mut frames = String::from("[");
    let mut nf = 0usize;
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
            other => anyhow::bail!("replay supports policies expert, idle, random (got '{other}')"),
        };
        if w.step_count % every == 0 || w.done() {
            w.render(&mut r, &mut img);
            let jp = b64.encode(jpeg(&img, width, height)?);
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
            let m = w.metrics();
            let path_w: Vec<[f32; 2]> =
                plan.waypoints.path.iter().map(|p| super::geom::to_world(w.ego.pos, w.ego.yaw, *p)).collect();
            if nf > 0 {
                frames.push(',');
            }
            let _ = write!(
                frames,
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
                actors,
                lights.join(","),
                poly_json(&path_w),
                serde_json::to_string(&plan.commentary)?,
                plan.action.name(),
                plan.object.name(),
                m.route_completion,
                m.driving_score
            );
            nf += 1;
        }
        if w.done() {
            break;
        }
        w.step(&cmd, DT);
    }
    frames.push(']');
    let m = w.metrics();
    let title = format!("{scenario} seed {seed} policy {policy}");
    let summary = serde_json::to_string(&m)?;
    let page = TEMPLATE
        .replace("__TITLE__", &title)
        .replace("__W__", &width.to_string())
        .replace("__H__", &height.to_string())
        .replace("__SUMMARY__", &summary)
        .replace("__STATIC__", &statics)
        .replace("__FRAMES__", &frames);
    std::fs::write(html, page)?;
    Ok(m)
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
