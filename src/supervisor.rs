//! Supervisor: the last stage before the vehicle. Any fault (deadline miss, missing/stale frame, bad model output,
//! link failure) turns the command into a controlled stop in the same tick: throttle cut, brake ramped up, steer
//! held briefly then centred. It releases only after the fault has been clear for a few ticks.

use crate::types::Command;

/// One kind of fault, as a bit in a [`Faults`] set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Fault {
    DeadlineMiss = 1 << 0,
    NoFrame = 1 << 1,
    StaleFrame = 1 << 2,
    BadFrame = 1 << 3,
    InferenceError = 1 << 4,
    BadModelOutput = 1 << 5,
    LinkState = 1 << 6,
    LinkSend = 1 << 7,
    External = 1 << 8,
    /// The vehicle reported a state no car can be in (non-finite, or speed / target points out of physical range):
    /// obeying it would steer and accelerate on nonsense.
    BadState = 1 << 9,
}

impl Fault {
    pub const ALL: [Fault; 10] = [
        Fault::DeadlineMiss,
        Fault::NoFrame,
        Fault::StaleFrame,
        Fault::BadFrame,
        Fault::InferenceError,
        Fault::BadModelOutput,
        Fault::LinkState,
        Fault::LinkSend,
        Fault::BadState,
        Fault::External,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::DeadlineMiss => "deadline_miss",
            Fault::NoFrame => "no_frame",
            Fault::StaleFrame => "stale_frame",
            Fault::BadFrame => "bad_frame",
            Fault::InferenceError => "inference_error",
            Fault::BadModelOutput => "bad_model_output",
            Fault::LinkState => "link_state",
            Fault::LinkSend => "link_send",
            Fault::External => "external",
            Fault::BadState => "bad_vehicle_state",
        }
    }
}

/// A set of faults seen in one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults(pub u16);

impl Faults {
    pub fn insert(&mut self, f: Fault) {
        self.0 |= f as u16;
    }
    pub fn contains(self, f: Fault) -> bool {
        self.0 & f as u16 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// The first fault in priority order (for the event cause).
    pub fn first(self) -> Option<Fault> {
        Fault::ALL.into_iter().find(|f| self.contains(*f))
    }
}

/// Tuning of the safe stop.
#[derive(Clone, Copy, Debug)]
pub struct SupervisorConfig {
    /// Brake applied on the first fallback tick.
    pub brake_start: f32,
    /// Brake added per tick until 1.0.
    pub brake_step: f32,
    /// Ticks the last good steer is held (avoid a jerk mid-curve).
    pub hold_steer_ticks: u32,
    /// Ticks over which steer is then ramped to zero.
    pub centre_ticks: u32,
    /// Consecutive healthy ticks needed to release the fallback.
    pub recover_ticks: u32,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig { brake_start: 0.4, brake_step: 0.3, hold_steer_ticks: 5, centre_ticks: 10, recover_ticks: 3 }
    }
}

/// What changed this tick (the loop turns these into events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    None,
    /// Entered fallback because of this fault.
    Fallback(Fault),
    /// Back to nominal driving.
    Recovered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Nominal,
    Fallback,
}

pub struct Supervisor {
    cfg: SupervisorConfig,
    mode: Mode,
    last_good: Command,
    brake: f32,
    fallback_ticks: u32,
    healthy_streak: u32,
    steer_at_hold_end: f32,
    /// Number of times fallback was entered.
    pub fallbacks: u64,
    /// Ticks spent in fallback.
    pub fallback_tick_count: u64,
}

impl Supervisor {
    pub fn new(cfg: SupervisorConfig) -> Self {
        Supervisor {
            cfg,
            mode: Mode::Nominal,
            last_good: Command::default(),
            brake: 0.0,
            fallback_ticks: 0,
            healthy_streak: 0,
            steer_at_hold_end: 0.0,
            fallbacks: 0,
            fallback_tick_count: 0,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Decide the command to send. `proposed` is the controller's command (None when the pipeline failed earlier).
    pub fn filter(&mut self, faults: Faults, proposed: Option<Command>) -> (Command, Transition) {
        let mut faults = faults;
        let proposed = match proposed {
            Some(c) if c.is_valid() => Some(c),
            Some(_) => {
                faults.insert(Fault::BadModelOutput);
                None
            }
            None => None,
        };
        let healthy = faults.is_empty() && proposed.is_some();
        match self.mode {
            Mode::Nominal if healthy => {
                let cmd = proposed.expect("healthy");
                self.last_good = cmd;
                (cmd, Transition::None)
            }
            Mode::Nominal => {
                self.mode = Mode::Fallback;
                self.fallbacks += 1;
                self.fallback_ticks = 0;
                self.healthy_streak = 0;
                self.brake = self.cfg.brake_start.max(self.last_good.brake);
                let cause = faults.first().unwrap_or(Fault::BadModelOutput);
                (self.stop_command(), Transition::Fallback(cause))
            }
            Mode::Fallback => {
                self.healthy_streak = if healthy { self.healthy_streak + 1 } else { 0 };
                if self.healthy_streak >= self.cfg.recover_ticks {
                    self.mode = Mode::Nominal;
                    let cmd = proposed.expect("healthy");
                    self.last_good = cmd;
                    return (cmd, Transition::Recovered);
                }
                self.fallback_ticks += 1;
                self.brake = (self.brake + self.cfg.brake_step).min(1.0);
                (self.stop_command(), Transition::None)
            }
        }
    }

    fn stop_command(&mut self) -> Command {
        self.fallback_tick_count += 1;
        let t = self.fallback_ticks;
        let steer = if t < self.cfg.hold_steer_ticks {
            self.steer_at_hold_end = self.last_good.steer;
            self.last_good.steer
        } else {
            let k = (t - self.cfg.hold_steer_ticks + 1) as f32 / self.cfg.centre_ticks.max(1) as f32;
            self.steer_at_hold_end * (1.0 - k.min(1.0))
        };
        Command { steer: if steer.is_finite() { steer } else { 0.0 }, throttle: 0.0, brake: self.brake }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(steer: f32) -> Option<Command> {
        Some(Command { steer, throttle: 0.6, brake: 0.0 })
    }

    fn fault(f: Fault) -> Faults {
        let mut s = Faults::default();
        s.insert(f);
        s
    }

    #[test]
    fn nominal_passes_commands_through() {
        let mut s = Supervisor::new(SupervisorConfig::default());
        let (c, t) = s.filter(Faults::default(), go(0.2));
        assert_eq!((c, t), (go(0.2).unwrap(), Transition::None));
    }

    #[test]
    fn fault_stops_in_the_same_tick_ramps_brake_holds_then_centres_steer() {
        let cfg = SupervisorConfig::default();
        let mut s = Supervisor::new(cfg);
        s.filter(Faults::default(), go(0.3));
        let (c, t) = s.filter(fault(Fault::StaleFrame), go(0.3));
        assert_eq!(t, Transition::Fallback(Fault::StaleFrame));
        assert_eq!(c.throttle, 0.0);
        assert_eq!(c.brake, cfg.brake_start);
        assert_eq!(c.steer, 0.3, "steer held first");
        let mut brakes = vec![c.brake];
        let mut steers = vec![c.steer];
        for _ in 0..20 {
            let (c, t) = s.filter(fault(Fault::StaleFrame), None);
            assert_eq!(t, Transition::None);
            assert_eq!(c.throttle, 0.0);
            brakes.push(c.brake);
            steers.push(c.steer);
        }
        assert!(brakes.windows(2).all(|w| w[1] >= w[0]), "brake ramps up: {brakes:?}");
        assert_eq!(*brakes.last().unwrap(), 1.0);
        assert!(steers[..cfg.hold_steer_ticks as usize].iter().all(|v| *v == 0.3), "{steers:?}");
        assert!(steers.windows(2).all(|w| w[1] <= w[0]), "steer moves monotonically to centre: {steers:?}");
        assert_eq!(*steers.last().unwrap(), 0.0);
        assert_eq!(s.fallbacks, 1);
    }

    #[test]
    fn nan_or_out_of_range_command_is_a_fault() {
        let mut s = Supervisor::new(SupervisorConfig::default());
        let (c, t) = s.filter(Faults::default(), Some(Command { steer: f32::NAN, throttle: 0.5, brake: 0.0 }));
        assert_eq!(t, Transition::Fallback(Fault::BadModelOutput));
        assert!(c.is_valid() && c.throttle == 0.0 && c.steer == 0.0);
        let mut s = Supervisor::new(SupervisorConfig::default());
        let (_, t) = s.filter(Faults::default(), Some(Command { steer: 0.0, throttle: 3.0, brake: 0.0 }));
        assert_eq!(t, Transition::Fallback(Fault::BadModelOutput));
    }

    #[test]
    fn recovers_after_consecutive_healthy_ticks_only() {
        let cfg = SupervisorConfig::default();
        let mut s = Supervisor::new(cfg);
        s.filter(fault(Fault::DeadlineMiss), go(0.0));
        s.filter(Faults::default(), go(0.0));
        s.filter(fault(Fault::DeadlineMiss), go(0.0)); // streak broken
        for _ in 0..cfg.recover_ticks - 1 {
            let (c, t) = s.filter(Faults::default(), go(0.1));
            assert_eq!((c.throttle, t), (0.0, Transition::None));
        }
        let (c, t) = s.filter(Faults::default(), go(0.1));
        assert_eq!(t, Transition::Recovered);
        assert_eq!(c, go(0.1).unwrap());
        assert_eq!(s.mode(), Mode::Nominal);
    }

    #[test]
    fn faults_first_follows_priority() {
        let mut f = Faults::default();
        f.insert(Fault::LinkSend);
        f.insert(Fault::StaleFrame);
        assert_eq!(f.first(), Some(Fault::StaleFrame));
        assert!(Faults::default().first().is_none());
    }
}
