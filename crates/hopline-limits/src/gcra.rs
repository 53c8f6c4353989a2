//! The GCRA (generic cell rate algorithm): a token bucket computed from one timestamp per
//! key, with no I/O. With emission interval `T = period / rate` and burst `b`, a key's
//! state is its theoretical arrival time `TAT`; a request at `t` is allowed iff
//! `max(TAT, t) − t ≤ (b − 1)·T`, then `TAT = max(TAT, t) + T`.

use crate::config::Rate;
use std::time::Duration;

/// The GCRA decision, pure: times are nanoseconds on any monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    /// Emission interval T, ns.
    pub interval: u64,
    /// Burst tolerance (b − 1)·T, ns.
    pub tolerance: u64,
    /// The burst b.
    pub burst: u32,
}

/// One decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Let it through.
    pub allowed: bool,
    /// Requests left in the bucket after this one.
    pub remaining: u32,
    /// When the bucket is full again, from now.
    pub reset: Duration,
    /// When to try again (only when refused).
    pub retry_after: Duration,
    /// The new TAT to store (unchanged when refused).
    pub tat: u64,
}

impl Gcra {
    /// GCRA for `rate` with `burst`.
    pub fn new(rate: Rate, burst: u32) -> Gcra {
        let interval = (rate.period.as_nanos() / rate.count as u128).max(1) as u64;
        let burst = burst.max(1);
        Gcra {
            interval,
            tolerance: interval * (burst as u64 - 1),
            burst,
        }
    }

    /// Decide a request at `now` for a key whose stored TAT is `tat` (0 = new key).
    pub fn decide(&self, tat: u64, now: u64) -> Decision {
        let tat = tat.max(now);
        if tat - now > self.tolerance {
            let wait = tat - now - self.tolerance;
            return Decision {
                allowed: false,
                remaining: 0,
                reset: Duration::from_nanos(tat - now),
                retry_after: Duration::from_nanos(wait),
                tat,
            };
        }
        let new_tat = tat + self.interval;
        let used = new_tat - now; // ≤ tolerance + interval
        let remaining = ((self.tolerance + self.interval - used) / self.interval) as u32;
        Decision {
            allowed: true,
            remaining,
            reset: Duration::from_nanos(used),
            retry_after: Duration::ZERO,
            tat: new_tat,
        }
    }
}
