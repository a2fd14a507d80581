//! Proof of hot-path discipline: with a counting global allocator installed, the control loop makes zero heap
//! allocations per tick outside the inference call after warm-up. The figure inside tract's run is reported too.

use rtvla::alloc_counter::CountingAlloc;
use rtvla::runtime::{drive, PolicyKind};
use rtvla::sim::plant::{sim_drive_options, SimRun};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

const BOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/boards/host-sim.toml");

#[test]
fn zero_allocations_per_tick_outside_inference() {
    let r = drive(&sim_drive_options(BOARD.as_ref(), PolicyKind::Model, None, following(), Some(120))).unwrap();
    assert_eq!(r.ticks, 120);
    assert!(r.measured_ticks >= 100, "warm-up must leave most ticks measured: {}", r.measured_ticks);
    assert_eq!(r.allocs_per_tick_outside_inference, Some(0.0));
    // tract allocates op outputs inside run(): measured, and it must be a steady figure, not growing.
    let inside = r.allocs_per_inference.expect("counting allocator installed");
    assert!(inside > 0.0, "the counter must see tract's allocations, else it is not counting");
    eprintln!("allocations per inference call: {inside:.1}");
}

#[test]
fn expert_policy_also_allocates_nothing_per_tick() {
    let r = drive(&sim_drive_options(BOARD.as_ref(), PolicyKind::Expert, None, following(), Some(60))).unwrap();
    assert_eq!(r.allocs_per_tick_outside_inference, Some(0.0));
}

fn following() -> SimRun {
    SimRun { scenario: Some("following".into()), seed: Some(3), ..SimRun::default() }
}
