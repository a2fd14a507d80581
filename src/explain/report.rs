//! The HTML report of `rtvla explain --html`: one self-contained file (thumbnails inline as base64 JPEG, plots
//! as inline SVG), one card per event with the commentary of each keyframe beside its thumbnail and the speed,
//! throttle and brake over the event's window.

use std::fmt::Write as _;

use super::EventExplanation;
use crate::events::snapshot::Snapshot;
use crate::store::export::base64;

/// Builds the report one event at a time (so a large store is never held in memory as snapshots).
pub struct HtmlReport {
    body: String,
    events: usize,
    by_trigger: std::collections::BTreeMap<String, usize>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl Default for HtmlReport {
    fn default() -> Self {
        Self::new()
    }
}

impl HtmlReport {
    pub fn new() -> Self {
        HtmlReport { body: String::new(), events: 0, by_trigger: Default::default() }
    }

    /// Add one event's card.
    pub fn add(&mut self, e: &EventExplanation, s: &Snapshot) {
        self.events += 1;
        *self.by_trigger.entry(e.trigger.clone()).or_default() += 1;
        let b = &mut self.body;
        let _ = write!(
            b,
            "<section><h2>#{} <span class=\"trig\">{}</span> {}</h2><p class=\"meta\">{} · {:.1} s window · seq {}</p>",
            e.id,
            esc(&e.trigger.replace('_', " ")),
            esc(&e.cause),
            esc(&e.time),
            s.duration_s(),
            e.seq
        );
        b.push_str("<div class=\"frames\">");
        for (k, kf) in s.keyframes.iter().enumerate() {
            let x = e.keyframes.iter().find(|x| x.tick == kf.tick);
            let offset = (kf.time_us as f64 - s.mono_time_us as f64) / 1e6;
            b.push_str("<figure>");
            if kf.jpeg.is_empty() {
                b.push_str("<div class=\"nothumb\">no thumbnail</div>");
            } else {
                let _ = write!(
                    b,
                    "<img width=\"{}\" height=\"{}\" alt=\"keyframe {k}\" src=\"data:image/jpeg;base64,{}\">",
                    kf.thumb_w * 2,
                    kf.thumb_h * 2,
                    base64(&kf.jpeg)
                );
            }
            let _ = write!(
                b,
                "<figcaption><b>{:+.1} s</b>{}<br>{}</figcaption></figure>",
                offset,
                x.map(|x| format!(" · {:.1} m/s", x.speed)).unwrap_or_default(),
                esc(x.map_or("(no features)", |x| x.commentary.as_str()))
            );
        }
        b.push_str("</div>");
        b.push_str(&window_plot(s));
        b.push_str("</section>\n");
    }

    /// The whole document.
    pub fn finish(self, title: &str, model: &str) -> String {
        let triggers =
            self.by_trigger.iter().map(|(k, v)| format!("{v} {}", k.replace('_', " "))).collect::<Vec<_>>().join(", ");
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font:14px system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}}\
section{{border:1px solid #ddd;border-radius:8px;padding:0.5em 1em;margin:1em 0}}\
h2{{font-size:1.05em;margin:0.4em 0}} .trig{{background:#fde7c8;border-radius:4px;padding:0 6px}}\
.meta{{color:#777;margin:0}} .frames{{display:flex;gap:1em;flex-wrap:wrap;margin:0.6em 0}}\
figure{{margin:0;width:260px}} figcaption{{font-size:0.92em}} img{{border-radius:4px;image-rendering:pixelated}}\
.nothumb{{width:256px;height:72px;background:#eee;color:#999;text-align:center;line-height:72px}}\
svg text{{font-size:10px;fill:#666}}</style></head><body>\
<h1>{t}</h1><p>{n} events ({triggers}). Commentary by the language branch <code>{m}</code>, run offline on each \
snapshot's keyframes (features + that tick's speed, target points and plan).</p>\n{body}</body></html>\n",
            t = esc(title),
            n = self.events,
            m = esc(model),
            body = self.body
        )
    }
}

/// Speed (m/s, left scale) and throttle/brake (0..1) over the window; the trigger tick is the dashed line.
fn window_plot(s: &Snapshot) -> String {
    let ticks: Vec<_> = s.pre.iter().chain(s.post.iter()).collect();
    if ticks.len() < 2 {
        return String::new();
    }
    let (w, h, pad) = (760.0f64, 110.0f64, 28.0f64);
    let t0 = ticks[0].time_us as f64;
    let t1 = ticks[ticks.len() - 1].time_us as f64;
    let span = (t1 - t0).max(1.0);
    let vmax = ticks.iter().map(|t| t.speed as f64).fold(1.0f64, f64::max).ceil();
    let x = |us: u64| pad + (us as f64 - t0) / span * (w - 2.0 * pad);
    let y = |v: f64, max: f64| h - 14.0 - v / max * (h - 24.0);
    let line = |f: &dyn Fn(&crate::events::snapshot::TickTelemetry) -> f64, max: f64| {
        ticks
            .iter()
            .map(|t| format!("{:.1},{:.1}", x(t.time_us), y(f(t).clamp(0.0, max), max)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let trig = x(s.mono_time_us);
    format!(
        "<svg width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
<rect x=\"{pad}\" y=\"10\" width=\"{iw}\" height=\"{ih}\" fill=\"#fafafa\" stroke=\"#eee\"/>\
<line x1=\"{trig:.1}\" x2=\"{trig:.1}\" y1=\"8\" y2=\"{yb}\" stroke=\"#c33\" stroke-dasharray=\"3 3\"/>\
<polyline fill=\"none\" stroke=\"#1f6fd1\" stroke-width=\"1.6\" points=\"{sp}\"/>\
<polyline fill=\"none\" stroke=\"#2a9d4a\" stroke-width=\"1\" points=\"{th}\"/>\
<polyline fill=\"none\" stroke=\"#d13a1f\" stroke-width=\"1\" points=\"{br}\"/>\
<text x=\"2\" y=\"14\">{vmax} m/s</text><text x=\"2\" y=\"{yb}\">0</text>\
<text x=\"{lx}\" y=\"{h2}\"><tspan fill=\"#1f6fd1\">speed</tspan> · <tspan fill=\"#2a9d4a\">throttle</tspan> · \
<tspan fill=\"#d13a1f\">brake</tspan> · trigger (dashed) · {span_s:.1} s</text></svg>",
        iw = w - 2.0 * pad,
        ih = h - 24.0,
        yb = h - 14.0,
        sp = line(&|t| t.speed as f64, vmax),
        th = line(&|t| t.command.throttle as f64, 1.0),
        br = line(&|t| t.command.brake as f64, 1.0),
        lx = pad,
        h2 = h - 2.0,
        span_s = span / 1e6,
    )
}
