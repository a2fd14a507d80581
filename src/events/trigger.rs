//! Event triggers, evaluated every tick from [`TickTelemetry`] without allocation, debounced per kind.

use core::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::snapshot::{TickTelemetry, TriggerKind, CAUSE_LEN, FLAG_DEADLINE_MISS, FLAG_EXTERNAL, FLAG_FALLBACK};
use super::snapshot::{FLAG_COLLISION, FLAG_INFRACTION};

const KINDS: usize = TriggerKind::ALL.len();

/// Thresholds and debounce.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriggerConfig {
    /// Brake command at or above this is a hard brake (when faster than `hard_brake_min_speed`).
    pub hard_brake: f32,
    /// Minimum speed for the brake-command rule, m/s.
    pub hard_brake_min_speed: f32,
    /// Measured deceleration at or above this is a hard brake, m/s².
    pub decel: f32,
    /// |Δsteer|/dt at or above this fires, 1/s (steer is in [-1, 1]).
    pub steer_rate: f32,
    /// Time to collision below this fires, s.
    pub ttc_s: f32,
    /// After a kind fires, it cannot fire again for this long, µs. Per kind: a cool-down never holds back another,
    /// more severe kind (a collision right after a near miss fires; the recorder then cuts the near miss short).
    pub refractory_us: u64,
}

impl Default for TriggerConfig {
    fn default() -> Self {
        TriggerConfig {
            hard_brake: 0.9,
            hard_brake_min_speed: 2.0,
            decel: 4.0,
            steer_rate: 3.0,
            ttc_s: 1.5,
            refractory_us: 5_000_000,
        }
    }
}

/// A trigger that fired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fired {
    /// Which.
    pub kind: TriggerKind,
    /// Why, formatted without allocation.
    pub cause: heapless::String<CAUSE_LEN>,
}

/// A handle a signal handler or UDP listener sets to request a snapshot (an atomic store: async-signal-safe).
#[derive(Clone, Debug, Default)]
pub struct ExternalTrigger(Arc<AtomicBool>);

impl ExternalTrigger {
    /// Request a snapshot at the next tick.
    pub fn request(&self) {
        self.0.store(true, Ordering::Release);
    }
    /// The flag, e.g. for `signal_hook::flag::register`.
    pub fn flag(&self) -> &Arc<AtomicBool> {
        &self.0
    }
    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// Per-tick trigger evaluation with per-kind refractory periods.
#[derive(Debug)]
pub struct TriggerEngine {
    cfg: TriggerConfig,
    prev: Option<(u64, f32, f32)>,
    last_fired: [Option<u64>; KINDS],
    external: ExternalTrigger,
    /// Fires suppressed by a refractory period, per kind.
    pub suppressed: [u64; KINDS],
}

impl TriggerEngine {
    /// New engine.
    pub fn new(cfg: TriggerConfig) -> Self {
        TriggerEngine {
            cfg,
            prev: None,
            last_fired: [None; KINDS],
            external: ExternalTrigger::default(),
            suppressed: [0; KINDS],
        }
    }

    /// Handle for external requests.
    pub fn external(&self) -> ExternalTrigger {
        self.external.clone()
    }

    /// Thresholds in use.
    pub fn config(&self) -> &TriggerConfig {
        &self.cfg
    }

    fn armed(&mut self, kind: TriggerKind, now: u64) -> bool {
        let i = kind.index();
        match self.last_fired[i] {
            Some(t) if now.saturating_sub(t) < self.cfg.refractory_us => {
                self.suppressed[i] += 1;
                false
            }
            _ => true,
        }
    }

    /// Evaluate one tick. Returns the most severe trigger that fired and is not in its own refractory period
    /// ([`TriggerKind::BY_SEVERITY`]); the others that fired with it are part of its event. No allocation.
    pub fn evaluate(&mut self, t: &TickTelemetry) -> Option<Fired> {
        let c = self.cfg;
        let now = t.time_us;
        let (decel, steer_rate) = match self.prev {
            Some((pt, pv, ps)) if now > pt => {
                let dt = (now - pt) as f32 * 1e-6;
                ((pv - t.speed) / dt, (t.command.steer - ps).abs() / dt)
            }
            _ => (0.0, 0.0),
        };
        self.prev = Some((now, t.speed, t.command.steer));
        let external = self.external.take() || t.flags & FLAG_EXTERNAL != 0;

        let mut cause = heapless::String::<CAUSE_LEN>::new();
        // Formatting into a fixed String: a too-long cause is cut, never an error or allocation.
        let candidates: [(TriggerKind, bool); KINDS] = [
            (TriggerKind::Collision, t.flags & FLAG_COLLISION != 0),
            (TriggerKind::NearMiss, t.ttc_s.is_finite() && t.ttc_s >= 0.0 && t.ttc_s < c.ttc_s),
            (TriggerKind::Infraction, t.flags & FLAG_INFRACTION != 0),
            (
                TriggerKind::HardBrake,
                (t.command.brake >= c.hard_brake && t.speed > c.hard_brake_min_speed) || decel >= c.decel,
            ),
            (TriggerKind::Fallback, t.flags & FLAG_FALLBACK != 0),
            (TriggerKind::DeadlineMiss, t.flags & FLAG_DEADLINE_MISS != 0),
            (TriggerKind::SteerRate, steer_rate >= c.steer_rate),
            (TriggerKind::External, external),
        ];
        let mut fired = None;
        for (kind, hit) in candidates {
            if !hit || !self.armed(kind, now) {
                continue;
            }
            self.last_fired[kind.index()] = Some(now);
            if fired.is_some() {
                continue; // also debounced: it is part of this event
            }
            let _ = match kind {
                TriggerKind::Collision => write!(cause, "collision at {:.1} m/s", t.speed),
                TriggerKind::Infraction => write!(cause, "traffic infraction at {:.1} m/s", t.speed),
                TriggerKind::NearMiss => write!(cause, "ttc {:.2} s at {:.1} m/s", t.ttc_s, t.speed),
                TriggerKind::HardBrake if decel >= c.decel => {
                    write!(cause, "decel {:.1} m/s2, brake {:.2} at {:.1} m/s", decel, t.command.brake, t.speed)
                }
                TriggerKind::HardBrake => write!(cause, "brake {:.2} at {:.1} m/s", t.command.brake, t.speed),
                TriggerKind::Fallback => write!(cause, "supervisor fallback, flags {:#06x}", t.flags),
                TriggerKind::DeadlineMiss => write!(cause, "deadline miss: tick {:.1} ms", t.tick_ms),
                TriggerKind::SteerRate => {
                    write!(cause, "steer rate {:.2}/s (steer {:.2})", steer_rate, t.command.steer)
                }
                TriggerKind::External => write!(cause, "external request"),
            };
            fired = Some(kind);
        }
        // A manual request that coincides with another trigger is part of that event: say so in its cause.
        if external && fired.is_some_and(|k| k != TriggerKind::External) {
            let _ = write!(cause, " + external request");
        }
        fired.map(|kind| Fired { kind, cause })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    fn tick(i: u64, speed: f32, cmd: Command) -> TickTelemetry {
        TickTelemetry { time_us: i * 50_000, tick: i, speed, command: cmd, ..Default::default() }
    }

    /// The complaint of issue 17: the near miss was in its cool-down when the car hit. A cool-down holds back its
    /// own kind only; the impact fires, and outranks the near miss and hard brake of the same tick.
    #[test]
    fn a_collision_fires_during_a_near_miss_cool_down() {
        let mut e = TriggerEngine::new(TriggerConfig::default());
        let near = |i: u64, ttc: f32| TickTelemetry { ttc_s: ttc, ..tick(i, 9.0, Command::default()) };
        assert_eq!(e.evaluate(&near(0, 1.4)).unwrap().kind, TriggerKind::NearMiss);
        for i in 1..20 {
            assert!(e.evaluate(&near(i, 1.4 - i as f32 * 0.07)).is_none(), "near miss in its cool-down");
        }
        let brake = Command { brake: 1.0, ..Default::default() };
        let hit = TickTelemetry { flags: FLAG_COLLISION, ttc_s: 0.0, ..tick(20, 9.0, brake) };
        let f = e.evaluate(&hit).unwrap();
        assert_eq!((f.kind, f.cause.as_str()), (TriggerKind::Collision, "collision at 9.0 m/s"));
        // The hard brake of that tick was part of the collision event: debounced with it.
        assert!(e.evaluate(&tick(21, 8.0, brake)).is_none());
        let t = TickTelemetry { flags: FLAG_INFRACTION, ..tick(22, 8.0, Command::default()) };
        assert_eq!(e.evaluate(&t).unwrap().kind, TriggerKind::Infraction);
    }

    #[test]
    fn hard_brake_fires_once_per_refractory() {
        let mut e = TriggerEngine::new(TriggerConfig::default());
        let brake = Command { steer: 0.0, throttle: 0.0, brake: 1.0 };
        assert!(e.evaluate(&tick(0, 8.0, Command::default())).is_none());
        let f = e.evaluate(&tick(1, 8.0, brake)).unwrap();
        assert_eq!(f.kind, TriggerKind::HardBrake);
        assert_eq!(f.cause.as_str(), "brake 1.00 at 8.0 m/s");
        for i in 2..100 {
            assert!(e.evaluate(&tick(i, 8.0, brake)).is_none()); // 5 s refractory = 100 ticks
        }
        assert_eq!(e.evaluate(&tick(101, 8.0, brake)).unwrap().kind, TriggerKind::HardBrake);
        // Slow: no brake trigger.
        let mut e = TriggerEngine::new(TriggerConfig::default());
        assert!(e.evaluate(&tick(0, 1.0, brake)).is_none());
    }

    #[test]
    fn decel_steer_ttc_flags_external() {
        let mut e = TriggerEngine::new(TriggerConfig::default());
        e.evaluate(&tick(0, 10.0, Command::default()));
        let f = e.evaluate(&tick(1, 9.7, Command::default())).unwrap(); // 6 m/s²
        assert_eq!(f.kind, TriggerKind::HardBrake);
        assert!(f.cause.starts_with("decel 6.0"), "{}", f.cause);

        let f = e.evaluate(&tick(2, 9.7, Command { steer: 0.5, ..Default::default() })).unwrap(); // 10/s
        assert_eq!(f.kind, TriggerKind::SteerRate);

        let t = TickTelemetry { ttc_s: 1.2, ..tick(3, 9.7, Command { steer: 0.5, ..Default::default() }) };
        assert_eq!(e.evaluate(&t).unwrap().kind, TriggerKind::NearMiss);

        let t = TickTelemetry { flags: FLAG_FALLBACK | FLAG_DEADLINE_MISS, ..tick(4, 9.7, Command::default()) };
        let f = e.evaluate(&t).unwrap();
        assert_eq!(f.kind, TriggerKind::Fallback);
        // Deadline miss fired in the same tick is absorbed and debounced.
        let t = TickTelemetry { flags: FLAG_DEADLINE_MISS, ..tick(5, 9.7, Command::default()) };
        assert!(e.evaluate(&t).is_none());

        let ext = e.external();
        ext.request();
        assert_eq!(e.evaluate(&tick(6, 9.7, Command::default())).unwrap().kind, TriggerKind::External);
        assert!(e.evaluate(&tick(7, 9.7, Command::default())).is_none());
    }

    #[test]
    fn a_manual_request_during_another_trigger_is_named_in_its_cause() {
        let mut e = TriggerEngine::new(TriggerConfig::default());
        e.evaluate(&tick(0, 10.0, Command::default()));
        e.external().request();
        let t = TickTelemetry { flags: FLAG_FALLBACK, ..tick(1, 10.0, Command::default()) };
        let f = e.evaluate(&t).unwrap();
        assert_eq!(f.kind, TriggerKind::Fallback);
        assert!(f.cause.ends_with(" + external request"), "{}", f.cause);
    }
}
