//! Cheap clocks for the request path. The kernel's coarse clocks are read from the vDSO
//! without reading the time-stamp counter and move once per scheduler tick (a few ms),
//! which is what nginx does with its time cached once per event-loop turn. Good enough
//! for timeouts, cache validity and the `Date` header; not for measuring durations.

use rustix::time::{ClockId, clock_gettime};

/// Milliseconds on the coarse monotonic clock.
pub fn mono_ms() -> u64 {
    let t = clock_gettime(ClockId::MonotonicCoarse);
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Whole seconds since the Unix epoch, from the coarse real-time clock.
pub fn unix_secs() -> u64 {
    clock_gettime(ClockId::RealtimeCoarse).tv_sec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clocks_follow_the_precise_ones() {
        let precise = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(unix_secs().abs_diff(precise) <= 1);
        let a = mono_ms();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = mono_ms();
        // a tick is at most 10 ms (HZ=100)
        assert!(
            (40..=500).contains(&(b - a)),
            "coarse monotonic moved {} ms",
            b - a
        );
    }
}
