//! One counting allocator for the tests that measure the heap: every call goes to the
//! system allocator unchanged; the number of allocations and the bytes live are counted
//! on the side. A test installs it as its binary's global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static HEAP: hopline_testkit::alloc::Counting = hopline_testkit::alloc::Counting::new();
//! ```
#![allow(unsafe_code)] // a GlobalAlloc is unsafe to implement

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// The system allocator, counted.
#[derive(Debug)]
pub struct Counting {
    allocations: AtomicUsize,
    live: AtomicIsize,
}

impl Counting {
    /// Nothing counted yet.
    pub const fn new() -> Counting {
        Counting {
            allocations: AtomicUsize::new(0),
            live: AtomicIsize::new(0),
        }
    }

    /// Allocations (and reallocations) made so far.
    pub fn allocations(&self) -> usize {
        self.allocations.load(Ordering::Relaxed)
    }

    /// Bytes allocated and not freed yet.
    pub fn live_bytes(&self) -> isize {
        self.live.load(Ordering::Relaxed)
    }
}

impl Default for Counting {
    fn default() -> Self {
        Counting::new()
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are
// updated on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.live
            .fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.live
            .fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.allocations.fetch_add(1, Ordering::Relaxed);
        self.live.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
