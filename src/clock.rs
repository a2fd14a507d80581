//! Time for the control loop. Real time runs on embassy-time (std driver, generic timer queue: no allocation per
//! wait); virtual time jumps straight to each deadline, so simulator evaluation runs as fast as the CPU allows and
//! is deterministic.
//!
//! The loop keeps its own overrun policy (skip missed ticks and count them) instead of embassy's `Ticker`, which
//! catches up by firing back-to-back — wrong for a control loop.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

/// Microseconds since the clock's start.
pub type Micros = u64;

pub trait Clock {
    fn now_us(&self) -> Micros;
    /// Block until `deadline` (µs). Returns immediately if it passed.
    fn sleep_until(&mut self, deadline: Micros);
    /// True when time is simulated (no real waiting, deadlines judged on compute time only).
    fn is_virtual(&self) -> bool;
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Real time on embassy-time. The waker is built once, so waiting allocates nothing.
pub struct EmbassyClock {
    origin: embassy_time::Instant,
    waker: Waker,
}

impl Default for EmbassyClock {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbassyClock {
    pub fn new() -> Self {
        EmbassyClock {
            origin: embassy_time::Instant::now(),
            waker: Waker::from(Arc::new(ThreadWaker(thread::current()))),
        }
    }

    fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let mut fut = pin!(fut);
        let mut cx = Context::from_waker(&self.waker);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            thread::park();
        }
    }
}

impl Clock for EmbassyClock {
    fn now_us(&self) -> Micros {
        embassy_time::Instant::now().duration_since(self.origin).as_micros()
    }

    fn sleep_until(&mut self, deadline: Micros) {
        let at = self.origin + embassy_time::Duration::from_micros(deadline);
        if at > embassy_time::Instant::now() {
            self.block_on(embassy_time::Timer::at(at));
        }
    }

    fn is_virtual(&self) -> bool {
        false
    }
}

/// Simulated time: `sleep_until` advances instantly.
#[derive(Default)]
pub struct VirtualClock {
    now: Micros,
}

impl Clock for VirtualClock {
    fn now_us(&self) -> Micros {
        self.now
    }
    fn sleep_until(&mut self, deadline: Micros) {
        self.now = self.now.max(deadline);
    }
    fn is_virtual(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embassy_clock_sleeps_until_deadline() {
        let mut c = EmbassyClock::new();
        let t0 = std::time::Instant::now();
        let d = c.now_us() + 20_000;
        c.sleep_until(d);
        assert!(c.now_us() >= d);
        assert!(t0.elapsed() >= std::time::Duration::from_millis(19));
        // A passed deadline returns at once (a wrapped subtraction would sleep for ages; the bound leaves room for a
        // loaded CI machine's scheduler, which is not what this checks).
        let t1 = std::time::Instant::now();
        c.sleep_until(0);
        assert!(t1.elapsed() < std::time::Duration::from_millis(500));
    }

    #[test]
    fn virtual_clock_jumps() {
        let mut c = VirtualClock::default();
        c.sleep_until(50_000);
        assert_eq!(c.now_us(), 50_000);
        c.sleep_until(10);
        assert_eq!(c.now_us(), 50_000, "never goes back");
    }
}
