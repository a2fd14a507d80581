//! A counting global allocator: counts heap allocations per thread so the loop can prove it allocates nothing per
//! tick. Install it in a binary or test with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`.
//! Without it installed, the counters stay at zero and `is_installed` says so.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// System allocator plus a per-thread allocation counter (alloc, alloc_zeroed and realloc each count one).
pub struct CountingAlloc;

#[inline]
fn bump() {
    // try_with: during thread teardown the slot may be gone; those allocations are not the loop's.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations made so far by the calling thread.
pub fn thread_allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// True once the counting allocator has served an allocation in this process.
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}
