//! A latency histogram cheap enough for every request: one relaxed atomic add into a
//! log-linear bucket (four buckets per power of two, so a quantile read from it is
//! within 12.5 % of the true value). Readers take snapshots and subtract an earlier
//! one to get the distribution of an interval (the dashboard's last second).

use std::sync::atomic::{AtomicU64, Ordering};

/// Buckets: 0–3 µs one each, then four per power of two up to 2^32 µs (~71 minutes).
pub const BUCKETS: usize = 128;

/// Counts of durations in microseconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: Box<[AtomicU64; BUCKETS]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// The bucket of a duration of `us` microseconds.
pub fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // ≥ 2
    let m = ((us >> (e - 2)) & 3) as usize;
    (4 * (e - 1) + m).min(BUCKETS - 1)
}

/// The smallest duration (µs) that falls into bucket `i`.
pub fn lower_bound(i: usize) -> u64 {
    if i < 4 {
        return i as u64;
    }
    let e = i / 4 + 1;
    let m = (i % 4) as u64;
    (4 + m) << (e - 2)
}

impl Histogram {
    /// Count one duration.
    #[inline]
    pub fn record_us(&self, us: u64) {
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Count one duration.
    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        self.record_us(d.as_micros().min(u64::MAX as u128) as u64);
    }

    /// The counts now.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        )
    }
}

/// Bucket counts at one moment (or of an interval, after [`Snapshot::since`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot(pub Vec<u64>);

impl Snapshot {
    /// What was counted after `earlier` (a counter that went back — a reset — counts
    /// from zero).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot(
            self.0
                .iter()
                .enumerate()
                .map(|(i, &now)| match earlier.0.get(i) {
                    Some(&then) if then <= now => now - then,
                    _ => now,
                })
                .collect(),
        )
    }

    /// Add another histogram's counts (several listeners of one box).
    pub fn add(&mut self, other: &Snapshot) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The `q` quantile (0..=1) in milliseconds: the middle of the bucket where it falls;
    /// None when nothing was counted.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let lo = lower_bound(i) as f64;
                let hi = if i + 1 < BUCKETS {
                    lower_bound(i + 1) as f64
                } else {
                    lo * 1.25
                };
                return Some((lo + hi) / 2.0 / 1000.0);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        for i in 0..BUCKETS - 1 {
            assert!(lower_bound(i) < lower_bound(i + 1), "bucket {i}");
            assert_eq!(bucket(lower_bound(i)), i);
            assert_eq!(bucket(lower_bound(i + 1) - 1), i);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_land_within_an_eighth() {
        let h = Histogram::default();
        // 1..=1000 ms, one each
        for ms in 1..=1000u64 {
            h.record_us(ms * 1000);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 1000);
        for (q, want) in [(0.5, 500.0), (0.99, 990.0), (0.01, 10.0)] {
            let got = s.quantile_ms(q).unwrap();
            assert!(
                (got - want).abs() / want <= 0.125,
                "q{q}: {got} ms, want about {want}"
            );
        }
        assert_eq!(Snapshot::default().quantile_ms(0.5), None);
    }

    #[test]
    fn an_interval_is_the_difference_of_two_snapshots() {
        let h = Histogram::default();
        h.record_us(100);
        let a = h.snapshot();
        h.record_us(5000);
        h.record_us(5000);
        let d = h.snapshot().since(&a);
        assert_eq!(d.count(), 2);
        let p50 = d.quantile_ms(0.5).unwrap();
        assert!((4.4..=5.7).contains(&p50), "{p50}");
        // a reset (a fresh histogram after a reload) counts from zero
        let fresh = Histogram::default();
        fresh.record_us(5000);
        assert_eq!(fresh.snapshot().since(&h.snapshot()).count(), 1);
    }
}
