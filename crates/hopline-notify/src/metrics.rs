//! A service's counters, as `/.hopline/status` and `/metrics` show them.

use std::sync::atomic::AtomicU64;

/// Counters of a service's API (what its requests came to).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages accepted (202).
    pub accepted: AtomicU64,
    /// Idempotent repeats answered with the first response.
    pub repeats: AtomicU64,
    /// Requests refused for authentication (401/403).
    pub unauthorized: AtomicU64,
    /// Requests refused as invalid (400/413/422).
    pub invalid: AtomicU64,
    /// Accepts that failed because the store could not write (503).
    pub unavailable: AtomicU64,
    /// Requests refused by the app or recipient rate limit (429).
    pub limited: AtomicU64,
}
