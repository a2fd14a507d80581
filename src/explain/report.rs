//! The HTML report of `rtvla explain --html`: one self-contained file (thumbnails inline as base64 JPEG, plots as
//! inline SVG, no script), one card per event. A report of "why did it crash" must show the lead-up, so each card
//! has: the run that wrote it (run id, board, scenario / seed, model, policy); the keyframes in time order with their
//! offset from the trigger and the language branch's commentary; and speed (m/s), steering (−1..1), throttle and
//! brake (0..1) and time-to-collision (s, clipped at 10) each on its own axis, over seconds relative to the trigger
//! (t = 0 marked), with the keyframe times and any impact marked on every axis.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::EventExplanation;
use crate::events::snapshot::{Snapshot, TickTelemetry, FLAG_COLLISION};
use crate::store::export::base64;

/// Time-to-collision above this is drawn at this value ("clear").
pub const TTC_CLIP_S: f64 = 10.0;

/// Builds the report one event at a time (so a large store is never held in memory as snapshots). Cards are
/// ordered most severe first (a collision at the top, where a reader asking "why did it crash" looks), then in
/// store order.
pub struct HtmlReport {
    /// (severity, store seq, card HTML).
    cards: Vec<(u8, u64, String)>,
    events: usize,
    by_trigger: BTreeMap<String, usize>,
    /// Run id → its one-line description, for the page header.
    runs: BTreeMap<String, String>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Default for HtmlReport {
    fn default() -> Self {
        Self::new()
    }
}

/// "run 2026…-1a2b · board host-sim · scenario cut_in / seed 7 · model 462976ad0763 · policy model".
fn run_line(s: &Snapshot) -> String {
    let r = &s.run;
    let or_unknown = |x: &str| if x.is_empty() { "unknown".to_string() } else { x.to_string() };
    let sim = match (&r.scenario, r.seed) {
        (Some(sc), Some(seed)) => format!("scenario {sc} / seed {seed}"),
        (Some(sc), None) => format!("scenario {sc}"),
        _ => "no simulator".into(),
    };
    let model = r.model_sha256_hex().or(s.model_id_hex()).map_or("unknown".to_string(), |h| h[..12].to_string());
    format!(
        "run {} · board {} · {sim} · model {model} · policy {}",
        or_unknown(&r.run_id),
        or_unknown(&r.board),
        or_unknown(&r.policy)
    )
}

impl HtmlReport {
    pub fn new() -> Self {
        HtmlReport { cards: Vec::new(), events: 0, by_trigger: Default::default(), runs: Default::default() }
    }

    /// Add one event's card.
    pub fn add(&mut self, e: &EventExplanation, s: &Snapshot) {
        self.events += 1;
        *self.by_trigger.entry(e.trigger.clone()).or_default() += 1;
        let run = run_line(s);
        self.runs.entry(s.run.run_id.to_string()).or_insert_with(|| run.clone());
        let mut b = String::new();
        let _ = write!(
            b,
            "<section class=\"{}\"><h2>#{} <span class=\"trig\">{}</span> {}</h2>\
<p class=\"meta\">{} · {:.1} s window · seq {}</p><p class=\"run\">{}</p>",
            esc(&e.trigger),
            e.id,
            esc(&e.trigger.replace('_', " ")),
            esc(&e.cause),
            esc(&e.time),
            s.duration_s(),
            e.seq,
            esc(&run)
        );
        b.push_str(&frames_html(e, s));
        b.push_str(&plots_svg(s));
        b.push_str("</section>\n");
        self.cards.push((s.trigger.severity(), e.seq, b));
    }

    /// The whole document.
    pub fn finish(mut self, title: &str, model: &str) -> String {
        self.cards.sort_by_key(|(severity, seq, _)| (std::cmp::Reverse(*severity), *seq));
        let body: String = self.cards.iter().map(|(_, _, card)| card.as_str()).collect();
        let triggers =
            self.by_trigger.iter().map(|(k, v)| format!("{v} {}", k.replace('_', " "))).collect::<Vec<_>>().join(", ");
        let runs = self.runs.values().map(|r| format!("<li>{}</li>", esc(r))).collect::<String>();
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font:14px system-ui,sans-serif;margin:2em;max-width:1180px;color:#222}}\
section{{border:1px solid #ddd;border-radius:8px;padding:0.5em 1em;margin:1em 0}}\
section.collision{{border-color:#d33;box-shadow:0 0 0 2px #fbd}}\
h2{{font-size:1.05em;margin:0.4em 0}} .trig{{background:#fde7c8;border-radius:4px;padding:0 6px}}\
.collision .trig{{background:#f8c0c0}} .meta,.run{{color:#666;margin:0}} .run{{font-family:monospace}}\
.frames{{display:flex;gap:0.8em;flex-wrap:wrap;margin:0.6em 0}} figure{{margin:0;width:180px}}\
figure.lead{{opacity:0.95}} figure.at img{{outline:3px solid #d33}} figcaption{{font-size:0.88em}}\
img{{border-radius:4px;image-rendering:pixelated}}\
.nothumb{{width:176px;height:88px;background:#eee;color:#999;text-align:center;line-height:88px}}\
svg text{{font-size:10px;fill:#555}} svg .ttl{{font-size:11px;fill:#222;font-weight:600}}</style></head><body>\
<h1>{t}</h1><p>{n} events ({triggers}). Commentary by the language branch <code>{m}</code>, run offline on each \
snapshot's keyframes (features + that tick's speed, target points and plan). Times are seconds relative to each \
event's trigger (t = 0); ▲ marks a keyframe. Most severe events first.</p><p>Runs:</p><ul class=\"run\">{runs}</ul>\n{body}</body></html>\n",
            t = esc(title),
            n = self.events,
            m = esc(model),
        )
    }
}

/// The keyframes in time order: thumbnail, offset from the trigger, speed and commentary.
fn frames_html(e: &EventExplanation, s: &Snapshot) -> String {
    let mut kfs: Vec<_> = s.keyframes.iter().enumerate().collect();
    kfs.sort_by_key(|(_, k)| k.time_us);
    let mut b = String::from("<div class=\"frames\">");
    for (k, kf) in kfs {
        let x = e.keyframes.iter().find(|x| x.tick == kf.tick);
        let offset = (kf.time_us as f64 - s.mono_time_us as f64) / 1e6;
        let class = if kf.tick == s.trigger_tick {
            "at"
        } else if offset < 0.0 {
            "lead"
        } else {
            "after"
        };
        let _ = write!(b, "<figure class=\"{class}\">");
        if kf.jpeg.is_empty() {
            b.push_str("<div class=\"nothumb\">no thumbnail</div>");
        } else {
            let _ = write!(
                b,
                "<img width=\"176\" height=\"{}\" alt=\"keyframe {k} at {offset:+.2} s\" \
src=\"data:image/jpeg;base64,{}\">",
                kf.thumb_h as usize * 176 / kf.thumb_w.max(1) as usize,
                base64(&kf.jpeg)
            );
        }
        let speed = x.map(|x| x.speed).or_else(|| super::tick_of(s, kf.tick).map(|t| t.speed));
        let _ = write!(
            b,
            "<figcaption><b>t = {offset:+.2} s</b>{}<br>{}</figcaption></figure>",
            speed.map(|v| format!(" · {v:.1} m/s")).unwrap_or_default(),
            esc(x.map_or("(no commentary)", |x| x.commentary.as_str()))
        );
    }
    b.push_str("</div>");
    b
}

/// Plot geometry shared by the panels: width, left margin, panel height, and the time range (s from trigger).
struct Axes {
    w: f64,
    left: f64,
    right: f64,
    t0: f64,
    t1: f64,
}

impl Axes {
    fn x(&self, t: f64) -> f64 {
        self.left + (t - self.t0) / (self.t1 - self.t0).max(1e-6) * (self.w - self.left - self.right)
    }
}

/// One series of a panel: colour, legend label, value of a tick.
type Series<'a> = (&'a str, &'a str, &'a dyn Fn(&TickTelemetry) -> f64);

/// Four panels, each with its own y axis, over the window's time relative to the trigger.
fn plots_svg(s: &Snapshot) -> String {
    let ticks: Vec<&TickTelemetry> = s.pre.iter().chain(s.post.iter()).collect();
    if ticks.len() < 2 {
        return String::new();
    }
    let rel = |us: u64| (us as f64 - s.mono_time_us as f64) / 1e6;
    let a = Axes {
        w: 1100.0,
        left: 58.0,
        right: 110.0,
        t0: rel(ticks[0].time_us),
        t1: rel(ticks[ticks.len() - 1].time_us),
    };
    let vmax = ticks.iter().map(|t| t.speed as f64).fold(1.0f64, f64::max);
    let vmax = (vmax / 2.0).ceil() * 2.0;
    let (ph, gap) = (92.0, 26.0);
    let speed: [Series; 1] = [("#1f6fd1", "speed m/s", &|t| t.speed as f64)];
    let steer: [Series; 1] = [("#8a3fc7", "steer", &|t| t.command.steer as f64)];
    let pedals: [Series; 2] =
        [("#2a9d4a", "throttle", &|t| t.command.throttle as f64), ("#d13a1f", "brake", &|t| t.command.brake as f64)];
    let ttc: [Series; 1] = [("#d9822b", "TTC s (≥10: clear)", &|t| (t.ttc_s as f64).clamp(0.0, TTC_CLIP_S))];
    let panels: [(&str, f64, f64, &[Series]); 4] = [
        ("speed (m/s)", 0.0, vmax, &speed),
        ("steering (−1 left … +1 right)", -1.0, 1.0, &steer),
        ("throttle / brake (0–1)", 0.0, 1.0, &pedals),
        ("time to collision (s, clipped at 10)", 0.0, TTC_CLIP_S, &ttc),
    ];
    let height = panels.len() as f64 * (ph + gap) + 8.0;
    let mut svg = format!(
        "<svg width=\"{w}\" height=\"{height}\" viewBox=\"0 0 {w} {height}\" role=\"img\" \
xmlns=\"http://www.w3.org/2000/svg\">",
        w = a.w
    );
    for (i, (title, lo, hi, series)) in panels.iter().enumerate() {
        let top = 14.0 + i as f64 * (ph + gap);
        svg += &panel(&a, s, &ticks, top, ph, title, (*lo, *hi), series);
    }
    svg.push_str("</svg>");
    svg
}

/// One panel: frame, y ticks, time grid with labels, t = 0, impacts, keyframe marks, and its series.
#[allow(clippy::too_many_arguments)]
fn panel(
    a: &Axes,
    s: &Snapshot,
    ticks: &[&TickTelemetry],
    top: f64,
    ph: f64,
    title: &str,
    (lo, hi): (f64, f64),
    series: &[Series],
) -> String {
    let bottom = top + ph;
    let y = |v: f64| bottom - (v.clamp(lo, hi) - lo) / (hi - lo) * ph;
    let rel = |us: u64| (us as f64 - s.mono_time_us as f64) / 1e6;
    let (l, r) = (a.left, a.w - a.right);
    let mut g = format!(
        "<text class=\"ttl\" x=\"{l}\" y=\"{:.1}\">{}</text>\
<rect x=\"{l}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{ph}\" fill=\"#fafafa\" stroke=\"#ccc\"/>",
        top - 3.0,
        esc(title),
        r - l
    );
    for v in [lo, (lo + hi) / 2.0, hi] {
        let _ = write!(
            g,
            "<line x1=\"{:.1}\" x2=\"{l}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#999\"/>\
<line x1=\"{l}\" x2=\"{r:.1}\" y1=\"{yv:.1}\" y2=\"{yv:.1}\" stroke=\"#eee\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            l - 4.0,
            l - 6.0,
            y(v) + 3.5,
            trim_num(v),
            yv = y(v)
        );
    }
    g += &time_grid(a, top, bottom);
    for t in ticks.iter().filter(|t| t.flags & FLAG_COLLISION != 0) {
        let x = a.x(rel(t.time_us));
        let _ = write!(
            g,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"#d00\" stroke-width=\"2.5\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d00\" style=\"fill:#d00\">impact</text>",
            x + 3.0,
            top + 10.0
        );
    }
    for k in &s.keyframes {
        let x = a.x(rel(k.time_us));
        let _ = write!(g, "<path d=\"M{:.1},{bottom:.1} l4,-7 l4,7 z\" fill=\"#555\"/>", x - 4.0);
    }
    for (i, (color, label, f)) in series.iter().enumerate() {
        let pts: Vec<String> = ticks.iter().map(|t| format!("{:.1},{:.1}", a.x(rel(t.time_us)), y(f(t)))).collect();
        let _ = write!(
            g,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\" points=\"{}\"/>\
<text x=\"{:.1}\" y=\"{:.1}\" style=\"fill:{color}\">{}</text>",
            pts.join(" "),
            r + 6.0,
            top + 12.0 + i as f64 * 13.0,
            esc(label)
        );
    }
    g
}

/// Vertical grid and labels every 0.5 s (1 s or 2 s for long windows), seconds relative to the trigger; t = 0
/// is the dashed red line.
fn time_grid(a: &Axes, top: f64, bottom: f64) -> String {
    let span = a.t1 - a.t0;
    let step = if span <= 5.0 {
        0.5
    } else if span <= 12.0 {
        1.0
    } else {
        2.0
    };
    let mut g = String::new();
    let mut k = (a.t0 / step).ceil() as i64;
    while (k as f64) * step <= a.t1 + 1e-9 {
        let t = k as f64 * step;
        let x = a.x(t);
        let (stroke, dash) =
            if k == 0 { ("#c33", " stroke-dasharray=\"4 3\" stroke-width=\"1.5\"") } else { ("#e4e4e4", "") };
        let label = if k == 0 { "t=0".to_string() } else { format!("{t:+.1}s") };
        let _ = write!(
            g,
            "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" stroke=\"{stroke}\"{dash}/>\
<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\"{}>{label}</text>",
            bottom + 11.0,
            if k == 0 { " style=\"fill:#c33\"" } else { "" }
        );
        k += 1;
    }
    g
}

/// A tick label without needless decimals: 10, 0.5, -1.
fn trim_num(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::snapshot::{Keyframe, RunInfo, TriggerKind};

    /// A collision event: 3 s of ticks around the trigger, an impact flag at t = 0, a lead-up keyframe.
    fn event() -> (EventExplanation, Box<Snapshot>) {
        let mut s = Snapshot::new_boxed();
        s.trigger = TriggerKind::Collision;
        s.mono_time_us = 2_000_000;
        s.trigger_tick = 40;
        s.run = RunInfo {
            run_id: RunInfo::bounded("20261130T045012Z-1a2b"),
            board: RunInfo::bounded("host-sim"),
            policy: RunInfo::bounded("model"),
            model_sha256: [0x46; 32],
            scenario: Some(RunInfo::bounded("cut_in")),
            seed: Some(7),
        };
        for tick in 1..=60u64 {
            let t = TickTelemetry {
                tick,
                time_us: tick * 50_000,
                speed: 6.0,
                ttc_s: if tick < 20 { f32::INFINITY } else { 0.5 },
                flags: if tick == 40 { FLAG_COLLISION } else { 0 },
                ..Default::default()
            };
            let _ = if tick <= 40 { s.pre.push(t).is_ok() } else { s.post.push(t).is_ok() };
        }
        let kf = |tick: u64| Keyframe {
            tick,
            time_us: tick * 50_000,
            shape: [0, 0],
            features: heapless::Vec::new(),
            thumb_w: 96,
            thumb_h: 48,
            jpeg: heapless::Vec::from_slice(&[0xFF, 0xD8, 0xFF, 0xD9]).unwrap(),
        };
        // Stored out of order on purpose: the page shows them in time order.
        for tick in [40, 20, 50] {
            let _ = s.keyframes.push(kf(tick));
        }
        let e = EventExplanation {
            id: 3,
            seq: 9,
            time: "2026-11-30T04:50:14.000Z".into(),
            trigger: "collision".into(),
            cause: "collision at 6.0 m/s".into(),
            commentary: String::new(),
            keyframes: Vec::new(),
            skipped: None,
        };
        (e, s)
    }

    #[test]
    fn a_collision_card_shows_the_run_the_lead_up_and_four_axes() {
        let (e, s) = event();
        let mut r = HtmlReport::new();
        r.add(&e, &s);
        let page = r.finish("t", "m");
        assert!(page.contains("run 20261130T045012Z-1a2b · board host-sim · scenario cut_in / seed 7"), "{page}");
        assert!(page.contains("model 464646464646"));
        // Keyframes in time order with offsets from the trigger.
        let (a, b, c) =
            (page.find("t = -1.00 s").unwrap(), page.find("t = +0.00 s").unwrap(), page.find("t = +0.50 s"));
        assert!(a < b && b < c.unwrap());
        for title in ["speed (m/s)", "steering", "throttle / brake (0–1)", "time to collision (s, clipped at 10)"] {
            assert!(page.contains(title), "{title}");
        }
        assert_eq!(page.matches("<rect").count(), 4, "one axis per quantity");
        assert_eq!(page.matches(">t=0<").count(), 4);
        assert_eq!(page.matches(">impact<").count(), 4);
        assert!(page.contains(">-1.0s<") && page.contains(">+1.0s<"));
        assert!(!page.contains("<script"), "self-contained, no script");
    }

    #[test]
    fn the_most_severe_event_comes_first() {
        let (e, s) = event();
        let (mut e0, mut s0) = event();
        (e0.seq, e0.trigger, s0.trigger) = (1, "steer_rate".into(), TriggerKind::SteerRate);
        let mut r = HtmlReport::new();
        r.add(&e0, &s0);
        r.add(&e, &s);
        let page = r.finish("t", "m");
        assert!(
            page.find("<section class=\"collision\">").unwrap() < page.find("<section class=\"steer_rate\">").unwrap()
        );
    }

    #[test]
    fn an_older_record_says_unknown_instead_of_failing() {
        let (e, mut s) = event();
        s.run = RunInfo::default();
        s.pre.truncate(1);
        s.post.clear();
        let mut r = HtmlReport::new();
        r.add(&e, &s);
        let page = r.finish("t", "m");
        assert!(page.contains("run unknown · board unknown · no simulator · model unknown"), "{page}");
        assert!(!page.contains("<svg"), "one tick: no plot");
    }
}
