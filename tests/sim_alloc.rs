//! The simulator's per-tick path (expert plan, controller, world step, render) allocates nothing after warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;
static COUNT: AtomicUsize = AtomicUsize::new(0);
static ON: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            COUNT.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

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
        ON.store(true, Ordering::SeqCst);
        for _ in 0..200 {
            let p = w.expert_plan();
            let c = ctl.step(&p.waypoints, w.ego.speed);
            w.step(&c, DT);
            let _ = w.ego();
            w.render(&mut r, &mut img);
        }
        ON.store(false, Ordering::SeqCst);
        assert_eq!(COUNT.swap(0, Ordering::SeqCst), 0, "{name}: allocations in the tick path");
    }
}
