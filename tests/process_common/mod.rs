//! Helpers shared by the integration tests that run `rtvla` as a child process.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// The child's exit status once it exits; panics with `what` (killing the child first, so that no process outlives
/// the test) if it is still running after `limit`.
pub fn wait_or_kill(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
