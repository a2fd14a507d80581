//! The simulator's per-tick path (expert plan, controller, world step, render) allocates nothing after warm-up.

use rtvla::alloc_counter::{thread_allocs, CountingAlloc};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

#[test]
fn step_expert_and_render_do_not_allocate() {
    use rtvla::sim::{ExpertController, Renderer, World, DT};
    for name in ["unprotected_left", "pedestrian_crossing", "parked_obstacle"] {
        let mut w = World::new(name, 1_000_003).unwrap();
        let mut ctl = ExpertController::new();
        let mut r = Renderer::new(128, 72);
        let mut img = vec![0u8; 128 * 72 * 3];
        // warm-up
        let p = w.expert_plan();
        let c = ctl.step(&p.waypoints, w.ego.speed);
        w.step(&c, DT);
        w.render(&mut r, &mut img);
        let before = thread_allocs();
        for _ in 0..200 {
            let p = w.expert_plan();
            let c = ctl.step(&p.waypoints, w.ego.speed);
            w.step(&c, DT);
            let _ = w.ego();
            w.render(&mut r, &mut img);
        }
        assert_eq!(thread_allocs() - before, 0, "{name}: allocations in the tick path");
    }
}
